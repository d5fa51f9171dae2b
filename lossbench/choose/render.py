"""The profile and the shortlist in words: a table of traits, the shortlist with its reasons, notes.

One structure (:func:`section`) rendered three ways: Markdown and HTML for the report's first
section, plain text for the terminal. Numbers keep their intervals.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from .shortlist import Shortlist

TITLE = "0. Your data: profile and shortlist"


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}%"


def _est(e: Mapping[str, Any] | None, fmt: Any = _pct) -> str:
    if not e:
        return "n/a"
    lo, hi = e.get("ci") or (None, None)
    ci = f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else ""
    return f"{fmt(e.get('value'))}{ci}"


def _num(digits: int) -> Any:
    return lambda v: "n/a" if v is None else f"{float(v):.{digits}f}"


def _num3g(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.3g}"


def trait_rows(p: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(trait, measured value with its 95% interval, how it was measured) for every trait measured."""
    rows = [
        ("task", str(p["task"]), f"from the data ({p.get('data', '?')})"),
        ("training rows", f"{p['n_samples']}" + (f" ({p['n_profiled']} profiled)" if p.get("n_profiled") != p["n_samples"] else ""),
         f"train / val / test: {p.get('n_train', '?')} / {p.get('n_val', '?')} / {p.get('n_test', '?')}; "
         f"{p.get('n_features', '?')} input feature(s)"),
    ]
    miss = p.get("missing_values") or {}
    rows.append(("missing values", f"{miss.get('cells', 0)} cell(s) in {miss.get('rows', 0)} row(s)",
                 f"counted on {miss.get('measured_on', 'the data')}"))
    dup = p.get("near_duplicates")
    if dup:
        conflict = f"; {dup['conflicting_groups']} group(s) with differing targets" if dup.get("conflicting_groups") else ""
        rows.append(("near-duplicate rows", _est(dup) + f" ({dup['count']} rows){conflict}", dup["method"]))
    if p["task"] == "regression":
        t = p.get("target") or {}
        if t:
            rows.append(("target skewness", _est(t["skew"], _num(2)), t["skew"]["method"]))
            rows.append(("target excess kurtosis", _est(t["excess_kurtosis"], _num(2)), t["excess_kurtosis"]["method"]))
        if p.get("outlier_fraction"):
            rows.append(("gross target errors (outlier fraction)", _est(p["outlier_fraction"]), p["outlier_fraction"]["method"]))
        if p.get("leverage_fraction"):
            rows.append(("leverage points in X", _est(p["leverage_fraction"]), p["leverage_fraction"]["method"]))
        h = p.get("heteroscedasticity")
        if h:
            rho = h["rho_abs_residual_fitted"]
            rows.append(("heteroscedasticity", f"{'yes' if h['detected'] else 'no'} (p = {h['p_value']:.2g}; "
                         f"Spearman |residual| vs fitted {_est(rho, _num(2))})", h["method"]))
    else:
        counts = p.get("class_counts") or []
        names = p.get("class_names") or [str(i) for i in range(len(counts))]
        shown = ", ".join(f"{n}: {c}" for n, c in zip(names, counts, strict=False))
        rows.append(("class counts", shown, "training split, given labels"))
        clean = p.get("clean_imbalance_ratio")
        if clean:
            est = p.get("clean_class_counts") or []
            rows.append(("class counts, true labels (estimated)",
                         ", ".join(f"{n}: {c:.0f}" for n, c in zip(names, est, strict=False)),
                         "column sums of confident learning's joint Q[given, true] (Northcutt et al., JAIR 2021): "
                         "the labels it finds wrong counted in the class it finds likely"))
            rows.append(("imbalance ratio", f"{p['imbalance_ratio']:.3g} given; {_est(clean, _num3g)} estimated for the "
                         f"true labels", "largest / smallest class: exact for the given labels; wrong labels move rows "
                         "between classes (symmetric noise moves head rows into the tail and flattens the counts), so "
                         "where the label noise is material the estimate for the true labels decides the shortlist"))
        else:
            rows.append(("imbalance ratio", f"{p['imbalance_ratio']:.3g}", "largest / smallest class, exact"))
        shots = p.get("shot_groups") or {}
        rows.append(("head / tail", f"{p.get('shape')} profile; the largest {p.get('head_classes')} class(es) hold "
                     f"{_pct(p.get('head_share'))} of the rows; many / medium / few-shot classes: "
                     f"{len(shots.get('many', []))} / {len(shots.get('medium', []))} / {len(shots.get('few', []))}",
                     f"shot groups by the {shots.get('rule', '?')} rule"))
        if p.get("label_noise"):
            qm = p.get("quick_model") or {}
            rows.append(("label noise", _est(p["label_noise"]),
                         p["label_noise"]["method"] + (f"; the model's out-of-sample accuracy {_pct(qm.get('out_of_sample_accuracy'))}"
                                                       if qm else "")))
        pairs = p.get("confused_pairs") or []
        if pairs:
            rows.append(("most confused pairs", "; ".join(f"{a} / {b}: {q['rows']} row(s)" for q in pairs for a, b in [q["classes"]]),
                         "off-diagonal of confident learning's joint, both directions"))
    return rows


def shortlist_rows(s: Shortlist) -> list[tuple[str, str, str]]:
    out = []
    for c in s.candidates:
        name = c.loss
        if c.params.get("terms"):
            name += " (" + " + ".join(str(t["name"]) for t in c.params["terms"]) + ")"
        out.append((name, ", ".join(c.answers), " / ".join(c.reasons)))
    return out


def markdown(p: Mapping[str, Any], s: Shortlist, plan: str | None = None) -> str:
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = [f"## {TITLE}", "", "Measured on the training split only, as `python -m lossbench.choose` loads it; "
             "brackets give 95% intervals.", "", "| trait | measured | how |", "| --- | --- | --- |"]
    lines += [f"| {cell(a)} | {cell(b)} | {cell(c)} |" for a, b, c in trait_rows(p)]
    lines += ["", "Shortlist (guide: the task's baseline, the losses that build in each measured trait, a combination "
              "where two traits need different losses):", "", "| loss | answers | why |", "| --- | --- | --- |"]
    lines += [f"| {cell(a)} | {cell(b)} | {cell(c)} |" for a, b, c in shortlist_rows(s)]
    notes = list(p.get("notes") or []) + list(s.notes)
    if plan:
        notes.append(f"Sweep: {plan}.")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def html_section(p: Mapping[str, Any], s: Shortlist, plan: str | None = None) -> str:
    e = html.escape

    def table(headers: tuple[str, ...], rows: list[tuple[str, str, str]]) -> str:
        head = "".join(f"<th>{e(h)}</th>" for h in headers)
        body = "\n".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"

    notes = list(p.get("notes") or []) + list(s.notes) + ([f"Sweep: {plan}."] if plan else [])
    parts = [
        f'<h2 id="profile">{e(TITLE)}</h2>',
        '<p class="note">Measured on the training split only, as <code>python -m lossbench.choose</code> loads it; '
        "brackets give 95% intervals.</p>",
        table(("trait", "measured", "how"), trait_rows(p)),
        "<p>Shortlist (guide: the task's baseline, the losses that build in each measured trait, a combination where "
        "two traits need different losses):</p>",
        table(("loss", "answers", "why"), shortlist_rows(s)),
    ]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts) + "\n\n"


def terminal(p: Mapping[str, Any], s: Shortlist) -> str:
    lines = [f"Profile of {p.get('data', 'the data')} (training split; 95% intervals in brackets):"]
    rows = trait_rows(p)
    width = max(len(a) for a, _, _ in rows)
    lines += [f"  {a:<{width}}  {b}" for a, b, _ in rows]
    lines.append("Shortlist:")
    for name, answers, why in shortlist_rows(s):
        lines.append(f"  {name} [{answers}]: {why}")
    for n in list(p.get("notes") or []) + list(s.notes):
        lines.append(f"  note: {n}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- into the report
MD_ANCHOR = "\n## Summary\n"
HTML_ANCHOR = '<h2 id="summary">'


def insert_into_report(md_path: Any, html_path: Any, md_text: str, html_text: str) -> bool:
    """Put the profile section first in a written report (before its Summary); False where the
    report's layout has no such anchor (then the profile stays in its own file only)."""
    done = True
    for path, anchor, text in ((md_path, MD_ANCHOR, "\n" + md_text), (html_path, HTML_ANCHOR, html_text)):
        if path is None:
            continue
        body = path.read_text(encoding="utf-8")
        if anchor not in body:
            done = False
            continue
        path.write_text(body.replace(anchor, text + anchor, 1), encoding="utf-8")
    return done

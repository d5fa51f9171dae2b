"""The report's content, section by section, following the source article's five-point guide.

Each ``section_*`` function lays the analysis out as plain data (text from :mod:`words`,
:class:`Table`, :class:`~lossbench.report.figures.FigureRef`) that both templates, HTML and
Markdown, render the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .. import schema
from . import figures, words
from .analysis import Analysis, ScenarioResult
from .ranking import Standing
from .scenarios import DATA_TRAITS, data_traits, normalize_groups, settings_text, trait_findings
from .table import METRIC_PREFIX, loss_spec, natural_key, shown_params
from .words import ci_text, diff_text, num, p_text

CLASSIFICATION = ("multiclass", "binary", "multilabel")
KNOWN_METRICS = (*schema.REGRESSION_METRICS, *schema.CLASSIFICATION_METRICS)


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def loss_family(name: str) -> str:
    spec = loss_spec(name)
    if spec is None:
        return "unknown (not registered here)"
    if name == "combo":
        return "combination"
    tasks = set(spec.tasks)
    if tasks <= {"regression"}:
        return "distance-based"
    return "either" if tasks & {"regression"} else "probability-based"


def loss_traits(name: str) -> tuple[str, ...]:
    spec = loss_spec(name)
    return tuple(sorted(spec.traits)) if spec is not None else ()


def task_family(task: str) -> str:
    if task == "regression":
        return "distance-based"
    return "probability-based" if task in CLASSIFICATION or task == "distribution" else "unknown"


def _traits_text(base: str) -> str:
    return ", ".join(words.TRAIT_WORDS.get(t, t) for t in loss_traits(base))


def _seeds(v: Any) -> str:
    return f"{v.n_finished}/{v.n_seeds}"


# --------------------------------------------------------------------------- summary
def summary(analysis: Analysis, names: Mapping[str, str]) -> Table:
    rows = tuple(
        (names.get(s.scenario, s.scenario), s.recommendation.label or "none", words.VERDICT_WORDS[s.recommendation.verdict],
         s.recommendation.runner_up or "-", f"{s.metric} ({words.direction(s.mode)})")
        for s in analysis.scenarios
    )
    return Table(("Scenario", "Recommended", "Verdict", "Runner-up", "Objective"), rows)


# --------------------------------------------------------------------------- 1. task and family
def section_task(analysis: Analysis) -> dict[str, Any]:
    tasks: dict[str, dict[str, str]] = {}
    for s in analysis.scenarios:
        tasks.setdefault(s.task or "unknown", {}).update({r.loss: r.base for r in s.losses})
    items = []
    for task, losses in sorted(tasks.items()):
        fam = task_family(task)
        rows, mismatched = [], []
        for name in sorted(losses):
            spec, lf = loss_spec(losses[name]), loss_family(losses[name])
            if fam != "unknown" and lf not in (fam, "either", "combination") and not lf.startswith("unknown"):
                mismatched.append(name)
            rows.append((name, lf, _traits_text(losses[name]) or "-", spec.description if spec is not None else "-"))
        warning = f"These losses are not {fam} and do not fit a {task} task: {', '.join(mismatched)}." if mismatched else ""
        items.append({"task": task, "family": fam, "why": words.FAMILY_WHY[fam], "warning": warning,
                      "table": Table(("Loss", "Family", "Traits", "Description"), tuple(rows))})
    return {"items": items}


# --------------------------------------------------------------------------- 2. normalisation
def section_normalisation(analysis: Analysis, settings: pd.DataFrame, names: Mapping[str, str]) -> dict[str, Any]:
    by_scen = {s.scenario: s for s in analysis.scenarios}

    def setting(scen: str, key: str, missing: Any = None) -> Any:
        return settings.at[scen, key] if key in settings.columns else missing

    rows = tuple(
        (names.get(s.scenario, s.scenario), setting(s.scenario, "data.normalize") or "not logged",
         (setting(s.scenario, "data.normalize_target") or "not logged") if s.task == "regression" else "- (labels)")
        for s in analysis.scenarios
    )
    sweeps = []
    for group in normalize_groups(settings):
        cols = [s for s in group if s in by_scen]
        heads = []
        for scen in cols:
            targ = setting(scen, "data.normalize_target")
            heads.append(f"features={setting(scen, 'data.normalize', '?')}"
                         + (f", targets={targ}" if targ and by_scen[scen].task == "regression" else ""))
        trows, remarks = [], []
        for loss in sorted({r.loss for scen in cols for r in by_scen[scen].losses}):
            cells, best_h, best_m = [], None, None
            for scen, h in zip(cols, heads, strict=True):
                try:
                    v = by_scen[scen].by_loss(loss).chosen
                except KeyError:
                    cells.append("-")
                    continue
                cells.append(f"{num(v.mean)} {ci_text(v)}")
                if not math.isnan(v.mean) and (best_m is None or (v.mean > best_m if by_scen[scen].mode == "max" else v.mean < best_m)):
                    best_h, best_m = h, v.mean
            trows.append((loss, *cells))
            if best_h is not None:
                remarks.append(f"{loss}: best with {best_h} ({num(best_m)})")
        sweeps.append({
            "title": f"Normalisation swept: test_{by_scen[cols[0]].objective}, mean [95% CI], for "
            + ", ".join(names.get(c, c) for c in cols),
            "table": Table(("Loss", *heads), tuple(trows)),
            "remark": "; ".join(remarks) + ". These scenarios differ only in their normalisation.",
        })
    note = "" if sweeps else words.NORMALISATION_NOT_SWEPT
    if not any(k in settings.columns for k in ("data.normalize", "data.normalize_target")):
        note = words.NORMALISATION_NOT_LOGGED + note
    return {"table": Table(("Scenario", "Features (data.normalize)", "Targets (data.normalize_target)"), rows),
            "sweeps": sweeps, "note": note, "explain": words.NORMALISATION_EXPLAINED}


# --------------------------------------------------------------------------- 3. ranking
def _ranking_table(s: ScenarioResult) -> Table:
    rows = []
    for r in s.losses:
        v, vs_best = r.chosen, r.comparison not in (Standing.BEST, Standing.ALL_FAILED)
        rows.append((str(r.rank), v.label, num(v.mean), ci_text(v), _seeds(v),
                     diff_text(r.mean_diff, v.mean) if vs_best else "-", p_text(r.p_adjusted) if vs_best else "-",
                     r.comparison.value, words.failures_text(r.failed_runs), "; ".join(words.flags(r)) or "-"))
    return Table(("Rank", "Loss (chosen variant)", s.metric, "95% CI", "Seeds finished", "Diff. vs best", "Holm p",
                  "Vs best", "Failed runs (all variants)", "Flags"), tuple(rows))


def _variants_table(s: ScenarioResult) -> Table | None:
    rows = tuple((r.loss, v.label, num(v.val_mean), f"{num(v.mean)} {ci_text(v)}", _seeds(v),
                  "chosen" if v.variant == r.chosen.variant else "")
                 for r in s.losses if len(r.variants) > 1 for v in r.variants)
    if not rows:
        return None
    return Table(("Loss", "Variant", "Validation objective (mean)", f"{s.metric} [95% CI]", "Seeds finished", ""), rows)


def _secondary(s: ScenarioResult, runs: pd.DataFrame) -> tuple[Table | None, pd.DataFrame | None]:
    """Means of the other test metrics, and of per-class recall, over each chosen variant's finished runs."""
    recall_prefix = METRIC_PREFIX + "test_recall_class_"
    # test_loss is each loss's own value: not comparable between losses
    cols = sorted((c for c in runs.columns if c.startswith(METRIC_PREFIX + "test_") and not c.startswith(recall_prefix)
                   and c not in (METRIC_PREFIX + "test_loss", METRIC_PREFIX + s.metric)), key=_metric_order)
    recall_cols = sorted((c for c in runs.columns if c.startswith(recall_prefix)), key=lambda c: natural_key(c.rsplit("_", 1)[-1]))
    owner = {rid: r.chosen.label for r in s.losses for rid in r.chosen.finished_run_ids}
    if not owner:
        return None, None
    sub = runs.loc[list(owner), cols + recall_cols]
    sub = sub.loc[:, sub.notna().any()]
    means = sub.groupby(pd.Series(owner).reindex(sub.index), sort=False).mean()
    order = [r.chosen.label for r in s.losses if r.chosen.label in means.index]
    means = means.loc[order]
    used = [c for c in cols if c in means.columns]
    table = Table(("Loss", *(c.removeprefix(METRIC_PREFIX) for c in used)),
                  tuple((label, *(num(float(v)) for v in row)) for label, row in zip(order, means[used].to_numpy(), strict=True))
                  ) if used else None
    rec = [c for c in recall_cols if c in means.columns]
    return table, (means[rec].rename(columns=lambda c: c.rsplit("_", 1)[-1]) if rec else None)


def _metric_order(col: str) -> tuple[int, str]:
    """The schema's metrics in its order, then any others by name."""
    name = col.removeprefix(METRIC_PREFIX + "test_")
    return (KNOWN_METRICS.index(name) if name in KNOWN_METRICS else len(KNOWN_METRICS), name)


def section_ranking(
    analysis: Analysis,
    settings: pd.DataFrame,
    names: Mapping[str, str],
    sink: figures.FigureSink,
    histories: Mapping[str, pd.DataFrame],
    curve_runs: Mapping[tuple[str, str], str],
) -> dict[str, Any]:
    runs = analysis.table.set_index("run_id")
    axis_refs, covered = figures.axis_figures(analysis, settings, sink)
    items = []
    for s in analysis.scenarios:
        secondary, recall = _secondary(s, runs)
        figs = figures.scenario_figures(s, sink, recall, ranking=s.scenario not in covered)
        recall_table = None if recall is None else Table(
            ("Loss", *(f"class {c}" for c in recall.columns)),
            tuple((str(i), *(num(float(x)) for x in row)) for i, row in recall.iterrows()))
        items.append({
            "scenario": names.get(s.scenario, s.scenario), "key": s.scenario, "settings": settings_text(settings, s.scenario),
            "task": s.task or "unknown", "objective": s.metric, "direction": words.direction(s.mode),
            "n_runs": s.n_runs,
            "verdict": words.VERDICT_WORDS[s.recommendation.verdict], "evidence": words.evidence(s),
            "notes": list(words.notes(s)), "ranking": _ranking_table(s), "variants": _variants_table(s),
            "secondary": secondary, "recall": recall_table, "figures": figs,
        })
    return {
        "method": words.METHOD, "alpha": analysis.scenarios[0].alpha, "items": items,
        "axis_figures": axis_refs, "curve_figures": figures.curve_figures(analysis, settings, sink, histories, curve_runs),
        "sensitivity_figures": figures.sensitivity_figures(analysis, settings, sink),
    }


# --------------------------------------------------------------------------- 4. combination
def section_combination(analysis: Analysis, names: Mapping[str, str]) -> dict[str, Any]:
    items = []
    for s in analysis.scenarios:
        for c in s.combos:
            v = c.variant
            rows = [(v.label + " (the combination)", "-", num(v.mean), ci_text(v), _seeds(v), "-", "-")]
            for p in c.parts:
                if p.result is None:
                    rows.append((p.name, num(p.weight), "not run alone", "", "", "", ""))
                    continue
                pv = p.result.chosen
                rows.append((pv.label, num(p.weight), num(pv.mean), ci_text(pv), _seeds(pv),
                             diff_text(-p.test.diff, pv.mean), p_text(p.test.p_adjusted)))
            headers = ("Loss", "Weight", s.metric, "95% CI", "Seeds finished", "Combination minus part", "Holm p")
            items.append({"scenario": names.get(s.scenario, s.scenario), "label": v.label,
                          "table": Table(headers, tuple(rows)), "verdict": words.combo_verdict(c)})
    return {"items": items, "none": "" if items else words.COMBO_NONE + words.COMBO_HOW, "how": words.COMBO_HOW}


# --------------------------------------------------------------------------- 5. traits of the data
def section_traits(analysis: Analysis, names: Mapping[str, str]) -> dict[str, Any]:
    items = []
    for s in analysis.scenarios:
        rec = s.recommendation
        base = s.by_loss(rec.loss).base if rec.loss else None
        traits = data_traits(analysis.table, s.scenario)
        known = {k: v for k, v in traits.items() if not math.isnan(v)}
        params = shown_params(base, rec.params) if base else {}
        items.append({
            "scenario": names.get(s.scenario, s.scenario), "loss": rec.loss or "none", "label": rec.label or "none",
            "params": ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults", "runner_up": rec.runner_up or "-",
            "verdict": words.VERDICT_WORDS[rec.verdict], "evidence": words.evidence(s),
            "data_traits": "; ".join(words.facts({k: traits[k] for k in DATA_TRAITS}))
            or "not logged (outlier fraction, imbalance ratio, label noise)",
            "loss_traits": _traits_text(base) if base else "-",
            "link": words.trait_link(s, known, trait_findings(s, traits, loss_traits)), "notes": list(words.notes(s)),
        })
    return {"items": items}


# --------------------------------------------------------------------------- appendix
def appendix_losses(analysis: Analysis) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """One entry per compared loss, ``{label: (loss, registered loss, params)}``: the recommended
    hyperparameters, else its first chosen variant's."""
    chosen: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for s in analysis.scenarios:
        rec = s.recommendation
        if rec.loss is not None and rec.loss not in chosen:
            chosen[rec.loss] = (rec.label, s.by_loss(rec.loss).base, rec.params)
    for s in analysis.scenarios:
        for r in s.losses:
            chosen.setdefault(r.loss, (r.chosen.label, r.base, r.chosen.params))
    return {label: (loss, base, params) for loss, (label, base, params) in sorted(chosen.items())}


def section_appendix(analysis: Analysis, sink: figures.FigureSink, compute: Callable[..., Any] | None = None) -> dict[str, Any]:
    if compute is None:
        from .appendix import compute
    losses = appendix_losses(analysis)
    data = compute({label: (base, params) for label, (_, base, params) in losses.items()})
    figs = figures.appendix_figures(analysis, sink, data, {label: (loss, params) for label, (loss, _, params) in losses.items()})
    return {"figures": figs, "skipped": [f"{k}: {v}" for k, v in sorted(data.skipped.items())]}

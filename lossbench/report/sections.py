"""The report's content, section by section, following the source article's five-point guide.

Each ``section_*`` function lays the analysis out as plain data (sentences from :mod:`words`,
:class:`Table`, :class:`~lossbench.report.figures.FigureRef`) that both templates, HTML and
Markdown, render the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import pandas as pd

from .. import schema
from . import figures, words
from .compare import AcrossScenarios, Disagreement
from .ranking import Standing, VariantStats
from .recommend import Analysis, ScenarioResult
from .scenarios import data_traits, loss_traits, normalize_groups, settings_text, trait_findings
from .table import METRIC_PREFIX, loss_spec, natural_key, shown_params
from .words import ci_text, diff_text, num, p_text

KNOWN_METRICS = (*schema.REGRESSION_METRICS, *schema.CLASSIFICATION_METRICS)
TASK_FAMILY = {"regression": "distance-based", "multiclass": "probability-based", "binary": "probability-based",
               "multilabel": "probability-based", "distribution": "probability-based"}


class Table(NamedTuple):
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def loss_family(name: str) -> str:
    spec = loss_spec(name)
    if spec is None:
        return "unknown (not registered here)"
    if name == "combo":
        return "combination"
    if set(spec.tasks) <= {"regression"}:
        return "distance-based"
    return "either" if "regression" in spec.tasks else "probability-based"


def _traits_text(base: str) -> str:
    return ", ".join(words.TRAIT_WORDS.get(t, t) for t in loss_traits(base))


def _seeds(v: VariantStats) -> str:
    return f"{v.n_finished}/{v.n_seeds}"


def _mean_ci(v: VariantStats) -> str:
    return f"{num(v.mean)} {ci_text(v)}"


# --------------------------------------------------------------------------- summary
def summary(analysis: Analysis, names: Mapping[str, str]) -> Table:
    rows = tuple((names[s.scenario], s.recommendation.label or "none", words.VERDICT_WORDS[s.recommendation.verdict],
                  s.recommendation.runner_up or "-", f"{s.metric} ({words.direction(s.mode)})")
                 for s in analysis.scenarios)
    return Table(("Scenario", "Recommended", "Verdict", "Runner-up", "Objective"), rows)


# --------------------------------------------------------------------------- 1. task and family
def section_task(analysis: Analysis) -> dict[str, Any]:
    tasks: dict[str, dict[str, str]] = {}
    for s in analysis.scenarios:
        tasks.setdefault(s.task or "unknown", {}).update({r.loss: r.base for r in s.losses})
    items = []
    for task, losses in sorted(tasks.items()):
        fam = TASK_FAMILY.get(task, "unknown")
        rows, mismatched = [], []
        for name, base in sorted(losses.items()):
            spec, lf = loss_spec(base), loss_family(base)
            if fam != "unknown" and lf not in (fam, "either", "combination") and not lf.startswith("unknown"):
                mismatched.append(name)
            rows.append((name, lf, _traits_text(base) or "-", spec.description if spec is not None else "-"))
        warning = (f"These losses are not {fam} and do not fit a {task} task: {', '.join(mismatched)}."
                   if mismatched else "")
        items.append({"task": task, "family": fam, "why": words.FAMILY_WHY[fam], "warning": warning,
                      "table": Table(("Loss", "Family", "Traits", "Description"), tuple(rows))})
    return {"items": items}


# --------------------------------------------------------------------------- 2. normalisation
def section_normalisation(analysis: Analysis, settings: pd.DataFrame, names: Mapping[str, str]) -> dict[str, Any]:
    by_scen = {s.scenario: s for s in analysis.scenarios}

    def setting(scen: str, key: str, missing: Any = None) -> Any:
        return settings.at[scen, key] if key in settings.columns else missing

    rows = tuple(
        (names[s.scenario], setting(s.scenario, "data.normalize") or "not logged",
         (setting(s.scenario, "data.normalize_target") or "not logged") if s.task == "regression" else "- (labels)")
        for s in analysis.scenarios
    )
    sweeps = []
    for group in normalize_groups(settings):
        heads = {}
        for scen in group:
            targets = setting(scen, "data.normalize_target")
            heads[scen] = (f"features={setting(scen, 'data.normalize', '?')}"
                           + (f", targets={targets}" if targets and by_scen[scen].task == "regression" else ""))
        trows, remarks = [], []
        for loss in sorted({r.loss for scen in group for r in by_scen[scen].losses}):
            chosen = {scen: r.chosen for scen in group for r in by_scen[scen].losses if r.loss == loss}
            trows.append((loss, *(_mean_ci(chosen[scen]) if scen in chosen else "-" for scen in group)))
            means = {scen: v.mean for scen, v in chosen.items() if not math.isnan(v.mean)}
            if means:  # the first of equals wins
                best = (max if by_scen[group[0]].mode == "max" else min)(means, key=means.__getitem__)
                remarks.append(f"{loss}: best with {heads[best]} ({num(means[best])})")
        sweeps.append({
            "title": f"Normalisation swept: test_{by_scen[group[0]].objective}, mean [95% CI], for "
            + ", ".join(names[c] for c in group),
            "table": Table(("Loss", *heads.values()), tuple(trows)),
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
    rows = tuple((r.loss, v.label, num(v.val_mean), _mean_ci(v), _seeds(v), "chosen" if v is r.chosen else "")
                 for r in s.losses if len(r.variants) > 1 for v in r.variants)
    headers = ("Loss", "Variant", "Validation objective (mean)", f"{s.metric} [95% CI]", "Seeds finished", "")
    return Table(headers, rows) if rows else None


def _secondary(s: ScenarioResult, runs: pd.DataFrame) -> tuple[Table | None, pd.DataFrame | None]:
    """Means of the other test metrics, and of per-class recall, over each chosen variant's finished runs."""
    recall_prefix = METRIC_PREFIX + "test_recall_class_"
    # test_loss is each loss's own value: not comparable between losses
    cols = sorted((c for c in runs.columns if c.startswith(METRIC_PREFIX + "test_") and not c.startswith(recall_prefix)
                   and c not in (METRIC_PREFIX + "test_loss", METRIC_PREFIX + s.metric)), key=_metric_order)
    recall_cols = sorted((c for c in runs.columns if c.startswith(recall_prefix)),
                         key=lambda c: natural_key(c.rsplit("_", 1)[-1]))
    owner = {rid: r.chosen.label for r in s.losses for rid in r.chosen.finished_run_ids}
    if not owner:
        return None, None
    sub = runs.loc[list(owner), cols + recall_cols]
    sub = sub.loc[:, sub.notna().any()]
    means = sub.groupby(pd.Series(owner).reindex(sub.index), sort=False).mean()
    means = means.loc[[r.chosen.label for r in s.losses if r.chosen.label in means.index]]
    used = [c for c in cols if c in means.columns]
    table = None if not used else Table(("Loss", *(c.removeprefix(METRIC_PREFIX) for c in used)),
                                        tuple((label, *map(num, row)) for label, row in means[used].iterrows()))
    recall = [c for c in recall_cols if c in means.columns]
    return table, (means[recall].rename(columns=lambda c: c.rsplit("_", 1)[-1]) if recall else None)


def _metric_order(col: str) -> tuple[int, str]:
    """The schema's metrics in its order, then any others by name."""
    name = col.removeprefix(METRIC_PREFIX + "test_")
    return (KNOWN_METRICS.index(name) if name in KNOWN_METRICS else len(KNOWN_METRICS), name)


def _disagreement(d: Disagreement | None) -> dict[str, Any] | None:
    """The losses under each main metric side by side: mean test value and rank."""
    if d is None:
        return None
    rows = tuple((loss, *(f"{num(m.means[loss])} ({m.ranks[loss]:g})" if loss in m.means else "-"
                          for m in d.rankings)) for loss in d.losses)
    table = Table(("Loss", *(f"test_{m.metric} (rank)" for m in d.rankings)), rows)
    return {"text": words.disagreement_text(d), "table": table, "rewards": list(words.metric_rewards(d))}


def _across(a: AcrossScenarios, names: Mapping[str, str]) -> dict[str, Any]:
    """One task's losses ranked in each scenario, with the mean rank, and what the test says."""
    heads = [names.get(s, s) for s in a.scenarios]
    rows = tuple((loss, f"{a.mean_rank[loss]:.3g}", *(f"{a.ranks[s][loss]:g}" for s in a.scenarios))
                 for loss in a.losses)
    # one loss alone has nothing to be ranked against: the words say so, without a one-row table
    return {"task": a.task, "table": Table(("Loss", "Mean rank", *heads), rows) if len(rows) > 1 else None,
            "text": words.across_text(a, names)}


def section_ranking(analysis: Analysis, settings: pd.DataFrame, names: Mapping[str, str], sink: figures.FigureSink,
                    histories: Mapping[str, pd.DataFrame], curve_runs: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    runs = analysis.table.set_index("run_id")
    axis_refs, covered = figures.axis_figures(analysis, settings, sink)
    items = []
    for s in analysis.scenarios:
        secondary, recall = _secondary(s, runs)
        recall_table = None if recall is None else Table(
            ("Loss", *(f"class {c}" for c in recall.columns)),
            tuple((str(i), *map(num, row)) for i, row in recall.iterrows()))
        items.append({
            "scenario": names[s.scenario], "key": s.scenario, "settings": settings_text(settings, s.scenario),
            "task": s.task or "unknown", "objective": s.metric, "direction": words.direction(s.mode),
            "n_runs": s.n_runs,
            "verdict": words.VERDICT_WORDS[s.recommendation.verdict], "evidence": words.evidence(s),
            "notes": list(words.notes(s)), "ranking": _ranking_table(s), "variants": _variants_table(s),
            "secondary": secondary, "recall": recall_table, "disagreement": _disagreement(s.disagreement),
            "figures": figures.scenario_figures(s, sink, recall, ranking=s.scenario not in covered),
        })
    return {
        "method": words.METHOD, "alpha": analysis.scenarios[0].alpha, "items": items, "axis_figures": axis_refs,
        "across": [_across(a, names) for a in analysis.across], "across_method": words.ACROSS_METHOD,
        "curve_figures": figures.curve_figures(analysis, settings, sink, histories, curve_runs),
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
            items.append({"scenario": names[s.scenario], "label": v.label, "table": Table(headers, tuple(rows)),
                          "verdict": words.combo_verdict(c)})
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
            "scenario": names[s.scenario], "loss": rec.loss or "none", "label": rec.label or "none",
            "params": ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults", "runner_up": rec.runner_up or "-",
            "verdict": words.VERDICT_WORDS[rec.verdict], "evidence": words.evidence(s),
            "data_traits": "; ".join(words.facts(traits))
            or "not logged (outlier fraction, imbalance ratio, label noise)",
            "loss_traits": _traits_text(base) if base else "-",
            "link": words.trait_link(s, known, trait_findings(s, traits)),
            "notes": [*words.notes(s), *([words.disagreement_text(s.disagreement)] if s.disagreement else [])],
        })
    return {"items": items}


# --------------------------------------------------------------------------- appendix
def section_appendix(analysis: Analysis, sink: figures.FigureSink) -> dict[str, Any]:
    """Each compared loss once: with the recommended hyperparameters, else its first chosen variant's."""
    from .appendix import compute

    picked: dict[str, tuple[str, str, dict[str, Any]]] = {}  # loss -> (label, registered loss, params)
    for s in analysis.scenarios:
        rec = s.recommendation
        if rec.loss is not None:
            picked.setdefault(rec.loss, (rec.label, s.by_loss(rec.loss).base, rec.params))
    for s in analysis.scenarios:
        for r in s.losses:
            picked.setdefault(r.loss, (r.chosen.label, r.base, r.chosen.params))
    picked = dict(sorted(picked.items()))
    data = compute({label: (base, params) for label, base, params in picked.values()})
    refs = figures.appendix_figures(analysis, sink, data, {label: loss for loss, (label, _, _) in picked.items()})
    return {"figures": refs, "skipped": [f"{k}: {v}" for k, v in sorted(data.skipped.items())]}

"""The report's content, section by section, following the source article's five-point guide.

Each ``section_*`` function turns the analysis into plain data (text, :class:`Table`,
:class:`FigureRef`) that both templates, HTML and Markdown, render the same way.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import LossbenchError
from . import figures
from .aggregate import (
    Analysis,
    ScenarioResult,
    VariantStats,
    as_text,
    combo_terms,
    holm,
    is_missing,
    paired_test,
    shown_params,
)
from .columns import METRIC_PREFIX, loss_spec
from .scenarios import DATA_TRAITS, NORMALIZE_KEYS, data_axes, data_traits, normalize_groups

TRAIT_WORDS = {
    "robust_to_outliers": "robust to outliers",
    "bounded_influence": "bounded influence (a bounded gradient)",
    "convex": "convex",
    "handles_imbalance": "built for class imbalance",
    "handles_label_noise": "tolerant of label noise",
    "calibrated": "calibrated probabilities",
}
TRAIT_PREDICATES = {
    "robust_to_outliers": "is robust to outliers",
    "bounded_influence": "has a bounded gradient (bounded influence)",
    "convex": "is convex",
    "handles_imbalance": "is built for class imbalance",
    "handles_label_noise": "tolerates label noise",
    "calibrated": "gives calibrated probabilities",
}
# data trait -> (threshold above which it matters, loss traits that address it, words)
DATA_TRAIT_RULES = {
    "outlier_fraction": (0.01, ("robust_to_outliers", "bounded_influence"), "outliers"),
    "imbalance_ratio": (1.5, ("handles_imbalance",), "class imbalance"),
    "label_noise": (0.01, ("handles_label_noise",), "label noise"),
}
VERDICT_WORDS = {
    "significant": "significantly best",
    "tie": "no significant difference: simplest of the tied losses",
    "too_few_seeds": "too few seeds to tell: no winner claimed",
    "only_one": "only one loss finished",
    "all_failed": "every run failed: no recommendation",
}
CLASSIFICATION = ("multiclass", "binary", "multilabel")
MAX_SENSITIVITY_PANELS = 36
# file-name prefixes of the figures a report writes (a re-run removes its own stale ones)
FIGURE_PREFIXES = ("ranking-", "recall-", "axis-", "curves-", "sensitivity-", "appendix-")


# --------------------------------------------------------------------------- building blocks
@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class FigureRef:
    title: str
    path: str  # relative to the report's folder
    b64: str
    caption: str = ""


@dataclass
class FigureSink:
    """Saves figures under ``out_dir/figures`` with unique, readable file names."""

    out_dir: Path
    refs: list[FigureRef] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    _used: set[str] = field(default_factory=set)

    def add(self, fig: Any, name: str, title: str, caption: str = "") -> FigureRef:
        stem = slug(name)
        if stem in self._used:
            stem = f"{stem}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"
            while stem in self._used:
                stem += "x"
        self._used.add(stem)
        rel = f"figures/{stem}.png"
        data = figures.save(fig, self.out_dir / rel)
        ref = FigureRef(title, rel, base64.b64encode(data).decode("ascii"), caption)
        self.refs.append(ref)
        self.paths.append(self.out_dir / rel)
        return ref


def slug(text: str, limit: int = 80) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "figure"
    if len(s) > limit:
        s = s[: limit - 9] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return s


def num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.4g}"


def ci_text(v: VariantStats) -> str:
    m, lo, hi = v.ci
    if math.isnan(m):
        return "n/a"
    return f"[{num(lo)}, {num(hi)}]" if not math.isnan(lo) else "(1 seed)"


def diff_text(diff: float, scale: float) -> str:
    """A difference of means; rounding noise (a few ulps of the values) shows as 0."""
    if not math.isnan(diff) and abs(diff) <= 1e-12 * max(1.0, abs(scale)):
        return "0"
    return num(diff)


def p_text(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def point(v: VariantStats, x: float = 0.0) -> figures.Point:
    m, lo, hi = v.ci
    return figures.Point(x, m, lo, hi)


def failures_text(counts: Mapping[str, int]) -> str:
    parts = [f"{counts[k]} {k}" for k in ("diverged", "error", "killed", "incomplete") if counts.get(k)]
    return ", ".join(parts) if parts else "none"


def _spec(name: str) -> Any | None:
    try:
        return loss_spec(name)
    except LossbenchError:
        return None


def loss_family(name: str) -> str:
    spec = _spec(name)
    if spec is None:
        return "unknown (not registered here)"
    if name == "combo":
        return "combination"
    tasks = set(spec.tasks)
    if tasks <= {"regression"}:
        return "distance-based"
    if not tasks & {"regression"}:
        return "probability-based"
    return "either"


def loss_traits(name: str) -> tuple[str, ...]:
    spec = _spec(name)
    return tuple(sorted(spec.traits)) if spec is not None else ()


def task_family(task: str) -> str:
    if task == "regression":
        return "distance-based"
    if task in CLASSIFICATION or task == "distribution":
        return "probability-based"
    return "unknown"


def short_labels(settings: pd.DataFrame, scenarios: Sequence[str], with_name: bool = False) -> dict[str, str]:
    """Short names for ``scenarios``: per dataset, only the settings that differ between them
    (``outlier_fraction=0.1``), prefixed by the dataset's name when ``with_name`` or when
    several datasets are present. Falls back on the full scenario keys when that is ambiguous."""
    full = {s: s for s in scenarios}
    if any(s not in settings.index for s in scenarios) or "data.name" not in settings.columns:
        return full
    sub = settings.loc[list(scenarios)]
    names = as_text(sub["data.name"])
    show_name = with_name or names.nunique() > 1
    out = {}
    for name, idx in sub.groupby(names, sort=False).groups.items():
        group = sub.loc[idx]
        varying = [
            c
            for c in group.columns
            if c != "data.name" and as_text(group[c]).nunique() > 1 and not group[c].map(is_missing).any()
        ]
        for scen in idx:
            parts = ", ".join(f"{c[len('data.') :]}={group.at[scen, c]}" for c in varying)
            if show_name:
                out[str(scen)] = f"{name}({parts})" if parts else str(name)
            else:
                out[str(scen)] = parts or str(name)
    if len(set(out.values())) < len(out):
        return full
    return out


def _scenario_settings_text(settings: pd.DataFrame, scen: str) -> str:
    if scen not in settings.index:
        return ""
    row = settings.loc[scen]
    parts = [f"{k[len('data.') :]}={v}" for k, v in row.items() if not is_missing(v) and k != "data.name"]
    return ", ".join(parts)


# --------------------------------------------------------------------------- summary
def summary(analysis: Analysis, names: Mapping[str, str]) -> Table:
    rows = []
    for s in analysis.scenarios:
        r = s.recommendation
        rows.append(
            (
                names.get(s.scenario, s.scenario),
                r.label or "none",
                VERDICT_WORDS[r.verdict],
                r.runner_up or "-",
                f"test_{s.objective} ({'higher' if s.mode == 'max' else 'lower'} is better)",
            )
        )
    return Table(("Scenario", "Recommended", "Verdict", "Runner-up", "Objective"), tuple(rows))


# --------------------------------------------------------------------------- 1. task and family
def section_task(analysis: Analysis) -> dict[str, Any]:
    tasks: dict[str, set[str]] = {}
    for s in analysis.scenarios:
        tasks.setdefault(s.task or "unknown", set()).update(r.loss for r in s.losses)
    items = []
    for task, losses in sorted(tasks.items()):
        fam = task_family(task)
        if fam == "distance-based":
            why = (
                "The targets are real numbers, so an error is a distance between the prediction and the target: "
                "distance-based losses (squared, absolute, Huber-type) were compared."
            )
        elif fam == "probability-based":
            why = (
                "The model outputs a probability for each class, so its error is the gap between that predicted "
                "distribution and the true label: probability-based losses (cross-entropy and its variants) were compared."
            )
        else:
            why = "The task was not logged, so the family of losses cannot be checked."
        rows = []
        mismatched = []
        for name in sorted(losses):
            spec = _spec(name)
            lf = loss_family(name)
            if fam != "unknown" and lf not in (fam, "either", "combination") and not lf.startswith("unknown"):
                mismatched.append(name)
            rows.append(
                (
                    name,
                    lf,
                    ", ".join(TRAIT_WORDS.get(t, t) for t in loss_traits(name)) or "-",
                    spec.description if spec is not None else "-",
                )
            )
        items.append(
            {
                "task": task,
                "family": fam,
                "why": why,
                "table": Table(("Loss", "Family", "Traits", "Description"), tuple(rows)),
                "warning": (
                    f"These losses are not {fam} and do not fit a {task} task: {', '.join(mismatched)}."
                    if mismatched
                    else ""
                ),
            }
        )
    return {"items": items}


# --------------------------------------------------------------------------- 2. normalisation
def section_normalisation(analysis: Analysis, settings: pd.DataFrame, names: Mapping[str, str]) -> dict[str, Any]:
    by_scen = {s.scenario: s for s in analysis.scenarios}
    rows = []
    logged = any(k in settings.columns for k in NORMALIZE_KEYS)
    for s in analysis.scenarios:
        feat = settings.at[s.scenario, "data.normalize"] if "data.normalize" in settings.columns else None
        targ = settings.at[s.scenario, "data.normalize_target"] if "data.normalize_target" in settings.columns else None
        rows.append(
            (names.get(s.scenario, s.scenario), feat or "not logged", (targ or "not logged") if s.task == "regression" else "- (labels)")
        )
    sweeps = []
    for group in normalize_groups(settings):
        cols = [s for s in group if s in by_scen]
        heads = []
        for scen in cols:
            feat = settings.at[scen, "data.normalize"] if "data.normalize" in settings.columns else "?"
            targ = settings.at[scen, "data.normalize_target"] if "data.normalize_target" in settings.columns else None
            heads.append(f"features={feat}" + (f", targets={targ}" if targ and by_scen[scen].task == "regression" else ""))
        losses = sorted({r.loss for scen in cols for r in by_scen[scen].losses})
        trows = []
        remarks = []
        for loss in losses:
            cells = []
            best_h, best_m = None, None
            for scen, h in zip(cols, heads, strict=True):
                try:
                    r = by_scen[scen].by_loss(loss)
                except KeyError:
                    cells.append("-")
                    continue
                m = r.chosen.mean
                cells.append(f"{num(m)} {ci_text(r.chosen)}")
                if not math.isnan(m):
                    better = best_m is None or (m > best_m if by_scen[scen].mode == "max" else m < best_m)
                    if better:
                        best_h, best_m = h, m
            trows.append((loss, *cells))
            if best_h is not None:
                remarks.append(f"{loss}: best with {best_h} ({num(best_m)})")
        objective = by_scen[cols[0]].objective
        sweeps.append(
            {
                "title": f"Normalisation swept: test_{objective}, mean [95% CI], for "
                + ", ".join(names.get(c, c) for c in cols),
                "table": Table(("Loss", *heads), tuple(trows)),
                "remark": "; ".join(remarks) + ". These scenarios differ only in their normalisation.",
            }
        )
    note = (
        ""
        if sweeps
        else "Normalisation was not swept, so its effect was not measured. To measure it, sweep it like any other "
        "setting, e.g. `python -m lossbench -m data.normalize=standard,robust,none seed=0,1,2`."
    )
    if not logged:
        note = "The runs do not log data.normalize, so how the data were normalised is unknown. " + note
    return {
        "table": Table(("Scenario", "Features (data.normalize)", "Targets (data.normalize_target)"), tuple(rows)),
        "sweeps": sweeps,
        "note": note,
        "explain": "Features are normalised with statistics fitted on the training split only; regression targets "
        "are trained normalised and every metric is reported back in the targets' original units.",
    }


# --------------------------------------------------------------------------- 3. ranking
METHOD = (
    "Each seed is one repetition on the same data for every loss (same seed = same data split and noise).",
    "A loss run with several hyperparameter values is represented by its best variant, chosen by the mean "
    "validation objective (best_val_objective): the validation split, never the test split, picks the variant.",
    "Losses are ranked by the mean test objective of their chosen variant, with a 95% confidence interval from "
    "the t-distribution over seeds.",
    "Each loss is compared with the best one by a paired t-test over the seeds both finished; the p-values within "
    "a scenario are Holm-corrected. A loss is significantly worse when its adjusted p-value is below alpha; "
    "otherwise it is tied with the best.",
    "When no loss is significantly best, the simplest tied loss that ran reliably is recommended: never failed, "
    "fewer hyperparameters, then the fixed order mse, l1, cross_entropy, bce, ...",
    "Failed runs count against a loss: divergences and errors are listed and flagged; a loss whose runs all "
    "failed ranks last. With fewer than two finished seeds no winner is claimed.",
)


def _ranking_table(s: ScenarioResult) -> Table:
    rows = []
    for r in s.losses:
        v = r.chosen
        fails = r.failed_runs
        rows.append(
            (
                str(r.rank),
                v.label,
                num(v.mean),
                ci_text(v),
                f"{v.n_finished}/{v.n_seeds}",
                diff_text(r.mean_diff, v.mean) if r.comparison not in ("best", "all failed") else "-",
                p_text(r.p_adjusted) if r.comparison not in ("best", "all failed") else "-",
                r.comparison,
                failures_text(fails),
                "; ".join(r.flags) or "-",
            )
        )
    return Table(
        (
            "Rank",
            "Loss (chosen variant)",
            f"test_{s.objective}",
            "95% CI",
            "Seeds finished",
            "Diff. vs best",
            "Holm p",
            "Vs best",
            "Failed runs (all variants)",
            "Flags",
        ),
        tuple(rows),
    )


def _variants_table(s: ScenarioResult) -> Table | None:
    multi = [r for r in s.losses if len(r.variants) > 1]
    if not multi:
        return None
    rows = []
    for r in multi:
        for v in r.variants:
            rows.append(
                (
                    r.loss,
                    v.label,
                    num(v.val_mean),
                    f"{num(v.mean)} {ci_text(v)}",
                    f"{v.n_finished}/{v.n_seeds}",
                    "chosen" if v.variant == r.chosen.variant else "",
                )
            )
    return Table(
        ("Loss", "Variant", "Validation objective (mean)", f"test_{s.objective} [95% CI]", "Seeds finished", ""),
        tuple(rows),
    )


def _finished_run_ids(v: VariantStats) -> list[str]:
    return [v.run_ids[seed] for seed in v.values.index if seed in v.run_ids]


def _secondary(s: ScenarioResult, runs: pd.DataFrame) -> tuple[Table | None, pd.DataFrame | None]:
    """Means of the other test metrics, and of per-class recall, over each chosen variant's finished runs."""
    # test_loss is each loss's own value: not comparable between losses
    cols = [
        c
        for c in runs.columns
        if c.startswith(METRIC_PREFIX + "test_")
        and not c.startswith(METRIC_PREFIX + "test_recall_class_")
        and c not in (METRIC_PREFIX + "test_loss", METRIC_PREFIX + s.metric)
    ]
    recall_cols = sorted(
        (c for c in runs.columns if c.startswith(METRIC_PREFIX + "test_recall_class_")),
        key=lambda c: _class_key(c.rsplit("_", 1)[-1]),
    )
    owner = {rid: r.chosen.label for r in s.losses for rid in _finished_run_ids(r.chosen)}
    if not owner:
        return None, None
    sub = runs.loc[list(owner), cols + recall_cols]
    sub = sub.loc[:, sub.notna().any()]
    means = sub.groupby(pd.Series(owner).reindex(sub.index), sort=False).mean()
    order = [r.chosen.label for r in s.losses if r.chosen.label in means.index]
    means = means.loc[order]
    used = [c for c in cols if c in means.columns]
    table = None
    if used:
        table = Table(
            ("Loss", *(c[len(METRIC_PREFIX) :] for c in used)),
            tuple((label, *(num(float(v)) for v in row)) for label, row in zip(order, means[used].to_numpy(), strict=True)),
        )
    rec = [c for c in recall_cols if c in means.columns]
    recall = means[rec].rename(columns=lambda c: c.rsplit("_", 1)[-1]) if rec else None
    return table, recall


def _class_key(k: str) -> tuple[int, float, str]:
    try:
        return (0, float(k), k)
    except ValueError:
        return (1, 0.0, k)


def _numeric(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _sensitivity(analysis: Analysis, settings: pd.DataFrame, sink: FigureSink) -> list[FigureRef]:
    """Per (loss, swept hyperparameter), a panel: the test objective against its value, one line
    per scenario; panels grouped by objective, at most 12 a figure."""
    series: dict[tuple[str, str, str, str], dict[str, list[figures.Point]]] = {}
    for s in analysis.scenarios:
        for r in s.losses:
            if len(r.variants) < 2:
                continue
            configs = [{**v.params, **v.extras} for v in r.variants]
            for key in sorted({k for d in configs for k in d}):
                xs = [_numeric(d.get(key)) for d in configs]
                pairs = [(x, v) for x, v in zip(xs, r.variants, strict=True) if x is not None and v.n_finished > 0]
                if len({x for x, _ in pairs}) < 2:
                    continue
                series.setdefault((s.objective, s.mode, r.loss, key), {})[s.scenario] = [point(v, x) for x, v in pairs]
    by_objective: dict[tuple[str, str], list[tuple[str, str, dict[str, list[figures.Point]], bool]]] = {}
    for (objective, mode, loss, key), by_scen in sorted(series.items())[:MAX_SENSITIVITY_PANELS]:
        xs = [p.x for pts in by_scen.values() for p in pts]
        log = min(xs) > 0 and max(xs) / min(xs) >= 10
        by_objective.setdefault((objective, mode), []).append((f"{loss}: {key}", key, by_scen, log))
    refs = []
    for (objective, mode), panels in sorted(by_objective.items()):
        names = short_labels(settings, sorted({scen for _, _, lines, _ in panels for scen in lines}))
        panels = [(t, k, {names[sc]: pts for sc, pts in lines.items()}, log) for t, k, lines, log in panels]
        for i in range(0, len(panels), 12):
            part = f" ({i // 12 + 1})" if len(panels) > 12 else ""
            refs.append(
                sink.add(
                    figures.sensitivity_grid(panels[i : i + 12], f"test_{objective}", mode),
                    f"sensitivity-{objective}-{i // 12 + 1}",
                    f"Sensitivity to the swept hyperparameters: test_{objective}{part}",
                    "One panel per loss and hyperparameter; each point is one variant in one scenario (mean and "
                    "95% CI over seeds), one line per scenario. Where other settings were swept too, variants "
                    "sharing a value differ in those.",
                )
            )
    return refs


def _curves(
    analysis: Analysis,
    settings: pd.DataFrame,
    sink: FigureSink,
    histories: Mapping[str, pd.DataFrame],
    curve_runs: Mapping[tuple[str, str], str],
) -> list[FigureRef]:
    """Validation curves, one panel per scenario (at most 12 panels a figure), one run per loss."""
    losses = sorted({r.loss for s in analysis.scenarios for r in s.losses})
    colors = figures.color_map(losses)
    by_metric: dict[tuple[str, str], list[tuple[str, dict[str, pd.DataFrame]]]] = {}
    for s in analysis.scenarios:
        hist = {}
        for r in s.losses:
            rid = curve_runs.get((s.scenario, r.loss))
            if rid is not None and rid in histories:
                hist[r.loss] = histories[rid]
        if hist:
            by_metric.setdefault((s.objective, s.mode), []).append((s.scenario, hist))
    refs = []
    for (objective, mode), panels in sorted(by_metric.items()):
        names = short_labels(settings, [scen for scen, _ in panels])
        panels = [(names[scen], hist) for scen, hist in panels]
        for i in range(0, len(panels), 12):
            chunk = panels[i : i + 12]
            part = f" ({i // 12 + 1})" if len(panels) > 12 else ""
            refs.append(
                sink.add(
                    figures.curves_grid(chunk, f"val_{objective}", mode, colors),
                    f"curves-{objective}-{i // 12 + 1}",
                    f"Training curves: val_{objective} per epoch{part}",
                    "One panel per scenario; one run per loss: its chosen variant's lowest finished seed.",
                )
            )
    return refs


def section_ranking(
    analysis: Analysis,
    settings: pd.DataFrame,
    names: Mapping[str, str],
    sink: FigureSink,
    histories: Mapping[str, pd.DataFrame],
    curve_runs: Mapping[tuple[str, str], str],
) -> dict[str, Any]:
    runs = analysis.table.set_index("run_id")
    axis_refs, covered = _axis_figures(analysis, settings, sink)
    items = []
    for s in analysis.scenarios:
        ranked = [r for r in s.losses if not r.all_failed]
        failed = [r.chosen.label for r in s.losses if r.all_failed]
        figs = []
        if ranked and s.scenario not in covered:  # scenarios on an axis figure are shown there
            fig = figures.ranking(
                [r.chosen.label for r in ranked],
                [point(r.chosen) for r in ranked],
                f"test_{s.objective}",
                s.mode,
                s.recommendation.label or None,
                failed,
            )
            figs.append(
                sink.add(
                    fig,
                    f"ranking-{s.scenario}",
                    "Test objective per loss",
                    "Mean and 95% CI over seeds of each loss's chosen variant; the recommended loss in green.",
                )
            )
        secondary, recall = _secondary(s, runs)
        recall_table = None
        if recall is not None:
            figs.append(
                sink.add(
                    figures.per_class_recall(recall),
                    f"recall-{s.scenario}",
                    "Per-class test recall",
                    "Mean over seeds of each loss's chosen variant; minority classes show what imbalance costs.",
                )
            )
            recall_table = Table(
                ("Loss", *(f"class {c}" for c in recall.columns)),
                tuple((str(i), *(num(float(x)) for x in row)) for i, row in recall.iterrows()),
            )
        n_runs = sum(v.n_runs for r in s.losses for v in r.variants)
        items.append(
            {
                "scenario": names.get(s.scenario, s.scenario),
                "key": s.scenario,
                "settings": _scenario_settings_text(settings, s.scenario),
                "task": s.task or "unknown",
                "objective": f"test_{s.objective}",
                "direction": "higher is better" if s.mode == "max" else "lower is better",
                "n_runs": n_runs,
                "verdict": VERDICT_WORDS[s.recommendation.verdict],
                "evidence": s.recommendation.evidence,
                "notes": list(s.recommendation.notes),
                "ranking": _ranking_table(s),
                "variants": _variants_table(s),
                "secondary": secondary,
                "recall": recall_table,
                "figures": figs,
            }
        )
    return {
        "method": METHOD,
        "alpha": analysis.scenarios[0].alpha if analysis.scenarios else 0.05,
        "items": items,
        "axis_figures": axis_refs,
        "curve_figures": _curves(analysis, settings, sink, histories, curve_runs),
        "sensitivity_figures": _sensitivity(analysis, settings, sink),
    }


def _axis_figures(analysis: Analysis, settings: pd.DataFrame, sink: FigureSink) -> tuple[list[FigureRef], set[str]]:
    """The objective against each swept numeric data setting; also the scenarios these figures show."""
    by_scen = {s.scenario: s for s in analysis.scenarios}
    refs = []
    covered: set[str] = set()
    colors = figures.color_map(sorted({r.loss for s in analysis.scenarios for r in s.losses}))
    names = settings["data.name"] if "data.name" in settings.columns else pd.Series("data", index=settings.index)
    for data_name, axes in data_axes(settings).items():
        scen_of = [str(i) for i in settings.index[as_text(names).replace("", "data") == data_name]]
        sub = settings.loc[scen_of]
        for axis in axes:
            others = [c for c in sub.columns if c != axis and as_text(sub[c]).nunique() > 1]
            note = ""
            keep = sub
            if others:
                modal = as_text(sub[others]).value_counts().idxmax()
                modal = modal if isinstance(modal, tuple) else (modal,)
                mask = (as_text(sub[others]) == pd.Series(modal, index=others)).all(axis=1)
                keep = sub[mask]
                note = ", ".join(f"{c[len('data.') :]}={v}" for c, v in zip(others, modal, strict=True))
            series: dict[str, list[figures.Point]] = {}
            mode, objective = "min", "objective"
            for scen in keep.index:
                s = by_scen.get(str(scen))
                if s is None:
                    continue
                mode, objective = s.mode, s.objective
                x = float(keep.at[scen, axis])
                for r in s.losses:
                    if r.chosen.n_finished:
                        series.setdefault(r.loss, []).append(point(r.chosen, x))
            if sum(len(p) for p in series.values()) < 2:
                continue
            covered.update(str(x) for x in keep.index)
            fig = figures.against_axis(series, axis, f"test_{objective}", mode, note, colors)
            refs.append(
                sink.add(
                    fig,
                    f"axis-{data_name}-{axis}",
                    f"{data_name}: test_{objective} against {axis}",
                    "Each loss's chosen variant per scenario, mean and 95% CI over seeds"
                    + (f"; other settings fixed at {note}" if note else "")
                    + ".",
                )
            )
    return refs, covered


# --------------------------------------------------------------------------- 4. combination
def section_combination(analysis: Analysis, alpha: float, names: Mapping[str, str]) -> dict[str, Any]:
    items = []
    for s in analysis.scenarios:
        try:
            combo = s.by_loss("combo")
        except KeyError:
            continue
        for v in combo.variants:
            terms = combo_terms(v.params)
            rows = [(v.label + " (the combination)", "-", num(v.mean), ci_text(v), f"{v.n_finished}/{v.n_seeds}", "-", "-")]
            tests = []
            comps = []
            for name, weight, _ in terms:
                try:
                    comp = s.by_loss(name)
                except KeyError:
                    comps.append((name, weight, None))
                    continue
                p, n, diff = paired_test(v.values, comp.chosen.values)
                tests.append(p)
                comps.append((name, weight, (comp, p, n, diff)))
            adj = iter(holm(tests))
            best_comp = None
            sign = -1.0 if s.mode == "max" else 1.0
            for name, weight, res in comps:
                if res is None:
                    rows.append((name, num(weight) if weight is not None else "1", "not run alone", "", "", "", ""))
                    continue
                comp, p, n, diff = res
                a = next(adj)
                cv = comp.chosen
                rows.append((cv.label, num(weight) if weight is not None else "1", num(cv.mean), ci_text(cv),
                             f"{cv.n_finished}/{cv.n_seeds}", diff_text(-diff, cv.mean), p_text(a)))
                if not math.isnan(cv.mean) and (best_comp is None or sign * cv.mean < sign * best_comp[0].mean):
                    best_comp = (cv, a)
            missing = [n for n, _, res in comps if res is None]
            if best_comp is None:
                verdict = (
                    f"None of the terms ({', '.join(n for n, _, _ in terms)}) was run on its own in this scenario, so "
                    f"the combination cannot be compared with its parts: run them too (loss=combo,{','.join(missing)})."
                )
            elif math.isnan(v.mean):
                verdict = "The combination has no finished run, so it cannot be compared with its parts."
            else:
                cv, a = best_comp
                better = sign * v.mean < sign * cv.mean
                if better and not math.isnan(a) and a < alpha:
                    verdict = f"The combination beat its best part, {cv.label}, significantly (Holm-adjusted p {p_text(a)})."
                elif better:
                    verdict = (
                        f"The combination scored better than its best part, {cv.label}, but not significantly "
                        f"(Holm-adjusted p {p_text(a)}): the extra term is not worth its hyperparameter here."
                    )
                else:
                    verdict = f"The combination did not beat its best part, {cv.label}."
                if missing:
                    verdict += f" Not run alone: {', '.join(missing)}."
            items.append(
                {
                    "scenario": names.get(s.scenario, s.scenario),
                    "label": v.label,
                    "table": Table(
                        ("Loss", "Weight", f"test_{s.objective}", "95% CI", "Seeds finished",
                         "Combination minus part", "Holm p"),
                        tuple(rows),
                    ),
                    "verdict": verdict,
                }
            )
    how = (
        "To test a combination, run it next to its parts, e.g. "
        "`python -m lossbench -m 'loss=combo' 'loss.terms=[{name: mse, weight: 0.5}, {name: l1, weight: 0.5}]' "
        "seed=0,1,2` and the same sweep with loss=mse,l1."
    )
    return {"items": items, "none": "" if items else "No combination (loss=combo) was run in this experiment. " + how, "how": how}


# --------------------------------------------------------------------------- 5. traits of the data
def _trait_sentence(s: ScenarioResult, traits: Mapping[str, float]) -> str:
    rec = s.recommendation
    if rec.loss is None:
        return "No loss is recommended, so nothing links to the data's traits."
    known = {k: v for k, v in traits.items() if not math.isnan(v)}
    if not known:
        return "The data's traits (outlier fraction, imbalance ratio, label noise) were not logged, so the choice cannot be linked to them."
    rec_traits = set(loss_traits(rec.loss))
    sentences = []
    for key, (threshold, wanted, words) in DATA_TRAIT_RULES.items():
        if key not in known or known[key] <= threshold:
            continue
        value = known[key]
        shown = f"{value:g}:1" if key == "imbalance_ratio" else (f"{value:.0%}" if value >= 0.1 else f"{value:.1%}")
        phrase = {"outlier_fraction": f"{shown} outliers", "imbalance_ratio": f"an imbalance ratio of {shown}",
                  "label_noise": f"{shown} noisy labels"}[key]
        fitting = [r.loss for r in s.losses if set(loss_traits(r.loss)) & set(wanted)]
        if rec_traits & set(wanted):
            ws = " and ".join(TRAIT_PREDICATES.get(t, t) for t in wanted if t in rec_traits)
            sentences.append(f"The data has {phrase}; {rec.loss} {ws}, which fits.")
        elif not fitting:
            sentences.append(
                f"The data has {phrase}, but no loss built for {words} was run: add one "
                f"(see `python -m lossbench.losses`) to see whether it helps."
            )
        else:
            status = {r.loss: r.comparison for r in s.losses}
            how = {
                "best": "scored best but not significantly better",
                "tied": "did not differ significantly",
                "worse": "did significantly worse",
                "not compared": "could not be compared (too few seeds)",
                "all failed": "failed in every run",
            }
            fit_desc = "; ".join(f"{n} {how.get(status[n], status[n])}" for n in fitting)
            sentences.append(
                f"The data has {phrase}, yet {rec.loss}, which is not built for {words}, is recommended; "
                f"of the losses built for it, {fit_desc}."
            )
    if not sentences:
        facts = ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in known.items())
        text = (
            f"No outliers, class imbalance or label noise stand out in this data ({facts}), so no trait of the "
            f"data calls for a special loss: the choice rests on the ranking alone."
        )
    else:
        text = " ".join(sentences)
    if rec.verdict == "too_few_seeds":
        text = "Too few seeds: what follows is indicative, not evidence. " + text
    return text


def section_traits(analysis: Analysis, names: Mapping[str, str]) -> dict[str, Any]:
    items = []
    for s in analysis.scenarios:
        rec = s.recommendation
        traits = data_traits(analysis.table, s.scenario)
        facts = [f"{k.replace('_', ' ')}: {traits[k]:.3g}" for k in DATA_TRAITS if not math.isnan(traits[k])]
        params = shown_params(rec.loss, rec.params) if rec.loss else {}
        items.append(
            {
                "scenario": names.get(s.scenario, s.scenario),
                "loss": rec.loss or "none",
                "label": rec.label or "none",
                "params": ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults",
                "runner_up": rec.runner_up or "-",
                "verdict": VERDICT_WORDS[rec.verdict],
                "evidence": rec.evidence,
                "data_traits": "; ".join(facts) or "not logged (outlier fraction, imbalance ratio, label noise)",
                "loss_traits": ", ".join(TRAIT_WORDS.get(t, t) for t in loss_traits(rec.loss)) if rec.loss else "-",
                "link": _trait_sentence(s, traits),
                "notes": list(rec.notes),
            }
        )
    return {"items": items}


# --------------------------------------------------------------------------- appendix
def appendix_losses(analysis: Analysis) -> dict[str, tuple[str, dict[str, Any]]]:
    """One entry per compared loss: the recommended hyperparameters, else its first chosen variant's."""
    chosen: dict[str, tuple[str, dict[str, Any]]] = {}
    for s in analysis.scenarios:
        rec = s.recommendation
        if rec.loss is not None and rec.loss not in chosen:
            chosen[rec.loss] = (rec.label, rec.params)
    for s in analysis.scenarios:
        for r in s.losses:
            if r.loss not in chosen:
                chosen[r.loss] = (r.chosen.label, r.chosen.params)
    return {label: (loss, params) for loss, (label, params) in sorted(chosen.items())}


def section_appendix(analysis: Analysis, sink: FigureSink, compute: Callable[..., Any] | None = None) -> dict[str, Any]:
    if compute is None:
        from .appendix import compute
    losses = appendix_losses(analysis)
    data = compute(losses)
    palette = figures.color_map(sorted({r.loss for s in analysis.scenarios for r in s.losses}))
    colors = {label: palette.get(loss) for label, (loss, _) in losses.items()}
    figs = []
    if data.regression.curves:
        figs.append(
            sink.add(
                figures.loss_shapes(data.regression.x, data.regression.curves, "residual f(x) - y", "dL/df(x)", colors),
                "appendix-regression",
                "Regression losses and their gradients against the residual",
                "L1's gradient is constant in size however small the error; MSE's grows with the residual, so "
                "outliers dominate; Huber-type losses are quadratic near zero and cap the gradient beyond."
                + (
                    " Per sample, rmse is |r| and overlaps l1; over a batch its gradient is r / RMSE."
                    if any(k.startswith("rmse") for k in data.regression.curves)
                    else ""
                ),
            )
        )
    if data.classification.curves:
        figs.append(
            sink.add(
                figures.loss_shapes(
                    data.classification.x,
                    data.classification.curves,
                    "probability of the true class p",
                    "dL/ds (s = true-class logit)",
                    colors,
                ),
                "appendix-classification",
                "Classification losses and their gradients against the true-class probability",
                "Two classes, true class 0, logits [s, 0]; losses needing class counts get balanced counts. Focal "
                "loss's gradient vanishes for easy examples (p near 1), down-weighting them against cross-entropy.",
            )
        )
    skipped = [f"{k}: {v}" for k, v in sorted(data.skipped.items())]
    return {"figures": figs, "skipped": skipped}


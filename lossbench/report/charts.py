"""Which figures the report draws, from the analysis; :mod:`figures` draws them, and the sink
saves each as a PNG under ``figures/`` with a unique, readable name."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import figures, words
from .scenarios import data_axes, short_labels
from .table import as_text, number

if TYPE_CHECKING:
    from .analysis import Analysis, ScenarioResult
    from .ranking import VariantStats

MAX_SENSITIVITY_PANELS = 36
PANELS_PER_FIGURE = 12
# file-name prefixes of the figures a report writes (a re-run removes its own stale ones)
FIGURE_PREFIXES = ("ranking-", "recall-", "axis-", "curves-", "sensitivity-", "appendix-")


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


def point(v: VariantStats, x: float = 0.0) -> figures.Point:
    m, lo, hi = v.ci
    return figures.Point(x, m, lo, hi)


def _colors(analysis: Analysis) -> dict[str, Any]:
    return figures.color_map(sorted({r.loss for s in analysis.scenarios for r in s.losses}))


def scenario_figures(s: ScenarioResult, sink: FigureSink, recall: pd.DataFrame | None, ranking: bool) -> list[FigureRef]:
    """The ranking of one scenario (unless an axis figure shows it) and its per-class recall."""
    out = []
    ranked = [r for r in s.losses if not r.all_failed]
    if ranked and ranking:
        fig = figures.ranking([r.chosen.label for r in ranked], [point(r.chosen) for r in ranked], s.metric, s.mode,
                              s.recommendation.label or None, [r.chosen.label for r in s.losses if r.all_failed])
        out.append(sink.add(fig, f"ranking-{s.scenario}", *words.figure("ranking")))
    if recall is not None:
        out.append(sink.add(figures.per_class_recall(recall), f"recall-{s.scenario}", *words.figure("recall")))
    return out


def axis_figures(analysis: Analysis, settings: pd.DataFrame, sink: FigureSink) -> tuple[list[FigureRef], set[str]]:
    """The objective against each swept numeric data setting; also the scenarios these figures show."""
    by_scen = {s.scenario: s for s in analysis.scenarios}
    refs: list[FigureRef] = []
    covered: set[str] = set()
    colors = _colors(analysis)
    names = settings["data.name"] if "data.name" in settings.columns else pd.Series("data", index=settings.index)
    for data_name, axes in data_axes(settings).items():
        sub = settings.loc[[str(i) for i in settings.index[as_text(names).replace("", "data") == data_name]]]
        for axis in axes:
            others = [c for c in sub.columns if c != axis and as_text(sub[c]).nunique() > 1]
            note, keep = "", sub
            if others:
                modal = as_text(sub[others]).value_counts().idxmax()
                modal = modal if isinstance(modal, tuple) else (modal,)
                keep = sub[(as_text(sub[others]) == pd.Series(modal, index=others)).all(axis=1)]
                note = ", ".join(f"{c.removeprefix('data.')}={v}" for c, v in zip(others, modal, strict=True))
            series: dict[str, list[figures.Point]] = {}
            mode, objective = "min", "objective"
            for scen in keep.index:
                s = by_scen.get(str(scen))
                if s is None:
                    continue
                mode, objective = s.mode, s.objective
                for r in s.losses:
                    if r.chosen.n_finished:
                        series.setdefault(r.loss, []).append(point(r.chosen, float(keep.at[scen, axis])))
            if sum(len(p) for p in series.values()) < 2:
                continue
            covered.update(str(x) for x in keep.index)
            fig = figures.against_axis(series, axis, f"test_{objective}", mode, note, colors)
            title, caption = words.figure("axis", data=data_name, objective=objective, axis=axis,
                                          fixed=f"; other settings fixed at {note}" if note else "")
            refs.append(sink.add(fig, f"axis-{data_name}-{axis}", title, caption))
    return refs, covered


def _chunks(panels: list[Any]) -> list[tuple[list[Any], int, str]]:
    n = PANELS_PER_FIGURE
    return [(panels[i : i + n], i // n + 1, f" ({i // n + 1})" if len(panels) > n else "") for i in range(0, len(panels), n)]


def sensitivity_figures(analysis: Analysis, settings: pd.DataFrame, sink: FigureSink) -> list[FigureRef]:
    """Per (loss, swept hyperparameter), a panel: the test objective against its value, one line
    per scenario; panels grouped by objective, at most 12 a figure."""
    series: dict[tuple[str, str, str, str], dict[str, list[figures.Point]]] = {}
    for s in analysis.scenarios:
        for r in s.losses:
            if len(r.variants) < 2:
                continue
            configs = [{**v.params, **v.extras} for v in r.variants]
            for key in sorted({k for d in configs for k in d}):
                xs = [number(d.get(key)) for d in configs]
                pairs = [(x, v) for x, v in zip(xs, r.variants, strict=True) if x is not None and v.n_finished > 0]
                if len({x for x, _ in pairs}) >= 2:
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
        for chunk, i, part in _chunks(panels):
            fig = figures.sensitivity_grid(chunk, f"test_{objective}", mode)
            refs.append(sink.add(fig, f"sensitivity-{objective}-{i}", *words.figure("sensitivity", objective=objective, part=part)))
    return refs


def curve_figures(
    analysis: Analysis,
    settings: pd.DataFrame,
    sink: FigureSink,
    histories: Mapping[str, pd.DataFrame],
    curve_runs: Mapping[tuple[str, str], str],
) -> list[FigureRef]:
    """Validation curves, one panel per scenario (at most 12 panels a figure), one run per loss."""
    colors = _colors(analysis)
    by_metric: dict[tuple[str, str], list[tuple[str, dict[str, pd.DataFrame]]]] = {}
    for s in analysis.scenarios:
        hist = {r.loss: histories[rid] for r in s.losses if (rid := curve_runs.get((s.scenario, r.loss))) in histories}
        if hist:
            by_metric.setdefault((s.objective, s.mode), []).append((s.scenario, hist))
    refs = []
    for (objective, mode), panels in sorted(by_metric.items()):
        names = short_labels(settings, [scen for scen, _ in panels])
        for chunk, i, part in _chunks([(names[scen], hist) for scen, hist in panels]):
            fig = figures.curves_grid(chunk, f"val_{objective}", mode, colors)
            refs.append(sink.add(fig, f"curves-{objective}-{i}", *words.figure("curves", objective=objective, part=part)))
    return refs


def appendix_figures(analysis: Analysis, sink: FigureSink, data: Any, losses: Mapping[str, tuple[str, Any]]) -> list[FigureRef]:
    """Each loss and its gradient: regression against the residual, classification against the true-class probability."""
    palette = _colors(analysis)
    colors = {label: palette.get(loss) for label, (loss, _) in losses.items()}
    out = []
    if data.regression.curves:
        rmse = words.RMSE_APPENDIX if any(k.startswith("rmse") for k in data.regression.curves) else ""
        fig = figures.loss_shapes(data.regression.x, data.regression.curves, "residual f(x) - y", "dL/df(x)", colors)
        out.append(sink.add(fig, "appendix-regression", *words.figure("appendix-regression", rmse=rmse)))
    if data.classification.curves:
        fig = figures.loss_shapes(data.classification.x, data.classification.curves, "probability of the true class p",
                                  "dL/ds (s = true-class logit)", colors)
        out.append(sink.add(fig, "appendix-classification", *words.figure("appendix-classification")))
    return out

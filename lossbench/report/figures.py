"""The report's figures: which ones the analysis calls for, drawn on matplotlib's Agg canvas (no
display, no pyplot state), each saved as a PNG under ``figures/`` with a readable, unique name."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from . import words
from .scenarios import data_axes, dataset_names, short_labels
from .table import as_text, number

if TYPE_CHECKING:
    from .ranking import VariantStats
    from .recommend import Analysis, ScenarioResult

DPI = 90
BEST, OTHER, FAILED = "#1b7837", "#4d4d4d", "#b2182b"
MAX_SENSITIVITY_PANELS = 36
PANELS_PER_FIGURE = 12
# file-name prefixes of the figures a report writes (a re-run removes its own stale ones)
FIGURE_PREFIXES = ("ranking-", "recall-", "axis-", "curves-", "sensitivity-", "appendix-")
Points = list[tuple[float, "VariantStats"]]  # a line: (x, the variant whose mean and CI are drawn at x)


@dataclass(frozen=True)
class FigureRef:
    title: str
    path: str  # relative to the report's folder
    b64: str
    caption: str = ""


@dataclass
class FigureSink:
    """Saves figures as ``out_dir/figures/<name>.png``, each under a name of its own."""

    out_dir: Path
    paths: list[Path] = field(default_factory=list)

    def add(self, fig: Figure, name: str, title: str, caption: str = "") -> FigureRef:
        used = {p.stem for p in self.paths}
        stem = slug(name)
        if stem in used:
            stem = f"{stem}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"
            while stem in used:
                stem += "x"
        rel = f"figures/{stem}.png"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
        (self.out_dir / "figures").mkdir(parents=True, exist_ok=True)
        (self.out_dir / rel).write_bytes(buf.getvalue())
        self.paths.append(self.out_dir / rel)
        return FigureRef(title, rel, base64.b64encode(buf.getvalue()).decode("ascii"), caption)


def slug(text: str, limit: int = 80) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "figure"
    return s if len(s) <= limit else s[: limit - 9] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]


# --------------------------------------------------------------------------- drawing
def _figure(width: float, height: float, layout: str | None = None) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _short(text: str, limit: int = 38) -> str:
    text = text.lstrip("_") or "?"  # matplotlib leaves "_"-labels out of legends
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ci_err(variants: Sequence[VariantStats]) -> np.ndarray:
    """Error bars from the mean to each end of the 95% CI (none for a single seed)."""
    ci = np.array([v.ci for v in variants]).reshape(-1, 3)
    return np.nan_to_num(np.array([ci[:, 0] - ci[:, 1], ci[:, 2] - ci[:, 0]]))


def _errorbar(ax: Any, points: Sequence[tuple[float, VariantStats]], **style: Any) -> None:
    """Each variant's mean and 95% CI at its x, joined in order of x."""
    points = sorted(points, key=lambda p: p[0])
    ax.errorbar([x for x, _ in points], [v.mean for _, v in points], yerr=_ci_err([v for _, v in points]), **style)


def _better(metric: str, mode: str) -> str:
    return f"{metric} ({words.direction(mode)})"


def _legend_outside(ax: Any, fig: Figure, legend_width: float) -> None:
    """A legend right of the axes and margins in inches: no layout engine, no overlap search (both slow)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="x-small", frameon=False, borderaxespad=0)
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.85 / w, right=1 - (0.15 + legend_width) / w, bottom=0.6 / h, top=1 - 0.2 / h)


def color_map(names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One fixed colour per name, so a loss keeps its colour across panels."""
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _loss_colors(analysis: Analysis) -> dict[str, Any]:
    return color_map(sorted({r.loss for s in analysis.scenarios for r in s.losses}))


def _small_multiples(
    panels: Sequence[Any], row_height: float, ylabel: str, draw: Callable[[Any, Any], None], *, xlabel: str = "",
    space: tuple[float, float, float, float], legend: tuple[int, int],
) -> Figure:
    """Up to three panels a row, ``draw(ax, panel)`` filling each; ``space``: left and bottom margins in
    inches, hspace, wspace (no layout engine: these are the report's largest figures); ``legend``: the
    fewest entries worth a legend above the panels, and its columns at most."""
    n = len(panels)
    ncols = min(3, max(n, 1))
    fig = _figure(4.2 * ncols, row_height * math.ceil(n / ncols) + 0.9)
    axes = list(fig.subplots(math.ceil(n / ncols), ncols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    handles: dict[str, Any] = {}
    for k, (ax, panel) in enumerate(zip(axes, panels, strict=False)):
        draw(ax, panel)
        ax.grid(alpha=0.3)
        if k % ncols == 0:
            ax.set_ylabel(ylabel, fontsize="small")
        if xlabel and k >= n - ncols:
            ax.set_xlabel(xlabel, fontsize="small")
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    w, h = fig.get_size_inches()
    left, bottom, hspace, wspace = space
    fig.subplots_adjust(left=left / w, right=1 - 0.15 / w, bottom=bottom / h, top=1 - 0.75 / h, hspace=hspace,
                        wspace=wspace)
    if len(handles) >= legend[0]:
        fig.legend(list(handles.values()), list(handles), loc="upper center", ncols=min(len(handles), legend[1]),
                   fontsize="small", frameon=False)
    return fig


def draw_ranking(s: ScenarioResult) -> Figure:
    """Each loss's mean test objective with its 95% CI, best at the top; failed losses named."""
    ranked = [r.chosen for r in s.losses if not r.all_failed]
    failed = [r.chosen.label for r in s.losses if r.all_failed]
    n = len(ranked) + len(failed)
    fig = _figure(6.4, 1.2 + 0.38 * max(n, 2), layout="constrained")
    ax = fig.add_subplot()
    ys = np.arange(len(ranked))[::-1] + len(failed)
    for y, v in zip(ys, ranked, strict=True):
        color = BEST if v.label == s.recommendation.label else OTHER
        ax.errorbar([v.mean], [y], xerr=_ci_err([v]), fmt="o", color=color, capsize=3)
    for i in range(len(failed)):
        ax.text(0.02, len(failed) - 1 - i, "all runs failed", transform=ax.get_yaxis_transform(), color=FAILED,
                va="center")
    ax.set_yticks(list(ys) + list(range(len(failed))[::-1]), [v.label for v in ranked] + failed)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(_better(s.metric, s.mode) + "\nmean and 95% CI over seeds")
    ax.grid(axis="x", alpha=0.3)
    return fig


def draw_recall(recall: pd.DataFrame) -> Figure:
    """A heatmap of mean test recall, losses by classes: readable with 20 losses x 100 classes, and cheap."""
    n_loss, n_cls = recall.shape
    fig = _figure(min(3.0 + 0.45 * n_cls, 12.0), 1.2 + 0.3 * n_loss)
    ax = fig.add_subplot()
    values = recall.to_numpy(float)
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_yticks(np.arange(n_loss), [_short(str(i), 32) for i in recall.index], fontsize="small")
    step = max(1, math.ceil(n_cls / 25))
    ax.set_xticks(np.arange(0, n_cls, step), [str(c) for c in recall.columns[::step]], fontsize="small")
    ax.set_xlabel("class")
    if n_loss * n_cls <= 150:
        for (i, j), v in np.ndenumerate(values):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize="x-small",
                        color="white" if v < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="test recall (mean over seeds)", fraction=0.05, pad=0.02)
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=2.3 / w, right=1 - 0.2 / w, bottom=0.55 / h, top=1 - 0.15 / h)
    return fig


def draw_against_axis(series: Mapping[str, Points], axis: str, metric: str, mode: str, note: str,
                      colors: Mapping[str, Any]) -> Figure:
    """The test objective against a swept data setting, one line per loss."""
    fig = _figure(8.0, 3.8)
    ax = fig.add_subplot()
    for loss, points in series.items():
        _errorbar(ax, points, marker="o", ms=4, capsize=3, label=_short(loss), color=colors.get(loss))
    ax.set_xlabel(axis + (f"  ({note})" if note else ""))
    ax.set_ylabel(_better(metric, mode))
    ax.grid(alpha=0.3)
    _legend_outside(ax, fig, 1.6)
    return fig


def draw_curves(panels: Sequence[tuple[str, Mapping[str, pd.DataFrame]]], metric: str, colors: Mapping[str, Any]
                ) -> Figure:
    """Per panel ``(title, {loss: history (step, value)})``: the validation objective per epoch, one run per loss."""
    def draw(ax: Any, panel: tuple[str, Mapping[str, pd.DataFrame]]) -> None:
        title, hist = panel
        for key, h in hist.items():
            ax.plot(h["step"].to_numpy(), h["value"].to_numpy(float), marker=".", ms=3, color=colors.get(key),
                    label=key)
        ax.set_title(_short(title, 60), fontsize="small")
        ax.locator_params(nbins=5)
        ax.tick_params(labelsize="small")

    return _small_multiples(panels, 2.7, metric, draw, xlabel="epoch", space=(0.8, 0.5, 0.55, 0.25), legend=(1, 6))


def draw_sensitivity(panels: Sequence[tuple[str, str, Mapping[str, Points], bool]], metric: str, mode: str) -> Figure:
    """Per panel ``(title, param, {scenario: points}, log x)``: the test objective against a hyperparameter."""
    colors = color_map(sorted({name for _, _, lines, _ in panels for name in lines}))
    plain = FuncFormatter(lambda v, _: f"{v:g}")

    def draw(ax: Any, panel: tuple[str, str, Mapping[str, Points], bool]) -> None:
        title, param, lines, log = panel
        for name, points in lines.items():
            _errorbar(ax, points, marker="o", ms=3, capsize=0, color=colors[name], label=_short(name))
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
        else:
            ax.locator_params(axis="x", nbins=5)
        ax.locator_params(axis="y", nbins=4)  # few ticks: each one is several artists to draw
        ax.set_title(_short(title, 60), fontsize="small")
        ax.set_xlabel(param, fontsize="small")
        ax.tick_params(labelsize="x-small")

    return _small_multiples(panels, 2.8, _better(metric, mode), draw, space=(0.85, 0.55, 0.7, 0.3), legend=(2, 4))


def draw_loss_shapes(x: np.ndarray, shapes: Mapping[str, tuple[np.ndarray, np.ndarray]], xlabel: str, grad_label: str,
                     colors: Mapping[str, Any]) -> Figure:
    """Two panels: each loss, and its gradient, against ``x``."""
    fig = _figure(10.0, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    for label, (loss, grad) in shapes.items():
        ax1.plot(x, loss, label=_short(label, 32), color=colors.get(label))
        ax2.plot(x, grad, label=_short(label, 32), color=colors.get(label))
    for ax, ylabel in ((ax1, "loss per sample"), (ax2, grad_label)):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax2.axhline(0.0, color="black", lw=0.5)
    _legend_outside(ax2, fig, 2.2)
    fig.subplots_adjust(wspace=0.3)
    return fig


# --------------------------------------------------------------------------- which figures
def scenario_figures(s: ScenarioResult, sink: FigureSink, recall: pd.DataFrame | None, ranking: bool
                     ) -> list[FigureRef]:
    """The ranking of one scenario (unless an axis figure shows it) and its per-class recall."""
    out = []
    if ranking and any(not r.all_failed for r in s.losses):
        out.append(sink.add(draw_ranking(s), f"ranking-{s.scenario}", *words.figure("ranking")))
    if recall is not None:
        out.append(sink.add(draw_recall(recall), f"recall-{s.scenario}", *words.figure("recall")))
    return out


def axis_figures(analysis: Analysis, settings: pd.DataFrame, sink: FigureSink) -> tuple[list[FigureRef], set[str]]:
    """The objective against each swept numeric data setting; also the scenarios these figures show."""
    by_scen = {s.scenario: s for s in analysis.scenarios}
    refs: list[FigureRef] = []
    covered: set[str] = set()
    names = dataset_names(settings)
    for data_name, axes in data_axes(settings).items():
        sub = settings[names == data_name]
        for axis in axes:
            others = [c for c in sub.columns if c != axis and as_text(sub[c]).nunique() > 1]
            note, keep = "", sub
            if others:  # the other swept settings held at their most common values
                modal = as_text(sub[others]).value_counts().idxmax()
                keep = sub[(as_text(sub[others]) == pd.Series(modal, index=others)).all(axis=1)]
                note = ", ".join(f"{c.removeprefix('data.')}={v}" for c, v in zip(others, modal, strict=True))
            series: dict[str, Points] = {}
            for scen in keep.index:
                for r in by_scen[scen].losses:
                    if r.chosen.n_finished:
                        series.setdefault(r.loss, []).append((float(keep.at[scen, axis]), r.chosen))
            if sum(len(p) for p in series.values()) < 2:
                continue
            covered.update(keep.index)
            last = by_scen[keep.index[-1]]
            fig = draw_against_axis(series, axis, f"test_{last.objective}", last.mode, note, _loss_colors(analysis))
            title, caption = words.figure("axis", data=data_name, objective=last.objective, axis=axis,
                                          fixed=f"; other settings fixed at {note}" if note else "")
            refs.append(sink.add(fig, f"axis-{data_name}-{axis}", title, caption))
    return refs, covered


def _chunks(panels: list[Any]) -> list[tuple[list[Any], int, str]]:
    """At most PANELS_PER_FIGURE panels a figure: ``(panels, number, " (number)" when several)``."""
    n = PANELS_PER_FIGURE
    return [(panels[i : i + n], i // n + 1, f" ({i // n + 1})" if len(panels) > n else "")
            for i in range(0, len(panels), n)]


def sensitivity_figures(analysis: Analysis, settings: pd.DataFrame, sink: FigureSink) -> list[FigureRef]:
    """Per (loss, swept hyperparameter), a panel: the test objective against its value, one line
    per scenario; panels grouped by objective."""
    series: dict[tuple[str, str, str, str], dict[str, Points]] = {}
    for s in analysis.scenarios:
        for r in s.losses:
            if len(r.variants) < 2:
                continue
            configs = [{**v.params, **v.extras} for v in r.variants]
            for key in sorted({k for d in configs for k in d}):
                pairs = [(x, v) for d, v in zip(configs, r.variants, strict=True)
                         if (x := number(d.get(key))) is not None and v.n_finished > 0]
                if len({x for x, _ in pairs}) >= 2:
                    series.setdefault((s.objective, s.mode, r.loss, key), {})[s.scenario] = pairs
    by_objective: dict[tuple[str, str], list[tuple[str, str, dict[str, Points], bool]]] = {}
    for (objective, mode, loss, key), by_scen in sorted(series.items())[:MAX_SENSITIVITY_PANELS]:
        xs = [x for points in by_scen.values() for x, _ in points]
        by_objective.setdefault((objective, mode), []).append(
            (f"{loss}: {key}", key, by_scen, min(xs) > 0 and max(xs) / min(xs) >= 10))
    refs = []
    for (objective, mode), panels in sorted(by_objective.items()):
        names = short_labels(settings, sorted({scen for _, _, lines, _ in panels for scen in lines}))
        panels = [(t, k, {names[sc]: pts for sc, pts in lines.items()}, log) for t, k, lines, log in panels]
        for chunk, i, part in _chunks(panels):
            refs.append(sink.add(draw_sensitivity(chunk, f"test_{objective}", mode), f"sensitivity-{objective}-{i}",
                                 *words.figure("sensitivity", objective=objective, part=part)))
    return refs


def curve_figures(analysis: Analysis, settings: pd.DataFrame, sink: FigureSink, histories: Mapping[str, pd.DataFrame],
                  curve_runs: Mapping[tuple[str, str], str]) -> list[FigureRef]:
    """Validation curves, one panel per scenario, one run per loss."""
    colors = _loss_colors(analysis)
    by_metric: dict[tuple[str, str], list[tuple[str, dict[str, pd.DataFrame]]]] = {}
    for s in analysis.scenarios:
        hist = {r.loss: histories[rid] for r in s.losses if (rid := curve_runs.get((s.scenario, r.loss))) in histories}
        if hist:
            by_metric.setdefault((s.objective, s.mode), []).append((s.scenario, hist))
    refs = []
    for (objective, _), panels in sorted(by_metric.items()):
        names = short_labels(settings, [scen for scen, _ in panels])
        for chunk, i, part in _chunks([(names[scen], hist) for scen, hist in panels]):
            refs.append(sink.add(draw_curves(chunk, f"val_{objective}", colors), f"curves-{objective}-{i}",
                                 *words.figure("curves", objective=objective, part=part)))
    return refs


def appendix_figures(analysis: Analysis, sink: FigureSink, data: Any, losses: Mapping[str, str]) -> list[FigureRef]:
    """Each loss and its gradient: regression losses against the residual, classification ones against the
    true-class probability."""
    palette = _loss_colors(analysis)
    colors = {label: palette.get(loss) for label, loss in losses.items()}
    out = []
    for family, shapes, xlabel, grad_label in (
        ("regression", data.regression, "residual f(x) - y", "dL/df(x)"),
        ("classification", data.classification, "probability of the true class p", "dL/ds (s = true-class logit)"),
    ):
        if shapes.curves:
            rmse = words.RMSE_APPENDIX if any(k.startswith("rmse") for k in shapes.curves) else ""
            fig = draw_loss_shapes(shapes.x, shapes.curves, xlabel, grad_label, colors)
            out.append(sink.add(fig, f"appendix-{family}", *words.figure(f"appendix-{family}", rmse=rmse)))
    return out

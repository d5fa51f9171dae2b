"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Every function returns a :class:`matplotlib.figure.Figure`; :func:`save` writes it as a
PNG and returns the bytes, which the HTML embeds as base64.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # explicit: the report never needs a display

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

DPI = 90
BEST = "#1b7837"
OTHER = "#4d4d4d"
FAILED = "#b2182b"


@dataclass(frozen=True)
class Point:
    """A mean with its 95% confidence interval (NaN bounds: a single seed)."""

    x: float
    mean: float
    low: float = math.nan
    high: float = math.nan


def _new(width: float = 6.4, height: float = 3.6, layout: str | None = "constrained") -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _grid(n: int, row_height: float) -> tuple[Figure, list[Any], int]:
    """Small multiples without a layout engine (fixed margins): the figure, its ``n`` visible axes, the columns."""
    ncols = min(3, max(n, 1))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.2 * ncols, row_height * nrows + 0.9), dpi=DPI)
    FigureCanvasAgg(fig)
    axs = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax in axs[n:]:
        ax.set_visible(False)
    return fig, axs[:n], ncols


def _better(metric: str, mode: str) -> str:
    from .words import direction

    return f"{metric} ({direction(mode)})"


def _fixed_margins(fig: Figure, legend_width: float = 0.0) -> None:
    """Margins in inches, no layout engine: much faster than constrained layout for plain axes."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.85 / w, right=1 - (0.15 + legend_width) / w, bottom=0.6 / h, top=1 - 0.2 / h)


def _short(text: str, limit: int = 38) -> str:
    text = text.lstrip("_") or "?"  # matplotlib leaves "_"-labels out of legends
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _legend_right(ax: Any, fig: Figure, n: int) -> None:
    """A legend outside the axes on the right: no overlap search (``loc="best"`` is slow)."""
    if n:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="x-small", frameon=False, borderaxespad=0)


def save(fig: Figure, path: Path) -> bytes:
    """Write ``fig`` as a PNG at ``path`` and return the PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _yerr(points: Sequence[Point]) -> np.ndarray:
    lo = [p.mean - p.low if not math.isnan(p.low) else 0.0 for p in points]
    hi = [p.high - p.mean if not math.isnan(p.high) else 0.0 for p in points]
    return np.array([lo, hi])


def ranking(
    labels: Sequence[str], points: Sequence[Point], metric: str, mode: str, highlight: str | None, failed: Sequence[str]
) -> Figure:
    """Each loss's mean test objective with its 95% CI, best at the top; failed losses named."""
    n = len(labels) + len(failed)
    fig = _new(6.4, 1.2 + 0.38 * max(n, 2))
    ax = fig.add_subplot()
    ys = np.arange(len(labels))[::-1] + len(failed)
    colors = [BEST if lab == highlight else OTHER for lab in labels]
    for y, p, c in zip(ys, points, colors, strict=True):
        ax.errorbar([p.mean], [y], xerr=_yerr([p]), fmt="o", color=c, capsize=3)
    for i, lab in enumerate(failed):
        ax.text(0.02, len(failed) - 1 - i, "all runs failed", transform=ax.get_yaxis_transform(), color=FAILED, va="center")
    ax.set_yticks(list(ys) + list(range(len(failed))[::-1]), list(labels) + list(failed))
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(_better(metric, mode) + "\nmean and 95% CI over seeds")
    ax.grid(axis="x", alpha=0.3)
    return fig


def against_axis(
    series: Mapping[str, Sequence[Point]],
    axis: str,
    metric: str,
    mode: str,
    note: str = "",
    colors: Mapping[str, Any] | None = None,
) -> Figure:
    """The test objective against a swept data setting, one line per loss."""
    fig = _new(8.0, 3.8, layout=None)
    ax = fig.add_subplot()
    for loss, pts in series.items():
        pts = sorted(pts, key=lambda p: p.x)
        x = [p.x for p in pts]
        ax.errorbar(
            x,
            [p.mean for p in pts],
            yerr=_yerr(pts),
            marker="o",
            ms=4,
            capsize=3,
            label=_short(loss),
            color=(colors or {}).get(loss),
        )
    ax.set_xlabel(axis + (f"  ({note})" if note else ""))
    ax.set_ylabel(_better(metric, mode))
    ax.grid(alpha=0.3)
    _legend_right(ax, fig, len(series))
    _fixed_margins(fig, legend_width=1.6)
    return fig


def per_class_recall(recall: pd.DataFrame) -> Figure:
    """A heatmap: rows of ``recall`` are losses, columns classes, values the mean test recall.

    One image rather than grouped bars: readable with 20 losses x 100 classes, and cheap to draw.
    """
    n_loss, n_cls = recall.shape
    fig = _new(min(3.0 + 0.45 * n_cls, 12.0), 1.2 + 0.3 * n_loss, layout=None)
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
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize="x-small", color="white" if v < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="test recall (mean over seeds)", fraction=0.05, pad=0.02)
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=2.3 / w, right=1 - 0.2 / w, bottom=0.55 / h, top=1 - 0.15 / h)
    return fig


def color_map(names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One fixed colour per name, so a loss keeps its colour across panels."""
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def curves_grid(
    panels: Sequence[tuple[str, Mapping[str, pd.DataFrame]]], metric: str, mode: str, colors: Mapping[str, Any]
) -> Figure:
    """Small multiples: per panel (a scenario), the validation objective per epoch, one run per loss
    (``panels``: ``(title, {loss: history frame (step, value)})``).

    Drawn without a layout engine (fixed margins): it is the report's largest figure.
    """
    n = len(panels)
    fig, axes, ncols = _grid(n, 2.7)
    seen: dict[str, Any] = {}
    for k, ax in enumerate(axes):
        title, hist = panels[k]
        for key, h in hist.items():
            (line,) = ax.plot(
                h["step"].to_numpy(), h["value"].to_numpy(float), marker=".", ms=3, color=colors.get(key), label=_short(key)
            )
            seen.setdefault(key, line)
        ax.set_title(_short(title, 60), fontsize="small")
        ax.locator_params(nbins=5)
        ax.tick_params(labelsize="small")
        ax.grid(alpha=0.3)
        if k % ncols == 0:
            ax.set_ylabel(metric, fontsize="small")
        if k >= n - ncols:
            ax.set_xlabel("epoch", fontsize="small")
    top = 1 - 0.75 / fig.get_figheight()
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.8 / w, right=1 - 0.15 / w, bottom=0.5 / h, top=top, hspace=0.55, wspace=0.25)
    fig.legend(list(seen.values()), list(seen), loc="upper center", ncols=min(len(seen), 6), fontsize="small", frameon=False)
    return fig


def sensitivity_grid(
    panels: Sequence[tuple[str, str, Mapping[str, Sequence[Point]], bool]], metric: str, mode: str
) -> Figure:
    """Small multiples, one panel per (loss, hyperparameter): the test objective against the
    hyperparameter's value, one line per scenario (``panels``: ``(title, param, lines, log x)``).

    Drawn without a layout engine, like :func:`curves_grid`.
    """
    n = len(panels)
    fig, axes, ncols = _grid(n, 2.8)
    colors = color_map(sorted({name for _, _, lines, _ in panels for name in lines}))
    seen: dict[str, Any] = {}
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for k, ax in enumerate(axes):
        title, param, lines, log = panels[k]
        for name, pts in lines.items():
            pts = sorted(pts, key=lambda p: p.x)
            handle = ax.errorbar(
                [p.x for p in pts], [p.mean for p in pts], yerr=_yerr(pts), marker="o", ms=3, capsize=0,
                color=colors[name], label=_short(name),
            )
            seen.setdefault(name, handle)
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
        ax.locator_params(axis="y", nbins=4)  # few ticks: each one is several artists to draw
        if not log:
            ax.locator_params(axis="x", nbins=5)
        ax.set_title(_short(title, 60), fontsize="small")
        ax.set_xlabel(param, fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.grid(alpha=0.3)
        if k % ncols == 0:
            ax.set_ylabel(_better(metric, mode), fontsize="small")
    top = 1 - 0.75 / fig.get_figheight()
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.85 / w, right=1 - 0.15 / w, bottom=0.55 / h, top=top, hspace=0.7, wspace=0.3)
    if len(seen) > 1:
        fig.legend(
            list(seen.values()), [_short(s) for s in seen], loc="upper center", ncols=min(len(seen), 4),
            fontsize="small", frameon=False,
        )
    return fig


def loss_shapes(
    x: np.ndarray,
    shapes: Mapping[str, tuple[np.ndarray, np.ndarray]],
    xlabel: str,
    grad_label: str,
    colors: Mapping[str, Any] | None = None,
) -> Figure:
    """Two panels: each loss, and its gradient, against ``x``."""
    fig = _new(10.0, 3.8, layout=None)
    ax1, ax2 = fig.subplots(1, 2)
    for label, (loss, grad) in shapes.items():
        color = (colors or {}).get(label)
        ax1.plot(x, loss, label=_short(label, 32), color=color)
        ax2.plot(x, grad, label=_short(label, 32), color=color)
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel("loss per sample")
    ax2.set_xlabel(xlabel)
    ax2.set_ylabel(grad_label)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax2.axhline(0.0, color="black", lw=0.5)
    _legend_right(ax2, fig, len(shapes))
    _fixed_margins(fig, legend_width=2.2)
    fig.subplots_adjust(wspace=0.3)
    return fig

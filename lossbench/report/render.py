"""Write the report: its content as HTML (self-contained) and Markdown through jinja2 templates,
and its conclusions as data in ``summary.json``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from ..errors import LossbenchError

if TYPE_CHECKING:
    from .analysis import Analysis

FORMATS = {"html": "report.html", "md": "report.md"}
TEMPLATES = {"html": "report.html.j2", "md": "report.md.j2"}
SUMMARY = "summary.json"


def _md_cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    out = tuple(str(f).lower() for f in formats)
    if not out or any(f not in FORMATS for f in out):
        raise LossbenchError(
            f"report.formats must be a non-empty list drawn from {', '.join(FORMATS)}; got {list(formats)!r}. "
            f"E.g. report.formats=[html,md]."
        )
    return out


def render(context: Mapping[str, Any], out_dir: Path, formats: Sequence[str]) -> dict[str, Path]:
    """Write one file per format under ``out_dir``; return ``{format: path}``."""
    from .words import SECTION_TITLES

    out: dict[str, Path] = {}
    for fmt in check_formats(formats):
        env = jinja2.Environment(loader=jinja2.PackageLoader("lossbench.report", "templates"), autoescape=fmt == "html",
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        env.filters["cell"] = _md_cell
        out[fmt] = out_dir / FORMATS[fmt]
        out[fmt].write_text(env.get_template(TEMPLATES[fmt]).render(titles=SECTION_TITLES, **context), encoding="utf-8")
    return out


def _plain(x: Any) -> Any:
    """JSON-ready: NaN as null, tuples as lists, enums as their values."""
    if isinstance(x, float):
        return None if math.isnan(x) else x
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return getattr(x, "value", x)


def _disagreement(d: Any) -> dict[str, Any] | None:
    if d is None:
        return None
    return {"objective": d.objective, "winners": d.winners, "metrics": [
        {"metric": m.metric, "mode": m.mode, "winners": m.winners,
         "losses": [{"loss": loss, "mean": m.means[loss], "rank": m.ranks[loss]} for loss in m.means]}
        for m in d.rankings]}


def _across(a: Any, names: Mapping[str, str]) -> dict[str, Any]:
    t = a.test
    return {
        "task": a.task, "scenarios": [names.get(s, s) for s in a.scenarios],
        "losses": [{"loss": loss, "mean_rank": a.mean_rank[loss], "ranks": [a.ranks[s][loss] for s in a.scenarios]}
                   for loss in a.losses],
        "left_out_losses": a.left_out_losses, "left_out_scenarios": [names.get(s, s) for s in a.left_out_scenarios],
        "friedman": None if t is None else {"statistic": t.statistic, "p_value": t.p, "significant": a.significant},
        "nemenyi": None if t is None else {"critical_difference": t.cd, "q_alpha": t.q,
                                           "different": [list(p) for p in a.different]},
        "not_tested_because": None if t is not None else "fewer than 3 scenarios or 3 losses",
    }


def write_summary(analysis: Analysis, names: Mapping[str, str], out_dir: Path) -> Path:
    """``summary.json``: per scenario, the recommended loss, the verdict and its reasons, the runner-up,
    the objective, the ranking with means, 95% CIs and Holm-adjusted p-values against the best, and
    where the main metrics disagree on the winner; per task, the losses ranked across its scenarios."""
    scenarios = []
    for s in analysis.scenarios:
        rec = s.recommendation
        ranking = [
            {"rank": r.rank, "loss": r.loss, "label": r.chosen.label, "mean": r.chosen.ci[0], "ci": r.chosen.ci[1:],
             "seeds_finished": r.chosen.n_finished, "seeds": r.chosen.n_seeds, "diff_vs_best": r.mean_diff,
             "p_value": r.p_value, "p_adjusted": r.p_adjusted, "vs_best": r.comparison}
            for r in s.losses
        ]
        scenarios.append({
            "scenario": s.scenario, "name": names.get(s.scenario, s.scenario), "task": s.task,
            "objective": s.metric, "mode": s.mode,
            "recommended": {"loss": rec.loss, "label": rec.label, "params": rec.params} if rec.loss else None,
            "verdict": rec.verdict, "runner_up": rec.runner_up, "tied": rec.tied,
            "reasons": [{"why": r.why, "losses": r.losses, "n": r.n, "value": r.value} for r in rec.reasons],
            "ranking": ranking, "metrics_disagree": _disagreement(s.disagreement),
        })
    across = [_across(a, names) for a in analysis.across]
    data = _plain({"alpha": analysis.scenarios[0].alpha, "scenarios": scenarios, "across_scenarios": across})
    path = out_dir / SUMMARY
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path

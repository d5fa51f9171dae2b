"""``build_report``: MLflow experiment in; HTML (self-contained) and Markdown through jinja2
templates, summary.json (the conclusions as data) and figures out."""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LossbenchError, path_blocker

if TYPE_CHECKING:
    from .recommend import Analysis

FORMATS = {"html": "report.html", "md": "report.md"}  # each written from templates/<file name>.j2
SUMMARY = "summary.json"


@dataclass(frozen=True)
class ReportPaths:
    """Where a report was written."""

    out_dir: Path
    html: Path | None
    markdown: Path | None
    figures: tuple[Path, ...]
    summary: Path | None = None


def curve_runs(analysis: Analysis, limit: int) -> dict[tuple[str, str], str]:
    """The runs whose validation curves are drawn: per (scenario, loss), the chosen variant's
    lowest finished seed; at most ``limit`` runs in all, scenarios in order."""
    out: dict[tuple[str, str], str] = {}
    for s in analysis.scenarios:
        for r in s.losses:
            if len(out) >= limit:
                return out
            if len(r.chosen.values):
                out[(s.scenario, r.loss)] = r.chosen.finished_run_ids[0]
    return out


def check_out_dir(out: Path) -> None:
    """Fail before any work when ``out`` cannot be a folder: it, or the nearest part of its path that
    exists, is a file, or that folder is not writable."""
    kind, probe = path_blocker(out, file=False) or ("", out)
    if kind:
        why = "made" if kind == "file" else "written"
        what = "a file, not a folder" if kind == "file" else "not writable"
        raise LossbenchError(f"report.out_dir={out} cannot be {why}: {probe} is {what}. Pick another report.out_dir.")


def build_report(
    experiment_name: str,
    tracking_uri: str,
    out_dir: str | Path,
    *,
    alpha: float = 0.05,
    formats: Sequence[str] = ("html", "md"),
    max_curve_runs: int = 200,
    appendix: bool = True,
) -> ReportPaths:
    """Read ``experiment_name`` from the MLflow store at ``tracking_uri`` and write the report under ``out_dir``.

    ``report.html`` embeds the figures, ``report.md`` links them (PNG files under ``figures/``);
    ``summary.json`` holds each scenario's recommendation and ranking as data. Raises
    :class:`LossbenchError` for an unknown or empty experiment or a store that does not exist.
    """
    # imported here: importing the package (and its analysis) loads neither mlflow nor jinja2,
    # and an unknown experiment is reported without loading torch or matplotlib
    from . import runs
    from .table import split_invalid_jobs

    fmts = check_formats(formats)
    if not experiment_name:
        raise LossbenchError("tracking.experiment_name is empty: name the experiment to report on.")
    if isinstance(max_curve_runs, bool) or not isinstance(max_curve_runs, int) or max_curve_runs < 0:
        raise LossbenchError(f"report.max_curve_runs must be an int >= 0, got {max_curve_runs!r}.")
    out = Path(out_dir)
    check_out_dir(out)
    with runs.gc_paused():
        client = runs.open_store(tracking_uri)
        table, ignored = runs.run_table(client, runs.find_experiment(client, experiment_name))
        table, invalid = split_invalid_jobs(table)
        if table.empty and invalid:
            raise LossbenchError(
                f"The experiment '{experiment_name}' holds only {len(invalid)} invalid job(s), refused before "
                f"training (first: [{invalid[0]['overrides']}]: {invalid[0]['error']}). "
                f"Fix their settings and run again."
            )
        if table.empty:
            extra = f" ({ignored} run(s) there lack the lossbench tags)" if ignored else ""
            raise LossbenchError(
                f"The experiment '{experiment_name}' has no lossbench runs{extra}. Log some first, e.g. "
                f"`python -m lossbench -m loss=mse,l1,huber seed=0,1,2 tracking.experiment_name={experiment_name}`."
            )
        from .. import __version__
        from . import sections
        from .figures import FIGURE_PREFIXES, FigureSink
        from .recommend import analyze
        from .scenarios import scenario_settings, short_labels

        analysis = analyze(table, alpha)
        out.mkdir(parents=True, exist_ok=True)
        sink = FigureSink(out)
        picks = curve_runs(analysis, max_curve_runs)
        objective = {s.scenario: s.objective for s in analysis.scenarios}
        histories = runs.metric_histories(client, {rid: f"val_{objective[scen]}" for (scen, _), rid in picks.items()})
        settings = scenario_settings(analysis.table)
        names = short_labels(settings, [s.scenario for s in analysis.scenarios], with_name=True)
        context = {
            "experiment": experiment_name, "tracking_uri": tracking_uri, "n_runs": len(analysis.table),
            "n_ignored": ignored, "invalid_jobs": invalid, "n_scenarios": len(analysis.scenarios),
            "alpha": f"{alpha:g}", "version": __version__,
            "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "summary": sections.summary(analysis, names),
            "task": sections.section_task(analysis),
            "norm": sections.section_normalisation(analysis, settings, names),
            "ranking": sections.section_ranking(analysis, settings, names, sink, histories, picks),
            "combo": sections.section_combination(analysis, names),
            "traits": sections.section_traits(analysis, names),
            "appendix": sections.section_appendix(analysis, sink) if appendix else None,
        }
        written = render(context, out, fmts)
        summary = write_summary(analysis, names, out)
    for path in (out / "figures").glob("*.png"):  # figures an earlier report wrote here and this one did not
        if path not in sink.paths and path.name.startswith(FIGURE_PREFIXES):
            path.unlink()
    return ReportPaths(out, written.get("html"), written.get("md"), tuple(sink.paths), summary)


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
    """Write one file per format (checked by :func:`check_formats`) under ``out_dir``; return ``{format: path}``."""
    import jinja2

    from .words import SECTION_TITLES

    out: dict[str, Path] = {}
    for fmt in formats:
        env = jinja2.Environment(loader=jinja2.PackageLoader("lossbench.report", "templates"), autoescape=fmt == "html",
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        env.filters["cell"] = _md_cell
        out[fmt] = out_dir / FORMATS[fmt]
        text = env.get_template(FORMATS[fmt] + ".j2").render(titles=SECTION_TITLES, **context)
        out[fmt].write_text(text, encoding="utf-8")
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

"""``build_report``: MLflow experiment in; HTML, Markdown, summary.json and figures out."""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LossbenchError

if TYPE_CHECKING:
    from .analysis import Analysis


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
    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise LossbenchError(f"report.out_dir={out} cannot be made: {probe} is a file, not a folder. "
                             f"Pick another report.out_dir.")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise LossbenchError(f"report.out_dir={out} cannot be written: {probe} is not writable. "
                             f"Pick another report.out_dir.")


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
    from .render import check_formats
    from .table import split_invalid_jobs

    fmts = check_formats(formats)
    if not experiment_name:
        raise LossbenchError("tracking.experiment_name is empty: name the experiment to report on.")
    if isinstance(max_curve_runs, bool) or not isinstance(max_curve_runs, int) or max_curve_runs < 0:
        raise LossbenchError(f"report.max_curve_runs must be an int >= 0, got {max_curve_runs!r}.")
    check_out_dir(Path(out_dir))
    with runs.gc_paused():
        client = runs.open_store(tracking_uri)
        table, ignored = runs.run_table(client, runs.find_experiment(client, experiment_name))
        table, invalid = split_invalid_jobs(table)
        if table.empty and invalid:
            raise LossbenchError(
                f"The experiment '{experiment_name}' holds only {len(invalid)} invalid job(s), refused before "
                f"training (first: [{invalid[0]['overrides']}]: {invalid[0]['error']}). Fix their settings and run again."
            )
        if table.empty:
            extra = f" ({ignored} run(s) there lack the lossbench tags)" if ignored else ""
            raise LossbenchError(
                f"The experiment '{experiment_name}' has no lossbench runs{extra}. Log some first, e.g. "
                f"`python -m lossbench -m loss=mse,l1,huber seed=0,1,2 tracking.experiment_name={experiment_name}`."
            )
        from .. import __version__
        from . import sections
        from .analysis import analyze
        from .figures import FIGURE_PREFIXES, FigureSink
        from .render import render, write_summary
        from .scenarios import scenario_settings, short_labels

        analysis = analyze(table, alpha)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sink = FigureSink(out)
        picks = curve_runs(analysis, max_curve_runs)
        objective = {s.scenario: s.objective for s in analysis.scenarios}
        histories = runs.metric_histories(client, {rid: f"val_{objective[scen]}" for (scen, _), rid in picks.items()})
        settings = scenario_settings(analysis.table)
        names = short_labels(settings, [s.scenario for s in analysis.scenarios], with_name=True)
        context = {
            "experiment": experiment_name, "tracking_uri": tracking_uri, "n_runs": len(analysis.table),
            "n_ignored": ignored, "invalid_jobs": invalid, "n_scenarios": len(analysis.scenarios), "alpha": f"{alpha:g}", "version": __version__,
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

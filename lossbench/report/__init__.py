"""The report: read an MLflow experiment, rank the losses, recommend one, with evidence.

A chain of small modules, each named for its job: ``runs`` (MLflow -> run table) ->
``table`` (checked and tidied, variants labelled) -> ``stats`` (intervals, paired tests,
Holm) -> ``ranking`` (outcomes, variants, ranks, as data) -> ``combos`` (combinations
against their parts) -> ``recommend`` (a verdict and its reasons, as data), tied together by
``analysis``; ``scenarios`` describes each scenario's data; ``words`` holds every sentence;
``sections`` lays out the five-point guide, ``charts`` picks the figures that ``figures``
(and ``appendix``, for each loss's shape and gradient) draws; ``render`` writes HTML,
Markdown and summary.json. ``build_report`` runs the chain. Command line:
``python -m lossbench.report tracking.experiment_name=<name>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import ReportPaths, build_report

__all__ = ["ReportPaths", "build_report"]


def __getattr__(name: str) -> Any:
    # lazy: `import lossbench.report.analysis` must not pay for importing mlflow
    if name in __all__:
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'lossbench.report' has no attribute {name!r}")

"""The report: read an MLflow experiment, rank the losses, recommend one, with evidence.

It reads MLflow only (``collect``), computes with pandas and scipy (``aggregate`` for the
ranking and the recommendation rule, ``scenarios`` for the data's settings and traits),
lays out the five-point guide (``sections``), draws with matplotlib (``figures``, and
``appendix`` for each loss's shape and gradient) and writes HTML and Markdown (``render``);
``build_report`` ties them together. Command line:
``python -m lossbench.report tracking.experiment_name=<name>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import ReportPaths, build_report

__all__ = ["ReportPaths", "build_report"]


def __getattr__(name: str) -> Any:
    # lazy: `import lossbench.report.aggregate` must not pay for importing mlflow
    if name in __all__:
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'lossbench.report' has no attribute {name!r}")

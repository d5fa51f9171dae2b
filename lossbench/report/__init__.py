"""The report: read an MLflow experiment, rank the losses, recommend one, with evidence.

A chain of small modules, each named for its job: ``runs`` (MLflow -> run table) -> ``table``
(checked and tidied, variants labelled) -> ``stats`` (intervals, paired tests, Holm, ranks,
Friedman and Nemenyi) -> ``ranking`` (outcomes, variants, ranks, as data) -> ``recommend`` (a
verdict and its reasons, as data), tied together, with combinations against their parts and
``compare`` (main metrics that disagree, ranks across scenarios), by ``analysis``; ``scenarios``
describes each scenario's data; ``words`` holds every sentence; ``sections`` lays out the
five-point guide, with the figures that ``figures`` picks and draws (``appendix`` computes each
loss's shape and gradient); ``render`` writes HTML, Markdown and summary.json. ``build_report``
runs the chain. Command line: ``python -m lossbench.report tracking.experiment_name=<name>``.
"""

from .build import ReportPaths, build_report

__all__ = ["ReportPaths", "build_report"]

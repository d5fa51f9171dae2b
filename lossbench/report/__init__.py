"""The report: read an MLflow experiment, rank the losses, recommend one, with evidence.

A chain of small modules, each named for its job: ``runs`` (MLflow -> run table) -> ``table``
(checked and tidied, variants labelled) -> ``stats`` (intervals, paired tests, Holm, ranks,
Friedman and Nemenyi) -> ``ranking`` (outcomes, variants, ranks, as data) -> ``recommend`` (the
whole analysis: a verdict and its reasons, combinations against their parts, and ``compare``'s
disagreeing metrics and ranks across scenarios, as data); ``scenarios`` describes each scenario's
data; ``words`` holds every sentence; ``sections`` lays out the five-point guide, with the figures
that ``figures`` draws (``appendix`` computes each loss's shape and gradient); ``build`` runs the
chain and writes HTML, Markdown and summary.json. Command line: ``python -m lossbench.report
tracking.experiment_name=<name>``.
"""

from .build import ReportPaths, build_report

__all__ = ["ReportPaths", "build_report"]

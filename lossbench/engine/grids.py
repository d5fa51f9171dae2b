"""A sweep made of several grids: ``hydra.sweeper.grids``, a list of ``params``-like blocks.

Hydra's sweepers expand one grid, the product of ``hydra.sweeper.params`` and the command
line. A suite that compares regression losses on one dataset and classification losses on
another is a union of grids: each block of ``grids`` is combined with ``params`` (the block
wins on a key both set) and with the command line (which wins over both), expanded as
Hydra's basic sweeper expands its grid, and the jobs of every block form one sweep, with one
parent run and one report (experiments/reproduce_small.yaml is one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def grid_jobs(parser: Any, params: Mapping[str, Any], grids: Sequence[Mapping[str, Any]], arguments: Sequence[str]) -> list[list[str]]:
    """Every job's overrides, block after block, in Hydra's order within a block."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    given = {_key(a) for a in arguments}
    jobs: list[list[str]] = []
    for block in grids:
        merged = {**params, **block}
        conf = [f"{k}={v}" for k, v in merged.items() if _key(str(k)) not in given]
        for batch in BasicSweeper.split_arguments(parser.parse_overrides([*conf, *arguments]), None):
            jobs.extend(list(job) for job in batch)
    return jobs

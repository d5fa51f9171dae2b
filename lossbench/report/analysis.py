"""The analysis, end to end: run table -> variants over seeds -> ranking -> combinations -> recommendation.

Everything here is data; :mod:`words` writes the sentences and :mod:`sections` lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..errors import LossbenchError
from .combos import ComboResult, compare_combos
from .ranking import LossResult, rank_losses, variant_stats
from .recommend import Recommendation, recommend
from .table import prepare


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    task: str
    objective: str
    mode: str  # "max" | "min"
    alpha: float
    n_runs: int
    losses: tuple[LossResult, ...]  # in rank order
    recommendation: Recommendation
    combos: tuple[ComboResult, ...]

    @property
    def metric(self) -> str:
        return "test_" + self.objective

    def by_loss(self, name: str) -> LossResult:
        return {r.loss: r for r in self.losses}[name]


@dataclass(frozen=True)
class Analysis:
    table: pd.DataFrame  # the prepared run table
    scenarios: tuple[ScenarioResult, ...]


def analyze(table: pd.DataFrame, alpha: float = 0.05) -> Analysis:
    """Prepare the table; then, per scenario, rank the losses, compare combinations with their parts, and recommend."""
    if isinstance(alpha, bool) or not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise LossbenchError(f"report.alpha must be a number in (0, 1), got {alpha!r}.")
    df = prepare(table)
    scenarios = []
    for scen, g in df.groupby("scenario", sort=True):
        first = g.iloc[0]
        mode = first["objective_mode"]
        results = tuple(rank_losses(variant_stats(g), mode, alpha))
        scenarios.append(ScenarioResult(str(scen), first["task"], first["objective"], mode, float(alpha), len(g),
                                        results, recommend(results, mode), compare_combos(results, mode, alpha)))
    return Analysis(df, tuple(scenarios))

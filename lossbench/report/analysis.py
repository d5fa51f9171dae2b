"""The analysis, end to end: run table -> outcomes per seed -> ranking -> combinations -> recommendation.

Everything here is data; :mod:`words` writes the sentences and :mod:`sections` lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ..errors import LossbenchError
from .combos import ComboResult, compare_combos
from .ranking import Complexity, LossResult, VariantStats, loss_complexity, rank_losses, seed_outcomes, variant_stats
from .recommend import Recommendation, recommend
from .table import as_text, prepare


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    task: str
    objective: str
    mode: str  # "max" | "min"
    alpha: float
    losses: tuple[LossResult, ...]  # in rank order
    recommendation: Recommendation
    run_ids: tuple[str, ...]  # every run of the scenario
    combos: tuple[ComboResult, ...] = ()

    @property
    def metric(self) -> str:
        return "test_" + self.objective

    def by_loss(self, name: str) -> LossResult:
        for r in self.losses:
            if r.loss == name:
                return r
        raise KeyError(name)


@dataclass(frozen=True)
class Analysis:
    table: pd.DataFrame  # prepared run table
    outcomes: pd.DataFrame  # one row per (scenario, variant, seed)
    scenarios: tuple[ScenarioResult, ...]


def analyze_scenario(
    df: pd.DataFrame, variants: Sequence[VariantStats], alpha: float = 0.05, complexity: Complexity | None = None
) -> ScenarioResult:
    """Rank the losses of one scenario, compare combinations with their parts, and recommend."""
    cx = complexity or loss_complexity
    first = df.iloc[0]
    mode = str(first["objective_mode"])
    results = rank_losses(variants, mode, alpha, cx)
    rec = recommend(results, mode, lambda r: tuple(cx(r.loss, r.chosen.params, r.base)))
    return ScenarioResult(
        scenario=str(first["scenario"]), task=str(first["task"]), objective=str(first["objective"]), mode=mode,
        alpha=alpha, losses=tuple(results), recommendation=rec, run_ids=tuple(as_text(df["run_id"])),
        combos=compare_combos(results, mode, alpha),
    )


def analyze(table: pd.DataFrame, alpha: float = 0.05, complexity: Complexity | None = None) -> Analysis:
    """Prepare the table, then rank and recommend in every scenario."""
    if not 0 < alpha < 1:
        raise LossbenchError(f"report.alpha must be in (0, 1), got {alpha!r}.")
    df = prepare(table)
    outs = seed_outcomes(df)
    by_scen: dict[str, list[VariantStats]] = {}
    for v in variant_stats(outs, df):
        by_scen.setdefault(v.scenario, []).append(v)
    results = [analyze_scenario(g, by_scen[str(s)], alpha, complexity) for s, g in df.groupby("scenario", sort=True)]
    return Analysis(table=df, outcomes=outs, scenarios=tuple(results))

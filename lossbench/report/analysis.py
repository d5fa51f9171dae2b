"""The analysis, end to end: run table -> variants over seeds -> ranking -> combinations against
their parts -> recommendation -> where the main metrics disagree -> ranks across scenarios.
Everything here is data; :mod:`words` writes the sentences and :mod:`sections` lays them out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import pandas as pd

from ..errors import LossbenchError
from .compare import AcrossScenarios, Disagreement, across_scenarios, disagreement
from .ranking import LossResult, VariantStats, rank_losses, variant_stats
from .recommend import Recommendation, recommend
from .stats import Paired, against
from .table import combo_terms, prepare


class ComboVerdict(str, Enum):
    """How a combination did against the best of its parts that was run alone."""

    NO_PART_RUN = "no_part_run"  # no term was run (and finished) on its own in the scenario
    NO_FINISHED_RUN = "no_finished_run"  # the combination itself never finished
    BETTER = "better"  # better than its best part, significantly
    BETTER_NOT_SIGNIFICANT = "better_not_significant"
    NOT_BETTER = "not_better"


@dataclass(frozen=True)
class Part:
    name: str
    weight: float
    result: LossResult | None  # None: not run alone in this scenario
    test: Paired | None  # the part against the combination (diff = part - combination), Holm-adjusted


@dataclass(frozen=True)
class ComboResult:
    """One combination (one variant of ``combo``) in one scenario, against each of its parts."""

    variant: VariantStats
    parts: tuple[Part, ...]
    best: Part | None  # the best-scoring part that was run alone
    verdict: ComboVerdict

    @property
    def not_run(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts if p.result is None)


def compare_combos(results: Sequence[LossResult], mode: str, alpha: float) -> tuple[ComboResult, ...]:
    """Each variant of ``combo`` against its parts' chosen variants: paired tests, Holm-adjusted per combination."""
    by_loss = {r.loss: r for r in results}
    combo = by_loss.get("combo")
    if combo is None:
        return ()
    sign = -1.0 if mode == "max" else 1.0
    out = []
    for v in combo.variants:
        terms = combo_terms(v.params)
        ran = {i: by_loss[name] for i, (name, _, _) in enumerate(terms) if name in by_loss}
        tests = against(v.values, {i: r.chosen.values for i, r in ran.items()})
        parts = tuple(Part(name, w, ran.get(i), tests.get(i)) for i, (name, w, _) in enumerate(terms))
        finished = [p for p in parts if p.result is not None and not math.isnan(p.result.chosen.mean)]
        best = min(finished, key=lambda p: sign * p.result.chosen.mean, default=None)  # the first of equals
        if best is None:
            verdict = ComboVerdict.NO_PART_RUN
        elif math.isnan(v.mean):
            verdict = ComboVerdict.NO_FINISHED_RUN
        elif sign * v.mean < sign * best.result.chosen.mean:  # NaN p (too few seeds) is not significant
            verdict = ComboVerdict.BETTER if best.test.p_adjusted < alpha else ComboVerdict.BETTER_NOT_SIGNIFICANT
        else:
            verdict = ComboVerdict.NOT_BETTER
        out.append(ComboResult(v, parts, best, verdict))
    return tuple(out)


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
    disagreement: Disagreement | None = None  # the main test metrics name different winners

    @property
    def metric(self) -> str:
        return "test_" + self.objective

    def by_loss(self, name: str) -> LossResult:
        return {r.loss: r for r in self.losses}[name]


@dataclass(frozen=True)
class Analysis:
    table: pd.DataFrame  # the prepared run table
    scenarios: tuple[ScenarioResult, ...]
    across: tuple[AcrossScenarios, ...] = ()  # per task with two or more scenarios to compare


def analyze(table: pd.DataFrame, alpha: float = 0.05) -> Analysis:
    """Prepare the table; then, per scenario, rank the losses, compare combinations with their parts, recommend,
    and check the main metrics against the objective; per task, rank the losses across its scenarios."""
    if isinstance(alpha, bool) or not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise LossbenchError(f"report.alpha must be a number in (0, 1), got {alpha!r}.")
    df = prepare(table)
    runs = df.set_index("run_id")
    scenarios = []
    for scen, g in df.groupby("scenario", sort=True):
        first = g.iloc[0]
        mode = first["objective_mode"]
        results = tuple(rank_losses(variant_stats(g), mode, alpha))
        chosen_runs = {r.loss: r.chosen.finished_run_ids for r in results}
        scenarios.append(ScenarioResult(str(scen), first["task"], first["objective"], mode, float(alpha), len(g),
                                        results, recommend(results, mode), compare_combos(results, mode, alpha),
                                        disagreement(first["objective"], first["task"], chosen_runs, runs)))
    across = []
    for task in sorted({s.task for s in scenarios}):
        of_task = [s for s in scenarios if s.task == task]
        a = across_scenarios({s.scenario: {r.loss: r.chosen.mean for r in s.losses} for s in of_task},
                             {s.scenario: s.mode for s in of_task}, task, float(alpha))
        if a is not None:
            across.append(a)
    return Analysis(df, tuple(scenarios), tuple(across))

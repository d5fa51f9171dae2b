"""The analysis, end to end, as data: run table -> variants over seeds -> ranking -> combinations
against their parts -> recommendation -> where the main metrics disagree -> ranks across scenarios.

The recommendation rule, over one scenario's ranked losses:

* every run failed: no recommendation;
* only one loss finished any run: it is the only candidate;
* the best has fewer than two finished seeds, or no other loss could be compared on two
  seeds: too few seeds to tell; no winner is claimed, the simplest loss that finished is
  named as a default, with that caveat;
* every other loss is significantly worse (Holm-adjusted p < alpha): the best;
* otherwise the losses tied with the best (not significantly worse, or not comparable) form
  a group, and the simplest reliable member is recommended: losses that never failed and
  finished at least two seeds first, then fewer hyperparameters, then a fixed order.

:mod:`words` turns the verdicts and reasons into sentences; :mod:`sections` lays them out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pandas as pd

from ..errors import LossbenchError
from .compare import AcrossScenarios, Disagreement, across_scenarios, disagreement
from .ranking import INCOMPLETE, LossResult, Standing, VariantStats, rank_losses, variant_stats
from .stats import Paired, against
from .table import combo_terms, prepare


class Verdict(str, Enum):
    SIGNIFICANT = "significant"  # the best beat every other loss significantly
    TIE = "tie"  # no significant difference: the simplest of the tied losses
    TOO_FEW_SEEDS = "too_few_seeds"  # no winner claimed
    ONLY_ONE = "only_one"  # one loss finished any run
    ALL_FAILED = "all_failed"  # no recommendation


class Why(str, Enum):
    """A reason behind a verdict (``losses``, ``n`` and ``value`` say which, how many, how much)."""

    NO_TEST_METRIC = "no_test_metric"  # all_failed: runs unfinished, or without the objective
    EVERY_RUN_FAILED = "every_run_failed"
    ONLY_ONE_RAN = "only_one_ran"  # losses: (the loss,)
    OTHERS_ALL_FAILED = "others_all_failed"  # losses: (the loss,)
    ADD_SEEDS = "add_seeds"  # only one seed finished: no interval
    BEST_TOO_FEW_SEEDS = "best_too_few_seeds"  # losses: (best,), n: its finished seeds
    NONE_COMPARABLE = "none_comparable"  # no other loss finished two of the best's seeds
    ALL_OTHERS_WORSE = "all_others_worse"  # losses: (best, runner-up), value: the largest adjusted p
    NO_SIGNIFICANT_DIFFERENCE = "no_significant_difference"  # losses: the tied group, best first
    BETTER_ON_EVERY_SEED = "better_on_every_seed"  # losses: (best, pick), n: shared seeds, value: mean margin
    # notes beside the verdict
    SOME_ALL_FAILED = "some_all_failed"  # losses whose every run failed
    BEST_FAILED_SOMETIMES = "best_failed_sometimes"  # losses: (best,)
    KEPT_UNCOMPARED = "kept_uncompared"  # losses tied only because they could not be compared


NOTES = (Why.SOME_ALL_FAILED, Why.BEST_FAILED_SOMETIMES, Why.KEPT_UNCOMPARED)


@dataclass(frozen=True)
class Reason:
    why: Why
    losses: tuple[str, ...] = ()
    n: int = 0
    value: float = math.nan


@dataclass(frozen=True)
class Recommendation:
    verdict: Verdict
    loss: str | None  # None only when every run failed
    label: str  # the recommended variant, e.g. "huber(delta=0.5)"
    params: dict[str, Any]
    runner_up: str | None
    tied: tuple[str, ...]  # losses not significantly different from the best (best first)
    best: str | None  # the best-scoring loss (None when none finished)
    reasons: tuple[Reason, ...]


def recommend(results: Sequence[LossResult], mode: str) -> Recommendation:
    """Apply the rule (module docstring) to losses already ranked and compared with the best."""
    contenders = [r for r in results if not r.all_failed]
    failed = tuple(r.loss for r in results if r.all_failed)
    if not contenders:
        no_metric = all(v.outcomes[INCOMPLETE] == v.n_seeds for r in results for v in r.variants)
        return Recommendation(Verdict.ALL_FAILED, None, "", {}, None, (), None,
                              (Reason(Why.NO_TEST_METRIC if no_metric else Why.EVERY_RUN_FAILED),))
    best, others = contenders[0], contenders[1:]
    notes = [Reason(Why.SOME_ALL_FAILED, failed)] if failed else []
    if best.chosen.n_failed:
        notes.append(Reason(Why.BEST_FAILED_SOMETIMES, (best.loss,)))
    comparable = [r for r in others if not math.isnan(r.p_adjusted)]
    tied = [best] + [r for r in others if r.comparison in (Standing.TIED, Standing.NOT_COMPARED)]
    if not others:
        verdict, pick, group = Verdict.ONLY_ONE, best, [best]
        reasons = [Reason(Why.OTHERS_ALL_FAILED if failed else Why.ONLY_ONE_RAN, (best.loss,))]
        if best.chosen.n_finished < 2:
            reasons.append(Reason(Why.ADD_SEEDS, n=best.chosen.n_finished))
    elif best.chosen.n_finished < 2 or not comparable:
        verdict, group = Verdict.TOO_FEW_SEEDS, contenders
        pick = min(contenders, key=lambda r: (r.chosen.n_failed > 0, r.complexity))
        reasons = [Reason(Why.BEST_TOO_FEW_SEEDS, (best.loss,), best.chosen.n_finished) if best.chosen.n_finished < 2
                   else Reason(Why.NONE_COMPARABLE)]
    elif len(tied) == 1:
        verdict, pick, group = Verdict.SIGNIFICANT, best, tied
        worst_p = max(r.p_adjusted for r in comparable)
        reasons = [Reason(Why.ALL_OTHERS_WORSE, (best.loss, others[0].loss), value=worst_p)]
    else:
        verdict, pick, group = Verdict.TIE, min(tied, key=lambda r: (not r.reliable, r.complexity)), tied
        reasons = [Reason(Why.NO_SIGNIFICANT_DIFFERENCE, tuple(r.loss for r in tied))]
        if pick is not best:
            reasons += _better_on_every_seed(best, pick, mode)
        not_compared = tuple(r.loss for r in tied if r.comparison == Standing.NOT_COMPARED)
        if not_compared:
            notes.append(Reason(Why.KEPT_UNCOMPARED, not_compared))
    runner_up = next((r.loss for r in contenders if r is not pick), None)
    return Recommendation(verdict, pick.loss, pick.chosen.label, pick.chosen.params, runner_up,
                          tuple(r.loss for r in group), best.loss, (*reasons, *notes))


def _better_on_every_seed(best: LossResult, pick: LossResult, mode: str) -> list[Reason]:
    """When the best beat the recommended loss on every shared seed, yet not significantly: with
    few seeds a paired t-test (more so after Holm) cannot confirm even a difference every seed agrees on."""
    a, b = best.chosen.values, pick.chosen.values
    seeds = a.index.intersection(b.index)
    diff = (a[seeds] - b[seeds]) if mode == "max" else (b[seeds] - a[seeds])  # > 0: the best is better
    if len(seeds) < 2 or not (diff > 0).all():
        return []
    return [Reason(Why.BETTER_ON_EVERY_SEED, (best.loss, pick.loss), len(seeds), float(diff.mean()))]


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

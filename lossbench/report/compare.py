"""Beyond the objective, as data: where the main test metrics of one scenario disagree on the
winner, and how the losses rank across the scenarios of one task (mean rank, Friedman's test,
Nemenyi's critical difference). Statistics come from :mod:`stats`; :mod:`words` says what they mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .stats import Friedman, friedman, ranks
from .table import METRIC_PREFIX, metric_mode

# the metrics a reader weighs against each other, per task; the scenario's objective joins them
MAIN_METRICS = {
    "regression": ("rmse", "mae", "median_ae"),
    "multiclass": ("balanced_accuracy", "accuracy", "macro_f1", "nll"),
    "binary": ("balanced_accuracy", "accuracy", "macro_f1", "nll"),
}
MIN_BLOCKS = 3  # Friedman's test: at least this many scenarios and losses


@dataclass(frozen=True)
class MetricRanking:
    """The chosen variants of one scenario's losses under one test metric."""

    metric: str  # without the test_ prefix
    mode: str
    means: dict[str, float]  # loss -> mean over its chosen variant's finished seeds
    ranks: dict[str, float]  # 1 = best; ties share the average rank

    @property
    def winners(self) -> tuple[str, ...]:
        return tuple(loss for loss, r in self.ranks.items() if r == min(self.ranks.values()))


@dataclass(frozen=True)
class Disagreement:
    """The main metrics name different winners: no loss is best under all of them."""

    objective: str
    rankings: tuple[MetricRanking, ...]  # the objective first
    losses: tuple[str, ...]  # in the objective's rank order

    @property
    def winners(self) -> dict[str, tuple[str, ...]]:
        return {m.metric: m.winners for m in self.rankings}


def disagreement(objective: str, task: str, chosen_runs: Mapping[str, Sequence[str]],
                 runs: pd.DataFrame) -> Disagreement | None:
    """``chosen_runs``: loss -> the finished runs of its chosen variant, in the objective's rank order;
    ``runs``: the run table indexed by run id. None when the metrics agree, or fewer than two losses
    can be compared under two metrics."""
    metrics = [objective, *(m for m in MAIN_METRICS.get(task, ()) if m != objective)]
    losses = [loss for loss, ids in chosen_runs.items() if len(ids)]
    rankings = []
    for m in metrics:
        col = METRIC_PREFIX + "test_" + m
        if col not in runs.columns:
            continue
        means = {loss: float(pd.to_numeric(runs.loc[list(chosen_runs[loss]), col], errors="coerce").mean())
                 for loss in losses}
        means = {k: v for k, v in means.items() if math.isfinite(v)}
        if len(means) >= 2:
            mode = metric_mode(m)
            rankings.append(MetricRanking(m, mode, means, dict(zip(means, ranks(list(means.values()), mode),
                                                                   strict=True))))
    if len(rankings) < 2 or rankings[0].metric != objective:
        return None
    if set.intersection(*(set(r.winners) for r in rankings)):
        return None
    return Disagreement(objective, tuple(rankings), tuple(losses))


@dataclass(frozen=True)
class AcrossScenarios:
    """The losses of one task ranked across its scenarios: each scenario's ranks, their means, a test."""

    task: str
    scenarios: tuple[str, ...]  # the scenarios compared (at least two losses finished there)
    losses: tuple[str, ...]  # finished in every compared scenario; best mean rank first
    ranks: dict[str, dict[str, float]]  # scenario -> loss -> rank by that scenario's test objective
    mean_rank: dict[str, float]
    left_out_scenarios: tuple[str, ...]  # fewer than two losses finished there
    left_out_losses: tuple[str, ...]  # not finished in every compared scenario
    test: Friedman | None  # None: fewer than 3 scenarios or 3 losses
    alpha: float

    @property
    def significant(self) -> bool:
        return self.test is not None and self.test.p < self.alpha

    @property
    def different(self) -> tuple[tuple[str, str], ...]:
        """Pairs (better, worse) whose mean ranks differ by more than Nemenyi's critical difference; read only
        where Friedman's test rejects (Demšar 2006), so none otherwise."""
        if not self.significant:
            return ()
        order = self.losses
        return tuple((a, b) for i, a in enumerate(order) for b in order[i + 1:]
                     if self.mean_rank[b] - self.mean_rank[a] > self.test.cd)


def across_scenarios(means: Mapping[str, Mapping[str, float]], modes: Mapping[str, str], task: str,
                     alpha: float) -> AcrossScenarios | None:
    """``means``: scenario -> loss -> its chosen variant's mean test objective (NaN: nothing finished);
    ``modes``: scenario -> "max" | "min". None unless at least two scenarios have two finished losses."""
    finished = {s: {loss for loss, v in m.items() if not math.isnan(v)} for s, m in means.items()}
    scenarios = tuple(s for s in means if len(finished[s]) >= 2)
    if len(scenarios) < 2:
        return None
    common = set.intersection(*(finished[s] for s in scenarios))
    losses = sorted(common)
    table = {s: dict(zip(losses, ranks([means[s][loss] for loss in losses], modes[s]), strict=True))
             for s in scenarios}
    mean_rank = {loss: float(np.mean([table[s][loss] for s in scenarios])) for loss in losses}
    order = tuple(sorted(losses, key=lambda x: (mean_rank[x], x)))
    test = None
    if len(scenarios) >= MIN_BLOCKS and len(losses) >= MIN_BLOCKS:
        # each column signed so that smaller is better, whatever the scenario's direction
        m = np.array([[means[s][loss] * (-1 if modes[s] == "max" else 1) for loss in order] for s in scenarios])
        test = friedman(m, "min", alpha)
    left_out_losses = tuple(sorted(set().union(*(finished[s] for s in scenarios)) - common))
    return AcrossScenarios(task, scenarios, order, table, mean_rank, tuple(s for s in means if s not in scenarios),
                           left_out_losses, test, alpha)

"""The ranking of one scenario's losses, as data: outcomes per seed, variants, ranks, comparisons.

How the numbers are made, per scenario (the report states these rules too):

* Each seed counts once per variant: where a seed was run more than once, its latest finished run.
* Each loss is represented by its best variant, chosen by the mean validation objective
  (``best_val_objective``), never by the test metric.
* Losses are ranked by the mean *test* objective of their chosen variant. Losses whose runs all
  failed rank last. Exact ties share a rank and keep a fixed order: simpler loss first.
* Each loss is compared with the best one by a paired t-test over the seeds both finished (same
  seed = same data); the p-values within a scenario are Holm-corrected. A loss is significantly
  worse when its adjusted p-value is below ``alpha``, otherwise tied with the best.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from .stats import against, mean_ci
from .table import METRIC_PREFIX, NOT_HYPERPARAMETERS, combo_terms, loss_spec, natural_key, parse_params

BEST_VAL = METRIC_PREFIX + schema.METRIC_BEST_VAL
# what became of a seed (or a run); incomplete: still running, or finished without the objective metric
FINISHED, DIVERGED, ERROR, KILLED, INCOMPLETE = "finished", "diverged", "error", "killed", "incomplete"
OUTCOMES = (FINISHED, DIVERGED, ERROR, KILLED, INCOMPLETE)
# simplicity: fewer hyperparameters first, then this fixed order, then the name
SIMPLE_ORDER = ("mse", "l1", "cross_entropy", "bce", "rmse", "smooth_l1", "huber", "balanced_bce", "focal", "kl_div",
                "js_div")


class Standing(str, Enum):
    """How a loss compares with the best one of its scenario."""

    BEST = "best"
    TIED = "tied"  # not significantly worse
    WORSE = "worse"  # significantly worse (Holm-adjusted p < alpha)
    NOT_COMPARED = "not compared"  # fewer than two seeds finished alongside the best
    ALL_FAILED = "all failed"


class FlagKind(str, Enum):
    ALL_FAILED = "all_failed"
    DIVERGED = DIVERGED  # count seeds of the chosen variant, of its seeds
    ERROR = ERROR
    KILLED = KILLED
    INCOMPLETE = INCOMPLETE
    RERUN = "rerun"  # count failed runs of seeds that finished in a re-run
    ONE_SEED = "one_seed"
    NOT_COMPARED = "not_compared"  # count seeds shared with the best


@dataclass(frozen=True)
class Flag:
    """Something a reader should know about a loss's runs."""

    kind: FlagKind
    count: int = 0
    of: int = 0


@dataclass(frozen=True)
class VariantStats:
    """One loss with one set of hyperparameters, over the seeds of one scenario."""

    loss: str  # as the report names it
    base: str  # the registered loss behind it
    label: str
    params: dict[str, Any]  # the loss's hyperparameters (loss_params)
    extras: dict[str, Any]  # swept model/optimizer settings that set this variant apart
    values: pd.Series  # test objective of each finished seed, indexed by seed
    val_values: pd.Series  # validation objective (best_val_objective) of each finished seed
    outcomes: dict[str, int]  # seeds per outcome
    run_outcomes: dict[str, int]  # runs per outcome, re-runs of a seed included
    run_ids: dict[str, str]  # seed -> the run that counts

    @property
    def n_seeds(self) -> int:
        return sum(self.outcomes.values())

    @property
    def n_finished(self) -> int:
        return self.outcomes[FINISHED]

    @property
    def n_failed(self) -> int:
        return self.outcomes[DIVERGED] + self.outcomes[ERROR]

    @property
    def ci(self) -> tuple[float, float, float]:
        return mean_ci(self.values.to_numpy(float))

    @property
    def mean(self) -> float:
        return self.ci[0]

    @property
    def val_mean(self) -> float:
        return float(self.val_values.mean())

    @property
    def finished_run_ids(self) -> list[str]:
        return [self.run_ids[seed] for seed in self.values.index]


def variant_stats(df: pd.DataFrame) -> list[VariantStats]:
    """One scenario's runs, per variant. A seed run several times counts once: its latest finished
    run, else its latest run."""
    metric, nan = df["metric"].iat[0], pd.Series(np.nan, index=df.index)
    value = pd.to_numeric(df[metric], errors="coerce") if metric in df.columns else nan
    val = pd.to_numeric(df[BEST_VAL], errors="coerce") if BEST_VAL in df.columns else nan
    status = df["status"]
    outcome = np.select(
        [(status == "FINISHED") & np.isfinite(value.to_numpy(float)),
         df["failure"].str.lower() == schema.FAILURE_DIVERGED, status == "FAILED", status == "KILLED"],
        [FINISHED, DIVERGED, ERROR, KILLED],
        default=INCOMPLETE,
    )
    runs = df.assign(outcome=outcome, value=value, val=val, finished=outcome == FINISHED)
    runs = runs.sort_values(["finished", "start_time", "run_id"], kind="stable")  # the run that counts comes last
    out = []
    for _, g in runs.groupby("variant", sort=True):
        last = g.groupby("seed", sort=False).tail(1)
        fin = last[last["outcome"] == FINISHED].set_index("seed")
        fin = fin.loc[sorted(fin.index, key=natural_key)]
        first = g.iloc[0]
        out.append(VariantStats(
            loss=first["loss"], base=first["base_loss"], label=first["variant_label"],
            params=parse_params(first["loss_params"]), extras=parse_params(first["variant_extras"]),
            values=fin["value"].astype(float), val_values=fin["val"].astype(float),
            outcomes=_count(last["outcome"]), run_outcomes=_count(g["outcome"]),
            run_ids=dict(zip(last["seed"], last["run_id"], strict=True)),
        ))
    return out


def _count(outcomes: pd.Series) -> dict[str, int]:
    return outcomes.value_counts().reindex(OUTCOMES, fill_value=0).to_dict()


def choose_variant(variants: Sequence[VariantStats], mode: str) -> VariantStats:
    """The variant with the best mean validation objective (never the test metric).

    Variants without a finished run come last; then those without a validation value;
    ties go to more finished seeds, then to the label's order.
    """
    sign = -1.0 if mode == "max" else 1.0

    def key(v: VariantStats) -> tuple[Any, ...]:
        vm = v.val_mean
        return (v.n_finished == 0, math.isnan(vm), sign * vm if not math.isnan(vm) else 0.0, -v.n_finished, v.label)

    return min(variants, key=key)


# --------------------------------------------------------------------------- simplicity
def loss_complexity(loss: str, params: Mapping[str, Any] | None = None, base: str | None = None
                    ) -> tuple[int, int, str]:
    """Sort key for "simplest": (number of hyperparameters, fixed order, name).

    The hyperparameters of a registered loss (``base``, else ``loss``) are its tunable params
    (those with a search space: ``delta``, ``gamma``, ``label_smoothing``; not settings such as
    ``ignore_index`` or per-class ``weight``) plus one for each statistic it needs from the data
    (class counts); a loss whose spec declares no search space counts all its params but
    ``reduction``. A loss the registry does not know counts its logged params. A combo counts
    one weight plus the hyperparameters of each term.
    """
    params, spec = dict(params or {}), loss_spec(base or loss)
    if (base or loss) == "combo":
        n = sum(1 + loss_complexity(name, extra)[0] for name, _, extra in combo_terms(params))
    elif spec is None:
        n = len([k for k in params if k not in NOT_HYPERPARAMETERS])
    else:
        own = [p for p in spec.params if p.name != "reduction" and p.name not in spec.needs]
        tunable = [p for p in own if p.search is not None]
        if not tunable and not any(p.search is not None for p in spec.params):
            tunable = [p for p in own if p.name not in NOT_HYPERPARAMETERS]
        n = len(tunable) + len(spec.needs)
    return (n, SIMPLE_ORDER.index(loss) if loss in SIMPLE_ORDER else len(SIMPLE_ORDER), loss)


# --------------------------------------------------------------------------- per loss
@dataclass(frozen=True)
class LossResult:
    """A loss in one scenario: its chosen variant and how it compares with the best."""

    loss: str
    chosen: VariantStats
    variants: tuple[VariantStats, ...]  # all variants of this loss in the scenario
    rank: int  # 1 = best; exact ties share a rank
    comparison: Standing
    flags: tuple[Flag, ...]
    p_value: float = math.nan  # paired t-test against the best
    p_adjusted: float = math.nan  # Holm-adjusted
    mean_diff: float = math.nan  # this loss minus the best, over the paired seeds

    @property
    def base(self) -> str:
        return self.chosen.base

    @property
    def all_failed(self) -> bool:
        return self.chosen.n_finished == 0  # the chosen variant has a finished seed if any variant has

    @property
    def complexity(self) -> tuple[int, int, str]:
        return loss_complexity(self.loss, self.chosen.params, self.base)

    @property
    def failed_runs(self) -> dict[str, int]:
        """Runs per outcome (re-runs included), summed over all the loss's variants."""
        return {k: sum(v.run_outcomes[k] for v in self.variants) for k in OUTCOMES}

    @property
    def reliable(self) -> bool:
        """Never failed in its chosen variant and compared on at least two seeds."""
        return self.chosen.n_failed == 0 and self.chosen.outcomes[KILLED] == 0 and self.chosen.n_finished >= 2


def _flags(v: VariantStats) -> list[Flag]:
    if v.n_finished == 0:
        return [Flag(FlagKind.ALL_FAILED)]
    out = [Flag(FlagKind(k), v.outcomes[k], v.n_seeds) for k in (DIVERGED, ERROR, KILLED, INCOMPLETE) if v.outcomes[k]]
    rerun = sum(v.run_outcomes[k] - v.outcomes[k] for k in (DIVERGED, ERROR, KILLED))
    if rerun > 0:
        out.append(Flag(FlagKind.RERUN, rerun))
    if v.n_finished == 1:
        out.append(Flag(FlagKind.ONE_SEED, 1))
    return out


def rank_losses(variants: Sequence[VariantStats], mode: str, alpha: float) -> list[LossResult]:
    """One scenario's losses in rank order, each compared with the best (paired tests, Holm)."""
    sign = -1.0 if mode == "max" else 1.0
    by_loss: dict[str, list[VariantStats]] = {}
    for v in variants:
        by_loss.setdefault(v.loss, []).append(v)
    chosen = {loss: choose_variant(vs, mode) for loss, vs in by_loss.items()}

    def key(v: VariantStats) -> tuple[Any, ...]:
        mean = 0.0 if math.isnan(v.mean) else sign * v.mean
        return (v.n_finished == 0, mean, loss_complexity(v.loss, v.params, v.base))

    keys = {loss: key(v) for loss, v in chosen.items()}
    order = sorted(by_loss, key=keys.__getitem__)
    ranks: dict[str, int] = {}  # competition ranks: exact metric ties share a rank
    for i, loss in enumerate(order):
        ranks[loss] = ranks[order[i - 1]] if i and keys[order[i - 1]][:2] == keys[loss][:2] else i + 1
    contenders = [loss for loss in order if chosen[loss].n_finished > 0]
    tests = against(chosen[contenders[0]].values, {c: chosen[c].values for c in contenders[1:]}) if contenders else {}
    results = []
    for loss in order:
        v, t, flags = chosen[loss], tests.get(loss), _flags(chosen[loss])
        if v.n_finished == 0:
            standing = Standing.ALL_FAILED
        elif loss == contenders[0]:
            standing = Standing.BEST
        elif math.isnan(t.p):
            standing = Standing.NOT_COMPARED
            flags.append(Flag(FlagKind.NOT_COMPARED, t.n))
        else:
            standing = Standing.WORSE if t.p_adjusted < alpha else Standing.TIED
        p = (t.p, t.p_adjusted, t.diff) if t else (math.nan, math.nan, math.nan)
        results.append(LossResult(loss, v, tuple(sorted(by_loss[loss], key=lambda x: x.label)), ranks[loss], standing,
                                  tuple(flags), *p))
    return results

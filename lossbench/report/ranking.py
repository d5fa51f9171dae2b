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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from .combos import combo_terms
from .stats import against, mean_ci
from .table import METRIC_PREFIX, NOT_HYPERPARAMETERS, loss_spec, natural_key, parse_params

BEST_VAL = METRIC_PREFIX + schema.METRIC_BEST_VAL
# what became of a seed (or a run)
FINISHED, DIVERGED, ERROR, KILLED = "finished", "diverged", "error", "killed"
INCOMPLETE = "incomplete"  # still running, or finished without the objective metric
OUTCOMES = (FINISHED, DIVERGED, ERROR, KILLED, INCOMPLETE)
# simplicity: fewer hyperparameters first, then this fixed order, then the name
SIMPLE_ORDER = ("mse", "l1", "cross_entropy", "bce", "rmse", "smooth_l1", "huber", "balanced_bce", "focal", "kl_div",
                "js_div")
Complexity = Callable[..., tuple[Any, ...]]  # (loss, params, base) -> sort key, smaller is simpler


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


# --------------------------------------------------------------------------- per seed, per variant
def seed_outcomes(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (scenario, variant, seed): its outcome, test value and validation value.

    A seed run several times counts once: its latest finished run, else its latest run.
    """
    value = pd.Series(np.nan, index=df.index, dtype=float)
    for col, idx in df.groupby(df["metric"], sort=False).groups.items():
        if col in df.columns:
            value.loc[idx] = pd.to_numeric(df.loc[idx, col], errors="coerce")
    val = pd.to_numeric(df[BEST_VAL], errors="coerce") if BEST_VAL in df.columns else pd.Series(np.nan, index=df.index)
    status = df["status"]
    outcome = np.select(
        [(status == "FINISHED") & np.isfinite(value.to_numpy(float)), df["failure"].str.lower() == schema.FAILURE_DIVERGED,
         status == "FAILED", status == "KILLED"],
        [FINISHED, DIVERGED, ERROR, KILLED],
        default=INCOMPLETE,
    )
    runs = pd.DataFrame({"scenario": df["scenario"], "loss": df["loss"], "variant": df["variant"], "seed": df["seed"],
                         "run_id": df["run_id"], "start_time": df["start_time"], "outcome": outcome, "value": value,
                         "val": val})
    runs["_fin"] = runs["outcome"] == FINISHED
    runs = runs.sort_values(["_fin", "start_time", "run_id"], kind="stable")
    keys = ["scenario", "variant", "seed"]
    last = runs.groupby(keys, sort=False).tail(1)
    counts = runs.groupby(keys, sort=False).size().rename("n_runs")
    per_outcome = runs.groupby([*keys, "outcome"], sort=False).size().unstack("outcome", fill_value=0)
    per_outcome = per_outcome.reindex(columns=list(OUTCOMES), fill_value=0)
    per_outcome.columns = [f"runs_{o}" for o in OUTCOMES]
    return last.drop(columns="_fin").join(counts, on=keys).join(per_outcome, on=keys).reset_index(drop=True)


@dataclass(frozen=True)
class VariantStats:
    """One loss with one set of hyperparameters, over the seeds of one scenario."""

    scenario: str
    loss: str  # as the report names it
    base: str  # the registered loss behind it
    variant: str  # key: loss | params | swept settings
    label: str
    params: dict[str, Any]  # the loss's hyperparameters (loss_params)
    extras: dict[str, Any]  # swept model/optimizer settings that set this variant apart
    values: pd.Series  # test objective of each finished seed, indexed by seed
    val_values: pd.Series  # validation objective (best_val_objective) of each finished seed
    outcomes: dict[str, int]  # seeds per outcome
    n_runs: int  # MLflow runs, duplicates included
    run_outcomes: dict[str, int]  # runs per outcome, duplicates included
    run_ids: dict[str, str]  # seed -> the run that counts

    @property
    def n_seeds(self) -> int:
        return sum(self.outcomes.values())

    @property
    def n_finished(self) -> int:
        return self.outcomes.get(FINISHED, 0)

    @property
    def n_failed(self) -> int:
        return self.outcomes.get(DIVERGED, 0) + self.outcomes.get(ERROR, 0)

    @property
    def ci(self) -> tuple[float, float, float]:
        return mean_ci(self.values.to_numpy(float))

    @property
    def mean(self) -> float:
        return self.ci[0]

    @property
    def val_mean(self) -> float:
        v = self.val_values.dropna()
        return float(v.mean()) if len(v) else math.nan

    @property
    def finished_run_ids(self) -> list[str]:
        return [self.run_ids[seed] for seed in self.values.index if seed in self.run_ids]


def variant_stats(outcomes: pd.DataFrame, table: pd.DataFrame) -> list[VariantStats]:
    """Per (scenario, variant): finished values by seed and seeds per outcome."""
    info = table.drop_duplicates("variant").set_index("variant")
    groups: dict[tuple[str, str], list[Any]] = {}
    cols = ["scenario", "variant", "loss", "seed", "outcome", "value", "val", "run_id", "n_runs"]
    for rec in outcomes[cols + [f"runs_{o}" for o in OUTCOMES]].itertuples(index=False, name=None):
        groups.setdefault((str(rec[0]), str(rec[1])), []).append(rec)
    out = []
    for (scen, variant), recs in sorted(groups.items()):
        fin = sorted((r for r in recs if r[4] == FINISHED), key=lambda r: natural_key(r[3]))
        seeds = [r[3] for r in fin]
        counts = dict.fromkeys(OUTCOMES, 0)
        for r in recs:
            counts[r[4]] += 1
        row = info.loc[variant]
        out.append(VariantStats(
            scenario=scen, loss=str(recs[0][2]), base=str(row["base_loss"]), variant=variant,
            label=str(row["variant_label"]), params=parse_params(row["loss_params"]),
            extras=parse_params(row["variant_extras"]),
            values=pd.Series([float(r[5]) for r in fin], index=seeds, dtype=float),
            val_values=pd.Series([float(r[6]) for r in fin], index=seeds, dtype=float),
            outcomes=counts, n_runs=int(sum(r[8] for r in recs)),
            run_outcomes={o: int(sum(r[9 + i] for r in recs)) for i, o in enumerate(OUTCOMES)},
            run_ids={str(r[3]): str(r[7]) for r in recs},
        ))
    return out


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
def loss_complexity(loss: str, params: Mapping[str, Any] | None = None, base: str | None = None) -> tuple[int, int, str]:
    """Sort key for "simplest": (number of hyperparameters, fixed order, name).

    The hyperparameters of a registered loss (``base``, else ``loss``) are its tunable params
    (those with a search space: ``delta``, ``gamma``, ``label_smoothing``; not settings such as
    ``ignore_index`` or per-class ``weight``) plus one for each statistic it needs from the data
    (class counts); a loss whose spec declares no search space counts all its params but
    ``reduction``. A loss the registry does not know counts its logged params. A combo counts
    one weight plus the hyperparameters of each term.
    """
    params = dict(params or {})
    if (base or loss) == "combo":
        n = sum(1 + loss_complexity(name, extra)[0] for name, _, extra in combo_terms(params))
    else:
        n = _n_hyperparameters(base or loss, params)
    return (n, SIMPLE_ORDER.index(loss) if loss in SIMPLE_ORDER else len(SIMPLE_ORDER), loss)


def _n_hyperparameters(loss: str, params: Mapping[str, Any]) -> int:
    spec = loss_spec(loss)
    if spec is None:
        return len([k for k in params if k not in NOT_HYPERPARAMETERS])
    own = [p for p in spec.params if p.name != "reduction" and p.name not in spec.needs]
    tunable = [p for p in own if p.search is not None]
    if not tunable and not any(p.search is not None for p in spec.params):
        tunable = [p for p in own if p.name not in NOT_HYPERPARAMETERS]
    return len(tunable) + len(spec.needs)


# --------------------------------------------------------------------------- per loss
@dataclass(frozen=True)
class LossResult:
    """A loss in one scenario: its chosen variant and how it compares with the best."""

    loss: str
    chosen: VariantStats
    variants: tuple[VariantStats, ...]  # all variants of this loss in the scenario
    rank: int  # 1 = best; exact ties share a rank
    p_value: float = math.nan  # paired t-test against the best
    p_adjusted: float = math.nan  # Holm-adjusted
    n_pairs: int = 0
    mean_diff: float = math.nan  # this loss minus the best, over the paired seeds
    comparison: Standing = Standing.TIED
    flags: tuple[Flag, ...] = ()

    @property
    def base(self) -> str:
        return self.chosen.base

    @property
    def all_failed(self) -> bool:
        return all(v.n_finished == 0 for v in self.variants)

    @property
    def failed_runs(self) -> dict[str, int]:
        """Runs per outcome (re-runs included), summed over all the loss's variants."""
        return {k: sum(v.run_outcomes[k] for v in self.variants) for k in OUTCOMES}

    @property
    def reliable(self) -> bool:
        """Never failed in its chosen variant and compared on at least two seeds."""
        return self.chosen.n_failed == 0 and self.chosen.outcomes.get(KILLED, 0) == 0 and self.chosen.n_finished >= 2


def _flags(v: VariantStats, all_failed: bool) -> list[Flag]:
    if all_failed:
        return [Flag(FlagKind.ALL_FAILED)]
    out = [Flag(FlagKind(k), v.outcomes[k], v.n_seeds) for k in (DIVERGED, ERROR, KILLED, INCOMPLETE) if v.outcomes[k]]
    rerun = sum(v.run_outcomes[k] - v.outcomes[k] for k in (DIVERGED, ERROR, KILLED))
    if rerun > 0:
        out.append(Flag(FlagKind.RERUN, rerun))
    if v.n_finished == 1:
        out.append(Flag(FlagKind.ONE_SEED, 1))
    return out


def rank_losses(variants: Sequence[VariantStats], mode: str, alpha: float, complexity: Complexity) -> list[LossResult]:
    """One scenario's losses in rank order, each compared with the best (paired tests, Holm)."""
    sign = -1.0 if mode == "max" else 1.0
    by_loss: dict[str, list[VariantStats]] = {}
    for v in variants:
        by_loss.setdefault(v.loss, []).append(v)
    chosen = {loss: choose_variant(vs, mode) for loss, vs in by_loss.items()}

    def rank_key(loss: str) -> tuple[Any, ...]:
        v = chosen[loss]
        return (v.n_finished == 0, sign * v.mean if not math.isnan(v.mean) else 0.0, complexity(loss, v.params, v.base))

    order = sorted(by_loss, key=rank_key)
    ranks: dict[str, int] = {}  # competition ranks: exact metric ties share a rank
    for i, loss in enumerate(order):
        same = i > 0 and rank_key(order[i - 1])[:2] == rank_key(loss)[:2]
        ranks[loss] = ranks[order[i - 1]] if same else i + 1
    contenders = [loss for loss in order if chosen[loss].n_finished > 0]
    tests = against(chosen[contenders[0]].values, {c: chosen[c].values for c in contenders[1:]}) if contenders else {}
    results = []
    for loss in order:
        v = chosen[loss]
        all_failed = all(x.n_finished == 0 for x in by_loss[loss])
        t = tests.get(loss)
        flags = _flags(v, all_failed)
        if all_failed:
            standing = Standing.ALL_FAILED
        elif loss == contenders[0]:
            standing = Standing.BEST
        elif math.isnan(t.p):
            standing = Standing.NOT_COMPARED
            flags.append(Flag(FlagKind.NOT_COMPARED, t.n))
        else:
            standing = Standing.WORSE if t.p_adjusted < alpha else Standing.TIED
        results.append(LossResult(
            loss=loss, chosen=v, variants=tuple(sorted(by_loss[loss], key=lambda x: x.label)), rank=ranks[loss],
            p_value=t.p if t else math.nan, p_adjusted=t.p_adjusted if t else math.nan, n_pairs=t.n if t else 0,
            mean_diff=t.diff if t else math.nan, comparison=standing, flags=tuple(flags),
        ))
    return results

"""Statistics over a run table, and the rule that recommends a loss: pandas and scipy only.

The run table has one row per MLflow run (``collect.run_table`` builds it; tests build
synthetic ones). Columns:

``status``, ``loss``, ``scenario``, ``seed``
    required: run status (FINISHED, FAILED, KILLED, RUNNING...), the loss's registry name,
    the data variant and the seed (runs with the same seed saw the same data).
``objective``, ``objective_mode``, ``failure``, ``loss_params``, ``task``, ``model``,
``run_id``, ``start_time``
    optional tags and run info; missing ones are filled in.
``metrics.<key>``, ``params.<key>``
    the run's final metrics (floats) and flattened config (strings), e.g.
    ``metrics.test_rmse``, ``metrics.best_val_objective``, ``params.data.normalize``.

How the numbers are made, per scenario (the report states these rules too):

* A *variant* is a loss with one set of hyperparameters (``loss_params``), plus the model
  and optimizer settings where those were swept. Each seed counts once: where a seed was
  run more than once, its latest finished run counts.
* Each loss is represented by its best variant, chosen by the mean validation objective
  (``best_val_objective``), never by the test metric.
* Losses are ranked by the mean *test* objective of their chosen variant. Losses whose
  runs all failed rank last. Exact ties keep a fixed order: simpler loss first.
* Each loss is compared with the best one by a paired t-test over the seeds both finished
  (same seed = same data), and the p-values within a scenario are Holm-corrected.
* Significance criterion: a loss is *significantly worse* than the best when its
  Holm-adjusted p-value is below ``alpha``. Otherwise it is tied with the best.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .. import schema
from ..errors import LossbenchError
from .columns import METRIC_PREFIX, OPTIONAL_COLUMNS, PARAM_PREFIX, REQUIRED_COLUMNS, loss_spec

# --------------------------------------------------------------------------- table
BEST_VAL = METRIC_PREFIX + schema.METRIC_BEST_VAL

# run outcomes, one per (variant, seed)
FINISHED = "finished"
DIVERGED = "diverged"
ERROR = "error"
KILLED = "killed"
INCOMPLETE = "incomplete"  # still running, or finished without the objective metric
OUTCOMES = (FINISHED, DIVERGED, ERROR, KILLED, INCOMPLETE)

# settings other than the loss that, when swept, make runs different variants
VARIANT_PARAM_PREFIXES = ("model.", "optimizer.", "scheduler.")
VARIANT_PARAM_KEYS = ("trainer.max_epochs",)

# where the objective tag is missing
DEFAULT_OBJECTIVE = {"regression": "rmse", "multiclass": "balanced_accuracy", "binary": "balanced_accuracy"}

# Simplicity: fewer hyperparameters first, then this fixed order, then the name.
SIMPLE_ORDER = (
    "mse",
    "l1",
    "cross_entropy",
    "bce",
    "rmse",
    "smooth_l1",
    "huber",
    "balanced_bce",
    "focal",
    "kl_div",
    "js_div",
)
NOT_HYPERPARAMETERS = ("reduction", "class_counts")


def is_missing(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, float) and math.isnan(x):
        return True
    return x is pd.NA or (isinstance(x, str) and x.strip() == "")


def canonical_params(value: Any) -> str:
    """``loss_params`` as canonical JSON (sorted keys); ``"{}"`` when absent."""
    if is_missing(value):
        return "{}"
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True, default=str)
    try:
        parsed = json.loads(str(value))
    except (TypeError, ValueError):
        return str(value)
    return json.dumps(parsed, sort_keys=True, default=str)


def parse_params(value: str) -> dict[str, Any]:
    """The inverse of :func:`canonical_params` (a non-JSON value comes back under ``"raw"``)."""
    try:
        out = json.loads(value)
    except (TypeError, ValueError):
        return {"raw": value}
    return out if isinstance(out, dict) else {"value": out}


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_fmt_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_fmt_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def combo_terms(params: Mapping[str, Any]) -> list[tuple[str, float | None, dict[str, Any]]]:
    """``(loss, weight, params)`` for each term of a combo's ``loss_params``.

    Accepts the spellings ``combo`` accepts: a list of ``{"name": ..., "weight": ...,
    **params}`` (params also under ``"params"``), or a mapping ``{name: weight}`` /
    ``{name: {"weight": ..., **params}}``; and, leniently, ``[name, weight]`` pairs and
    ``"name"``, ``"name:weight"`` or ``"weight*name"`` strings.
    """
    out: list[tuple[str, float | None, dict[str, Any]]] = []
    terms = params.get("terms") or []
    if isinstance(terms, Mapping):  # {name: weight} or {name: {weight: ..., **params}}
        terms = [{"name": k, **v} if isinstance(v, Mapping) else {"name": k, "weight": v} for k, v in terms.items()]
    for term in terms:
        name: str | None = None
        weight: float | None = None
        extra: dict[str, Any] = {}
        if isinstance(term, Mapping):
            name = term.get("name", term.get("loss"))
            w = term.get("weight")
            weight = float(w) if isinstance(w, int | float) else None
            nested = term.get("params")
            extra = dict(nested) if isinstance(nested, Mapping) else {
                k: v for k, v in term.items() if k not in ("name", "loss", "weight", "params")
            }
        elif isinstance(term, list | tuple) and term:
            name = str(term[0])
            if len(term) > 1 and isinstance(term[1], int | float):
                weight = float(term[1])
        elif isinstance(term, str):
            s = term.strip()
            if ":" in s:
                name, _, w = s.partition(":")
            elif "*" in s:
                w, _, name = s.partition("*")
            else:
                name, w = s, ""
            name = name.strip()
            try:
                weight = float(w) if w.strip() else None
            except ValueError:
                weight = None
        if name:
            out.append((str(name), weight, extra))
    return out


def variant_label(loss: str, params_json: str, extras_json: str = "{}") -> str:
    """A short human name: ``huber(delta=0.5)``, ``combo(0.5·mse + 0.5·l1)``, plus swept settings."""
    params = parse_params(params_json)
    if loss == "combo" and params.get("terms"):
        parts = []
        for name, weight, extra in combo_terms(params):
            p = f"({', '.join(f'{k}={_fmt_value(v)}' for k, v in extra.items())})" if extra else ""
            parts.append(f"{_fmt_value(weight)}·{name}{p}" if weight is not None else f"{name}{p}")
        label = f"combo({' + '.join(parts)})"
    else:
        shown = shown_params(loss, params)
        label = loss + (f"({', '.join(f'{k}={_fmt_value(v)}' for k, v in shown.items())})" if shown else "")
    extras = parse_params(extras_json)
    if extras:
        label += " [" + ", ".join(f"{k}={v}" for k, v in extras.items()) + "]"
    return label


def as_text(s: pd.Series | pd.DataFrame) -> Any:
    """Values as plain strings, a missing value as ``""`` (``astype(str)`` keeps NaN in pandas 3)."""
    if isinstance(s, pd.DataFrame):
        return s.apply(as_text)
    return s.map(lambda x: "" if is_missing(x) else str(x)).astype(object)


def shown_params(loss: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The params worth a label: not None, and, for settings that are not tuned (no search
    space, e.g. ``ignore_index``), only where they differ from the default."""
    try:
        spec = {p.name: p for p in loss_spec(loss).params}
    except LossbenchError:
        spec = {}
    out = {}
    for k, v in params.items():
        if k in NOT_HYPERPARAMETERS or v is None:
            continue
        p = spec.get(k)
        if p is not None and p.search is None and v == p.default:
            continue
        out[k] = v
    return out


def mode_value(s: pd.Series) -> Any:
    s = s[~s.map(is_missing)]
    if s.empty:
        return None
    return as_text(s).value_counts().sort_index(kind="stable").idxmax()


def prepare(table: pd.DataFrame) -> pd.DataFrame:
    """Check and normalise a run table; add ``variant``, ``variant_label`` and ``metric``.

    Raises :class:`LossbenchError` when a required column is missing or the table is empty.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise LossbenchError(
            f"The run table lacks the column(s) {', '.join(missing)}. Runs logged by lossbench carry the "
            f"tags {', '.join(REQUIRED_COLUMNS[1:])}; were these runs logged by `python -m lossbench`?"
        )
    if table.empty:
        raise LossbenchError("The run table is empty: there are no runs to report on.")
    df = table.copy()
    for c in OPTIONAL_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    df = df.reset_index(drop=True)
    if df["run_id"].map(is_missing).any():
        df["run_id"] = [f"row{i}" if is_missing(r) else str(r) for i, r in enumerate(df["run_id"])]
    df["status"] = as_text(df["status"]).str.upper()
    df["loss"] = as_text(df["loss"])
    df["scenario"] = as_text(df["scenario"])
    df["seed"] = df["seed"].map(_seed_text)
    df["failure"] = df["failure"].map(lambda x: "" if is_missing(x) else str(x))
    df["start_time"] = pd.to_numeric(df["start_time"], errors="coerce").fillna(0)
    df["loss_params"] = df["loss_params"].map(canonical_params)
    if "params.loss.name" in df.columns:  # fall back on the flattened config for missing loss_params
        loss_cols = [c for c in df.columns if c.startswith("params.loss.") and c != "params.loss.name"]
        if loss_cols and (df["loss_params"] == "{}").any():
            keys = [c[len("params.loss.") :] for c in loss_cols]
            fb = [
                json.dumps({k: _coerce(v) for k, v in zip(keys, row, strict=True) if not is_missing(v)}, sort_keys=True)
                for row in df[loss_cols].astype(object).itertuples(index=False, name=None)
            ]
            df["loss_params"] = df["loss_params"].where(df["loss_params"] != "{}", pd.Series(fb, index=df.index))
    # the objective and its direction: one per scenario
    tasks, objectives, modes = {}, {}, {}
    for scen, sub in df.groupby("scenario", sort=False):
        task = mode_value(sub["task"])
        objective = mode_value(sub["objective"]) or DEFAULT_OBJECTIVE.get(str(task), "loss")
        mode = mode_value(sub["objective_mode"])
        if mode not in ("max", "min"):
            mode = "max" if schema.HIGHER_IS_BETTER.get(objective, False) else "min"
        tasks[scen], objectives[scen], modes[scen] = (task or ""), objective, mode
    df["task"] = df["scenario"].map(tasks).astype(object)
    df["objective"] = df["scenario"].map(objectives).astype(object)
    df["objective_mode"] = df["scenario"].map(modes).astype(object)
    df["metric"] = METRIC_PREFIX + "test_" + as_text(df["objective"])
    # variants: loss params plus swept model/optimizer settings
    extra_cols = [
        c
        for c in df.columns
        if c.startswith(PARAM_PREFIX)
        and (c[len(PARAM_PREFIX) :].startswith(VARIANT_PARAM_PREFIXES) or c[len(PARAM_PREFIX) :] in VARIANT_PARAM_KEYS)
        and as_text(df[c]).nunique() > 1
    ]
    if as_text(df["model"]).nunique() > 1:
        extra_cols = ["model", *extra_cols]
    if extra_cols:
        keys = [c[len(PARAM_PREFIX) :] if c.startswith(PARAM_PREFIX) else c for c in extra_cols]
        df["variant_extras"] = [
            json.dumps({k: str(v) for k, v in zip(keys, row, strict=True)}, sort_keys=True)
            for row in df[extra_cols].astype(object).itertuples(index=False, name=None)
        ]
    else:
        df["variant_extras"] = "{}"
    df["variant"] = df["loss"] + "|" + df["loss_params"] + "|" + df["variant_extras"]
    labels = {
        v: variant_label(lo, p, e)
        for v, lo, p, e in df[["variant", "loss", "loss_params", "variant_extras"]].drop_duplicates().itertuples(index=False)
    }
    df["variant_label"] = df["variant"].map(labels)
    return df


def _coerce(v: Any) -> Any:
    """A logged param string back to a number where it is one."""
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return v
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
    return v


def _seed_text(x: Any) -> str:
    if is_missing(x):
        return "?"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return str(int(f)) if f.is_integer() else str(x)


def _seed_sort_key(s: str) -> tuple[int, float, str]:
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


# --------------------------------------------------------------------------- statistics
def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t-distribution confidence interval; the interval is NaN for n < 2."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = x.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return (mean, math.nan, math.nan)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    return (mean, mean - half, mean + half)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values; NaN entries stay NaN and do not count in m.

    Holm, "A Simple Sequentially Rejective Multiple Test Procedure", Scandinavian Journal of
    Statistics 6(2), 1979. Sorted ascending ``p_(1) <= ... <= p_(m)``:
    ``adj_(i) = max_{j<=i} min(1, (m - j + 1) p_(j))``.
    """
    p = [float(v) for v in pvalues]
    valid = [i for i, v in enumerate(p) if not math.isnan(v)]
    m = len(valid)
    out = [math.nan] * len(p)
    running = 0.0
    for rank, i in enumerate(sorted(valid, key=lambda i: (p[i], i))):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def paired_test(a: pd.Series, b: pd.Series) -> tuple[float, int, float]:
    """Two-sided paired t-test of two seed-indexed series over their common seeds.

    Returns ``(p, n_pairs, mean difference b - a)``; ``p`` is NaN with fewer than two
    pairs. Identical pairs give p = 1; a constant non-zero difference gives p = 0.
    """
    common = a.index.intersection(b.index)
    n = len(common)
    if n == 0:
        return (math.nan, 0, math.nan)
    x = a.loc[common].to_numpy(float)
    y = b.loc[common].to_numpy(float)
    diff = y - x
    mean_diff = float(diff.mean())
    if n < 2:
        return (math.nan, n, mean_diff)
    if np.all(diff == diff[0]):
        return (1.0 if diff[0] == 0 else 0.0, n, mean_diff)
    res = stats.ttest_rel(y, x)
    return (float(res.pvalue), n, mean_diff)


# --------------------------------------------------------------------------- per seed, per variant
def seed_outcomes(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (scenario, variant, seed): its outcome, test value and validation value.

    A seed run several times counts once: its latest finished run, else its latest run.
    """
    value = _pick_metric(df, df["metric"])
    val = pd.to_numeric(df[BEST_VAL], errors="coerce") if BEST_VAL in df.columns else pd.Series(np.nan, index=df.index)
    status = df["status"]
    failure = df["failure"].str.lower()
    outcome = np.select(
        [
            (status == "FINISHED") & np.isfinite(value.to_numpy(float)),
            failure == schema.FAILURE_DIVERGED,
            status == "FAILED",
            status == "KILLED",
        ],
        [FINISHED, DIVERGED, ERROR, KILLED],
        default=INCOMPLETE,
    )
    runs = pd.DataFrame(
        {
            "scenario": df["scenario"],
            "loss": df["loss"],
            "variant": df["variant"],
            "seed": df["seed"],
            "run_id": df["run_id"],
            "start_time": df["start_time"],
            "outcome": outcome,
            "value": value,
            "val": val,
        }
    )
    runs["_fin"] = runs["outcome"] == FINISHED
    runs = runs.sort_values(["_fin", "start_time", "run_id"], kind="stable")
    last = runs.groupby(["scenario", "variant", "seed"], sort=False).tail(1)
    keys = ["scenario", "variant", "seed"]
    counts = runs.groupby(keys, sort=False).size().rename("n_runs")
    per_outcome = (
        runs.groupby([*keys, "outcome"], sort=False).size().unstack("outcome", fill_value=0).reindex(columns=list(OUTCOMES), fill_value=0)
    )
    per_outcome.columns = [f"runs_{o}" for o in OUTCOMES]
    last = last.drop(columns="_fin").join(counts, on=keys).join(per_outcome, on=keys)
    return last.reset_index(drop=True)


def _pick_metric(df: pd.DataFrame, metric_col: pd.Series) -> pd.Series:
    out = pd.Series(np.nan, index=df.index, dtype=float)
    for col, idx in df.groupby(metric_col, sort=False).groups.items():
        if col in df.columns:
            out.loc[idx] = pd.to_numeric(df.loc[idx, col], errors="coerce")
    return out


@dataclass(frozen=True)
class VariantStats:
    """One loss with one set of hyperparameters, over the seeds of one scenario."""

    scenario: str
    loss: str
    variant: str
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
    def std(self) -> float:
        return float(self.values.std(ddof=1)) if len(self.values) > 1 else math.nan

    @property
    def val_mean(self) -> float:
        v = self.val_values.dropna()
        return float(v.mean()) if len(v) else math.nan


def variant_stats(
    outcomes: pd.DataFrame, labels: Mapping[str, str], params: Mapping[str, str], extras: Mapping[str, str]
) -> list[VariantStats]:
    """Per (scenario, variant): finished values by seed and seeds per outcome."""
    groups: dict[tuple[str, str], list[Any]] = {}
    cols = ["scenario", "variant", "loss", "seed", "outcome", "value", "val", "run_id", "n_runs"]
    cols += [f"runs_{o}" for o in OUTCOMES]
    for rec in outcomes[cols].itertuples(index=False, name=None):
        groups.setdefault((str(rec[0]), str(rec[1])), []).append(rec)
    out = []
    for (scen, variant), recs in sorted(groups.items()):
        fin = sorted((r for r in recs if r[4] == FINISHED), key=lambda r: _seed_sort_key(r[3]))
        seeds = [r[3] for r in fin]
        counts = dict.fromkeys(OUTCOMES, 0)
        for r in recs:
            counts[r[4]] += 1
        out.append(
            VariantStats(
                scenario=scen,
                loss=str(recs[0][2]),
                variant=variant,
                label=labels[variant],
                params=parse_params(params[variant]),
                extras=parse_params(extras[variant]),
                values=pd.Series([float(r[5]) for r in fin], index=seeds, dtype=float),
                val_values=pd.Series([float(r[6]) for r in fin], index=seeds, dtype=float),
                outcomes=counts,
                n_runs=int(sum(r[8] for r in recs)),
                run_outcomes={o: int(sum(r[9 + i] for r in recs)) for i, o in enumerate(OUTCOMES)},
                run_ids={str(r[3]): str(r[7]) for r in recs},
            )
        )
    return out


# --------------------------------------------------------------------------- simplicity
def loss_complexity(loss: str, params: Mapping[str, Any] | None = None) -> tuple[int, int, str]:
    """Sort key for "simplest": (number of hyperparameters, fixed order, name).

    The hyperparameters of a registered loss are its tunable params (those with a search
    space: ``delta``, ``gamma``, ``label_smoothing``; not settings such as ``ignore_index``
    or per-class ``weight``) plus one for each statistic it needs from the data (class
    counts); a loss whose spec declares no search space counts all its params but
    ``reduction``. A loss the registry does not know counts its logged params. A combo
    counts one weight plus the hyperparameters of each term.
    """
    params = dict(params or {})
    if loss == "combo":
        n = sum(1 + loss_complexity(name, extra)[0] for name, _, extra in combo_terms(params))
    else:
        n = _n_hyperparameters(loss, params)
    order = SIMPLE_ORDER.index(loss) if loss in SIMPLE_ORDER else len(SIMPLE_ORDER)
    return (n, order, loss)


def _n_hyperparameters(loss: str, params: Mapping[str, Any]) -> int:
    try:
        spec = loss_spec(loss)
    except LossbenchError:
        return len([k for k in params if k not in NOT_HYPERPARAMETERS])
    own = [p for p in spec.params if p.name != "reduction" and p.name not in spec.needs]
    tunable = [p for p in own if p.search is not None]
    if not tunable and not any(p.search is not None for p in spec.params):
        tunable = [p for p in own if p.name not in NOT_HYPERPARAMETERS]
    return len(tunable) + len(spec.needs)


Complexity = Callable[[str, Mapping[str, Any]], tuple[Any, ...]]


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
    comparison: str = ""  # "best" | "tied" | "worse" | "not compared" | "all failed"
    flags: tuple[str, ...] = ()

    @property
    def all_failed(self) -> bool:
        return all(v.n_finished == 0 for v in self.variants)

    @property
    def failed_runs(self) -> dict[str, int]:
        """Runs per outcome (re-runs included), summed over all the loss's variants."""
        out = dict.fromkeys(OUTCOMES, 0)
        for v in self.variants:
            for k, n in v.run_outcomes.items():
                out[k] += n
        return out

    @property
    def reliable(self) -> bool:
        """Never failed in its chosen variant and compared on at least two seeds."""
        return self.chosen.n_failed == 0 and self.chosen.outcomes.get(KILLED, 0) == 0 and self.chosen.n_finished >= 2


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


# --------------------------------------------------------------------------- recommendation
VERDICTS = ("significant", "tie", "too_few_seeds", "only_one", "all_failed")


@dataclass(frozen=True)
class Recommendation:
    verdict: str  # one of VERDICTS
    loss: str | None  # None only when every run failed
    label: str  # the recommended variant, e.g. "huber(delta=0.5)"
    params: dict[str, Any]
    runner_up: str | None
    tied: tuple[str, ...]  # losses not significantly different from the best (best first)
    evidence: str  # one sentence
    notes: tuple[str, ...] = ()


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

    @property
    def metric(self) -> str:
        return "test_" + self.objective

    def by_loss(self, name: str) -> LossResult:
        for r in self.losses:
            if r.loss == name:
                return r
        raise KeyError(name)


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.4g}"


def _flags(r: VariantStats, all_failed: bool) -> tuple[str, ...]:
    if all_failed:
        return ("all runs failed",)
    out = []
    o = r.outcomes
    n = r.n_seeds
    if o[DIVERGED]:
        out.append(f"diverged in {o[DIVERGED]} of {n} seeds")
    if o[ERROR]:
        out.append(f"failed with an error in {o[ERROR]} of {n} seeds")
    if o[KILLED]:
        out.append(f"killed in {o[KILLED]} of {n} seeds")
    if o[INCOMPLETE]:
        out.append(f"unfinished or without a test metric in {o[INCOMPLETE]} of {n} seeds")
    superseded = sum(r.run_outcomes[k] - o[k] for k in (DIVERGED, ERROR, KILLED))
    if superseded > 0:
        out.append(f"{superseded} failed run(s) of a seed that also finished in a re-run")
    if r.n_finished == 1:
        out.append("only 1 seed finished")
    return tuple(out)


def analyze_scenario(
    df: pd.DataFrame, variants: Sequence[VariantStats], alpha: float = 0.05, complexity: Complexity | None = None
) -> ScenarioResult:
    """Rank the losses of one scenario and apply the recommendation rule."""
    complexity = complexity or loss_complexity
    scen = str(df["scenario"].iloc[0])
    mode = str(df["objective_mode"].iloc[0])
    objective = str(df["objective"].iloc[0])
    task = str(df["task"].iloc[0])
    sign = -1.0 if mode == "max" else 1.0

    by_loss: dict[str, list[VariantStats]] = {}
    for v in variants:
        by_loss.setdefault(v.loss, []).append(v)
    chosen = {loss: choose_variant(vs, mode) for loss, vs in by_loss.items()}

    def cx(loss: str) -> tuple[Any, ...]:
        return tuple(complexity(loss, chosen[loss].params))

    def rank_key(loss: str) -> tuple[Any, ...]:
        m = chosen[loss].mean
        return (chosen[loss].n_finished == 0, sign * m if not math.isnan(m) else 0.0, cx(loss))

    order = sorted(by_loss, key=rank_key)
    # competition ranks: exact metric ties share a rank
    ranks: dict[str, int] = {}
    for i, loss in enumerate(order):
        prev = order[i - 1] if i else None
        same = prev is not None and rank_key(prev)[:2] == rank_key(loss)[:2]
        ranks[loss] = ranks[prev] if same and prev is not None else i + 1

    contenders = [loss for loss in order if chosen[loss].n_finished > 0]
    tests: dict[str, tuple[float, int, float]] = {}
    if contenders:
        best = contenders[0]
        for loss in contenders[1:]:
            tests[loss] = paired_test(chosen[best].values, chosen[loss].values)
    names = list(tests)
    adjusted = dict(zip(names, holm([tests[n][0] for n in names]), strict=True))

    results: list[LossResult] = []
    for loss in order:
        v = chosen[loss]
        all_failed = all(x.n_finished == 0 for x in by_loss[loss])
        p, n_pairs, diff = tests.get(loss, (math.nan, 0, math.nan))
        flags = list(_flags(v, all_failed))
        if all_failed:
            comparison = "all failed"
        elif contenders and loss == contenders[0]:
            comparison = "best"
        elif math.isnan(p):
            comparison = "not compared"
            flags.append(f"not compared: {n_pairs} seed(s) finished alongside the best, 2 needed")
        elif adjusted[loss] < alpha:
            comparison = "worse"
        else:
            comparison = "tied"
        results.append(
            LossResult(
                loss=loss,
                chosen=v,
                variants=tuple(sorted(by_loss[loss], key=lambda x: x.label)),
                rank=ranks[loss],
                p_value=p,
                p_adjusted=adjusted.get(loss, math.nan),
                n_pairs=n_pairs,
                mean_diff=diff,
                comparison=comparison,
                flags=tuple(flags),
            )
        )
    rec = recommend(results, objective=objective, mode=mode, alpha=alpha, complexity=cx)
    return ScenarioResult(
        scenario=scen,
        task=task,
        objective=objective,
        mode=mode,
        alpha=alpha,
        losses=tuple(results),
        recommendation=rec,
        run_ids=tuple(as_text(df["run_id"])),
    )


def _ci_text(v: VariantStats) -> str:
    m, lo, hi = v.ci
    if math.isnan(lo):
        return f"{_fmt(m)} (1 seed, no interval)"
    return f"{_fmt(m)} [95% CI {_fmt(lo)}, {_fmt(hi)}] over {v.n_finished} seeds"


def recommend(
    results: Sequence[LossResult],
    *,
    objective: str,
    mode: str,
    alpha: float,
    complexity: Callable[[str], tuple[Any, ...]],
) -> Recommendation:
    """The recommendation rule, over losses already ranked and tested against the best.

    * every run failed: no recommendation;
    * the best has fewer than two finished seeds, or no other loss could be compared on
      two seeds: too few seeds to tell; no winner is claimed, the simplest loss that
      finished is named as a default, with that caveat;
    * only one loss finished any run: it is the only candidate;
    * every other loss is significantly worse (Holm-adjusted p < alpha): the best;
    * otherwise the losses tied with the best (not significantly worse, or not comparable)
      form a group, and the simplest reliable member is recommended: losses that never
      failed and finished at least two seeds first, then fewer hyperparameters, then the
      fixed order of :data:`SIMPLE_ORDER`.
    """
    word = "highest" if mode == "max" else "lowest"
    metric = f"test {objective}"
    contenders = [r for r in results if not r.all_failed]
    failed = [r.loss for r in results if r.all_failed]
    if not contenders:
        no_metric = all(v.outcomes[INCOMPLETE] == v.n_seeds for r in results for v in r.variants)
        return Recommendation(
            "all_failed",
            None,
            "",
            {},
            None,
            (),
            (
                f"No run has a finished test {objective} (runs still going, or without that metric), so there is "
                f"nothing to rank yet: wait for the runs to finish, or check that test_{objective} is logged."
                if no_metric
                else "Every run of every loss failed, so there is nothing to recommend: see the failures below "
                "(lower the learning rate, or check the data)."
            ),
        )
    best = contenders[0]
    by_simplicity = sorted(contenders, key=lambda r: (not r.reliable, complexity(r.loss)))
    notes: list[str] = []
    if failed:
        notes.append(f"All runs failed for: {', '.join(failed)}.")
    if best.chosen.n_failed:
        notes.append(f"Caution: {best.loss} {', '.join(f for f in best.flags if 'seed' in f)}.")

    def runner_up(rec: str) -> str | None:
        return next((r.loss for r in contenders if r.loss != rec), None)

    if len(contenders) == 1:
        why = (
            f"{best.loss} is the only loss with finished runs (the others all failed)"
            if failed
            else f"{best.loss} is the only loss that was run, so nothing was compared"
        )
        too_few = best.chosen.n_finished < 2
        return Recommendation(
            "only_one",
            best.loss,
            best.chosen.label,
            best.chosen.params,
            None,
            (best.loss,),
            f"{why}: test {objective} {_ci_text(best.chosen)}."
            + (" Add seeds (seed=0,1,2) for a confidence interval." if too_few else ""),
            tuple(notes),
        )
    others = [r for r in contenders[1:]]
    comparable = [r for r in others if not math.isnan(r.p_adjusted)]
    if best.chosen.n_finished < 2 or not comparable:
        pick = min(contenders, key=lambda r: (r.chosen.n_failed > 0, complexity(r.loss)))
        n_best = best.chosen.n_finished
        reason = (
            f"only {n_best} seed of the best-scoring loss ({best.loss}) finished"
            if n_best < 2
            else "no other loss finished at least two of the same seeds as the best"
        )
        return Recommendation(
            "too_few_seeds",
            pick.loss,
            pick.chosen.label,
            pick.chosen.params,
            runner_up(pick.loss),
            tuple(r.loss for r in contenders),
            f"Too few seeds to tell the losses apart ({reason}), so no winner is claimed: the ranking is "
            f"indicative only; {pick.loss}, the simplest loss that ran, is a reasonable default until you "
            f"add seeds (e.g. seed=0,1,2) and re-run.",
            tuple(notes),
        )
    tied = [best] + [r for r in others if r.comparison in ("tied", "not compared")]
    if len(tied) == 1:
        ru = others[0]
        worst_p = max(r.p_adjusted for r in comparable)
        return Recommendation(
            "significant",
            best.loss,
            best.chosen.label,
            best.chosen.params,
            ru.loss,
            (best.loss,),
            f"{best.chosen.label} had the {word} {metric}, {_ci_text(best.chosen)}, significantly "
            f"better than every other loss (paired t-test over seeds, Holm-adjusted "
            f"p {'< 0.001' if worst_p < 0.001 else f'<= {worst_p:.3f}'} in every comparison; runner-up {ru.chosen.label} at "
            f"{_fmt(ru.chosen.mean)}).",
            tuple(notes),
        )
    pick = min(tied, key=lambda r: (not r.reliable, complexity(r.loss)))
    names = ", ".join(r.loss for r in tied)
    not_cmp = [r.loss for r in tied if r.comparison == "not compared"]
    sentence = (
        f"No significant difference between {names} (paired t-test over seeds, Holm-adjusted p >= {alpha:g} "
        f"against the best-scoring {best.loss}, {metric} {_ci_text(best.chosen)}); "
        + (
            f"{pick.loss} is recommended as the simplest of them that ran reliably."
            if pick.loss != best.loss
            else f"{pick.loss} is both the best-scoring and the simplest reliable one."
        )
    )
    if pick.loss != best.loss:
        sentence += _consistent_but_not_significant(best, pick, mode, objective)
    if not_cmp:
        notes.append(
            f"Could not be compared (fewer than two seeds finished alongside the best): {', '.join(not_cmp)}; "
            "they are kept in the tied group because they were not shown to be worse."
        )
    return Recommendation(
        "tie",
        pick.loss,
        pick.chosen.label,
        pick.chosen.params,
        runner_up(pick.loss),
        tuple(r.loss for r in tied),
        sentence,
        tuple(notes),
    )


def _consistent_but_not_significant(best: LossResult, pick: LossResult, mode: str, objective: str) -> str:
    """A hint when the best beat the recommended loss on every shared seed, yet not significantly.

    With few seeds a paired t-test (and more so after Holm's correction) cannot confirm even a
    difference that every seed agrees on; the honest answer is "not shown", plus how to show it.
    """
    a, b = best.chosen.values, pick.chosen.values
    seeds = a.index.intersection(b.index)
    if len(seeds) < 2:
        return ""
    diff = (a[seeds] - b[seeds]) if mode == "max" else (b[seeds] - a[seeds])  # > 0: best is better
    if not bool((diff > 0).all()):
        return ""
    n = len(seeds)
    more = ",".join(str(i) for i in range(max(10, 2 * n)))
    return (
        f" Note: {best.loss} scored better than {pick.loss} on every one of the {n} shared seeds "
        f"(by {_fmt(float(diff.mean()))} {objective} on average), which {n} seeds cannot show to be "
        f"significant; add seeds (seed={more}) to decide."
    )


# --------------------------------------------------------------------------- everything
@dataclass(frozen=True)
class Analysis:
    table: pd.DataFrame  # prepared run table
    outcomes: pd.DataFrame  # one row per (scenario, variant, seed)
    scenarios: tuple[ScenarioResult, ...]


def analyze(table: pd.DataFrame, alpha: float = 0.05, complexity: Complexity | None = None) -> Analysis:
    """Prepare the table, then rank and recommend in every scenario."""
    if not 0 < alpha < 1:
        raise LossbenchError(f"report.alpha must be in (0, 1), got {alpha!r}.")
    df = prepare(table)
    outs = seed_outcomes(df)
    labels = dict(zip(df["variant"], df["variant_label"], strict=True))
    params = dict(zip(df["variant"], df["loss_params"], strict=True))
    extras = dict(zip(df["variant"], df["variant_extras"], strict=True))
    vstats = variant_stats(outs, labels, params, extras)
    by_scen: dict[str, list[VariantStats]] = {}
    for v in vstats:
        by_scen.setdefault(v.scenario, []).append(v)
    results = [
        analyze_scenario(g, by_scen[str(scen)], alpha=alpha, complexity=complexity)
        for scen, g in df.groupby("scenario", sort=True)
    ]
    return Analysis(table=df, outcomes=outs, scenarios=tuple(results))

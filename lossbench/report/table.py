"""The run table, checked and tidied: one row per run, the report's only input.

:mod:`runs` fills it from MLflow; tests build synthetic ones. Columns:

``status``, ``loss``, ``scenario``, ``seed``
    required: the run's status (FINISHED, FAILED, KILLED, RUNNING...), the loss as the report
    names it, the scenario (the dataset and its settings other than the seed) and the seed
    (runs with the same seed saw the same data).
``base_loss``
    the registered loss behind ``loss``: itself, except for a named loss config such as
    ``label_smoothing`` (cross_entropy with smoothing), which is reported as a loss of its own.
``objective``, ``objective_mode``, ``failure``, ``loss_params``, ``task``, ``model``, ``run_id``, ``start_time``
    optional tags and run info; missing ones are filled in.
``metrics.<key>``, ``params.<key>``
    the run's final metrics and flattened config, e.g. ``metrics.test_rmse``, ``params.data.normalize``.

A *variant* is one loss with one set of hyperparameters (``loss_params``), plus the model and
optimizer settings where those were swept: :func:`prepare` adds its key and its label.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from .. import schema
from ..errors import LossbenchError

REQUIRED_COLUMNS = ("status", "loss", "scenario", "seed")
OPTIONAL_COLUMNS = ("run_id", "start_time", "task", "objective", "objective_mode", "failure", "loss_params", "model",
                    "base_loss")
METRIC_PREFIX = "metrics."
PARAM_PREFIX = "params."
# settings other than the loss that, when swept, make runs different variants
VARIANT_PARAM_PREFIXES = ("model.", "optimizer.", "scheduler.")
VARIANT_PARAM_KEYS = ("trainer.max_epochs",)
DEFAULT_OBJECTIVE = {"regression": "rmse", "multiclass": "balanced_accuracy", "binary": "balanced_accuracy"}
NOT_HYPERPARAMETERS = ("reduction", "class_counts")


def is_missing(x: Any) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)) or (isinstance(x, str) and not x.strip())


def as_text(s: pd.Series | pd.DataFrame) -> Any:
    """Values as plain strings, a missing value as ``""`` (``astype(str)`` keeps NaN in pandas 3)."""
    if isinstance(s, pd.DataFrame):
        return s.apply(as_text)
    return s.map(lambda x: "" if is_missing(x) else str(x)).astype(object)


def mode_value(s: pd.Series) -> Any:
    """The most common non-missing value, as text (ties: the first in sorted order); None if none."""
    s = s[~s.map(is_missing)]
    if s.empty:
        return None
    return as_text(s).value_counts().sort_index(kind="stable").idxmax()


def metric_mode(metric: str) -> str:
    return "max" if schema.HIGHER_IS_BETTER.get(metric, False) else "min"


def number(v: Any) -> float | int | None:
    """A number from a value or a logged param string (ints stay ints); None if it is not one."""
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


def natural_key(s: str) -> tuple[int, float, str]:
    """Sort key for seeds and class names: numbers in numeric order, then other text."""
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


def canonical_params(value: Any) -> str:
    """``loss_params`` as canonical JSON (sorted keys); ``"{}"`` when absent."""
    if is_missing(value):
        return "{}"
    if not isinstance(value, Mapping):
        try:
            value = json.loads(str(value))
        except ValueError:
            return str(value)
    return json.dumps(dict(value) if isinstance(value, Mapping) else value, sort_keys=True, default=str)


def parse_params(value: str) -> dict[str, Any]:
    """The inverse of :func:`canonical_params` (a non-JSON value comes back under ``"raw"``)."""
    try:
        out = json.loads(value)
    except (TypeError, ValueError):
        return {"raw": value}
    return out if isinstance(out, dict) else {"value": out}


def loss_spec(name: str) -> Any | None:
    """The registry's spec of a registered loss, or None where this installation does not know it."""
    from ..registry import loss_info  # registry only: no trainer, no data

    try:
        return loss_info(name)
    except LossbenchError:
        return None


def combo_terms(params: Mapping[str, Any]) -> list[tuple[str, float, dict[str, Any]]]:
    """``(loss, weight, params)`` per term of a combo's ``loss_params``; ``[]`` if there are none
    or they are not a valid ``terms`` value (combo itself would have refused them)."""
    if not params.get("terms"):
        return []
    from ..losses.combo import normalise_terms  # imports torch: only when there is a combo

    try:
        return [(t["name"], t["weight"], dict(t["params"])) for t in normalise_terms(params["terms"])]
    except LossbenchError:
        return []


# --------------------------------------------------------------------------- labels
def fmt_value(v: Any) -> str:
    """A hyperparameter's value in a label: ``0.5``, ``[1, 2]``, ``{a=1}``."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={fmt_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in params.items())


def shown_params(base: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The params worth a label: not None, and, for settings that are not tuned (no search
    space, e.g. ``ignore_index``), only where they differ from the default."""
    spec = loss_spec(base)
    untuned = {p.name: p.default for p in spec.params if p.search is None} if spec is not None else {}
    return {k: v for k, v in params.items()
            if k not in NOT_HYPERPARAMETERS and v is not None and not (k in untuned and v == untuned[k])}


def variant_label(loss: str, params_json: str, extras_json: str = "{}", base: str | None = None) -> str:
    """A short name: ``huber(delta=0.5)``, ``combo(0.5·mse + 1·l1)``, plus swept settings in brackets."""
    params = parse_params(params_json)
    terms = combo_terms(params) if (base or loss) == "combo" else ()
    if terms:
        label = "combo(" + " + ".join(f"{fmt_value(w)}·{n}" + (f"({fmt_params(p)})" if p else "") for n, w, p in terms)
        label += ")"
    else:
        shown = shown_params(base or loss, params)
        label = loss + (f"({fmt_params(shown)})" if shown else "")
    extras = parse_params(extras_json)
    return label + (f" [{fmt_params(extras)}]" if extras else "")


# --------------------------------------------------------------------------- the table
def prepare(table: pd.DataFrame) -> pd.DataFrame:
    """Check and tidy a run table; add ``variant``, ``variant_extras``, ``variant_label`` and ``metric``.

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
    df = table.reindex(columns=[*table.columns, *(c for c in OPTIONAL_COLUMNS if c not in table.columns)])
    df = df.reset_index(drop=True)
    ids = as_text(df["run_id"])
    df["run_id"] = ids.where(ids != "", pd.Series([f"row{i}" for i in range(len(df))]))
    for c in ("status", "loss", "scenario", "failure"):
        df[c] = as_text(df[c])
    df["status"] = df["status"].str.upper()
    df["base_loss"] = as_text(df["base_loss"]).where(lambda b: b != "", df["loss"])
    df["seed"] = df["seed"].map(_seed_text)
    df["start_time"] = pd.to_numeric(df["start_time"], errors="coerce").fillna(0)
    df["loss_params"] = df["loss_params"].map(canonical_params)
    loss_cols = [c for c in df.columns if c.startswith("params.loss.") and c != "params.loss.name"]
    if loss_cols and (df["loss_params"] == "{}").any():  # fall back on the flattened config
        flat = df[loss_cols].rename(columns=lambda c: c.removeprefix("params.loss.")).astype(object)
        # a logged param string back to a number where it is one
        fallback = [json.dumps({k: v if (n := number(v)) is None else n for k, v in row.items() if not is_missing(v)},
                               sort_keys=True) for row in flat.to_dict("records")]
        df["loss_params"] = df["loss_params"].where(df["loss_params"] != "{}", pd.Series(fallback, index=df.index))
    # the task, the objective and its direction: the most common per scenario, else defaults
    per = df.groupby("scenario", sort=False)[["task", "objective", "objective_mode"]].agg(mode_value)
    per["objective"] = per["objective"].fillna(per["task"].map(DEFAULT_OBJECTIVE)).fillna("loss")
    higher = per["objective"].map(metric_mode)
    per["objective_mode"] = per["objective_mode"].where(per["objective_mode"].isin(["max", "min"]), higher)
    per["task"] = per["task"].fillna("")
    df[per.columns] = per.loc[df["scenario"]].to_numpy()
    df["metric"] = METRIC_PREFIX + "test_" + as_text(df["objective"])
    # variants: loss params plus the model/optimizer settings swept within a scenario (a setting that
    # differs only between scenarios, e.g. one grid's model, sets no variant apart); model.head, which
    # a loss's needs decide (auto), only where it differs between runs of the same loss
    cand = [
        c for c in df.columns
        if c.startswith(PARAM_PREFIX)
        and (c[len(PARAM_PREFIX) :].startswith(VARIANT_PARAM_PREFIXES) or c[len(PARAM_PREFIX) :] in VARIANT_PARAM_KEYS)
    ]
    text = df[["scenario", "loss"]].assign(**{c: as_text(df[c]) for c in ["model", *cand]})
    per_scenario: dict[Any, list[str]] = {}
    for scen, rows in text.groupby("scenario", sort=False):
        by_loss = rows.groupby("loss")
        per_scenario[scen] = [c for c in ["model", *cand] if (
            (by_loss[c].nunique() > 1).any() if c.endswith("model.head") else rows[c].nunique() > 1)]
    used = sorted({c for cols in per_scenario.values() for c in cols})
    df["variant_extras"] = [
        json.dumps({c.removeprefix(PARAM_PREFIX): str(row[c]) for c in per_scenario[row["scenario"]]}, sort_keys=True)
        for row in df[["scenario", *used]].to_dict("records")
    ]
    df["variant"] = df["loss"] + "|" + df["loss_params"] + "|" + df["variant_extras"]
    cols = ["variant", "loss", "loss_params", "variant_extras", "base_loss"]
    labels = {v: variant_label(lo, p, e, b) for v, lo, p, e, b in df[cols].drop_duplicates().itertuples(index=False)}
    df["variant_label"] = df["variant"].map(labels)
    return df


def split_invalid_jobs(table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """The run table without the sweep jobs refused before training (column ``invalid_job``), and
    those jobs as ``{"name", "overrides", "error"}``: they belong to no scenario and no variant."""
    if table.empty or "invalid_job" not in table.columns:
        return table, []
    bad = table["invalid_job"].fillna(False).astype(bool)
    text = as_text(table[bad].reindex(columns=["run_name", "run_id", "overrides", "error_message"]))
    jobs = [{"name": r.run_name or r.run_id, "overrides": r.overrides,
             "error": (r.error_message.splitlines() or [""])[0][:300]} for r in text.itertuples(index=False)]
    return table[~bad].drop(columns="invalid_job").reset_index(drop=True), jobs


def _seed_text(x: Any) -> str:
    if is_missing(x):
        return "?"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return str(int(f)) if f.is_integer() else str(x)

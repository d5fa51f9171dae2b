"""Read an MLflow experiment into a run table (one row per run): the report's only contact with MLflow.

Reads what :mod:`lossbench.schema` names and nothing else: it never imports the trainer. The
runs come from ``mlflow.search_runs(output_format="pandas")``; metric histories (training
curves) are fetched only for a bounded subset of runs chosen by the caller.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pandas as pd
import sqlalchemy.exc
from mlflow import MlflowClient
from mlflow.entities import Experiment, ViewType
from mlflow.exceptions import MlflowException

from .. import schema
from ..errors import TrackingError, UnknownNameError, did_you_mean
from ..tracking import sqlite_path

# run-table column <- MLflow tag
TAG_COLUMNS = {
    "loss": schema.TAG_LOSS, "data": schema.TAG_DATA, "model": schema.TAG_MODEL, "task": schema.TAG_TASK,
    "seed": schema.TAG_SEED, "scenario": schema.TAG_SCENARIO, "objective": schema.TAG_OBJECTIVE,
    "objective_mode": schema.TAG_OBJECTIVE_MODE, "sweep_id": schema.TAG_SWEEP, "config_hash": schema.TAG_CONFIG_HASH,
    "failure": schema.TAG_FAILURE, "failure_step": schema.TAG_FAILURE_STEP, "loss_params": schema.TAG_LOSS_PARAMS,
    "optuna_study": schema.TAG_STUDY, "optuna_trial": schema.TAG_TRIAL, "overrides": schema.TAG_OVERRIDES,
    "error_message": "error_message",
}
DATA_INFO_PREFIX = "data_info."
INVALID_JOB = "invalid_job"  # run-table column: the run is a sweep job refused before training


def open_store(uri: str) -> MlflowClient:
    """An MLflow client for ``uri``. A local store that does not exist is an error, never created; a
    server that does not answer fails fast (MLflow itself retries for minutes)."""
    if not uri:
        raise TrackingError("tracking.uri is empty. Set it, e.g. tracking.uri=sqlite:///mlflow.db.")
    parsed = urlparse(uri)
    if uri.startswith("sqlite:///"):
        path = sqlite_path(uri)
        local = path if path is not None and path.name not in ("", ":memory:") else None
    else:  # file:// or a bare path (a Windows one has a drive letter for a scheme)
        bare = parsed.scheme == "" or (len(parsed.scheme) == 1 and uri[1:3] in (":\\", ":/"))
        local = Path(parsed.path) if parsed.scheme == "file" else Path(uri) if bare else None
    if local is not None and not local.exists():
        raise TrackingError(
            f"No MLflow store at {uri}: {local.resolve()} does not exist. Point tracking.uri at the "
            f"store the runs were logged to (e.g. tracking.uri=sqlite:///path/to/mlflow.db), or log "
            f"some runs first with `python -m lossbench`."
        )
    if local is not None and uri.startswith("sqlite:///"):
        if not local.is_file():
            raise TrackingError(f"No MLflow store at {uri}: {local.resolve()} is not a file.")
        check_sqlite_file(local)
    if parsed.scheme in ("http", "https"):
        try:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            socket.create_connection((parsed.hostname or "localhost", port), timeout=3.0).close()
        except OSError as exc:
            raise TrackingError(
                f"The MLflow tracking server at {uri} does not answer ({exc.strerror or exc}). Start it, or point "
                f"tracking.uri at the store the runs were logged to (e.g. tracking.uri=sqlite:///mlflow.db)."
            ) from None
    try:
        return MlflowClient(tracking_uri=uri)
    except sqlalchemy.exc.DatabaseError as exc:
        raise corrupt_store(local if local is not None else uri, exc) from None
    except MlflowException as exc:
        raise TrackingError(f"Cannot open the MLflow store at {uri}: {exc.message}") from exc


def check_sqlite_file(path: Path) -> None:
    """Read ``path``'s table list read-only: a file that is not an SQLite database, or is cut short,
    is one clear error here rather than SQLAlchemy's traceback later."""
    try:
        con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            con.execute("SELECT name FROM sqlite_master").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # locked or not readable, not damaged: MLflow's own open says which
        return
    except sqlite3.DatabaseError as exc:
        raise corrupt_store(path, exc) from None


def corrupt_store(path: Path | str, exc: BaseException) -> TrackingError:
    """The one message for a store file that SQLite cannot read."""
    cause = getattr(exc, "orig", None) or exc
    reason = str(cause).splitlines()[0]
    if isinstance(cause, sqlite3.OperationalError):  # locked, or no permission: the file may be fine
        return TrackingError(f"The MLflow store {Path(path).resolve()} cannot be read ({reason}). Check that it is "
                             f"readable and that no other program holds it, then try again.")
    return TrackingError(
        f"The MLflow store {Path(path).resolve()} is damaged or not an SQLite database ({reason}). "
        f"Restore it from a backup, or point tracking.uri at another store."
    )


def find_experiment(client: MlflowClient, name: str) -> Experiment:
    """The experiment called ``name``; an unknown name lists the experiments that exist."""
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None and exp.lifecycle_stage == "active":
            return exp
        names = sorted(e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY))
    except MlflowException as exc:
        raise TrackingError(f"Cannot read the MLflow store at {client.tracking_uri}: {exc.message}") from exc
    except sqlalchemy.exc.DatabaseError as exc:
        raise corrupt_store(sqlite_path(client.tracking_uri) or client.tracking_uri, exc) from None
    deleted = " It was deleted; restore it with `mlflow experiments restore`." if exp is not None else ""
    listing = ", ".join(names) if names else "none"
    raise UnknownNameError(
        f"Unknown experiment '{name}' in the MLflow store at {client.tracking_uri}.{deleted}"
        f"{did_you_mean(name, names)} Experiments there: {listing}. "
        f"Pick one with tracking.experiment_name=<name>."
    )


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """``mlflow.search_runs`` reads the global tracking URI: point it at ``uri`` for the call, then
    put back both the global and the environment variable that ``set_tracking_uri`` also writes."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def run_table(client: MlflowClient, experiment: Experiment) -> tuple[pd.DataFrame, int]:
    """All active runs of ``experiment`` as a run table, and how many runs lacked lossbench tags.

    Columns: ``run_id``, ``run_name``, ``status``, ``start_time`` (ms), the tag columns of
    :data:`TAG_COLUMNS`, ``base_loss`` (the registered loss behind a named loss config such as
    label_smoothing, which ``loss`` names), ``data_info.*`` tags, ``params.<key>``, ``metrics.<key>`` (latest).
    """
    try:
        with gc_paused(), _tracking_uri(client.tracking_uri):
            runs = mlflow.search_runs([experiment.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=None,
                                      order_by=["attributes.start_time ASC"], output_format="pandas")
    except MlflowException as exc:
        raise TrackingError(f"Cannot read runs from {client.tracking_uri}: {exc.message}") from exc
    except sqlalchemy.exc.DatabaseError as exc:
        raise corrupt_store(sqlite_path(client.tracking_uri) or client.tracking_uri, exc) from None
    loss_tag = "tags." + schema.TAG_LOSS
    ours = runs[runs[loss_tag].notna()] if loss_tag in runs.columns else runs.iloc[0:0]
    kind = "tags." + schema.TAG_KIND
    parents = int(runs[kind].notna().sum()) if kind in runs.columns else 0  # a sweep's or a study's own run
    ignored = len(runs) - len(ours) - parents  # runs some other tool logged here
    if ours.empty:
        return pd.DataFrame(), ignored
    # search_runs orders params, metrics and tags as a set does (by hash): sort them, so that a
    # report on the same runs is the same every time
    tags = {"tags." + tag: col for col, tag in TAG_COLUMNS.items() if "tags." + tag in ours.columns}
    tags |= {c: c.removeprefix("tags.") for c in sorted(ours.columns) if c.startswith("tags." + DATA_INFO_PREFIX)}
    kept = [*sorted(c for c in ours.columns if c.startswith("params.")),
            *sorted(c for c in ours.columns if c.startswith("metrics."))]
    out = pd.concat([
        pd.DataFrame({"run_id": ours["run_id"], "run_name": ours.get("tags.mlflow.runName"), "status": ours["status"],
                      "start_time": (ours["start_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)}),
        ours[list(tags)].rename(columns=tags), ours[kept],
    ], axis=1)
    named = ours.get("tags." + schema.TAG_LOSS_VARIANT)
    if named is not None and named.notna().any():  # a named loss config (label_smoothing) is reported as a loss
        out["base_loss"] = out["loss"]
        out["loss"] = named.where(named.notna() & (named != ""), out["loss"])

    def column(name: str) -> pd.Series:
        return out[name] if name in out.columns else pd.Series(None, index=out.index, dtype=object)

    if "params.seed" in out.columns:  # no seed tag: the config's seed
        out["seed"] = column("seed").combine_first(out["params.seed"])
    # no scenario tag: the dataset stands for it (older runs: the dataset's name in the config)
    out["scenario"] = column("scenario").combine_first(column("data")).combine_first(column("params.data.name"))
    out["scenario"] = out["scenario"].fillna("data")
    # a sweep job whose config was refused (sweep.record_invalid_job): FAILED with no config logged, no
    # config hash; it belongs to no scenario
    logged = ours[[c for c in ours.columns if c.startswith("params.")]].notna().any(axis=1)
    out[INVALID_JOB] = (out["status"] == "FAILED") & column("config_hash").isna() & ~logged
    return out.reset_index(drop=True), ignored


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (re-entrant). Reading runs builds tens of thousands of ORM
    objects and drawing thousands of artists, each allocation burst scanning every live object
    (torch, mlflow and pandas hold millions): paused, a whole report takes about 20% less time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def metric_histories(client: MlflowClient, keys: Mapping[str, str]) -> dict[str, pd.DataFrame]:
    """Per run of ``{run_id: metric key}``, that metric's history as a frame ``(step, value)``; one call per run."""
    out = {}
    for rid, key in keys.items():
        try:
            hist = client.get_metric_history(rid, key)
        except MlflowException:
            continue
        if hist:
            frame = pd.DataFrame({"step": [m.step for m in hist], "value": [m.value for m in hist]})
            out[rid] = frame.sort_values("step", kind="stable").reset_index(drop=True)
    return out

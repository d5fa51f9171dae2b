"""MLflow: the store, the experiment, one run per job, and what each run records.

The store and the experiment are created once, by the process that starts a job or a
sweep, before any worker exists: several processes creating a fresh SQLite store or
the same experiment at once corrupt the store or misfile runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import schema as S
from .errors import TrackingError

log = logging.getLogger(__name__)

# config keys that say how a job runs, not what it computes: left out of the config hash
_NOT_HASHED = ("tracking", "engine", "hydra", "trainer.enable_progress_bar", "trainer.devices", "debug", "sweep_id")


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_hash(cfg: Mapping[str, Any]) -> str:
    """A stable hash of what a job computes (the resolved config minus how it runs)."""
    flat = flatten(cfg)
    kept = {k: v for k, v in flat.items() if not any(k == p or k.startswith(p + ".") for p in _NOT_HASHED)}
    blob = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_reachable(uri: str, timeout: float = 3.0) -> None:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    host = parsed.hostname or "localhost"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise TrackingError(
            f"The MLflow tracking server at {uri} does not answer ({exc.strerror or exc}). Start it "
            f"(`mlflow server --host 127.0.0.1 --port {port} --backend-store-uri sqlite:///mlflow.db`), "
            f"fix tracking.uri, or drop tracking.uri to use the embedded SQLite store. Nothing was trained."
        ) from None


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


def client(uri: str):
    """An MlflowClient for ``uri``, one per process and store (building one costs ~20 ms)."""
    key = (os.getpid(), uri)
    c = _CLIENTS.get(key)
    if c is None:
        _quiet_mlflow()
        from mlflow import MlflowClient

        c = _CLIENTS[key] = MlflowClient(tracking_uri=uri)
    return c


_CLIENTS: dict[tuple[int, str], Any] = {}


def ensure_experiment(uri: str, experiment_name: str) -> str:
    """Create the store and the experiment if needed; return the experiment id.

    Call this once in the parent process before any worker starts.
    """
    _check_reachable(uri)
    path = _sqlite_path(uri)
    if path is not None and path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        c = client(uri)
        exp = c.get_experiment_by_name(experiment_name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"The MLflow experiment '{experiment_name}' was deleted. Restore it "
                    f"(`mlflow experiments restore`) or choose another tracking.experiment_name."
                )
            return exp.experiment_id
        try:
            return c.create_experiment(experiment_name)
        except Exception:  # noqa: BLE001 - someone else created it between our two calls
            exp = c.get_experiment_by_name(experiment_name)
            if exp is None:
                raise
            return exp.experiment_id
    except TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise TrackingError(f"Cannot use the MLflow store at {uri}: {type(exc).__name__}: {exc}") from exc


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the lossbench checkout, if it runs from one (asked once per process)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def find_finished(uri: str, experiment_id: str, chash: str) -> str | None:
    """The id of a FINISHED run with this config hash in the experiment, if any."""
    runs = client(uri).search_runs(
        [experiment_id],
        filter_string=f"tags.{S.TAG_CONFIG_HASH} = '{chash}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def start_run(
    uri: str,
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, Any],
    params: Mapping[str, Any],
) -> str:
    """Create a RUNNING run with its tags and params; return its id."""
    from mlflow.entities import Param

    c = client(uri)
    run = c.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in tags.items() if v is not None})
    _ARTIFACT_URIS[run.info.run_id] = run.info.artifact_uri
    items = [Param(k, _param_str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):
        c.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def _param_str(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, list | dict) else str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


def end_run(
    uri: str,
    run_id: str,
    status: str,
    tags: Mapping[str, Any] | None = None,
    *,
    metrics: Sequence[Any] = (),
    artifacts: Mapping[str, Any] | None = None,
) -> None:
    """End a run: its last metrics and tags in one batch, its artifacts in one upload, then its status.

    ``artifacts`` maps a file name to its content: text is written as is, anything else
    as JSON. Each MLflow write is a transaction of its own, so a run's last record costs
    three of them, whatever it holds.
    """
    from mlflow.entities import RunTag

    c = client(uri)
    log_metrics(uri, run_id, metrics, tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])
    if artifacts:
        log_files(uri, run_id, artifacts)
    c.set_terminated(run_id, status)


def log_metrics(uri: str, run_id: str, metrics: Sequence[Any], *, tags: Sequence[Any] = ()) -> None:
    """MLflow metrics (and tags, with the first batch) in as few batches as MLflow allows."""
    items, tag_items = list(metrics), list(tags)
    c = client(uri)
    for i in range(0, max(len(items), 1), 1000):  # MLflow's batch limit
        chunk = items[i : i + 1000]
        if chunk or tag_items:
            c.log_batch(run_id, metrics=chunk, tags=tag_items)
            tag_items = []


def log_files(uri: str, run_id: str, files: Mapping[str, Any]) -> None:
    """Several small artifacts in one upload (one artifact-store lookup, not one per file)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lossbench-") as tmp:
        for name, content in files.items():
            path = Path(tmp) / name
            if isinstance(content, str):
                path.write_text(content)
            else:
                path.write_text(json.dumps(content, indent=2, default=str))
        known = _ARTIFACT_URIS.pop(run_id, None)
        if known and known.startswith(("file:", "/")):  # straight to the run's artifact store: asking the tracking store for it reads the whole run
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            get_artifact_repository(known).log_artifacts(tmp)
        else:
            client(uri).log_artifacts(run_id, tmp)


# artifact locations of the runs this process created, so that their last upload needs no lookup
_ARTIFACT_URIS: dict[str, str] = {}


def log_text(uri: str, run_id: str, text: str, name: str) -> None:
    client(uri).log_text(run_id, text, name)


def log_dict(uri: str, run_id: str, obj: Any, name: str) -> None:
    client(uri).log_dict(run_id, obj, name)


def log_figure(uri: str, run_id: str, fig: Any, name: str) -> None:
    client(uri).log_figure(run_id, fig, name)


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store, bound to the loopback address."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"


def sweep_runs(uri: str, experiment_name: str, sweep_id: str) -> list[Any]:
    c = client(uri)
    exp = c.get_experiment_by_name(experiment_name)
    if exp is None:
        return []
    return c.search_runs([exp.experiment_id], filter_string=f"tags.{S.TAG_SWEEP} = '{sweep_id}'", max_results=50000)


__all__ = [
    "config_hash",
    "end_run",
    "ensure_experiment",
    "find_finished",
    "flatten",
    "git_commit",
    "log_dict",
    "log_files",
    "log_metrics",
    "log_figure",
    "log_text",
    "start_run",
    "sweep_runs",
    "ui_command",
]

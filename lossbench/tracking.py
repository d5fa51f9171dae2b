"""MLflow: the store, the experiment, one run per job, and what each run records.

The store and the experiment are created once, by the process that starts a job or a
sweep, before any worker exists: several processes creating a fresh SQLite store or
the same experiment at once corrupt the store or misfile runs.

Over 500 lines on purpose: every write to MLflow goes through here (the store, the
experiment, the one Run object per open run, parent runs, context tags, stuck runs); the
report and the API only read (the report benchmark writes its synthetic store directly).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import schema as S
from .errors import TrackingError, path_blocker

log = logging.getLogger(__name__)

# MLflow 3's usage telemetry, where it cannot reach its home (no internet), turns itself off from a
# thread by deleting an environment variable; a request to a tracking server copying the environment
# at that moment fails with KeyError '_MLFLOW_TELEMETRY_SESSION_ID' (seen: 1 log_batch in 320 runs).
# Off unless the user turns it on; before mlflow is imported by anything of ours.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# config keys that say how a job runs, not what it computes: left out of the config hash
_NOT_HASHED = ("tracking", "engine", "hydra", "trainer.enable_progress_bar", "trainer.devices", "debug", "sweep_id")


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not os.environ.get("LOSSBENCH_DEBUG"):  # it logs every database error with its traceback; ours say it in a line
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
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


_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}


def _check_reachable(uri: str, timeout: float = 3.0) -> None:
    """A store that does not answer fails within seconds (a database URI retried for minutes)."""
    if not uri.strip():
        raise TrackingError(
            "tracking.uri is empty. Drop it to use the embedded store (sqlite:///mlflow.db), or give one "
            "such as sqlite:///path/mlflow.db or http://127.0.0.1:5000."
        )
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.split("+")[0]  # postgresql+psycopg2
    if scheme not in _PORTS:
        return
    host = parsed.hostname or "localhost"
    port = parsed.port or _PORTS[scheme]
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        what = "MLflow tracking server" if scheme.startswith("http") else f"{scheme} database"
        start = (
            f"`mlflow server --host 127.0.0.1 --port {port} --backend-store-uri sqlite:///mlflow.db`"
            if scheme.startswith("http") else "the database server"
        )
        raise TrackingError(
            f"The {what} at {host}:{port} does not answer ({exc.strerror or exc}). Start {start}, "
            f"fix tracking.uri, or drop tracking.uri to use the embedded SQLite store. Nothing was trained."
        ) from None


def sqlite_path(uri: str) -> Path | None:
    """The file of an ``sqlite:///`` URI, without its query string (``?timeout=30``); None for any other store."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :].split("?", 1)[0])
    return None


def removed_store_message(uri: str) -> str | None:
    """If the SQLite file behind ``uri`` is gone (deleted while a run wrote to it), the one line that
    says so; else None. Nothing more of the run can be recorded then, and no write is worth retrying."""
    path = sqlite_path(uri)
    if path is None or path.name == ":memory:" or path.exists():
        return None
    return (f"the MLflow store {path.resolve()} was removed while the run was in progress, so the run's record is "
            f"lost. Restore the store from a backup, or run again to log into a new one.")


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
    path = sqlite_path(uri)
    if path is not None and path.name != ":memory:":
        _check_writable(uri, path)
    if path is not None and path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        if path is not None and path.name != ":memory:":
            held.enter_context(_store_lock(path))
        return _ensure_experiment(uri, experiment_name)


def _check_writable(uri: str, db: Path) -> None:
    """Before any run exists: a SQLite store must be a file (or not yet exist) under folders, and both the
    file and its folder (where SQLite writes its journal) writable by this process."""
    fix = "Point tracking.uri at a store you can write, e.g. tracking.uri=sqlite:///mlflow.db. Nothing was trained."
    where = db.resolve()
    if where.is_dir():
        raise TrackingError(f"The MLflow store at {uri} is a folder, not a file: {where}. {fix}")
    kind, probe = path_blocker(where, file=True) or ("", where)
    if kind == "file":
        raise TrackingError(f"The MLflow store at {uri} cannot be made: {probe} is a file, not a folder. {fix}")
    if kind and probe == where:
        raise TrackingError(f"The MLflow store {where} is read-only for this user. Make it writable "
                            f"(chmod u+w), or: {fix}")
    if kind:
        raise TrackingError(f"The MLflow store {where} cannot be written: its folder {probe} is read-only for this "
                            f"user (SQLite writes its journal there). Make it writable, or: {fix}")


@contextlib.contextmanager
def _store_lock(db: Path) -> Iterator[None]:
    """Hold ``<db>.lock`` exclusively (``flock``) while a SQLite store is created or read.

    MLflow builds a fresh store by running its schema migrations; two processes doing so at
    once on one new file fail with "table ... already exists" or a migration error. With
    the lock, the second waits for the first and finds the store ready. Where no lock can
    be taken (no ``fcntl``, a read-only folder), it goes on without one.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = None
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):  # flock works on a read-only descriptor too
        with contextlib.suppress(OSError):
            fd = os.open(f"{db}.lock", flags, 0o644)
            break
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _artifact_location(uri: str, experiment_name: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: ``mlruns/<name>-<hash>`` beside the store,
    so that they go with it whichever folder a run starts in (MLflow's default is ``./mlruns/<id>`` of the
    folder the process started in). None, MLflow's choice, for any other store."""
    db = sqlite_path(uri)
    if db is None or db.name == ":memory:":
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment_name)[:80]
    digest = hashlib.sha1(f"{db.name}/{experiment_name}".encode()).hexdigest()[:8]  # two stores in a folder: apart
    return str(db.resolve().parent / "mlruns" / f"{safe}-{digest}")


def _ensure_experiment(uri: str, experiment_name: str) -> str:
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
            return c.create_experiment(experiment_name, artifact_location=_artifact_location(uri, experiment_name))
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


def owner() -> str:
    """``host:pid`` of this process, tagged on the runs it trains."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host still runs (a zombie has ended; where it cannot tell: yes)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        pass
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return not os.path.isdir("/proc")  # with /proc, a pid it does not list has ended


def owner_gone(tag: str | None) -> bool | None:
    """Whether the process named by an owner tag has ended: None when it ran on another host."""
    host, _, pid = (tag or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    return not pid_alive(int(pid))


def filter_value(s: str) -> str:
    """A string quoted for an MLflow filter (double quotes when it holds a single one)."""
    return f'"{s}"' if "'" in s else f"'{s}'"


def settle_stuck(uri: str, runs: Sequence[Any]) -> list[Any]:
    """End KILLED the RUNNING runs among ``runs`` whose process on this host is gone."""
    settled = []
    for r in runs:
        tag = r.data.tags.get(S.TAG_OWNER)
        if r.info.status == "RUNNING" and owner_gone(tag):
            Run(uri, r.info.run_id).end("KILLED", {S.TAG_SETTLED: f"its process {tag} ended without ending it"})
            settled.append(r)
    return settled


@functools.lru_cache(maxsize=1)
def context_tags() -> dict[str, str]:
    """MLflow's standard context tags (user, source, git commit), as its fluent API sets them."""
    import getpass
    import sys

    from mlflow.utils import mlflow_tags as T

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        user = "unknown"
    tags = {T.MLFLOW_USER: user, T.MLFLOW_SOURCE_NAME: Path(sys.argv[0]).name or "lossbench", T.MLFLOW_SOURCE_TYPE: "LOCAL"}
    commit = git_commit()
    if commit:
        tags[T.MLFLOW_GIT_COMMIT] = commit
    return tags


_PARENTS: dict[tuple[str, str, str, str], str] = {}


def parent_run(uri: str, experiment_id: str, kind: str, key: str, name: str, *, create: bool) -> str | None:
    """The run that folds a sweep's (``kind="sweep"``, ``key`` its sweep id) or a study's runs in
    MLflow's UI: found by its tags, or created RUNNING when ``create``. Cached per process."""
    k = (uri, experiment_id, kind, key)
    if k not in _PARENTS:
        tag = S.TAG_SWEEP if kind == "sweep" else S.TAG_STUDY
        found = client(uri).search_runs(
            [experiment_id], filter_string=f"tags.{S.TAG_KIND} = '{kind}' and tags.{tag} = {filter_value(key)}",
            max_results=1,
        )
        if found:
            _PARENTS[k] = found[0].info.run_id
        elif create:
            _PARENTS[k] = Run.start(uri, experiment_id, name, {S.TAG_KIND: kind, tag: key, S.TAG_OWNER: owner()}, {}).run_id
        else:
            return None
    return _PARENTS[k]


@functools.lru_cache(maxsize=64)
def sweep_parent(uri: str, experiment_name: str, sweep_id: str) -> str | None:
    """The id of a sweep's parent run (made by the sweep's process before any job), if any."""
    return parent_run(uri, ensure_experiment(uri, experiment_name), "sweep", sweep_id, "", create=False)


def runs_of_config(uri: str, experiment_id: str, chash: str) -> list[Any]:
    """The runs of one config hash in the experiment, any status (FINISHED first)."""
    runs = client(uri).search_runs([experiment_id], filter_string=f"tags.{S.TAG_CONFIG_HASH} = '{chash}'", max_results=1000)
    return sorted(runs, key=lambda r: r.info.status != "FINISHED")


_HELD: list[int] = []  # signals that arrived while a store write was open
_DEPTH = [0]


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a store write is open, and deliver them after it.

    A KeyboardInterrupt raised inside MLflow's SQLAlchemy write is not rolled back (it
    catches ``Exception`` only), so the pooled connection keeps SQLite's write lock and
    every later write, the run's end included, fails with "database is locked".
    """
    if _DEPTH[0] or threading.current_thread() is not threading.main_thread():
        _DEPTH[0] += 1
        try:
            yield
        finally:
            _DEPTH[0] -= 1
        return
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler is not None:  # None: installed outside Python, left alone
            old[sig] = signal.signal(sig, lambda signum, frame: _HELD.append(signum))
    _DEPTH[0] += 1
    try:
        yield
    finally:
        _DEPTH[0] -= 1
        for sig, handler in old.items():
            signal.signal(sig, handler)
        held = list(dict.fromkeys(_HELD))
        _HELD.clear()
        for sig in held:  # now, to whatever handles it outside the write
            signal.raise_signal(sig)


def _deferring(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with signals_deferred():
            return method(*args, **kwargs)

    return wrapped


def metrics_at(rows: Sequence[tuple[int, Mapping[str, float]]]) -> list[Any]:
    """MLflow metrics from ``(step, {key: value})`` rows, all stamped now."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, int(step)) for step, row in rows for k, v in row.items()]


class Run:
    """One open MLflow run: created once, it logs metrics and artifacts, then ends with one status.

    It holds its store's client and its artifact location, so no write looks either up
    again. The first :meth:`end` wins: whoever ends a run later (a Ctrl-C handler after a
    failure was recorded, say) leaves the recorded status alone.
    """

    def __init__(self, uri: str, run_id: str, artifact_uri: str | None = None) -> None:
        self.uri, self.run_id, self.artifact_uri = uri, run_id, artifact_uri
        self.status: str | None = None  # set by end()
        self._client = client(uri)
        self._monitor: SystemMetrics | None = None

    @classmethod
    @_deferring
    def start(
        cls, uri: str, experiment_id: str, name: str, tags: Mapping[str, Any], params: Mapping[str, Any],
        *, system_metrics: bool | None = None,
    ) -> Run:
        """Create a RUNNING run with its tags and params.

        ``system_metrics`` (None: the run's ``tracking.system_metrics`` param) also records
        MLflow's ``system/*`` metrics (CPU, memory, disk, network, GPU) until :meth:`end`.
        """
        from mlflow.entities import Param

        if system_metrics is None:
            system_metrics = _truthy(params.get(SYSTEM_METRICS_KEY))
        if system_metrics:
            check_system_metrics()  # before the run exists
        c = client(uri)
        tags = {**context_tags(), **{k: str(v) for k, v in tags.items() if v is not None}}
        info = c.create_run(experiment_id, run_name=name, tags=tags).info
        run = cls(uri, info.run_id, info.artifact_uri)
        items = [Param(k, _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit for params
            c.log_batch(run.run_id, params=items[i : i + 100])
        if system_metrics:
            run._monitor = SystemMetrics(uri, run.run_id)
        return run

    @_deferring
    def log_metrics(self, metrics: Sequence[Any], *, tags: Mapping[str, Any] | None = None) -> None:
        """MLflow metrics (and tags, with the first batch) in as few batches as MLflow allows."""
        from mlflow.entities import RunTag

        items, tag_items = list(metrics), [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, max(len(items), 1), 1000):  # MLflow's batch limit
            chunk = items[i : i + 1000]
            if chunk or tag_items:
                self._client.log_batch(self.run_id, metrics=chunk, tags=tag_items)
                tag_items = []

    @_deferring
    def log_files(self, files: Mapping[str, Any]) -> None:
        """Small artifacts in one upload: text as is, anything else as JSON."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="lossbench-") as tmp:
            for name, content in files.items():
                text = content if isinstance(content, str) else json.dumps(content, indent=2, default=str)
                (Path(tmp) / name).write_text(text)
            if self.artifact_uri and self.artifact_uri.startswith(("file:", "/")):
                # straight to the artifact folder: asking the tracking store where it is reads the whole run
                from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

                get_artifact_repository(self.artifact_uri).log_artifacts(tmp)
            else:
                self._client.log_artifacts(self.run_id, tmp)

    @_deferring
    def log_figure(self, fig: Any, name: str) -> None:
        self._client.log_figure(self.run_id, fig, name)

    @_deferring
    def end(
        self,
        status: str,
        tags: Mapping[str, Any] | None = None,
        *,
        metrics: Sequence[Any] = (),
        artifacts: Mapping[str, Any] | None = None,
    ) -> None:
        """Its last metrics and tags in one batch, its artifacts in one upload, then its status."""
        if self.status is not None:
            return
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
        self.log_metrics(metrics, tags=tags)
        if artifacts:
            self.log_files(artifacts)
        self._client.set_terminated(self.run_id, status)
        self.status = status


SYSTEM_METRICS_KEY = "tracking.system_metrics"


def _truthy(v: Any) -> bool:
    return v is True or str(v).strip().lower() in ("true", "1", "yes")


def check_system_metrics() -> None:
    """``tracking.system_metrics=true`` needs psutil (MLflow samples the machine with it): say so
    before anything trains."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        raise TrackingError(
            "tracking.system_metrics=true needs psutil, which is not installed. Install it with "
            "`pip install psutil` (or `pip install 'lossbench[cluster]'`), or drop tracking.system_metrics. "
            "Nothing was trained."
        ) from None


class SystemMetrics:
    """MLflow's SystemMetricsMonitor on one run: ``system/*`` metrics, sampled every
    ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds (MLflow's default 10) in a thread.

    MLflow's monitor drops the samples it took since its last logging step when the run ends
    (a run shorter than one interval logs nothing), so :meth:`stop` takes one last sample and
    logs what is pending. A failure here is logged, never fails the run.
    """

    def __init__(self, uri: str, run_id: str) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self.monitor = SystemMetricsMonitor(run_id, tracking_uri=uri)
        self.monitor.start()

    def stop(self) -> None:
        m = self.monitor
        try:
            m.finish()
            m.collect_metrics()
            m.publish_metrics(m.aggregate_metrics())
            m.mlflow_logger.flush()
        except Exception as exc:  # noqa: BLE001 - the run's own record matters more
            log.warning(f"system metrics of run {m._run_id} not fully recorded: {type(exc).__name__}: {exc}")


def _param_str(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, list | dict) else str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


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
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.{S.TAG_SWEEP} = {filter_value(sweep_id)}",
                       max_results=50000)
    return [r for r in runs if S.TAG_KIND not in r.data.tags]  # the jobs' runs, not the sweep's parent


__all__ = [
    "Run",
    "SystemMetrics",
    "check_system_metrics",
    "client",
    "config_hash",
    "context_tags",
    "parent_run",
    "sweep_parent",
    "ensure_experiment",
    "owner",
    "owner_gone",
    "pid_alive",
    "runs_of_config",
    "settle_stuck",
    "sqlite_path",
    "filter_value",
    "flatten",
    "git_commit",
    "metrics_at",
    "signals_deferred",
    "sweep_runs",
    "ui_command",
]

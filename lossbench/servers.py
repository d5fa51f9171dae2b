"""A throwaway PostgreSQL and an MLflow tracking server on it, started and stopped from Python.

Used by the tests that need a real server and by ``python -m lossbench.benchmark store``::

    from lossbench.servers import postgres, mlflow_server

    with postgres() as pg:                                   # PostgreSQL 15 in a temp folder
        with mlflow_server(pg.uri(), artifacts=tmp / "artifacts") as srv:
            ...  # tracking.uri=srv.url  (http://127.0.0.1:<port>)

Both bind 127.0.0.1 on a free port and are gone when the ``with`` block ends, however it
ends: PostgreSQL by ``pg_ctl stop`` (then ``-m immediate``, then a signal to the postmaster),
the MLflow server by signalling its own process group (SIGTERM, then SIGKILL), so its
workers go with it. An ``atexit`` hook stops whatever a crashed caller left behind.

PostgreSQL: ``initdb`` refuses to run as root, so as root the cluster is made and run as
the ``postgres`` user, in a folder under the system temp folder chowned to it (a pytest
``tmp_path`` under ``/tmp/pytest-of-root`` is not reachable by that user). Trust
authentication, user ``postgres``, and a database ``mlflow`` made empty for MLflow's
migrations. :func:`postgres_missing` says why it cannot run here (no ``initdb``), or None.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LossbenchError
from .tracking import pid_alive  # imports neither mlflow nor torch

HOST = "127.0.0.1"

# MLflow 3 answers 403 "Invalid Host header" unless the request's Host header matches one of
# these (its own default, which --allowed-hosts replaces rather than extends).
MLFLOW_DEFAULT_HOSTS = ("localhost", "127.0.0.1", "[::1]", "0.0.0.0", "localhost:*", "127.0.0.1:*",
                        "[[]::1]:*", "0.0.0.0:*", "10.*", "192.168.*", *(f"172.{i}.*" for i in range(16, 32)))


WORKER_HEALTHCHECK_S = 120  # uvicorn's --timeout-worker-healthcheck for the server's workers (its default: 5)


class ServerError(LossbenchError):
    """A server this module starts did not come up (the message says why, with its log's tail)."""


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


# ----------------------------------------------------------------------------- PostgreSQL
def pg_bin(name: str) -> str | None:
    """The path of PostgreSQL's ``name`` (``initdb``, ``pg_ctl``): on PATH, else the newest under
    /usr/lib/postgresql/*/bin (Debian's layout); None when absent."""
    found = shutil.which(name)
    if found:
        return found
    def version(path: str) -> int:
        v = Path(path).parent.parent.name
        return int(v) if v.isdigit() else 0

    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version)
    return cands[-1] if cands else None


def postgres_missing() -> str | None:
    """Why a PostgreSQL cannot be started here (no initdb/pg_ctl, root without a postgres user), or None."""
    for name in ("initdb", "pg_ctl"):
        if pg_bin(name) is None:
            return f"PostgreSQL's {name} is not installed (apt-get install postgresql, or put its bin/ on PATH)"
    if os.name != "posix":
        return "starting PostgreSQL here is written for Linux/macOS"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root (initdb refuses root) and there is no 'postgres' user to run it as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "no PostgreSQL driver: pip install 'psycopg[binary]' (or: pip install 'lossbench[cluster]')"
    return None


@dataclass
class Postgres:
    """A running PostgreSQL: ``uri()`` is the SQLAlchemy URI of its ``mlflow`` database."""

    root: Path  # the temp folder: data/, the socket, server.log
    port: int
    host: str = HOST
    user: str = "postgres"
    database: str = "mlflow"
    _as: dict = field(default_factory=dict, repr=False)  # subprocess kwargs that run as the postgres user
    stopped_pid: int | None = field(default=None, repr=False)  # the postmaster :meth:`stop` stopped

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def uri(self, driver: str = "psycopg", database: str | None = None) -> str:
        """``postgresql+psycopg://postgres@127.0.0.1:<port>/mlflow``, as MLflow's --backend-store-uri takes it."""
        return f"postgresql+{driver}://{self.user}@{self.host}:{self.port}/{database or self.database}"

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://{self.user}@{self.host}:{self.port}/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the server (fast, then immediate, then SIGKILL) and remove its folder."""
        pg_ctl = pg_bin("pg_ctl")
        pid = self.stopped_pid = self.postmaster_pid()
        if pid is not None and pg_ctl:
            for mode in ("fast", "immediate"):
                with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                    r = subprocess.run([pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "20", "stop"],
                                       capture_output=True, timeout=30, **self._as)
                    if r.returncode == 0:
                        break
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 10)
        shutil.rmtree(self.root, ignore_errors=True)


def _as_postgres_user(root: Path) -> dict:
    """subprocess kwargs that run a PostgreSQL tool as the ``postgres`` user when we are root."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    if os.geteuid() != 0:
        return {"env": env}
    import pwd

    pw = pwd.getpwnam("postgres")
    os.chown(root, pw.pw_uid, pw.pw_gid)
    return {"env": env, "user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def start_postgres(*, port: int | None = None, database: str = "mlflow", timeout: float = 60) -> Postgres:
    """Make a cluster in a fresh temp folder, start it on 127.0.0.1:<port> and create ``database``.

    Prefer the :func:`postgres` context manager; whoever calls this calls ``.stop()``.
    """
    missing = postgres_missing()
    if missing:
        raise ServerError(f"Cannot start PostgreSQL: {missing}.")
    # short: the Unix socket's path (<root>/.s.PGSQL.<port>) must fit in 107 bytes
    root = Path(tempfile.mkdtemp(prefix="lbpg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    kw = _as_postgres_user(root)
    pg = Postgres(root=root, port=port or free_port(), database=database, _as=kw)
    _LIVE.append(pg)
    try:
        r = subprocess.run([pg_bin("initdb"), "-D", str(pg.data), "-A", "trust", "-U", pg.user, "-E", "UTF8",
                            "--no-sync"], capture_output=True, text=True, timeout=timeout, **kw)
        if r.returncode != 0:
            raise ServerError(f"initdb failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-2000:]}")
        opts = f"-p {pg.port} -k {root} -c listen_addresses={pg.host}"
        r = subprocess.run([pg_bin("pg_ctl"), "-D", str(pg.data), "-l", str(pg.log), "-o", opts, "-w",
                            "-t", str(int(timeout)), "start"], capture_output=True, text=True, timeout=timeout + 10,
                           **kw)
        if r.returncode != 0:
            raise ServerError(f"pg_ctl start failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-1000:]}"
                              f"\n--- {pg.log} ---\n{_tail(pg.log)}")
        pg.create_database(database)
    except BaseException:
        _stop(pg)
        raise
    return pg


def _stop(item: Postgres | MlflowServer) -> None:
    """Stop a server this module started and forget it."""
    try:
        item.stop()
    finally:
        with contextlib.suppress(ValueError):
            _LIVE.remove(item)


@contextlib.contextmanager
def postgres(*, port: int | None = None, database: str = "mlflow") -> Iterator[Postgres]:
    """A PostgreSQL 15 for the ``with`` block (see :func:`start_postgres`); stopped and removed after it."""
    pg = start_postgres(port=port, database=database)
    try:
        yield pg
    finally:
        _stop(pg)


# ----------------------------------------------------------------------------- MLflow server
def allowed_hosts(*names: str) -> list[str]:
    """MLflow's default allowed Host headers plus ``names`` with any port (``name`` and ``name:*``),
    for ``--allowed-hosts``: what workers that address the server as ``http://<name>:<port>`` need."""
    extra = [h for n in names for h in (n, f"{n}:*")]
    return list(dict.fromkeys([*MLFLOW_DEFAULT_HOSTS, *extra]))


@dataclass
class MlflowServer:
    """A running ``mlflow server``: ``url`` is its tracking URI, ``http://127.0.0.1:<port>``."""

    proc: subprocess.Popen
    port: int
    host: str
    log: Path
    argv: list[str]
    pg: Postgres | None = None  # the database under it, where one of ours is

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM to its process group (the server and its workers), SIGKILL what is left after 10 s."""
        pgid = self.proc.pid  # start_new_session: the group's id is the leader's pid
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.proc.poll()
                if not _group_alive(pgid):
                    break
                time.sleep(0.1)
            else:
                continue
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def _mlflow_argv() -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]


def start_mlflow_server(
    backend_uri: str,
    artifacts: str | Path,
    *,
    port: int | None = None,
    host: str = HOST,
    workers: int = 2,
    proxy_artifacts: bool = False,
    hosts: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 240,
    log: str | Path | None = None,
) -> MlflowServer:
    """Start ``mlflow server`` in its own process group and wait until ``/health`` answers.

    ``artifacts``: a folder; with ``proxy_artifacts=False`` it is ``--default-artifact-root``
    (clients write run artifacts straight into it, so they must see the same path), with True
    ``--artifacts-destination`` (clients upload through the server over HTTP).
    ``hosts``: the ``--allowed-hosts`` list (see :func:`allowed_hosts`); None keeps MLflow's
    default (localhost, 127.0.0.1 and private IPs, any port). ``env`` is added to the server's
    environment (e.g. ``MLFLOW_SQLALCHEMYSTORE_POOLCLASS=NullPool``). Prefer :func:`mlflow_server`.
    """
    port = port or free_port(host)
    artifacts = Path(artifacts).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    log_path = Path(log) if log else artifacts.parent / f"mlflow-server-{port}.log"
    argv = [*_mlflow_argv(), "server", "--backend-store-uri", backend_uri, "--host", host, "--port", str(port),
            "--workers", str(workers)]
    argv += ["--artifacts-destination", str(artifacts)] if proxy_artifacts else \
        ["--default-artifact-root", str(artifacts)]
    if hosts is not None:
        argv += ["--allowed-hosts", ",".join(hosts)]
    if workers > 1:
        # uvicorn's supervisor gives a worker 5 s to answer its health check, then kills and restarts it:
        # on a busy machine a worker still importing MLflow never answers in time and the server never
        # comes up (an endless "Child process died" loop)
        argv += ["--uvicorn-opts", f"--timeout-worker-healthcheck {WORKER_HEALTHCHECK_S}"]
    # MLFLOW_DISABLE_TELEMETRY is in os.environ already: importing .tracking set it, unless the user did
    full_env = {**os.environ, "GIT_PYTHON_REFRESH": "quiet", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=full_env, start_new_session=True)
    srv = MlflowServer(proc=proc, port=port, host=host, log=log_path, argv=argv)
    _LIVE.append(srv)
    try:
        _wait_healthy(srv, timeout)
    except BaseException:
        _stop(srv)
        raise
    return srv


def _wait_healthy(srv: MlflowServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if srv.proc.poll() is not None:
            raise ServerError(f"mlflow server exited with status {srv.proc.returncode} before answering:\n"
                              f"{_tail(srv.log)}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(f"{srv.url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        if time.monotonic() > deadline:
            raise ServerError(f"mlflow server did not answer {srv.url}/health within {timeout:.0f} s:\n"
                              f"{_tail(srv.log)}")
        time.sleep(0.25)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: str | Path, **kwargs) -> Iterator[MlflowServer]:
    """An MLflow tracking server for the ``with`` block (arguments: :func:`start_mlflow_server`)."""
    srv = start_mlflow_server(backend_uri, artifacts, **kwargs)
    try:
        yield srv
    finally:
        _stop(srv)


@contextlib.contextmanager
def postgres_mlflow_server(artifacts: str | Path, **kwargs) -> Iterator[tuple[Postgres, MlflowServer]]:
    """PostgreSQL, and an MLflow server on its ``mlflow`` database, for the ``with`` block."""
    with postgres() as pg, mlflow_server(pg.uri(), artifacts, **kwargs) as srv:
        srv.pg = pg
        yield pg, srv


# ----------------------------------------------------------------------------- processes
def _group_alive(pgid: int) -> bool:
    """Whether any process but a zombie is left in group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc"):
        return True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state ppid pgrp ...
            return True
    return False


def _wait_gone(pid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


_LIVE: list[Postgres | MlflowServer] = []


@atexit.register
def _stop_all() -> None:
    """Whatever a caller started and never stopped (servers first, then their databases)."""
    for item in sorted(_LIVE, key=lambda x: isinstance(x, Postgres)):
        with contextlib.suppress(Exception):
            _stop(item)


__all__ = [
    "MlflowServer", "Postgres", "ServerError", "allowed_hosts", "free_port", "mlflow_server", "pg_bin",
    "postgres", "postgres_missing", "postgres_mlflow_server", "start_mlflow_server", "start_postgres",
]

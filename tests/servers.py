"""A real PostgreSQL and a real MLflow server on it, for tests (import this module; it is no conftest).

Usage in a test module (``tests/`` is on ``sys.path`` under pytest, so ``import servers`` works)::

    import pytest
    from servers import mlflow_pg_server, pg_server  # noqa: F401  (pytest fixtures)

    pytestmark = pytest.mark.slow

    def test_x(mlflow_pg_server):
        uri = mlflow_pg_server.url              # "http://127.0.0.1:<port>": tracking.uri=...
        # mlflow_pg_server.port, .pid (its process group), .log; .pg is the Postgres under it:
        # .pg.uri() == "postgresql+psycopg://postgres@127.0.0.1:<port>/mlflow"

Or without pytest fixtures, as context managers (any scope you like)::

    from servers import postgres, mlflow_server, allowed_hosts, require_postgres

    require_postgres()                          # pytest.skip with the reason when it cannot run here
    with postgres() as pg, mlflow_server(pg.uri(), tmp_path / "artifacts",
                                         hosts=allowed_hosts(socket.gethostname())) as srv:
        ...

What you get:

- ``pg_server`` (module scope): PostgreSQL 15 on 127.0.0.1:<free port>, trust auth, user
  ``postgres``, an empty database ``mlflow``; a :class:`lossbench.servers.Postgres`.
- ``mlflow_pg_server`` (module scope): ``mlflow server --backend-store-uri <pg.uri()>
  --default-artifact-root <tmp>/artifacts --host 127.0.0.1 --port <free port> --workers 2
  --allowed-hosts <MLflow's defaults + this machine's host name>``, started in its own
  process group and waited for on ``/health`` (45-75 s on a busy 2-core machine); a
  :class:`lossbench.servers.MlflowServer` with ``.pg`` set. Workers may address it as
  127.0.0.1, localhost or ``socket.gethostname()`` (MLflow 3 answers 403 "Invalid Host
  header" to any other name: pass ``hosts=allowed_hosts(name, ...)`` to your own server).
- Both are stopped when the module's tests end, pass or fail: the server by signalling its
  process group (SIGTERM, then SIGKILL), PostgreSQL by ``pg_ctl stop`` (fast, immediate,
  then SIGKILL), and its temp folder removed. :func:`group_alive` checks a group is gone.
- Skipped, with the reason, only where PostgreSQL's ``initdb``/``pg_ctl`` or the psycopg
  driver is missing (``lossbench.servers.postgres_missing``).

The start/stop code lives in :mod:`lossbench.servers` (the store benchmark uses it too).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from lossbench.servers import (  # noqa: F401  (re-exported for tests)
    MlflowServer,
    Postgres,
    _group_alive,
    allowed_hosts,
    free_port,
    mlflow_server,
    postgres,
    postgres_missing,
    postgres_mlflow_server,
)
from lossbench.tracking import pid_alive


def require_postgres() -> None:
    """Skip the calling test, with the reason, where a PostgreSQL cannot be started here."""
    missing = postgres_missing()
    if missing:
        pytest.skip(f"needs a local PostgreSQL: {missing}")


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in process group ``pgid``."""
    return _group_alive(pgid)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Postgres]:
    """PostgreSQL 15 with an empty ``mlflow`` database, for this test module."""
    require_postgres()
    with postgres() as pg:
        yield pg
    assert_stopped(pg)


@pytest.fixture(scope="module")
def mlflow_pg_server(pg_server: Postgres, tmp_path_factory) -> Iterator[MlflowServer]:
    """An MLflow server on ``pg_server``, for this test module; ``.url`` is the tracking URI."""
    art = tmp_path_factory.mktemp("mlflow-server") / "artifacts"
    with mlflow_server(pg_server.uri(), art, hosts=allowed_hosts(socket.gethostname())) as srv:
        srv.pg = pg_server
        yield srv
    assert_stopped(srv)


def assert_stopped(what: Postgres | MlflowServer) -> None:
    """Fail (at teardown) if a stopped server left a process, or PostgreSQL its folder, behind."""
    if isinstance(what, MlflowServer):
        assert not group_alive(what.pid), f"the MLflow server's process group {what.pid} outlived its stop"
    else:
        assert not what.root.exists(), f"PostgreSQL's folder {what.root} outlived its stop"
        pid = what.stopped_pid
        assert pid is None or not pid_alive(pid), f"PostgreSQL's postmaster {pid} outlived its stop"

"""Shared fixtures: real Hydra composition and one real MLflow store per test session."""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
warnings.filterwarnings("ignore", message=r".*Filesystem tracking backend.*")

# A background job of a non-interactive shell (`pytest &` in a script) starts with SIGINT
# ignored, and every child it starts inherits that: the Ctrl-C tests would then press a key
# nobody hears (seen: five of them failed, children never stopping). Ctrl-C as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """A real SQLite MLflow store, created once (its schema migration takes seconds)."""
    from lossbench import tracking

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{path}"
    tracking.ensure_experiment(uri, "warmup")
    return uri


@pytest.fixture
def compose(mlflow_uri, request) -> Callable[..., object]:
    """compose(*overrides) -> the resolved train config, tracked in the session store.

    Each test gets its own experiment, named after the test.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lossbench.configs import CONFIG_DIR

    experiment = request.node.name.replace("[", "-").replace("]", "")[:200]

    def _compose(*overrides: str, experiment_name: str | None = None):
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            return hydra_compose(
                "train",
                overrides=[
                    f"tracking.uri={mlflow_uri}",
                    f"tracking.experiment_name={experiment_name or experiment}",
                    "trainer.enable_progress_bar=false",
                    "trainer.accelerator=cpu",
                    *overrides,
                ],
            )

    return _compose


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _wait_until_training(uri: str, experiment: str, proc, n: int = 1, timeout: float = 240) -> list[str]:
    """Poll the store until ``n`` runs are RUNNING and have logged their first epoch; their ids.

    Reads the SQLite file read-only with sqlite3: an MLflow client here would run the
    schema migration while the child is still creating the store, the very race that
    corrupts fresh stores.
    """
    import sqlite3
    import time

    deadline = time.time() + timeout
    db = Path(uri[len("sqlite:///") :])
    query = (
        "select distinct r.run_uuid from runs r join experiments e on r.experiment_id = e.experiment_id "
        "join latest_metrics m on m.run_uuid = r.run_uuid "
        "where e.name = ? and r.status = 'RUNNING' and m.key = 'train_loss'"
    )
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                    rows = [r[0] for r in con.execute(query, (experiment,)).fetchall()]
                if len(rows) >= n:
                    return rows
            except sqlite3.Error:  # tables not created yet, or locked by the child
                pass
        time.sleep(0.5)
    raise AssertionError("training never started")


@pytest.fixture
def wait_until_training() -> Callable[..., list[str]]:
    """wait_until_training(uri, experiment, proc, n=1) -> the ids of n runs training in the child."""
    return _wait_until_training

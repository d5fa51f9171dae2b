"""Shared fixtures: real Hydra composition and one real MLflow store per test session."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
warnings.filterwarnings("ignore", message=r".*Filesystem tracking backend.*")


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

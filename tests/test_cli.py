"""`python -m lossbench` as a user runs it: a fresh process in an empty directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lossbench import schema as S
from lossbench import tracking


def lossbench(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "lossbench", *args], cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout
    )


NOISE = ("Tip:", "GPU available", "TPU available", "LitLogger", "Traceback", "UserWarning", "PossibleUserWarning")


def test_mission_example_runs_from_an_empty_directory(tmp_path):
    r = lossbench("loss=focal", "data=imbalanced", "data.n_max=100", "trainer.max_epochs=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert (tmp_path / "mlflow.db").exists()  # the embedded default store, no server
    assert "test_balanced_accuracy" in r.stdout
    assert "focal-imbalanced-s0" in r.stdout
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1" in r.stdout.replace("\n", " ")
    for noise in NOISE:
        assert noise not in out, f"noisy output: {noise!r}\n{out[-2000:]}"
    runs = tracking.client("sqlite:///" + str(tmp_path / "mlflow.db")).search_runs(
        [tracking.client("sqlite:///" + str(tmp_path / "mlflow.db")).get_experiment_by_name("lossbench").experiment_id]
    )
    assert [r.info.status for r in runs] == ["FINISHED"]


def test_tracking_uri_comes_from_the_environment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    r = lossbench("--cfg", "job", "--resolve", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    assert r.returncode == 0, r.stderr
    assert f"uri: {uri}" in r.stdout


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--help"], ["loss: ", "balanced_softmax", "data: ", "regression_outliers", "lossbench: train"]),
        (["--cfg", "job", "loss=huber", "loss.delta=2.5", "data=regression_outliers"], ["name: huber", "delta: 2.5"]),
        (["--info"], ["Hydra", "Config search path"]),
    ],
    ids=["help", "cfg-job", "info"],
)
def test_hydra_flags_behave_as_hydra_users_expect(tmp_path, args, expected):
    r = lossbench(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for text in expected:
        assert text in r.stdout
    assert not (tmp_path / "mlflow.db").exists()


def test_a_sweep_logs_every_job_with_one_sweep_id_and_summarises(tmp_path):
    r = lossbench(
        "-m", "loss=mse,l1", "data=regression_outliers", "data.n_samples=200", "model=linear", "trainer.max_epochs=1",
        "tracking.experiment_name=sweep", cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("] finished ") == 2
    assert "done: 2 finished, 0 diverged, 0 failed with an error" in r.stderr
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("sweep").experiment_id])
    assert sorted(r.data.tags[S.TAG_LOSS] for r in runs) == ["l1", "mse"]
    assert len({r.data.tags[S.TAG_SWEEP] for r in runs}) == 1

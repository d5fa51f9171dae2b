"""Hydra launchers: submitit's local launcher really runs a sweep; GPUs are shared out per job."""

from __future__ import annotations

import os
import subprocess
import sys

from omegaconf import OmegaConf

from lossbench import schema as S
from lossbench import tracking
from lossbench.__main__ import assign_gpu


def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = subprocess.run(
        [sys.executable, "-m", "lossbench", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
         "loss=mse,l1", "data=regression_outliers", "data.n_samples=150", "model=linear", "trainer.max_epochs=1",
         "tracking.experiment_name=submitit"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("submitit").experiment_id])
    assert sorted((x.data.tags[S.TAG_LOSS], x.info.status) for x in runs) == [("l1", "FINISHED"), ("mse", "FINISHED")]
    assert "done: 2 finished" in r.stderr


def _trainer(**kw):
    return OmegaConf.create({"trainer": {"accelerator": "auto", "devices": 1, **kw}})


def test_one_job_per_gpu_round_robin():
    picks = []
    for job in range(5):
        cfg = _trainer()
        assign_gpu(cfg, job, count=2)
        picks.append(list(cfg.trainer.devices))
    assert picks == [[0], [1], [0], [1], [0]]


def test_gpu_assignment_leaves_explicit_choices_alone():
    for kw, count in [({}, 1), ({}, 0), ({"devices": 4}, 8), ({"accelerator": "cpu"}, 4), ({"devices": [3]}, 4)]:
        cfg = _trainer(**kw)
        before = OmegaConf.to_container(cfg)
        assign_gpu(cfg, 3, count=count)
        assert OmegaConf.to_container(cfg) == before, kw

"""Hydra launchers: submitit's local launcher really runs a sweep; each job claims a free GPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from omegaconf import OmegaConf

from lossbench import schema as S
from lossbench import tracking
from lossbench.gpus import gpu_for_job


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = subprocess.run(
        [sys.executable, "-m", "lossbench", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
         "loss=mse,l1", "data=regression_outliers", "data.n_samples=150", "model=linear", "trainer.max_epochs=1",
         "tracking.experiment_name=submitit", "hydra.sweep.dir=out"],  # relative, one part
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    every = c.search_runs([c.get_experiment_by_name("submitit").experiment_id])
    runs = [x for x in every if S.TAG_KIND not in x.data.tags]
    assert sorted((x.data.tags[S.TAG_LOSS], x.info.status) for x in runs) == [("l1", "FINISHED"), ("mse", "FINISHED")]
    assert "done: 2 finished" in r.stderr
    # the workers got the sweep folder made absolute; their runs still find the driver's parent run
    (parent,) = [x for x in every if S.TAG_KIND in x.data.tags]
    assert {x.data.tags.get(S.TAG_PARENT) for x in runs} == {parent.info.run_id}
    assert {x.data.tags[S.TAG_SWEEP] for x in runs} == {f"{tmp_path.name}_out"}


def test_a_sweep_id_is_read_from_the_absolute_sweep_folder(tmp_path, monkeypatch):
    from lossbench.sweep import sweep_id_from_dir

    monkeypatch.chdir(tmp_path)
    assert sweep_id_from_dir("out") == sweep_id_from_dir(str(tmp_path / "out")) == f"{tmp_path.name}_out"
    assert sweep_id_from_dir("multirun/2026-12-07/12-00-00-ab12") == "2026-12-07_12-00-00-ab12"
    assert sweep_id_from_dir(str(tmp_path / "multirun" / "2026-12-07" / "12-00-00")) == "2026-12-07_12-00-00"


def _trainer(**kw):
    return OmegaConf.create({"trainer": {"accelerator": "auto", "devices": 1, **kw}})


def test_gpu_claims_leave_explicit_choices_and_single_gpu_machines_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSBENCH_GPU_LOCKS", str(tmp_path))
    for kw, count in [({}, 1), ({}, 0), ({"devices": 4}, 8), ({"accelerator": "cpu"}, 4), ({"devices": [3]}, 4)]:
        cfg = _trainer(**kw)
        before = OmegaConf.to_container(cfg)
        with gpu_for_job([cfg], 3, count=count) as index:
            assert index is None
        assert OmegaConf.to_container(cfg) == before, kw
    members = [_trainer(), _trainer()]
    with gpu_for_job(members, 3, count=4) as index:  # a group job's members share its GPU
        assert index == 3 and [list(m.trainer.devices) for m in members] == [[3], [3]]


_CLAIMER = """
import sys, time
from pathlib import Path
from lossbench.gpus import claim_gpu
folder, name = Path(sys.argv[1]), sys.argv[2]
with claim_gpu(2, first=0, folder=folder, poll=0.05) as i:
    (folder / f"{name}.got").write_text(str(i))
    while not (folder / f"release-{i}").exists():
        time.sleep(0.05)
"""


def test_a_job_takes_a_free_gpu_never_a_busy_one_and_waits_when_all_are_taken(tmp_path):
    import time

    def start(name):
        return subprocess.Popen([sys.executable, "-c", _CLAIMER, str(tmp_path), name])

    def got(name, timeout=60.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            f = tmp_path / f"{name}.got"
            if f.exists() and f.read_text():
                return int(f.read_text())
            time.sleep(0.05)
        return None

    procs = {}
    try:
        for name in ("a", "b"):  # both would be "GPU 0" by job number mod 2 if they were jobs 0 and 2
            procs[name] = start(name)
            assert got(name) is not None
        assert {got("a"), got("b")} == {0, 1}
        procs["c"] = start("c")
        assert got("c", timeout=2.0) is None  # every GPU is held: it waits
        (tmp_path / f"release-{got('b')}").write_text("")
        assert procs["b"].wait(timeout=60) == 0
        assert got("c") == got("b")  # the GPU b freed, not a's
        (tmp_path / f"release-{got('a')}").write_text("")
        assert procs["a"].wait(timeout=60) == 0 and procs["c"].wait(timeout=60) == 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()


def test_runs_are_packed_into_jobs_of_runs_per_job():
    from lossbench.engine import pack

    runs = list(range(7))
    assert pack(runs, None) == [[i] for i in runs]  # null: one job per run, as before
    assert pack(runs, 3) == [[0, 1, 2], [3, 4], [5, 6]]  # at most 3, near-equal, every run once
    assert pack(runs[:6], 3) == [[0, 1, 2], [3, 4, 5]]
    assert pack(runs, 100) == [runs]
    assert pack(runs, 100, workers=2) == [[0, 1, 2, 3], [4, 5, 6]]  # every worker gets work
    assert pack([], 3) == []


def test_a_bad_runs_per_job_is_refused_before_any_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = subprocess.run(
        [sys.executable, "-m", "lossbench", "-m", "engine=sequential", "engine.runs_per_job=0",
         "loss=mse,l1", "data=regression_outliers", "data.n_samples=150", "model=linear", "trainer.max_epochs=1"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 2, r.stderr[-3000:]
    assert "engine.runs_per_job must be a positive integer or null" in r.stderr
    assert "Traceback" not in r.stderr
    # no run trained, and the sweep's parent run, opened at the start, holds nothing: it ends deleted, not a husk
    from mlflow.entities import ViewType

    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    ids = [e.experiment_id for e in c.search_experiments()]
    assert c.search_runs(ids) == []
    (parent,) = c.search_runs(ids, run_view_type=ViewType.DELETED_ONLY)
    assert parent.data.tags[S.TAG_KIND] == "sweep" and parent.info.status == "KILLED"


def test_the_slurm_launcher_packs_runs_and_the_command_line_wins(compose):
    assert compose().engine.runs_per_job is None
    assert compose("hydra/launcher=slurm").engine.runs_per_job == 50
    assert compose("hydra/launcher=slurm", "engine=sequential").engine.runs_per_job == 50
    assert compose("hydra/launcher=slurm", "engine.runs_per_job=7").engine.runs_per_job == 7
    # how runs are packed is not what they compute: a run done under SLURM counts as done locally
    assert tracking.config_hash(compose("hydra/launcher=slurm", "loss=mse")) == tracking.config_hash(compose("loss=mse"))


@pytest.mark.slow
def test_submitit_array_tasks_train_runs_per_job_runs_each(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = subprocess.run(
        [sys.executable, "-m", "lossbench", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
         "hydra.sweep.dir=sweeps/packed", "engine=sequential", "engine.runs_per_job=3",
         "loss=mse,l1", "seed=0,1,2", "data=regression_outliers", "data.n_samples=150", "model=linear",
         "trainer.max_epochs=1", "tracking.experiment_name=packed"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # submitit writes one folder per job it submits (named by job id; "%j" holds the submission
    # files): 6 runs, 3 to a job -> 2 jobs
    jobs = [p for p in (tmp_path / "sweeps" / "packed" / ".submitit").iterdir() if p.is_dir() and p.name != "%j"]
    assert len(jobs) == 2, sorted(p.name for p in jobs)
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    every = c.search_runs([c.get_experiment_by_name("packed").experiment_id])
    parents = [x for x in every if S.TAG_KIND in x.data.tags]
    runs = [x for x in every if S.TAG_KIND not in x.data.tags]
    assert len(parents) == 1 and parents[0].data.tags[S.TAG_KIND] == "sweep"
    got = sorted((x.data.tags[S.TAG_LOSS], x.data.params.get("seed"), x.info.status) for x in runs)
    assert got == sorted((loss, str(seed), "FINISHED") for loss in ("mse", "l1") for seed in (0, 1, 2))  # each once
    assert {x.data.tags.get("mlflow.parentRunId") for x in runs} == {parents[0].info.run_id}
    assert "done: 6 finished" in r.stderr


@pytest.mark.slow
def test_an_invalid_run_in_a_packed_job_is_recorded_failed_and_the_others_train(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = subprocess.run(
        [sys.executable, "-m", "lossbench", "-m", "engine=sequential", "engine.runs_per_job=3",
         "loss=mse,l1", "data=regression_outliers", "data.n_samples=150,-5", "model=linear", "trainer.max_epochs=1",
         "tracking.experiment_name=packed"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 1, r.stderr[-3000:]  # as the same sweep without packing: some runs failed
    assert "4 jobs as 2 group job(s) (2, 2 runs each)" in r.stderr  # each job holds one invalid run
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [x for x in c.search_runs([c.get_experiment_by_name("packed").experiment_id]) if S.TAG_KIND not in x.data.tags]
    got = sorted((x.data.tags.get(S.TAG_LOSS) or "", x.info.status) for x in runs)
    assert sorted(s for _, s in got) == ["FAILED", "FAILED", "FINISHED", "FINISHED"], got  # each run once
    assert "done: 2 finished, 0 diverged, 2 failed" in r.stderr

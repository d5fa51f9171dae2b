"""DDP for real: 2 CPU processes on gloo, started by the real command line.

``trainer=ddp trainer.accelerator=cpu trainer.devices=2``: Lightning's ``ddp`` re-runs
``python -m lossbench ...`` for rank 1; only rank 0 may write the store, and every rank
must score the whole validation and test split. The data is breast_cancer: 343 training
samples (171 and 172 per rank), 113 validation and 113 test (odd). With
``data.batch_size=57`` a plain ``rank::2`` split of the training set gives rank 0 four steps
an epoch and rank 1 three: without padding, rank 0 waits forever for gradients in its
fourth step. Each command runs in its own process group, killed whole if it outlives its
time, so a hang fails the test and leaves nothing running.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lossbench import pipeline, tracking
from lossbench import schema as S

SMALL = ["data=breast_cancer", "model=mlp", "data.batch_size=57", "trainer.max_epochs=2"]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
HANG = 420  # seconds: a 2-rank job takes about 2 minutes on a loaded 2-core machine, 20 s idle


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """``python -m lossbench`` in its own process group."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    return subprocess.Popen(
        [sys.executable, "-m", "lossbench", *args, "trainer.enable_progress_bar=false"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def lossbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return finish(start(*args, cwd=cwd))


def finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    """Its outcome; a hang is killed whole (every rank is in its group) and fails."""
    try:
        out, err = proc.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the ranks Lightning started are in this group too
        out, err = proc.communicate()
        pytest.fail(f"the DDP job hung for {HANG} s:\n{err[-3000:]}")
    try:  # rank 1 may outlive rank 0 by a moment: nothing of the group stays behind
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def runs_of(uri: str, experiment: str) -> list:
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id])


@pytest.mark.slow
@pytest.mark.timeout(2 * HANG)
def test_a_ddp_job_is_one_run_scored_on_the_whole_split(tmp_path, compose):
    """The gathering itself, tested where it is comparable: with ``optimizer.lr=1e-12`` an
    Adam step (about lr in size) is below float32's resolution of these weights, so the
    DDP job and a 1-process run score the same weights on the same 113 test samples. Their
    test metrics then agree to float rounding (``rel=1e-6``: the two compute with different
    thread counts). Scoring a rank's shard of 56 or 57 samples, as each rank did before,
    moves accuracy by at least 1/113 - 1/114 and fails this; so do two runs for one job."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_experiment(uri, "ddp")  # the fresh store, created once here
    same = [*SMALL, "optimizer.lr=1e-12"]
    r = lossbench(*same, *DDP, f"tracking.uri={uri}", "tracking.experiment_name=ddp", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("Open the UI") == 1, "rank 1 says nothing: rank 0 reports the run"

    runs = runs_of(uri, "ddp")
    assert len(runs) == 1, [(x.info.run_name, x.info.status) for x in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.strategy"] == "ddp" and run.data.params["trainer.devices"] == "2"
    history = tracking.client(uri).get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == [0, 1], "one val_loss per epoch, written once by rank 0"

    one = pipeline.run(compose(*same, "trainer.devices=1"))
    assert one.status == "FINISHED"
    tests = {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
    assert tests.keys() == {k for k in one.metrics if k.startswith("test_")}
    for k, v in tests.items():
        if math.isnan(one.metrics[k]):  # a shot group without classes (breast_cancer has no medium)
            assert math.isnan(v), k
        else:
            assert v == pytest.approx(one.metrics[k], rel=1e-6, abs=1e-9), k
    assert run.data.metrics[S.METRIC_BEST_VAL] == pytest.approx(one.metrics[S.METRIC_BEST_VAL], rel=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(2 * HANG)
def test_a_diverging_ddp_job_stops_on_every_rank_and_is_one_failed_run(tmp_path):
    """The ranks see different batches, so one rank's loss may stop being finite first:
    all of them stop at that step (one all-reduce of the loss a step), none is left waiting."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_experiment(uri, "ddp")
    r = lossbench(
        *SMALL, *DDP, "optimizer=sgd", "optimizer.lr=1e12", "trainer.max_epochs=30",
        f"tracking.uri={uri}", "tracking.experiment_name=ddp", cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]  # a diverged run is a result, not an error
    runs = runs_of(uri, "ddp")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags[S.TAG_FAILURE] == S.FAILURE_DIVERGED
    assert int(runs[0].data.tags[S.TAG_FAILURE_STEP]) < 30


def _ranks_started_by(pid: int) -> list[int]:
    """The ``python -m lossbench`` processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == pid and b"lossbench" in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
    return out


def _wait_for_epochs(db: Path, proc: subprocess.Popen[str], timeout: float = HANG) -> None:
    """Until rank 0 has written a train_loss (read-only sqlite3: no MLflow client migrating)."""
    deadline = time.time() + timeout
    query = "select count(*) from metrics where key = 'train_loss'"
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        with contextlib.suppress(sqlite3.Error):
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                if con.execute(query).fetchone()[0]:
                    return
            finally:
                con.close()
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("the DDP job never logged an epoch")


@pytest.mark.slow
@pytest.mark.timeout(2 * HANG)
def test_a_rank_that_dies_mid_training_ends_the_job_as_one_failed_run(tmp_path):
    """Rank 1 stopped alone (SIGTERM to it only): rank 0 must not wait for it forever, and
    the job's one run says it failed."""
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    tracking.ensure_experiment(uri, "ddp")
    proc = start(*SMALL, *DDP, "trainer.max_epochs=100000", f"tracking.uri={uri}", "tracking.experiment_name=ddp",
                 cwd=tmp_path)
    _wait_for_epochs(db, proc)
    (rank1,) = _ranks_started_by(proc.pid)
    os.kill(rank1, signal.SIGTERM)
    r = finish(proc)
    assert r.returncode == 1, r.stderr[-3000:]
    runs = runs_of(uri, "ddp")
    assert [x.info.status for x in runs] == ["FAILED"], r.stderr[-3000:]
    assert runs[0].data.tags[S.TAG_FAILURE] == S.FAILURE_ERROR


def test_spawn_strategies_are_refused_before_any_run(compose, mlflow_uri):
    """ddp_spawn hands back only the weights: the run's record would be lost."""
    from lossbench.errors import LossbenchError

    with pytest.raises(LossbenchError, match="trainer.strategy=ddp_spawn .* Use trainer.strategy=ddp"):
        pipeline.run(compose(*SMALL, "+trainer.strategy=ddp_spawn", "trainer.devices=2"))
    assert runs_of(mlflow_uri, "test_spawn_strategies_are_refused_before_any_run") == []


def test_a_process_is_rank_zero_unless_its_environment_says_otherwise(monkeypatch):
    for k in pipeline._RANK_VARS:
        monkeypatch.delenv(k, raising=False)
    assert pipeline.is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")  # what Lightning leaves in rank 0's own environment
    monkeypatch.setenv("NODE_RANK", "0")
    assert pipeline.is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "1")  # how Lightning starts rank 1
    assert not pipeline.is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")  # rank 0 of the second machine
    assert not pipeline.is_rank_zero()

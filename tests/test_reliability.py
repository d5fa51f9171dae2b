"""Failures, interruption, resume and parallel runs: the record stays complete.

Real processes, real signals, real MLflow stores; nothing here is mocked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl

from lossbench import pipeline
from lossbench import schema as S
from lossbench import tracking


def cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    return subprocess.run(
        [sys.executable, "-m", "lossbench", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout
    )


def runs_in(uri: str, experiment: str):
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = [] if exp is None else c.search_runs([exp.experiment_id])
    return [r for r in runs if S.TAG_KIND not in r.data.tags]  # the jobs' runs, not a sweep's parent


REG = ["loss=mse", "data=regression_outliers", "data.n_samples=200", "model=linear"]


# ------------------------------------------------------------------ diverged runs
@pytest.mark.slow
def test_a_diverging_loss_stops_its_run_at_once_and_is_recorded(compose, mlflow_uri):
    cfg = compose(*REG, "optimizer=sgd", "optimizer.lr=1e12", "trainer.max_epochs=50")
    r = pipeline.run(cfg)
    assert r.status == "FAILED" and r.failure == S.FAILURE_DIVERGED
    run = tracking.client(mlflow_uri).get_run(r.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[S.TAG_FAILURE] == S.FAILURE_DIVERGED
    step = int(run.data.tags[S.TAG_FAILURE_STEP])
    assert 0 <= step < 20, "it must stop the moment the loss is not finite, not run 50 epochs"
    assert "became" in r.message and ("nan" in r.message or "inf" in r.message)


# ------------------------------------------------------------------ errors
class FailsAtStep(pl.Callback):
    """A real failure inside training (as a bug in user code would raise)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError(f"boom at step {self.step}")


def test_an_error_during_training_ends_the_run_failed_with_its_traceback(compose, mlflow_uri, tmp_path):
    r = pipeline.run(compose(*REG, "trainer.max_epochs=5"), callbacks=[FailsAtStep(3)])
    assert r.status == "FAILED" and r.failure == S.FAILURE_ERROR
    c = tracking.client(mlflow_uri)
    run = c.get_run(r.run_id)
    assert run.info.status == "FAILED" and run.data.tags[S.TAG_FAILURE] == S.FAILURE_ERROR
    path = c.download_artifacts(r.run_id, S.ARTIFACT_TRACEBACK, str(tmp_path))
    text = Path(path).read_text()
    assert "Traceback" in text and "RuntimeError: boom at step 3" in text


@pytest.mark.slow
def test_a_sweep_goes_on_past_failed_jobs_lists_them_and_exits_non_zero(tmp_path):
    r = cli(
        "-m", "loss=huber,focal,mse", "data=regression_outliers", "data.n_samples=200", "model=linear",
        "trainer.max_epochs=1", "tracking.experiment_name=mixed", cwd=tmp_path,
    )
    assert r.returncode == 1, r.stderr[-3000:]
    assert "done: 2 finished, 0 diverged, 1 failed with an error" in r.stderr
    assert "error    focal-regression_outliers-s0" in r.stderr  # listed in the final summary
    runs = runs_in(f"sqlite:///{tmp_path / 'mlflow.db'}", "mixed")
    by_loss = {r.data.tags[S.TAG_LOSS]: r for r in runs}
    assert by_loss["huber"].info.status == by_loss["mse"].info.status == "FINISHED"
    assert by_loss["focal"].info.status == "FAILED" and by_loss["focal"].data.tags[S.TAG_FAILURE] == "error"


@pytest.mark.slow
def test_two_sweeps_started_together_keep_their_own_ids_and_summaries(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_experiment(uri, "together")  # the store exists before the two start
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    args = [sys.executable, "-m", "lossbench", "-m", *REG, "seed=0,1", "trainer.max_epochs=1",
            "tracking.experiment_name=together"]
    procs = [subprocess.Popen([*args, f"optimizer.lr={lr}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for lr in (0.01, 0.02)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for _, err in outs:
        assert "done: 2 finished" in err, err[-2000:]
    sweeps = {r.data.tags[S.TAG_SWEEP] for r in runs_in(uri, "together")}
    assert len(sweeps) == 2 and len(list((tmp_path / "multirun").glob("*/*"))) == 2


# ------------------------------------------------------------------ interruption


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.slow
def test_an_interrupted_run_is_recorded_killed_never_left_running(tmp_path, sig, wait_until_training):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossbench", "loss=cross_entropy", "data=imbalanced", "trainer.max_epochs=100000",
         "tracking.experiment_name=interrupt"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        run_id = wait_until_training(uri, "interrupt", proc)[0]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "recorded as KILLED" in err
    assert tracking.client(uri).get_run(run_id).info.status == "KILLED"


@pytest.mark.slow
def test_a_run_left_running_by_kill_9_is_found_listed_and_settled(tmp_path, wait_until_training):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    args = [*REG, "trainer.max_epochs=100000", "tracking.experiment_name=stuck"]
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        run_id = wait_until_training(uri, "stuck", proc)[0]
    finally:
        proc.kill()  # SIGKILL: nothing in the child can end its run
        proc.wait()
    assert tracking.client(uri).get_run(run_id).info.status == "RUNNING"

    def runs_cli(*more: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lossbench.runs", "--stuck", *more], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    listed = runs_cli()
    assert listed.returncode == 0 and "1 run(s) RUNNING" in listed.stdout and "process gone" in listed.stdout
    assert run_id in listed.stdout and "--stuck --settle" in listed.stdout
    assert tracking.client(uri).get_run(run_id).info.status == "RUNNING"  # listing changes nothing

    out = runs_cli("--settle").stdout
    assert "settled 1 run(s) as KILLED" in out
    settled = tracking.client(uri).get_run(run_id)
    assert settled.info.status == "KILLED" and "ended without ending it" in settled.data.tags[S.TAG_SETTLED]
    assert "0 run(s) RUNNING" in runs_cli().stdout


def test_a_config_started_again_settles_its_own_stuck_run(compose, mlflow_uri):
    cfg = compose(*REG, "trainer.max_epochs=1", "seed=7")
    chash = tracking.config_hash(pipeline.prepare(cfg).cfg)  # hashed as the pipeline does: with model.head resolved
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid whose process has ended
    exp = tracking.ensure_experiment(mlflow_uri, str(cfg.tracking.experiment_name))
    host = tracking.owner().rpartition(":")[0]
    stuck = tracking.Run.start(mlflow_uri, exp, "stuck", {S.TAG_CONFIG_HASH: chash, S.TAG_OWNER: f"{host}:{dead.pid}"}, {})
    alive = tracking.Run.start(mlflow_uri, exp, "alive", {S.TAG_CONFIG_HASH: chash, S.TAG_OWNER: tracking.owner()}, {})
    elsewhere = tracking.Run.start(mlflow_uri, exp, "elsewhere", {S.TAG_CONFIG_HASH: chash, S.TAG_OWNER: "other-host:1"}, {})
    r = pipeline.run(cfg)
    assert r.status == "FINISHED", r.message
    status = {x.run_id: tracking.client(mlflow_uri).get_run(x.run_id).info.status for x in (stuck, alive, elsewhere)}
    assert status == {stuck.run_id: "KILLED", alive.run_id: "RUNNING", elsewhere.run_id: "RUNNING"}
    for x in (alive, elsewhere):
        x.end("KILLED")


# ------------------------------------------------------------------ resume
@pytest.mark.slow
def test_rerunning_skips_finished_configs_unless_told_otherwise(compose, mlflow_uri):
    base = [*REG, "trainer.max_epochs=1"]
    first = pipeline.run(compose(*base, "seed=0"))
    assert first.status == "FINISHED"
    again = pipeline.run(compose(*base, "seed=0"))
    assert again.status == "SKIPPED" and again.run_id == first.run_id
    assert "skip_finished=false" in again.message
    other = pipeline.run(compose(*base, "seed=1"))  # a different config still runs
    assert other.status == "FINISHED"
    forced = pipeline.run(compose(*base, "seed=0", "tracking.skip_finished=false"))
    assert forced.status == "FINISHED" and forced.run_id != first.run_id


def test_a_failed_config_is_not_skipped_on_rerun(compose):
    cfg = [*REG, "optimizer=sgd", "optimizer.lr=1e12", "trainer.max_epochs=3"]
    assert pipeline.run(compose(*cfg)).status == "FAILED"
    assert pipeline.run(compose(*cfg)).status == "FAILED"  # tried again, not skipped


@pytest.mark.slow
def test_rerunning_a_sweep_runs_only_what_is_missing(tmp_path):
    common = ["data=regression_outliers", "data.n_samples=200", "model=linear", "trainer.max_epochs=1",
              "tracking.experiment_name=resume"]
    assert cli("-m", "loss=mse,l1", *common, cwd=tmp_path).returncode == 0
    r = cli("-m", "loss=mse,l1,huber", *common, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("] skipped ") == 2 and r.stderr.count("] finished ") == 1
    runs = runs_in(f"sqlite:///{tmp_path / 'mlflow.db'}", "resume")
    assert sorted(r.data.tags[S.TAG_LOSS] for r in runs) == ["huber", "l1", "mse"]


# ------------------------------------------------------------------ parallel workers
@pytest.mark.parametrize("attempt", range(3))
@pytest.mark.slow
def test_parallel_workers_on_a_fresh_store_lose_nothing(tmp_path, attempt):
    r = cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "loss=mse,l1,huber,cauchy",
        "data=regression_outliers", "data.n_samples=150", "model=linear", "trainer.max_epochs=1",
        "tracking.experiment_name=parallel", cwd=tmp_path, timeout=400,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        assert con.execute("pragma integrity_check").fetchone() == ("ok",)
        rows = con.execute(
            "select e.name, r.status, count(*) from runs r join experiments e "
            "on r.experiment_id = e.experiment_id group by e.name, r.status"
        ).fetchall()
    assert rows == [("parallel", "FINISHED", 5)], rows  # 4 jobs and the sweep's parent: none lost, none in Default
    assert "done: 4 finished" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_a_store_write_waits_for_the_write(mlflow_uri, sig):
    """Ctrl-C or SIGTERM landing inside MLflow's SQL write is held until the write is done:
    raised inside it, it left SQLite's write lock held and the run RUNNING for good."""
    import sqlalchemy

    exp = tracking.ensure_experiment(mlflow_uri, "signals-in-writes")
    run = tracking.Run.start(mlflow_uri, exp, "r", {}, {})
    engine = tracking.client(mlflow_uri)._tracking_client.store.engine
    fired: list[int] = []

    def signal_now(*args):
        if not fired:  # the first statement of the write
            fired.append(sig)
            os.kill(os.getpid(), sig)

    def terminate(signum, frame):
        raise pipeline.Interrupted(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, terminate)  # as a run installs it
    sqlalchemy.event.listen(engine, "before_cursor_execute", signal_now)
    try:
        with pytest.raises((KeyboardInterrupt, pipeline.Interrupted)):
            run.log_metrics(tracking.metrics_at([(0, {"m": 1.0}), (1, {"m": 0.5})]))
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", signal_now)
        signal.signal(signal.SIGTERM, old)
    assert fired == [sig]
    run.end("KILLED")  # the store is not left locked
    got = tracking.client(mlflow_uri).get_run(run.run_id)
    assert got.info.status == "KILLED"
    assert [h.value for h in tracking.client(mlflow_uri).get_metric_history(run.run_id, "m")] == [1.0, 0.5]


def _session_processes(sid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(entry))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")
@pytest.mark.parametrize("how", ["ctrl-c-to-the-group", "sigterm-to-the-parent"])
def test_an_interrupted_joblib_sweep_ends_its_workers_runs_killed_and_leaves_no_process(tmp_path, how, wait_until_training):
    import time

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_experiment(uri, "joblib-stop")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossbench", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "engine=sequential",
         "loss=mse,l1", "data=regression_outliers", "data.n_samples=200", "model=linear", "trainer.max_epochs=100000",
         "tracking.experiment_name=joblib-stop"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )
    try:
        ids = wait_until_training(uri, "joblib-stop", proc, n=2)
        if how == "ctrl-c-to-the-group":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        else:
            os.kill(proc.pid, signal.SIGTERM)  # a scheduler's cancel reaches the parent only
        _, err = proc.communicate(timeout=180)
        deadline = time.time() + 20
        while _session_processes(proc.pid) and time.time() < deadline:
            time.sleep(0.5)
        left = _session_processes(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "recorded as KILLED" in err
    assert [tracking.client(uri).get_run(i).info.status for i in ids] == ["KILLED", "KILLED"]
    assert left == [], f"processes left behind: {left}"


@pytest.mark.slow
def test_a_sweep_is_one_parent_run_with_its_jobs_as_children(tmp_path):
    r = cli("-m", *REG, "seed=0,1", "trainer.max_epochs=1", "tracking.experiment_name=family", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = c.search_runs([c.get_experiment_by_name("family").experiment_id])
    parents = [x for x in runs if x.data.tags.get(S.TAG_KIND) == "sweep"]
    children = [x for x in runs if S.TAG_KIND not in x.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["runs_finished"] == 2
    assert parent.data.tags[S.TAG_SWEEP] == children[0].data.tags[S.TAG_SWEEP]
    assert {c.data.tags[S.TAG_PARENT] for c in children} == {parent.info.run_id}
    for x in runs:  # MLflow's own context tags, as its fluent API sets them
        assert x.data.tags["mlflow.user"] and x.data.tags["mlflow.source.type"] == "LOCAL"
    assert "done: 2 finished" in r.stderr  # the parent is not counted as a job


# ------------------------------------------------------------------ single runs on a new store
@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))
def test_single_runs_started_together_on_a_new_store_all_finish(tmp_path, attempt):
    """Three single runs at once on a store that does not exist yet. Each used to run MLflow's
    schema migrations on the same new file, and one failed ("table ... already exists", or a
    migration that found no row) in 2 of 3 tries; now the later ones wait for the first."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lossbench", "loss=mse", "data=regression_outliers", "data.n_samples=100",
             "model=linear", "trainer.max_epochs=1", f"seed={seed}", f"hydra.run.dir=outputs/{seed}"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for seed in range(3)
    ]
    errs = []
    for p in procs:
        try:
            errs.append(p.communicate(timeout=300)[1])
        finally:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0, 0], "\n---\n".join(e[-2000:] for e in errs)
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        assert con.execute("pragma integrity_check").fetchone() == ("ok",)
        rows = con.execute(
            "select e.name, r.status, count(*) from runs r join experiments e "
            "on r.experiment_id = e.experiment_id group by e.name, r.status"
        ).fetchall()
    assert rows == [("lossbench", "FINISHED", 3)], rows


@pytest.mark.slow
def test_deleting_the_store_while_a_run_trains_ends_it_with_one_line_and_exit_1(tmp_path, wait_until_training):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossbench", "loss=cross_entropy", "data=imbalanced", "trainer.max_epochs=100000",
         "tracking.experiment_name=removed"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    db = tmp_path / "mlflow.db"
    try:
        wait_until_training(f"sqlite:///{db}", "removed", proc)
        for path in tmp_path.glob("mlflow.db*"):  # the store and its journal and lock files
            path.unlink()
        out, err = proc.communicate(timeout=120)  # no hang: the next metrics write finds it gone
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in out + err and "sqlalchemy" not in (out + err).lower(), err[-3000:]
    said = " ".join(out.split())  # rich wraps long lines at the terminal width
    assert f"error: the MLflow store {db} was removed while the run was in progress" in said, out
    assert said.count("was removed while the run was in progress") == 1
    assert not db.exists()  # nothing re-created an empty store

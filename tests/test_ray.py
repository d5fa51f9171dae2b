"""Sweeps on a real Ray cluster through ``hydra/launcher=ray``.

The module starts one Ray head (``ray start --head --block``, two CPUs, on 127.0.0.1) in its
own process group and working folder; each sweep attaches to it by address from another
folder, as a user's driver on a login node would. The head is stopped by signalling its
process group, and the module checks that no process of it (raylet, gcs_server, a worker)
is left.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import ViewType

from lossbench import schema as S
from lossbench import tracking
from lossbench.engine.stop import descendants
from lossbench.servers import free_port

SWEEP = ["loss=mse,l1", "seed=0,1", "data=regression_outliers", "data.n_samples=150", "model=linear", "trainer.max_epochs=1"]
EXPECTED = sorted((loss, seed) for loss in ("mse", "l1") for seed in ("0", "1"))


# Ray 2.60 turns token authentication on for a local cluster and keeps the token in
# ~/.ray/auth_token, which later `ray start`s pick up: the test cluster and its drivers get
# their own token, so that neither that file nor its absence changes what is tested.
RAY_TOKEN = secrets.token_hex(32)


def _env(**extra: str) -> dict[str, str]:
    drop = ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG", "RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(MPLBACKEND="Agg", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=RAY_TOKEN)
    env.update(extra)
    return env


def test_ray_launcher_without_ray_names_the_extra_to_install(tmp_path):
    # Ray is installed wherever this suite runs (the dev extra pulls the cluster extra), so
    # "not installed" is made real for one interpreter: sys.modules['ray'] = None makes every
    # `import ray` in it fail as for a missing package. What is tested is our message.
    code = (
        "import runpy, sys; sys.modules['ray'] = None; "
        "sys.argv = ['lossbench', '-m', 'hydra/launcher=ray', 'loss=mse,l1']; "
        "runpy.run_module('lossbench', run_name='__main__')"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert 'pip install "lossbench[cluster]"' in r.stderr and "hydra/launcher=ray needs ray" in r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing started: no store, no sweep folder


@dataclass
class RayHead:
    address: str
    pgid: int
    cwd: Path
    temp: Path
    log: Path


def _ours(temp: Path) -> list[int]:
    """Live processes whose command line names this head's temp folder (raylet, gcs_server, ...)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if str(temp).encode() in cmd and state != "Z":
                    found.append(int(entry))
    return found


def _gone(pids: list[int]) -> bool:
    return not any(tracking.pid_alive(p) for p in pids)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    # a short temp folder: Ray's unix sockets live under it, and their paths are capped at 107 bytes.
    # RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0: on SIGTERM `ray start --block` would otherwise drain
    # the node for 30 s (for Ray Serve) before it stops its processes
    temp = Path(tempfile.mkdtemp(prefix="lbray-"))
    cwd, log = temp / "head-cwd", temp / "head.log"
    cwd.mkdir()
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
        "--port", str(port), "--num-cpus", "2", "--num-gpus", "0", "--object-store-memory", str(100 * 2**20),
        "--temp-dir", str(temp / "r"), "--include-dashboard", "false", "--disable-usage-stats",
        # ports of our own where Ray has fixed defaults (8265, 10001, 52365...), so a Ray already on the machine does not clash
        *(x for flag in ("--ray-client-server-port", "--dashboard-port", "--dashboard-agent-listen-port",
                         "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")
          for x in (flag, str(free_port()))),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=_env(RAY_TMPDIR=str(temp / "r"), RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0"),
                                start_new_session=True)
    head = RayHead(f"127.0.0.1:{port}", proc.pid, cwd, temp, log)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, f"the Ray head did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield head
    finally:
        pids = [proc.pid, *descendants(proc.pid), *_ours(temp)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while not (_gone(pids) and not _ours(temp)) and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
        left = [p for p in pids if tracking.pid_alive(p)] + _ours(temp)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        proc.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"processes of the Ray head outlived SIGTERM to its group: {left}"
    assert _gone(pids) and not _ours(temp)


def _sweep(head: RayHead, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "lossbench", "-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={head.address}",
            *SWEEP, *args]
    r = subprocess.run(argv, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "object_store_memory" not in r.stderr
    return r


def _check_store(uri: str, experiment: str) -> None:
    """Every job once, FINISHED, a child of the sweep's one FINISHED parent run."""
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(S.TAG_KIND) == "sweep"]
    jobs = [r for r in runs if S.TAG_KIND not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted((r.data.tags[S.TAG_LOSS], r.data.tags[S.TAG_SEED]) for r in jobs) == EXPECTED  # each exactly once
    assert {r.info.status for r in jobs} == {"FINISHED"}
    assert {r.data.tags.get(S.TAG_PARENT) for r in jobs} == {parents[0].info.run_id}
    assert {r.data.tags.get(S.TAG_SWEEP) for r in jobs} == {parents[0].data.tags.get(S.TAG_SWEEP)}
    # a Ray task trained a group: two CPUs, so the four runs went as two stacked groups of two
    assert {r.data.tags.get(S.TAG_ENGINE) for r in jobs} == {"batched"}
    assert sorted(r.data.tags.get(S.TAG_GROUP_SIZE) for r in jobs) == ["2"] * 4


@pytest.mark.slow
def test_ray_gpus_asks_each_task_for_a_gpu_and_says_so_on_a_cluster_without_one(ray_head, tmp_path):
    # the head has --num-gpus 0: Ray would hold one-GPU tasks as infeasible and the sweep would wait forever
    argv = [sys.executable, "-m", "lossbench", "-m", "hydra/launcher=ray_gpus",
            f"hydra.launcher.ray.init.address={ray_head.address}", *SWEEP]
    r = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Each Ray task asks for 1 GPU (hydra.launcher.ray.remote.num_gpus), and the Ray cluster has 0." in r.stderr
    assert "Traceback" not in r.stderr
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = [c.get_experiment_by_name("lossbench").experiment_id]
    assert c.search_runs(exp) == []  # no job ran, and the sweep's empty parent run was ended and deleted
    (parent,) = c.search_runs(exp, run_view_type=ViewType.DELETED_ONLY)
    assert parent.data.tags[S.TAG_KIND] == "sweep" and parent.info.status == "KILLED"


@pytest.mark.slow
def test_sweep_attached_to_a_ray_cluster_writes_every_run_once_to_the_drivers_store(ray_head, tmp_path):
    driver = tmp_path / "driver"
    r = _sweep(ray_head, driver, "tracking.experiment_name=ray-sqlite")
    assert "done: 4 finished" in r.stderr
    # the default store, sqlite:///mlflow.db, is the driver's file, not one in the workers' folder
    _check_store(f"sqlite:///{driver / 'mlflow.db'}", "ray-sqlite")
    assert list(ray_head.cwd.iterdir()) == []
    assert len(list(driver.glob("multirun/*/*/*/.hydra/config.yaml"))) == 2  # the two group jobs' folders


@pytest.mark.slow
def test_ray_sweep_into_a_postgres_backed_mlflow_server_reads_back_with_the_report(ray_head, tmp_path):
    pytest.importorskip("psycopg")
    from servers import allowed_hosts, mlflow_server, postgres, require_postgres

    require_postgres()
    import socket

    with postgres() as pg, mlflow_server(pg.uri(), tmp_path / "artifacts", hosts=allowed_hosts(socket.gethostname())) as srv:
        # the server's address is in the driver's environment only: the Ray head never saw it
        r = _sweep(ray_head, tmp_path / "driver", "tracking.experiment_name=ray-pg", env=_env(MLFLOW_TRACKING_URI=srv.url))
        assert "done: 4 finished" in r.stderr and srv.url in r.stderr
        _check_store(srv.url, "ray-pg")
        assert list(ray_head.cwd.iterdir()) == [] and not (tmp_path / "driver" / "mlflow.db").exists()
        out = tmp_path / "report"
        rep = subprocess.run(
            [sys.executable, "-m", "lossbench.report", f"tracking.uri={srv.url}", "tracking.experiment_name=ray-pg",
             f"report.out_dir={out}"],
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
        )
        assert rep.returncode == 0, rep.stderr[-3000:]
        md = (out / "report.md").read_text(encoding="utf-8")
        assert "mse" in md and "l1" in md and "regression_outliers" in md


@pytest.mark.slow
def test_ctrl_c_to_a_driver_attached_to_a_ray_cluster_leaves_no_run_running(ray_head, tmp_path):
    # the driver alone gets SIGINT, as from a user's terminal: the cluster's workers are in the head's group
    driver = tmp_path / "driver"
    driver.mkdir()
    argv = [sys.executable, "-m", "lossbench", "-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={ray_head.address}",
            *SWEEP[:-1], "trainer.max_epochs=100000", "tracking.experiment_name=ray-ctrl-c"]
    with open(tmp_path / "driver.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=driver, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    c = tracking.client(f"sqlite:///{driver / 'mlflow.db'}")
    try:
        deadline = time.monotonic() + 240
        while not (exp := c.get_experiment_by_name("ray-ctrl-c")) or len(c.search_runs(
                [exp.experiment_id], filter_string="attributes.status = 'RUNNING' and metrics.train_loss >= 0")) < 4:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "driver.log").read_text()[-3000:]
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    runs = c.search_runs([exp.experiment_id])
    assert runs and {r.info.status for r in runs} == {"KILLED"}, [(r.info.run_name, r.info.status) for r in runs]
    jobs = [r for r in runs if S.TAG_KIND not in r.data.tags]
    assert jobs and {r.data.tags.get(S.TAG_SETTLED) for r in jobs} == {"its sweep's driver was stopped"}
    # and the cluster stopped training them: no epoch is logged after the driver has gone (a group
    # writes its epochs every 2 s or so; the driver was stopped once every run had written some)
    epochs = [len(c.get_metric_history(r.info.run_id, "train_loss")) for r in jobs]
    assert all(n > 0 for n in epochs)
    time.sleep(4)
    assert [len(c.get_metric_history(r.info.run_id, "train_loss")) for r in jobs] == epochs


def test_the_sweep_benchmark_times_the_same_command_under_each_launcher(tmp_path):
    from lossbench.benchmark.sweep import bench_launchers, command
    from lossbench.errors import LossbenchError

    argv = command("batched", seeds=16, epochs=10, device="cpu", workdir=tmp_path, experiment="x", launcher="ray")
    assert argv[-1] == "hydra/launcher=ray" and "seed=range(16)" in argv and "engine=sequential" not in argv
    with pytest.raises(LossbenchError, match="joblib, ray"):
        bench_launchers(launchers=["dask"], runs=4, epochs=1)

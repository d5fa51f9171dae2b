"""Runs on a real MLflow server backed by a real PostgreSQL, and MLflow's system metrics (issue 9).

The server and the database are started by the module's fixtures (tests/servers.py) on
127.0.0.1 in temp folders and stopped by process group / ``pg_ctl`` when the module ends.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from servers import mlflow_pg_server, pg_server  # noqa: F401  (fixtures)

from lossbench import pipeline
from lossbench import schema as S
from lossbench import tracking

pytestmark = pytest.mark.slow

SWEEP = ["-m", "loss=mse,huber", "seed=0,1", "data=regression_outliers", "data.n_samples=200", "model=linear",
         "trainer.max_epochs=2"]
CONTEXT_TAGS = ("mlflow.user", "mlflow.source.name", "mlflow.source.type")


def lossbench(*args: str, cwd: Path, env: dict | None = None, module: str = "lossbench",
              timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def experiment_runs(uri: str, name: str) -> list:
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(name)
    return [] if exp is None else c.search_runs([exp.experiment_id], max_results=1000)


# ---------------------------------------------------------------------------- the server on PostgreSQL
def test_a_sweep_lands_once_on_the_server_with_its_parent_and_reads_back(mlflow_pg_server, tmp_path):  # noqa: F811
    url = mlflow_pg_server.url
    args = [*SWEEP, f"tracking.uri={url}", "tracking.experiment_name=on-server", "tracking.system_metrics=true",
            f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    r = lossbench(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done: 4 finished, 0 diverged, 0 failed with an error" in r.stderr

    runs = experiment_runs(url, "on-server")
    parents = [x for x in runs if x.data.tags.get(S.TAG_KIND) == "sweep"]
    jobs = [x for x in runs if x not in parents]
    assert len(parents) == 1, [x.data.tags for x in parents]
    parent = parents[0]
    # every job exactly once, FINISHED, a child of the sweep's run
    assert sorted((x.data.tags[S.TAG_LOSS], x.data.params["seed"]) for x in jobs) == [
        ("huber", "0"), ("huber", "1"), ("mse", "0"), ("mse", "1")]
    assert len({x.data.tags[S.TAG_CONFIG_HASH] for x in jobs}) == 4
    assert {x.info.status for x in jobs} == {"FINISHED"}
    assert {x.data.tags[S.TAG_PARENT] for x in jobs} == {parent.info.run_id}
    assert {x.data.tags[S.TAG_SWEEP] for x in jobs} == {parent.data.tags[S.TAG_SWEEP]}
    # MLflow's context tags, on the jobs and on the sweep's own run
    for x in [*jobs, parent]:
        assert all(x.data.tags.get(t) for t in CONTEXT_TAGS), x.data.tags
    # tracking.system_metrics=true: the machine's system/* metrics beside the run's own
    for x in jobs:
        assert "system/cpu_utilization_percentage" in x.data.metrics, sorted(x.data.metrics)
        assert "test_rmse" in x.data.metrics

    # the same sweep again: every job already FINISHED on the server, nothing lands twice
    again = lossbench(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = [x for x in experiment_runs(url, "on-server") if S.TAG_KIND not in x.data.tags]
    assert sorted(x.info.run_id for x in rerun) == sorted(x.info.run_id for x in jobs)

    # the report reads it all back from the server
    out = tmp_path / "report"
    rep = lossbench(f"tracking.uri={url}", "tracking.experiment_name=on-server", f"report.out_dir={out}",
                    "report.formats=[md]", "report.appendix=false", cwd=tmp_path, module="lossbench.report")
    assert rep.returncode == 0, rep.stderr[-3000:]
    md = (out / "report.md").read_text()
    head = md.split("\n\n", 2)[:2]
    assert f"MLflow store `{url}`, experiment `on-server`: 4 runs in 1 scenario(s)." in md, head
    assert "without lossbench tags" not in md  # the sweep's own run is known, not counted as foreign
    assert "huber" in md and "mse" in md


def test_workers_that_name_the_host_are_let_in_and_other_names_are_not(mlflow_pg_server):  # noqa: F811
    """MLflow 3 answers 403 "Invalid Host header" to a Host it does not expect: the server was started
    with --allowed-hosts naming this machine, so a worker addressing it by host name gets in."""
    port = mlflow_pg_server.port

    def search(base: str, host_header: str | None = None) -> int:
        req = urllib.request.Request(
            f"{base}/api/2.0/mlflow/experiments/search", data=json.dumps({"max_results": 1}).encode(),
            headers={"Content-Type": "application/json", **({"Host": host_header} if host_header else {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            assert exc.code != 403 or b"Invalid Host header" in exc.read()
            return exc.code

    for name in ("127.0.0.1", "localhost", socket.gethostname()):
        assert search(f"http://{name}:{port}") == 200, name
    assert search(f"http://127.0.0.1:{port}", host_header=f"not-this-machine.example:{port}") == 403
    # and lossbench's own client, addressed by host name, writes through it
    uri = f"http://{socket.gethostname()}:{port}"
    exp = tracking.ensure_experiment(uri, "by-host-name")
    assert tracking.client(uri).get_experiment(exp).name == "by-host-name"


# ---------------------------------------------------------------------------- system metrics, SQLite
def test_system_metrics_are_opt_in_and_land_on_a_sqlite_store(compose, mlflow_uri):
    base = ["loss=mse", "data=regression_outliers", "data.n_samples=200", "model=linear", "trainer.max_epochs=2",
            "tracking.skip_finished=false"]
    on = pipeline.run(compose(*base, "tracking.system_metrics=true"))
    off = pipeline.run(compose(*base))
    assert on.status == off.status == "FINISHED", (on.message, off.message)
    c = tracking.client(mlflow_uri)
    with_sm, without = c.get_run(on.run_id), c.get_run(off.run_id)
    system = sorted(k for k in with_sm.data.metrics if k.startswith("system/"))
    assert "system/cpu_utilization_percentage" in system and "system/system_memory_usage_megabytes" in system
    assert 0 <= with_sm.data.metrics["system/cpu_utilization_percentage"] <= 100 * (os.cpu_count() or 1)
    assert not [k for k in without.data.metrics if k.startswith("system/")]  # off by default
    assert with_sm.data.tags[S.TAG_CONFIG_HASH] == without.data.tags[S.TAG_CONFIG_HASH]  # how it runs, not what


def test_system_metrics_without_psutil_is_one_line_naming_the_fix_before_any_run(tmp_path):
    hide = tmp_path / "no_psutil"
    hide.mkdir()
    (hide / "psutil.py").write_text("raise ImportError(\"No module named 'psutil'\")\n")
    store = tmp_path / "mlflow.db"
    r = lossbench("loss=mse", "data=regression_outliers", "data.n_samples=200", "model=linear",
                  "trainer.max_epochs=1", "tracking.system_metrics=true", f"tracking.uri=sqlite:///{store}",
                  cwd=tmp_path, env={"PYTHONPATH": str(hide)})
    assert r.returncode == 2, r.stderr[-3000:]
    assert "pip install psutil" in r.stderr and "tracking.system_metrics" in r.stderr
    assert "Traceback" not in r.stderr
    assert experiment_runs(f"sqlite:///{store}", "lossbench") == []  # no run was created

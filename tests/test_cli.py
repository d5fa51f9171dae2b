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


@pytest.mark.slow
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


@pytest.mark.slow
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
@pytest.mark.slow
def test_hydra_flags_behave_as_hydra_users_expect(tmp_path, args, expected):
    r = lossbench(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for text in expected:
        assert text in r.stdout
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
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
    parents = [r for r in runs if r.data.tags.get(S.TAG_KIND) == "sweep"]  # the sweep's own run, folding the jobs
    runs = [r for r in runs if r not in parents]
    assert len(parents) == 1 and {r.data.tags[S.TAG_PARENT] for r in runs} == {parents[0].info.run_id}
    assert sorted(r.data.tags[S.TAG_LOSS] for r in runs) == ["l1", "mse"]
    assert len({r.data.tags[S.TAG_SWEEP] for r in runs}) == 1


# ---------------------------------------------------------------------------- overrides, read by Hydra's parser
@pytest.mark.parametrize(
    "args",
    [
        ["-m", "loss=glob(*)"],
        ["-m", "loss=glob([m*,l1],exclude=mae)", "data=glob(reg*)"],
        ["-m", "loss=choice(mse,l1)", "seed=range(0,3)", "optimizer.lr=0.01,0.1"],
        ["-m", "loss=sort(mse,huber)", "data=regression_outliers", "data.outlier_fraction=range(0,0.3,0.1)"],
        ["-m", "optimizer.lr=interval(0.001,0.1)", "hydra/sweeper=optuna"],  # an optimizing sweeper samples it
        ["--cfg", "job", "~scheduler", "loss=huber", "loss.delta=2", "+trainer.foo=[1,2]", "data=csv", "data.path=/tmp/data/a-b.csv"],
    ],
    ids=["glob", "glob-include-exclude", "choice-range-list", "sort-float-range", "interval-optuna", "flags-and-plain"],
)
def test_the_pre_flight_check_reads_every_sweep_syntax(args):
    from lossbench.__main__ import preflight

    preflight(args)  # no error


@pytest.mark.parametrize(
    "args,words",
    [
        (["-m", "loss=glob(xyz*)"], ["loss=glob(xyz*) matches none of: ", "huber"]),
        (["-m", "loss=choice(mse,hubr)"], ["Unknown loss 'hubr'", "Did you mean 'huber'?"]),
        (["-m", "loss=mse", "data=range(0,2)"], ["Unknown data '0'"]),
        (["-m", "optimizer.lr=interval(0.001,0.1)"], ["cannot sample an interval", "choice(a,b,c)"]),
        (["loss=choice(mse"], ["Cannot read the override 'loss=choice(mse'"]),
    ],
    ids=["glob-matches-nothing", "choice-typo", "range-on-a-group", "interval-basic-sweeper", "malformed"],
)
def test_the_pre_flight_check_names_the_mistake(args, words):
    from lossbench.__main__ import preflight
    from lossbench.errors import LossbenchError

    with pytest.raises(LossbenchError) as e:
        preflight(args)
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value)


@pytest.mark.slow
def test_a_sweep_by_glob_and_range_runs_each_job_and_a_bad_glob_exits_2(tmp_path):
    r = lossbench(
        "-m", "loss=glob([mse,l1])", "seed=range(0,2)", "data=regression_outliers", "data.n_samples=200",
        "model=linear", "trainer.max_epochs=1", "tracking.experiment_name=globbed", cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [x for x in c.search_runs([c.get_experiment_by_name("globbed").experiment_id]) if S.TAG_KIND not in x.data.tags]
    assert sorted((x.data.tags[S.TAG_LOSS], x.data.params["seed"]) for x in runs) == [
        ("l1", "0"), ("l1", "1"), ("mse", "0"), ("mse", "1")
    ]
    bad = lossbench("-m", "loss=glob(hubr*)", "data=regression_outliers", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: loss=glob(hubr*) matches none of: ")
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

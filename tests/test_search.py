"""Hyperparameter search: real Optuna studies in a journal file, real MLflow, real (tiny) training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import pytest
import pytorch_lightning as pl
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from lossbench import LossbenchError, loss_info
from lossbench import schema as S
from lossbench import tracking
from lossbench.search import (
    ARTIFACT_BEST,
    LR_DIMENSION,
    TAG_BEST,
    SearchSettings,
    loss_space,
    normalize_overrides,
    run_search,
)
from lossbench.search.study import record_best

# 200 rows: about a second per trial on a CPU
DATA = ["data=regression_outliers", "data.n_samples=200", "trainer.max_epochs=2", "trainer.accelerator=cpu"]
TINY = [*DATA, "model=linear"]


@pytest.fixture
def search(mlflow_uri, tmp_path, request):
    """search(*overrides) -> (outcomes, printed lines), in this test's experiment and journal."""
    experiment = request.node.name.replace("[", "-").replace("]", "")[:200]
    journal = tmp_path / "studies.journal"

    def _search(*overrides: str, callbacks=()):
        model = [] if any(o.startswith("model=") for o in overrides) else ["model=linear"]
        lines: list[str] = []
        where = [f"tracking.uri={mlflow_uri}", f"tracking.experiment_name={experiment}", f"search.storage={journal}"]
        out = run_search(
            [*where, *DATA, *model, *overrides],
            printer=lines.append,
            callbacks=callbacks,
        )
        return out, lines

    _search.experiment = experiment
    _search.journal = journal
    return _search


def retried(trial) -> int | None:
    """The trial that ``trial`` runs again, as Optuna's retry callback records it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def load(journal: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(journal))))


def runs_of(uri: str, experiment: str, study: str | None = None) -> list:
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None
    flt = f"tags.{S.TAG_STUDY} = '{study}'" if study else ""
    runs = c.search_runs([exp.experiment_id], filter_string=flt, max_results=1000)
    return [r for r in runs if S.TAG_KIND not in r.data.tags]  # trials, not a study's parent run


def study_parent(uri: str, experiment: str, study: str):
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    found = c.search_runs([exp.experiment_id], filter_string=f"tags.{S.TAG_KIND} = 'study' and tags.{S.TAG_STUDY} = '{study}'")
    assert len(found) == 1, found
    return found[0]


def best_json(uri: str, run_id: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        with open(tracking.client(uri).download_artifacts(run_id, ARTIFACT_BEST, d)) as f:
            return json.load(f)


# ---------------------------------------------------------------------------- spaces and settings
def test_loss_space_comes_from_the_registry_and_the_settings():
    def settings(**search):
        node = {"n_trials": 3, "storage": "x.journal", "study_name": "s", **search}
        return SearchSettings.from_config(node)

    declared = loss_info("focal").search_space["gamma"]
    as_floats = {**declared, "low": float(declared["low"]), "high": float(declared["high"])}
    assert loss_space("focal", settings()) == {"loss.gamma": as_floats}
    with_lr = loss_space("focal", settings(tune_lr=True))
    assert with_lr["optimizer.lr"] == LR_DIMENSION == {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
    # a key set on the command line is held fixed
    assert loss_space("focal", settings(tune_lr=True), fixed={"loss.gamma"}) == {"optimizer.lr": LR_DIMENSION}
    # a user range replaces the declared one; a loss.<p> range only reaches losses that have p
    user = settings(space={"loss": {"gamma": {"type": "float", "low": 0.5, "high": 1.5}}})
    assert loss_space("focal", user)["loss.gamma"] == {"type": "float", "low": 0.5, "high": 1.5, "log": False}
    assert loss_space("ldam", user) == {f"loss.{k}": v for k, v in loss_info("ldam").search_space.items()}
    assert loss_space("mse", settings()) == {}


@pytest.mark.parametrize(
    "search,words",
    [
        ({"n_trials": 0}, ["search.n_trials", ">= 1"]),
        ({"timeout": -5}, ["search.timeout"]),
        (
            {"space": {"optimizer": {"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}}},
            ["optimizer.lr", "log", "> 0"],
        ),
        ({"space": {"optimizer": {"lr": {"type": "float", "low": 1.0, "high": 0.1}}}}, ["optimizer.lr", "above"]),
        ({"space": {"loss": {"gamma": {"type": "normal"}}}}, ["loss.gamma", "'normal'", "categorical"]),
        ({"space": {"loss": {"gamma": {"type": "categorical", "choices": []}}}}, ["loss.gamma", "choices"]),
        ({"space": {"loss": {"gamma": 2}}}, ["search.space.loss.gamma", "type: float"]),
    ],
)
def test_bad_settings_are_refused_with_the_key_named(search, words):
    node = {"n_trials": 3, "storage": "x.journal", "study_name": "s", **search}
    with pytest.raises(LossbenchError) as e:
        SearchSettings.from_config(node)
    for w in words:
        assert w in str(e.value)


def test_a_range_outside_what_the_loss_takes_is_refused():
    s = SearchSettings.from_config(
        {
            "n_trials": 3,
            "storage": "x",
            "study_name": "s",
            "space": {"loss": {"gamma": {"type": "float", "low": -1.0, "high": 2.0}}},
        }
    )
    with pytest.raises(LossbenchError) as e:
        loss_space("focal", s)
    assert "loss.gamma" in str(e.value) and "-1.0" in str(e.value) and "focal" in str(e.value)


def test_loss_comma_list_becomes_search_losses():
    expected = ["search.losses=[focal,ldam]", "loss=focal", "data=imbalanced"]
    assert normalize_overrides(["loss=focal,ldam", "data=imbalanced"]) == expected
    assert normalize_overrides(["loss=choice(focal,ldam)", "data=imbalanced"]) == expected
    assert normalize_overrides(["search.losses=focal,ldam"]) == ["search.losses=[focal,ldam]", "loss=focal"]
    assert normalize_overrides(["search.losses=[focal,ldam]", "loss=ldam"]) == ["search.losses=[focal,ldam]", "loss=ldam"]
    assert normalize_overrides(["loss=focal", "loss.gamma=1"]) == ["loss=focal", "loss.gamma=1"]
    # a glob, read by Hydra's parser, names the loss configs it matches; the list stays before the flags
    # (the configs with "focal" in their name: binary_focal, cb_focal, focal)
    globbed = normalize_overrides(["loss=glob(*focal*)", "data=imbalanced", "--cfg", "job"])
    assert globbed == ["search.losses=[binary_focal,cb_focal,focal]", "loss=binary_focal", "data=imbalanced", "--cfg", "job"]
    globbed = normalize_overrides(["loss=glob(*focal,exclude=cb_*)"])
    assert globbed == ["search.losses=[binary_focal,focal]", "loss=binary_focal"]
    with pytest.raises(LossbenchError, match="once"):
        normalize_overrides(["loss=focal,ldam", "search.losses=[mse]"])
    with pytest.raises(LossbenchError, match="Did you mean 'ldam'"):
        normalize_overrides(["loss=focal,ldamm"])


# ---------------------------------------------------------------------------- studies
@pytest.mark.slow
def test_every_loss_gets_the_same_budget_and_every_trial_is_a_tagged_run(search, mlflow_uri):
    outcomes, lines = search("search.losses=[huber,cauchy]", "search.n_trials=3")
    assert [o.loss for o in outcomes] == ["huber", "cauchy"]
    runs = runs_of(mlflow_uri, search.experiment)
    assert len(runs) == 6
    for o, param in zip(outcomes, ("delta", "c"), strict=True):
        study = load(search.journal, o.study_name)
        trials = study.get_trials()
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
        assert (o.complete, o.pruned, o.failed, o.budget) == (3, 0, 0, 3)
        mine = {int(r.data.tags[S.TAG_TRIAL]): r for r in runs if r.data.tags[S.TAG_STUDY] == o.study_name}
        assert sorted(mine) == [0, 1, 2]
        parent = study_parent(mlflow_uri, search.experiment, o.study_name)  # folds the study's trials in MLflow's UI
        assert {r.data.tags[S.TAG_PARENT] for r in mine.values()} == {parent.info.run_id}
        assert parent.info.status == "FINISHED" and parent.data.metrics["best_value"] == pytest.approx(o.best_value)
        assert parent.data.tags["best_run_id"] == o.best_run_id and parent.data.metrics["trials_complete"] == 3
        for t in trials:
            run = mine[t.number]
            assert run.info.status == "FINISHED" and run.data.tags[S.TAG_LOSS] == o.loss
            assert t.user_attrs["mlflow_run_id"] == run.info.run_id
            # the sampled value reached the loss, and the objective is the run's best validation value
            assert float(run.data.params[f"loss.{param}"]) == pytest.approx(t.params[f"loss.{param}"], rel=1e-12)
            assert json.loads(run.data.tags[S.TAG_LOSS_PARAMS])[param] == pytest.approx(t.params[f"loss.{param}"])
            history = tracking.client(mlflow_uri).get_metric_history(run.info.run_id, "val_rmse")
            assert t.value == pytest.approx(run.data.metrics[S.METRIC_BEST_VAL])
            assert t.value == pytest.approx(min(h.value for h in history))
            assert t.value != pytest.approx(run.data.metrics["test_rmse"])
        # the best trial (lowest validation RMSE) is marked, and only it
        best = min(trials, key=lambda t: t.value)
        tagged = [r for r in mine.values() if r.data.tags.get(TAG_BEST) == "true"]
        assert [r.info.run_id for r in tagged] == [best.user_attrs["mlflow_run_id"]] == [o.best_run_id]
        record = best_json(mlflow_uri, o.best_run_id)
        assert record["best_params"] == best.params == o.best_params
        assert record["best_value"] == pytest.approx(best.value)
        assert record["trials"] == {"complete": 3, "pruned": 0, "failed": 0, "budget": 3}
        assert record["study"] == o.study_name and record["objective"] == "val_rmse" and record["direction"] == "minimize"
        assert record["train_command"].startswith(f"python -m lossbench loss={o.loss} ")
    assert sum(1 for x in lines if " complete " in x) == 6


@pytest.mark.slow
def test_rerunning_continues_the_study_up_to_the_budget(search, mlflow_uri):
    first, _ = search("loss=huber", "search.n_trials=2")
    name = first[0].study_name
    assert [t.number for t in first[0].trials] == [0, 1]
    again, _ = search("loss=huber", "search.n_trials=4")
    assert [t.number for t in again[0].trials] == [2, 3]
    assert len(load(search.journal, name).get_trials()) == 4  # not 2 + 4
    assert len(runs_of(mlflow_uri, search.experiment, name)) == 4
    done, _ = search("loss=huber", "search.n_trials=4")  # the budget is spent: nothing runs
    assert done[0].trials == [] and done[0].complete == 4
    # exactly one run carries the best tag; moving the best moves the tag
    tagged = [r for r in runs_of(mlflow_uri, search.experiment, name) if r.data.tags.get(TAG_BEST) == "true"]
    assert [r.info.run_id for r in tagged] == [done[0].best_run_id]
    other = next(r.info.run_id for r in runs_of(mlflow_uri, search.experiment, name) if r.info.run_id != done[0].best_run_id)
    done[0].best_run_id = other
    record_best(done[0], mlflow_uri, tagged[0].info.experiment_id)
    tagged = [r for r in runs_of(mlflow_uri, search.experiment, name) if r.data.tags.get(TAG_BEST) == "true"]
    assert [r.info.run_id for r in tagged] == [other]
    # continuing with another config is refused: its trials would not compare
    with pytest.raises(LossbenchError) as e:
        search("loss=huber", "search.n_trials=6", "data.n_samples=300")
    assert name in str(e.value) and "data.n_samples: 200 -> 300" in str(e.value)


@pytest.mark.slow
def test_a_diverged_trial_fails_and_the_study_goes_on(search, mlflow_uri):
    # mse declares no hyperparameter; the user's space makes some trials diverge for real
    outcomes, lines = search(
        "loss=mse", "model=mlp", "search.n_trials=4", "+search.space.optimizer.lr={type:categorical,choices:[1e6,0.01]}"
    )
    o = outcomes[0]
    trials = load(search.journal, o.study_name).get_trials()
    assert len(trials) == 4 and o.budget == 4
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert failed and complete
    assert all(t.params["optimizer.lr"] == 1e6 and t.user_attrs["failure"] == "diverged" for t in failed)
    assert all(t.params["optimizer.lr"] == 0.01 for t in complete)
    assert min(t.number for t in failed) < max(t.number for t in complete)  # went on after a failure
    runs = {int(r.data.tags[S.TAG_TRIAL]): r for r in runs_of(mlflow_uri, search.experiment, o.study_name)}
    for t in failed:
        assert runs[t.number].info.status == "FAILED" and runs[t.number].data.tags[S.TAG_FAILURE] == S.FAILURE_DIVERGED
    assert (o.complete, o.failed) == (len(complete), len(failed))
    assert o.best_params == {"optimizer.lr": 0.01}
    assert any("failed    diverged" in x for x in lines)


@pytest.mark.parametrize("batch", [1, 2], ids=["one-by-one", "stacked-in-twos"])
@pytest.mark.slow
def test_hopeless_trials_are_pruned_and_recorded_as_killed(search, mlflow_uri, batch):
    outcomes, _ = search(
        "loss=huber",
        f"search.batch_size={batch}",
        "search.n_trials=5",
        "trainer.max_epochs=4",
        "search.pruner.n_startup_trials=1",
        "search.pruner.n_warmup_steps=0",
        # a learning rate that barely moves the model, or one that learns: the first kind is hopeless
        "+search.space.optimizer.lr={type:categorical,choices:[1e-5,0.1]}",
    )
    o = outcomes[0]
    trials = load(search.journal, o.study_name).get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and o.pruned == len(pruned) and len(trials) == 5
    runs = {int(r.data.tags[S.TAG_TRIAL]): r for r in runs_of(mlflow_uri, search.experiment, o.study_name)}
    c = tracking.client(mlflow_uri)
    for t in trials:
        run = runs[t.number]
        history = {h.step: h.value for h in c.get_metric_history(run.info.run_id, "val_rmse")}
        # what the pruner saw is the run's validation RMSE, epoch by epoch
        assert t.intermediate_values == pytest.approx(history)
        if t.state == TrialState.PRUNED:
            assert run.info.status == "KILLED" and run.data.tags["pruned"] == "true"
            assert max(t.intermediate_values) < 3  # stopped before the last epoch
            assert "test_rmse" not in run.data.metrics
        else:
            assert run.info.status == "FINISHED" and sorted(t.intermediate_values) == [0, 1, 2, 3]


def test_a_loss_with_nothing_to_tune_runs_once_in_a_database_storage(search, mlflow_uri, tmp_path):
    db = tmp_path / "studies.db"
    outcomes, lines = search("loss=mse", "search.n_trials=5", f"search.storage=sqlite:///{db}")
    o = outcomes[0]
    assert loss_info("mse").search_space == {}
    assert (o.budget, o.complete, len(o.trials)) == (1, 1, 1) and "no hyperparameters to tune" in o.note
    study = optuna.load_study(study_name=o.study_name, storage=f"sqlite:///{db}")
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] and study.best_params == {}
    assert db.exists() and not search.journal.exists()
    assert best_json(mlflow_uri, o.best_run_id)["best_params"] == {}


@pytest.mark.slow
def test_a_named_variant_keeps_its_parameters_and_a_command_line_value_is_held(mlflow_uri, tmp_path):
    outcomes = run_search(
        [
            "search.losses=[label_smoothing,focal]", "search.tune_lr=true", "optimizer.lr=0.01",
            "data=imbalanced", "data.n_max=100",
            "data.imbalance_ratio=10", "model=linear", "trainer.max_epochs=1", "trainer.accelerator=cpu",
            "search.n_trials=1", f"search.storage={tmp_path / 'j.journal'}", f"tracking.uri={mlflow_uri}",
            "tracking.experiment_name=variants",
        ],
        printer=lambda line: None,
    )
    smoothing, focal = outcomes
    # label_smoothing is cross_entropy with label_smoothing=0.1: that value is what it is, not searched
    assert smoothing.loss == "label_smoothing" and smoothing.study_name == "variants-imbalanced-label_smoothing"
    # and optimizer.lr, set on the command line, is held for every loss although tune_lr asks for it
    assert smoothing.space == {} and smoothing.fixed == ["loss.label_smoothing", "optimizer.lr"] and smoothing.budget == 1
    run = tracking.client(mlflow_uri).get_run(smoothing.best_run_id)
    assert run.data.params["loss.label_smoothing"] == "0.1" and run.data.tags[S.TAG_LOSS] == "cross_entropy"
    assert run.data.params["optimizer.lr"] == "0.01"
    assert focal.space == {"loss.gamma": {"type": "float", "low": 0.0, "high": 5.0, "log": False}}
    assert focal.fixed == ["optimizer.lr"] and 0.0 <= focal.best_params["loss.gamma"] <= 5.0
    assert tracking.client(mlflow_uri).get_run(focal.best_run_id).data.params["optimizer.lr"] == "0.01"


def test_mistakes_are_refused_before_any_trial(search, mlflow_uri):
    with pytest.raises(LossbenchError) as e:
        search("search.losses=[huber,focla]")
    assert "Did you mean 'focal'" in str(e.value)
    with pytest.raises(LossbenchError) as e:
        search("loss=huber", f"search.storage={mlflow_uri}")
    assert "MLflow database" in str(e.value)
    with pytest.raises(LossbenchError) as e:
        search("loss=huber", "+search.space.optimizer.momentum={type:float,low:0.1,high:0.9}")
    assert "optimizer.momentum" in str(e.value)
    with pytest.raises(LossbenchError) as e:
        search("search.losses=[huber,cauchy]", "+search.space.loss.gamma={type:float,low:0,high:1}")
    assert "gamma" in str(e.value) and "huber, cauchy" in str(e.value)
    assert not search.journal.exists()
    assert tracking.client(mlflow_uri).get_experiment_by_name(search.experiment) is None


class PressCtrlC(pl.Callback):
    """Sends this process a real SIGINT during the second epoch of the second trial."""

    def __init__(self) -> None:
        self.fits = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fits += 1

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.fits == 2 and trainer.current_epoch == 1:
            signal.raise_signal(signal.SIGINT)


@pytest.mark.slow
def test_an_interrupted_trial_runs_again_and_does_not_use_the_budget(search, mlflow_uri):
    with pytest.raises(KeyboardInterrupt):
        search("loss=huber", "search.n_trials=3", callbacks=[PressCtrlC()])
    study = load(search.journal, f"{search.experiment}-regression_outliers-huber")
    t0, t1, t2 = study.get_trials()
    assert t0.state == TrialState.COMPLETE
    assert t1.state == TrialState.FAIL and t1.user_attrs["failure"] == "interrupted"
    assert t2.state == TrialState.WAITING and retried(t2) == 1
    run = tracking.client(mlflow_uri).get_run(_run_of(mlflow_uri, search.experiment, 1))
    assert run.info.status == "KILLED"  # recorded by the pipeline as interrupted
    outcomes, _ = search("loss=huber", "search.n_trials=3")  # the same command again
    o = outcomes[0]
    assert [t.number for t in o.trials] == [2, 3]
    trials = load(search.journal, o.study_name).get_trials()
    assert trials[2].params == t1.params and trials[2].state == TrialState.COMPLETE
    assert (o.complete, o.failed, len(trials)) == (3, 0, 4)  # the interrupted trial is not counted


def _run_of(uri: str, experiment: str, number: int) -> str:
    return next(r.info.run_id for r in runs_of(uri, experiment) if r.data.tags.get(S.TAG_TRIAL) == str(number))


@pytest.mark.slow
def test_a_trial_left_running_by_a_killed_worker_runs_again(search, mlflow_uri):
    first, _ = search("loss=huber", "search.n_trials=1")
    name = first[0].study_name
    experiment_id = tracking.client(mlflow_uri).get_experiment_by_name(search.experiment).experiment_id
    # a worker that takes a trial, starts its MLflow run and dies without a word (as under kill -9)
    dead_worker = f"""
import os, socket, optuna
from mlflow import MlflowClient
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
study = optuna.load_study(study_name={name!r}, storage=JournalStorage(JournalFileBackend({str(search.journal)!r})))
trial = study.ask({{"loss.delta": optuna.distributions.FloatDistribution(0.05, 10.0, log=True)}})
trial.set_user_attr("worker", {{"host": socket.gethostname(), "pid": os.getpid()}})
tags = {{{S.TAG_STUDY!r}: {name!r}, {S.TAG_TRIAL!r}: str(trial.number)}}
MlflowClient({mlflow_uri!r}).create_run({experiment_id!r}, tags=tags)
os._exit(0)
"""
    subprocess.run([sys.executable, "-c", dead_worker], check=True, timeout=120)
    stale = load(search.journal, name).get_trials()[1]
    assert stale.state == TrialState.RUNNING
    orphan = _run_of(mlflow_uri, search.experiment, 1)
    assert tracking.client(mlflow_uri).get_run(orphan).info.status == "RUNNING"
    again, lines = search("loss=huber", "search.n_trials=2")
    trials = load(search.journal, name).get_trials()
    assert trials[1].state == TrialState.FAIL
    assert retried(trials[2]) == 1 and trials[2].params == stale.params
    assert trials[2].state == TrialState.COMPLETE and len(trials) == 3
    assert again[0].complete == 2 and [t.number for t in again[0].trials] == [2]
    assert any("left running by a stopped worker" in x for x in lines)
    assert tracking.client(mlflow_uri).get_run(orphan).info.status == "KILLED"


@pytest.mark.slow
def test_a_trial_whose_heartbeat_stopped_runs_again_on_a_database(search, mlflow_uri, tmp_path, monkeypatch):
    from lossbench.search import study as study_module

    db = f"sqlite:///{tmp_path / 'studies.db'}"
    first, _ = search("loss=huber", "search.n_trials=1", f"search.storage={db}")
    name = first[0].study_name
    experiment_id = tracking.client(mlflow_uri).get_experiment_by_name(search.experiment).experiment_id
    # a worker on another machine takes a trial, beats once, starts its run and dies: no pid to check
    dead_worker = f"""
import os, optuna
from mlflow import MlflowClient
storage = optuna.storages.RDBStorage({db!r}, heartbeat_interval=1)
study = optuna.load_study(study_name={name!r}, storage=storage)
trial = study.ask({{"loss.delta": optuna.distributions.FloatDistribution(0.05, 10.0, log=True)}})
trial.set_user_attr("worker", {{"host": "another-machine", "pid": 1}})
storage.record_heartbeat(trial._trial_id)
MlflowClient({mlflow_uri!r}).create_run({experiment_id!r}, tags={{{S.TAG_STUDY!r}: {name!r}, {S.TAG_TRIAL!r}: "1"}})
os._exit(0)
"""
    subprocess.run([sys.executable, "-W", "ignore", "-c", dead_worker], check=True, timeout=120)
    # within the grace period the trial may still be alive: it holds its place in the budget
    again, lines = search("loss=huber", "search.n_trials=2", f"search.storage={db}")
    assert again[0].trials == [] and optuna.load_study(study_name=name, storage=db).trials[1].state == TrialState.RUNNING
    monkeypatch.setattr(study_module, "GRACE_S", 2)
    time.sleep(3.5)  # SQLite's clock has whole seconds
    again, lines = search("loss=huber", "search.n_trials=2", f"search.storage={db}")
    trials = optuna.load_study(study_name=name, storage=db).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert retried(trials[2]) == 1 and trials[2].params == trials[1].params
    assert again[0].complete == 2 and [t.number for t in again[0].trials] == [2]
    assert any("#1  was left running by a stopped worker" in x for x in lines)
    assert tracking.client(mlflow_uri).get_run(_run_of(mlflow_uri, search.experiment, 1)).info.status == "KILLED"


# ---------------------------------------------------------------------------- command line
def _cli(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen(
        [sys.executable, "-m", "lossbench.search", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _trials(journal: Path, name: str) -> list:
    storage = JournalStorage(JournalFileBackend(str(journal)))
    if name not in optuna.get_all_study_names(storage):
        return []
    return optuna.load_study(study_name=name, storage=storage).get_trials()


@pytest.mark.slow
def test_the_command_and_a_second_worker_share_one_study(mlflow_uri, tmp_path):
    # one trial at a time, so that the two workers interleave (with batches, the worker that
    # finishes first sees only the trials finished by then; the budget stays exact either way)
    args = ["loss=huber", *TINY, "search.n_trials=6", "search.batch_size=1", f"tracking.uri={mlflow_uri}",
            "tracking.experiment_name=cli-workers"]
    command = _cli(args, tmp_path)
    journal = tmp_path / "optuna" / "cli-workers.journal"  # the default storage, apart from MLflow
    name = "cli-workers-regression_outliers-huber"
    deadline = time.monotonic() + 240
    while not (journal.exists() and _trials(journal, name)):  # the command has started its first trial
        assert command.poll() is None, command.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    lines: list[str] = []
    here = run_search([*args, f"search.storage={journal}"], printer=lines.append)  # a second worker
    out, err = command.communicate(timeout=300)
    assert command.returncode == 0, err[-3000:]
    assert "Best val_rmse per loss" in out and name in out and "optuna_best=true" in out
    trials = _trials(journal, name)
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)  # 6 in all, not 6 each
    assert {t.user_attrs["worker"]["pid"] for t in trials} <= {command.pid, os.getpid()}
    printed = [x for x in out.splitlines() + lines if x.startswith("huber  #")]
    assert sorted(int(x.split("#")[1].split()[0]) for x in printed) == list(range(6))  # each trial ran once
    assert here[0].used >= 5  # this worker saw the study up to the command's last trial
    runs = runs_of(mlflow_uri, "cli-workers")
    assert len(runs) == 6 and sum(r.data.tags.get(TAG_BEST) == "true" for r in runs) == 1


@pytest.mark.parametrize(
    "args,words",
    [
        (["search.losses=[focal,ldamm]", "data=imbalanced"], ["Unknown loss 'ldamm'", "Did you mean 'ldam'"]),
        (["-m", "loss=focal,ldam"], ["no -m/--multirun", "search.losses=[a,b]"]),
        (["loss=huber", *TINY, "search.n_trials=0"], ["search.n_trials must be an integer >= 1"]),  # inside the Hydra app
    ],
)
def test_a_mistake_on_the_command_line_exits_2_without_a_traceback(args, words, monkeypatch, tmp_path, capsys, mlflow_uri):
    from lossbench.search.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lossbench.search", *args, f"tracking.uri={mlflow_uri}"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2
    for w in words:
        assert w in err
    assert "Traceback" not in err


def _damaged_journal(path: Path) -> None:
    """A real journal with a line of garbage after its records."""
    optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    with open(path, "a") as f:
        f.write("oops\n{\"op_code\": 4\n")


STORAGE_MISTAKES = {  # name -> (writes the planted file under tmp, search.storage, words of the message)
    "folder-is-a-file": (lambda d: (d / "afile").write_text("x"), "afile/studies.journal",
                         "afile is a file, not a folder, so the storage cannot be made there"),
    "deep-folder-is-a-file": (lambda d: (d / "afile").write_text("x"), "afile/sub/studies.journal",
                              "afile is a file, not a folder"),
    "database-folder-is-a-file": (lambda d: (d / "afile").write_text("x"), "sqlite:///afile/optuna.db",
                                  "afile is a file, not a folder"),
    "garbage-journal": (lambda d: (d / "g.journal").write_text("time,loss\n1,0.5\n"), "g.journal",
                        "g.journal is not an Optuna journal (its first line is 'time,loss', not an Optuna record)"),
    "json-not-a-journal": (lambda d: (d / "g.journal").write_text('{"a": 1}\n'), "g.journal",
                           "is not an Optuna journal"),
    "binary-journal": (lambda d: (d / "g.journal").write_bytes(bytes(range(256))), "g.journal",
                       "is not an Optuna journal (it holds binary data"),
    "damaged-journal": (lambda d: _damaged_journal(d / "g.journal"), "g.journal",
                        "g.journal is not a readable Optuna journal (JSONDecodeError"),
    "garbage-database": (lambda d: (d / "o.db").write_text("not a database\n" * 100), "sqlite:///o.db",
                         "DatabaseError: (sqlite3.DatabaseError) file is not a database. Fix search.storage"),
}


@pytest.mark.parametrize("case", list(STORAGE_MISTAKES))
def test_a_bad_storage_is_one_line_and_exit_2_before_any_trial(case, monkeypatch, tmp_path, capsys, mlflow_uri):
    from lossbench.search.__main__ import main

    plant, storage, words = STORAGE_MISTAKES[case]
    plant(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    experiment = f"storage-{case}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [
        "lossbench.search", "loss=huber", *TINY, "search.n_trials=1", f"search.storage={storage}",
        f"tracking.uri={mlflow_uri}", f"tracking.experiment_name={experiment}",
    ])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2, err[-3000:]
    assert words in err and "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "search.storage" in lines[0], err  # names the setting
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # the file is left as it was
    assert tracking.client(mlflow_uri).get_experiment_by_name(experiment) is None  # no trial ran


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_storage_in_a_read_only_folder_is_one_line(tmp_path, mlflow_uri):
    from lossbench.search.study import open_storage

    (tmp_path / "ro").mkdir(mode=0o555)
    try:
        with pytest.raises(LossbenchError, match="cannot be written .*name a file in a folder you can write to"):
            open_storage(str(tmp_path / "ro" / "studies.journal"), mlflow_uri)
    finally:
        (tmp_path / "ro").chmod(0o755)


@pytest.fixture
def ctrl_c_loss():
    """A user's loss (searchable scale) whose Nth call presses Ctrl-C: a real SIGINT in a stacked group."""
    from torch import nn

    from lossbench import Param, Search
    from lossbench.registry import LOSSES, register_loss

    state = {"calls": 0, "at": None}

    class PressesCtrlC(nn.Module):
        def __init__(self, scale: float = 1.0, reduction: str = "mean"):
            super().__init__()
            self.scale = scale

        def forward(self, pred, target):
            state["calls"] += 1
            if state["calls"] == state["at"]:
                signal.raise_signal(signal.SIGINT)
            return self.scale * (pred - target).abs().mean()

    register_loss(
        "presses_ctrl_c", tasks=("regression",), description="test", reference="test",
        params=[Param("scale", 1.0, "float", low=0.0, closed="neither", search=Search.float(0.1, 10.0, log=True))],
    )(PressesCtrlC)
    yield state
    LOSSES._specs.pop("presses_ctrl_c", None)


@pytest.mark.slow
def test_trials_trained_together_share_the_budget_and_run_again_after_ctrl_c(search, mlflow_uri, ctrl_c_loss):
    ctrl_c_loss["at"] = 5  # a few steps into the first group of two trials
    with pytest.raises(KeyboardInterrupt):
        search("loss=mae", "loss.name=presses_ctrl_c", "search.batch_size=2", "search.n_trials=3")
    (name,) = {r.data.tags[S.TAG_STUDY] for r in runs_of(mlflow_uri, search.experiment)}
    t0, t1, w0, w1 = load(search.journal, name).get_trials()
    assert t0.state == t1.state == TrialState.FAIL
    assert t0.user_attrs["failure"] == t1.user_attrs["failure"] == "interrupted"
    assert (w0.state, retried(w0), retried(w1)) == (TrialState.WAITING, 0, 1)
    runs = runs_of(mlflow_uri, search.experiment)
    assert sorted((r.info.status, r.data.tags[S.TAG_ENGINE]) for r in runs) == [("KILLED", "batched")] * 2
    ctrl_c_loss["at"] = None
    outcomes, lines = search("loss=mae", "loss.name=presses_ctrl_c", "search.batch_size=2", "search.n_trials=3")
    o = outcomes[0]
    assert [t.number for t in o.trials] == [2, 3, 4] and (o.complete, o.failed) == (3, 0)
    trials = load(search.journal, name).get_trials()
    assert trials[2].params == t0.params and trials[3].params == t1.params
    groups = {}
    for r in runs_of(mlflow_uri, search.experiment):
        if r.info.status == "FINISHED":
            groups.setdefault(r.data.tags[S.TAG_GROUP], []).append(int(r.data.tags[S.TAG_TRIAL]))
    assert sorted(map(sorted, groups.values())) == [[2, 3], [4]]  # two at a time, then the last one

"""One experiment end to end: real Hydra composition, real Lightning training, real MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lossbench import LossbenchError, pipeline
from lossbench import schema as S
from lossbench import tracking

FAST = ["trainer.max_epochs=2"]
REG_SMALL = ["loss=l1", "data=regression_outliers", "data.n_samples=200", "model=linear"]


def get_run(uri: str, run_id: str):
    return tracking.client(uri).get_run(run_id)


def test_focal_on_imbalanced_logs_a_complete_run(compose, mlflow_uri):
    cfg = compose("loss=focal", "data=imbalanced", "data.n_max=120", "trainer.max_epochs=3")
    r = pipeline.run(cfg, overrides="loss=focal data=imbalanced")
    assert r.status == "FINISHED", r.message
    run = get_run(mlflow_uri, r.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "focal-imbalanced-s0"
    tags = run.data.tags
    assert tags[S.TAG_LOSS] == "focal" and tags[S.TAG_DATA] == "imbalanced" and tags[S.TAG_MODEL] == "mlp"
    assert tags[S.TAG_TASK] == "multiclass" and tags[S.TAG_SEED] == "0"
    assert tags[S.TAG_OBJECTIVE] == "balanced_accuracy" and tags[S.TAG_OBJECTIVE_MODE] == "max"
    assert tags[S.TAG_OVERRIDES] == "loss=focal data=imbalanced"
    assert tags[S.TAG_SCENARIO].startswith("imbalanced(") and "imbalance_ratio=100.0" in tags[S.TAG_SCENARIO]
    assert json.loads(tags[S.TAG_LOSS_PARAMS]) == {"gamma": 2.0, "alpha": None, "drw_epoch": None, "drw_beta": 0.9999}
    assert len(tags[S.TAG_CONFIG_HASH]) == 16
    params = run.data.params
    assert params["loss.name"] == "focal" and params["loss.gamma"] == "2.0"
    assert params["optimizer.lr"] == "0.001" and params["data.n_max"] == "120"
    assert params["data_info.num_classes"] == "10"
    metrics = run.data.metrics
    for m in S.CLASSIFICATION_METRICS:
        assert f"test_{m}" in metrics, m
    assert all(f"test_recall_class_{k}" in metrics for k in range(10))
    assert 0.0 <= metrics["test_balanced_accuracy"] <= 1.0
    assert metrics[S.METRIC_BEST_VAL] == pytest.approx(max(
        h.value for h in tracking.client(mlflow_uri).get_metric_history(r.run_id, "val_balanced_accuracy")
    ))
    history = tracking.client(mlflow_uri).get_metric_history(r.run_id, "train_loss")
    assert sorted(h.step for h in history) == [0, 1, 2]  # one point per epoch, step = epoch
    artifacts = {a.path for a in tracking.client(mlflow_uri).list_artifacts(r.run_id)}
    assert {S.ARTIFACT_CONFIG, S.ARTIFACT_PER_CLASS, S.ARTIFACT_CURVES} <= artifacts

    assert [h.step for h in tracking.client(mlflow_uri).get_metric_history(r.run_id, "test_balanced_accuracy")] == [3]


def test_only_lossbench_ends_a_run_not_lightning(compose, mlflow_uri):
    """An interrupt after the test but before the record leaves the run KILLED: Lightning's
    end of fit and test must not have marked it FINISHED without its test metrics."""
    import pytorch_lightning as pl

    cfg = compose("loss=mse", "data=regression_outliers", "data.n_samples=200", "tracking.skip_finished=false", *FAST)
    exp = tracking.ensure_experiment(mlflow_uri, str(cfg.tracking.experiment_name))

    def latest():
        return tracking.client(mlflow_uri).search_runs([exp], order_by=["attributes.start_time DESC"], max_results=1)[0]

    class InterruptAfterTest(pl.Callback):
        seen: list[str] = []

        def on_test_start(self, trainer, module):  # fit has ended: the run must still be open
            self.seen.append(latest().info.status)

        def on_test_end(self, trainer, module):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.run(cfg, callbacks=[InterruptAfterTest()])
    runs = [latest()]
    assert InterruptAfterTest.seen == ["RUNNING"]
    assert runs[0].info.status == "KILLED"
    assert "test_rmse" not in runs[0].data.metrics and "train_loss" in runs[0].data.metrics


def test_a_run_ends_once_and_the_first_status_stays(mlflow_uri):
    exp = tracking.ensure_experiment(mlflow_uri, "run-object")
    run = tracking.Run.start(mlflow_uri, exp, "r", {"k": "v", "none": None}, {"a.b": 1, "long": "x" * 7000})
    run.log_metrics(tracking.metrics_at([(0, {"m": 1.0}), (1, {"m": 0.5})]))
    run.end("FAILED", {"why": "test"}, metrics=tracking.metrics_at([(2, {"m": 0.25})]), artifacts={"a.txt": "hi", "b.json": {"x": 1}})
    run.end("FINISHED")  # a later end (say, a Ctrl-C handler) leaves the record alone
    got = tracking.client(mlflow_uri).get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.tags["why"] == "test" and "none" not in got.data.tags
    assert got.data.params["a.b"] == "1" and got.data.params["long"].endswith("...") and len(got.data.params["long"]) == 6000
    assert [(h.step, h.value) for h in tracking.client(mlflow_uri).get_metric_history(run.run_id, "m")] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert {a.path for a in tracking.client(mlflow_uri).list_artifacts(run.run_id)} == {"a.txt", "b.json"}


def test_artifacts_stay_beside_a_sqlite_store_whatever_folder_a_run_starts_in(mlflow_uri, tmp_path, monkeypatch):
    """MLflow would put a new experiment's artifacts in ./mlruns of the folder the process started in;
    lossbench keeps a SQLite store's beside it, so runs started from any folder write where the store is."""
    store = tracking.sqlite_path(mlflow_uri).parent.resolve()
    monkeypatch.chdir(tmp_path)
    exp = tracking.ensure_experiment(mlflow_uri, "elsewhere: a/b")
    run = tracking.Run.start(mlflow_uri, exp, "r", {}, {})
    run.end("FINISHED", artifacts={"a.txt": "hi"})
    where = Path(tracking.client(mlflow_uri).get_experiment(exp).artifact_location)
    assert where.parent == store / "mlruns" and where.name.startswith("elsewhere_a_b-")
    assert (where / run.run_id / "artifacts" / "a.txt").read_text() == "hi" and not (tmp_path / "mlruns").exists()


def test_a_sqlite_uri_with_a_query_string_names_the_same_file(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}?timeout=30"
    assert tracking.sqlite_path(uri) == db and tracking.sqlite_path("postgresql://h/db") is None
    exp = tracking.ensure_experiment(uri, "query")
    assert db.is_file() and not [p.name for p in db.parent.iterdir() if "?" in p.name]
    assert Path(tracking.client(uri).get_experiment(exp).artifact_location).parent == db.parent.resolve() / "mlruns"


@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_data_objective_selects_on_validation_and_ranks_on_test(compose, mlflow_uri, engine):
    cfg = compose(*REG_SMALL, "data.objective=median_ae", f"engine={engine}", "tracking.skip_finished=false", "trainer.max_epochs=4")
    if engine == "batched":
        from lossbench.engine import run_jobs

        r = run_jobs([(0, cfg, "")], engine="batched")[0]
    else:
        r = pipeline.run(cfg)
    assert r.status == "FINISHED", r.message
    run = get_run(mlflow_uri, r.run_id)
    assert run.data.tags[S.TAG_OBJECTIVE] == "median_ae" and run.data.tags[S.TAG_OBJECTIVE_MODE] == "min"
    assert "objective=median_ae" in run.data.tags[S.TAG_SCENARIO]
    history = tracking.client(mlflow_uri).get_metric_history(r.run_id, "val_median_ae")
    assert run.data.metrics[S.METRIC_BEST_VAL] == pytest.approx(min(h.value for h in history))


def test_an_objective_the_task_does_not_log_is_refused(compose):
    with pytest.raises(LossbenchError, match="objective must be one of 'loss', 'mse', 'rmse'"):
        pipeline.prepare(compose(*REG_SMALL, "data.objective=balanced_accuracy"))


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_other_metrics(compose):
    base = ["loss=cross_entropy", "data=imbalanced", "data.n_max=100", "tracking.skip_finished=false", *FAST]
    a = pipeline.run(compose(*base))
    b = pipeline.run(compose(*base))
    c = pipeline.run(compose(*base, "seed=1"))
    assert a.metrics == b.metrics
    assert a.metrics["test_nll"] != c.metrics["test_nll"]


@pytest.mark.slow
def test_huber_on_regression_outliers_reports_original_units(compose, mlflow_uri):
    cfg = compose("loss=huber", "data=regression_outliers", "data.n_samples=400", "model=linear", *FAST)
    r = pipeline.run(cfg)
    assert r.status == "FINISHED"
    m = r.metrics
    for name in S.REGRESSION_METRICS:
        assert f"test_{name}" in m
    assert m["test_rmse"] == pytest.approx(math.sqrt(m["test_mse"]), rel=1e-6)
    # metrics are in the targets' units, not the normalised ones the model trains on
    scale = float(get_run(mlflow_uri, r.run_id).data.params["data_info.target_scale"])
    assert scale != pytest.approx(1.0)
    run = get_run(mlflow_uri, r.run_id)
    assert run.data.tags[S.TAG_OBJECTIVE] == "rmse" and run.data.tags[S.TAG_OBJECTIVE_MODE] == "min"


@pytest.mark.parametrize(
    "loss,outputs",
    [("bce", 1), ("binary_focal", 1), ("cross_entropy", 2)],
)
@pytest.mark.slow
def test_binary_data_with_binary_and_multiclass_losses(compose, loss, outputs):
    p = pipeline.prepare(compose(f"loss={loss}", "data=breast_cancer", *FAST))
    x, _ = p.datamodule.tensors("train")
    assert p.net(x[:3]).shape == (3, outputs)
    r = pipeline.run(compose(f"loss={loss}", "data=breast_cancer", *FAST))
    assert r.status == "FINISHED" and r.metrics["test_auroc"] > 0.8


@pytest.mark.slow
def test_distribution_loss_trains_on_class_labels(compose):
    r = pipeline.run(compose("loss=js_div", "data=digits_lt", *FAST))
    assert r.status == "FINISHED" and 0 <= r.metrics["test_accuracy"] <= 1


def test_class_counts_from_the_data_reach_the_loss(compose):
    p = pipeline.prepare(compose("loss=ldam", "data=imbalanced", "data.n_max=100", *FAST))
    counts = torch.tensor(p.info.class_counts, dtype=torch.float64)
    margins = p.loss.margins.double()  # LDAM: m_c proportional to n_c^(-1/4), largest = max_m
    expected = counts.pow(-0.25)
    expected = expected / expected.max() * 0.5
    torch.testing.assert_close(margins, expected)


def test_adaptive_barron_parameters_move_during_training(compose):
    import pytorch_lightning as pl

    from lossbench.models.module import LossbenchModule

    p = pipeline.prepare(compose("loss=barron", "loss.adaptive=true", "data=regression_outliers", "data.n_samples=300"))
    before = {k: v.detach().clone() for k, v in p.loss.named_parameters()}
    module = LossbenchModule(p.net, p.loss, p.optimizer, p.info, p.kind)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=pipeline.lightning_datamodule(p.datamodule))
    after = dict(p.loss.named_parameters())
    assert any(not torch.equal(before[k], after[k].detach()) for k in before)


def test_loss_that_does_not_fit_the_data_is_refused_before_any_run(compose, mlflow_uri):
    cfg = compose("loss=mse", "data=imbalanced", experiment_name="mismatch")
    with pytest.raises(LossbenchError) as e:
        pipeline.run(cfg)
    msg = str(e.value)
    assert "'mse' is for regression" in msg and "multiclass" in msg
    assert "focal" in msg and "cross_entropy" in msg  # lists the losses that do fit
    assert tracking.client(mlflow_uri).get_experiment_by_name("mismatch") is None  # nothing created


@pytest.mark.parametrize(
    "overrides",
    [
        ["data=digits_lt", "model=linear"],
        ["data=digits_lt", "data.as_image=true", "model=cnn"],
        ["data=digits_lt", "data.as_image=true", "model=resnet32"],
        ["data=diabetes", "loss=l1", "model=mlp"],
        ["data=diabetes", "loss=quantile", "data.outlier_fraction=0.1", "data.normalize=robust"],
        ["data=imbalanced", "loss=combo", "data.n_max=100", "data.normalize=minmax"],
    ],
    ids=["linear", "cnn", "resnet32", "mlp-regression", "quantile-robust-norm", "combo-minmax"],
)
@pytest.mark.slow
def test_model_and_data_paths_train(compose, overrides):
    r = pipeline.run(compose(*overrides, "trainer.max_epochs=1", "+trainer.limit_train_batches=2"))
    assert r.status == "FINISHED", r.message
    assert all(np.isfinite(v) or k.endswith("_shot_accuracy") or "recall_class" in k for k, v in r.metrics.items())


@pytest.mark.slow
def test_csv_data_end_to_end(compose, tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    df = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "color": rng.choice(["red", "blue"], 300), "y": x @ [1.0, -2.0, 0.5] + 3})
    path = tmp_path / "table.csv"
    df.to_csv(path, index=False)
    r = pipeline.run(compose("data=csv", f"data.path={path}", "data.target=y", "loss=huber", *FAST))
    assert r.status == "FINISHED" and r.metrics["test_r2"] > 0.0

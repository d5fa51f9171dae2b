"""The Python API: ``lossbench.run``, ``lossbench.sweep``, ``lossbench.choose`` with real runs in a real store."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pandas as pd
import pytest

import lossbench
from lossbench.api import overrides_from
from lossbench.errors import LossbenchError

SMALL = {"data": "regression_outliers", "data__n_samples": 200, "trainer__max_epochs": 2}


def test_one_value_writer_for_every_override_hydra_reads_back_the_same_value():
    from lossbench.overrides import parse, value_text

    values = [None, True, False, 0, 3, 0.1, 1e-05, 12340.0, float("inf"), "mse", "my data.csv", "it's", "a\\b",
              "C:\\my data\\", "a\\'b", [1, 2.5], {"name": "mse", "weight": 0.5, "params": {}}, [{"name": "l1", "weight": 1.0}],
              # strings Hydra would read bare as something else: numbers, bools, null; non-ASCII; a last newline
              "10", "1e3", "-1", "true", "TRUE", "null", "NaN", "", "josé/données.csv", "abc\n", "a\\\n"]
    for v in values:
        got = parse(f"loss.x={value_text(v)}").value()
        assert got == v and type(got) is type(v), v
    assert value_text(None) == "null" and value_text(True) == "true" and value_text(0.1) == "0.1"
    assert value_text("mse") == "mse" and value_text("/data/my.csv") == "/data/my.csv"  # bare where that is safe
    # numpy values, say from np.logspace, are written as the Python values they hold
    np = pytest.importorskip("numpy")
    assert [value_text(v) for v in (np.float64(0.5), np.int64(3), np.bool_(True), np.array([1.0, 2.0]))] == [
        "0.5", "3", "true", "[1.0,2.0]"]


def test_keywords_become_the_command_lines_overrides():
    assert overrides_from(["loss=huber"], {"data__outlier_fraction": 0.3, "model.hidden": [8, 8], "seed": 2}) == [
        "loss=huber", "data.outlier_fraction=0.3", "model.hidden=[8,8]", "seed=2"]
    assert overrides_from([], {"seed": range(3), "loss": ["mse", "l1"]}, sweep=True) == ["seed=0,1,2", "loss=mse,l1"]
    assert overrides_from([], {"trainer__deterministic": True, "data__features": None, "data__path": "my data.csv"}) == [
        "trainer.deterministic=true", "data.features=null", "data.path='my data.csv'"]
    assert overrides_from([], {"seeds": 7, "loss": "x"}, shortcuts={"seeds"}, prefix="choose.") == [
        "choose.seeds=7", "loss=x"]
    with pytest.raises(LossbenchError, match="empty list"):
        overrides_from([], {"seed": []}, sweep=True)


def test_the_api_names_are_callable_and_the_modules_still_resolve():
    from hydra.utils import get_class

    import lossbench.sweep  # the module of the same name

    assert callable(lossbench.sweep) and callable(lossbench.choose) and callable(lossbench.run)
    assert get_class("lossbench.sweep.SweepCallback").__name__ == "SweepCallback"
    assert importlib.import_module("lossbench.choose.flow").run_choose
    assert {"run", "sweep", "choose"} <= set(dir(lossbench))


@pytest.mark.slow
def test_run_returns_its_mlflow_row_and_a_second_call_finds_it(mlflow_uri):
    kw = {**SMALL, "loss": "huber", "loss__delta": 0.5, "tracking__uri": mlflow_uri, "tracking__experiment_name": "api-run"}
    df = lossbench.run(**kw)
    assert isinstance(df, pd.DataFrame) and len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "FINISHED" and row["tags.loss"] == "huber" and row["params.loss.delta"] == "0.5"
    assert np.isfinite(row["metrics.test_rmse"])
    again = lossbench.run("loss=huber", "loss.delta=0.5", **{k: v for k, v in kw.items() if not k.startswith("loss")})
    assert list(again["run_id"]) == list(df["run_id"])  # skipped: the same config already FINISHED


@pytest.mark.slow
def test_sweep_trains_every_combination_together(mlflow_uri):
    df = lossbench.sweep("loss=mse,l1", seed=range(2), tracking__uri=mlflow_uri, tracking__experiment_name="api-sweep",
                         **SMALL)
    assert len(df) == 4 and set(df["status"]) == {"FINISHED"}
    assert sorted(zip(df["tags.loss"], df["tags.seed"], strict=True)) == [("l1", "0"), ("l1", "1"), ("mse", "0"), ("mse", "1")]
    assert set(df["tags.engine"]) == {"batched"} and df["tags.engine_group"].nunique() == 1
    assert df["tags.sweep_id"].nunique() == 1 and df["tags.sweep_id"].iloc[0].startswith("api_")


def test_a_mistake_is_refused_before_any_run(mlflow_uri):
    from lossbench import tracking

    with pytest.raises(LossbenchError, match="Did you mean 'huber'"):
        lossbench.sweep("loss=hubr,mse", tracking__uri=mlflow_uri, tracking__experiment_name="api-bad")
    with pytest.raises(LossbenchError, match="delta"):
        lossbench.run(loss="huber", loss__delta=-1, tracking__uri=mlflow_uri, tracking__experiment_name="api-bad", **SMALL)
    assert tracking.client(mlflow_uri).get_experiment_by_name("api-bad") is None
    frame = pd.DataFrame({"a": [1.0, 2.0], "y": [0.0, 1.0]})
    with pytest.raises(LossbenchError, match="'price' is not a column.*Columns: a, y"):
        lossbench.choose(frame, target="price")
    with pytest.raises(LossbenchError, match="takes a pandas DataFrame"):
        lossbench.choose(frame.to_numpy(), target="y")
    with pytest.raises(LossbenchError, match="reads the DataFrame as its data"):
        lossbench.choose(frame, "y", "data=diabetes")


def _frame(n: int = 600, noise: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Three well-separated classes of different sizes, a share ``noise`` of labels moved to another class."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.75, 0.2, 0.05])
    x = rng.standard_normal((n, 4)) + 5.0 * np.eye(3, 4)[y]
    flip = rng.choice(n, int(noise * n), replace=False)
    y[flip] = (y[flip] + rng.integers(1, 3, flip.size)) % 3
    df = pd.DataFrame(x, columns=list("abcd"))
    df["label"] = np.array(["cat", "dog", "eel"])[y]
    return df


def test_choose_profile_only_on_a_dataframe(tmp_path, mlflow_uri):
    out = tmp_path / "rep"
    r = lossbench.choose(_frame(), target="label", profile_only=True, tracking__uri=mlflow_uri, report__out_dir=str(out))
    assert r.profile["task"] == "multiclass" and r.runs.empty and r.summary is None and r.recommended is None
    assert r.profile["class_names"] == ["cat", "dog", "eel"]
    assert abs(r.profile["label_noise"]["value"] - 0.2) <= 0.07 and r.profile["imbalance_ratio"] >= 3
    assert list(r.shortlist.columns) == ["loss", "answers", "reasons", "params"]
    assert r.shortlist["loss"].iloc[0] == "cross_entropy" and "combo" in set(r.shortlist["loss"])
    data = json.loads(r.profile_json.read_text())
    assert data["imbalance_ratio"] == r.profile["imbalance_ratio"] and data["label_noise"] == r.profile["label_noise"]["value"]
    tables = list(out.glob("table-*.csv"))
    assert len(tables) == 1 and pd.read_csv(tables[0]).shape == (600, 5)


@pytest.mark.slow
def test_choose_on_a_dataframe_returns_runs_and_the_recommendation(tmp_path, mlflow_uri):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 3))
    df = pd.DataFrame(x, columns=["u", "v", "w"])
    df["y"] = x @ np.array([1.0, -1.0, 0.5]) + 0.2 * rng.standard_normal(300)
    df.loc[rng.choice(300, 45, replace=False), "y"] += 8.0
    r = lossbench.choose(df, target="y", variants=1, max_per_trait=1, trainer__max_epochs=2, tracking__uri=mlflow_uri,
                         tracking__experiment_name="api-choose", report__out_dir=str(tmp_path / "rep"),
                         report__appendix=False)
    losses = list(r.shortlist["loss"])
    assert losses[0] == "mse" and len(losses) >= 2
    assert len(r.runs) == len(losses) * 10 and set(r.runs["status"]) == {"FINISHED"}  # 10 seeds: the default
    assert set(r.runs["tags.loss"]) == set(losses)
    assert r.recommended.split("(")[0] in losses and set(r.ranking["loss"]) == set(losses)  # e.g. welsch(c=1)
    assert r.report_md is not None and "profile and shortlist" in r.report_md.read_text()

"""``python -m lossbench.choose``: each trait of the profile against data with a known answer, the
shortlist's rules, the fair plan, bad input, and the whole command on a small table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from lossbench import tracking
from lossbench.choose import plan as P
from lossbench.choose.flow import compose, job_config, run_choose
from lossbench.choose.profile import measure, profile_config
from lossbench.choose.shortlist import BASELINE, default_objective, shortlist
from lossbench.errors import DataError, LossbenchError, ParameterError
from lossbench.registry import loss_info


def profile_of(*overrides: str, max_rows: int = 5000) -> dict:
    cfg = compose(list(overrides))
    return profile_config(OmegaConf.to_container(job_config(cfg), resolve=True), max_rows=max_rows)


def digits_table(path: Path, noise: float, seed: int = 1, pairs: tuple[int, int] | None = None) -> Path:
    """scikit-learn's digits as a CSV, a share ``noise`` of labels moved to another class
    (uniformly, or between the two classes of ``pairs`` only)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    y = y.copy()
    if pairs is None:
        flip = rng.choice(len(y), int(round(noise * len(y))), replace=False)
        y[flip] = (y[flip] + rng.integers(1, 10, flip.size)) % 10
    else:
        a, b = pairs
        for src, dst in ((a, b), (b, a)):
            idx = np.flatnonzero(y == src)
            flip = rng.choice(idx, int(round(noise * idx.size)), replace=False)
            y[flip] = dst
    df = pd.DataFrame(x, columns=[f"p{i}" for i in range(64)])
    df["digit"] = y
    df.to_csv(path, index=False)
    return path


def regression_table(path: Path, n: int = 2000, outliers: float = 0.2, seed: int = 0) -> Path:
    """A linear table whose targets carry gross errors in every split (as real data does)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 1.0]) + 0.3 * rng.standard_normal(n)
    bad = rng.choice(n, int(round(outliers * n)), replace=False)
    y[bad] += rng.choice([-1.0, 1.0], bad.size) * 10 * rng.uniform(0.5, 1.5, bad.size)
    df = pd.DataFrame(x, columns=[f"x{j}" for j in range(5)])
    df["y"] = y
    df.to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- regression traits
@pytest.mark.slow
def test_outlier_fraction_recovers_injected_gross_errors():
    p = profile_of("data=regression_outliers", "data.outlier_fraction=0.2")
    est = p["outlier_fraction"]
    assert abs(est["value"] - 0.2) <= 0.05
    assert est["ci"][0] <= 0.2 <= est["ci"][1] + 0.01
    clean = profile_of("data=regression_outliers", "data.outlier_fraction=0")
    assert clean["outlier_fraction"]["value"] < 0.01
    assert p["task"] == "regression" and p["n_samples"] == 1200  # 2000 rows, 60% train


@pytest.mark.slow
def test_leverage_points_in_x_are_found_by_robust_distance():
    p = profile_of("data=regression_outliers", "data.outlier_type=x_leverage", "data.outlier_fraction=0.1")
    assert abs(p["leverage_fraction"]["value"] - 0.1) <= 0.03
    clean = profile_of("data=regression_outliers", "data.outlier_fraction=0")
    assert clean["leverage_fraction"]["ci"][0] < 0.01


@pytest.mark.slow
def test_heteroscedasticity_skew_and_tails_have_known_answers():
    rng = np.random.default_rng(0)
    n = 2000
    x = rng.standard_normal((n, 3))
    signal = x @ np.array([1.0, 0.5, -1.0])
    hetero = measure(x, signal + 0.2 * (1 + np.abs(x[:, 0]) * 2) * rng.standard_normal(n), "regression")
    homo = measure(x, signal + 0.3 * rng.standard_normal(n), "regression")
    assert hetero["heteroscedasticity"]["detected"] and hetero["heteroscedasticity"]["p_value"] < 1e-6
    assert not homo["heteroscedasticity"]["detected"]
    # a Gaussian target: skewness and excess kurtosis 0; an exponential one: 2 and 6
    gauss = homo["target"]
    assert gauss["skew"]["ci"][0] <= 0 <= gauss["skew"]["ci"][1]
    assert gauss["excess_kurtosis"]["ci"][0] <= 0 <= gauss["excess_kurtosis"]["ci"][1]
    expo = measure(x, rng.exponential(size=n), "regression")["target"]
    assert expo["skew"]["ci"][0] <= 2 <= expo["skew"]["ci"][1] + 0.2
    assert expo["excess_kurtosis"]["value"] > 3


def test_near_duplicates_count_copies_and_conflicts():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 4))
    y = rng.integers(0, 3, 500)
    x = np.vstack([x, x[:30] + 1e-6])  # 30 copies, 10 of them with another label
    y = np.concatenate([y, y[:20], (y[20:30] + 1) % 3])
    p = measure(x, y, "multiclass")
    assert p["near_duplicates"]["count"] == 30
    assert p["near_duplicates"]["conflicting_groups"] == 10
    assert p["near_duplicates"]["ci"][0] <= 30 / 530 <= p["near_duplicates"]["ci"][1]


# --------------------------------------------------------------------------- classification traits
@pytest.mark.slow
def test_imbalance_ratio_and_counts_are_exact():
    p = profile_of("data=imbalanced", "data.imbalance_ratio=100")
    assert p["imbalance_ratio"] == 100.0
    assert p["class_counts"][0] == 500 and p["class_counts"][-1] == 5
    assert p["shape"] == "exponential"
    step = profile_of("data=imbalanced", "data.imbalance_ratio=10", "data.profile=step")
    assert step["imbalance_ratio"] == 10.0 and step["shape"] == "step"


@pytest.mark.slow
def test_label_noise_on_digits_is_estimated_by_confident_learning(tmp_path):
    noisy = profile_of("data=csv", f"data.path={digits_table(tmp_path / 'noisy.csv', 0.3)}", "data.target=digit")
    assert abs(noisy["label_noise"]["value"] - 0.3) <= 0.05
    clean = profile_of("data=csv", f"data.path={digits_table(tmp_path / 'clean.csv', 0.0)}", "data.target=digit")
    assert clean["label_noise"]["value"] < 0.03
    assert noisy["seconds"] < 30  # seconds for ~1,000 rows of 64 features, even on a loaded machine


@pytest.mark.slow
def test_the_most_confused_pair_is_the_swapped_one(tmp_path):
    path = digits_table(tmp_path / "swap.csv", 0.25, pairs=(3, 5))
    p = profile_of("data=csv", f"data.path={path}", "data.target=digit")
    assert sorted(p["confused_pairs"][0]["classes"]) == ["3", "5"]


@pytest.mark.slow
def test_large_sets_are_subsampled_and_say_so():
    p = profile_of("data=imbalanced", "data.imbalance_ratio=10", max_rows=400)
    assert p["n_profiled"] <= 420 < p["n_samples"]
    assert any("subsample" in n for n in p["notes"])
    assert p["imbalance_ratio"] == 10.0  # counts come from the whole split
    rng = np.random.default_rng(0)  # image-like: wide float32 inputs, reduced before the quick model
    y = rng.integers(0, 4, 3000)
    x = (rng.standard_normal((4, 784)).astype(np.float32)[y] * 0.3 + rng.standard_normal((3000, 784)).astype(np.float32))
    wide = measure(x, y, "multiclass", max_rows=1000)
    assert wide["n_profiled"] <= 1010 and any("784 input features reduced to 50 principal components" in n
                                               for n in wide["notes"])
    assert wide["label_noise"]["value"] < 0.02 and wide["seconds"] < 30


# --------------------------------------------------------------------------- bad input
@pytest.mark.slow
def test_bad_tables_get_one_clear_message(tmp_path):
    def table(name: str, df: pd.DataFrame) -> str:
        df.to_csv(tmp_path / name, index=False)
        return str(tmp_path / name)

    rng = np.random.default_rng(0)
    x = rng.standard_normal(100)
    with pytest.raises(DataError, match="constant"):
        profile_of("data=csv", f"data.path={table('const.csv', pd.DataFrame({'x': x, 'y': 3.5}))}", "data.target=y",
                   "data.task=regression")
    with pytest.raises(DataError, match="single class"):
        profile_of("data=csv", f"data.path={table('one.csv', pd.DataFrame({'x': x, 'y': 'a'}))}", "data.target=y")
    lonely = pd.DataFrame({"x": x, "y": ["a"] * 50 + ["b"] * 49 + ["c"]})
    with pytest.raises(DataError, match="'c' has a single training row"):
        profile_of("data=csv", f"data.path={table('lonely.csv', lonely)}", "data.target=y")
    with pytest.raises(DataError, match="too few to cross-validate"):
        profile_of("data=csv", f"data.path={table('tiny.csv', pd.DataFrame({'x': x[:20], 'y': x[:20]}))}",
                   "data.target=y")
    gaps = pd.DataFrame({"x": x, "z": x, "y": x})
    gaps.loc[[3, 7], "x"] = np.nan
    gaps.loc[[7], "y"] = np.nan
    with pytest.raises(DataError, match=r"3 missing value\(s\) in 2 row\(s\): 'x' \(2\), 'y' \(1\)"):
        profile_of("data=csv", f"data.path={table('gaps.csv', gaps)}", "data.target=y")
    with pytest.raises(DataError, match="no column 'price'"):
        profile_of("data=csv", f"data.path={table('ok.csv', pd.DataFrame({'x': x, 'y': x}))}", "data.target=price")


@pytest.mark.slow
def test_choose_options_and_overrides_are_checked(mlflow_uri):
    with pytest.raises(LossbenchError, match="picks the losses itself"):
        run_choose(["data=regression_outliers", "loss=huber", f"tracking.uri={mlflow_uri}"])
    with pytest.raises(ParameterError, match="choose.seeds must be at least 5"):
        run_choose(["data=regression_outliers", "choose.seeds=3", f"tracking.uri={mlflow_uri}"])
    from lossbench.choose.flow import check_overrides

    with pytest.raises(ParameterError, match="Unknown choose option 'seed'. Did you mean 'seeds'"):
        check_overrides(["data=regression_outliers", "choose.seed=5"])
    with pytest.raises(LossbenchError, match="is a sweep"):
        check_overrides(["data=regression_outliers", "seed=0,1"])
    with pytest.raises(LossbenchError, match="Did you mean 'huber'"):
        run_choose(["data=regression_outliers", "choose.extra_losses=[hubr]", "choose.profile_only=true",
                    f"tracking.uri={mlflow_uri}"], printer=lambda s: None)


# --------------------------------------------------------------------------- shortlist
def _regression_profile(outliers: float, **extra) -> dict:
    ci = [max(0.0, outliers - 0.02), outliers + 0.02]
    return {"task": "regression", "outlier_fraction": {"value": outliers, "ci": ci},
            "leverage_fraction": {"value": 0.0, "ci": [0.0, 0.003]},
            "heteroscedasticity": {"detected": False}, "target": {}, **extra}


def test_shortlist_answers_each_measured_trait_with_registry_traits():
    many = shortlist(_regression_profile(0.2))
    assert many.losses[0] == "mse"
    robust = [c for c in many.candidates if "outliers" in c.answers]
    assert len(robust) == 2  # one convex robust loss and one redescending (the default: one a trait)
    for c in robust:
        assert {"robust_to_outliers", "bounded_influence"} <= loss_info(c.loss).traits
        assert "20.0%" in " ".join(c.reasons)
    assert sum("convex" not in loss_info(c.loss).traits for c in robust) == 1
    wider = shortlist(_regression_profile(0.2), max_per_trait=2)
    assert len([c for c in wider.candidates if "outliers" in c.answers]) == 3  # a second convex one
    assert set(many.losses) < set(wider.losses)
    few = shortlist(_regression_profile(0.04))
    assert len(few.losses) == 2 and all("convex" in loss_info(n).traits for n in few.losses)  # none redescending below 10%
    clean = shortlist(_regression_profile(0.0))
    assert clean.losses == ["mse"] and any("the baseline is swept alone" in n for n in clean.notes)


def test_the_default_objective_follows_the_profile_and_the_user_wins():
    table = {"name": "csv", "objective": None}  # a table's gross errors sit in every split
    metric, why = default_objective(_regression_profile(0.2), table)
    assert metric == "median_ae" and "20.0%" in why and "RMSE" in why and "data.objective=rmse" in why
    injected = {"name": "regression_outliers", "outlier_fraction": 0.2, "objective": None}  # training split only
    metric, why = default_objective(_regression_profile(0.2), injected)
    assert metric == "rmse" and "training split only" in why
    assert default_objective(_regression_profile(0.0), table)[0] == "rmse"
    assert default_objective(_regression_profile(0.2), {**table, "objective": "mae"}) == (
        "mae", "data.objective=mae, set by you, selects on validation and ranks on test.")
    metric, why = default_objective({"task": "multiclass", "imbalance_ratio": 10.0}, {"objective": None})
    assert metric == "balanced_accuracy" and "imbalanced (largest / smallest 10)" in why
    assert default_objective({"task": "binary", "imbalance_ratio": 1.1}, {"objective": None})[0] == "balanced_accuracy"


def test_shortlist_for_imbalance_and_noise_has_a_buildable_combination():
    import torch

    from lossbench import create_loss

    p = {"task": "multiclass", "imbalance_ratio": 20.0, "shape": "exponential", "head_share": 0.5, "head_classes": 2,
         "label_noise": {"value": 0.3, "ci": [0.25, 0.35]}, "quick_model": {"out_of_sample_accuracy": 0.95},
         "confused_pairs": [{"classes": ["3", "5"]}]}
    s = shortlist(p)
    answers = {c.loss: c.answers for c in s.candidates}
    # nested, one trait a step: the baseline, the imbalance loss, the combination adding the noise loss to it
    assert s.losses == ["cross_entropy", "weighted_ce", "combo"]
    combo = next(c for c in s.candidates if c.loss == "combo")
    assert [t["name"] for t in combo.params["terms"]] == ["weighted_ce", "sce"]
    assert any(n.startswith("Label noise: sce alone is not swept") and "choose.extra_losses=[sce]" in n for n in s.notes)
    wider = shortlist(p, max_per_trait=2)  # two a trait: the noise loss alone joins, beside the combination
    answers = {c.loss: c.answers for c in wider.candidates}
    assert sum("imbalance" in a for a in answers.values()) == 2 and sum("label_noise" in a for a in answers.values()) == 1
    assert "sce" in answers and "combo" in answers and not any("alone is not swept" in n for n in wider.notes)
    noise_only = shortlist({**p, "imbalance_ratio": 1.2})  # no imbalance: the noise loss itself, no combination
    assert noise_only.losses == ["cross_entropy", "sce"]
    loss = create_loss("combo", terms=combo.params["terms"], context={"task": "multiclass", "class_counts": [50, 20, 5]})
    value = loss(torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert torch.isfinite(value)
    binary = shortlist({**p, "task": "binary"})
    assert binary.losses[0] == BASELINE["binary"] == "bce" and "weighted_ce" in binary.losses
    every = {c.loss for c in s.candidates} | {c.loss for c in binary.candidates}
    cfg_dir = Path(__file__).resolve().parent.parent / "configs" / "loss"
    assert all((cfg_dir / f"{n}.yaml").is_file() for n in every)


# --------------------------------------------------------------------------- the fair plan
def test_options_left_out_take_choose_yaml_values():
    from omegaconf import OmegaConf

    from lossbench.configs import CONFIG_DIR

    yaml = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "choose.yaml").choose)
    assert P.check_options({}) == {**yaml, "lr_range": [float(x) for x in yaml["lr_range"]]}
    assert P.check_options({"seeds": 7})["seeds"] == 7 and P.DEFAULT_SEEDS == yaml["seeds"]
    with pytest.raises(ParameterError, match="choose.variants"):
        P.check_options({"variants": 0})


def test_every_loss_gets_the_same_tuning_and_the_budget_cuts_variants_not_seeds():
    class C:
        def __init__(self, loss, params=None):
            self.loss, self.params = loss, params or {}

    opts = P.check_options({"seeds": 5, "variants": 4, "budget": 1000})
    plan = P.make_plan([C("mse"), C("huber"), C("cauchy")], opts, first_seed=3)
    assert plan.seeds == (3, 4, 5, 6, 7) and plan.n_runs == 3 * 4 * 5
    by_loss = {}
    for s in plan.settings:
        by_loss.setdefault(s.loss, []).append(s)
    lrs = {loss: [s.lr for s in ss] for loss, ss in by_loss.items()}
    assert lrs["mse"] == lrs["huber"] == lrs["cauchy"] and lrs["mse"][0] is None  # variant 0: as configured
    assert all(3e-4 <= lr <= 3e-3 for lr in lrs["mse"][1:])
    deltas = [s.params["delta"] for s in by_loss["huber"][1:]]
    assert len(set(deltas)) == 3 and all(0.05 <= d <= 10 for d in deltas)
    small = P.make_plan([C("mse"), C("huber"), C("cauchy")], {**opts, "budget": 40}, first_seed=0)
    assert small.variants == 2 and len(small.seeds) == 5 and "would need 60" in small.describe()
    with pytest.raises(ParameterError, match="raise choose.budget to at least 15"):
        P.make_plan([C("mse"), C("huber"), C("cauchy")], {**opts, "budget": 10}, first_seed=0)


# --------------------------------------------------------------------------- the command
def choose_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    return subprocess.run([sys.executable, "-m", "lossbench.choose", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slow
def test_profile_only_writes_profile_json_and_runs_nothing(tmp_path):
    path = regression_table(tmp_path / "t.csv")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    r = choose_cli("data=csv", f"data.path={path}", "data.target=y", "choose.profile_only=true", f"tracking.uri={uri}",
                   cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "gross target errors" in r.stdout and "l1 [outliers]" in r.stdout
    data = json.loads((tmp_path / "reports" / "choose-csv" / "profile.json").read_text())
    assert data["task"] == "regression" and data["n_samples"] == 1200
    assert abs(data["outlier_fraction"] - 0.2) <= 0.05
    assert [c["loss"] for c in data["shortlist"]] == ["mse", "l1", "welsch"]  # one convex, one redescending
    assert data["objective"] == "median_ae" and "gross errors" in data["objective_reason"]
    assert data["traits"]["objective"] == {"metric": "median_ae", "mode": "min"}
    assert "Objective: median_ae (median absolute error)" in r.stdout
    assert all(c["reasons"] for c in data["shortlist"])
    assert not (tmp_path / "m.db").exists() or tracking.client(uri).get_experiment_by_name("choose-csv") is None
    bad = choose_cli("data=csv", f"data.path={path}", "data.target=y", "loss=huber", f"tracking.uri={uri}", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "choose.extra_losses" in bad.stderr


@pytest.mark.slow
def test_choose_sweeps_the_shortlist_fairly_and_reports_with_the_profile_first(tmp_path, mlflow_uri):
    path = regression_table(tmp_path / "t.csv", n=600)
    out = tmp_path / "report"
    overrides = ["data=csv", f"data.path={path}", "data.target=y", f"tracking.uri={mlflow_uri}",
                 "tracking.experiment_name=choose-e2e", f"report.out_dir={out}", "report.appendix=false",
                 "trainer.max_epochs=3", "choose.variants=2", "choose.seeds=5", "choose.budget=40"]
    lines: list[str] = []
    outcome = run_choose(overrides, printer=lines.append)
    plan = outcome.plan
    assert plan is not None and plan.n_runs == 3 * 2 * 5  # mse, l1, welsch; 2 settings; 5 seeds
    client = tracking.client(mlflow_uri)
    exp = client.get_experiment_by_name("choose-e2e")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert len(runs) == plan.n_runs and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["engine"] for r in runs} == {"batched"}
    seeds = {}
    for r in runs:
        seeds.setdefault(r.data.tags["loss"], set()).add(r.data.tags["seed"])
    assert seeds == {loss: {"0", "1", "2", "3", "4"} for loss in ("mse", "l1", "welsch")}
    md = (out / "report.md").read_text()
    assert md.index("## 0. Your data: profile and shortlist") < md.index("## Summary")
    assert '<h2 id="profile">' in (out / "report.html").read_text()
    assert {r.data.tags["objective"] for r in runs} == {"median_ae"}  # 20% gross errors in every split
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenarios"][0]["recommended"]["loss"] in ("mse", "l1", "welsch")
    assert summary["scenarios"][0]["objective"] == "test_median_ae"
    profile = json.loads((out / "profile.json").read_text())
    assert profile["sweep"]["runs"] == plan.n_runs and profile["shortlist"][0]["loss"] == "mse"
    again = run_choose(overrides, printer=lambda s: None)  # the same command resumes: nothing runs twice
    assert {r.status for r in again.results.values()} == {"SKIPPED"}
    assert len(client.search_runs([exp.experiment_id], max_results=1000)) == plan.n_runs

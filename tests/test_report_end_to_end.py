"""The report end to end: a real MLflow store, runs logged as the training side logs them
(``lossbench.schema``), the command and the Python function, and the files they write."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from lossbench import schema as S
from lossbench.errors import LossbenchError, TrackingError, UnknownNameError
from lossbench.report import build_report

EXPERIMENT = "lb-e2e"
SECTIONS = (
    "1. Task and loss family",
    "2. Normalisation",
    "3. Empirical ranking",
    "4. Combining losses",
    "5. Traits of the data: the recommendation",
    "Appendix: each loss and its gradient",
)
SEED_SHIFT = (0.0, 0.01, -0.01)  # the same data (seed) moves every loss alike
REG_CLEAN = "synthetic_regression(outlier_fraction=0.0)"
REG_OUTLIERS = "synthetic_regression(outlier_fraction=0.2)"
CLS = "imbalanced(imbalance_ratio=10.0)"


def _log_run(
    client: MlflowClient,
    exp_id: str,
    *,
    loss: str,
    loss_params: dict,
    scenario: str,
    data: dict,
    seed: int,
    task: str,
    objective: str,
    mode: str,
    test: dict[str, float] | None,
    curve: list[float],
    failure: str | None = None,
) -> None:
    tags = {
        S.TAG_LOSS: loss,
        S.TAG_DATA: data["name"],
        S.TAG_MODEL: "mlp",
        S.TAG_TASK: task,
        S.TAG_SEED: str(seed),
        S.TAG_SCENARIO: scenario,
        S.TAG_OBJECTIVE: objective,
        S.TAG_OBJECTIVE_MODE: mode,
        S.TAG_SWEEP: "sweep-1",
        S.TAG_CONFIG_HASH: f"{loss}-{json.dumps(loss_params)}-{scenario}-{seed}",
        S.TAG_LOSS_PARAMS: json.dumps(loss_params),
    }
    if failure:
        tags[S.TAG_FAILURE] = failure
        tags[S.TAG_FAILURE_STEP] = "3"
    run = client.create_run(exp_id, run_name=f"{loss}-{data['name']}-s{seed}", tags=tags)
    params = {
        "loss.name": loss,
        **{f"loss.{k}": v for k, v in loss_params.items()},
        **{f"data.{k}": v for k, v in data.items()},
        "data.normalize": "standard",
        "data.normalize_target": "standard" if task == "regression" else "none",
        "model.name": "mlp",
        "optimizer.name": "adam",
        "optimizer.lr": 0.001,
        "seed": seed,
        "data_info.task": task,
    }
    for k in ("outlier_fraction", "imbalance_ratio"):
        if k in data:
            params[f"data_info.{k}"] = data[k]
    ts = int(time.time() * 1000)
    metrics = []
    for epoch, v in enumerate(curve):
        metrics += [
            Metric("train_loss", 1.0 / (epoch + 1), ts, epoch),
            Metric("val_loss", 1.0 / (epoch + 1), ts, epoch),
            Metric(f"val_{objective}", v, ts, epoch),
        ]
    if test is not None:
        metrics += [Metric(f"test_{k}", v, ts, len(curve)) for k, v in test.items()]
        best = max(curve) if mode == "max" else min(curve)
        metrics.append(Metric(S.METRIC_BEST_VAL, best, ts, len(curve)))
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    client.set_terminated(run.info.run_id, "FAILED" if failure else "FINISHED")


def _populate(uri: str) -> None:
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(EXPERIMENT)
    client.create_experiment("other-study")
    # regression: with outliers huber < l1 < mse clearly; without, everything ties
    reg = {
        REG_OUTLIERS: {("mse", 1.00): (), ("l1", 0.60): (), ("huber", 0.50): (0.5, 1.0)},
        REG_CLEAN: {("mse", 0.50): (), ("l1", 0.50): (), ("huber", 0.50): (0.5, 1.0)},
    }
    jitter = {REG_OUTLIERS: (0.001, -0.002, 0.0015), REG_CLEAN: (0.03, -0.04, 0.02)}
    for scenario, losses in reg.items():
        of = 0.2 if scenario == REG_OUTLIERS else 0.0
        data = {"name": "synthetic_regression", "outlier_fraction": of}
        for k, ((loss, base), deltas) in enumerate(losses.items()):
            for params in [{"delta": d} for d in deltas] or [{}]:
                for seed in range(3):
                    shift = SEED_SHIFT[seed] + jitter[scenario][(seed + k) % 3] + 0.02 * params.get("delta", 0)
                    value = base + shift
                    diverged = scenario == REG_OUTLIERS and loss == "mse" and seed == 2
                    _log_run(
                        client,
                        exp_id,
                        loss=loss,
                        loss_params=params,
                        scenario=scenario,
                        data=data,
                        seed=seed,
                        task="regression",
                        objective="rmse",
                        mode="min",
                        test=None if diverged else {"rmse": value, "mae": 0.8 * value, "r2": 1 - value / 2},
                        curve=[value + 1.0 / (e + 1) for e in range(4)],
                        failure=S.FAILURE_DIVERGED if diverged else None,
                    )
    # a combination next to its parts: a little worse than huber on every seed
    combo = {"terms": [{"name": "huber", "weight": 0.5, "params": {"delta": 1.0}}, {"name": "l1", "weight": 0.5}]}
    for seed in range(3):
        value = 0.50 + SEED_SHIFT[seed] + 0.03
        _log_run(
            client,
            exp_id,
            loss="combo",
            loss_params=combo,
            scenario=REG_OUTLIERS,
            data={"name": "synthetic_regression", "outlier_fraction": 0.2},
            seed=seed,
            task="regression",
            objective="rmse",
            mode="min",
            test={"rmse": value, "mae": 0.8 * value, "r2": 1 - value / 2},
            curve=[value + 1.0 / (e + 1) for e in range(4)],
        )
    # classification: focal beats cross-entropy on the minority classes
    data = {"name": "imbalanced", "imbalance_ratio": 10.0}
    for loss, params, bal, minority in (("cross_entropy", {}, 0.60, 0.30), ("focal", {"gamma": 2.0}, 0.75, 0.60)):
        for seed in range(3):
            b = bal + SEED_SHIFT[seed] + 0.002 * seed
            test = {"balanced_accuracy": b, "accuracy": 0.9, "macro_f1": b - 0.05}
            test |= {"recall_class_0": 0.95, "recall_class_1": (b + minority) / 2, "recall_class_2": minority}
            _log_run(
                client,
                exp_id,
                loss=loss,
                loss_params=params,
                scenario=CLS,
                data=data,
                seed=seed,
                task="multiclass",
                objective="balanced_accuracy",
                mode="max",
                test=test,
                curve=[b - 0.2 / (e + 1) for e in range(4)],
            )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    _populate(uri)
    return uri, root


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOSSBENCH_DEBUG", "MLFLOW_TRACKING_URI")}
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _command(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lossbench.report", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


@pytest.fixture(scope="module")
def commands(store: tuple[str, Path]) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The two command-line runs, started together to save wall time: a report, and a typo."""
    uri, root = store
    runs = {}
    for name, experiment in (("report", EXPERIMENT), ("typo", "lb-e2f")):
        work = root / f"cwd-{name}"
        work.mkdir()
        out = root / f"{name}-report"
        proc = _command(f"tracking.uri={uri}", f"tracking.experiment_name={experiment}", f"report.out_dir={out}", cwd=work)
        runs[name] = (proc, work, out)
    done = {}
    for name, (proc, work, out) in runs.items():
        stdout, stderr = proc.communicate(timeout=300)
        done[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), work, out)
    return done


def _scenario_block(md: str, scenario: str) -> str:
    """The section-5 entry of one scenario in the Markdown report."""
    traits = md[md.index("## " + SECTIONS[4]) :]
    start = traits.index(f"### Scenario: {scenario}")
    end = traits.find("### Scenario:", start + 1)
    return traits[start : end if end != -1 else traits.index("## " + SECTIONS[5])]


@pytest.mark.slow
def test_command_writes_the_report(commands) -> None:
    proc, work, out = commands["report"]
    assert proc.returncode == 0, proc.stderr
    assert str(out / "report.html") in proc.stdout and str(out / "report.md") in proc.stdout
    assert list(work.iterdir()) == []  # no outputs/ folder, no log file

    html = (out / "report.html").read_text(encoding="utf-8")
    md = (out / "report.md").read_text(encoding="utf-8")
    for text in (html, md):
        positions = [text.index(title) for title in SECTIONS]
        assert positions == sorted(positions)
    # the recommendations: huber with outliers (significant), mse when everything ties (simplest)
    outliers = _scenario_block(md, REG_OUTLIERS)
    assert "**Recommended:** huber(" in outliers and "significantly best" in outliers
    assert "huber is robust to outliers" in outliers and "20% outliers" in outliers
    clean = _scenario_block(md, REG_CLEAN)
    assert "**Recommended:** mse " in clean and "No significant difference" in clean
    cls = _scenario_block(md, "imbalanced")  # the only scenario of its dataset: its name is enough
    assert "**Recommended:** focal(gamma=2)" in cls and "focal is built for class imbalance, which fits" in cls
    # the diverged run is counted and flagged
    assert "1 diverged" in md and "diverged in 1 of 3 seeds" in md
    # validation picks the huber variant; the variant table says so
    assert "| huber | huber(delta=0.5) |" in md and "chosen" in md
    # per-class recall of the classification scenario
    assert "class 2" in md
    # the combination is compared with its parts
    assert "### combo(0.5·huber(delta=1) + 0.5·l1) in " + REG_OUTLIERS in md
    assert "The combination did not beat its best part, huber(delta=0.5)." in md

    # figures: embedded in the HTML as PNG, linked from the Markdown, present on disk
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", md)
    assert len(embedded) == len(linked) >= 6
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in embedded)
    for rel in linked:
        assert (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("appendix-regression" in r for r in linked) and any("appendix-classification" in r for r in linked)
    assert any("recall" in r for r in linked) and any("curves" in r for r in linked)
    assert any("sensitivity-rmse" in r for r in linked)


def test_python_function(store: tuple[str, Path], tmp_path: Path) -> None:
    uri, _ = store
    figs = tmp_path / "r" / "figures"
    figs.mkdir(parents=True)
    (figs / "appendix-regression.png").write_bytes(b"stale figure of an earlier report")
    (figs / "mine.png").write_bytes(b"not the report's")
    paths = build_report(EXPERIMENT, uri, tmp_path / "r", formats=("md",), appendix=False, max_curve_runs=2)
    assert not (figs / "appendix-regression.png").exists() and (figs / "mine.png").exists()
    assert paths.html is None and paths.markdown == tmp_path / "r" / "report.md"
    assert not (tmp_path / "r" / "report.html").exists()
    assert all(p.exists() for p in paths.figures)
    md = paths.markdown.read_text(encoding="utf-8")
    assert "The appendix was turned off" in md
    assert md.count("Training curves: val_") >= 1
    with pytest.raises(LossbenchError, match="formats"):
        build_report(EXPERIMENT, uri, tmp_path / "x", formats=("pdf",))


@pytest.mark.slow
def test_unknown_experiment_from_the_command(commands) -> None:
    proc, work, out = commands["typo"]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "Unknown experiment 'lb-e2f'" in proc.stderr
    assert "Did you mean 'lb-e2e'" in proc.stderr
    assert all(name in proc.stderr for name in (EXPERIMENT, "other-study", "Default"))
    assert list(work.iterdir()) == [] and not out.exists()


def test_missing_store_and_empty_experiment(store: tuple[str, Path], tmp_path: Path) -> None:
    uri, _ = store
    missing = tmp_path / "nothing-here.db"
    with pytest.raises(TrackingError, match="No MLflow store"):
        build_report(EXPERIMENT, f"sqlite:///{missing}", tmp_path / "r")
    assert not missing.exists()  # never created silently
    with pytest.raises(UnknownNameError, match="Experiments there: Default, lb-e2e, other-study"):
        build_report("nope", uri, tmp_path / "r")
    with pytest.raises(LossbenchError, match="'other-study' has no lossbench runs"):
        build_report("other-study", uri, tmp_path / "r")


def _sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lossbench", "-m", *args], cwd=cwd, capture_output=True, text=True,
                          env=_env(), timeout=600)


@pytest.mark.slow
def test_invalid_jobs_of_a_real_sweep_are_listed_not_made_a_scenario(tmp_path: Path) -> None:
    """focal does not fit regression: its jobs are recorded FAILED by the sweep with a few tags only.
    The report lists them with their overrides and keeps them out of the scenarios and the variant labels."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ("data=regression_outliers", "data.n_samples=200", "model=linear", "trainer.max_epochs=2", "seed=0,1",
              f"tracking.uri={uri}")
    res = _sweep("loss=huber,focal", *common, "tracking.experiment_name=mixed", cwd=tmp_path)
    out = res.stdout + res.stderr
    assert "2 finished" in out and "2 failed with an error" in out, out
    paths = build_report("mixed", uri, tmp_path / "report", formats=("md", "html"), appendix=False)
    md = paths.markdown.read_text()
    summary = json.loads(paths.summary.read_text())
    assert len(summary["scenarios"]) == 1
    assert summary["scenarios"][0]["scenario"].startswith("regression_outliers(")
    assert "nan" not in md.lower()
    assert ": 2 runs in 1 scenario(s)" in md
    assert "**2 invalid job(s)**, refused before training" in md
    for seed in (0, 1):
        line = next(ln for ln in md.splitlines() if ln.startswith(f"- `focal-regression_outliers-s{seed}`"))
        assert "loss=focal data=regression_outliers" in line and f"seed={seed}" in line
        assert "The loss 'focal' is for multiclass tasks" in line
    assert "2 invalid job(s)" in paths.html.read_text()

    # a sweep of invalid jobs only: one clear error, no empty report
    _sweep("loss=focal", *common, "tracking.experiment_name=only_invalid", cwd=tmp_path)
    with pytest.raises(LossbenchError, match=r"holds only 2 invalid job\(s\), refused before training \(first: \[loss=focal"):
        build_report("only_invalid", uri, tmp_path / "report2")
    assert not (tmp_path / "report2").exists()

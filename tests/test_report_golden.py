"""The report on a fixed MLflow store is the same, byte for byte, as the one kept in tests/golden/.

The store is written the way the training side writes runs (``pipeline.run_tags`` and
``run_params``: the tags, the flattened resolved config plus ``data_info.*`` as params,
per-epoch histories, the final ``test_*`` metrics and ``best_val_objective``), with fixed
values, fixed start times and no randomness. It covers regression and classification,
several losses, hyperparameter variants and seeds, a named loss config (label_smoothing),
combinations, a normalisation sweep, a swept data setting, diverged, errored, killed and
unfinished runs, a seed re-run after a failure, a run some other tool logged, and every
verdict. The Markdown, the HTML and summary.json are compared. Only what truly varies is
normalised: the store's temporary path, the time the report was generated, the package
version, and the figures' bytes (their names are compared). A deliberate change to the report: regenerate with
``LOSSBENCH_UPDATE_GOLDEN=1 python -m pytest tests/test_report_golden.py`` and commit the
diff of tests/golden/ with the reason.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from lossbench import schema as S
from lossbench.report import build_report

GOLDEN = Path(__file__).parent / "golden"
EXPERIMENT = "golden"
EPOCHS = 5
T0 = 1_700_000_000_000  # fixed start times (ms): the latest run of a seed is well defined
UPDATE = os.environ.get("LOSSBENCH_UPDATE_GOLDEN") == "1"

# the shipped data configs, less `seed` (added per run); keys as the flattened params show them
REG = {
    "_target_": "lossbench.data.synthetic.RegressionOutliers", "name": "regression_outliers", "batch_size": 128,
    "eval_batch_size": 4096, "normalize": "standard", "normalize_target": "robust", "n_samples": 2000,
    "n_features": 10, "noise": 0.3, "nonlinear": False, "outlier_fraction": 0.1, "outlier_type": "y_gross",
    "outlier_scale": 10.0, "df": 2.0, "val_fraction": 0.2, "test_fraction": 0.2,
}
IMB = {
    "_target_": "lossbench.data.synthetic.ImbalancedClassification", "name": "imbalanced", "batch_size": 128,
    "eval_batch_size": 4096, "normalize": "standard", "n_classes": 3, "imbalance_ratio": 10.0, "profile": "exp",
    "n_max": 500, "n_features": 20, "n_informative": 10, "n_redundant": 2, "n_clusters_per_class": 1,
    "class_sep": 1.0, "label_noise": 0.1, "test_distribution": "balanced", "val_distribution": "balanced",
    "n_test_per_class": 100, "n_val_per_class": 50,
}
CANCER = {
    "_target_": "lossbench.data.sklearn_sets.BreastCancer", "name": "breast_cancer", "batch_size": 64,
    "eval_batch_size": 4096, "normalize": "standard", "val_fraction": 0.2, "test_fraction": 0.2,
}
DIABETES = {
    "_target_": "lossbench.data.sklearn_sets.Diabetes", "name": "diabetes", "batch_size": 64, "eval_batch_size": 4096,
    "normalize": "standard", "normalize_target": "standard", "outlier_fraction": 0.0, "outlier_scale": 5.0,
    "outlier_type": "y_gross", "val_fraction": 0.2, "test_fraction": 0.2,
}
DIGITS = {
    "_target_": "lossbench.data.sklearn_sets.DigitsLT", "name": "digits_lt", "batch_size": 128, "eval_batch_size": 4096,
    "normalize": "standard", "imbalance_ratio": 10.0, "profile": "exp", "n_max": None, "n_val_per_class": 20,
    "n_test_per_class": 50, "as_image": False,
}
# the shipped loss configs (configs/loss/*.yaml), less `name`
LOSS_CONFIGS: dict[str, dict[str, Any]] = {
    "mse": {}, "l1": {}, "huber": {"delta": 1.0}, "bce": {"pos_weight": None},
    "binary_focal": {"alpha": 0.25, "gamma": 2.0},
    "cross_entropy": {"weight": None, "label_smoothing": 0.0, "ignore_index": -100},
    "label_smoothing": {"weight": None, "label_smoothing": 0.1, "ignore_index": -100, "variant": "label_smoothing"},
    "focal": {"gamma": 2.0, "alpha": None}, "ldam": {"max_m": 0.5, "s": 30.0, "weight": None}, "gce": {"q": 0.7},
    "combo": {"class_counts": None},
}
NOT_SCENARIO = ("seed", "batch_size", "eval_batch_size", "data_dir", "download", "verify_md5", "name")
CLASSIFICATION = ("accuracy", "balanced_accuracy", "macro_f1", "nll", "ece")


def scenario_key(data: dict[str, Any]) -> str:
    """As ``pipeline.scenario_key`` writes it: the dataset and its settings that are not seeds or I/O."""
    parts = [f"{k}={data[k]}" for k in sorted(data) if k not in NOT_SCENARIO and not k.startswith("_")]
    return f"{data['name']}({', '.join(parts)})"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def param_str(v: Any) -> str:
    return json.dumps(v) if isinstance(v, list | dict) else str(v)


class Store:
    """Writes runs in the order they are logged, each one second after the last."""

    def __init__(self, uri: str) -> None:
        self.client = MlflowClient(tracking_uri=uri)
        self.exp_id = self.client.create_experiment(EXPERIMENT)
        self.n = 0

    def run(
        self,
        loss: str,
        data: dict[str, Any],
        seed: int,
        test: float | None,
        *,
        params: dict[str, Any] | None = None,
        status: str = "FINISHED",
        failure: str | None = None,
        val: float | None = None,
        task: str = "regression",
        recall: tuple[float, ...] = (),
    ) -> None:
        """One run; ``test`` is its test objective (None: it ended without one), ``val`` its best validation value."""
        objective, mode = ("rmse", "min") if task == "regression" else ("balanced_accuracy", "max")
        config = dict(LOSS_CONFIGS[loss])
        variant = config.pop("variant", None)
        config.update(params or {})
        name = "cross_entropy" if variant else loss
        loss_params = {k: v for k, v in config.items() if k != "class_counts"}
        data_cfg = {**data, "seed": seed}
        cfg = {
            "loss": {"name": name, **config, **({"variant": variant} if variant else {})},
            "data": data_cfg,
            "model": {"_target_": "lossbench.models.networks.MLP", "name": "mlp", "hidden": [128, 128],
                      "dropout": 0.0, "activation": "relu", "batchnorm": False},
            "optimizer": {"name": "adam", "_target_": "torch.optim.Adam", "lr": 0.001, "weight_decay": 0.0},
            "trainer": {"max_epochs": EPOCHS, "accelerator": "auto", "devices": 1, "precision": "32-true"},
            "tracking": {"uri": "sqlite:///mlflow.db", "experiment_name": EXPERIMENT, "skip_finished": True},
            "seed": seed,
        }
        classes = data.get("n_classes", 2 if task == "binary" else None)
        measured = {"outlier_fraction": data.get("outlier_fraction"), "imbalance_ratio": data.get("imbalance_ratio"),
                    "label_noise": data.get("label_noise")}
        info = {
            "name": data["name"], "task": task, "input_shape": (data.get("n_features", 30),), "num_classes": classes,
            "n_train": 1200, "n_val": 400, "n_test": 400, **measured, "normalize": data["normalize"],
            "target_normalize": data.get("normalize_target", "none"), "target_shift": 0.0, "target_scale": 1.0,
            "objective": objective, "objective_mode": mode,
        }
        flat = {**flatten(cfg), **{f"data_info.{k}": v for k, v in info.items()}}
        tags = {
            S.TAG_LOSS: name, S.TAG_DATA: data["name"], S.TAG_MODEL: "mlp", S.TAG_TASK: task, S.TAG_SEED: seed,
            S.TAG_VERSION: "0.1.0", S.TAG_GIT: "0123456789abcdef0123456789abcdef01234567",
            S.TAG_OVERRIDES: f"loss={loss} data={data['name']} seed={seed}", S.TAG_SWEEP: "golden-sweep",
            S.TAG_CONFIG_HASH: f"{self.n:016x}", S.TAG_SCENARIO: scenario_key(data), S.TAG_OBJECTIVE: objective,
            S.TAG_OBJECTIVE_MODE: mode, S.TAG_LOSS_PARAMS: json.dumps(loss_params, sort_keys=True, default=str),
            S.TAG_LOSS_VARIANT: variant, "mlflow.note.content": f"lossbench 0.1.0: loss={name} data={data['name']}",
            S.TAG_ENGINE: "batched", S.TAG_GROUP: "g0", S.TAG_GROUP_SIZE: 4,
        }
        if failure:
            tags[S.TAG_FAILURE] = failure
            tags[S.TAG_FAILURE_STEP] = 30
        start = T0 + 1000 * self.n
        self.n += 1
        run = self.client.create_run(
            self.exp_id, start_time=start, run_name=f"{loss}-{data['name']}-s{seed}",
            tags={k: str(v) for k, v in tags.items() if v is not None},
        )
        rid = run.info.run_id
        final = test if test is not None else (0.9 if mode == "min" else 0.4)
        epochs = EPOCHS if status == "FINISHED" or failure != S.FAILURE_DIVERGED else 3
        sign = 1.0 if mode == "min" else -1.0
        metrics = []
        for e in range(epochs if status != "FAILED" or failure == S.FAILURE_DIVERGED else 1):
            v = final + sign * 0.4 / (e + 1)
            ts = start + 10 * e
            metrics += [Metric("train_loss", 1.0 / (e + 1), ts, e), Metric("val_loss", 1.1 / (e + 1), ts, e),
                        Metric(f"val_{objective}", v, ts, e)]
        if failure == S.FAILURE_DIVERGED:
            metrics.append(Metric("train_loss", float("nan"), start + 500, epochs))
        if test is not None:
            ts = start + 900
            finals = self._finals(task, test, recall)
            metrics += [Metric(f"test_{k}", v, ts, EPOCHS - 1) for k, v in finals.items()]
            metrics.append(Metric(S.METRIC_BEST_VAL, test if val is None else val, ts, EPOCHS - 1))
        items = [Param(k, param_str(v)) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(rid, params=items[i : i + 100])
        self.client.log_batch(rid, metrics=metrics)
        if status != "RUNNING":
            self.client.set_terminated(rid, status, end_time=start + 950)

    @staticmethod
    def _finals(task: str, v: float, recall: tuple[float, ...]) -> dict[str, float]:
        if task == "regression":
            return {"mse": v * v, "rmse": v, "mae": 0.8 * v, "median_ae": 0.6 * v, "r2": 1 - v / 2, "loss": 0.3 * v}
        out = {"accuracy": min(0.99, v + 0.05), "balanced_accuracy": v, "macro_f1": 0.95 * v, "nll": 2.3 * (1 - v),
               "ece": 0.02 + 0.1 * (1 - v), "loss": 1 - v}
        out |= {f"recall_class_{k}": r for k, r in enumerate(recall)}
        return out


JITTER = (0.0, 0.012, -0.009, 0.005)  # per seed: the same data moves every loss alike
NOISE = ((0.002, -0.003, 0.001, 0.0), (-0.002, 0.004, -0.001, 0.002), (0.003, 0.0, -0.004, 0.001))


def populate(uri: str) -> None:
    st = Store(uri)
    # regression: outliers (standard and no normalisation: a normalisation sweep), and clean data
    outliers = {**REG, "outlier_fraction": 0.2}
    raw = {**outliers, "normalize": "none"}
    clean = {**REG, "outlier_fraction": 0.0}
    for data, shift in ((outliers, 0.0), (raw, 0.25)):
        for k, (loss, base, params) in enumerate(
            (("mse", 1.0, None), ("l1", 0.6, None), ("huber", 0.5, {"delta": 0.5}), ("huber", 0.47, {"delta": 2.0}))
        ):
            for seed in range(4):
                test = base + shift + JITTER[seed] + NOISE[k % 3][seed]
                val = test - 0.1 if params == {"delta": 0.5} else test  # validation picks delta=0.5
                if loss == "mse" and seed == 2 and data is outliers:
                    st.run(loss, data, seed, None, status="FAILED", failure=S.FAILURE_DIVERGED)
                    continue
                st.run(loss, data, seed, test, params=params, val=val)
    combo = {"terms": [{"name": "huber", "weight": 0.5, "params": {"delta": 1.0}}, {"name": "l1", "weight": 0.5}]}
    for seed in range(4):
        st.run("combo", outliers, seed, 0.53 + JITTER[seed] + NOISE[1][seed], params=combo)
    for k, loss in enumerate(("mse", "l1", "huber")):
        for seed in range(4):
            test = 0.5 + JITTER[seed] + 3 * NOISE[(k + seed) % 3][seed]
            if loss == "l1" and seed == 1:  # an error, then a re-run of the same seed that finished
                st.run(loss, clean, seed, None, status="FAILED", failure=S.FAILURE_ERROR)
            if loss == "huber" and seed == 3:
                st.run(loss, clean, seed, None, status="KILLED")
                continue
            st.run(loss, clean, seed, test)
    # multiclass, imbalanced with noisy labels: a named config (label_smoothing), a combo, a loss that always diverges
    cls = (
        ("cross_entropy", 0.60, None, (0.95, 0.55, 0.30)),
        ("label_smoothing", 0.62, None, (0.95, 0.57, 0.34)),
        ("focal", 0.75, None, (0.90, 0.75, 0.60)),
        ("ldam", 0.74, None, (0.88, 0.74, 0.60)),
        ("combo", 0.70, {"terms": [{"name": "cross_entropy", "weight": 1.0}, {"name": "focal", "weight": 0.5, "gamma": 2.0}]},
         (0.93, 0.70, 0.47)),
    )
    for k, (loss, base, params, recall) in enumerate(cls):
        for seed in range(3):
            st.run(loss, IMB, seed, base + JITTER[seed] + NOISE[k % 3][seed], params=params, task="multiclass",
                   recall=recall)
    st.run("ldam", IMB, 3, None, status="RUNNING", task="multiclass")
    for seed in range(3):
        st.run("gce", IMB, seed, None, status="FAILED", failure=S.FAILURE_DIVERGED, task="multiclass")
    # binary with one seed: too few to tell
    st.run("bce", CANCER, 0, 0.95, task="binary", recall=(0.96, 0.94))
    st.run("binary_focal", CANCER, 0, 0.96, task="binary", recall=(0.95, 0.97))
    # one loss only
    for seed in range(3):
        st.run("mse", DIABETES, seed, 55.0 + 10 * JITTER[seed])
    # every run failed
    for loss in ("cross_entropy", "focal"):
        for seed in range(2):
            st.run(loss, DIGITS, seed, None, status="FAILED", failure=S.FAILURE_ERROR, task="multiclass")
    # a run another tool logged here
    other = st.client.create_run(st.exp_id, start_time=T0 + 1000 * st.n, run_name="notebook")
    st.client.log_batch(other.info.run_id, metrics=[Metric("score", 1.0, T0, 0)])
    st.client.set_terminated(other.info.run_id, "FINISHED")


def normalise(text: str, uri: str) -> str:
    """Only what varies between two reports on the same runs."""
    text = text.replace(uri, "sqlite:///<store>/mlflow.db")
    text = re.sub(r"Generated [^<\n]*? by lossbench \S+\.(?=\s|<|$)", "Generated <when> by lossbench <version>.", text)
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,<png>", text)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("golden")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    populate(uri)
    out = root / "report"
    build_report(EXPERIMENT, uri, out)
    return out, uri


def _check(name: str, got: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert got == expected, f"{name} differs from tests/golden/{name}; see the module docstring to update it"


@pytest.mark.parametrize("name", ["report.md", "report.html"])
@pytest.mark.slow
def test_report_matches_the_golden(report: tuple[Path, str], name: str) -> None:
    out, uri = report
    _check(name, normalise((out / name).read_text(encoding="utf-8"), uri))


def _rounded(x: Any) -> Any:
    """Floats to 9 significant digits: the last bits of a p-value may differ between scipy builds."""
    if isinstance(x, float):
        return float(f"{x:.9g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return [_rounded(v) for v in x] if isinstance(x, list) else x


def test_summary_json_matches_the_golden(report: tuple[Path, str]) -> None:
    out, _ = report
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    _check("summary.json", json.dumps(_rounded(data), indent=2) + "\n")
    # what issue 10 asks of it, per scenario
    scen = {s["name"]: s for s in data["scenarios"]}
    outliers = scen["regression_outliers(normalize=standard, outlier_fraction=0.2)"]
    assert outliers["recommended"]["label"] == "huber(delta=0.5)" and outliers["verdict"] == "significant"
    assert outliers["runner_up"] == "combo" and outliers["objective"] == "test_rmse"
    best, *rest = outliers["ranking"]
    assert best["loss"] == "huber" and best["ci"][0] < best["mean"] < best["ci"][1]
    assert all(r["p_adjusted"] < 0.05 and r["vs_best"] == "worse" for r in rest)
    assert scen["digits_lt"]["recommended"] is None and scen["digits_lt"]["verdict"] == "all_failed"


def test_figure_names_match_the_golden(report: tuple[Path, str]) -> None:
    out, _ = report
    names = sorted(p.name for p in (out / "figures").glob("*.png"))
    _check("figures.txt", "".join(f"{n}\n" for n in names))

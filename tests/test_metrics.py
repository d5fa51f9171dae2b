"""lossbench.metrics against scikit-learn, numpy and hand-worked cases."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics.functional.classification import multiclass_calibration_error

from lossbench.errors import DataError
from lossbench.metrics import (
    NLL_EPS,
    classification_metrics,
    expected_calibration_error,
    per_class_table,
    regression_metrics,
    shot_groups,
)
from lossbench.schema import CLASSIFICATION_METRICS, REGRESSION_METRICS


def close(a: float, b: float, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    if math.isnan(b):
        return math.isnan(a)
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


# --------------------------------------------------------------------------- regression
def regression_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    t = rng.normal(size=101)
    return {
        "random_odd": (rng.normal(size=101), t),
        "random_even": (rng.normal(size=64), rng.normal(size=64)),
        "outliers": (t + rng.standard_cauchy(101) * 1e3, t),
        "perfect": (t.copy(), t),
        "large_scale": (rng.normal(size=30) * 1e6 + 3e7, rng.normal(size=30) * 1e6 + 3e7),
        "two": (np.array([1.0, 4.0]), np.array([2.0, 2.5])),
        "constant_target_perfect": (np.full(5, 3.0), np.full(5, 3.0)),
        "constant_target_off": (np.array([3.0, 3.1, 2.0, 3.0, 3.0]), np.full(5, 3.0)),
    }


@pytest.mark.parametrize("case", list(regression_cases()))
def test_regression_matches_sklearn(case):
    pred, target = regression_cases()[case]
    got = regression_metrics(torch.tensor(pred), torch.tensor(target))
    assert list(got) == list(REGRESSION_METRICS)
    assert all(type(v) is float for v in got.values())
    mse = skm.mean_squared_error(target, pred)
    assert close(got["mse"], mse)
    assert close(got["rmse"], math.sqrt(mse))
    assert close(got["mae"], skm.mean_absolute_error(target, pred))
    assert close(got["median_ae"], skm.median_absolute_error(target, pred))
    assert close(got["r2"], skm.r2_score(target, pred), abs_=1e-9)


def test_regression_single_sample_r2_is_nan():
    got = regression_metrics(torch.tensor([2.0]), torch.tensor([5.0]))
    assert got["mse"] == 9.0 and got["rmse"] == 3.0 and got["mae"] == 3.0 and got["median_ae"] == 3.0
    assert math.isnan(got["r2"])


def test_regression_accepts_column_output_and_half_precision():
    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(20, 1)), rng.normal(size=20)
    got = regression_metrics(torch.tensor(pred, dtype=torch.float16), torch.tensor(target, dtype=torch.bfloat16))
    p16 = torch.tensor(pred, dtype=torch.float16).double().numpy().ravel()
    t16 = torch.tensor(target, dtype=torch.bfloat16).double().numpy()
    assert close(got["mse"], skm.mean_squared_error(t16, p16))


def test_regression_diverged_prediction_gives_non_finite_not_error():
    got = regression_metrics(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0]))
    assert math.isnan(got["mse"]) and math.isnan(got["mae"])


def test_regression_rejects_mismatched_and_empty_input():
    with pytest.raises(DataError, match="one prediction per target"):
        regression_metrics(torch.zeros(3), torch.zeros(4))
    with pytest.raises(DataError, match="empty"):
        regression_metrics(torch.zeros(0), torch.zeros(0))


# --------------------------------------------------------------------------- classification
def softmax_np(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    cases = {}
    t = rng.integers(0, 5, size=200)
    cases["random_5"] = (softmax_np(rng.normal(size=(200, 5)) * 2 + 1.5 * np.eye(5)[t]), t)
    t = rng.integers(0, 2, size=150)
    cases["binary"] = (softmax_np(rng.normal(size=(150, 2)) + np.eye(2)[t]), t)
    t = rng.choice([0, 1, 3], size=120)  # class 2 absent from the targets but predicted sometimes
    cases["absent_class"] = (softmax_np(rng.normal(size=(120, 4)) * 2), t)
    t = rng.integers(0, 4, size=40)
    cases["perfect_one_hot"] = (np.eye(4)[t], t)
    t = rng.integers(0, 3, size=60)
    cases["perfect_soft"] = (softmax_np(5 * np.eye(3)[t]), t)
    # probabilities rounded to 0.1: many ties in the AUROC ranking
    t = rng.integers(0, 3, size=80)
    p = np.round(softmax_np(rng.normal(size=(80, 3)) + np.eye(3)[t]), 1)
    cases["ties"] = (p / p.sum(axis=1, keepdims=True), t)
    return cases


def sk_reference(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    c = p.shape[1]
    pred = p.argmax(axis=1)
    present = np.unique(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about classes predicted but absent
        ref = {
            "accuracy": skm.accuracy_score(t, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(t, pred),
            "macro_f1": skm.f1_score(t, pred, average="macro"),
            "nll": skm.log_loss(t, p, labels=list(range(c))),
        }
        recall = skm.recall_score(t, pred, labels=list(range(c)), average=None, zero_division=np.nan)
    if c == 2:
        ref["auroc"] = skm.roc_auc_score(t, p[:, 1]) if len(present) == 2 else math.nan
    elif len(present) == c:
        ref["auroc"] = skm.roc_auc_score(t, p, multi_class="ovr", average="macro")
    else:  # macro one-vs-rest over the classes that occur
        ref["auroc"] = float(np.mean([skm.roc_auc_score(t == k, p[:, k]) for k in present]))
    for k in range(c):
        ref[f"recall_class_{k}"] = float(recall[k])
    return ref


@pytest.mark.parametrize("case", list(classification_cases()))
def test_classification_matches_sklearn(case):
    p, t = classification_cases()[case]
    got = classification_metrics(torch.tensor(p), torch.tensor(t))
    c = p.shape[1]
    assert list(got) == [*CLASSIFICATION_METRICS, *(f"recall_class_{k}" for k in range(c))]
    assert all(type(v) is float for v in got.values())
    for key, value in sk_reference(p, t).items():
        # sklearn clips probabilities at 1 - eps too: a difference of ~2e-16 per sample
        rel = 1e-9  # AUROC too: exact ranks in float64
        assert close(got[key], value, rel=rel, abs_=1e-12 if key != "nll" else 1e-15), (key, got[key], value)


def test_perfect_predictions_hit_the_ideal_values():
    p, t = classification_cases()["perfect_one_hot"]
    got = classification_metrics(torch.tensor(p), torch.tensor(t))
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "auroc"):
        assert got[key] == 1.0
    assert got["nll"] == 0.0 and got["ece"] == 0.0


def test_zero_probability_on_true_class_is_clamped():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([1, 1])
    got = classification_metrics(p, t)
    assert close(got["nll"], -math.log(NLL_EPS) / 2)
    assert close(got["nll"], skm.log_loss(t.numpy(), p.numpy(), labels=[0, 1]), rel=1e-12)


def test_float32_probabilities_and_logit_extremes():
    logits = torch.tensor([[80.0, -80.0, 0.0], [0.0, 0.0, 0.0], [-1e4, 1e4, 0.0]])
    t = torch.tensor([1, 2, 1])
    p = torch.softmax(logits, dim=1)  # float32, saturated to exact zeros and ones
    got = classification_metrics(p, t)
    assert all(math.isfinite(got[k]) for k in ("accuracy", "nll", "ece", "auroc"))
    ref = -np.log(np.clip(p.double().numpy()[np.arange(3), t.numpy()], NLL_EPS, None)).mean()
    assert close(got["nll"], float(ref))


def test_binary_probability_vector_equals_two_columns():
    p, t = classification_cases()["binary"]
    two = classification_metrics(torch.tensor(p), torch.tensor(t))
    for p1 in (torch.tensor(p[:, 1]), torch.tensor(p[:, 1:])):
        one = classification_metrics(p1, torch.tensor(t))
        assert one.keys() == two.keys()
        assert all(close(one[k], two[k], rel=1e-12) for k in two)


def test_single_class_target_has_no_auroc():
    p = softmax_np(np.random.default_rng(0).normal(size=(10, 3)))
    got = classification_metrics(torch.tensor(p), torch.zeros(10, dtype=torch.long))
    assert math.isnan(got["auroc"])
    assert math.isnan(got["recall_class_1"]) and math.isnan(got["recall_class_2"])
    assert close(got["balanced_accuracy"], got["recall_class_0"])


def test_non_finite_probabilities_give_nan_everywhere():
    p = torch.full((4, 3), float("nan"))
    got = classification_metrics(p, torch.tensor([0, 1, 2, 0]), [50, 30, 10])
    assert len(got) == len(CLASSIFICATION_METRICS) + 3
    assert all(math.isnan(v) for v in got.values())


@pytest.mark.parametrize(
    ("probs", "target", "counts", "match"),
    [
        (torch.rand(4, 3), torch.tensor([0, 1, 3, 0]), None, r"labels must lie in \[0, 2\]"),
        (torch.rand(4, 3), torch.tensor([0.0, 1.0, 2.0, 0.0]), None, "integer class indices"),
        (torch.rand(4, 3), torch.zeros(4, 3, dtype=torch.long), None, "not one-hot"),
        (torch.rand(4, 3), torch.tensor([0, 1, 2, 0]), [5, 5], "one training count per class"),
        (torch.zeros(4, 3, dtype=torch.long), torch.tensor([0, 1, 2, 0]), None, "floating-point"),
        (torch.rand(0, 3), torch.zeros(0, dtype=torch.long), None, "empty"),
    ],
)
def test_classification_input_errors(probs, target, counts, match):
    with pytest.raises(DataError, match=match):
        classification_metrics(probs, target, counts)


# --------------------------------------------------------------------------- ECE
def ece_numpy(p: np.ndarray, t: np.ndarray, n_bins: int = 15) -> float:
    """Guo et al. (ICML 2017): bins ((m-1)/M, m/M], weighted |accuracy - confidence|."""
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == t).astype(float)
    total = 0.0
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return total


@pytest.mark.parametrize("case", list(classification_cases()))
def test_ece_matches_numpy_binning(case):
    p, t = classification_cases()[case]
    got = classification_metrics(torch.tensor(p), torch.tensor(t))["ece"]
    assert close(got, ece_numpy(p, t), rel=1e-9, abs_=1e-12)


def test_ece_hand_worked():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right):
    # bin (13/15, 14/15]: accuracy 0.5, confidence 0.9 -> 0.5 * 0.4; bin (8/15, 9/15]: 1 vs 0.6 -> 0.5 * 0.4
    p = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]], dtype=torch.float64)
    t = torch.tensor([0, 1, 1, 1])
    assert close(float(expected_calibration_error(p, t)), 0.4)


def test_ece_saturated_confidence_shares_the_top_bin():
    # 0.95 (right) and 1.0 (wrong) share the bin (14/15, 1]: |0.5 - 0.975| = 0.475
    p = torch.tensor([[0.95, 0.05], [1.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([0, 1])
    assert close(classification_metrics(p, t)["ece"], 0.475)


def test_ece_agrees_with_torchmetrics_without_saturated_confidences():
    p, t = classification_cases()["random_5"]
    assert p.max() < 1.0
    ref = float(multiclass_calibration_error(torch.tensor(p), torch.tensor(t), num_classes=5, n_bins=15))
    assert close(classification_metrics(torch.tensor(p), torch.tensor(t))["ece"], ref, rel=1e-6)


# --------------------------------------------------------------------------- shot groups
def test_shot_groups_liu_thresholds():
    g = shot_groups([500, 101, 100, 20, 19, 0])
    assert g.rule == "liu2019"
    assert g.as_dict() == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}


def test_shot_groups_liu_rule_kept_when_two_groups_filled():
    g = shot_groups([200, 150, 10])
    assert g.rule == "liu2019"
    assert g.as_dict() == {"many": [0, 1], "medium": [], "few": [2]}


@pytest.mark.parametrize(
    ("counts", "many", "medium", "few"),
    [
        ([90, 80, 70, 60, 50, 40, 30], [0, 1], [2, 3, 4], [5, 6]),  # all medium-shot
        ([30, 90, 50, 70], [1], [2, 3], [0]),  # unordered
        ([15, 5], [0], [], [1]),  # two classes: one many, one few
        ([12, 3, 7], [0], [2], [1]),  # all few-shot
        ([400, 900, 300, 800, 200, 700], [1, 3], [0, 5], [2, 4]),  # all many-shot
        ([40, 40, 30, 30, 20, 20], [0, 1], [2, 3], [4, 5]),
        ([30, 40, 40], [1], [2], [0]),  # equal counts ordered by class index
    ],
)
def test_shot_groups_terciles(counts, many, medium, few):
    g = shot_groups(counts)
    assert g.rule == "terciles"
    assert g.as_dict() == {"many": many, "medium": medium, "few": few}


def test_shot_groups_equal_counts_keep_liu_rule():
    assert shot_groups([50, 50, 50]).as_dict() == {"many": [], "medium": [0, 1, 2], "few": []}
    assert shot_groups([5000] * 10).rule == "liu2019"


def test_shot_groups_rejects_bad_counts():
    with pytest.raises(DataError, match="empty"):
        shot_groups([])
    with pytest.raises(DataError, match="non-negative"):
        shot_groups([5, -1])


def test_shot_accuracies_are_accuracy_over_group_samples():
    rng = np.random.default_rng(7)
    t = rng.integers(0, 6, size=300)
    p = softmax_np(rng.normal(size=(300, 6)) * 2 + np.eye(6)[t])
    counts = [1000, 300, 80, 25, 12, 3]  # Liu: many {0, 1}, medium {2, 3}, few {4, 5}
    got = classification_metrics(torch.tensor(p), torch.tensor(t), counts)
    pred = p.argmax(axis=1)
    for name, members in (("many", [0, 1]), ("medium", [2, 3]), ("few", [4, 5])):
        mask = np.isin(t, members)
        assert close(got[f"{name}_shot_accuracy"], skm.accuracy_score(t[mask], pred[mask]))


def test_shot_accuracy_nan_for_empty_group_and_without_counts():
    p, t = classification_cases()["random_5"]
    got = classification_metrics(torch.tensor(p), torch.tensor(t), [500, 400, 300, 200, 150])  # all many, not equal
    assert shot_groups([500, 400, 300, 200, 150]).rule == "terciles"
    assert all(math.isfinite(got[f"{g}_shot_accuracy"]) for g in ("many", "medium", "few"))
    got = classification_metrics(torch.tensor(p), torch.tensor(t), [200] * 5)  # Liu: all many
    assert close(got["many_shot_accuracy"], got["accuracy"])
    assert math.isnan(got["medium_shot_accuracy"]) and math.isnan(got["few_shot_accuracy"])
    got = classification_metrics(torch.tensor(p), torch.tensor(t))
    assert all(math.isnan(got[f"{g}_shot_accuracy"]) for g in ("many", "medium", "few"))


def test_shot_group_with_classes_but_no_test_samples_is_nan():
    p = softmax_np(np.random.default_rng(0).normal(size=(20, 3)))
    t = np.array([0, 1] * 10)  # class 2 (few-shot) never in the test targets
    got = classification_metrics(torch.tensor(p), torch.tensor(t), [500, 50, 5])
    assert math.isnan(got["few_shot_accuracy"]) and math.isfinite(got["many_shot_accuracy"])


# --------------------------------------------------------------------------- per-class table
@pytest.mark.parametrize("case", ["random_5", "absent_class", "binary"])
def test_per_class_table_matches_sklearn(case):
    p, t = classification_cases()[case]
    c = p.shape[1]
    counts = [300, 60, 10, 4, 2][:c]
    rows = per_class_table(torch.tensor(p), torch.tensor(t), counts)
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        t, p.argmax(axis=1), labels=list(range(c)), zero_division=np.nan
    )
    groups = shot_groups(counts)
    assert [r["class"] for r in rows] == list(range(c))
    for k, row in enumerate(rows):
        assert row["train_count"] == counts[k] and row["support"] == support[k]
        assert row["shot_group"] == groups.group_of(k)
        for key, ref in (("recall", rec[k]), ("precision", prec[k]), ("f1", f1[k])):
            if np.isnan(ref):
                assert row[key] is None, (k, key)
            else:
                assert close(row[key], float(ref)), (k, key)
    json.dumps(rows, allow_nan=False)  # valid JSON: undefined values are null


def test_per_class_table_without_counts_and_absent_class():
    p, t = classification_cases()["absent_class"]
    rows = per_class_table(torch.tensor(p), torch.tensor(t))
    assert rows[2]["support"] == 0 and rows[2]["recall"] is None
    assert rows[2]["train_count"] is None and rows[2]["shot_group"] is None

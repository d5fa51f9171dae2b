"""Evaluation metrics: what a run logs for validation and test, and the per-class table.

The names are those of :mod:`lossbench.schema` (``REGRESSION_METRICS``,
``CLASSIFICATION_METRICS`` and ``recall_class_<k>``). Every function returns plain Python
floats; a value that is undefined for the given data (a recall of a class absent from
the targets, AUROC when only one class is present, a shot group with no classes) is
``nan``, never silently 0, and its key is always present so that every run of a sweep
logs the same metrics. The report averages over seeds with NaN-aware means.

The functions are called once per evaluation on the whole split, not in the training
loop: they move their inputs to the CPU and compute in float64, which makes them exact
against the scikit-learn references the tests use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import DataError
from .schema import CLASSIFICATION_METRICS, REGRESSION_METRICS

__all__ = [
    "ECE_BINS",
    "NLL_EPS",
    "SHOT_FEW_BELOW",
    "SHOT_MANY_ABOVE",
    "ShotGroups",
    "classification_metrics",
    "expected_calibration_error",
    "per_class_table",
    "recall_key",
    "regression_metrics",
    "shot_groups",
]

ECE_BINS = 15
# probabilities are clamped here before the log: float64 machine epsilon, as scikit-learn's log_loss
NLL_EPS = float(torch.finfo(torch.float64).eps)
# Liu et al., "Large-Scale Long-Tailed Recognition in an Open World", CVPR 2019: many-shot
# classes have more than 100 training samples, medium-shot 20 to 100, few-shot fewer than 20.
SHOT_MANY_ABOVE = 100
SHOT_FEW_BELOW = 20

RULE_LIU = "liu2019"
RULE_TERCILES = "terciles"


def recall_key(k: int) -> str:
    """Metric name of the recall of class ``k``."""
    return f"recall_class_{k}"


# --------------------------------------------------------------------------- regression
def regression_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """MSE, RMSE, MAE, median absolute error and R^2 of ``pred`` against ``target``.

    Both are ``(N,)`` (any shape with N elements is flattened) in the targets' original
    units. The median of an even number of errors is the mean of the two middle ones
    (as ``numpy.median``). R^2 is ``1 - SS_res / SS_tot``; with constant targets it is 1
    for a perfect prediction and 0 otherwise (scikit-learn's convention), and NaN for
    fewer than two samples. Non-finite predictions give NaN or inf, not an error.
    """
    if pred.numel() != target.numel():
        raise DataError(
            f"regression_metrics: pred has {pred.numel()} values (shape {tuple(pred.shape)}) but target has "
            f"{target.numel()} (shape {tuple(target.shape)}); pass one prediction per target."
        )
    if pred.numel() == 0:
        raise DataError("regression_metrics: got no samples; the evaluation split is empty.")
    p = pred.detach().reshape(-1).to("cpu", torch.float64)
    t = target.detach().reshape(-1).to("cpu", torch.float64)
    n = p.numel()
    abs_err = (p - t).abs().sort().values
    median_ae = (abs_err[(n - 1) // 2] + abs_err[n // 2]) / 2
    ss_res = (p - t).square().sum()
    mse = ss_res / n
    if n < 2:
        r2 = torch.tensor(math.nan)
    else:
        ss_tot = (t - t.mean()).square().sum()
        if ss_tot > 0:
            r2 = 1 - ss_res / ss_tot
        else:  # constant targets: scikit-learn's convention
            r2 = torch.tensor(1.0 if ss_res == 0 else 0.0)
    values = {
        "mse": mse,
        "rmse": mse.sqrt(),
        "mae": (p - t).abs().mean(),
        "median_ae": median_ae,
        "r2": r2,
    }
    return {k: float(values[k]) for k in REGRESSION_METRICS}


# --------------------------------------------------------------------------- shot groups
@dataclass(frozen=True)
class ShotGroups:
    """Classes split by their number of training samples.

    ``rule`` is ``"liu2019"`` (more than 100 / 20 to 100 / fewer than 20 training samples,
    Liu et al., CVPR 2019) or ``"terciles"`` (see :func:`shot_groups`).
    """

    rule: str
    many: tuple[int, ...]
    medium: tuple[int, ...]
    few: tuple[int, ...]

    def as_dict(self) -> dict[str, list[int]]:
        return {"many": list(self.many), "medium": list(self.medium), "few": list(self.few)}

    def group_of(self, k: int) -> str:
        for name, members in (("many", self.many), ("medium", self.medium), ("few", self.few)):
            if k in members:
                return name
        raise KeyError(k)


def shot_groups(class_counts: Sequence[int]) -> ShotGroups:
    """Split classes into many-, medium- and few-shot groups by training count.

    The rule of Liu et al. ("Large-Scale Long-Tailed Recognition in an Open World", CVPR
    2019): many-shot classes have more than 100 training samples, medium-shot 20 to 100,
    few-shot fewer than 20. On small data every class can land in one group, leaving the
    other two empty; then, unless every class has the same count, the classes are split
    into terciles by count instead (rule ``"terciles"``): the ``round(C / 3)`` most
    frequent classes are many-shot, the ``round(C / 3)`` least frequent few-shot, the
    rest medium-shot (two classes give one many and one few, none medium). Equal counts
    are ordered by class index. When every class has the same count no split carries
    information, and the Liu rule stands (one group holds every class).

    A group without classes gives NaN for its accuracy in :func:`classification_metrics`.
    """
    counts = [int(c) for c in class_counts]
    if not counts:
        raise DataError("shot_groups: class_counts is empty; give one training count per class.")
    if any(c < 0 for c in counts):
        raise DataError(f"shot_groups: class counts must be non-negative, got {counts}.")
    many = tuple(k for k, c in enumerate(counts) if c > SHOT_MANY_ABOVE)
    few = tuple(k for k, c in enumerate(counts) if c < SHOT_FEW_BELOW)
    medium = tuple(k for k, c in enumerate(counts) if SHOT_FEW_BELOW <= c <= SHOT_MANY_ABOVE)
    one_group = sum(1 for g in (many, medium, few) if g) == 1
    if not one_group or min(counts) == max(counts):
        return ShotGroups(RULE_LIU, many, medium, few)
    order = sorted(range(len(counts)), key=lambda k: (-counts[k], k))
    third = round(len(counts) / 3)
    return ShotGroups(
        RULE_TERCILES,
        many=tuple(sorted(order[:third])),
        medium=tuple(sorted(order[third : len(order) - third])),
        few=tuple(sorted(order[len(order) - third :])),
    )


# --------------------------------------------------------------------------- classification
def _class_inputs(
    probs: torch.Tensor, target: torch.Tensor, class_counts: Sequence[int] | None, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and move to CPU float64 / int64; ``(N,)`` or ``(N, 1)`` probs are P(class 1)."""
    if not probs.is_floating_point():
        raise DataError(f"{where}: probs must be floating-point probabilities, got dtype {probs.dtype}.")
    p = probs.detach().to("cpu", torch.float64)
    if p.dim() == 1 or (p.dim() == 2 and p.shape[1] == 1):
        p = p.reshape(-1, 1)
        p = torch.cat([1 - p, p], dim=1)
    if p.dim() != 2:
        raise DataError(
            f"{where}: probs must have shape (N, C) (or (N,) for P(class 1) of a binary task), "
            f"got {tuple(probs.shape)}."
        )
    n, c = p.shape
    if target.shape != (n,):
        raise DataError(
            f"{where}: target must be class indices of shape (N,) = ({n},), got shape {tuple(target.shape)}. "
            f"Pass integer labels, not one-hot rows."
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise DataError(f"{where}: target must hold integer class indices, got dtype {target.dtype}.")
    if n == 0:
        raise DataError(f"{where}: got no samples; the evaluation split is empty.")
    t = target.detach().to("cpu", torch.int64)
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= c:
        raise DataError(
            f"{where}: labels must lie in [0, {c - 1}] for {c} classes, got labels from {lo} to {hi}. "
            f"Check the number of classes the model outputs."
        )
    if class_counts is not None and len(class_counts) != c:
        raise DataError(
            f"{where}: class_counts has {len(class_counts)} entries but probs has {c} classes; "
            f"give one training count per class."
        )
    return p, t


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``(C, C)`` in float64, rows the true class, columns the predicted one.

    Written here rather than taken from torchmetrics: importing torchmetrics imports all
    of its image and audio metrics (seconds on a small machine), for one ``bincount``.
    """
    flat = target.to(torch.int64) * num_classes + pred.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes).double()


def expected_calibration_error(probs: torch.Tensor, target: torch.Tensor, n_bins: int = ECE_BINS) -> torch.Tensor:
    """Expected calibration error of the top-1 prediction (Guo et al., "On Calibration of
    Modern Neural Networks", ICML 2017).

    ``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` over ``n_bins`` equal-width bins
    ``((b - 1) / n_bins, b / n_bins]`` of the top-1 confidence ``max_k probs[n, k]``.

    torchmetrics' ``multiclass_calibration_error`` is not used: it casts confidences to
    float32 and puts a confidence of exactly 1.0 (a saturated softmax, common for an
    over-confident model) in a bin of its own, which is not the ECE defined above.
    """
    conf, pred = probs.max(dim=1)
    correct = (pred == target).to(conf.dtype)
    bins = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    sum_conf = torch.zeros(n_bins, dtype=conf.dtype, device=conf.device).index_add_(0, bins, conf)
    sum_acc = torch.zeros(n_bins, dtype=conf.dtype, device=conf.device).index_add_(0, bins, correct)
    return (sum_acc - sum_conf).abs().sum() / conf.numel()


def _rank_auroc(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """One AUROC per column: the Mann-Whitney statistic from average ranks (ties count 1/2).

    Equal to the area under the trapezoidal ROC curve (Hanley & McNeil, Radiology 1982),
    in float64 and in one vectorised pass over every column, where building each
    column's ROC curve cost milliseconds per class in every validation epoch.
    """
    from scipy.stats import rankdata

    ranks = torch.from_numpy(rankdata(scores.numpy(), axis=0, method="average"))
    pos = positive.to(torch.float64)
    n_pos = pos.sum(dim=0)
    n_neg = pos.shape[0] - n_pos
    return ((ranks * pos).sum(dim=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _auroc(p: torch.Tensor, t: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Macro one-vs-rest AUROC over the classes with both positives and negatives in ``t``."""
    n, c = p.shape
    if c == 2:
        both = bool(((support > 0) & (support < n)).all())
        return _rank_auroc(p[:, 1:], (t == 1)[:, None])[0] if both else torch.tensor(math.nan)
    valid = ((support > 0) & (support < n)).nonzero().flatten()
    if valid.numel() == 0:
        return torch.tensor(math.nan)
    onehot = torch.nn.functional.one_hot(t, c)[:, valid]
    return _rank_auroc(p[:, valid], onehot).mean()


def _shot_accuracies(correct: torch.Tensor, t: torch.Tensor, class_counts: Sequence[int] | None) -> dict[str, float]:
    names = ("many", "medium", "few")
    if class_counts is None:
        return {f"{name}_shot_accuracy": math.nan for name in names}
    groups = shot_groups(class_counts)
    out = {}
    for name in names:
        mask = torch.isin(t, torch.tensor(getattr(groups, name), dtype=t.dtype))
        out[f"{name}_shot_accuracy"] = float(correct[mask].mean()) if bool(mask.any()) else math.nan
    return out


def classification_metrics(
    probs: torch.Tensor, target: torch.Tensor, class_counts: Sequence[int] | None = None
) -> dict[str, float]:
    """Every classification metric of :data:`lossbench.schema.CLASSIFICATION_METRICS`,
    plus ``recall_class_<k>`` for each class ``k``.

    Args:
        probs: predicted probabilities ``(N, C)`` (rows sum to one); for a binary task
            also ``(N,)`` or ``(N, 1)`` holding P(class 1).
        target: true class indices ``(N,)``.
        class_counts: training samples per class, for the shot-group accuracies; without
            it those are NaN.

    Definitions (the prediction is the arg-max class, ties to the lowest index):

    - ``accuracy``: fraction of correct predictions.
    - ``recall_class_<k>``: correct predictions of class k / samples of class k; NaN
      when class k is absent from ``target``.
    - ``balanced_accuracy``: mean recall over the classes present in ``target``.
    - ``macro_f1``: mean per-class F1 ``2 TP / (2 TP + FP + FN)`` over the classes that
      occur in ``target`` or in the predictions (scikit-learn's default label set).
    - ``nll``: mean ``-log p(true class)``, with probabilities clamped below at
      :data:`NLL_EPS`.
    - ``ece``: :func:`expected_calibration_error` with 15 bins.
    - ``auroc``: binary AUROC of P(class 1) for two classes; otherwise the macro mean of
      the one-vs-rest AUROCs. A class absent from ``target`` (no positives) or equal to
      all of it (no negatives) has no AUROC and is skipped; NaN when no class is left.
      Computed exactly in float64 from average ranks (:func:`_rank_auroc`).
    - ``many/medium/few_shot_accuracy``: accuracy over the test samples whose class is in
      that group of :func:`shot_groups`; NaN for a group with no classes or no samples.

    Probabilities with NaN or inf (a diverged model) give NaN for every metric.
    """
    p, t = _class_inputs(probs, target, class_counts, "classification_metrics")
    n, c = p.shape
    keys = [*CLASSIFICATION_METRICS, *(recall_key(k) for k in range(c))]
    if not bool(torch.isfinite(p).all()):
        return dict.fromkeys(keys, math.nan)
    pred = p.argmax(dim=1)
    correct = (pred == t).double()
    cm = confusion_matrix(pred, t, c)  # rows: true, columns: predicted
    tp = cm.diagonal()
    support = cm.sum(dim=1)
    f1_den = support + cm.sum(dim=0)  # 2 TP + FP + FN
    recall = tp / support  # NaN for an absent class
    present = support > 0
    nll = -p.gather(1, t[:, None]).squeeze(1).clamp_min(NLL_EPS).log().mean()
    out = {
        "accuracy": float(correct.mean()),
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float((2 * tp / f1_den)[f1_den > 0].mean()),
        "nll": float(nll),
        "ece": float(expected_calibration_error(p, t)),
        "auroc": float(_auroc(p.clamp(0, 1), t, support)),
        **_shot_accuracies(correct, t, class_counts),
        **{recall_key(k): float(recall[k]) for k in range(c)},
    }
    return {k: out[k] for k in keys}


def per_class_table(
    probs: torch.Tensor, target: torch.Tensor, class_counts: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """One row per class for the ``per_class.json`` artifact.

    Keys: ``class``, ``train_count`` (None without ``class_counts``), ``shot_group``
    (``many``/``medium``/``few`` by :func:`shot_groups`, None without counts), ``support``
    (test samples), ``recall``, ``precision`` and ``f1``. An undefined value (recall of
    an absent class, precision of a class never predicted, F1 of a class neither present
    nor predicted) is None, so that the table is valid JSON.
    """
    p, t = _class_inputs(probs, target, class_counts, "per_class_table")
    c = p.shape[1]
    cm = confusion_matrix(p.argmax(dim=1), t, c)
    tp = cm.diagonal()
    support = cm.sum(dim=1)
    predicted = cm.sum(dim=0)
    groups = shot_groups(class_counts) if class_counts is not None else None

    def ratio(num: torch.Tensor, den: torch.Tensor) -> float | None:
        return float(num / den) if den > 0 else None

    return [
        {
            "class": k,
            "train_count": int(class_counts[k]) if class_counts is not None else None,
            "shot_group": groups.group_of(k) if groups is not None else None,
            "support": int(support[k]),
            "recall": ratio(tp[k], support[k]),
            "precision": ratio(tp[k], predicted[k]),
            "f1": ratio(2 * tp[k], support[k] + predicted[k]),
        }
        for k in range(c)
    ]

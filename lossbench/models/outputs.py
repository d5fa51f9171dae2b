"""How a network's outputs meet a loss and the metrics: shapes, conventions, one evaluation.

Free of Lightning, so the batched engine (which trains without a Trainer) does not pay
Lightning's import; :mod:`lossbench.models.module` uses the same functions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import metrics as M
from ..data.base import DataInfo


def output_kind(loss_tasks: tuple[str, ...], data_task: str) -> str:
    """How network outputs and targets are shaped for this (loss, data) pair.

    ``"regression"``: one output, float targets. ``"binary"``: one logit, float {0,1}
    targets. ``"multiclass"``: C logits, class-index targets. ``"distribution"``: C
    logits, one-hot target rows.
    """
    if data_task == "regression":
        return "regression"
    if data_task == "binary" and "binary" in loss_tasks:
        return "binary"
    if "multiclass" in loss_tasks:
        return "multiclass"
    if "distribution" in loss_tasks:
        return "distribution"
    raise ValueError(f"no output convention for a {loss_tasks} loss on {data_task} data")


def adapt(kind: str, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Network output and data targets in the loss's input convention (see :func:`output_kind`)."""
    if kind in ("regression", "binary"):
        return out.reshape(-1), y.to(out.dtype)
    if kind == "distribution":
        return out, nn.functional.one_hot(y, out.shape[1]).to(out.dtype)
    return out, y


def num_outputs(kind: str, info: DataInfo) -> int:
    return 1 if kind in ("regression", "binary") else int(info.num_classes or 0)


def evaluate(
    kind: str, info: DataInfo, loss_fn: nn.Module, out: torch.Tensor, y: torch.Tensor, *, per_class: bool = False
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """A split's metrics from the network's raw outputs ``out`` and the targets ``y``.

    One definition for every engine: the Lightning module and the batched engine both
    call it, once per run and split, so a run's record does not depend on how it trained.
    Returns the metrics (``loss`` plus the task's metrics) and, when ``per_class``, the
    per-class table of a classification run.
    """
    out = out.float()
    pred, target = adapt(kind, out, y)
    with torch.no_grad():
        loss = float(loss_fn(pred, target))
    metrics: dict[str, float] = {"loss": loss}
    table: list[dict[str, Any]] = []
    if kind == "regression":
        scale, shift = info.target_scale, info.target_shift
        metrics.update(M.regression_metrics((pred * scale + shift).cpu(), (target * scale + shift).cpu()))
    else:
        if kind == "binary":
            p1 = torch.sigmoid(pred)
            probs = torch.stack([1 - p1, p1], dim=1)
        else:  # a loss that scales its logits (LDAM's s) predicts softmax(scale * out)
            probs = torch.softmax(out * getattr(loss_fn, "logit_scale", 1.0), dim=1)
        metrics.update(M.classification_metrics(probs.cpu(), y.cpu(), info.class_counts))
        if per_class:
            table = M.per_class_table(probs.cpu(), y.cpu(), info.class_counts)
    return metrics, table



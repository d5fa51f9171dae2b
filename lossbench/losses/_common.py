"""Shared plumbing for loss functions: reduction, input checks, value validation.

Value checks (labels inside the class range, distributions that sum to one) read tensor
values, which costs a host sync on a GPU. They run by default; the training pipeline
checks its data once up front and then turns them off with :func:`validation` so the hot
loop never syncs. Shape checks are free and always run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..errors import DataError

_VALIDATE = True


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Turn value checks (which sync a GPU) on or off inside a ``with`` block."""
    global _VALIDATE
    old, _VALIDATE = _VALIDATE, enabled
    try:
        yield
    finally:
        _VALIDATE = old


def validating() -> bool:
    return _VALIDATE


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction`` to a tensor of per-sample (or per-element) losses."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()


def check_same_shape(name: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise DataError(
            f"{name}: pred and target must have the same shape, got pred {tuple(pred.shape)} and "
            f"target {tuple(target.shape)}. For regression, squeeze the model output (N, 1) -> (N,) "
            f"or give targets the output's shape."
        )


def check_class_input(name: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    """Multi-class input: logits ``(N, C)`` and class indices ``(N,)`` in ``[0, C)``."""
    if logits.dim() != 2:
        raise DataError(f"{name}: pred must be logits of shape (N, C), got shape {tuple(logits.shape)}.")
    if target.shape != logits.shape[:1]:
        raise DataError(
            f"{name}: target must be class indices of shape (N,) = ({logits.shape[0]},), got shape "
            f"{tuple(target.shape)}. Pass integer labels, not one-hot rows."
        )
    if target.is_floating_point():
        raise DataError(f"{name}: target must hold integer class indices, got dtype {target.dtype}.")
    if _VALIDATE and target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= logits.shape[1]:
            raise DataError(
                f"{name}: labels must lie in [0, {logits.shape[1] - 1}] for {logits.shape[1]} classes, "
                f"got labels from {lo} to {hi}. Check the number of classes the model outputs."
            )


def check_binary_input(name: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    """Binary / multi-label input: logits and {0, 1} float targets of the same shape."""
    check_same_shape(name, logits, target)
    if _VALIDATE and target.numel():
        lo, hi = float(target.min()), float(target.max())
        if lo < 0 or hi > 1:
            raise DataError(f"{name}: binary targets must lie in [0, 1], got values from {lo} to {hi}.")


def check_distribution(name: str, target: torch.Tensor, atol: float = 1e-3) -> None:
    """Each row of ``target`` must be a probability distribution."""
    if not _VALIDATE or not target.numel():
        return
    t = target.detach().float()
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{name}: target rows must be probability distributions, but some entries are NaN or infinite.")
    if bool((t < 0).any()):
        raise DataError(f"{name}: target rows must be probability distributions, but some entries are negative.")
    sums = t.sum(dim=-1)
    worst = float((sums - 1).abs().max())
    if worst > atol:
        raise DataError(
            f"{name}: every target row must sum to 1, but a row sums to "
            f"{float(sums[(sums - 1).abs().argmax()]):.4g}. Normalise targets (t / t.sum(-1, keepdim=True))."
        )

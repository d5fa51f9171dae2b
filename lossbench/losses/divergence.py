"""Divergences between a target distribution and the model's predicted one.

Input convention: ``pred`` holds logits of shape ``(N, C)`` (any leading batch shape,
classes last); ``target`` holds probabilities of the same shape, each row summing to 1
(soft labels, label distributions, a teacher's outputs). ``reduction="none"`` returns the
divergence of each sample, shape ``(N,)``; ``"mean"`` its batch mean (torch's
``reduction="batchmean"``, not the mean over all ``N * C`` entries); ``"sum"`` its sum.

Everything is computed from log-probabilities (``log_softmax``, ``xlogy``), so
``0 log 0 = 0`` exactly and logits of any size give finite values and gradients.
float16 and bfloat16 inputs are computed, and returned, in float32.
"""

from __future__ import annotations

import math

import torch

from ..errors import DataError
from ..registry import register_loss
from ._common import check_distribution, reduce, validating

_LOG2 = math.log(2.0)
_FULL = (torch.float32, torch.float64)  # dtypes computed as they are


def _distribution_input(name: str, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the input and return ``(log_softmax(pred), target)`` in the working dtype."""
    if pred.dim() < 2:
        raise DataError(f"{name}: pred must be logits of shape (N, C), got shape {tuple(pred.shape)}.")
    if target.shape != pred.shape:
        raise DataError(
            f"{name}: target must be probabilities with the shape of pred {tuple(pred.shape)}, got "
            f"{tuple(target.shape)}. For integer class labels use a classification loss such as cross-entropy."
        )
    if not target.is_floating_point():
        raise DataError(f"{name}: target must hold probabilities (a float dtype), got dtype {target.dtype}.")
    if validating():
        # rounding each entry to the target's dtype moves a row's sum by at most eps / 2
        check_distribution(name, target, atol=max(1e-3, torch.finfo(target.dtype).eps))
    if pred.dtype == target.dtype and pred.dtype in _FULL:  # the common case, no dtype arithmetic
        return torch.log_softmax(pred, dim=-1), target
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    return torch.log_softmax(pred.to(dtype), dim=-1), target.to(dtype)


@register_loss(
    "kl_div",
    tasks=("distribution",),
    traits=("convex", "calibrated"),
    description="KL(target || prediction): cross-entropy with soft targets minus their entropy; 0 iff equal.",
    reference=(
        "Kullback & Leibler, 'On Information and Sufficiency', Ann. Math. Stat. 1951; "
        "source document §3.2.1"
    ),
)
def kl_div_loss(pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """``KL(P || Q) = sum_c p_c log(p_c / q_c)`` with ``P`` = target, ``Q = softmax(pred)``.

    Terms with ``p_c = 0`` are exactly 0 (the source document's sample code gives NaN there).
    """
    log_q, p = _distribution_input("kl_div", pred, target)
    # p (log p - log q) per entry, 0 where p = 0 (whatever log p and log q are there): xlogy's
    # convention, in vectorised passes (xlogy itself is not vectorised on the CPU). In place:
    # the product is not saved for backward.
    kl = (p * (torch.log(p) - log_q)).masked_fill_(p == 0, 0.0)
    if reduction == "none":
        return kl.sum(dim=-1)
    # the sum over all entries at once (not a sum per row, then their sum)
    total = kl.sum()
    return total if reduction == "sum" else total / (p.numel() // max(p.shape[-1], 1))


@register_loss(
    "js_div",
    tasks=("distribution",),
    traits=("handles_label_noise",),
    description="Jensen-Shannon divergence: symmetric, smoothed KL, bounded by log 2; tolerant of noisy targets.",
    reference=(
        "Lin, 'Divergence measures based on the Shannon entropy', IEEE Trans. Inf. Theory 1991; "
        "Englesson & Azizpour, 'Generalized Jensen-Shannon Divergence Loss for Learning with Noisy "
        "Labels', NeurIPS 2021"
    ),
)
def js_div_loss(pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """``JS(P, Q) = KL(P || M) / 2 + KL(Q || M) / 2`` with ``M = (P + Q) / 2``, natural log.

    ``P`` = target, ``Q = softmax(pred)``. ``log M = logaddexp(log P, log Q) - log 2`` stays
    finite where ``P`` is 0, since ``log Q`` from ``log_softmax`` is finite.
    """
    log_q, p = _distribution_input("js_div", pred, target)
    q = log_q.exp()
    log_m = torch.logaddexp(torch.log(p), log_q) - _LOG2
    kl_pm = torch.xlogy(p, p) - torch.where(p > 0, p * log_m, torch.zeros_like(p))
    kl_qm = q * (log_q - log_m)
    return reduce(0.5 * (kl_pm + kl_qm).sum(dim=-1), reduction)

"""Distance-based (regression) losses.

Input convention: ``pred`` and ``target`` are float tensors of the same shape (any
shape; the first dimension is the batch). ``reduction="none"`` returns the per-element
loss, ``"mean"`` its mean over all elements, ``"sum"`` its sum — the same as torch's
built-in regression losses.
"""

from __future__ import annotations

import torch

from ..registry import Param, Search, register_loss
from ._common import check_same_shape, reduce


def _residual(name: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    check_same_shape(name, pred, target)
    return pred - target


@register_loss(
    "mse",
    tasks=("regression",),
    traits=("convex",),
    description="Mean squared error: the standard regression loss; its gradient grows with the residual.",
    reference="Gauss (1809); source document §3.1.1",
)
def mse_loss(pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """``L = (f(x) - y)^2`` per element."""
    r = _residual("mse", pred, target)
    return reduce(r * r, reduction)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with gradient 0 (a subgradient) at 0 instead of inf * 0 = NaN."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


@register_loss(
    "rmse",
    tasks=("regression",),
    traits=("convex",),
    aliases=("l2",),
    description="Root mean squared error, the source document's 'L2 loss' (Euclidean distance).",
    reference="Source document §3.1.2",
)
def rmse_loss(pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """``sqrt(mean (f(x) - y)^2)``.

    ``"mean"``: root of the mean squared error over all elements. ``"sum"``: the
    Euclidean norm of the residual, ``sqrt(sum r^2)``. ``"none"``: per sample, the root
    of the mean squared error over that sample's elements (``|r|`` for scalar targets).
    """
    r = _residual("rmse", pred, target)
    sq = r * r
    if reduction == "none":
        per_sample = sq.reshape(sq.shape[0], -1).mean(dim=1) if sq.dim() > 1 else sq
        return _safe_sqrt(per_sample)
    return _safe_sqrt(sq.sum() if reduction == "sum" else sq.mean())


@register_loss(
    "l1",
    tasks=("regression",),
    traits=("convex", "robust_to_outliers", "bounded_influence"),
    aliases=("mae",),
    description="Mean absolute error: robust to outliers, constant gradient even near the minimum.",
    reference="Laplace (1774); source document §3.1.3",
)
def l1_loss(pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """``L = |f(x) - y|`` per element."""
    return reduce(_residual("l1", pred, target).abs(), reduction)


@register_loss(
    "huber",
    tasks=("regression",),
    params=[
        Param(
            "delta",
            1.0,
            "float",
            low=0.0,
            closed="neither",
            search=Search.float(0.05, 10.0, log=True),
            help="residual size where the loss turns from quadratic to linear",
        )
    ],
    traits=("convex", "robust_to_outliers", "bounded_influence"),
    description="Quadratic for small residuals, linear for large ones: robust with a smooth gradient.",
    reference="Huber, 'Robust Estimation of a Location Parameter', Ann. Math. Stat. 1964",
)
def huber_loss(
    pred: torch.Tensor, target: torch.Tensor, *, delta: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """``0.5 r^2`` if ``|r| <= delta`` else ``delta (|r| - 0.5 delta)``."""
    a = _residual("huber", pred, target).abs()
    quad = torch.clamp(a, max=delta)
    # 0.5 q^2 + delta (a - q), with q = min(a, delta): one branch-free expression
    return reduce(0.5 * quad * quad + delta * (a - quad), reduction)

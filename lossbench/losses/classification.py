"""Classification losses: the softmax (multi-class) and sigmoid (binary / multi-label) families.

Input conventions
    Multi-class losses take ``pred`` logits ``(N, C)`` and ``target`` class indices
    ``(N,)`` (int64); ``reduction="none"`` gives the per-sample loss ``(N,)``.
    Binary and multi-label losses take ``pred`` logits of any shape and ``target`` of the
    same shape with values in ``[0, 1]`` (``{0, 1}`` labels; multi-label is the same,
    element by element); ``reduction="none"`` gives the per-element loss and ``"mean"``
    the mean over all elements.

Numerics
    Everything is computed from logits (``log_softmax``, ``logsigmoid``, ``expm1``), so
    logits of any size give finite losses and finite gradients. float16 and bfloat16
    inputs are computed in float32 and the loss comes back in float32 (what autocast
    does for cross-entropy); float64 stays float64.

Per-class quantities
    Class weights, per-class focal alphas and everything derived from the training class
    counts live in non-persistent buffers of the loss modules, so ``.to(device)`` moves
    them and the training loop never copies them from the host. The pure functions are
    the source of truth: each module calls the same code with its buffers. The derived
    quantities (normalised weights, margins, log-priors) are stored rather than the raw
    counts, because they stay in range if a module is cast to float16.

Class counts
    A class with a count of zero (possible in a small training split) is given the
    smallest positive count of the list, so its weight, margin or prior stays finite.
    Only ratios of counts matter, except for ``class_balanced``, whose effective number
    of samples uses the counts themselves.

Over 500 lines on purpose: one kernel and one spec per classification loss of the article,
each with its formula and citation beside it, so the family reads in one place; each loss is
short.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError, ParameterError
from ..registry import Param, Search, register_loss
from ._common import check_binary_input, check_class_input, check_distribution, reduce, validating

PerClass = torch.Tensor | Sequence[float]

_HALF = (torch.float16, torch.bfloat16)

#: ``log 0`` in the reverse cross-entropy of ``sce``: the value Wang et al. (ICCV 2019) use.
RCE_LOG_ZERO = -4.0

_COUNTS_HELP = "training samples per class; `python -m lossbench` fills it from the data"


# --------------------------------------------------------------------------- shared pieces
def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are computed in float32; other dtypes as they are."""
    return x.float() if x.dtype in _HALF else x


def _per_class(name: str, what: str, value: PerClass, logits: torch.Tensor) -> torch.Tensor:
    """A per-class vector on the logits' device and dtype, checked against the class count."""
    v = torch.as_tensor(value, dtype=logits.dtype, device=logits.device)
    n_classes = logits.shape[-1]
    if v.shape != (n_classes,):
        raise DataError(
            f"{name}: '{what}' has {v.numel()} entries, but pred has {n_classes} classes (logits of "
            f"shape {tuple(logits.shape)}). Give one value per class, in class-index order."
        )
    return v


def _focal_factor(one_minus_p: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    """``(1 - p)^gamma`` with finite gradients for every ``gamma >= 0``.

    ``u^gamma`` has the derivative ``gamma u^(gamma-1)``, infinite at ``u = 0`` when
    ``gamma < 1``. There the base is clamped at the smallest normal number of its dtype,
    which keeps that derivative finite; below the clamp the loss it multiplies is itself
    below that number, so the value does not change measurably. For a number ``gamma >= 1``
    the derivative is finite as it is, and the clamp (a pass over the tensor, forward and
    backward) is skipped. ``gamma = 0`` gives exactly 1.
    """
    if isinstance(gamma, int | float) and gamma >= 1:
        return one_minus_p.pow(gamma)
    return one_minus_p.clamp_min(torch.finfo(one_minus_p.dtype).tiny).pow(gamma)


def _check_choice(loss: str, param: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ParameterError(
            f"The '{param}' parameter of {loss} must be one of {', '.join(repr(c) for c in choices)}. "
            f"Got {value!r} instead."
        )


def _class_input(name: str, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked multi-class input: upcast logits and int64 labels (int32 / uint8 accepted)."""
    x = _upcast(pred)
    check_class_input(name, x, target)
    return x, target.long()


def _nll(x: torch.Tensor, t: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``-w_y log p_y`` per sample (``w = 1`` without weights), on checked logits and labels.

    torch's fused cross-entropy, the same number as ``-log_softmax(x).gather(1, y)`` with
    a cheaper backward. Labels are in range here (checked, or the data was checked up
    front); a label outside ``[0, C)`` still fails inside the kernel, except ``-100``,
    which torch's default ``ignore_index`` turns into a 0.
    """
    return F.cross_entropy(x, t, weight=weight, reduction="none")


def _ce_per_sample(name: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-log p_y`` per sample, from logits ``(N, C)`` and labels ``(N,)``."""
    return _nll(*_class_input(name, pred, target))


def _binary_input(name: str, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = _upcast(pred)
    check_binary_input(name, x, target)
    return x, target.to(x.dtype)


def _hard_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    label_smoothing: float,
    ignore_index: int | None,
    reduction: str,
) -> torch.Tensor:
    """Cross-entropy with torch's conventions, on checked, already upcast logits, and
    ``weight`` (if any) already in their dtype: torch's fused kernel.

    Per sample ``(1 - eps) w_y (-log p_y) + (eps / C) sum_c w_c (-log p_c)``, zero for
    ignored samples; ``"mean"`` divides the sum by ``sum w_y`` over the kept samples
    (by their number when unweighted).
    """
    return F.cross_entropy(
        logits,
        target,
        weight=weight,
        ignore_index=-100 if ignore_index is None else ignore_index,
        label_smoothing=float(label_smoothing),
        reduction=reduction,
    )


def _cross_entropy(
    name: str,
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: PerClass | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    reduction: str = "mean",
    weight_source: str = "weight",
) -> torch.Tensor:
    x = _upcast(pred)
    w = None if weight is None else _per_class(name, weight_source, weight, x)
    if x.dim() == 2 and target.is_floating_point() and target.shape == x.shape:
        check_distribution(name, target)
        t = target.to(x.dtype)
        if label_smoothing:
            t = t * (1.0 - label_smoothing) + label_smoothing / x.shape[1]
        contrib = t * torch.log_softmax(x, dim=1)
        if w is not None:
            contrib = contrib * w
        return reduce(-contrib.sum(dim=1), reduction)
    checked = target
    if ignore_index is not None and validating():
        checked = target.masked_fill(target == ignore_index, 0)
    check_class_input(name, x, checked)
    return _hard_ce(x, target.long(), w, label_smoothing, ignore_index, reduction)


def _counts(class_counts: PerClass) -> torch.Tensor:
    """Class counts as float64, each zero replaced by the smallest positive count."""
    n = torch.as_tensor(class_counts, dtype=torch.float64)
    smallest = n.masked_fill(n <= 0, math.inf).amin()
    return torch.where(n > 0, n, smallest)


def _register(module: nn.Module, name: str, value: PerClass | float | None) -> None:
    """A non-persistent float32 buffer (or ``None``): moved by ``.to``, not saved."""
    tensor = None if value is None else torch.as_tensor(value, dtype=torch.float32).clone()
    module.register_buffer(name, tensor, persistent=False)


# --------------------------------------------------------------------------- class-count helpers
def frequency_weights(class_counts: PerClass, scheme: str = "inverse") -> torch.Tensor:
    """Class weights ``1 / n_c`` (``"inverse"``) or ``1 / sqrt(n_c)`` (``"sqrt_inverse"``),
    scaled to mean 1 over the classes. float64, on the counts' device."""
    _check_choice("weighted_ce", "scheme", scheme, ("inverse", "sqrt_inverse"))
    n = _counts(class_counts)
    w = n.reciprocal() if scheme == "inverse" else n.rsqrt()
    return w * (w.numel() / w.sum())


def class_balanced_weights(class_counts: PerClass, beta: float) -> torch.Tensor:
    """Cui et al.'s weights ``(1 - beta) / (1 - beta^n_c)``, scaled to sum to the number of
    classes. ``1 - beta^n`` is computed as ``-expm1(n log beta)``; ``beta = 0`` gives equal
    weights and ``beta -> 1`` approaches inverse frequency."""
    n = _counts(class_counts)
    log_beta = math.log(beta) if beta > 0 else -math.inf
    w = (1.0 - beta) / -torch.expm1(n * log_beta)
    return w * (w.numel() / w.sum())


def ldam_margins(class_counts: PerClass, max_m: float = 0.5) -> torch.Tensor:
    """LDAM margins ``m_c ∝ n_c^(-1/4)``, scaled so the largest (rarest class) is ``max_m``."""
    m = _counts(class_counts).pow(-0.25)
    return m * (max_m / m.amax())


def log_prior(class_counts: PerClass) -> torch.Tensor:
    """``log(n_c / sum n)``, the log of the training label prior."""
    n = _counts(class_counts)
    return (n / n.sum()).log()


# --------------------------------------------------------------------------- deferred re-weighting
_DRW_EPOCH_HELP = (
    "deferred re-weighting (Cao et al. 2019): no class weights before this epoch (counted from 0, "
    "as the MLflow step), class-balanced weights from it on; null: off"
)
_DRW_BETA_HELP = "beta of the class-balanced weights that deferred re-weighting switches to (Cui et al. 2019)"


def drw_params(counts: bool) -> list[Param]:
    """The parameters of deferred re-weighting, for a loss that takes class weights
    (``counts``: also the optional ``class_counts`` the weights are computed from)."""
    out = [
        Param("drw_epoch", None, "int", low=0, help=_DRW_EPOCH_HELP),
        Param("drw_beta", 0.9999, "float", low=0.0, high=1.0, closed="left", help=_DRW_BETA_HELP),
    ]
    if counts:
        out.append(Param("class_counts", None, "counts", help=_COUNTS_HELP + "; only drw_epoch uses them"))
    return out


def _check_drw(loss: str, drw_epoch: int | None, class_counts: PerClass | None, weight_name: str, weight: object) -> None:
    if drw_epoch is None:
        return
    if class_counts is None:
        raise ParameterError(
            f"The 'drw_epoch' parameter of {loss} needs class_counts (the training samples per class) "
            f"to weight the classes; pass class_counts=[n_0, n_1, ...], or run it through "
            f"`python -m lossbench`, which fills them from the data."
        )
    if weight is not None:
        raise ParameterError(
            f"The '{weight_name}' and 'drw_epoch' parameters of {loss} both set class weights; "
            f"give one of them ({weight_name}=null or drw_epoch=null)."
        )


def drw_weights(
    loss: str,
    weight_name: str,
    weight: PerClass | float | None,
    drw_epoch: int | None,
    drw_beta: float,
    class_counts: PerClass | None,
    epoch: int,
) -> PerClass | float | None:
    """The class weights in force at training epoch ``epoch`` (from 0): the loss's own
    ``weight`` without deferred re-weighting; with it (``drw_epoch`` set), none before
    ``drw_epoch`` and :func:`class_balanced_weights` of ``class_counts`` from it on."""
    _check_drw(loss, drw_epoch, class_counts, weight_name, weight)
    if drw_epoch is None:
        return weight
    return class_balanced_weights(class_counts, drw_beta) if epoch >= drw_epoch else None  # type: ignore[arg-type]


class DeferredReweighting(nn.Module):
    """Deferred re-weighting (DRW; Cao et al., NeurIPS 2019) for a loss that takes class weights.

    Before epoch ``drw_epoch`` the loss has no class weights; from it on it weights classes
    by Cui et al.'s class-balanced weights (:func:`class_balanced_weights` with ``drw_beta``),
    through the loss's own weighting parameter. The training loop says which epoch it is
    with :func:`set_loss_epoch` at every epoch start (both engines do); a fresh module is at
    epoch 0. ``drw_epoch=None`` turns it off and leaves the loss as it was.
    """

    drw_weight: torch.Tensor | None

    def _init_drw(
        self, loss: str, drw_epoch: int | None, drw_beta: float, class_counts: PerClass | None, weight_name: str, weight: object
    ) -> None:
        self.drw_epoch, self.drw_beta = drw_epoch, drw_beta
        self.epoch = 0
        _check_drw(loss, drw_epoch, class_counts, weight_name, weight)
        weights = None if drw_epoch is None else class_balanced_weights(class_counts, drw_beta)  # type: ignore[arg-type]
        _register(self, "drw_weight", weights)

    def set_epoch(self, epoch: int) -> None:
        """The training epoch (from 0) that starts now: it decides whether the weights apply."""
        self.epoch = int(epoch)

    @property
    def drw_active(self) -> bool:
        return self.drw_epoch is not None and self.epoch >= self.drw_epoch

    def _drw_or(self, weight: torch.Tensor | None) -> torch.Tensor | None:
        """The class weights in force: the loss's own without DRW, else none or the balanced ones."""
        if self.drw_epoch is None:
            return weight
        return self.drw_weight if self.drw_active else None

    def _drw_repr(self) -> str:
        return "" if self.drw_epoch is None else f", drw_epoch={self.drw_epoch}, drw_beta={self.drw_beta}"


def set_loss_epoch(loss: nn.Module, epoch: int) -> None:
    """Tell every part of ``loss`` with a ``set_epoch`` hook (DRW losses, and the terms of a
    ``combo`` that are) that training epoch ``epoch`` (from 0) starts. The Lightning module
    and the batched engine both call it at each epoch start, so they switch together."""
    for module in loss.modules():
        if isinstance(module, DeferredReweighting):
            module.set_epoch(epoch)


# --------------------------------------------------------------------------- multi-class
def cross_entropy_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: PerClass | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    drw_epoch: int | None = None,
    drw_beta: float = 0.9999,
    class_counts: PerClass | None = None,
    epoch: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Softmax cross-entropy ``-log( e^{f_y} / sum_j e^{f_j} )``, with torch's options.

    Class-index targets ``(N,)``: per sample ``(1 - eps) w_y (-log p_y) + (eps / C)
    sum_c w_c (-log p_c)`` with ``eps = label_smoothing`` and ``w`` the class weights (1
    when not given). Samples whose label is ``ignore_index`` contribute 0, and
    ``"mean"`` divides by ``sum w_y`` over the other samples — exactly
    :func:`torch.nn.functional.cross_entropy`, including its NaN when every label is
    ignored. Probability targets ``(N, C)`` (float rows summing to 1): per sample
    ``-sum_c w_c t'_c log p_c`` with ``t' = (1 - eps) t + eps / C``, ``"mean"`` over samples.

    Deferred re-weighting (``drw_epoch``; Cao et al., NeurIPS 2019): at training epoch
    ``epoch`` (from 0) ``w`` is none before ``drw_epoch`` and Cui et al.'s class-balanced
    weights ``(1 - beta) / (1 - beta^n_c)`` (``beta = drw_beta``, ``n = class_counts``,
    scaled to sum to C) from it on; see :func:`drw_weights`.
    """
    w = drw_weights("cross_entropy", "weight", weight, drw_epoch, drw_beta, class_counts, epoch)
    return _cross_entropy(
        "cross_entropy",
        pred,
        target,
        weight=w,
        label_smoothing=label_smoothing,
        ignore_index=ignore_index,
        reduction=reduction,
    )


@register_loss(
    "cross_entropy",
    tasks=("multiclass",),
    params=[
        Param(
            "weight", None, "floats", low=0.0, help="per-class weights; 'mean' is then the weighted mean, as in torch"
        ),
        Param(
            "label_smoothing",
            0.0,
            "float",
            low=0.0,
            high=1.0,
            closed="left",
            search=Search.float(0.0, 0.3),
            help="mass moved from the label to a uniform distribution over the classes",
        ),
        Param("ignore_index", -100, "int", help="label value to ignore: it adds 0 and is left out of the mean"),
        *drw_params(counts=True),
    ],
    traits=("convex", "calibrated"),
    function=cross_entropy_loss,
    description="Softmax cross-entropy (the source's softmax loss): the standard multi-class loss, "
    "a proper scoring rule.",
    reference="Source document §3 (softmax loss, cross-entropy); label smoothing: Szegedy et al., "
    "'Rethinking the Inception Architecture for Computer Vision', CVPR 2016",
)
class CrossEntropyLoss(DeferredReweighting):
    weight: torch.Tensor | None

    def __init__(
        self,
        *,
        weight: PerClass | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
        class_counts: PerClass | None = None,
        reduction: str = "mean",
    ):
        super().__init__()
        _register(self, "weight", weight)
        self.label_smoothing, self.ignore_index, self.reduction = label_smoothing, ignore_index, reduction
        self._init_drw("cross_entropy", drw_epoch, drw_beta, class_counts, "weight", weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _cross_entropy(
            "cross_entropy",
            pred,
            target,
            weight=self._drw_or(self.weight),
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"label_smoothing={self.label_smoothing}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}{self._drw_repr()}"
        )


def focal_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | PerClass | None = None,
    drw_epoch: int | None = None,
    drw_beta: float = 0.9999,
    class_counts: PerClass | None = None,
    epoch: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Softmax focal loss ``-alpha_y (1 - p_y)^gamma log p_y``.

    ``alpha``: ``None`` (no weighting), a scalar (every sample scaled by it) or one weight
    per class (``alpha_y`` picks the sample's class). ``"mean"`` is the plain mean over
    samples, not a weighted one. ``gamma = 0`` without ``alpha`` is cross-entropy.
    ``1 - p_y`` is computed as ``-expm1(log p_y)``, accurate as ``p_y -> 1``.
    With ``drw_epoch`` (deferred re-weighting, see :func:`drw_weights`) ``alpha`` is none
    before that epoch and the class-balanced weights from it on.
    """
    alpha = drw_weights("focal", "alpha", alpha, drw_epoch, drw_beta, class_counts, epoch)
    x, t = _class_input("focal", pred, target)
    ce = _nll(x, t)  # -log p_y
    loss = _focal_factor(-torch.expm1(-ce), gamma) * ce
    if isinstance(alpha, torch.Tensor) and alpha.dim() == 0:  # a scalar held in a buffer
        loss = alpha.to(loss.dtype) * loss
    elif isinstance(alpha, int | float):
        loss = alpha * loss
    elif alpha is not None:
        loss = _per_class("focal", "alpha", alpha, x)[t] * loss
    return reduce(loss, reduction)


@register_loss(
    "focal",
    tasks=("multiclass",),
    params=[
        Param(
            "gamma",
            2.0,
            "float",
            low=0.0,
            search=Search.float(0.0, 5.0),
            help="focusing strength: how much confident, easy examples are down-weighted",
        ),
        Param(
            "alpha",
            None,
            "float_or_floats",
            low=0.0,
            help="a scale, or one weight per class (alpha_y); none by default",
        ),
        *drw_params(counts=True),
    ],
    traits=("handles_imbalance",),
    function=focal_loss,
    description="Cross-entropy scaled by (1 - p)^gamma: down-weights the many easy examples.",
    reference="Lin et al., 'Focal Loss for Dense Object Detection', ICCV 2017; source document §3",
)
class FocalLoss(DeferredReweighting):
    """With ``drw_epoch``, the class-balanced weights are the per-class ``alpha`` (Cui et al.'s
    class-balanced focal loss, switched on at that epoch)."""

    alpha: torch.Tensor | None

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | PerClass | None = None,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
        class_counts: PerClass | None = None,
        reduction: str = "mean",
    ):
        super().__init__()
        self.gamma, self.reduction = gamma, reduction
        _register(self, "alpha", alpha)
        self._init_drw("focal", drw_epoch, drw_beta, class_counts, "alpha", alpha)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(pred, target, gamma=self.gamma, alpha=self._drw_or(self.alpha), reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, reduction={self.reduction!r}{self._drw_repr()}"


def weighted_ce_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    class_counts: PerClass,
    scheme: str = "inverse",
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy with class weights from the training counts.

    ``w_c ∝ 1 / n_c`` (``"inverse"``) or ``1 / sqrt(n_c)`` (``"sqrt_inverse"``), scaled to
    mean 1 over the classes; then :func:`cross_entropy_loss` with ``weight=w`` (so
    ``"mean"`` is the weighted mean ``sum w_y l_i / sum w_y``, as in torch).
    """
    weight = frequency_weights(class_counts, scheme)
    return _cross_entropy(
        "weighted_ce", pred, target, weight=weight, reduction=reduction, weight_source="class_counts"
    )


@register_loss(
    "weighted_ce",
    tasks=("multiclass",),
    params=[
        Param("class_counts", None, "counts", help=_COUNTS_HELP),
        Param(
            "scheme",
            "inverse",
            "str",
            choices=("inverse", "sqrt_inverse"),
            search=Search.categorical("inverse", "sqrt_inverse"),
            help="weights from inverse class frequency, or its square root (milder)",
        ),
    ],
    needs=("class_counts",),
    traits=("convex", "handles_imbalance"),
    function=weighted_ce_loss,
    description="Cross-entropy with inverse-frequency class weights: rare classes count more.",
    reference="Source document §3 (cross-entropy for class imbalance); inverse and square-root-inverse "
    "frequency weighting as discussed by Cui et al., 'Class-Balanced Loss Based on Effective Number "
    "of Samples', CVPR 2019",
)
class WeightedCrossEntropyLoss(nn.Module):
    weight: torch.Tensor

    def __init__(self, *, class_counts: PerClass, scheme: str = "inverse", reduction: str = "mean"):
        super().__init__()
        self.scheme, self.reduction = scheme, reduction
        _register(self, "weight", frequency_weights(class_counts, scheme))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _cross_entropy(
            "weighted_ce", pred, target, weight=self.weight, reduction=self.reduction, weight_source="class_counts"
        )

    def extra_repr(self) -> str:
        return f"scheme={self.scheme!r}, reduction={self.reduction!r}"


_CB_BASES = ("cross_entropy", "focal", "bce")


def _class_balanced(
    pred: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    base: str,
    gamma: float,
    reduction: str,
) -> torch.Tensor:
    _check_choice("class_balanced", "base", base, _CB_BASES)
    x, t = _class_input("class_balanced", pred, target)
    w = _per_class("class_balanced", "class_counts", weights, x)
    if base == "cross_entropy":
        return reduce(_nll(x, t, w), reduction)  # w_y (-log p_y), the weight applied in the fused kernel
    # one-vs-all: z is the logit of the correct side of each class's binary problem
    positive = F.one_hot(t, x.shape[1]).to(torch.bool)
    z = torch.where(positive, x, -x)
    elementwise = -F.logsigmoid(z)
    if base == "focal":
        elementwise = _focal_factor(torch.sigmoid(-z), gamma) * elementwise
    return reduce(w[t] * elementwise.sum(dim=1), reduction)


def class_balanced_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    class_counts: PerClass,
    beta: float = 0.999,
    base: str = "cross_entropy",
    gamma: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Class-balanced loss ``w_y L(f(x), y)`` with ``w_c ∝ (1 - beta) / (1 - beta^n_c)``.

    ``(1 - beta^n) / (1 - beta)`` is the effective number of samples of a class with
    ``n`` samples; the weights are scaled to sum to ``C``. Bases, as in the paper:
    ``"cross_entropy"`` (softmax), ``"bce"`` (one-vs-all sigmoid on one-hot targets,
    summed over classes) and ``"focal"`` (one-vs-all sigmoid focal loss
    ``sum_c (1 - p_c^t)^gamma (-log p_c^t)``, no alpha). ``"mean"`` is the plain mean over
    samples.
    """
    return _class_balanced(pred, target, class_balanced_weights(class_counts, beta), base, gamma, reduction)


@register_loss(
    "class_balanced",
    tasks=("multiclass",),
    params=[
        Param("class_counts", None, "counts", help=_COUNTS_HELP),
        Param(
            "beta",
            0.999,
            "float",
            low=0.0,
            high=1.0,
            closed="left",
            search=Search.categorical(0.9, 0.99, 0.999, 0.9999),
            help="0 gives no re-weighting; towards 1 it approaches inverse frequency",
        ),
        Param(
            "base",
            "cross_entropy",
            "str",
            choices=_CB_BASES,
            search=Search.categorical(*_CB_BASES),
            help="the loss being re-weighted: softmax cross-entropy, or the paper's sigmoid bce / focal",
        ),
        Param(
            "gamma", 2.0, "float", low=0.0, search=Search.float(0.0, 3.0), help="focusing strength of the focal base"
        ),
    ],
    needs=("class_counts",),
    traits=("handles_imbalance",),
    function=class_balanced_loss,
    description="Re-weights each class by the inverse of its effective number of samples.",
    reference="Cui et al., 'Class-Balanced Loss Based on Effective Number of Samples', CVPR 2019",
)
class ClassBalancedLoss(nn.Module):
    weight: torch.Tensor

    def __init__(
        self,
        *,
        class_counts: PerClass,
        beta: float = 0.999,
        base: str = "cross_entropy",
        gamma: float = 2.0,
        reduction: str = "mean",
    ):
        super().__init__()
        self.beta, self.base, self.gamma, self.reduction = beta, base, gamma, reduction
        _register(self, "weight", class_balanced_weights(class_counts, beta))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _class_balanced(pred, target, self.weight, self.base, self.gamma, self.reduction)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, base={self.base!r}, gamma={self.gamma}, reduction={self.reduction!r}"


def _ldam(
    pred: torch.Tensor,
    target: torch.Tensor,
    margins: torch.Tensor,
    s: float,
    weight: PerClass | None,
    reduction: str,
) -> torch.Tensor:
    x, t = _class_input("ldam", pred, target)
    m = _per_class("ldam", "class_counts", margins, x)
    w = None if weight is None else _per_class("ldam", "weight", weight, x)
    shift = torch.zeros_like(x).scatter_(1, t.unsqueeze(1), m[t].unsqueeze(1))
    return _hard_ce(s * (x - shift), t, w, 0.0, None, reduction)


def ldam_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    class_counts: PerClass,
    max_m: float = 0.5,
    s: float = 30.0,
    weight: PerClass | None = None,
    drw_epoch: int | None = None,
    drw_beta: float = 0.9999,
    epoch: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Label-distribution-aware margin loss: cross-entropy on ``s (f - m_y e_y)``.

    The true class's logit is lowered by ``m_y ∝ n_y^(-1/4)`` (largest margin ``max_m``,
    for the rarest class), the logits are scaled by ``s``, and cross-entropy follows,
    with optional class weights (``"mean"`` is then the weighted mean, as in torch).
    ``drw_epoch`` gives LDAM-DRW: no weights before that training epoch, the class-balanced
    weights of ``class_counts`` from it on (:func:`drw_weights`).
    """
    w = drw_weights("ldam", "weight", weight, drw_epoch, drw_beta, class_counts, epoch)
    return _ldam(pred, target, ldam_margins(class_counts, max_m), s, w, reduction)


@register_loss(
    "ldam",
    tasks=("multiclass",),
    params=[
        Param("class_counts", None, "counts", help=_COUNTS_HELP),
        Param(
            "max_m",
            0.5,
            "float",
            low=0.0,
            closed="neither",
            search=Search.float(0.1, 1.0),
            help="margin of the rarest class (the others scale with n^(-1/4))",
        ),
        Param(
            "s",
            30.0,
            "float",
            low=0.0,
            closed="neither",
            search=Search.float(5.0, 50.0, log=True),
            help="logit scale applied after the margin",
        ),
        Param("weight", None, "floats", low=0.0, help="optional fixed per-class weights"),
        *drw_params(counts=False),
    ],
    needs=("class_counts",),
    head="normed",  # Cao et al. train LDAM on a cosine classifier; s=30 assumes logits in [-1, 1]
    traits=("convex", "handles_imbalance"),
    function=ldam_loss,
    description="Cross-entropy with larger margins for rarer classes.",
    reference="Cao et al., 'Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss', NeurIPS 2019",
)
class LDAMLoss(DeferredReweighting):
    """``drw_epoch`` gives LDAM-DRW, Cao et al.'s full method."""

    margins: torch.Tensor
    weight: torch.Tensor | None

    def __init__(
        self,
        *,
        class_counts: PerClass,
        max_m: float = 0.5,
        s: float = 30.0,
        weight: PerClass | None = None,
        drw_epoch: int | None = None,
        drw_beta: float = 0.9999,
        reduction: str = "mean",
    ):
        super().__init__()
        self.max_m, self.s, self.reduction = max_m, s, reduction
        _register(self, "margins", ldam_margins(class_counts, max_m))
        _register(self, "weight", weight)
        self._init_drw("ldam", drw_epoch, drw_beta, class_counts, "weight", weight)

    @property
    def logit_scale(self) -> float:
        """The loss trains ``softmax(s * pred)``: the model's probabilities are that too."""
        return self.s

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _ldam(pred, target, self.margins, self.s, self._drw_or(self.weight), self.reduction)

    def extra_repr(self) -> str:
        return f"max_m={self.max_m}, s={self.s}, reduction={self.reduction!r}{self._drw_repr()}"


def _shifted_ce(
    name: str, pred: torch.Tensor, target: torch.Tensor, offset: torch.Tensor, reduction: str
) -> torch.Tensor:
    x, t = _class_input(name, pred, target)
    b = _per_class(name, "class_counts", offset, x)
    return _hard_ce(x + b, t, None, 0.0, None, reduction)


def logit_adjusted_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    class_counts: PerClass,
    tau: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Logit-adjusted cross-entropy: cross-entropy on ``f_c + tau log pi_c``, ``pi = n / sum n``.

    Train with it and predict with the raw logits ``f``. ``tau = 0`` is cross-entropy.
    """
    return _shifted_ce("logit_adjusted", pred, target, tau * log_prior(class_counts), reduction)


@register_loss(
    "logit_adjusted",
    tasks=("multiclass",),
    params=[
        Param("class_counts", None, "counts", help=_COUNTS_HELP),
        Param(
            "tau",
            1.0,
            "float",
            low=0.0,
            search=Search.float(0.0, 2.0),
            help="strength of the adjustment (0: plain cross-entropy)",
        ),
    ],
    needs=("class_counts",),
    traits=("convex", "handles_imbalance"),
    function=logit_adjusted_loss,
    description="Cross-entropy on logits shifted by tau * log(prior): a margin that favours rare classes.",
    reference="Menon et al., 'Long-tail learning via logit adjustment', ICLR 2021",
)
class LogitAdjustedLoss(nn.Module):
    offset: torch.Tensor

    def __init__(self, *, class_counts: PerClass, tau: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.tau, self.reduction = tau, reduction
        _register(self, "offset", tau * log_prior(class_counts))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _shifted_ce("logit_adjusted", pred, target, self.offset, self.reduction)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, reduction={self.reduction!r}"


def balanced_softmax_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    class_counts: PerClass,
    reduction: str = "mean",
) -> torch.Tensor:
    """Balanced softmax: cross-entropy on ``f_c + log n_c``.

    The same as :func:`logit_adjusted_loss` with ``tau = 1`` (``log n_c`` and
    ``log pi_c`` differ by a constant, which softmax ignores).
    """
    return _shifted_ce("balanced_softmax", pred, target, _counts(class_counts).log(), reduction)


@register_loss(
    "balanced_softmax",
    tasks=("multiclass",),
    params=[Param("class_counts", None, "counts", help=_COUNTS_HELP)],
    needs=("class_counts",),
    traits=("convex", "handles_imbalance"),
    function=balanced_softmax_loss,
    description="Softmax shifted by log class counts: corrects the label-prior shift of long-tailed data.",
    reference="Ren et al., 'Balanced Meta-Softmax for Long-Tailed Visual Recognition', NeurIPS 2020",
)
class BalancedSoftmaxLoss(nn.Module):
    offset: torch.Tensor

    def __init__(self, *, class_counts: PerClass, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction
        _register(self, "offset", _counts(class_counts).log())

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _shifted_ce("balanced_softmax", pred, target, self.offset, self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


@register_loss(
    "gce",
    tasks=("multiclass",),
    params=[
        Param(
            "q",
            0.7,
            "float",
            low=0.0,
            high=1.0,
            closed="right",
            search=Search.float(0.1, 1.0),
            help="q -> 0 gives cross-entropy, q = 1 gives 1 - p_y (mean absolute error)",
        )
    ],
    traits=("handles_label_noise",),
    description="Generalized cross-entropy (1 - p_y^q) / q: bounded, so mislabelled samples pull less.",
    reference="Zhang & Sabuncu, 'Generalized Cross Entropy Loss for Training Deep Neural Networks with "
    "Noisy Labels', NeurIPS 2018",
)
def gce_loss(pred: torch.Tensor, target: torch.Tensor, *, q: float = 0.7, reduction: str = "mean") -> torch.Tensor:
    """``(1 - p_y^q) / q``, computed as ``-expm1(q log p_y) / q`` (exact as ``q -> 0``)."""
    ce = _ce_per_sample("gce", pred, target)  # -log p_y
    return reduce(-torch.expm1(-q * ce) / q, reduction)


@register_loss(
    "sce",
    tasks=("multiclass",),
    params=[
        Param(
            "alpha", 0.1, "float", low=0.0, search=Search.float(0.01, 10.0, log=True), help="weight of cross-entropy"
        ),
        Param(
            "beta",
            1.0,
            "float",
            low=0.0,
            search=Search.float(0.01, 10.0, log=True),
            help="weight of reverse cross-entropy",
        ),
    ],
    traits=("handles_label_noise",),
    description="Symmetric cross-entropy: cross-entropy plus a bounded reverse cross-entropy, for noisy labels.",
    reference="Wang et al., 'Symmetric Cross Entropy for Robust Learning with Noisy Labels', ICCV 2019",
)
def sce_loss(
    pred: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.1, beta: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """``alpha CE + beta RCE`` with ``RCE = -sum_k p_k log y_k`` and ``log 0 := A = -4``.

    For a one-hot ``y``, ``RCE = -A (1 - p_y) = 4 (1 - p_y)``. (The paper sets ``A = -4``;
    the authors' released code clamps the one-hot at 1e-4 before a natural log, i.e.
    ``A ≈ -9.21``, which is the same loss with ``beta`` scaled by 2.3.)
    """
    ce = _ce_per_sample("sce", pred, target)  # -log p_y
    rce = -RCE_LOG_ZERO * -torch.expm1(-ce)
    return reduce(alpha * ce + beta * rce, reduction)


@register_loss(
    "poly",
    tasks=("multiclass",),
    params=[
        Param(
            "epsilon",
            1.0,
            "float",
            low=-1.0,
            search=Search.float(-1.0, 5.0),
            help="coefficient of the first polynomial term (1 - p_y); -1 keeps the loss non-negative",
        )
    ],
    description="Poly-1: cross-entropy plus epsilon (1 - p_y), retuning the leading polynomial term.",
    reference="Leng et al., 'PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions', ICLR 2022",
)
def poly_loss(
    pred: torch.Tensor, target: torch.Tensor, *, epsilon: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """``-log p_y + epsilon (1 - p_y)``."""
    ce = _ce_per_sample("poly", pred, target)  # -log p_y
    return reduce(ce - epsilon * torch.expm1(-ce), reduction)


# --------------------------------------------------------------------------- binary / multi-label
@register_loss(
    "bce",
    tasks=("binary", "multilabel"),
    params=[
        Param(
            "pos_weight",
            None,
            "float",
            low=0.0,
            closed="neither",
            search=Search.float(0.1, 10.0, log=True),
            help="weight of the positive term (> 1 favours recall); none = 1",
        )
    ],
    traits=("convex", "calibrated"),
    description="Binary cross-entropy (log loss) on logits.",
    reference="Source document §3 (cross-entropy; its binary case is log loss)",
)
def bce_loss(
    pred: torch.Tensor, target: torch.Tensor, *, pos_weight: float | None = None, reduction: str = "mean"
) -> torch.Tensor:
    """``-(w_+ y log sigma(f) + (1 - y) log(1 - sigma(f)))`` per element, ``w_+ = pos_weight``.

    The same as :func:`torch.nn.functional.binary_cross_entropy_with_logits`.
    """
    x, t = _binary_input("bce", pred, target)
    pw = None if pos_weight is None else (pos_weight.to(x) if isinstance(pos_weight, torch.Tensor) else x.new_full((), float(pos_weight)))
    return F.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction=reduction)


@register_loss(
    "balanced_bce",
    tasks=("binary", "multilabel"),
    params=[
        Param(
            "alpha",
            0.25,
            "float",
            low=0.0,
            high=1.0,
            search=Search.float(0.05, 0.95),
            help="weight of positives; negatives get 1 - alpha",
        )
    ],
    traits=("convex", "handles_imbalance"),
    description="Alpha-balanced cross-entropy: positives weighted alpha, negatives 1 - alpha.",
    reference="Source document §3 (alpha-balanced CE); Lin et al., 'Focal Loss for Dense Object Detection', "
    "ICCV 2017, §3.1",
)
def balanced_bce_loss(
    pred: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.25, reduction: str = "mean"
) -> torch.Tensor:
    """``-alpha log p`` for ``y = 1``, ``-(1 - alpha) log(1 - p)`` for ``y = 0``, ``p = sigma(f)``."""
    x, t = _binary_input("balanced_bce", pred, target)
    # BCE with the per-element weight alpha_t = alpha (y = 1) or 1 - alpha (y = 0): one fused kernel
    alpha_t = (1.0 - alpha) + (2.0 * alpha - 1.0) * t
    return F.binary_cross_entropy_with_logits(x, t, weight=alpha_t, reduction=reduction)


@register_loss(
    "binary_focal",
    tasks=("binary", "multilabel"),
    params=[
        Param(
            "alpha",
            0.25,
            "float",
            low=0.0,
            high=1.0,
            search=Search.float(0.05, 0.95),
            help="weight of positives (negatives get 1 - alpha); 0.5 weighs both alike",
        ),
        Param("gamma", 2.0, "float", low=0.0, search=Search.float(0.0, 5.0), help="focusing strength"),
    ],
    traits=("handles_imbalance",),
    description="Sigmoid focal loss: alpha-balanced cross-entropy scaled by (1 - p_t)^gamma.",
    reference="Lin et al., 'Focal Loss for Dense Object Detection', ICCV 2017; source document §3",
)
def binary_focal_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``-alpha_t (1 - p_t)^gamma log p_t`` per element.

    ``p_t = p`` for ``y = 1`` and ``1 - p`` for ``y = 0`` (``p = sigma(f)``); ``alpha_t =
    alpha`` for positives and ``1 - alpha`` for negatives. ``alpha = 0.5`` weighs both
    alike (half the unweighted loss); this function also takes ``alpha=None`` for no
    weighting at all (torchvision spells it ``alpha=-1``). The same as
    :func:`torchvision.ops.sigmoid_focal_loss`, whose ``"mean"`` is over all elements.
    The cross-entropy factor is torch's fused ``binary_cross_entropy_with_logits``, as
    there; for a confident negative (``y = 0``, ``f << 0``) its value is exact to the
    rounding of ``f``, not to its own size (both tiny next to the loss's scale).
    """
    x, t = _binary_input("binary_focal", pred, target)
    # alpha_t = alpha t + (1 - alpha)(1 - t), a function of the target only: bce's fused weight
    alpha_t = None if alpha is None else t.mul(2.0 * alpha - 1.0).add_(1.0 - alpha)
    ce = F.binary_cross_entropy_with_logits(x, t, weight=alpha_t, reduction="none")
    # 1 - p_t = sigma(x) (1 - t) + sigma(-x) t; lerp is exact at t = 0 and t = 1, and sigma(-x)
    # (not 1 - sigma(x)) keeps full relative precision when p_t -> 1
    one_minus_pt = torch.lerp(torch.sigmoid(x), torch.sigmoid(-x), t)
    return reduce(_focal_factor(one_minus_pt, gamma) * ce, reduction)


@register_loss(
    "asl",
    tasks=("multilabel", "binary"),
    params=[
        Param(
            "gamma_pos", 0.0, "float", low=0.0, search=Search.float(0.0, 2.0), help="focusing strength for positives"
        ),
        Param(
            "gamma_neg", 4.0, "float", low=0.0, search=Search.float(0.0, 6.0), help="focusing strength for negatives"
        ),
        Param(
            "clip",
            0.05,
            "float",
            low=0.0,
            high=1.0,
            closed="left",
            search=Search.float(0.0, 0.2),
            help="probability margin: negatives with p below it cost nothing",
        ),
    ],
    traits=("handles_imbalance",),
    description="Asymmetric loss: separate focusing for positives and negatives, easy negatives discarded.",
    reference="Ridnik et al., 'Asymmetric Loss For Multi-Label Classification', ICCV 2021",
)
def asl_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    reduction: str = "mean",
) -> torch.Tensor:
    """``-y (1 - p)^g+ log p - (1 - y) p_m^g- log(1 - p_m)``, ``p_m = max(p - clip, 0)``.

    ``p = sigma(f)``. ``log(1 - p_m) = log(min(sigma(-f) + clip, 1))``; with ``clip = 0``
    it is ``logsigmoid(-f)``. ``gamma_pos = gamma_neg = clip = 0`` is binary cross-entropy.
    ``"mean"`` is the mean over all elements (the authors sum them).
    """
    x, t = _binary_input("asl", pred, target)
    pos = _focal_factor(torch.sigmoid(-x), gamma_pos) * -F.logsigmoid(x)
    if clip > 0:
        log_not_pm = torch.log(torch.clamp(torch.sigmoid(-x) + clip, max=1.0))
        p_m = torch.clamp(torch.sigmoid(x) - clip, min=0.0)
    else:
        log_not_pm = F.logsigmoid(-x)
        p_m = torch.sigmoid(x)
    neg = _focal_factor(p_m, gamma_neg) * -log_not_pm
    return reduce(t * pos + (1.0 - t) * neg, reduction)

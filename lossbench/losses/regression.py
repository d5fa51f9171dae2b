"""Distance-based (regression) losses.

Input convention: ``pred`` and ``target`` are float tensors of the same shape (any
shape; the first dimension is the batch). ``reduction="none"`` returns the per-element
loss, ``"mean"`` its mean over all elements, ``"sum"`` its sum — the same as torch's
built-in regression losses.

Precision: float16 and bfloat16 inputs are computed, and returned, in float32 (a squared
residual of 300 already overflows float16); float32 and float64 stay as they are.
Hyperparameters may be Python numbers or tensors that broadcast against the residual.

Over 500 lines on purpose: one kernel and one spec per regression loss of the article, each
with its formula and citation; each loss is short.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError
from ..registry import Param, Search, register_loss
from ._common import check_same_shape, reduce

Number = float | torch.Tensor

_LOG2 = math.log(2.0)
_FULL = (torch.float32, torch.float64)  # dtypes computed as they are


# --------------------------------------------------------------------------- helpers
def _residual(name: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``pred - target`` in the working dtype: at least float32, float64 if either input is."""
    check_same_shape(name, pred, target)
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    return pred.to(dtype) - target.to(dtype)


def _pair(name: str, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pred``, ``target`` in the working dtype, for torch's fused kernels (no copy when already there)."""
    check_same_shape(name, pred, target)
    if pred.dtype == target.dtype and pred.dtype in _FULL:  # the common case, without the dtype arithmetic
        return pred, target
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    return pred.to(dtype), target.to(dtype)


def _like(value: Number, ref: torch.Tensor) -> torch.Tensor:
    """A hyperparameter as a tensor in ``ref``'s dtype and device (a fill, never a host copy)."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=ref.dtype, device=ref.device)
    return ref.new_full((), float(value))


def _safe_root(square: torch.Tensor) -> torch.Tensor:
    """The root of a freshly computed mean or sum of squares, with gradient 0 (a
    subgradient) where it is 0, instead of ``inf * 0 = NaN``.

    The square is raised in place, outside autograd (``detach`` shares its storage), to
    the smallest normal number of its dtype before the root. Nothing at or above that
    number changes; the root's backward then divides by ``sqrt(tiny)`` instead of 0, and
    the squares' own backward multiplies that by the residuals, which are all 0 there. So a
    perfect prediction costs ``sqrt(tiny)`` (1e-19 in float32) with gradient exactly 0, and
    NaN stays NaN. Unlike a clamp inside autograd, it adds no node to the graph.
    """
    square.detach().clamp_min_(torch.finfo(square.dtype).tiny)
    return square.sqrt()


def _pos(name: str, search: Search, help: str, default: float = 1.0) -> Param:
    """A strictly positive float hyperparameter."""
    return Param(name, default, "float", low=0.0, closed="neither", search=search, help=help)


# --------------------------------------------------------------------------- classic
@register_loss(
    "mse",
    tasks=("regression",),
    traits=("convex",),
    description="Mean squared error: the standard regression loss; its gradient grows with the residual.",
    reference="Gauss (1809); source document §3.1.1",
)
def mse_loss(pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """``L = (f(x) - y)^2`` per element (torch's fused kernel does the arithmetic)."""
    return F.mse_loss(*_pair("mse", pred, target), reduction=reduction)


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
    Euclidean norm of the residual, ``sqrt(sum r^2)``. ``"none"``: per element, like
    every regression loss, the root of each squared residual, ``|r|``. A perfect
    prediction gives ``sqrt(tiny)`` of the dtype (1e-19 in float32) and gradient 0 (see
    :func:`_safe_root`).
    """
    p, t = _pair("rmse", pred, target)
    if reduction == "none":
        return (p - t).abs()
    return _safe_root(F.mse_loss(p, t, reduction=reduction))


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
    return F.l1_loss(*_pair("l1", pred, target), reduction=reduction)


@register_loss(
    "huber",
    tasks=("regression",),
    params=[
        _pos(
            "delta",
            Search.float(0.05, 10.0, log=True),
            "residual size where the loss turns from quadratic to linear",
        )
    ],
    traits=("convex", "robust_to_outliers", "bounded_influence"),
    description="Quadratic for small residuals, linear for large ones: robust with a smooth gradient.",
    reference="Huber, 'Robust Estimation of a Location Parameter', Ann. Math. Stat. 1964",
)
def huber_loss(
    pred: torch.Tensor, target: torch.Tensor, *, delta: Number = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """``0.5 r^2`` if ``|r| <= delta`` else ``delta (|r| - 0.5 delta)``."""
    if not isinstance(delta, torch.Tensor):  # a plain number: torch's fused kernel
        return F.huber_loss(*_pair("huber", pred, target), reduction=reduction, delta=float(delta))
    a = _residual("huber", pred, target).abs()  # tensor delta (batched sweeps): the same formula
    quad = torch.clamp(a, max=delta)
    # 0.5 q^2 + delta (a - q), with q = min(a, delta): one branch-free expression
    return reduce(0.5 * quad * quad + delta * (a - quad), reduction)


@register_loss(
    "smooth_l1",
    tasks=("regression",),
    params=[
        Param(
            "beta",
            1.0,
            "float",
            low=0.0,
            search=Search.float(0.01, 10.0, log=True),
            help="residual size where the loss turns from quadratic to linear; 0 gives L1",
        )
    ],
    traits=("convex", "robust_to_outliers", "bounded_influence"),
    description="Huber divided by beta: slope 1 for large residuals, as used for box regression in detection.",
    reference="Girshick, 'Fast R-CNN', ICCV 2015; source document §3.1.4",
)
def smooth_l1_loss(
    pred: torch.Tensor, target: torch.Tensor, *, beta: Number = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """``0.5 r^2 / beta`` if ``|r| < beta`` else ``|r| - 0.5 beta``; ``beta = 0`` is ``|r|``."""
    if not isinstance(beta, torch.Tensor):  # a plain number: torch's fused kernel
        return F.smooth_l1_loss(*_pair("smooth_l1", pred, target), reduction=reduction, beta=float(beta))
    a = _residual("smooth_l1", pred, target).abs()  # tensor beta (batched sweeps): the same formula
    quad = torch.clamp(a, max=beta)
    # with beta = 0, quad is 0: divide by 1 instead of 0 (works for floats and tensors)
    nonzero_beta = beta + (beta == 0)
    return reduce(0.5 * quad * quad / nonzero_beta + (a - quad), reduction)


@register_loss(
    "pseudo_huber",
    tasks=("regression",),
    params=[
        _pos(
            "delta",
            Search.float(0.05, 10.0, log=True),
            "residual size where the loss turns from quadratic to linear (smoothly)",
        )
    ],
    traits=("convex", "robust_to_outliers", "bounded_influence"),
    description="Smooth Huber (Charbonnier): r^2/2 near zero, delta |r| far out, every derivative continuous.",
    reference=(
        "Charbonnier et al., 'Two deterministic half-quadratic regularization algorithms for "
        "computed imaging', ICIP 1994; Hartley & Zisserman, 'Multiple View Geometry in Computer "
        "Vision', 2nd ed. 2003"
    ),
)
def pseudo_huber_loss(
    pred: torch.Tensor, target: torch.Tensor, *, delta: Number = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """``delta^2 (sqrt(1 + (r / delta)^2) - 1)``.

    Evaluated as ``delta r^2 / (hypot(r, delta) + delta)``, which is the same number
    without forming ``(r / delta)^2`` (overflow for tiny ``delta``) and without
    subtracting nearly equal terms (cancellation for small ``r``).
    """
    r = _residual("pseudo_huber", pred, target)
    d = _like(delta, r)
    return reduce(d * r * (r / (torch.hypot(r, d) + d)), reduction)


@register_loss(
    "log_cosh",
    tasks=("regression",),
    traits=("convex", "robust_to_outliers", "bounded_influence"),
    description="log(cosh(r)): about r^2/2 near zero and |r| - log 2 far out, twice differentiable.",
    reference=(
        "Saleh & Saleh, 'Statistical properties of the log-cosh loss function used in machine "
        "learning', arXiv:2208.04564, 2022"
    ),
)
def log_cosh_loss(pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """``log(cosh(r))``.

    For ``|r| >= 1`` as ``|r| + softplus(-2|r|) - log 2`` (``cosh`` itself overflows float32
    at ``|r| > 89``); below 1 as ``log1p(2 sinh(r/2)^2)``, which keeps full relative
    precision where the first form would cancel.
    """
    r = _residual("log_cosh", pred, target)
    a = r.abs()
    small = a < 1
    far = a + F.softplus(-2.0 * a) - _LOG2
    r_small = torch.where(small, r, torch.zeros_like(r))  # keep the unused branch finite
    near = torch.log1p(2.0 * torch.sinh(0.5 * r_small).square())
    return reduce(torch.where(small, near, far), reduction)


@register_loss(
    "quantile",
    tasks=("regression",),
    params=[
        Param(
            "q",
            0.5,
            "float",
            low=0.0,
            high=1.0,
            closed="neither",
            search=Search.float(0.05, 0.95),
            help="the quantile the prediction estimates (0.5: the median)",
        )
    ],
    traits=("convex", "robust_to_outliers", "bounded_influence"),
    aliases=("pinball",),
    description="Pinball loss: trains the prediction towards the q-quantile of the target, not its mean.",
    reference="Koenker & Bassett, 'Regression Quantiles', Econometrica 1978",
)
def quantile_loss(
    pred: torch.Tensor, target: torch.Tensor, *, q: Number = 0.5, reduction: str = "mean"
) -> torch.Tensor:
    """``max(q u, (q - 1) u)`` with ``u = y - f(x)``: under-prediction costs ``q``, over ``1 - q``."""
    u = -_residual("quantile", pred, target)
    return reduce(u * (q - (u < 0).to(u.dtype)), reduction)


# --------------------------------------------------------------------------- redescending
def _log1p_square(t: torch.Tensor) -> torch.Tensor:
    """``log(1 + t^2)``: by ``log1p`` below ``|t| = 1``, as ``2 log(hypot(1, t))`` above, which
    never forms the square (no overflow for a tiny scale)."""
    small = t.abs() < 1
    t_small = torch.where(small, t, torch.zeros_like(t))
    t_big = torch.where(small, torch.ones_like(t), t)
    return torch.where(small, torch.log1p(t_small * t_small), 2.0 * torch.log(torch.hypot(torch.ones_like(t), t_big)))


def _one_minus_exp_neg(x: torch.Tensor) -> torch.Tensor:
    """``1 - exp(-x)`` for ``x >= 0``, accurate in value and gradient at both ends.

    ``-expm1(-x)`` is exact for small ``x``, but torch differentiates ``expm1`` as
    ``result + 1``, which cancels once ``exp(-x)`` is tiny; ``1 - exp(-x)`` is exact there.
    """
    return torch.where(x < 1, -torch.expm1(-x), 1.0 - torch.exp(-x))


_C_SEARCH = Search.float(0.1, 10.0, log=True)


@register_loss(
    "cauchy",
    tasks=("regression",),
    params=[_pos("c", _C_SEARCH, "scale of the residual where the loss flattens")],
    traits=("robust_to_outliers", "bounded_influence"),
    description="Cauchy (Lorentzian) loss: logarithmic growth, so large residuals barely pull; not convex.",
    reference=(
        "Black & Anandan, 'The robust estimation of multiple motions: parametric and "
        "piecewise-smooth flow fields', CVIU 1996; Barron, 'A General and Adaptive Robust Loss "
        "Function', CVPR 2019"
    ),
)
def cauchy_loss(pred: torch.Tensor, target: torch.Tensor, *, c: Number = 1.0, reduction: str = "mean") -> torch.Tensor:
    """``c^2 / 2 * log(1 + (r / c)^2)``; in Barron's notation ``c^2 / 2 * rho(r, 0, c / sqrt(2))``."""
    r = _residual("cauchy", pred, target)
    return reduce(0.5 * c * c * _log1p_square(r / c), reduction)


@register_loss(
    "tukey",
    tasks=("regression",),
    params=[
        _pos(
            "c",
            Search.float(0.5, 20.0, log=True),
            "residuals beyond c get a constant loss and no gradient (4.685: 95% efficiency at the Gaussian)",
            default=4.685,
        )
    ],
    traits=("robust_to_outliers", "bounded_influence"),
    description="Tukey's biweight: bounded, ignores residuals beyond c entirely; not convex.",
    reference=(
        "Beaton & Tukey, 'The fitting of power series, meaning polynomials, illustrated on "
        "band-spectroscopic data', Technometrics 1974"
    ),
)
def tukey_loss(
    pred: torch.Tensor, target: torch.Tensor, *, c: Number = 4.685, reduction: str = "mean"
) -> torch.Tensor:
    """``c^2 / 6 * (1 - (1 - (r / c)^2)^3)`` for ``|r| <= c``, ``c^2 / 6`` beyond."""
    r = _residual("tukey", pred, target)
    z = torch.clamp(r / c, -1.0, 1.0)  # clamping before squaring: no overflow, zero gradient beyond c
    u = z * z
    # 1 - (1 - u)^3 expanded, so that a small residual does not cancel to 0
    return reduce(c * c / 6.0 * (u * (3.0 - u * (3.0 - u))), reduction)


@register_loss(
    "welsch",
    tasks=("regression",),
    params=[_pos("c", _C_SEARCH, "scale of the residual where the loss saturates (2.9846: 95% efficiency)")],
    traits=("robust_to_outliers", "bounded_influence"),
    description="Welsch (Leclerc) loss: a Gaussian well, bounded at c^2/2; large residuals have no pull. Not convex.",
    reference=(
        "Dennis & Welsch, 'Techniques for nonlinear least squares and robust regression', "
        "Communications in Statistics - Simulation and Computation 1978"
    ),
)
def welsch_loss(pred: torch.Tensor, target: torch.Tensor, *, c: Number = 1.0, reduction: str = "mean") -> torch.Tensor:
    """``c^2 / 2 * (1 - exp(-(r / c)^2))``: about ``r^2 / 2`` near 0, like every loss here.

    Its influence ``r exp(-(r / c)^2)`` peaks at ``|r| = c / sqrt(2)`` and falls to 0. In
    Barron's notation it is ``c^2 / 2 * rho(r, -inf, c / sqrt(2))``.
    """
    r = _residual("welsch", pred, target)
    # beyond |r / c| = 30 the exponential is 0 even in float64: clamp so the square cannot overflow
    z = torch.clamp(r / c, -30.0, 30.0)
    return reduce(0.5 * c * c * _one_minus_exp_neg(z * z), reduction)


# --------------------------------------------------------------------------- Barron
BARRON_ADAPTIVE_ALPHA = (0.001, 1.999)  # where the adaptive loss keeps alpha (the NLL needs [0, 2])
BARRON_MIN_SCALE = 1e-5  # the adaptive scale never falls below this


def _exprel(u: torch.Tensor) -> torch.Tensor:
    """``(exp(u) - 1) / u``, equal to 1 (with slope 1/2) at ``u = 0``."""
    zero = u == 0
    u_safe = torch.where(zero, torch.ones_like(u), u)
    return torch.where(zero, 1.0 + 0.5 * u, torch.expm1(u_safe) / u_safe)


def _barron_rho(z: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Barron's ``rho(x, alpha, c)`` at ``z = x / c``, for any ``alpha`` in ``[-inf, 2]``.

    With ``b = 2 - alpha`` and ``L = log1p(z^2 / b)`` the loss is ``(b / alpha) expm1(alpha L / 2)``.
    Two exact rewrites keep it finite and accurate through the removable singularities:

    * ``alpha <= 1`` (``b >= 1``): ``(b / 2) L exprel(alpha L / 2)`` — no division by
      ``alpha``, so ``alpha = 0`` gives ``log1p(z^2 / 2)``;
    * ``alpha > 1``: ``(z^2 e^{-w} + b expm1(-w)) / alpha`` with ``w = (b / 2) L`` — no
      division by ``b``, so ``alpha = 2`` gives ``z^2 / 2``;
    * ``alpha = -inf``: ``1 - exp(-z^2 / 2)``.

    Each branch is evaluated at a harmless stand-in ``alpha`` where it is not selected, so
    neither values nor gradients pick up NaN from the unused branch.
    """
    neg_inf = torch.isneginf(alpha)
    one = torch.ones_like(alpha)
    low = alpha <= 1

    a_low = torch.where(low & ~neg_inf, alpha, torch.zeros_like(alpha))
    b_low = 2.0 - a_low
    log_low = _log1p_square(z / b_low.sqrt())  # finite for any finite z: this branch is the robust one
    rho_low = 0.5 * b_low * log_low * _exprel(0.5 * a_low * log_low)

    a_high = torch.where(low, 1.5 * one, alpha)
    b_high = 2.0 - a_high
    b_pos = b_high > 0
    z_high = torch.where(low, torch.zeros_like(z), z)  # a huge z overflows here; keep it out when unused
    z2 = z_high * z_high
    w = torch.where(b_pos, 0.5 * b_high * torch.log1p(z2 / torch.where(b_pos, b_high, one)), torch.zeros_like(z2))
    rho_high = (z2 * torch.exp(-w) + b_high * torch.expm1(-w)) / a_high

    z_welsch = torch.clamp(z, -40.0, 40.0)
    rho_welsch = _one_minus_exp_neg(0.5 * z_welsch * z_welsch)
    return torch.where(neg_inf, rho_welsch, torch.where(low, rho_low, rho_high))


def barron_log_partition(
    alpha: Number, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """``log Z(alpha)``, ``Z(alpha) = integral of exp(-rho(x, alpha, 1)) dx`` over the real line.

    Finite for ``alpha`` in ``[0, 2]`` (``Z(2) = sqrt(2 pi)``, ``Z(0) = sqrt(2) pi``). Computed by
    the trapezoid rule after ``x = e^s``, which turns the heavy tails into exponentially
    decaying ones and converges geometrically; differentiable in ``alpha``.
    """
    if isinstance(alpha, torch.Tensor):
        dtype, device = torch.promote_types(alpha.dtype, dtype), alpha.device
    h = 0.125
    s = torch.arange(-36.0, 38.0 + h / 2, h, dtype=dtype, device=device)
    a = alpha.to(dtype) if isinstance(alpha, torch.Tensor) else s.new_full((), float(alpha))
    # Z = 2 * integral_0^inf exp(-rho(x)) dx = 2 * integral exp(s - rho(e^s)) ds
    log_terms = s - _barron_rho(torch.exp(s), a.unsqueeze(-1))
    return torch.logsumexp(log_terms, dim=-1) + math.log(2.0 * h)


def barron_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: Number = 1.0,
    scale: Number = 1.0,
    adaptive: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Barron's general robust loss with shape ``alpha`` and scale ``c``, ``x = f(x) - y``:

    ``rho(x, alpha, c) = |alpha - 2| / alpha * (((x / c)^2 / |alpha - 2| + 1)^(alpha / 2) - 1)``

    with its limits: ``alpha = 2`` is ``(x/c)^2 / 2`` (L2), ``alpha = 1`` is
    ``sqrt((x/c)^2 + 1) - 1`` (pseudo-Huber / Charbonnier), ``alpha = 0`` is
    ``log((x/c)^2 / 2 + 1)`` (Cauchy), ``alpha = -2`` is ``2 (x/c)^2 / ((x/c)^2 + 4)``
    (Geman-McClure), ``alpha = -inf`` is ``1 - exp(-(x/c)^2 / 2)`` (Welsch).

    ``adaptive=True`` returns the negative log-likelihood of Barron's distribution instead,
    ``rho(x, alpha, c) + log(c) + log Z(alpha)``: the loss to minimise when ``alpha`` and
    ``c`` are learned (rho alone would be minimised by growing ``c`` without bound). The
    NLL needs ``alpha`` in ``[0, 2]`` (below 0 its normaliser diverges) and, unlike rho,
    can be negative.
    """
    r = _residual("barron", pred, target)
    if adaptive and not isinstance(alpha, torch.Tensor) and not 0.0 <= alpha <= 2.0:
        raise ParameterError(
            f"The adaptive barron loss needs alpha in [0, 2] (its normaliser diverges below 0). Got {alpha!r} instead."
        )
    a = _like(alpha, r)
    c = _like(scale, r)
    loss = _barron_rho(r / c, a)
    if adaptive:
        loss = loss + torch.log(c) + barron_log_partition(a, dtype=r.dtype, device=r.device)
    return reduce(loss, reduction)


def _inverse_softplus(y: float) -> float:
    """``x`` with ``softplus(x) = y`` (``y > 0``)."""
    return y + math.log(-math.expm1(-y))


@register_loss(
    "barron",
    tasks=("regression",),
    params=[
        Param(
            "alpha",
            1.0,
            "float",
            low=float("-inf"),
            high=2.0,
            search=Search.float(-10.0, 2.0),
            help="shape: 2 = L2, 1 = pseudo-Huber, 0 = Cauchy, -2 = Geman-McClure, -inf = Welsch",
        ),
        _pos("scale", Search.float(0.05, 10.0, log=True), "residual size of the quadratic bowl around 0"),
        Param(
            "adaptive",
            False,
            "bool",
            help="learn alpha (kept in (0.001, 1.999)) and scale, minimising the negative log-likelihood",
        ),
    ],
    traits=("robust_to_outliers", "bounded_influence"),  # for alpha <= 1; convex only for alpha >= 1
    description=(
        "Barron's general robust loss: one shape parameter spans L2, pseudo-Huber, Cauchy and Welsch; "
        "can be learned."
    ),
    reference="Barron, 'A General and Adaptive Robust Loss Function', CVPR 2019",
    function=barron_loss,
)
class BarronLoss(nn.Module):
    """:func:`barron_loss` as a module; with ``adaptive=True`` ``alpha`` and ``scale`` are learned.

    The learned values are reparameterised to stay valid: ``alpha = lo + (hi - lo)
    sigmoid(a)`` in ``(0.001, 1.999)`` and ``scale = softplus(s) + 1e-5``, both starting at
    the values given. Optimise ``module.parameters()`` together with the model's.
    """

    def __init__(self, alpha: float = 1.0, scale: float = 1.0, adaptive: bool = False, reduction: str = "mean"):
        super().__init__()
        self.adaptive = adaptive
        self.reduction = reduction
        if not adaptive:
            self.fixed_alpha, self.fixed_scale = alpha, scale
            return
        lo, hi = BARRON_ADAPTIVE_ALPHA
        if not lo < alpha < hi:
            raise ParameterError(
                f"The adaptive barron loss learns alpha inside ({lo}, {hi}), so it must start there. "
                f"Got alpha={alpha!r} instead; start at alpha=1.0, or set adaptive=False to fix alpha."
            )
        if not scale > BARRON_MIN_SCALE:
            raise ParameterError(
                f"The adaptive barron loss keeps scale above {BARRON_MIN_SCALE}, so it must start there. "
                f"Got scale={scale!r} instead."
            )
        u = (alpha - lo) / (hi - lo)
        self.alpha_logit = nn.Parameter(torch.tensor(math.log(u / (1.0 - u))))
        self.scale_raw = nn.Parameter(torch.tensor(_inverse_softplus(scale - BARRON_MIN_SCALE)))

    @property
    def alpha(self) -> Number:
        if not self.adaptive:
            return self.fixed_alpha
        lo, hi = BARRON_ADAPTIVE_ALPHA
        return lo + (hi - lo) * torch.sigmoid(self.alpha_logit)

    @property
    def scale(self) -> Number:
        if not self.adaptive:
            return self.fixed_scale
        return F.softplus(self.scale_raw) + BARRON_MIN_SCALE

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return barron_loss(
            pred, target, alpha=self.alpha, scale=self.scale, adaptive=self.adaptive, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        if self.adaptive:
            return f"adaptive=True, reduction={self.reduction!r}"
        return f"alpha={self.fixed_alpha!r}, scale={self.fixed_scale!r}, reduction={self.reduction!r}"

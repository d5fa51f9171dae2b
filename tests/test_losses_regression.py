"""Regression losses against independent references: torch.nn.functional, scipy,
scikit-learn, and the papers' closed forms evaluated naively in 40-digit arithmetic
(mpmath, which torch installs with sympy), plus Barron's special cases.

The registry-wide contract (shapes, module = function, perfect prediction, ...) is in
test_loss_contract.py; this file checks the numbers and each loss's own behaviour.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import scipy.integrate
import scipy.special
import torch
import torch.nn.functional as F
from sklearn.metrics import mean_pinball_loss, mean_squared_error

from lossbench import create_loss, loss_info
from lossbench.errors import DataError, ParameterError
from lossbench.losses.regression import BarronLoss, barron_log_partition, barron_loss
from lossbench.registry import REDUCTIONS

F64 = torch.float64


def residuals(seed: int = 0, n: int = 7, d: int = 3, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 pred/target with varied residuals, some exactly 0, some huge, some tiny."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(n, d, generator=g, dtype=F64)
    r = torch.randn(n, d, generator=g, dtype=F64) * scale
    r.view(-1)[:6] = torch.tensor([0.0, 1e4, -1e4, 1e-7, -3e-4, 0.5], dtype=F64)
    return target + r, target


mpmath.mp.dps = 40


def exact(formula, r) -> np.ndarray:
    """``formula`` evaluated elementwise at 40 digits: no overflow, no cancellation."""
    fn = np.vectorize(lambda v: float(formula(mpmath.mpf(float(v)))), otypes=[np.float64])
    return fn(np.asarray(r, dtype=np.float64))


def np_reduce(x: np.ndarray, reduction: str) -> np.ndarray:
    return {"none": x, "mean": np.mean(x), "sum": np.sum(x)}[reduction]


def call(name: str, pred: torch.Tensor, target: torch.Tensor, reduction: str = "none", **params) -> torch.Tensor:
    return create_loss(name, reduction=reduction, **params)(pred, target)


def assert_close_np(got: torch.Tensor, want, rtol: float = 1e-12, atol: float = 0.0) -> None:
    np.testing.assert_allclose(got.detach().double().numpy(), np.asarray(want, dtype=np.float64), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- torch references
TORCH_REFERENCES = [
    ("mse", {}, lambda p, t, red: F.mse_loss(p, t, reduction=red)),
    ("l1", {}, lambda p, t, red: F.l1_loss(p, t, reduction=red)),
    *[
        ("huber", {"delta": d}, lambda p, t, red, d=d: F.huber_loss(p, t, reduction=red, delta=d))
        for d in (0.3, 1.0, 4.0)
    ],
    *[
        ("smooth_l1", {"beta": b}, lambda p, t, red, b=b: F.smooth_l1_loss(p, t, reduction=red, beta=b))
        for b in (0.0, 0.3, 1.0, 4.0)
    ],
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("name", "params", "reference"), TORCH_REFERENCES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_matches_torch_functional(name, params, reference, reduction, dtype):
    pred, target = residuals()
    got = call(name, pred.to(dtype), target.to(dtype), reduction, **params)
    want = reference(pred, target, reduction)  # float64 reference
    assert got.dtype == dtype
    rtol = 1e-12 if dtype == F64 else 2e-5
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=1e-6 if dtype == torch.float32 else 0.0)


def test_smooth_l1_with_beta_zero_is_l1():
    pred, target = residuals(seed=5)
    torch.testing.assert_close(call("smooth_l1", pred, target, beta=0.0), (pred - target).abs())


def test_source_document_worked_example():
    """Predictions [1, 2] for targets [0, 1]: every residual is 1, so MSE = RMSE = L1 = 1."""
    pred, target = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])
    for name in ("mse", "rmse", "l1"):
        assert call(name, pred, target, "mean").item() == pytest.approx(1.0, abs=0, rel=1e-7)
    assert call("mse", pred, target, "sum").item() == pytest.approx(2.0, rel=1e-7)
    assert call("rmse", pred, target, "sum").item() == pytest.approx(math.sqrt(2.0), rel=1e-7)


# --------------------------------------------------------------------------- scipy / sklearn references
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("delta", [1e-3, 0.5, 1.0, 7.0])
def test_huber_and_pseudo_huber_match_scipy(delta, reduction):
    pred, target = residuals(seed=1)
    r = (pred - target).numpy()
    huber = call("huber", pred, target, reduction, delta=delta)
    assert_close_np(huber, np_reduce(scipy.special.huber(delta, r), reduction))
    assert_close_np(
        call("pseudo_huber", pred, target, reduction, delta=delta),
        np_reduce(scipy.special.pseudo_huber(delta, r), reduction),
        rtol=1e-11,
    )


@pytest.mark.parametrize(
    ("r", "delta"),
    [(1e4, 1e-6), (-1e4, 1e-6), (1e4, 1e-20), (3e-4, 10.0), (1e-6, 1.0), (0.0, 1e-6), (50.0, 50.0)],
)
def test_pseudo_huber_is_accurate_in_float32_at_extremes(r, delta):
    """No overflow of (r / delta)^2 for a tiny delta, no cancellation for a tiny r."""
    pred = torch.tensor([r], dtype=torch.float32, requires_grad=True)
    got = call("pseudo_huber", pred, torch.zeros(1), delta=delta)
    want = float(scipy.special.pseudo_huber(delta, np.float64(np.float32(r))))
    assert got.item() == pytest.approx(want, rel=2e-6, abs=1e-30)
    got.sum().backward()
    # d/dr = r / sqrt(1 + (r / delta)^2), worked by hand
    want_grad = np.float64(r) / math.hypot(1.0, r / delta)
    assert pred.grad.item() == pytest.approx(want_grad, rel=2e-6, abs=1e-30)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_rmse_matches_sklearn(reduction):
    pred, target = residuals(seed=2)
    y, p = target.numpy().ravel(), pred.numpy().ravel()
    want = {
        "mean": math.sqrt(mean_squared_error(y, p)),
        "sum": math.sqrt(mean_squared_error(y, p) * y.size),  # the Euclidean norm of the residual
        "none": (pred - target).abs().numpy(),
    }[reduction]
    assert_close_np(call("rmse", pred, target, reduction), want, rtol=1e-12)
    if reduction == "sum":
        assert_close_np(call("rmse", pred, target, reduction), np.linalg.norm(p - y), rtol=1e-12)


def test_rmse_gradient_at_a_perfect_prediction_is_zero_not_nan():
    target = torch.randn(5, dtype=F64)
    pred = target.clone().requires_grad_(True)
    call("rmse", pred, target, "mean").backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_rmse_at_a_perfect_prediction_is_below_the_smallest_normal_root(dtype, reduction):
    """The root of 0 is computed as the root of the dtype's smallest normal number, which
    keeps the gradient 0 without adding a node to the graph: 1e-19 in float32, not 0."""
    target = torch.randn(5, dtype=dtype)
    value = call("rmse", target.clone(), target, reduction)
    assert 0.0 < value.item() <= math.sqrt(torch.finfo(dtype).tiny) * (1 + 1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_rmse_of_a_nan_prediction_is_nan(reduction):
    """A diverged model's NaN must reach the loss (the trainer stops the run on it), not read as 0."""
    pred = torch.tensor([float("nan"), 1.0], requires_grad=True)
    assert torch.isnan(call("rmse", pred, torch.zeros(2), reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("q", [0.05, 0.3, 0.5, 0.9])
def test_quantile_matches_sklearn_pinball(q, reduction):
    pred, target = residuals(seed=3)
    y, p = target.numpy(), pred.numpy()
    got = call("quantile", pred, target, reduction, q=q)
    if reduction == "mean":
        assert_close_np(got, mean_pinball_loss(y.ravel(), p.ravel(), alpha=q), rtol=1e-12)
    elif reduction == "sum":
        assert_close_np(got, mean_pinball_loss(y.ravel(), p.ravel(), alpha=q) * y.size, rtol=1e-12)
    else:
        u = y - p
        assert_close_np(got, np.maximum(q * u, (q - 1) * u), rtol=1e-12)


def test_quantile_is_asymmetric_as_worked_by_hand():
    """q = 0.9: predicting 1 below the target costs 0.9, predicting 1 above costs 0.1."""
    loss = call("quantile", torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0]), q=0.9)
    torch.testing.assert_close(loss, torch.tensor([0.9, 0.1]))


# --------------------------------------------------------------------------- log-cosh
LOG_COSH_POINTS = [0.0, 1e-6, -1e-3, 0.3, -0.999, 1.0, 1.001, -2.5, 20.0, 100.0, -1e4]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_log_cosh_matches_reference_with_full_relative_precision(dtype):
    r = torch.tensor(LOG_COSH_POINTS, dtype=dtype)
    got = call("log_cosh", r, torch.zeros_like(r))
    want = exact(lambda x: mpmath.log(mpmath.cosh(x)), r.double().numpy())
    rtol = 6e-7 if dtype == torch.float32 else 1e-14  # a few units in the last place
    np.testing.assert_allclose(got.double().numpy(), want, rtol=rtol, atol=0)
    # numpy's own stable route agrees away from 0, where it does not cancel
    r64 = r.double().numpy()
    far = np.abs(r64) >= 0.3
    np.testing.assert_allclose(got.double().numpy()[far], np.logaddexp(r64, -r64)[far] - math.log(2), rtol=rtol)


def test_log_cosh_gradient_is_tanh():
    r = torch.tensor(LOG_COSH_POINTS, dtype=F64, requires_grad=True)
    call("log_cosh", r, torch.zeros_like(r), "sum").backward()
    np.testing.assert_allclose(r.grad.numpy(), np.tanh(np.array(LOG_COSH_POINTS)), rtol=1e-14, atol=1e-300)


# --------------------------------------------------------------------------- redescending losses
def cauchy_ref(r, c):
    return exact(lambda x: c * c / 2 * mpmath.log(1 + (x / c) ** 2), r)


def tukey_ref(r, c):
    return exact(lambda x: c * c / 6 * (1 - (1 - (x / c) ** 2) ** 3) if abs(x) <= c else mpmath.mpf(c) ** 2 / 6, r)


def welsch_ref(r, c):
    return exact(lambda x: c * c / 2 * (1 - mpmath.exp(-((x / c) ** 2))), r)


def pseudo_huber_ref(r, d):
    return exact(lambda x: d * d * (mpmath.sqrt(1 + (x / d) ** 2) - 1), r)


HAND_REFERENCES = [
    ("cauchy", "c", cauchy_ref),
    ("tukey", "c", tukey_ref),
    ("welsch", "c", welsch_ref),
    ("pseudo_huber", "delta", pseudo_huber_ref),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("c", [0.2, 1.0, 4.685])
@pytest.mark.parametrize(("name", "param", "reference"), HAND_REFERENCES)
def test_robust_losses_match_their_formulas(name, param, reference, c, reduction):
    pred, target = residuals(seed=4)
    r = (pred - target).numpy()
    want = np_reduce(reference(r, c), reduction)
    assert_close_np(call(name, pred, target, reduction, **{param: c}), want, rtol=1e-13)
    got32 = call(name, pred.float(), target.float(), reduction, **{param: c})
    assert_close_np(got32, want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "param"), [(name, param) for name, param, _ in HAND_REFERENCES])
@pytest.mark.parametrize("c", [1e-20, 1e-3])
def test_tiny_scale_and_huge_residual_stay_finite_in_float32(name, param, c):
    pred = torch.tensor([1e4, -1e4, 3.0, 0.0], requires_grad=True)
    out = call(name, pred, torch.zeros(4), **{param: c})
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(pred.grad).all()
    want = {n: f for n, _, f in HAND_REFERENCES}[name](pred.detach().double().numpy(), c)
    assert_close_np(out, want, rtol=1e-5, atol=1e-44)  # c^2 / 6 is subnormal in float32 for c = 1e-20


def test_cauchy_far_branch_and_near_branch_join():
    """log1p below |r / c| = 1, 2 log hypot above: values and slopes agree at the join."""
    r = torch.tensor([1 - 1e-12, 1.0, 1 + 1e-12], dtype=F64, requires_grad=True)
    out = call("cauchy", r, torch.zeros(3, dtype=F64), c=1.0)
    out.sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), cauchy_ref(r.detach().numpy(), 1.0), rtol=1e-13)
    np.testing.assert_allclose(r.grad.numpy(), 1.0 / (1 + r.detach().numpy() ** 2) * r.detach().numpy(), rtol=1e-11)


@pytest.mark.parametrize("c", [0.5, 4.685])
def test_tukey_is_bounded_with_zero_gradient_beyond_c(c):
    r = torch.tensor([-1e4, -2 * c, -1.0001 * c, -0.5 * c, 0.0, 0.3 * c, 0.9999 * c, 3 * c, 1e4], dtype=F64)
    r.requires_grad_(True)
    out = call("tukey", r, torch.zeros_like(r), c=c)
    out.sum().backward()
    rr = r.detach().numpy()
    outside = np.abs(rr) > c
    np.testing.assert_allclose(out.detach().numpy()[outside], c * c / 6, rtol=1e-15)
    assert np.all(out.detach().numpy() <= c * c / 6 + 1e-15)
    # influence function psi(r) = r (1 - (r/c)^2)^2 inside, 0 outside (worked by hand)
    psi = np.where(outside, 0.0, rr * (1 - (rr / c) ** 2) ** 2)
    np.testing.assert_allclose(r.grad.numpy(), psi, rtol=1e-12, atol=1e-15)


def test_welsch_is_bounded_and_redescending():
    c = 0.7
    r = torch.tensor([0.0, 0.2, c / math.sqrt(2), 0.9, 3.0, 30.0, 1e4], dtype=F64, requires_grad=True)
    out = call("welsch", r, torch.zeros_like(r), c=c)
    out.sum().backward()
    assert torch.all(out <= c * c / 2)
    # influence function psi(r) = r exp(-(r/c)^2), worked by hand
    rr = r.detach().numpy()
    np.testing.assert_allclose(r.grad.numpy(), rr * np.exp(-((rr / c) ** 2)), rtol=1e-14, atol=1e-300)
    grad = r.grad.abs().numpy()
    assert grad[2] == grad.max()  # the pull peaks at |r| = c / sqrt 2 ...
    assert grad[-1] == 0.0  # ... and vanishes far out


# --------------------------------------------------------------------------- traits are honest
GRID = torch.linspace(-60.0, 60.0, 481, dtype=F64)
TRAIT_PARAMS = {
    "mse": {},
    "l1": {},
    "huber": {"delta": 1.5},
    "smooth_l1": {"beta": 0.7},
    "pseudo_huber": {"delta": 2.0},
    "log_cosh": {},
    "quantile": {"q": 0.3},
    "cauchy": {"c": 1.0},
    "tukey": {"c": 4.685},
    "welsch": {"c": 1.0},
    "barron": {},  # its traits describe the default alpha = 1 (bounded influence for alpha <= 1)
}


def rho_and_psi(name: str, r: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    r = r.clone().requires_grad_(True)
    out = call(name, r, torch.zeros_like(r), **TRAIT_PARAMS[name])
    out.sum().backward()
    return out.detach().numpy(), r.grad.numpy()


@pytest.mark.parametrize("name", sorted(TRAIT_PARAMS))
def test_declared_traits_hold(name):
    traits = loss_info(name).traits
    rho, psi_near = rho_and_psi(name, GRID)
    midpoint_gap = (rho[:-2] + rho[2:]) / 2 - rho[1:-1]  # >= 0 everywhere iff convex on the grid
    if "convex" in traits:
        assert midpoint_gap.min() >= -1e-9, name
    _, psi_far = rho_and_psi(name, torch.tensor([1e4, -1e4], dtype=F64))
    if "bounded_influence" in traits:  # the pull of a residual of 1e4 is no larger than of one within +-60
        assert np.abs(psi_far).max() <= 1.05 * np.abs(psi_near).max(), name
    else:
        assert np.abs(psi_far).max() > 100 * np.abs(psi_near).max(), name


@pytest.mark.parametrize("name", ["cauchy", "tukey", "welsch"])
def test_redescending_losses_are_not_convex_and_not_declared_convex(name):
    rho, _ = rho_and_psi(name, GRID)
    assert ((rho[:-2] + rho[2:]) / 2 - rho[1:-1]).min() < -1e-6
    assert "convex" not in loss_info(name).traits
    assert {"robust_to_outliers", "bounded_influence"} <= loss_info(name).traits


# --------------------------------------------------------------------------- Barron
def barron_closed_form(x, alpha: float, c: float) -> np.ndarray:
    """Barron's eq. (1), straight from the paper (undefined at alpha = 0 and 2)."""
    b = abs(mpmath.mpf(alpha) - 2)
    return exact(lambda v: b / alpha * (((v / c) ** 2 / b + 1) ** (mpmath.mpf(alpha) / 2) - 1), x)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha", [-7.0, -2.0, -0.5, 0.5, 1.0, 1.5, 1.9])
@pytest.mark.parametrize("c", [0.3, 1.0, 2.5])
def test_barron_matches_its_closed_form(alpha, c, reduction):
    pred, target = residuals(seed=6)
    want = np_reduce(barron_closed_form((pred - target).numpy(), alpha, c), reduction)
    assert_close_np(call("barron", pred, target, reduction, alpha=alpha, scale=c), want, rtol=1e-13)


@pytest.mark.parametrize("c", [0.4, 1.0, 3.0])
def test_barron_special_cases_are_the_named_losses(c):
    """Barron (2019), Section 1: alpha = 2, 1, 0, -2, -inf give L2, pseudo-Huber, Cauchy,
    Geman-McClure and Welsch, each up to the factor worked out here by hand."""
    pred, target = residuals(seed=7)
    x = (pred - target).numpy()

    def barron(alpha):
        return call("barron", pred, target, alpha=alpha, scale=c)

    # alpha = 2: (x/c)^2 / 2, i.e. torch's MSE / (2 c^2)
    torch.testing.assert_close(barron(2.0), F.mse_loss(pred, target, reduction="none") / (2 * c * c))
    # alpha = 1: sqrt((x/c)^2 + 1) - 1 = pseudo_huber(delta=c) / c^2, scipy's and ours
    assert_close_np(barron(1.0), scipy.special.pseudo_huber(c, x) / c**2, rtol=1e-11)
    torch.testing.assert_close(barron(1.0), call("pseudo_huber", pred, target, delta=c) / c**2)
    # alpha = 0: log((x/c)^2 / 2 + 1) = cauchy(c * sqrt 2) / c^2
    assert_close_np(barron(0.0), exact(lambda v: mpmath.log((v / c) ** 2 / 2 + 1), x), rtol=1e-13)
    torch.testing.assert_close(barron(0.0), call("cauchy", pred, target, c=c * math.sqrt(2)) / c**2)
    # alpha = -2: Geman-McClure 2 (x/c)^2 / ((x/c)^2 + 4)
    assert_close_np(barron(-2.0), exact(lambda v: 2 * (v / c) ** 2 / ((v / c) ** 2 + 4), x), rtol=1e-13)
    # alpha = -inf: 1 - exp(-(x/c)^2 / 2) = welsch(c * sqrt 2) / c^2
    assert_close_np(barron(-math.inf), exact(lambda v: 1 - mpmath.exp(-((v / c) ** 2) / 2), x), rtol=1e-13)
    torch.testing.assert_close(barron(-math.inf), call("welsch", pred, target, c=c * math.sqrt(2)) / c**2)


@pytest.mark.parametrize(
    ("alpha", "offset"),
    [(0.0, d) for d in (1e-12, 1e-9, 1e-6, -1e-9, -1e-6)] + [(2.0, d) for d in (-1e-12, -1e-9, -1e-6)],
)
def test_barron_is_continuous_through_its_removable_singularities(alpha, offset):
    pred, target = residuals(seed=8, scale=5.0)
    at = call("barron", pred, target, alpha=alpha)
    near = call("barron", pred, target, alpha=alpha + offset)
    assert torch.isfinite(at).all() and torch.isfinite(near).all()
    # d rho / d alpha is bounded near 0, and grows like log(1/|alpha - 2|) near 2
    torch.testing.assert_close(near, at, rtol=50 * abs(offset) * (1 + abs(math.log(abs(offset)))), atol=0)


def test_barron_is_monotonic_in_alpha():
    """Barron (2019), Section 2: rho is monotonic in alpha (for any fixed x)."""
    x = torch.tensor([1e-3, 0.5, 1.0, 3.0, 40.0, 1e4], dtype=F64)
    alphas = [-math.inf, -10.0, -3.0, -1.0, -1e-8, 0.0, 1e-8, 0.4, 1.0, 1.6, 2 - 1e-9, 2.0]
    values = torch.stack([call("barron", x, torch.zeros_like(x), alpha=a) for a in alphas])
    assert torch.all(values[1:] >= values[:-1])


@pytest.mark.parametrize("alpha", [-math.inf, -4.0, -1e-10, 0.0, 0.7, 1.0, 1.3, 1.999, 2.0])
def test_barron_gradcheck_in_residual(alpha):
    pred, target = residuals(seed=9, n=3, d=2)
    pred[0, 0] = target[0, 0]  # one exact zero
    pred = pred.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: barron_loss(p, target, alpha=alpha, scale=0.8, reduction="none"), (pred,))


@pytest.mark.parametrize("alpha", [-4.0, -0.2, 0.0, 0.5, 1.0, 1.5, 1.99])
def test_barron_gradcheck_in_alpha_and_scale(alpha):
    """alpha = 0 and alpha = 1 included: 0 is a removable singularity, 1 is where the
    implementation switches between its two exact forms."""
    pred, target = residuals(seed=10, n=3, d=2)
    a = torch.tensor(alpha, dtype=F64, requires_grad=True)
    c = torch.tensor(0.9, dtype=F64, requires_grad=True)

    def loss(a_: torch.Tensor, c_: torch.Tensor) -> torch.Tensor:
        return barron_loss(pred, target, alpha=a_, scale=c_, reduction="none")

    assert torch.autograd.gradcheck(loss, (a, c))


@pytest.mark.parametrize("alpha", [-math.inf, -2.0, 0.0, 0.5, 1.0])
def test_robust_barron_stays_finite_and_accurate_for_a_tiny_scale_in_float32(alpha):
    """(x / c)^2 overflows float32 here (x / c = 1e24); alpha <= 1 never forms it."""
    pred = torch.tensor([1e4, -1e4, 3.0, 0.0], requires_grad=True)
    out = call("barron", pred, torch.zeros(4), alpha=alpha, scale=1e-20)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(pred.grad).all()
    x = pred.detach().double().numpy()
    if alpha == -math.inf:
        want = exact(lambda v: 1 - mpmath.exp(-((v / 1e-20) ** 2) / 2), x)
    elif alpha == 0.0:
        want = exact(lambda v: mpmath.log((v / 1e-20) ** 2 / 2 + 1), x)
    else:
        want = barron_closed_form(x, alpha, 1e-20)
    assert_close_np(out, want, rtol=1e-5)


def test_barron_scale_is_a_residual_unit():
    pred, target = residuals(seed=11)
    for alpha in (-3.0, 0.0, 1.2):
        torch.testing.assert_close(
            call("barron", pred, target, alpha=alpha, scale=2.5), call("barron", pred / 2.5, target / 2.5, alpha=alpha)
        )


@pytest.mark.parametrize(
    ("alpha", "closed_form"),
    [
        (2.0, 0.5 * math.log(2 * math.pi)),  # Gaussian
        (0.0, math.log(math.sqrt(2) * math.pi)),  # Cauchy: integral dx / (1 + x^2/2) = sqrt(2) pi
        (1.0, math.log(2 * math.e * scipy.special.k1(1.0))),  # integral e^{1 - sqrt(1+x^2)} dx = 2e K1(1)
    ],
)
def test_barron_log_partition_closed_forms(alpha, closed_form):
    assert barron_log_partition(alpha, dtype=F64).item() == pytest.approx(closed_form, rel=1e-12)
    assert barron_log_partition(alpha).item() == pytest.approx(closed_form, rel=1e-6)


@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.5, 1.5, 1.9, 1.999])
def test_barron_log_partition_matches_scipy_quadrature(alpha):
    b = abs(alpha - 2)

    def density(x: float) -> float:  # exp(-rho(x, alpha, 1)), eq. (1)
        return math.exp(-b / alpha * ((x * x / b + 1) ** (alpha / 2) - 1))

    z = scipy.integrate.quad(density, -np.inf, np.inf, epsabs=0, epsrel=1e-12, limit=500)[0]
    assert barron_log_partition(alpha, dtype=F64).item() == pytest.approx(math.log(z), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("alpha", "scale"), [(0.3, 0.7), (1.0, 1.0), (1.7, 2.0)])
@pytest.mark.slow
def test_adaptive_barron_is_a_normalised_negative_log_likelihood(alpha, scale):
    """exp(-loss) integrates to 1 over the residual: the NLL of Barron's distribution."""

    def density(x: float) -> float:
        x_ = torch.tensor([x], dtype=F64)
        out = barron_loss(x_, torch.zeros_like(x_), alpha=alpha, scale=scale, adaptive=True, reduction="none")
        return math.exp(-out.item())

    total = scipy.integrate.quad(density, -np.inf, np.inf, epsabs=0, epsrel=1e-9, limit=200)[0]
    assert total == pytest.approx(1.0, rel=1e-7)


@pytest.mark.parametrize(("alpha", "scale"), [(1.0, 1.0), (0.2, 0.5), (1.9, 3.0)])
def test_adaptive_barron_module_starts_at_its_parameters_and_equals_the_function(alpha, scale):
    module = create_loss("barron", alpha=alpha, scale=scale, adaptive=True)
    assert isinstance(module, BarronLoss)
    params = dict(module.named_parameters())
    assert set(params) == {"alpha_logit", "scale_raw"} and all(p.requires_grad for p in params.values())
    assert module.alpha.item() == pytest.approx(alpha, rel=1e-6)
    assert module.scale.item() == pytest.approx(scale, rel=1e-6)
    pred, target = residuals(seed=12)
    want = barron_loss(pred, target, alpha=alpha, scale=scale, adaptive=True)
    torch.testing.assert_close(module(pred, target), want, rtol=1e-6, atol=1e-7)


def test_non_adaptive_barron_has_no_parameters():
    assert list(create_loss("barron").parameters()) == []


def test_adaptive_barron_parameters_receive_gradients_and_stay_in_range():
    module = create_loss("barron", adaptive=True)
    pred, target = residuals(seed=13)
    pred = pred.float().requires_grad_(True)
    module(pred, target.float()).backward()
    for p in module.parameters():
        assert p.grad is not None and torch.isfinite(p.grad) and p.grad != 0
    assert torch.isfinite(pred.grad).all()
    with torch.no_grad():  # push far beyond the ends: the reparameterisation holds them inside
        module.alpha_logit.fill_(1e4)
        module.scale_raw.fill_(-1e4)
    assert 0.001 <= module.alpha.item() <= 1.999 * (1 + 1e-6) and module.scale.item() >= 1e-5 * (1 - 1e-6)
    assert torch.isfinite(module(pred, target.float()))


def heavy_and_light_tailed(n: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    gaussian = 3.0 * torch.randn(n, generator=g)
    cauchy = torch.tan(math.pi * (torch.rand(n, generator=g) - 0.5))  # standard Cauchy
    return gaussian, cauchy


def test_adaptive_barron_likelihood_pulls_alpha_towards_the_residuals_tails():
    """At alpha = 1 and each sample's own scale the NLL's slope in alpha is negative for
    Gaussian residuals (raise alpha towards 2) and positive for Cauchy residuals (lower it
    towards 0)."""
    slopes = []
    for residual, scale in zip(heavy_and_light_tailed(), (3.0, 1.0)):
        module = create_loss("barron", alpha=1.0, scale=scale, adaptive=True)
        module(residual, torch.zeros_like(residual)).backward()
        slopes.append(module.alpha_logit.grad.item())
    assert slopes[0] < 0 < slopes[1]


@pytest.mark.slow
def test_adaptive_barron_adapts_its_shape_and_scale_when_trained():
    fitted = []
    for residual in heavy_and_light_tailed():
        module = create_loss("barron", alpha=1.0, scale=1.0, adaptive=True)
        opt = torch.optim.Adam(module.parameters(), lr=0.1)
        for _ in range(100):
            opt.zero_grad()
            module(residual, torch.zeros_like(residual)).backward()
            opt.step()
        fitted.append((module.alpha.item(), module.scale.item()))
    (alpha_g, scale_g), (alpha_c, _) = fitted
    assert alpha_g > 1.2 and alpha_c < 0.5  # from 1.0 towards 2 (Gaussian) and 0 (Cauchy)
    assert scale_g > 1.8  # from 1.0 towards sigma = 3


def test_adaptive_barron_errors():
    with pytest.raises(ParameterError, match=r"learns alpha inside \(0.001, 1.999\).*Got alpha=2.0"):
        create_loss("barron", alpha=2.0, adaptive=True)
    with pytest.raises(ParameterError, match="scale above 1e-05"):
        create_loss("barron", scale=1e-6, adaptive=True)
    with pytest.raises(ParameterError, match=r"needs alpha in \[0, 2\]"):
        barron_loss(torch.zeros(2), torch.zeros(2), alpha=-1.0, adaptive=True)


# --------------------------------------------------------------------------- gradients
GRAD_CASES = [
    ("mse", {}),
    ("l1", {}),
    ("huber", {"delta": 0.5}),
    ("smooth_l1", {"beta": 0.3}),
    ("smooth_l1", {"beta": 0.0}),
    ("pseudo_huber", {"delta": 2.0}),
    ("log_cosh", {}),
    ("quantile", {"q": 0.3}),
    ("cauchy", {"c": 0.5}),
    ("tukey", {"c": 2.0}),
    ("welsch", {"c": 0.5}),
    ("barron", {"alpha": -1.0, "scale": 0.5}),
]


@pytest.mark.parametrize(("name", "params"), GRAD_CASES, ids=lambda x: str(x))
def test_gradcheck_float64(name, params):
    # residuals away from the kinks (0 for l1/quantile, the thresholds of huber/smooth_l1/tukey)
    r = torch.tensor([[-5.3, -1.7, -0.8], [-0.11, 0.04, 0.27], [0.999, 1.001, 9.5]], dtype=F64)
    target = torch.linspace(-1, 1, 9, dtype=F64).reshape(3, 3)
    pred = (target + r).requires_grad_(True)
    for reduction in REDUCTIONS:
        loss = create_loss(name, reduction=reduction, **params)
        assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred,)), (name, reduction)


@pytest.mark.parametrize(("name", "params"), GRAD_CASES, ids=lambda x: str(x))
def test_gradients_are_finite_at_zero_and_at_extremes(name, params):
    pred = torch.tensor([0.0, 1e4, -1e4, 1e-30, 3e38, -3e38], requires_grad=True)
    target = torch.tensor([0.0, 0.0, 0.0, 0.0, 3e38, -3e38])
    create_loss(name, reduction="sum", **params)(pred, target).backward()
    assert torch.isfinite(pred.grad).all(), pred.grad
    if name != "quantile":  # symmetric losses: zero (sub)gradient at a zero residual
        assert pred.grad[0] == 0.0


# --------------------------------------------------------------------------- precision
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("name", "params"), [*GRAD_CASES, ("rmse", {}), ("barron", {"adaptive": True})], ids=lambda x: str(x)
)
def test_half_precision_inputs_compute_in_float32(name, params, dtype):
    pred, target = residuals(seed=14)
    pred, target = pred.to(dtype), target.to(dtype)  # residuals up to 1e4 fit in both
    for reduction in REDUCTIONS:
        loss = create_loss(name, reduction=reduction, **params)
        half = loss(pred.requires_grad_(True), target)
        full = loss(pred.detach().float(), target.float())  # same rounded inputs, in float32
        assert half.dtype == torch.float32
        assert torch.isfinite(half).all()
        torch.testing.assert_close(half, full, rtol=1e-6, atol=1e-6)
    half.sum().backward()
    assert torch.isfinite(pred.grad).all()


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("huber", {"delta": -1}, "The 'delta' parameter of huber must be a float in (0, inf). Got -1 instead."),
        ("huber", {"delta": 0.0}, "The 'delta' parameter of huber must be a float in (0, inf). Got 0.0 instead."),
        ("huber", {"delta": True}, "The 'delta' parameter of huber must be a float in (0, inf). Got True instead."),
        (
            "smooth_l1",
            {"beta": -0.5},
            "The 'beta' parameter of smooth_l1 must be a float in [0, inf). Got -0.5 instead.",
        ),
        (
            "pseudo_huber",
            {"delta": 0},
            "The 'delta' parameter of pseudo_huber must be a float in (0, inf). Got 0 instead.",
        ),
        ("quantile", {"q": 0.0}, "The 'q' parameter of quantile must be a float in (0, 1). Got 0.0 instead."),
        ("quantile", {"q": 1}, "The 'q' parameter of quantile must be a float in (0, 1). Got 1 instead."),
        ("quantile", {"q": 1.5}, "The 'q' parameter of quantile must be a float in (0, 1). Got 1.5 instead."),
        ("cauchy", {"c": -2.0}, "The 'c' parameter of cauchy must be a float in (0, inf). Got -2.0 instead."),
        ("tukey", {"c": 0}, "The 'c' parameter of tukey must be a float in (0, inf). Got 0 instead."),
        ("welsch", {"c": "big"}, "The 'c' parameter of welsch must be a float in (0, inf). Got 'big' instead."),
        ("barron", {"alpha": 2.5}, "The 'alpha' parameter of barron must be a float in [-inf, 2]. Got 2.5 instead."),
        (
            "barron",
            {"alpha": math.nan},
            "The 'alpha' parameter of barron must be a float in [-inf, 2]. Got nan instead.",
        ),
        ("barron", {"scale": 0.0}, "The 'scale' parameter of barron must be a float in (0, inf). Got 0.0 instead."),
        ("barron", {"adaptive": "yes"}, "The 'adaptive' parameter of barron must be a bool. Got 'yes' instead."),
    ],
)
def test_parameter_errors(name, params, message):
    with pytest.raises(ParameterError) as info:
        create_loss(name, **params)
    assert str(info.value) == message


@pytest.mark.parametrize("name", sorted(TRAIT_PARAMS) + ["rmse"])
def test_shape_mismatch_is_a_data_error(name):
    with pytest.raises(DataError, match=rf"{name}: pred and target must have the same shape"):
        create_loss(name)(torch.zeros(4, 1), torch.zeros(4))


def test_every_regression_loss_declares_a_search_space_for_its_float_params():
    for name in [*TRAIT_PARAMS, "rmse"]:
        spec = loss_info(name)
        assert spec.tasks == ("regression",) and spec.description and spec.reference
        for p in spec.params:
            if p.type == "float":
                assert p.search is not None, (name, p.name)
                p.validate(name, p.search.low)  # the search space lies inside the valid range
                p.validate(name, p.search.high)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_fast_paths_match_numpy_scipy_and_sklearn(reduction):
    """mse, l1, huber and smooth_l1 call torch's fused kernels; check them against references
    that are not torch: numpy formulas, scipy.special.huber and scikit-learn's metrics."""
    import scipy.special
    from sklearn.metrics import mean_absolute_error

    rng = np.random.default_rng(7)
    y = rng.normal(size=200)
    p = y + rng.standard_t(df=1.5, size=200) * 3.0  # heavy-tailed residuals, some in the hundreds
    r = p - y
    beta, delta = 0.5, 2.0
    per_element = {
        ("mse", ()): r**2,
        ("l1", ()): np.abs(r),
        ("huber", (("delta", delta),)): scipy.special.huber(delta, r),
        ("smooth_l1", (("beta", beta),)): np.where(np.abs(r) < beta, 0.5 * r**2 / beta, np.abs(r) - 0.5 * beta),
    }
    pt, yt = torch.tensor(p), torch.tensor(y)
    for (name, kw), ref in per_element.items():
        got = create_loss(name, reduction=reduction, **dict(kw))(pt, yt).numpy()
        want = {"none": ref, "sum": ref.sum(), "mean": ref.mean()}[reduction]
        np.testing.assert_allclose(got, want, rtol=1e-10, err_msg=name)
    if reduction == "mean":
        assert float(create_loss("mse")(pt, yt)) == pytest.approx(mean_squared_error(y, p), rel=1e-12)
        assert float(create_loss("l1")(pt, yt)) == pytest.approx(mean_absolute_error(y, p), rel=1e-12)

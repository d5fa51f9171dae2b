"""Classification losses against independent references.

References: torch's own losses, torchvision's sigmoid focal loss, scikit-learn's log
loss, and per-sample formulas written here in float64 numpy (scipy for the stable
log-softmax / log-sigmoid), independently of lossbench's code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import expit, log_expit, log_softmax
from sklearn.metrics import log_loss
from torchvision.ops import sigmoid_focal_loss

from lossbench import create_loss, loss_info
from lossbench.errors import DataError, ParameterError
from lossbench.losses import classification as cls
from lossbench.losses import validation

REDUCTIONS = ("mean", "sum", "none")
N, C = 10, 4
COUNTS = [60.0, 25.0, 4.0, 1.0]

# (name, params) for the family-wide tests; non-integer gammas exercise pow near 0
MULTICLASS_CASES: list[tuple[str, dict[str, Any]]] = [
    ("cross_entropy", {}),
    ("cross_entropy", {"weight": [1.0, 2.0, 0.5, 3.0], "label_smoothing": 0.1}),
    ("focal", {"gamma": 0.5, "alpha": [0.1, 0.2, 0.3, 0.4]}),
    ("focal", {"gamma": 2.0}),
    ("weighted_ce", {"class_counts": COUNTS, "scheme": "sqrt_inverse"}),
    ("class_balanced", {"class_counts": COUNTS, "base": "cross_entropy"}),
    ("class_balanced", {"class_counts": COUNTS, "base": "focal", "gamma": 0.5}),
    ("class_balanced", {"class_counts": COUNTS, "base": "bce"}),
    ("ldam", {"class_counts": COUNTS, "weight": [1.0, 1.0, 2.0, 2.0]}),
    ("logit_adjusted", {"class_counts": COUNTS, "tau": 1.5}),
    ("balanced_softmax", {"class_counts": COUNTS}),
    ("gce", {"q": 0.7}),
    ("sce", {"alpha": 0.1, "beta": 1.0}),
    ("poly", {"epsilon": 1.0}),
]
BINARY_CASES: list[tuple[str, dict[str, Any]]] = [
    ("bce", {"pos_weight": 2.0}),
    ("balanced_bce", {"alpha": 0.25}),
    ("binary_focal", {"gamma": 0.5}),
    ("binary_focal", {"alpha": 0.5, "gamma": 2.0}),
    ("asl", {"gamma_pos": 0.5, "gamma_neg": 4.0, "clip": 0.05}),
    ("asl", {"gamma_pos": 1.0, "gamma_neg": 0.5, "clip": 0.0}),
]
ALL_CASES = [(n, p, "multiclass") for n, p in MULTICLASS_CASES] + [(n, p, "binary") for n, p in BINARY_CASES]
ALL_IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(ALL_CASES)]
# losses whose per-class quantities live in module buffers
MODULE_LOSSES = ["cross_entropy", "focal", "weighted_ce", "class_balanced", "ldam", "logit_adjusted", "balanced_softmax"]


def class_data(scale: float = 3.0, seed: int = 0, n: int = N, c: int = C) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    y = torch.arange(n) % c  # every class present
    return x, y[torch.randperm(n, generator=g)]


def binary_data(
    scale: float = 3.0, seed: int = 0, shape: tuple[int, ...] = (N, 3)
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
    t = (torch.rand(*shape, generator=g) < 0.4).double()
    return x, t


def data_for(kind: str, scale: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return class_data(scale, seed) if kind == "multiclass" else binary_data(scale, seed)


def np_reduce(per: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "mean":
        return np.asarray(per.mean())
    if reduction == "sum":
        return np.asarray(per.sum())
    return per


def both(name: str, x: torch.Tensor, y: torch.Tensor, **params: Any) -> list[torch.Tensor]:
    """The registered module's output and the pure function's, for the same parameters."""
    module = create_loss(name, **params)
    fn = loss_info(name).function
    assert fn is not None
    full = {p.name: p.default for p in loss_info(name).params} | params
    return [module(x, y), fn(x, y, **full)]


def close(actual: torch.Tensor, expected: Any, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    expected_t = torch.as_tensor(np.asarray(expected), dtype=actual.dtype)
    assert actual.shape == expected_t.shape
    torch.testing.assert_close(actual.detach(), expected_t, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- cross-entropy
CE_CASES = {
    "plain": {},
    "weighted": {"weight": [0.5, 2.0, 1.0, 3.0]},
    "smoothed": {"label_smoothing": 0.2},
    "weighted_smoothed": {"weight": [0.5, 2.0, 1.0, 3.0], "label_smoothing": 0.1},
    "ignored": {"weight": [0.5, 2.0, 1.0, 3.0], "label_smoothing": 0.1, "ignore": True},
    "ignore_class_2": {"ignore_index": 2, "weight": [0.5, 2.0, 1.0, 3.0]},
}


@pytest.mark.parametrize("scale", [3.0, 1e4])
@pytest.mark.parametrize("case", list(CE_CASES))
def test_cross_entropy_matches_torch(case: str, scale: float) -> None:
    for reduction in REDUCTIONS:
        params = dict(CE_CASES[case])
        x, y = class_data(scale)
        if params.pop("ignore", False):
            y = y.clone()
            y[[1, 4, 7]] = -100
        torch_kw = {k: (torch.tensor(v, dtype=x.dtype) if k == "weight" else v) for k, v in params.items()}
        expected = F.cross_entropy(x, y, reduction=reduction, **torch_kw)
        for out in both("cross_entropy", x, y, reduction=reduction, **params):
            close(out, expected, rtol=1e-10)


@pytest.mark.parametrize("params", [{}, {"weight": [0.5, 2.0, 1.0, 3.0], "label_smoothing": 0.15}])
def test_cross_entropy_soft_targets_match_torch(params: dict[str, Any]) -> None:
    for reduction in REDUCTIONS:
        x, _ = class_data()
        t = torch.rand(N, C, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        t = t / t.sum(dim=1, keepdim=True)
        torch_kw = {k: (torch.tensor(v, dtype=x.dtype) if k == "weight" else v) for k, v in params.items()}
        expected = F.cross_entropy(x, t, reduction=reduction, **torch_kw)
        for out in both("cross_entropy", x, t, reduction=reduction, **params):
            close(out, expected, rtol=1e-10)


def test_cross_entropy_soft_targets_must_be_distributions() -> None:
    x, _ = class_data()
    with pytest.raises(DataError, match="sum to 1"):
        create_loss("cross_entropy")(x, torch.full((N, C), 0.5, dtype=torch.float64))


def test_cross_entropy_matches_sklearn_log_loss() -> None:
    x, y = class_data()
    p = torch.softmax(x, dim=1).numpy()
    w = np.array([0.5, 2.0, 1.0, 3.0])
    plain = create_loss("cross_entropy")(x, y)
    weighted = create_loss("cross_entropy", weight=w.tolist())(x, y)
    close(plain, log_loss(y.numpy(), p, labels=list(range(C))), rtol=1e-9)
    close(weighted, log_loss(y.numpy(), p, labels=list(range(C)), sample_weight=w[y.numpy()]), rtol=1e-9)


def test_cross_entropy_hand_worked_extreme() -> None:
    # logits (1e4, -1e4): the wrong class costs 2e4 nats, the right one 0
    x = torch.tensor([[1e4, -1e4], [1e4, -1e4]])
    y = torch.tensor([1, 0])
    out = create_loss("cross_entropy", reduction="none")(x, y)
    close(out, [2e4, 0.0])


# --------------------------------------------------------------------------- binary cross-entropy
@pytest.mark.parametrize("scale", [3.0, 1e4])
@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_bce_matches_torch(pos_weight: float | None, scale: float) -> None:
    for reduction in REDUCTIONS:
        x, t = binary_data(scale)
        pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=x.dtype)
        expected = F.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction=reduction)
        close(create_loss("bce", pos_weight=pos_weight, reduction=reduction)(x, t), expected, rtol=1e-10)


def test_bce_matches_sklearn_log_loss() -> None:
    x, t = binary_data()
    expected = log_loss(t.numpy().ravel(), expit(x.numpy().ravel()), labels=[0, 1])
    close(create_loss("bce")(x, t), expected, rtol=1e-9)


def test_bce_accepts_integer_labels() -> None:
    x, t = binary_data()
    close(create_loss("bce")(x, t.long()), F.binary_cross_entropy_with_logits(x, t), rtol=1e-10)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.9])
def test_balanced_bce_matches_formula_and_torchvision(alpha: float) -> None:
    for reduction in REDUCTIONS:
        x, t = binary_data()
        xn, tn = x.numpy(), t.numpy()
        per = -alpha * tn * log_expit(xn) - (1 - alpha) * (1 - tn) * log_expit(-xn)
        out = create_loss("balanced_bce", alpha=alpha, reduction=reduction)(x, t)
        close(out, np_reduce(per, reduction), rtol=1e-10)
        # the source document: focal loss with gamma = 0 is alpha-balanced cross-entropy
        close(out, sigmoid_focal_loss(x, t, alpha=alpha, gamma=0.0, reduction=reduction), rtol=1e-10)


# --------------------------------------------------------------------------- focal
def np_focal(x: np.ndarray, y: np.ndarray, gamma: float, alpha: Any) -> np.ndarray:
    logp = log_softmax(x, axis=1)[np.arange(len(y)), y]
    p = np.exp(logp)
    a = 1.0 if alpha is None else (np.asarray(alpha)[y] if np.ndim(alpha) else alpha)
    return -a * (1 - p) ** gamma * logp


@pytest.mark.parametrize("alpha", [None, 0.25, [0.1, 0.4, 0.2, 0.3]])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 4.5])
def test_focal_matches_formula(gamma: float, alpha: Any) -> None:
    for reduction in REDUCTIONS:
        x, y = class_data()
        expected = np_reduce(np_focal(x.numpy(), y.numpy(), gamma, alpha), reduction)
        for out in both("focal", x, y, gamma=gamma, alpha=alpha, reduction=reduction):
            close(out, expected, rtol=1e-6)  # the module's alphas are float32 buffers


def test_focal_gamma_zero_is_cross_entropy() -> None:
    for reduction in REDUCTIONS:
        for scale in (3.0, 1e4):
            x, y = class_data(scale)
            x = x.float()
            focal = create_loss("focal", gamma=0.0, reduction=reduction)(x, y)
            torch.testing.assert_close(focal, F.cross_entropy(x, y, reduction=reduction), rtol=1e-6, atol=0)


@pytest.mark.parametrize("gamma", [0.0, 0.05, 0.5, 1.0, 2.0])
def test_focal_gradient_finite_as_p_true_goes_to_one(gamma: float) -> None:
    # gaps past ~88 make 1 - p_t underflow float32's normal range, then reach exactly 0
    gaps = torch.tensor([5.0, 30.0, 80.0, 87.0, 88.5, 90.0, 104.0, 200.0, 1e4])
    x = torch.zeros(len(gaps), 3)
    x[:, 0] = gaps
    x.requires_grad_(True)
    y = torch.zeros(len(gaps), dtype=torch.long)
    for name, params in [("focal", {}), ("class_balanced", {"class_counts": [5, 3, 1], "base": "focal"})]:
        loss = create_loss(name, gamma=gamma, reduction="sum", **params)(x, y)
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), (name, grad)
    bx = gaps.clone().requires_grad_(True)
    loss = create_loss("binary_focal", gamma=gamma, reduction="sum")(bx, torch.ones_like(bx))
    (grad,) = torch.autograd.grad(loss, bx)
    assert torch.isfinite(grad).all() and (grad <= 0).all()


@pytest.mark.parametrize("scale", [3.0, 1e4])
@pytest.mark.parametrize("alpha", [0.25, None])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_binary_focal_matches_torchvision(gamma: float, alpha: float | None, scale: float) -> None:
    for reduction in REDUCTIONS:
        x, t = binary_data(scale, shape=(N, 2, 3))
        expected = sigmoid_focal_loss(x, t, alpha=-1.0 if alpha is None else alpha, gamma=gamma, reduction=reduction)
        close(cls.binary_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction=reduction), expected, rtol=1e-9)
        if alpha is not None:
            out = create_loss("binary_focal", alpha=alpha, gamma=gamma, reduction=reduction)(x, t)
            close(out, expected, rtol=1e-9)


def test_binary_focal_with_soft_targets_matches_torchvision() -> None:
    """Soft targets in (0, 1): torchvision's mixtures p_t = p t + (1 - p)(1 - t), alpha_t likewise."""
    x, _ = binary_data(3.0, shape=(N, 3))
    t = torch.rand(N, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t[0] = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    for gamma in (0.5, 2.0):
        for reduction in REDUCTIONS:
            expected = sigmoid_focal_loss(x, t, alpha=0.25, gamma=gamma, reduction=reduction)
            close(cls.binary_focal_loss(x, t, alpha=0.25, gamma=gamma, reduction=reduction), expected, rtol=1e-9)


@pytest.mark.parametrize("gap", [10.0, 30.0, 80.0])
def test_binary_focal_keeps_full_precision_as_p_t_goes_to_one(gap: float) -> None:
    """For a confident positive, 1 - p_t is sigma(-x) itself, not 1 - sigma(x) (which rounds to
    0 in float64 past x ~ 37, where torchvision's loss becomes exactly 0)."""
    x = torch.tensor([gap], dtype=torch.float64)
    out = cls.binary_focal_loss(x, torch.ones_like(x), alpha=None, gamma=2.0, reduction="none")
    np.testing.assert_allclose(out.numpy(), [expit(-gap) ** 2 * -log_expit(gap)], rtol=1e-12)


# --------------------------------------------------------------------------- class-count losses
def test_weighted_ce_weights_by_hand() -> None:
    counts = [1, 4, 16]
    # inverse: (1, 1/4, 1/16) * 3 / (21/16) = (16, 4, 1) / 7
    sevenths = torch.tensor([16, 4, 1], dtype=torch.float64) / 7
    torch.testing.assert_close(cls.frequency_weights(counts, "inverse"), sevenths)
    # square root of inverse: (1, 1/2, 1/4) * 3 / (7/4) = (12, 6, 3) / 7
    torch.testing.assert_close(
        cls.frequency_weights(counts, "sqrt_inverse"), torch.tensor([12, 6, 3], dtype=torch.float64) / 7
    )
    module = create_loss("weighted_ce", class_counts=counts)
    torch.testing.assert_close(module.weight, torch.tensor([16, 4, 1]) / 7)


@pytest.mark.parametrize("scheme", ["inverse", "sqrt_inverse"])
def test_weighted_ce_matches_torch(scheme: str) -> None:
    for reduction in REDUCTIONS:
        x, y = class_data(c=3)
        hand = {"inverse": [16 / 7, 4 / 7, 1 / 7], "sqrt_inverse": [12 / 7, 6 / 7, 3 / 7]}[scheme]
        expected = F.cross_entropy(x, y, weight=torch.tensor(hand, dtype=x.dtype), reduction=reduction)
        for out in both("weighted_ce", x, y, class_counts=[1, 4, 16], scheme=scheme, reduction=reduction):
            close(out, expected, rtol=1e-6)  # the module's weights are float32 buffers


def test_class_balanced_weights_by_hand() -> None:
    counts = np.array([1.0, 4.0, 16.0])
    beta = 0.5
    raw = (1 - beta) / (1 - beta**counts)  # (1, 8/15, 32768/65535)
    np.testing.assert_allclose(raw, [1.0, 8 / 15, 32768 / 65535])
    expected = raw * 3 / raw.sum()
    torch.testing.assert_close(cls.class_balanced_weights(counts.tolist(), beta), torch.from_numpy(expected))
    # beta = 0: no re-weighting
    torch.testing.assert_close(cls.class_balanced_weights([1, 4, 16], 0.0), torch.ones(3, dtype=torch.float64))
    # beta -> 1: inverse frequency (scaled to sum to C); 1 - beta^n stays accurate
    inv = np.array([1.0, 1 / 4, 1 / 16])
    torch.testing.assert_close(
        cls.class_balanced_weights([1, 4, 16], 1 - 1e-12), torch.from_numpy(inv * 3 / inv.sum()), rtol=1e-9, atol=0
    )


@pytest.mark.parametrize("base", ["cross_entropy", "bce", "focal"])
def test_class_balanced_matches_reference(base: str) -> None:
    for reduction in REDUCTIONS:
        x, y = class_data()
        beta, gamma = 0.99, 1.5
        n = np.array(COUNTS)
        w = (1 - beta) / (1 - beta**n)
        w = torch.from_numpy(w * C / w.sum())[y]
        onehot = F.one_hot(y, C).double()
        if base == "cross_entropy":
            per = F.cross_entropy(x, y, reduction="none")
        elif base == "bce":
            per = F.binary_cross_entropy_with_logits(x, onehot, reduction="none").sum(1)
        else:
            per = sigmoid_focal_loss(x, onehot, alpha=-1, gamma=gamma, reduction="none").sum(1)
        expected = np_reduce((w * per).numpy(), reduction)
        params = {"class_counts": COUNTS, "beta": beta, "base": base, "gamma": gamma, "reduction": reduction}
        for out in both("class_balanced", x, y, **params):
            close(out, expected, rtol=1e-6)


def test_class_balanced_focal_gamma_zero_is_bce() -> None:
    x, y = class_data()
    focal = create_loss("class_balanced", class_counts=COUNTS, base="focal", gamma=0.0)(x, y)
    bce = create_loss("class_balanced", class_counts=COUNTS, base="bce")(x, y)
    close(focal, bce, rtol=1e-12)


def test_ldam_margins_by_hand() -> None:
    # n^(-1/4) = (1, 1/2, 1/3), scaled so the largest is max_m = 0.5
    expected = torch.tensor([0.5, 0.25, 1 / 6], dtype=torch.float64)
    torch.testing.assert_close(cls.ldam_margins([1, 16, 81], 0.5), expected)


@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5]])
def test_ldam_matches_reference(weight: list[float] | None) -> None:
    for reduction in REDUCTIONS:
        x, y = class_data(scale=1.0, c=3)
        margins = np.array([0.5, 0.25, 1 / 6]) * (0.4 / 0.5)
        shifted = x.numpy().copy()
        shifted[np.arange(N), y.numpy()] -= margins[y.numpy()]
        w = None if weight is None else torch.tensor(weight, dtype=x.dtype)
        expected = F.cross_entropy(torch.from_numpy(10.0 * shifted), y, weight=w, reduction=reduction)
        for out in both("ldam", x, y, class_counts=[1, 16, 81], max_m=0.4, s=10.0, weight=weight, reduction=reduction):
            close(out, expected, rtol=1e-6)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_logit_adjusted_matches_reference(tau: float) -> None:
    for reduction in REDUCTIONS:
        x, y = class_data()
        prior = np.array(COUNTS) / sum(COUNTS)
        expected = F.cross_entropy(x + tau * torch.from_numpy(np.log(prior)), y, reduction=reduction)
        for out in both("logit_adjusted", x, y, class_counts=COUNTS, tau=tau, reduction=reduction):
            close(out, expected, rtol=1e-6)
        if tau == 0.0:
            plain = create_loss("logit_adjusted", class_counts=COUNTS, tau=0.0, reduction=reduction)(x, y)
            close(plain, F.cross_entropy(x, y, reduction=reduction))


def test_balanced_softmax_matches_reference_and_logit_adjusted() -> None:
    for reduction in REDUCTIONS:
        x, y = class_data()
        expected = F.cross_entropy(x + torch.log(torch.tensor(COUNTS, dtype=x.dtype)), y, reduction=reduction)
        for out in both("balanced_softmax", x, y, class_counts=COUNTS, reduction=reduction):
            close(out, expected, rtol=1e-6)
        adjusted = cls.logit_adjusted_loss(x, y, class_counts=COUNTS, tau=1.0, reduction=reduction)
        close(cls.balanced_softmax_loss(x, y, class_counts=COUNTS, reduction=reduction), adjusted, rtol=1e-12)


def test_zero_class_counts_give_finite_losses() -> None:
    x, y = class_data()
    counts = [10.0, 0.0, 5.0, 0.0]
    for name in ("weighted_ce", "class_balanced", "ldam", "logit_adjusted", "balanced_softmax"):
        out = create_loss(name, class_counts=counts)(x, y)
        assert torch.isfinite(out), name
    # a class with no samples is treated like the rarest one seen
    torch.testing.assert_close(cls.frequency_weights(counts), cls.frequency_weights([10.0, 5.0, 5.0, 5.0]))


def test_class_counts_of_the_wrong_length_is_a_data_error() -> None:
    x, y = class_data()
    for name in ("weighted_ce", "class_balanced", "ldam", "logit_adjusted", "balanced_softmax"):
        with pytest.raises(DataError, match=r"'class_counts' has 3 entries, but pred has 4 classes"):
            create_loss(name, class_counts=[3, 2, 1])(x, y)
    with pytest.raises(DataError, match="'weight' has 2 entries"):
        create_loss("cross_entropy", weight=[1.0, 2.0])(x, y)
    with pytest.raises(DataError, match="'alpha' has 3 entries"):
        create_loss("focal", alpha=[1.0, 2.0, 3.0])(x, y)


# --------------------------------------------------------------------------- noise-robust and poly
def np_logp_true(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return log_softmax(x, axis=1)[np.arange(len(y)), y]


@pytest.mark.parametrize("q", [0.1, 0.7, 1.0])
def test_gce_matches_formula(q: float) -> None:
    for reduction in REDUCTIONS:
        x, y = class_data()
        p = np.exp(np_logp_true(x.numpy(), y.numpy()))
        expected = np_reduce((1 - p**q) / q, reduction)
        close(create_loss("gce", q=q, reduction=reduction)(x, y), expected, rtol=1e-9)
        if q == 1.0:  # q = 1 is the mean absolute error 1 - p_y
            close(create_loss("gce", q=1.0, reduction=reduction)(x, y), np_reduce(1 - p, reduction), rtol=1e-9)


def test_gce_small_q_approaches_cross_entropy() -> None:
    x, y = class_data()
    gce = create_loss("gce", q=1e-4, reduction="none")(x, y)
    ce = F.cross_entropy(x, y, reduction="none")
    torch.testing.assert_close(gce, ce, rtol=2e-3, atol=0)
    assert (gce < ce).all()  # (1 - p^q) / q < -log p for every q > 0


@pytest.mark.parametrize("alpha,beta", [(0.1, 1.0), (1.0, 0.0), (0.0, 1.0), (6.0, 0.1)])
def test_sce_matches_formula(alpha: float, beta: float) -> None:
    for reduction in REDUCTIONS:
        x, y = class_data()
        xn, yn = x.numpy(), y.numpy()
        logp = log_softmax(xn, axis=1)
        onehot = np.eye(C)[yn]
        ce = -(onehot * logp).sum(1)
        log_label = np.where(onehot > 0, 0.0, -4.0)  # log of the one-hot label, log 0 := A = -4
        rce = -(np.exp(logp) * log_label).sum(1)
        expected = np_reduce(alpha * ce + beta * rce, reduction)
        close(create_loss("sce", alpha=alpha, beta=beta, reduction=reduction)(x, y), expected, rtol=1e-9)


@pytest.mark.parametrize("epsilon", [-1.0, 0.0, 1.0, 3.5])
def test_poly_matches_formula(epsilon: float) -> None:
    for reduction in REDUCTIONS:
        x, y = class_data()
        logp = np_logp_true(x.numpy(), y.numpy())
        per = -logp + epsilon * (1 - np.exp(logp))
        out = create_loss("poly", epsilon=epsilon, reduction=reduction)(x, y)
        close(out, np_reduce(per, reduction), rtol=1e-9)
        if epsilon == -1.0:
            assert (create_loss("poly", epsilon=-1.0, reduction="none")(x, y) >= 0).all()


# --------------------------------------------------------------------------- asymmetric loss
def np_asl(x: np.ndarray, y: np.ndarray, gamma_pos: float, gamma_neg: float, clip: float) -> np.ndarray:
    """The paper's loss written the way its authors describe it: shift, clip, focus."""
    p = expit(x)
    p_m = np.maximum(p - clip, 0.0)  # shifted probability of a negative
    pos = -((1 - p) ** gamma_pos) * log_expit(x)
    # log(1 - p_m) = log(min(1 - p + clip, 1)); at clip = 0 the stable log-sigmoid of -x
    log_not_pm = np.log(np.minimum(expit(-x) + clip, 1.0)) if clip > 0 else log_expit(-x)
    neg = -(p_m**gamma_neg) * log_not_pm
    return np.where(y == 1, pos, neg)


def test_asl_hand_worked() -> None:
    x = torch.tensor([0.0, 0.0, -3.0, 2.0])
    y = torch.tensor([1.0, 0.0, 0.0, 1.0])
    out = create_loss("asl", gamma_pos=1.0, gamma_neg=4.0, clip=0.05, reduction="none")(x, y)
    p3, p4 = 1 / (1 + math.exp(3.0)), 1 / (1 + math.exp(-2.0))
    assert p3 < 0.05
    expected = [
        0.5 * math.log(2.0),  # positive at p = 1/2: (1 - p)^1 * -log p
        0.45**4 * -math.log(0.55),  # negative at p = 1/2: p_m = 0.45
        0.0,  # negative with p = 0.047 < clip: discarded
        (1 - p4) * -math.log(p4),
    ]
    close(out, expected, rtol=1e-6)


@pytest.mark.parametrize("scale", [3.0, 1e4])
@pytest.mark.parametrize(
    "params", [{}, {"gamma_pos": 1.0, "gamma_neg": 2.0, "clip": 0.0}, {"gamma_pos": 0.5, "gamma_neg": 0.5, "clip": 0.2}]
)
def test_asl_matches_formula(params: dict[str, float], scale: float) -> None:
    for reduction in REDUCTIONS:
        full = {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05} | params
        x, t = binary_data(scale)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            expected = np_reduce(np_asl(x.numpy(), t.numpy(), **full), reduction)
        close(create_loss("asl", reduction=reduction, **params)(x, t), expected, rtol=1e-9)


def test_asl_without_asymmetry_is_bce() -> None:
    x, t = binary_data()
    out = create_loss("asl", gamma_pos=0.0, gamma_neg=0.0, clip=0.0)(x, t)
    close(out, F.binary_cross_entropy_with_logits(x, t), rtol=1e-10)


# --------------------------------------------------------------------------- family-wide behaviour
@pytest.mark.parametrize("name,params,kind", ALL_CASES, ids=ALL_IDS)
def test_extreme_logits_give_finite_values_and_gradients(name: str, params: dict[str, Any], kind: str) -> None:
    x, y = data_for(kind)
    x = (torch.sign(x) * 1e4).float().requires_grad_(True)
    for reduction in REDUCTIONS:
        out = create_loss(name, reduction=reduction, **params)(x, y)
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.isfinite(out).all() and torch.isfinite(grad).all(), (reduction, out, grad)


@pytest.mark.parametrize("name,params,kind", ALL_CASES, ids=ALL_IDS)
def test_float64_gradcheck(name: str, params: dict[str, Any], kind: str) -> None:
    x, y = data_for(kind, scale=1.5, seed=3)
    x = x[:4].clone().requires_grad_(True)
    y = y[:4]
    module = create_loss(name, reduction="none", **params)
    assert torch.autograd.gradcheck(lambda z: module(z, y), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,params,kind", ALL_CASES, ids=ALL_IDS)
def test_half_precision_inputs(name: str, params: dict[str, Any], kind: str, dtype: torch.dtype) -> None:
    x, y = data_for(kind)
    module = create_loss(name, reduction="none", **params)
    low = x.to(dtype).requires_grad_(True)
    out = module(low, y)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # computed in float32: the same as float32 input holding the same (rounded) values
    torch.testing.assert_close(out, module(low.detach().float(), y), rtol=1e-6, atol=1e-6)
    # and close to the unrounded float32 computation
    torch.testing.assert_close(out, module(x.float(), y), rtol=0.05, atol=0.05)
    (grad,) = torch.autograd.grad(out.sum(), low)
    assert grad.dtype == dtype and torch.isfinite(grad).all()


@pytest.mark.parametrize("name,params,kind", ALL_CASES, ids=ALL_IDS)
def test_runs_on_the_meta_device_without_host_syncs(name: str, params: dict[str, Any], kind: str) -> None:
    # with value checks off, nothing may read a tensor's values or create one on the host
    x, y = data_for(kind)
    module = create_loss(name, **params).to("meta")
    with validation(False):
        out = module(x.float().to("meta").requires_grad_(True), y.to("meta"))
    assert out.device.type == "meta" and out.shape == ()


@pytest.mark.parametrize("name", MODULE_LOSSES)
def test_module_buffers_move_with_the_module(name: str) -> None:
    params = {"class_counts": COUNTS} if loss_info(name).needs else {}
    if name == "cross_entropy":
        params = {"weight": [1.0, 2.0, 3.0, 4.0]}
    if name == "focal":
        params = {"alpha": [1.0, 2.0, 3.0, 4.0]}
    module = create_loss(name, **params)
    buffers = dict(module.named_buffers())
    assert buffers and all(b.dtype == torch.float32 for b in buffers.values())
    assert module.state_dict() == {}  # derived from hyperparameters: not checkpoint state
    moved = module.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in moved.buffers())
    x, y = class_data()
    fn = loss_info(name).function
    assert fn is not None
    full = {p.name: p.default for p in loss_info(name).params} | params
    torch.testing.assert_close(moved(x, y), fn(x, y, **full), rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------- input and parameter errors
@pytest.mark.parametrize("name,params", MULTICLASS_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(MULTICLASS_CASES)])
def test_labels_out_of_range_are_data_errors(name: str, params: dict[str, Any]) -> None:
    x, y = class_data()
    module = create_loss(name, **params)
    for bad in (C, -1):
        labels = y.clone()
        labels[2] = bad
        with pytest.raises(DataError, match=rf"labels must lie in \[0, {C - 1}\]"):
            module(x, labels)
    with pytest.raises(DataError, match="class indices of shape"):
        module(x, y[:-1])


def test_ignore_index_is_not_an_out_of_range_label() -> None:
    x, y = class_data()
    y = y.clone()
    y[0] = 7
    out = create_loss("cross_entropy", ignore_index=7, reduction="none")(x, y)
    assert out[0] == 0 and (out[1:] > 0).all()
    with pytest.raises(DataError, match="labels must lie"):
        create_loss("cross_entropy")(x, y)


@pytest.mark.parametrize("name,params", BINARY_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BINARY_CASES)])
def test_binary_targets_are_checked(name: str, params: dict[str, Any]) -> None:
    x, t = binary_data()
    module = create_loss(name, **params)
    with pytest.raises(DataError, match=r"binary targets must lie in \[0, 1\]"):
        module(x, t * 2)
    with pytest.raises(DataError, match="same shape"):
        module(x, t[:, :2])


COUNTS_KW = {"class_counts": COUNTS}
LIST_OF_COUNTS = "a list of class counts (non-negative numbers, one per class)"


@pytest.mark.parametrize(
    "name,params,bad,valid",
    [
        ("focal", {"gamma": -1}, "gamma", "a float in [0, inf)"),
        ("focal", {"alpha": [0.5, -0.1]}, "alpha", "a float or a list of floats (one per class) in [0, inf)"),
        ("cross_entropy", {"label_smoothing": 1.0}, "label_smoothing", "a float in [0, 1)"),
        ("cross_entropy", {"ignore_index": 1.5}, "ignore_index", "an int"),
        ("gce", {"q": 0.0}, "q", "a float in (0, 1]"),
        ("poly", {"epsilon": -2}, "epsilon", "a float in [-1, inf)"),
        ("bce", {"pos_weight": 0}, "pos_weight", "a float in (0, inf)"),
        ("binary_focal", {"alpha": 1.5}, "alpha", "a float in [0, 1]"),
        ("asl", {"clip": 1.0}, "clip", "a float in [0, 1)"),
        ("sce", {"beta": -0.5}, "beta", "a float in [0, inf)"),
        ("ldam", {**COUNTS_KW, "s": 0}, "s", "a float in (0, inf)"),
        ("class_balanced", {**COUNTS_KW, "beta": 1.0}, "beta", "a float in [0, 1)"),
        ("class_balanced", {**COUNTS_KW, "base": "softmax"}, "base", "one of 'cross_entropy', 'focal', 'bce'"),
        ("weighted_ce", {"class_counts": [3, -1]}, "class_counts", LIST_OF_COUNTS),
        ("logit_adjusted", {**COUNTS_KW, "tau": -1}, "tau", "a float in [0, inf)"),
    ],
)
def test_parameter_errors(name: str, params: dict[str, Any], bad: str, valid: str) -> None:
    with pytest.raises(ParameterError) as info:
        create_loss(name, **params)
    assert str(info.value) == f"The '{bad}' parameter of {name} must be {valid}. Got {params[bad]!r} instead."


@pytest.mark.parametrize("name", ["weighted_ce", "class_balanced", "ldam", "logit_adjusted", "balanced_softmax"])
def test_class_count_losses_need_counts(name: str) -> None:
    assert loss_info(name).needs == ("class_counts",)
    with pytest.raises(ParameterError, match=f"The loss '{name}' needs class_counts"):
        create_loss(name)
    module = create_loss(name, context={"task": "multiclass", "class_counts": [5, 3, 2, 1]})
    x, y = class_data()
    assert torch.isfinite(module(x, y))


def test_functions_reject_unknown_choices() -> None:
    x, y = class_data()
    with pytest.raises(ParameterError, match="'scheme' parameter of weighted_ce"):
        cls.weighted_ce_loss(x, y, class_counts=COUNTS, scheme="inverted")
    with pytest.raises(ParameterError, match="'base' parameter of class_balanced"):
        cls.class_balanced_loss(x, y, class_counts=COUNTS, base="softmax")


def test_perfect_predictions_cost_their_documented_minimum() -> None:
    x = torch.full((C, C), -1e4)
    x[torch.arange(C), torch.arange(C)] = 1e4
    y = torch.arange(C)
    for name, params in MULTICLASS_CASES:
        if "label_smoothing" in params:
            continue  # smoothing moves the minimum away from a one-hot prediction
        out = create_loss(name, **params)(x, y)
        torch.testing.assert_close(out, torch.tensor(loss_info(name).minimum), msg=name)
    t = torch.eye(C)
    for name, params in BINARY_CASES:
        out = create_loss(name, **params)(x, t)
        torch.testing.assert_close(out, torch.tensor(loss_info(name).minimum), msg=name)


def test_the_mae_softmax_variant_is_half_the_l1_distance_of_softmax_and_one_hot():
    """configs/loss/mae_softmax.yaml (gce, q=1) against Ghosh et al.'s MAE computed by hand."""
    from omegaconf import OmegaConf

    from lossbench.configs import CONFIG_DIR
    from lossbench.registry import create_loss

    cfg = OmegaConf.load(CONFIG_DIR / "loss" / "mae_softmax.yaml")
    assert cfg.q == 1.0 and list(cfg.defaults) == ["gce", "_self_"]
    torch.manual_seed(0)
    logits = torch.randn(64, 5, dtype=torch.float64) * 4
    y = torch.randint(0, 5, (64,))
    mae = (torch.softmax(logits, 1) - torch.nn.functional.one_hot(y, 5)).abs().sum(1).mean()
    assert float(create_loss("gce", q=1.0)(logits, y)) == pytest.approx(float(mae) / 2, rel=1e-12)

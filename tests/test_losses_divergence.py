"""Divergence losses against torch.nn.functional.kl_div, scipy.special.rel_entr and
scipy.spatial.distance.jensenshannon, plus cases worked by hand (disjoint supports,
one-hot targets, huge logits) and the input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F
from scipy.spatial.distance import jensenshannon

from lossbench import create_loss, loss_info
from lossbench.errors import DataError
from lossbench.losses import validation
from lossbench.registry import REDUCTIONS

F64 = torch.float64
N, C = 6, 5


def inputs(seed: int = 0, scale: float = 2.0, dtype=F64) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and target rows with exact zeros, an exact one-hot row and a uniform row."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, generator=g, dtype=F64) * scale
    target = torch.softmax(torch.randn(N, C, generator=g, dtype=F64) * 2, dim=1)
    target[0] = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0], dtype=F64)
    target[1] = torch.tensor([0.5, 0.0, 0.25, 0.25, 0.0], dtype=F64)
    target[2] = torch.full((C,), 1.0 / C, dtype=F64)
    return logits.to(dtype), target.to(dtype)


def np_softmax(logits: torch.Tensor) -> np.ndarray:
    z = logits.double().numpy()
    return scipy.special.softmax(z, axis=1)


def np_reduce(per_sample: np.ndarray, reduction: str) -> np.ndarray:
    return {"none": per_sample, "mean": per_sample.mean(), "sum": per_sample.sum()}[reduction]


def call(name: str, pred, target, reduction: str = "none") -> torch.Tensor:
    return create_loss(name, reduction=reduction)(pred, target)


# --------------------------------------------------------------------------- KL
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_kl_div_matches_torch_kl_div(reduction, dtype):
    logits, target = inputs(dtype=dtype)
    log_q = F.log_softmax(logits, dim=1)
    torch_reduction = {"mean": "batchmean", "sum": "sum", "none": "none"}[reduction]
    want = F.kl_div(log_q, target, reduction=torch_reduction)
    if reduction == "none":
        want = want.sum(dim=1)
    got = call("kl_div", logits, target, reduction)
    assert got.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    else:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_kl_div_matches_scipy_rel_entr(reduction):
    logits, target = inputs(seed=1)
    per_sample = scipy.special.rel_entr(target.numpy(), np_softmax(logits)).sum(axis=1)
    got = call("kl_div", logits, target, reduction).numpy()
    np.testing.assert_allclose(got, np_reduce(per_sample, reduction), rtol=1e-12, atol=1e-15)


def test_kl_div_gradient_is_softmax_minus_target():
    """d KL(t || softmax(z)) / dz = softmax(z) - t for each row (worked by hand), / N for the batch mean."""
    logits, target = inputs(seed=2)
    logits.requires_grad_(True)
    call("kl_div", logits, target, "mean").backward()
    torch.testing.assert_close(logits.grad, (torch.softmax(logits.detach(), 1) - target) / N, rtol=1e-12, atol=1e-15)


def test_kl_div_with_huge_logits_as_worked_by_hand():
    """logits (1e4, -1e4, 0): log q = (0, -2e4, -1e4) to float precision. Target e_1 costs
    -log q_1 = 2e4; target e_0 costs 0; target (1/2, 1/2, 0) costs -log 2 + (0 + 2e4) / 2."""
    logits = torch.tensor([[1e4, -1e4, 0.0]] * 3, requires_grad=True)
    target = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    out = call("kl_div", logits, target)
    torch.testing.assert_close(out, torch.tensor([2e4, 0.0, 1e4 - math.log(2)]), rtol=1e-6, atol=0)
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()


# --------------------------------------------------------------------------- JS
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("scale", [0.1, 2.0, 30.0])
def test_js_div_matches_scipy_jensenshannon(reduction, scale):
    """scipy returns the Jensen-Shannon *distance*, the square root of the divergence (natural log)."""
    logits, target = inputs(seed=3, scale=scale)
    per_sample = jensenshannon(target.numpy(), np_softmax(logits), axis=1) ** 2
    got = call("js_div", logits, target, reduction).numpy()
    np.testing.assert_allclose(got, np_reduce(per_sample, reduction), rtol=1e-10, atol=1e-15)


def test_js_div_float32_is_close_to_scipy():
    logits, target = inputs(seed=4, dtype=torch.float32)
    per_sample = jensenshannon(target.double().numpy(), np_softmax(logits), axis=1) ** 2
    np.testing.assert_allclose(call("js_div", logits, target).numpy(), per_sample, rtol=1e-4, atol=1e-7)


def test_js_div_cases_worked_by_hand():
    """Disjoint supports: log 2 (its maximum). Equal distributions: 0. P = e_0 against
    Q = (1/2, 1/2): M = (3/4, 1/4), JS = (log(4/3) + (1/2) log(2/3) + (1/2) log 2) / 2."""
    logits = torch.tensor([[30.0, -30.0], [0.0, 0.0], [0.0, 0.0], [5.0, 2.0]], dtype=F64)
    target = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.0, 0.0]], dtype=F64)
    target[3] = torch.softmax(logits[3], 0)
    want = [math.log(2), (math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2, 0.0, 0.0]
    torch.testing.assert_close(call("js_div", logits, target), torch.tensor(want, dtype=F64), rtol=1e-12, atol=1e-12)


def test_js_div_is_symmetric():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(N, C, generator=g, dtype=F64) * 3, torch.randn(N, C, generator=g, dtype=F64) * 3
    torch.testing.assert_close(
        call("js_div", a, torch.softmax(b, 1)), call("js_div", b, torch.softmax(a, 1)), rtol=1e-12, atol=1e-15
    )


def test_js_div_is_bounded_by_log_2():
    logits, target = inputs(seed=6, scale=1e4, dtype=torch.float32)
    out = call("js_div", logits, target)
    assert torch.all(out >= -1e-7) and torch.all(out <= math.log(2) + 1e-6)


# --------------------------------------------------------------------------- both
NAMES = ["kl_div", "js_div"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_finite_values_and_gradients_with_extreme_logits_and_exact_zeros(name, scale, dtype):
    logits, target = inputs(seed=7, scale=scale, dtype=dtype)
    logits[3] = torch.tensor([1e4, -1e4, 0.0, -1e4, 1e4], dtype=dtype)
    logits.requires_grad_(True)
    for reduction in REDUCTIONS:
        out = call(name, logits, target, reduction)
        assert torch.isfinite(out).all() and torch.all(out >= -1e-6)
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_kl_div_with_minus_infinite_logits_where_the_target_is_zero(dtype):
    """A class masked out with a -inf logit has log q = -inf; where the target is 0 there too,
    its term is 0 (not 0 * -inf = NaN), and the rest is the KL over the other classes."""
    logits, target = inputs(dtype=dtype)
    logits[1, 1] = logits[1, 4] = -math.inf  # row 1's target is 0 at classes 1 and 4
    logits.requires_grad_(True)
    for reduction in REDUCTIONS:
        out = call("kl_div", logits, target, reduction)
        kept = [0, 2, 3]
        want = F.kl_div(F.log_softmax(logits[1, kept].detach(), dim=0), target[1, kept], reduction="sum")
        row = out[1] if reduction == "none" else call("kl_div", logits[1:2], target[1:2], "sum")
        torch.testing.assert_close(row.detach(), want)
        assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_source_document_trap_zero_target_entries_give_no_nan(name):
    """The source document's KL code computes t log(t / p) directly: NaN at t = 0."""
    logits = torch.zeros(1, 3, requires_grad=True)
    target = torch.tensor([[1.0, 0.0, 0.0]])
    out = call(name, logits, target, "sum")
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(logits.grad).all()
    if name == "kl_div":  # KL(e_0 || uniform) = log 3
        assert out.item() == pytest.approx(math.log(3), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name):
    logits, target = inputs(seed=8)
    logits.requires_grad_(True)
    for reduction in REDUCTIONS:
        loss = create_loss(name, reduction=reduction)
        assert torch.autograd.gradcheck(lambda z: loss(z, target), (logits,)), reduction


@pytest.mark.parametrize("name", NAMES)
def test_zero_iff_prediction_equals_target(name):
    _, target = inputs(seed=9)
    logits = torch.log(target.clamp_min(1e-300))  # softmax(log t) = t, zeros included
    torch.testing.assert_close(call(name, logits, target), torch.zeros(N, dtype=F64), rtol=0, atol=1e-12)
    mixed = torch.log((target + 0.1) / (1 + 0.1 * C))  # predicts a mix of the target and uniform
    out = call(name, mixed, target)
    assert out[2].item() == pytest.approx(0.0, abs=1e-12)  # row 2 is uniform: the mix equals it
    assert torch.all(out[[0, 1, 3, 4, 5]] > 1e-4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_compute_in_float32(name, dtype):
    logits, target = inputs(seed=10, dtype=torch.float32)
    logits, target = logits.to(dtype), target.to(dtype)
    for reduction in REDUCTIONS:
        half = call(name, logits.requires_grad_(True), target, reduction)
        with validation(False):  # the rounded rows miss 1 by more than float32's tolerance allows
            full = call(name, logits.detach().float(), target.float(), reduction)  # same rounded inputs
        assert half.dtype == torch.float32 and torch.isfinite(half).all()
        torch.testing.assert_close(half, full, rtol=1e-6, atol=1e-6)
    half.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_leading_batch_dimensions(name):
    """(K, N, C) input gives (K, N) per-sample divergences, each equal to its slice's."""
    logits, target = inputs(seed=11)
    stacked_logits = torch.stack([logits, logits.flip(0)])
    stacked_target = torch.stack([target, target.flip(0)])
    out = call(name, stacked_logits, stacked_target)
    assert out.shape == (2, N)
    torch.testing.assert_close(out[0], call(name, logits, target))
    torch.testing.assert_close(out[1], call(name, logits.flip(0), target.flip(0)))
    torch.testing.assert_close(call(name, stacked_logits, stacked_target, "mean"), out.mean())


# --------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("name", NAMES)
def test_target_rows_must_be_distributions(name):
    logits, target = inputs()
    bad = target.clone()
    bad[1, 0] = -0.1
    bad[1, 1] = 0.1
    with pytest.raises(DataError, match=rf"{name}: target rows must be probability distributions.*negative"):
        call(name, logits, bad)
    half = target / 2
    with pytest.raises(DataError, match=rf"{name}: every target row must sum to 1, but a row sums to 0\.5"):
        call(name, logits, half)


@pytest.mark.parametrize("name", NAMES)
def test_value_checks_can_be_switched_off_for_the_hot_loop(name):
    logits, target = inputs()
    with validation(False):
        out = call(name, logits, target / 2)  # no host sync, no error: the pipeline checked its data up front
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_shape_errors(name):
    logits, target = inputs()
    with pytest.raises(DataError, match=rf"{name}: target must be probabilities with the shape of pred"):
        call(name, logits, target.argmax(1))  # class indices are not distributions
    with pytest.raises(DataError, match=rf"{name}: target must be probabilities with the shape of pred"):
        call(name, logits, target[:, :3])
    with pytest.raises(DataError, match=rf"{name}: pred must be logits of shape \(N, C\)"):
        call(name, logits[0], target[0])
    with pytest.raises(DataError, match=rf"{name}: target must hold probabilities \(a float dtype\)"):
        call(name, logits, torch.zeros(N, C, dtype=torch.long))


def test_specs():
    for name in NAMES:
        spec = loss_info(name)
        assert spec.tasks == ("distribution",) and spec.description and spec.reference
        assert [p.name for p in spec.params] == ["reduction"]
    assert "convex" in loss_info("kl_div").traits and "calibrated" in loss_info("kl_div").traits

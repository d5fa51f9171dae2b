"""``combo``: a weighted sum of registered losses, its tasks, its errors, its training."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossbench import create_loss, loss_info
from lossbench.errors import ParameterError, UnknownNameError
from lossbench.registry import LOSSES, LossSpec, Param

REDUCTIONS = ("mean", "sum", "none")
COUNTS = [40, 10, 5, 1]


def class_data(n: int = 12, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 2, torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_combo_is_the_weighted_sum_of_its_terms(reduction: str) -> None:
    x, y = class_data()
    combo = create_loss(
        "combo",
        terms=[{"name": "cross_entropy", "weight": 1.0}, {"name": "focal", "weight": 0.5, "gamma": 1.5}],
        reduction=reduction,
    )
    # references built independently of lossbench: torch's cross-entropy and the focal formula
    ce = F.cross_entropy(x, y, reduction="none")
    p_true = torch.softmax(x, dim=1)[torch.arange(len(y)), y]
    focal = (1 - p_true) ** 1.5 * ce
    per = ce + 0.5 * focal
    expected = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    torch.testing.assert_close(combo(x, y), expected)


def test_mapping_form_and_params_key() -> None:
    x, y = class_data()
    by_map = create_loss("combo", terms={"cross_entropy": 2.0, "gce": {"weight": 0.3, "q": 0.5}})
    by_list = create_loss(
        "combo", terms=[{"name": "cross_entropy", "weight": 2.0}, {"name": "gce", "weight": 0.3, "q": 0.5}]
    )
    torch.testing.assert_close(by_map(x, y), by_list(x, y))
    expected = 2.0 * create_loss("cross_entropy")(x, y) + 0.3 * create_loss("gce", q=0.5)(x, y)
    torch.testing.assert_close(by_map(x, y), expected)
    # a loss's own parameter named 'weight' goes under 'params'; a missing weight is 1
    w = [1.0, 3.0, 0.5, 2.0]
    combo = create_loss("combo", terms=[{"name": "cross_entropy", "params": {"weight": w}}])
    assert combo.weights == (1.0,)
    torch.testing.assert_close(combo(x, y), F.cross_entropy(x, y, weight=torch.tensor(w)))


def test_example_builds_and_reports_its_tasks() -> None:
    spec = loss_info("combo")
    combo = create_loss("combo", **spec.example)
    assert combo.tasks == ("multiclass",)
    assert isinstance(combo.terms, nn.ModuleList) and len(combo.terms) == 2
    assert combo.term_names == ("cross_entropy", "focal")


def test_tasks_are_the_intersection_of_the_terms() -> None:
    binary = create_loss("combo", terms={"bce": 1.0, "asl": 1.0})
    assert set(binary.tasks) == {"binary", "multilabel"}
    regression = create_loss("combo", terms={"mse": 1.0, "l1": 0.5})
    assert regression.tasks == ("regression",)
    x = torch.randn(6)
    t = torch.randn(6)
    torch.testing.assert_close(regression(x, t), F.mse_loss(x, t) + 0.5 * F.l1_loss(x, t))


def test_terms_without_a_shared_task_are_a_parameter_error() -> None:
    with pytest.raises(ParameterError) as info:
        create_loss("combo", terms=[{"name": "mse"}, {"name": "focal"}])
    msg = str(info.value)
    assert "share no task" in msg
    assert "term 1 'mse' is for regression" in msg and "term 2 'focal' is for multiclass" in msg


def test_term_errors_name_the_term() -> None:
    with pytest.raises(ParameterError) as info:
        create_loss("combo", terms=[{"name": "cross_entropy"}, {"name": "focal", "gamma": -1}])
    assert str(info.value) == (
        "combo term 2 ('focal'): The 'gamma' parameter of focal must be a float in [0, inf). Got -1 instead."
    )
    with pytest.raises(UnknownNameError, match=r"combo term 1 \('focl'\): Unknown loss 'focl'. Did you mean 'focal'\?"):
        create_loss("combo", terms={"focl": 1.0})
    with pytest.raises(UnknownNameError, match=r"combo term 1 \('focal'\): Unknown parameter of focal 'gama'"):
        create_loss("combo", terms=[{"name": "focal", "gama": 2}])
    with pytest.raises(ParameterError) as info:
        create_loss("combo", terms=[{"name": "focal", "weight": -0.5}])
    assert str(info.value) == (
        "The 'weight' parameter of combo term 1 ('focal') must be a float in [0, inf). Got -0.5 instead."
    )
    with pytest.raises(ParameterError, match=r"combo term 1 \('focal'\): set 'reduction' on combo itself"):
        create_loss("combo", terms=[{"name": "focal", "reduction": "sum"}])


@pytest.mark.parametrize(
    "terms,why",
    [
        (None, "combo needs at least one term"),
        ([], "there are no terms"),
        ("focal", "neither a list nor a mapping"),
        ([{"weight": 1.0}], "not a mapping with a 'name'"),
        ([{"name": 3}], "not a string"),
        ({"cross_entropy": 0.0, "focal": 0}, "every weight is 0"),
    ],
)
def test_malformed_terms(terms: object, why: str) -> None:
    with pytest.raises(ParameterError, match="The 'terms' parameter of combo must be a list of terms") as info:
        create_loss("combo", terms=terms)
    assert why in str(info.value)


def test_class_counts_pass_through_to_the_terms_that_use_them() -> None:
    x, y = class_data()
    combo = create_loss(
        "combo", terms=[{"name": "cross_entropy"}, {"name": "ldam", "weight": 0.5, "s": 10.0}], class_counts=COUNTS
    )
    expected = create_loss("cross_entropy")(x, y) + 0.5 * create_loss("ldam", class_counts=COUNTS, s=10.0)(x, y)
    torch.testing.assert_close(combo(x, y), expected)
    # a term's own counts win over combo's
    own = create_loss("combo", terms=[{"name": "balanced_softmax", "class_counts": [1, 1, 1, 1]}], class_counts=COUNTS)
    torch.testing.assert_close(own(x, y), F.cross_entropy(x, y))
    assert "class_counts" not in loss_info("combo").needs


def test_missing_class_counts_give_the_terms_own_error() -> None:
    with pytest.raises(ParameterError) as info:
        create_loss("combo", terms=[{"name": "cross_entropy"}, {"name": "logit_adjusted"}])
    msg = str(info.value)
    assert msg.startswith("combo term 2 ('logit_adjusted'): The loss 'logit_adjusted' needs class_counts")
    assert "give combo class_counts" in msg


def test_terms_move_with_the_combo() -> None:
    combo = create_loss("combo", terms={"weighted_ce": 1.0, "focal": {"alpha": [1, 2, 3, 4]}}, class_counts=COUNTS)
    names = {n for n, _ in combo.named_buffers()}
    assert names == {"terms.0.weight", "terms.1.alpha"}
    combo = combo.to(torch.float64)
    assert all(b.dtype == torch.float64 for b in combo.buffers())
    x, y = class_data()
    assert combo(x.double(), y).dtype == torch.float64


class _LearnedScale(nn.Module):
    """A test-only loss with a parameter: ``exp(s) * mse + s^2``."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(0.3))
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.log_scale.exp() * F.mse_loss(pred, target, reduction=self.reduction) + self.log_scale**2


@pytest.fixture
def learned_loss(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register a learnable loss for one test only (monkeypatch removes it afterwards)."""
    name = "_test_learned_scale"
    LOSSES.names()  # load the built-ins first
    reduction = Param("reduction", "mean", "str")
    spec = replace(loss_info("mse"), name=name, factory=_LearnedScale, function=None, aliases=(), params=(reduction,))
    assert isinstance(spec, LossSpec)
    monkeypatch.setitem(LOSSES._specs, name, spec)
    return name


def test_learnable_terms_get_gradients_and_train(learned_loss: str) -> None:
    combo = create_loss("combo", terms={"mse": 1.0, learned_loss: 2.0})
    params = list(combo.parameters())
    assert len(params) == 1
    pred = torch.randn(8, requires_grad=True)
    target = torch.randn(8)
    combo(pred, target).backward()
    assert params[0].grad is not None and pred.grad is not None
    # d/ds [2 (e^s mse + s^2)] = 2 e^s mse + 4 s
    mse = F.mse_loss(pred.detach(), target)
    torch.testing.assert_close(params[0].grad, 2 * torch.exp(torch.tensor(0.3)) * mse + 4 * 0.3)
    before = params[0].detach().clone()
    torch.optim.SGD(combo.parameters(), lr=0.1).step()
    assert not torch.equal(before, params[0].detach())

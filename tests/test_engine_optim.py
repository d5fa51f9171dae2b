"""The stacked optimizers against K standalone torch.optim runs, member by member."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lossbench.engine import optim as O

K = 4
SHAPES = {"w": (5, 3), "b": (3,)}
LRS = [0.1, 0.01, 0.003, 0.37]
WDS = [0.0, 1e-2, 0.3, 5e-4]
TIGHT = {"rtol": 1e-6, "atol": 1e-7}

CASES: dict[str, tuple[type, dict[str, Any], bool]] = {
    # name: (torch class, shared options, per-member weight decay on)
    "sgd": (torch.optim.SGD, {}, False),
    "sgd-momentum": (torch.optim.SGD, {"momentum": 0.9, "dampening": 0.1}, False),
    "sgd-nesterov-wd": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}, True),
    "adam": (torch.optim.Adam, {}, False),
    "adam-wd": (torch.optim.Adam, {"betas": (0.8, 0.99), "eps": 1e-6}, True),
    "adam-amsgrad-wd": (torch.optim.Adam, {"amsgrad": True}, True),
    "adamw": (torch.optim.AdamW, {}, True),
}


def _params(seed: int = 0, shapes: dict[str, tuple[int, ...]] = SHAPES) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn((K, *s), generator=gen).requires_grad_() for n, s in shapes.items()}


class Pair:
    """A stacked optimizer and K torch optimizers on clones of the members' slices."""

    def __init__(self, case: str, shapes: dict[str, tuple[int, ...]] = SHAPES) -> None:
        cls, options, wd_on = CASES[case]
        self.wds = WDS if wd_on else [0.0] * K
        self.params = _params(shapes=shapes)
        self.refs = [{n: p[k].detach().clone().requires_grad_() for n, p in self.params.items()} for k in range(K)]
        lr = torch.tensor(LRS, dtype=torch.float64)
        wd = torch.tensor(self.wds, dtype=torch.float64)
        self.opt = O.stacked_optimizer(cls, self.params, lr, wd, options)
        self.torch_opts = [
            cls(list(self.refs[k].values()), lr=LRS[k], weight_decay=self.wds[k], **options) for k in range(K)
        ]
        self.gen = torch.Generator().manual_seed(1)

    def grads(self) -> dict[str, torch.Tensor]:
        return {n: torch.randn(p.shape, generator=self.gen) for n, p in self.params.items()}

    def step(self, grads: dict[str, torch.Tensor], active: list[bool] | None = None) -> None:
        for n, g in grads.items():
            self.params[n].grad = g.clone()
        self.opt.step(None if active is None else torch.tensor(active))
        for k in range(K):
            if active is not None and not active[k]:
                continue
            for n, g in grads.items():
                self.refs[k][n].grad = g[k].clone()
            self.torch_opts[k].step()

    def check(self, members: range | list[int] = range(K), exact: bool = False) -> None:
        tol = {"rtol": 0.0, "atol": 0.0} if exact else TIGHT
        for k in members:
            for n, p in self.params.items():
                torch.testing.assert_close(p[k], self.refs[k][n].detach(), **tol, msg=lambda m: f"member {k} {n}: {m}")


@pytest.mark.parametrize("case", list(CASES))
def test_members_match_torch_optim(case: str) -> None:
    pair = Pair(case)
    for _ in range(20):
        pair.step(pair.grads())
    pair.check()


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
    reason="bit-identity verified on x86 CPU kernels only",
)
@pytest.mark.parametrize("case", list(CASES))
def test_members_bit_identical_on_cpu(case: str) -> None:
    # odd sizes exercise the kernels' vectorised body and scalar tail alike
    pair = Pair(case, shapes={"w": (17, 33), "b": (3,), "s": ()})
    for _ in range(20):
        pair.step(pair.grads())
    pair.check(exact=True)


def _state_snapshot(opt: O.StackedOptimizer, params: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    snap = {f"param.{n}": p[k].detach().clone() for n, p in params.items()}
    for n, st in opt.state.items():
        for key, t in st.items():
            snap[f"{n}.{key}"] = t[k].clone()
    return snap


@pytest.mark.parametrize("case", ["sgd-momentum", "adam-wd", "adam-amsgrad-wd", "adamw"])
def test_frozen_member_is_untouched_even_by_nan_grads(case: str) -> None:
    pair = Pair(case)
    frozen = 2
    active = [True] * K
    for i in range(20):
        if i == 5:
            active[frozen] = False
            snapshot = _state_snapshot(pair.opt, pair.params, frozen)
        grads = pair.grads()
        if not active[frozen]:
            for g in grads.values():
                g[frozen] = float("nan") if i % 2 else float("inf")
        pair.step(grads, active=active)
    after = _state_snapshot(pair.opt, pair.params, frozen)
    assert after.keys() == snapshot.keys()
    for key, value in snapshot.items():
        assert torch.equal(after[key], value), key
    assert pair.opt.state["w"]["step"].tolist() == [20.0, 20.0, 5.0, 20.0]
    pair.check(members=[k for k in range(K) if k != frozen])


@pytest.mark.parametrize("case", ["sgd-momentum", "adam"])
def test_member_that_starts_late_matches_a_fresh_torch_run(case: str) -> None:
    # Per-member state: the momentum buffer starts as the first gradient, Adam's bias
    # correction counts the member's own steps.
    pair = Pair(case)
    for i in range(12):
        pair.step(pair.grads(), active=[k != 1 or i >= 4 for k in range(K)])
    assert pair.opt.state["w"]["step"].tolist() == [12.0, 8.0, 12.0, 12.0]
    pair.check()


@pytest.mark.parametrize("case", ["sgd-nesterov-wd", "adam-wd", "adamw"])
def test_set_lr_between_steps_matches_param_group_lr(case: str) -> None:
    pair = Pair(case)
    new_lrs = [0.05, 0.002, 0.0001, 0.2]
    for i in range(20):
        if i == 8:
            pair.opt.set_lr(torch.tensor(new_lrs, dtype=torch.float64))
            for k, opt in enumerate(pair.torch_opts):
                opt.param_groups[0]["lr"] = new_lrs[k]
        pair.step(pair.grads())
    assert pair.opt.lr.tolist() == new_lrs
    pair.check()


def test_parameter_without_grad_is_skipped_like_torch() -> None:
    pair = Pair("adam-wd")
    for i in range(10):
        grads = pair.grads()
        if i < 3:  # "b" gets no gradient: torch skips it, and its step count lags
            del grads["b"]
            pair.params["b"].grad = None
            for ref in pair.refs:
                ref["b"].grad = None
        pair.step(grads)
    assert pair.opt.state["b"]["step"].tolist() == [7.0] * K
    pair.check()


def test_clip_grad_norm_matches_torch_per_member() -> None:
    params = _params()
    gen = torch.Generator().manual_seed(3)
    scale = torch.tensor([0.01, 1.0, 10.0, 100.0])  # some members clip, some do not
    grads = {n: torch.randn(p.shape, generator=gen) * scale.view(-1, *[1] * (p.dim() - 1)) for n, p in params.items()}
    for n, p in params.items():
        p.grad = grads[n].clone()
    norms = O.clip_grad_norm_(params, 1.5)
    for k in range(K):
        refs = [torch.zeros_like(p[k]).requires_grad_() for p in params.values()]
        for r, g in zip(refs, grads.values(), strict=True):
            r.grad = g[k].clone()
        expected = torch.nn.utils.clip_grad_norm_(refs, 1.5)
        torch.testing.assert_close(norms[k], expected, **TIGHT)
        for r, p in zip(refs, params.values(), strict=True):
            torch.testing.assert_close(p.grad[k], r.grad, **TIGHT)


def test_clip_grad_norm_leaves_inactive_members_alone() -> None:
    params = _params()
    for p in params.values():
        p.grad = torch.full_like(p, 3.0)
        p.grad[1] = float("nan")
    O.clip_grad_norm_(params, 1.0, active=torch.tensor([True, False, True, True]))
    for p in params.values():
        assert torch.isnan(p.grad[1]).all()
        assert torch.isfinite(p.grad[[0, 2, 3]]).all()
        assert (p.grad[[0, 2, 3]] < 3.0).all()


def test_factory_maps_torch_classes() -> None:
    lr = torch.full((K,), 0.1, dtype=torch.float64)
    wd = torch.zeros(K, dtype=torch.float64)
    assert set(O.SUPPORTED) == {torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW}
    assert type(O.stacked_optimizer(torch.optim.SGD, _params(), lr, wd, {})) is O.StackedSGD
    assert type(O.stacked_optimizer(torch.optim.Adam, _params(), lr, wd, {})) is O.StackedAdam
    adamw = O.stacked_optimizer(torch.optim.AdamW, _params(), lr, wd, {"amsgrad": True})
    assert type(adamw) is O.StackedAdamW
    assert adamw.options["decoupled_weight_decay"] is True


def test_unsupported_class_is_a_clear_error() -> None:
    lr = torch.full((K,), 0.1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"RMSprop.*not supported.*torch\.optim\.SGD.*Adam.*AdamW"):
        O.stacked_optimizer(torch.optim.RMSprop, _params(), lr, lr, {})
    with pytest.raises(ValueError, match="RMSprop"):
        O.check_options(torch.optim.RMSprop, {})


@pytest.mark.parametrize(
    ("cls", "options", "pattern"),
    [
        (torch.optim.Adam, {"maximize": True}, "maximize=True"),
        (torch.optim.Adam, {"foreach": True}, "foreach=True"),
        (torch.optim.AdamW, {"fused": True}, "fused=True"),
        (torch.optim.Adam, {"capturable": True}, "capturable=True"),
        (torch.optim.SGD, {"differentiable": True}, "differentiable=True"),
        (torch.optim.SGD, {"capturable": False}, "capturable"),
        (torch.optim.SGD, {"betas": (0.9, 0.99)}, "unknown option 'betas'"),
        (torch.optim.AdamW, {"decoupled_weight_decay": False}, "decoupled_weight_decay"),
        (torch.optim.Adam, {"lr": 0.1}, "lr is per member"),
        (torch.optim.SGD, {"nesterov": True}, "Nesterov"),
        (torch.optim.Adam, {"betas": (0.9, 1.0)}, "beta parameter at index 1"),
    ],
)
def test_rejected_options_name_the_problem(cls: type, options: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        O.check_options(cls, options)
    lr = torch.full((K,), 0.1, dtype=torch.float64)
    with pytest.raises(ValueError, match=pattern):
        O.stacked_optimizer(cls, _params(), lr, lr, options)


def test_default_flags_are_accepted() -> None:
    flags = {"maximize": False, "foreach": None, "fused": None, "capturable": False, "differentiable": False}
    O.check_options(torch.optim.Adam, flags)
    O.check_options(torch.optim.SGD, {k: v for k, v in flags.items() if k != "capturable"} | {"foreach": False})


def test_bad_member_values_are_rejected() -> None:
    opt = O.StackedSGD(_params(), torch.full((K,), 0.1, dtype=torch.float64), 0.0)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        opt.set_lr(torch.ones(K + 1))
    with pytest.raises(ValueError, match="lr"):
        opt.set_lr(torch.tensor([0.1, -0.1, 0.1, 0.1]))
    with pytest.raises(ValueError, match="active"):
        opt.step(active=torch.ones(K))  # not bool
    with pytest.raises(ValueError, match="members"):
        O.StackedSGD({"a": torch.zeros(K, 2), "b": torch.zeros(K + 1, 2)}, 0.1, 0.0)

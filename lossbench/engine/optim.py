"""Optimizers for stacked members: per-member learning rate and weight decay.

The batched engine trains K independent models at once. Their parameters are stacked
along a leading member axis (every tensor has shape ``(K, ...)``, as made by
:func:`torch.func.stack_module_state`), so one kernel updates all K members. Stock
:mod:`torch.optim` cannot drive such tensors: an optimizer takes one scalar ``lr`` and
``weight_decay`` per param group, while the members of a sweep differ in exactly these.
HFTA (Wang et al., "Horizontally Fused Training Array", MLSys 2021) solves this by
turning the per-model coefficients into tensors that broadcast against the fused
parameters; this module follows that idea with its own implementation.

Here ``lr`` and ``weight_decay`` are ``(K,)`` tensors, viewed as ``(K, 1, ..., 1)``
against each parameter. Everything else (momentum, betas, eps, ...) must be the same for
all members and is passed as the usual :mod:`torch.optim` keyword options.

The arithmetic follows torch's single-tensor ("for-loop") implementations
(``_single_tensor_sgd`` and ``_single_tensor_adam`` of torch 2.14, the default on CPU)
operation by operation, so member k's trajectory equals a standalone
``torch.optim.SGD/Adam/AdamW`` run with member k's ``lr`` and ``weight_decay``. On CPU
with float32 or float64 parameters it is bit-identical in practice:

* a per-member scalar is computed in float64, as Python computes torch's scalar
  arithmetic, and then cast to the parameter dtype, as the kernel casts a Python scalar;
* ``x.add(y, alpha=a)`` is a fused multiply-add in torch's CPU (and CUDA) kernel, and so
  is ``torch.addcmul(x, y, a_tensor)``, so that is what replaces it;
* ``x.addcdiv_(t1, t2, value=v)`` is computed as ``x + (v * t1) / t2``, its kernel's
  order of operations.

The one place where it can differ in the last float64 bit is Adam's bias correction:
``beta ** step`` and ``** 0.5`` are evaluated by torch on the member tensor (Sleef
``pow``, ``sqrt``) rather than by Python's ``pow``; after the cast to float32 this almost
never shows. Learning rates must reach this module as float64 (or Python floats): a
float32 ``lr`` tensor has already rounded 0.1 to 0.100000001490116.

``step(active)`` leaves members whose ``active`` entry is False exactly unchanged,
parameters and optimizer state, even when their gradients are NaN or infinite (the
update is selected with :func:`torch.where`, never multiplied by zero).

Over 500 lines on purpose: three optimizers (SGD, Adam, AdamW) that must match torch.optim
bit for bit, each written out in full so the match can be read line by line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = [
    "SUPPORTED",
    "StackedAdam",
    "StackedAdamW",
    "StackedOptimizer",
    "StackedSGD",
    "check_options",
    "clip_grad_norm_",
    "stacked_optimizer",
]

MemberValues = Tensor | Sequence[float] | float
"""A per-member hyperparameter: a ``(K,)`` tensor, K numbers, or one number for all."""

# torch.optim flags that select another implementation or change the maths. Only the
# defaults are accepted: the default single-tensor path is what this module reproduces
# (foreach/fused False mean that same path, so they are accepted too).
_FLAG_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "maximize": (False,),
    "foreach": (None, False),
    "fused": (None, False),
    "capturable": (False,),
    "differentiable": (False,),
}


def _member_view(t: Tensor, like: Tensor) -> Tensor:
    """A ``(K,)`` tensor viewed as ``(K, 1, ..., 1)`` against ``like``, in its dtype."""
    return t.to(dtype=like.dtype).view((t.shape[0],) + (1,) * (like.dim() - 1))


def _member_mask(mask: Tensor, like: Tensor) -> Tensor:
    """A ``(K,)`` bool tensor viewed as ``(K, 1, ..., 1)`` against ``like``."""
    return mask.view((mask.shape[0],) + (1,) * (like.dim() - 1))


class StackedOptimizer:
    """Base class: K members' parameters stacked along dim 0, per-member lr and weight decay.

    Args:
        params: name -> stacked tensor of shape ``(K, ...)``; gradients are read from
            ``.grad`` (a tensor whose ``.grad`` is None is skipped, as torch does).
        lr: the members' learning rates, shape ``(K,)``.
        weight_decay: the members' weight decays, shape ``(K,)``.
        **options: the torch.optim options shared by all members.
    """

    #: the torch.optim class whose single-tensor maths this class reproduces
    torch_class: ClassVar[type[torch.optim.Optimizer]]
    #: the options (other than lr and weight_decay) with their torch defaults
    option_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        params: Mapping[str, Tensor],
        lr: MemberValues,
        weight_decay: MemberValues,
        **options: Any,
    ) -> None:
        self.options: dict[str, Any] = self.check_options(options)
        self.params: dict[str, Tensor] = dict(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got no parameters")
        seen: dict[int, str] = {}
        k: int | None = None
        device: torch.device | None = None
        for name, p in self.params.items():
            if not isinstance(p, Tensor):
                raise ValueError(f"parameter {name!r} is a {type(p).__name__}, not a tensor")
            if id(p) in seen:
                raise ValueError(f"parameters {seen[id(p)]!r} and {name!r} are the same tensor")
            seen[id(p)] = name
            if not p.is_floating_point():
                raise ValueError(f"parameter {name!r} has dtype {p.dtype}; stacked optimizers need real floating point")
            if p.dim() == 0:
                raise ValueError(f"parameter {name!r} is a scalar; stacked parameters have shape (K, ...)")
            if k is None:
                k, device = p.shape[0], p.device
            elif p.shape[0] != k:
                raise ValueError(f"parameter {name!r} stacks {p.shape[0]} members, the others {k}")
            elif p.device != device:
                raise ValueError(f"parameter {name!r} is on {p.device}, the others on {device}")
        assert k is not None and device is not None
        self.num_members: int = k
        self.device: torch.device = device
        self._lr: Tensor = self._member_values(lr, "lr")
        self._weight_decay: Tensor = self._member_values(weight_decay, "weight_decay")
        # Checked once here (a device sync), so that step() needs no sync.
        self._any_weight_decay: bool = bool((self._weight_decay != 0).any())
        #: name -> that parameter's state; every entry has a (K,) "step" count
        self.state: dict[str, dict[str, Tensor]] = {}
        self._calls = 0  # step() calls so far

    # ------------------------------------------------------------------ options
    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``options`` like the torch constructor; return them with defaults filled."""
        name = cls.torch_class.__name__
        for key in ("lr", "weight_decay"):
            if key in options:
                raise ValueError(
                    f"{key} is per member in the stacked {name}: pass it as the (K,) {key} argument, not as an option"
                )
        known = set(cls.option_defaults) | set(_FLAG_DEFAULTS)
        for key, value in options.items():
            if key not in known:
                raise ValueError(
                    f"unknown option {key!r} for the stacked {name}; it accepts {', '.join(sorted(known))}"
                )
            if key in _FLAG_DEFAULTS and value not in _FLAG_DEFAULTS[key]:
                allowed = " or ".join(repr(v) for v in _FLAG_DEFAULTS[key])
                raise ValueError(
                    f"option {key}={value!r} is not supported by the stacked {name} (only {allowed}): "
                    "it reproduces torch's default single-tensor implementation"
                )
        out = dict(cls.option_defaults)
        out.update({k: v for k, v in options.items() if k in cls.option_defaults})
        cls._check_values(out)
        return out

    @classmethod
    def _check_values(cls, options: dict[str, Any]) -> None:
        """Range checks on the shared options (subclasses mirror torch's checks)."""

    # --------------------------------------------------------------- hyperparams
    def _member_values(self, values: MemberValues, what: str) -> Tensor:
        k = self.num_members
        if isinstance(values, Tensor):
            t = values.detach().to(device=self.device, dtype=torch.float64)
            if t.dim() == 0:
                t = t.expand(k)
        elif isinstance(values, int | float):
            t = torch.full((k,), float(values), dtype=torch.float64, device=self.device)
        else:
            t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        if t.shape != (k,):
            raise ValueError(f"{what} must have one value per member, shape ({k},); got shape {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
            raise ValueError(f"invalid {what}: every member's value must be finite and >= 0, got {t.tolist()}")
        return t.clone()

    @property
    def lr(self) -> Tensor:
        """The members' learning rates, a float64 ``(K,)`` tensor (a copy)."""
        return self._lr.clone()

    @property
    def weight_decay(self) -> Tensor:
        """The members' weight decays, a float64 ``(K,)`` tensor (a copy)."""
        return self._weight_decay.clone()

    def set_lr(self, lr: MemberValues) -> None:
        """Set the members' learning rates (used from the next step on), like changing
        ``param_group["lr"]`` of K torch optimizers. Pass float64 or Python floats."""
        self._lr = self._member_values(lr, "lr")

    # --------------------------------------------------------------------- step
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients, like :meth:`torch.optim.Optimizer.zero_grad`."""
        for p in self.params.values():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                if p.grad.grad_fn is not None:
                    p.grad.detach_()
                else:
                    p.grad.requires_grad_(False)
                p.grad.zero_()

    def _active_mask(self, active: Tensor | None) -> Tensor | None:
        if active is None:
            return None
        if not isinstance(active, Tensor) or active.dtype != torch.bool:
            raise ValueError("active must be a bool tensor of shape (K,)")
        if active.shape != (self.num_members,):
            raise ValueError(f"active must have shape ({self.num_members},); got {tuple(active.shape)}")
        return active.to(self.device)

    @torch.no_grad()
    def step(self, active: Tensor | None = None) -> None:
        """One update of every member (or of the members where ``active`` is True).

        Members where ``active`` is False keep their parameters and state bit for bit,
        whatever their gradients hold.
        """
        mask = self._active_mask(active)
        self._calls += 1
        for name, p in self.params.items():
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise ValueError(f"parameter {name!r} has a sparse gradient; stacked optimizers need dense ones")
            if grad.shape != p.shape:
                raise ValueError(f"parameter {name!r} has shape {tuple(p.shape)} but its grad {tuple(grad.shape)}")
            state = self.state.get(name)
            if state is None:
                state = self.state[name] = self._init_state(p)
            self._update(p, grad, state, mask)

    def _init_state(self, p: Tensor) -> dict[str, Tensor]:
        # torch keeps Adam's step as a float32 CPU tensor (float64 under a float64 default
        # dtype); the count is an exact integer either way. Here it is per member.
        step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        return {"step": torch.zeros(self.num_members, dtype=step_dtype, device=p.device)}

    def _update(self, p: Tensor, grad: Tensor, state: dict[str, Tensor], mask: Tensor | None) -> None:
        raise NotImplementedError

    @staticmethod
    def _commit(target: Tensor, new: Tensor, mask_b: Tensor | None) -> None:
        """Write ``new`` into ``target`` for the active members only."""
        if mask_b is None:
            target.copy_(new)
        else:
            target.copy_(torch.where(mask_b, new, target))

    @staticmethod
    def _count(step: Tensor, mask: Tensor | None) -> None:
        if mask is None:
            step.add_(1)
        else:
            step.add_(mask.to(step.dtype))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}(members={self.num_members}, params={len(self.params)}, {opts})"


class StackedSGD(StackedOptimizer):
    """``torch.optim.SGD`` per member (options: momentum, dampening, nesterov)."""

    torch_class = torch.optim.SGD
    option_defaults: ClassVar[dict[str, Any]] = {"momentum": 0.0, "dampening": 0.0, "nesterov": False}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        if "capturable" in options:  # torch.optim.SGD has no such option
            raise ValueError("unknown option 'capturable' for the stacked SGD (torch.optim.SGD has none)")
        return super().check_options(options)

    @classmethod
    def _check_values(cls, options: dict[str, Any]) -> None:
        momentum, dampening = float(options["momentum"]), float(options["dampening"])
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if options["nesterov"] and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        options["momentum"], options["dampening"] = momentum, dampening
        options["nesterov"] = bool(options["nesterov"])

    def _init_state(self, p: Tensor) -> dict[str, Tensor]:
        state = super()._init_state(p)
        if self.options["momentum"] != 0:
            # torch creates the buffer at the first step as a copy of the gradient; the
            # (K,) step count says which members have taken that first step.
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _update(self, p: Tensor, grad: Tensor, state: dict[str, Tensor], mask: Tensor | None) -> None:
        momentum, dampening = self.options["momentum"], self.options["dampening"]
        mask_b = None if mask is None else _member_mask(mask, p)
        if self._any_weight_decay:
            # torch: grad = grad.add(param, alpha=weight_decay) -- a fused multiply-add
            grad = torch.addcmul(grad, p, _member_view(self._weight_decay, p))
        if momentum != 0:
            buf = state["momentum_buffer"]
            # torch: buf = grad.clone() at the first step, else buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            later = buf.mul(momentum).add_(grad, alpha=1 - dampening)
            first = _member_mask(state["step"] == 0, p)
            new_buf = torch.where(first, grad, later)
            grad = grad.add(new_buf, alpha=momentum) if self.options["nesterov"] else new_buf
            self._commit(buf, new_buf, mask_b)
        # torch: param.add_(grad, alpha=-lr)
        new_p = torch.addcmul(p, grad, _member_view(-self._lr, p))
        self._commit(p, new_p, mask_b)
        self._count(state["step"], mask)


class StackedAdam(StackedOptimizer):
    """``torch.optim.Adam`` per member (options: betas, eps, amsgrad, decoupled_weight_decay).

    ``amsgrad=True`` is supported.
    """

    torch_class = torch.optim.Adam
    option_defaults: ClassVar[dict[str, Any]] = {
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "amsgrad": False,
        "decoupled_weight_decay": False,
    }

    @classmethod
    def _check_values(cls, options: dict[str, Any]) -> None:
        betas = options["betas"]
        if not isinstance(betas, Sequence | Tensor) or len(betas) != 2:
            raise ValueError(f"betas must be a pair of floats, got {betas!r}")
        b1, b2 = (float(b) for b in betas)
        eps = float(options["eps"])
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= b1 < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {b1}")
        if not 0.0 <= b2 < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {b2}")
        options["betas"], options["eps"] = (b1, b2), eps
        options["amsgrad"] = bool(options["amsgrad"])
        options["decoupled_weight_decay"] = bool(options["decoupled_weight_decay"])

    # bias corrections for steps 1..n, computed in Python exactly as torch does (torch on
    # the device would use sqrt for ** 0.5 and Sleef's pow, which differ from Python's pow
    # in the last bit now and then); built on first use, per instance
    _bias_tables: tuple[Tensor, Tensor] | None = None

    def _bias_corrections(self, state: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-member ``(bias_correction1, bias_correction2_sqrt)`` for the step being taken."""
        beta1, beta2 = self.options["betas"]
        # Each step() call raises a member's count by at most one, so no count exceeds
        # the number of calls: a table of that many entries covers every member.
        needed = self._calls
        have = 0 if self._bias_tables is None else self._bias_tables[0].shape[0]
        if have < needed:
            size = max(1024, 2 * have, needed)
            ns = [float(n) for n in range(1, size + 1)]
            bc1 = torch.tensor([1 - beta1**n for n in ns], dtype=torch.float64)
            bc2_sqrt = torch.tensor([(1 - beta2**n) ** 0.5 for n in ns], dtype=torch.float64)
            self._bias_tables = (bc1.to(self.device), bc2_sqrt.to(self.device))
        assert self._bias_tables is not None
        index = state["step"].long()  # the count before this step's increment: entry step + 1
        return self._bias_tables[0][index], self._bias_tables[1][index]

    def _init_state(self, p: Tensor) -> dict[str, Tensor]:
        state = super()._init_state(p)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if self.options["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _update(self, p: Tensor, grad: Tensor, state: dict[str, Tensor], mask: Tensor | None) -> None:
        beta1, beta2 = self.options["betas"]
        eps = self.options["eps"]
        mask_b = None if mask is None else _member_mask(mask, p)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

        new_p = p
        if self._any_weight_decay:
            if self.options["decoupled_weight_decay"]:
                # torch: param.mul_(1 - lr * weight_decay), the factor in Python float64
                new_p = p.mul(_member_view(1 - self._lr * self._weight_decay, p))
            else:
                # torch: grad = grad.add(param, alpha=weight_decay)
                grad = torch.addcmul(grad, p, _member_view(self._weight_decay, p))

        new_exp_avg = exp_avg.lerp(grad, 1 - beta1)
        new_exp_avg_sq = exp_avg_sq.mul(beta2).addcmul_(grad, grad, value=1 - beta2)

        # torch: step_t += 1; step = step_t.item(); bias_correction1 = 1 - beta1**step;
        # step_size = lr / bias_correction1; bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        # -- Python float64 arithmetic, looked up per member from tables Python computed.
        bias_correction1, bias_correction2_sqrt = self._bias_corrections(state)
        step_size = self._lr / bias_correction1

        if self.options["amsgrad"]:
            max_exp_avg_sq = state["max_exp_avg_sq"]
            new_max = torch.maximum(max_exp_avg_sq, new_exp_avg_sq)
            denom = (new_max.sqrt() / _member_view(bias_correction2_sqrt, p)).add_(eps)
            self._commit(max_exp_avg_sq, new_max, mask_b)
        else:
            denom = (new_exp_avg_sq.sqrt() / _member_view(bias_correction2_sqrt, p)).add_(eps)

        # torch: param.addcdiv_(exp_avg, denom, value=-step_size), i.e. param + (v * exp_avg) / denom
        new_p = new_p + new_exp_avg.mul(_member_view(-step_size, p)).div_(denom)

        self._commit(exp_avg, new_exp_avg, mask_b)
        self._commit(exp_avg_sq, new_exp_avg_sq, mask_b)
        self._commit(p, new_p, mask_b)
        self._count(state["step"], mask)


class StackedAdamW(StackedAdam):
    """``torch.optim.AdamW`` per member: Adam with decoupled weight decay (options: betas, eps, amsgrad).

    In torch 2.14 ``AdamW`` is ``Adam(..., decoupled_weight_decay=True)``; so is this.
    """

    torch_class = torch.optim.AdamW
    option_defaults: ClassVar[dict[str, Any]] = {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        out = super().check_options(options)
        out["decoupled_weight_decay"] = True
        return out

    @classmethod
    def _check_values(cls, options: dict[str, Any]) -> None:
        options.setdefault("decoupled_weight_decay", True)
        super()._check_values(options)


_STACKED: dict[type, type[StackedOptimizer]] = {
    torch.optim.SGD: StackedSGD,
    torch.optim.Adam: StackedAdam,
    torch.optim.AdamW: StackedAdamW,
}

#: the torch.optim classes that have a stacked counterpart
SUPPORTED: tuple[type, ...] = tuple(_STACKED)


def _stacked_class(optimizer_class: type) -> type[StackedOptimizer]:
    # Exact match: a subclass of Adam may change the maths (AdamW itself is one).
    cls = _STACKED.get(optimizer_class)
    if cls is None:
        name = getattr(optimizer_class, "__qualname__", repr(optimizer_class))
        module = getattr(optimizer_class, "__module__", "")
        names = ", ".join(f"torch.optim.{c.__name__}" for c in SUPPORTED)
        raise ValueError(
            f"optimizer {module}.{name} is not supported by the batched engine, which needs per-member "
            f"learning rates; supported: {names}"
        )
    return cls


def check_options(optimizer_class: type, options: Mapping[str, Any]) -> None:
    """Raise ValueError if ``optimizer_class`` or its ``options`` cannot be stacked."""
    _stacked_class(optimizer_class).check_options(options)


def stacked_optimizer(
    optimizer_class: type,
    params: Mapping[str, Tensor],
    lr: MemberValues,
    weight_decay: MemberValues,
    options: Mapping[str, Any],
) -> StackedOptimizer:
    """The stacked counterpart of ``optimizer_class`` (torch.optim.SGD, Adam or AdamW).

    Raises ValueError for any other class, and for options that are per member
    (lr, weight_decay), unknown, or non-default flags (maximize, foreach, fused, ...).
    """
    cls = _stacked_class(optimizer_class)
    cls.check_options(options)  # before the call: an "lr" option would be a TypeError there
    return cls(params, lr, weight_decay, **dict(options))


@torch.no_grad()
def clip_grad_norm_(params: Mapping[str, Tensor], max_norm: float, active: Tensor | None = None) -> Tensor:
    """Per-member :func:`torch.nn.utils.clip_grad_norm_` (2-norm) on stacked gradients.

    Member k's gradients are scaled as ``clip_grad_norm_(member_k_params, max_norm)``
    would scale them: by ``min(1, max_norm / (total_norm + 1e-6))``, where total_norm is
    the 2-norm of all of member k's gradients. Members where ``active`` is False keep
    their gradients untouched. Returns the members' total norms, shape ``(K,)``.
    """
    grads = [p.grad for p in params.values() if p.grad is not None]
    if not grads:
        first = next(iter(params.values()), None)
        if first is None:
            return torch.zeros(0)
        return torch.zeros(first.shape[0], device=first.device)
    k, device = grads[0].shape[0], grads[0].device
    if any(g.dim() == 0 or g.shape[0] != k for g in grads):
        raise ValueError("every stacked gradient must have the same leading member dimension")
    if active is not None:
        if active.dtype != torch.bool or active.shape != (k,):
            raise ValueError(f"active must be a bool tensor of shape ({k},)")
        active = active.to(device)
    max_norm = float(max_norm)
    # torch: norms = [vector_norm(g) for g]; total = vector_norm(stack(norms))
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), 2, dim=1) for g in grads], dim=1)
    total_norm = torch.linalg.vector_norm(norms, 2, dim=1)
    # torch: clip_coef = max_norm / (total_norm + 1e-6), and a Python number divided by a
    # tensor is tensor.reciprocal() * number
    clip_coef = (total_norm + 1e-6).reciprocal() * max_norm
    clip_coef_clamped = torch.clamp(clip_coef, max=1.0)
    for g in grads:
        coef = _member_view(clip_coef_clamped, g)
        scaled = g.mul(coef)
        if active is None:
            g.copy_(scaled)
        else:
            g.copy_(torch.where(_member_mask(active, g), scaled, g))
    return total_norm

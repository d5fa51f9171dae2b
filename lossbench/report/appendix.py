"""The shape of each compared loss and of its gradient, computed with torch.autograd.

Regression losses are drawn against the residual ``r = f(x) - y`` (target 0); the
gradient is ``dL/df(x)``. Classification losses are drawn against the probability ``p``
the model gives the true class: two logits ``[s, 0]`` with ``s = log(p / (1 - p))`` and
target class 0 (binary losses: one logit ``s``, target 1), the gradient is ``dL/ds``.
This shows the claims of the source article: L1's constant gradient, MSE's growing one,
Huber's bounded one, focal loss's down-weighting of easy (high ``p``) examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..registry import create_loss
from .table import combo_terms, loss_spec
from .words import APPENDIX_SKIPPED

RESIDUALS = np.linspace(-3.0, 3.0, 241)
PROBABILITIES = np.linspace(0.01, 0.99, 197)


@dataclass
class Shapes:
    """One family's axis, and per loss label its curves: (loss per sample, gradient) at each x."""

    x: np.ndarray
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class AppendixData:
    regression: Shapes
    classification: Shapes
    skipped: dict[str, str] = field(default_factory=dict)  # loss label -> why it is not drawn


def _family(loss: str, params: Mapping[str, Any]) -> str | None:
    tasks = set(loss_spec(loss).tasks)
    if loss == "combo":
        tasks = {t for name, _, _ in combo_terms(params) for t in loss_spec(name).tasks}
    if tasks and tasks <= {"regression"}:
        return "regression"
    return "classification" if tasks & {"multiclass", "binary"} else None


def _curve(module: torch.nn.Module, family: str, tasks: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The loss per sample, and its gradient, along the family's axis (see the module's docstring)."""
    if family == "regression":
        x = torch.tensor(RESIDUALS, dtype=torch.float32, requires_grad=True)
        per = module(x, torch.zeros_like(x))
    else:
        p = torch.tensor(PROBABILITIES, dtype=torch.float32)
        x = torch.log(p / (1 - p)).requires_grad_(True)
        if "multiclass" in tasks:
            per = module(torch.stack([x, torch.zeros_like(x)], dim=1), torch.zeros(x.shape[0], dtype=torch.long))
        else:
            per = module(x, torch.ones_like(x))
        per = per.reshape(per.shape[0], -1).sum(dim=1)
    (grad,) = torch.autograd.grad(per.sum(), x)
    return per.detach().numpy().astype(float), grad.numpy().astype(float)


def compute(losses: Mapping[str, tuple[str, Mapping[str, Any]]]) -> AppendixData:
    """Curves for ``{label: (registered loss, hyperparameters)}``; what cannot be drawn is skipped with a reason."""
    out = AppendixData(Shapes(RESIDUALS), Shapes(PROBABILITIES))
    for label, (loss, params) in losses.items():
        names = [loss, *(name for name, _, _ in combo_terms(params))] if loss == "combo" else [loss]
        if any(loss_spec(n) is None for n in names):
            out.skipped[label] = APPENDIX_SKIPPED["unregistered"]
            continue
        spec, family = loss_spec(loss), _family(loss, params)
        if family is None:
            out.skipped[label] = APPENDIX_SKIPPED["no_axis"].format(tasks="/".join(spec.tasks))
            continue
        known = {p.name for p in spec.params}
        kw = {k: v for k, v in params.items() if k in known and k not in ("reduction", "class_counts")}
        if "class_counts" in known and family == "classification":
            kw["class_counts"] = [100, 100]  # balanced two-class counts: the curve of the plain loss
        try:
            module = create_loss(loss, reduction="none", **kw)
            shapes = out.regression if family == "regression" else out.classification
            shapes.curves[label] = _curve(module, family, getattr(module, "tasks", spec.tasks))
        except Exception as exc:  # noqa: BLE001 - a loss that cannot be drawn must not break the report
            out.skipped[label] = APPENDIX_SKIPPED["failed"].format(error=f"{type(exc).__name__}: {exc}")
    return out

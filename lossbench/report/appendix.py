"""The shape of each compared loss and of its gradient, computed with torch.autograd.

Regression losses are drawn against the residual ``r = f(x) - y`` (target 0); the
gradient is ``dL/df(x)``. Classification losses are drawn against the probability ``p``
the model gives the true class: two logits ``[s, 0]`` with ``s = log(p / (1 - p))`` and
target class 0 (binary losses: one logit ``s``, target 1), the gradient is ``dL/ds``.
This shows the claims of the source article: L1's constant gradient, MSE's growing one,
Huber's bounded one, focal loss's down-weighting of easy (high ``p``) examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..registry import create_loss
from .table import combo_terms, loss_spec
from .words import APPENDIX_SKIPPED

RESIDUALS = np.linspace(-3.0, 3.0, 241)
PROBABILITIES = np.linspace(0.01, 0.99, 197)
CLASSIFICATION_TASKS = ("multiclass", "binary")


@dataclass
class Shapes:
    """Curves per loss label for one family, plus the losses left out and why."""

    x: np.ndarray
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class AppendixData:
    regression: Shapes
    classification: Shapes
    skipped: dict[str, str] = field(default_factory=dict)  # loss -> reason


def _family(loss: str, params: Mapping[str, Any]) -> str | None:
    tasks = set(loss_spec(loss).tasks)
    if loss == "combo":
        tasks = {t for name, _, _ in combo_terms(params) for t in loss_spec(name).tasks}
    if tasks and tasks <= {"regression"}:
        return "regression"
    if tasks & set(CLASSIFICATION_TASKS):
        return "classification"
    return None


def _build(loss: str, params: Mapping[str, Any], family: str) -> torch.nn.Module:
    spec = loss_spec(loss)
    known = {p.name for p in spec.params}
    kw = {k: v for k, v in params.items() if k in known and k not in ("reduction", "class_counts")}
    if "class_counts" in known and family == "classification":
        kw["class_counts"] = [100, 100]  # balanced two-class counts: the curve of the plain loss
    return create_loss(loss, reduction="none", **kw)


def _regression_curve(module: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    pred = torch.tensor(RESIDUALS, dtype=torch.float32, requires_grad=True)
    per = module(pred, torch.zeros_like(pred))
    (grad,) = torch.autograd.grad(per.sum(), pred)
    return per.detach().numpy().astype(float), grad.numpy().astype(float)


def _classification_curve(module: torch.nn.Module, loss: str) -> tuple[np.ndarray, np.ndarray]:
    p = torch.tensor(PROBABILITIES, dtype=torch.float32)
    s = torch.log(p / (1 - p)).requires_grad_(True)
    tasks = getattr(module, "tasks", loss_spec(loss).tasks)
    if "multiclass" in tasks:
        logits = torch.stack([s, torch.zeros_like(s)], dim=1)
        per = module(logits, torch.zeros(s.shape[0], dtype=torch.long))
    else:
        per = module(s, torch.ones_like(s))
    per = per.reshape(per.shape[0], -1).sum(dim=1) if per.dim() > 1 else per
    (grad,) = torch.autograd.grad(per.sum(), s)
    return per.detach().numpy().astype(float), grad.numpy().astype(float)


def compute(losses: Mapping[str, tuple[str, Mapping[str, Any]]]) -> AppendixData:
    """Curves for ``{label: (registered loss, hyperparameters)}``; what cannot be drawn is skipped with a reason."""
    out = AppendixData(Shapes(RESIDUALS), Shapes(PROBABILITIES))
    for label, (loss, params) in losses.items():
        names = [loss, *(name for name, _, _ in combo_terms(params))] if loss == "combo" else [loss]
        if any(loss_spec(n) is None for n in names):
            out.skipped[label] = APPENDIX_SKIPPED["unregistered"]
            continue
        family = _family(loss, params)
        if family is None:
            out.skipped[label] = APPENDIX_SKIPPED["no_axis"].format(tasks="/".join(loss_spec(loss).tasks))
            continue
        try:
            module = _build(loss, params, family)
            if family == "regression":
                out.regression.curves[label] = _regression_curve(module)
            else:
                out.classification.curves[label] = _classification_curve(module, loss)
        except Exception as exc:  # noqa: BLE001 - a loss that cannot be drawn must not break the report
            out.skipped[label] = APPENDIX_SKIPPED["failed"].format(error=f"{type(exc).__name__}: {exc}")
    return out

"""``combo``: a weighted sum of registered losses.

The source document's fourth rule for choosing a loss: combine different losses
sensibly, so that each contributes its strength (its §4, point 4). ``combo`` builds each
term with :func:`lossbench.create_loss`, so every term's parameters are validated by its
own spec, and an error names the term it came from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..constraints import Interval
from ..errors import LossbenchError, ParameterError
from ..registry import TASKS, Param, create_loss, loss_info, register_loss

_TERMS_FORMAT = (
    "a list of terms such as [{name: cross_entropy, weight: 1.0}, {name: focal, weight: 0.5, gamma: 2}], "
    "or a mapping from loss name to weight such as {cross_entropy: 1.0, focal: 0.5}"
)
_WEIGHT = Interval(float, 0)  # a term's weight in the sum


def _bad_terms(value: Any, why: str) -> ParameterError:
    return ParameterError(f"The 'terms' parameter of combo must be {_TERMS_FORMAT}. Got {value!r} instead: {why}.")


def _label(index: int, name: Any) -> str:
    return f"combo term {index} ({name!r})"


def normalise_terms(value: Any) -> tuple[dict[str, Any], ...]:
    """Turn the accepted spellings of ``terms`` into ``({"name", "weight", "params"}, ...)``.

    Accepted: a sequence of mappings, each with ``name``, an optional ``weight`` (default
    1) and the loss's own parameters; or a mapping from loss name to a weight, or to a
    mapping of the term's ``weight`` and parameters. A loss's own parameters may also go
    under a ``params`` key, which is how to reach one that is itself called ``weight``
    (the class weights of ``cross_entropy``). Weights are validated here (floats
    ``>= 0``); each loss validates its own parameters when it is built.
    """
    entries: list[tuple[Any, dict[str, Any]]] = []
    if isinstance(value, Mapping):
        for name, spec in value.items():
            entries.append((name, dict(spec) if isinstance(spec, Mapping) else {"weight": spec}))
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for i, item in enumerate(value, start=1):
            if not isinstance(item, Mapping) or "name" not in item:
                raise _bad_terms(value, f"term {i} is {item!r}, not a mapping with a 'name'")
            fields = dict(item)
            entries.append((fields.pop("name"), fields))
    else:
        raise _bad_terms(value, "it is neither a list nor a mapping")
    if not entries:
        raise _bad_terms(value, "there are no terms")
    terms = []
    for i, (name, fields) in enumerate(entries, start=1):
        if not isinstance(name, str):
            raise _bad_terms(value, f"term {i} has the name {name!r}, not a string")
        label = _label(i, name)
        weight = _WEIGHT.check("weight", fields.pop("weight", 1.0), owner=label)
        nested = fields.pop("params", None) or {}
        if not isinstance(nested, Mapping):
            raise ParameterError(f"{label}: 'params' must be a mapping of {name}'s parameters, got {nested!r}.")
        twice = sorted(set(fields) & set(nested))
        if twice:
            raise ParameterError(f"{label}: {', '.join(map(repr, twice))} is given both inline and under 'params'.")
        params = {**fields, **nested}
        if "reduction" in params:
            raise ParameterError(
                f"{label}: set 'reduction' on combo itself, not on its terms; every term uses "
                f"combo's reduction so that the terms can be added."
            )
        terms.append({"name": name, "weight": weight, "params": params})
    if terms and not any(t["weight"] > 0 for t in terms):
        raise _bad_terms(value, "every weight is 0, so the loss is 0 and nothing trains; give a term a weight > 0")
    return tuple(terms)


def _check_terms(value: Any) -> Any:
    normalise_terms(value)  # raises on a malformed value; the module normalises it again
    return value


@register_loss(
    "combo",
    tasks=TASKS,  # the module's own ``tasks`` is the intersection of its terms' tasks
    params=[
        Param("terms", None, "any", check=_check_terms, help="the losses to add and their weights"),
        Param(
            "class_counts",
            None,
            "counts",
            help="training samples per class, passed to the terms that use them",
        ),
    ],
    description="A weighted sum of registered losses, so each contributes its strength.",
    reference="Source document §4, point 4 (combine losses so each contributes its strength)",
    example={
        "terms": [
            {"name": "cross_entropy", "weight": 1.0},
            {"name": "focal", "weight": 0.5, "gamma": 2.0},
        ]
    },
)
class ComboLoss(nn.Module):
    """``sum_i w_i L_i(pred, target)`` over the terms (``nn.ModuleList``, so learnable terms train).

    All terms get combo's ``reduction``. ``tasks`` is the set of tasks every term fits.
    """

    def __init__(
        self,
        *,
        terms: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
        class_counts: Sequence[float] | None = None,
        reduction: str = "mean",
    ):
        super().__init__()
        if terms is None:
            raise ParameterError(
                f"The 'terms' parameter of combo must be {_TERMS_FORMAT}. Got None instead: "
                f"combo needs at least one term."
            )
        modules, weights, names = [], [], []
        for i, term in enumerate(normalise_terms(terms), start=1):
            name, params = term["name"], dict(term["params"])
            hint = ""
            try:
                spec = loss_info(name)
                if params.get("class_counts") is None and any(p.name == "class_counts" for p in spec.params):
                    params["class_counts"] = class_counts
                if "class_counts" in spec.needs and params.get("class_counts") is None:  # create_loss refuses that
                    hint = " Or give combo class_counts: it passes them to the terms that use them."
                module = create_loss(name, reduction=reduction, **params)
            except LossbenchError as exc:
                raise type(exc)(f"{_label(i, name)}: {exc}{hint}") from exc
            modules.append(module)
            weights.append(float(term["weight"]))
            names.append(spec.name)
        self.terms = nn.ModuleList(modules)
        self.weights = tuple(weights)
        self.term_names = tuple(names)
        self.reduction = reduction
        self.tasks = _shared_tasks(self.term_names, [m.tasks for m in modules])

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for weight, term in zip(self.weights, self.terms, strict=True):
            part = weight * term(pred, target)
            total = part if total is None else total + part
        assert total is not None
        return total

    def extra_repr(self) -> str:
        parts = " + ".join(f"{w:g} * {n}" for w, n in zip(self.weights, self.term_names, strict=True))
        return f"{parts}, reduction={self.reduction!r}"


def _shared_tasks(names: Sequence[str], tasks: Sequence[Sequence[str]]) -> tuple[str, ...]:
    shared = [t for t in tasks[0] if all(t in other for other in tasks[1:])]
    if not shared:
        listing = ", ".join(
            f"term {i} {n!r} is for {'/'.join(t)}" for i, (n, t) in enumerate(zip(names, tasks, strict=True), start=1)
        )
        raise ParameterError(
            f"The combo terms share no task, so they cannot be added: {listing}. "
            f"Combine losses that take the same kind of prediction and target."
        )
    return tuple(shared)

"""The ``search`` settings and each loss's search space, checked before any trial runs.

A search space maps config keys (``loss.gamma``, ``optimizer.lr``) to a dimension in the
form :class:`lossbench.registry.Search` writes: ``{"type": "float"|"int", "low", "high",
"log"}`` or ``{"type": "categorical", "choices": [...]}``. A loss's space is its declared
one (:attr:`LossSpec.search_space`), changed by ``search.space``, plus ``optimizer.lr``
with ``search.tune_lr``, less the keys the user set on the command line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..constraints import BOOL, Interval, Options
from ..errors import LossbenchError, ParameterError

LR_DIMENSION: dict[str, Any] = {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
_TYPES = ("float", "int", "categorical")
_FINITE = Interval(float, -math.inf, math.inf, "neither")
_COUNT = Interval(int, 0)
_EXAMPLE = "{type: float, low: 0.0, high: 5.0} or {type: categorical, choices: [a, b]}"


@dataclass(frozen=True)
class SearchSettings:
    """The ``search`` config node, validated."""

    losses: tuple[str, ...]
    n_trials: int
    storage: str
    study_name: str
    seed: int
    prune: bool
    n_startup_trials: int
    n_warmup_steps: int
    timeout: float | None
    tune_lr: bool
    space: dict[str, dict[str, Any]]  # config key -> dimension
    batch_size: int = 1  # trials asked for at once and trained as one stacked group

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> SearchSettings:
        if node is None:
            raise LossbenchError(
                "The config has no 'search' node. Run `python -m lossbench.search`, whose config has one."
            )
        node = dict(node)
        pruner = dict(node.get("pruner") or {})
        losses = node.get("losses") or []
        if isinstance(losses, str):
            losses = [x for x in (s.strip() for s in losses.split(",")) if x]
        if not isinstance(losses, Sequence) or not all(isinstance(x, str) and x for x in losses):
            raise ParameterError(f"search.losses must be a list of loss names, like [focal,ldam]; got {losses!r}.")
        timeout = node.get("timeout")
        number = isinstance(timeout, int | float) and not isinstance(timeout, bool)
        if timeout is not None and not (number and timeout > 0 and math.isfinite(timeout)):
            raise ParameterError(f"search.timeout must be a positive number of seconds or null, got {timeout!r}.")
        storage = node.get("storage")
        if not isinstance(storage, str) or not storage.strip():
            raise ParameterError(
                f"search.storage must be a journal file path or a database URL, got {storage!r}."
            )
        name = node.get("study_name")
        if not isinstance(name, str) or not name.strip():
            raise ParameterError(f"search.study_name must be a non-empty string, got {name!r}.")
        return cls(
            losses=tuple(dict.fromkeys(losses)),  # once each, in the order given
            n_trials=Interval(int, 1).check("search.n_trials", node.get("n_trials")),
            storage=storage.strip(),
            study_name=name.strip(),
            seed=_COUNT.check("search.seed", node.get("seed", 0)),
            prune=BOOL.check("search.pruner.enabled", pruner.get("enabled", True)),
            n_startup_trials=_COUNT.check("search.pruner.n_startup_trials", pruner.get("n_startup_trials", 5)),
            n_warmup_steps=_COUNT.check("search.pruner.n_warmup_steps", pruner.get("n_warmup_steps", 0)),
            timeout=float(timeout) if timeout is not None else None,
            tune_lr=BOOL.check("search.tune_lr", node.get("tune_lr", False)),
            space=flatten_space(node.get("space") or {}),
            batch_size=Interval(int, 1).check("search.batch_size", node.get("batch_size", 1)),
        )


def flatten_space(node: Mapping[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """``{optimizer: {lr: {type: ...}}}`` -> ``{"optimizer.lr": {type: ...}}``, each dimension checked."""
    out: dict[str, dict[str, Any]] = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        if not isinstance(v, Mapping):
            raise ParameterError(f"search.space.{key} must be a dimension like {_EXAMPLE}; got {v!r}.")
        if "type" in v:
            out[key] = check_dimension(key, dict(v))
        else:
            out.update(flatten_space(v, key + "."))
    return out


def check_dimension(key: str, dim: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one dimension; return it in its canonical form."""
    where, owner = f"The search dimension {key}", f"the search dimension {key}"
    kind = Options(*_TYPES).check("type", dim.get("type"), owner=owner)
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log"}
    extra = sorted(set(dim) - allowed)
    if extra:
        raise ParameterError(f"{where} has keys {extra} that a {kind} dimension does not take ({sorted(allowed)}).")
    if kind == "categorical":
        choices = dim.get("choices")
        if isinstance(choices, str | bytes) or not isinstance(choices, Sequence) or len(choices) == 0:
            raise ParameterError(
                f"{where} needs a non-empty list of choices, like {{type: categorical, choices: [a, b]}}."
            )
        choices = list(choices)
        if not all(c is None or isinstance(c, bool | int | float | str) for c in choices):
            raise ParameterError(f"{where}: choices must be numbers, strings, booleans or null, got {choices!r}.")
        return {"type": "categorical", "choices": choices}
    number = Interval(int) if kind == "int" else _FINITE
    low, high = (number.check(name, dim.get(name), owner=owner) for name in ("low", "high"))
    log = BOOL.check("log", dim.get("log", False), owner=owner)
    if low > high:
        raise ParameterError(f"{where} has low={low} above high={high}.")
    if log and low <= 0:
        raise ParameterError(f"{where} is log-scaled, so low must be > 0 (got {low}).")
    return {"type": kind, "low": low, "high": high, "log": log}


def distribution(dim: Mapping[str, Any]) -> Any:
    """The Optuna distribution of a checked dimension."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dim["type"] == "categorical":
        return CategoricalDistribution(list(dim["choices"]))
    if dim["type"] == "int":
        return IntDistribution(dim["low"], dim["high"], log=dim["log"])
    return FloatDistribution(dim["low"], dim["high"], log=dim["log"])


def loss_space(
    loss: str, settings: SearchSettings, fixed: set[str] | frozenset[str] = frozenset()
) -> dict[str, dict[str, Any]]:
    """The dimensions searched for one loss, by config key, every loss parameter range checked.

    ``fixed``: config keys set on the command line, which are held at their value.
    """
    from ..registry import loss_info

    spec = loss_info(loss)
    own = {p.name for p in spec.params}
    space = {f"loss.{k}": check_dimension(f"loss.{k}", v) for k, v in spec.search_space.items()}
    if settings.tune_lr:
        space["optimizer.lr"] = dict(LR_DIMENSION)
    for key, dim in settings.space.items():
        if key.startswith("loss.") and key[len("loss.") :] not in own:
            continue  # a dimension for another loss of the list (checked in check_loss_keys)
        space[key] = dim
    for key in fixed:
        space.pop(key, None)
    for key, dim in space.items():
        if key.startswith("loss."):
            _check_in_range(spec, key[len("loss.") :], dim)
    return dict(sorted(space.items()))


def check_loss_keys(losses: Sequence[str], settings: SearchSettings) -> None:
    """A ``search.space.loss.<p>`` dimension must fit at least one of the losses searched."""
    from ..registry import loss_info

    for key in settings.space:
        if not key.startswith("loss."):
            continue
        name = key[len("loss.") :]
        if not any(name in {p.name for p in loss_info(x).params} for x in losses):
            known = sorted({p.name for x in losses for p in loss_info(x).params} - {"reduction"})
            raise ParameterError(
                f"search.space.{key}: none of the losses searched ({', '.join(losses)}) has a parameter "
                f"'{name}'. Their parameters: {', '.join(known) or 'none'}."
            )


def _check_in_range(spec: Any, name: str, dim: Mapping[str, Any]) -> None:
    param = spec.param(name)
    values = dim["choices"] if dim["type"] == "categorical" else [dim["low"], dim["high"]]
    for v in values:
        try:
            param.validate(spec.name, v)
        except LossbenchError as exc:
            raise ParameterError(
                f"The search dimension loss.{name} reaches {v!r}, outside what {spec.name} takes: {exc}"
            ) from None

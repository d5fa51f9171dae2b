"""The loss registry: frozen specs, validated construction, lazy plugins.

Built-in losses register with :func:`register_loss`. Third-party distributions add
losses through the entry-point group ``lossbench.losses``; each entry point names a
module (importing it runs its ``@register_loss`` decorators), a :class:`LossSpec`, or a
callable that registers losses when called. Built-ins and plugins are loaded on the
first lookup, never at ``import lossbench``. A plugin that fails to load is warned
about and skipped; two sources registering one name is an error naming both.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any

import torch
from torch import nn

from .constraints import BOOL, STRING, Constraint, Counts, Interval, ListOf, Options
from .errors import LossbenchError, ParameterError, unknown_name

TASKS = ("regression", "multiclass", "binary", "multilabel", "distribution")
TRAITS = (
    "robust_to_outliers",
    "bounded_influence",
    "convex",
    "handles_imbalance",
    "handles_label_noise",
    "calibrated",
)
REDUCTIONS = ("mean", "sum", "none")
# The last layers a loss may ask of the model: "linear" (any logits) or "normed", a cosine
# classifier whose outputs lie in [-1, 1] and which the loss scales itself (LDAM's s).
HEADS = ("linear", "normed")
BUILTIN_SOURCE = "lossbench (built-in)"
ENTRY_POINT_GROUP = "lossbench.losses"


# --------------------------------------------------------------------------- params
@dataclass(frozen=True)
class Search:
    """A search space for one hyperparameter, in the form Optuna's ``suggest_*`` take."""

    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @classmethod
    def float(cls, low: float, high: float, log: bool = False) -> Search:
        return cls("float", low, high, log)

    @classmethod
    def int(cls, low: int, high: int, log: bool = False) -> Search:
        return cls("int", low, high, log)

    @classmethod
    def categorical(cls, *choices: Any) -> Search:
        return cls("categorical", choices=tuple(choices))

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices or ())}
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a loss: its default, type, valid range and search space.

    ``type`` is one of ``float``, ``int``, ``bool``, ``str``, ``floats`` (a list),
    ``float_or_floats`` (a scalar or one value per class), ``counts`` (class counts) or
    ``any``. ``low``/``high``/``closed`` bound the numbers as in
    :class:`~lossbench.constraints.Interval`; ``choices`` lists the allowed values instead.
    """

    name: str
    default: Any
    type: str = "float"
    low: float | None = None
    high: float | None = None
    closed: str = "both"
    choices: tuple[Any, ...] | None = None
    search: Search | None = None
    help: str = ""
    check: Callable[[Any], Any] | None = None  # extra validation; returns the normalised value

    @property
    def constraint(self) -> Constraint | None:
        """What the value may be, in the vocabulary of :mod:`lossbench.constraints` (``None``: anything)."""
        if self.choices is not None:
            return Options(*self.choices)
        t = self.type
        number = Interval(int if t == "int" else float, self.low, self.high, self.closed)
        if t in ("float", "int"):
            return number
        if t in ("floats", "float_or_floats"):
            return ListOf(number, scalar=t == "float_or_floats", per_class=t == "float_or_floats")
        if t in ("bool", "str"):
            return BOOL if t == "bool" else STRING
        if t == "counts":
            return Counts()
        if t == "any":
            return None
        raise TypeError(f"unknown parameter type {t!r} of {self.name}")  # a spec bug, caught by the registry tests

    def describe(self) -> str:
        """``"a float in (0, inf)"``: the phrase used in error messages and listings."""
        c = self.constraint
        return c.describe() if c is not None else "a value"

    def validate(self, loss: str, value: Any) -> Any:
        """Return the value converted to its type, or raise :class:`ParameterError`."""
        if value is None and self.default is None:
            return None
        c = self.constraint
        out = value if c is None else c.check(self.name, value, owner=loss)
        return self.check(out) if self.check else out

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "default": self.default,
            "type": self.type,
            "valid": self.describe(),
            "search": self.search.as_dict() if self.search else None,
            "help": self.help,
        }


# --------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class LossSpec:
    """Everything lossbench knows about one loss. Frozen: the registry is read-only."""

    name: str
    factory: Callable[..., nn.Module]
    tasks: tuple[str, ...]
    params: tuple[Param, ...] = ()
    traits: frozenset[str] = frozenset()
    needs: tuple[str, ...] = ()  # names of params the data must supply (e.g. class_counts)
    head: str = "linear"  # the last layer the loss needs the model to end in (see HEADS)
    description: str = ""
    reference: str = ""
    aliases: tuple[str, ...] = ()
    function: Callable[..., torch.Tensor] | None = None  # the pure function, if any
    minimum: float = 0.0  # documented value at a perfect prediction (default params)
    example: Mapping[str, Any] = field(default_factory=dict)  # params tests build it with
    source: str = BUILTIN_SOURCE

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise unknown_name(f"parameter of {self.name}", name, [p.name for p in self.params])

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    @property
    def search_space(self) -> dict[str, dict[str, Any]]:
        return {p.name: p.search.as_dict() for p in self.params if p.search is not None}

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tasks": list(self.tasks),
            "params": [p.as_dict() for p in self.params],
            "traits": sorted(self.traits),
            "needs": list(self.needs),
            "head": self.head,
            "description": self.description,
            "reference": self.reference,
            "aliases": list(self.aliases),
            "source": self.source,
        }


def task_fits(loss_tasks: Sequence[str], data_task: str) -> bool:
    """Whether a loss declared for ``loss_tasks`` can train on data of ``data_task``.

    Binary data also fits multi-class losses (the model then emits two logits), and
    class-label data fits distribution losses (kl_div, js_div) through one-hot targets.
    """
    if data_task in loss_tasks:
        return True
    if data_task == "binary" and "multiclass" in loss_tasks:
        return True
    return data_task in ("binary", "multiclass") and "distribution" in loss_tasks


# --------------------------------------------------------------------------- registry
class Registry:
    """Name -> spec, with aliases, a did-you-mean for typos and lazy loading."""

    def __init__(self, kind: str, builtin_module: str | None = None, entry_point_group: str | None = None):
        self.kind = kind
        self._builtin_module = builtin_module
        self._group = entry_point_group
        self._specs: dict[str, LossSpec] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False
        self._loading = False
        self._source = BUILTIN_SOURCE

    # -- loading
    def _ensure_loaded(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            if self._builtin_module:
                importlib.import_module(self._builtin_module)
            if self._group:
                self._load_plugins()
            self._loaded = True
        finally:
            self._loading = False

    def _load_plugins(self) -> None:
        for ep in sorted(entry_points(group=self._group), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            source = f"plugin '{ep.value}' from distribution '{dist.name if dist else '?'}'"
            before = dict(self._specs)
            try:
                with self._as_source(source):
                    obj = ep.load()
                    if isinstance(obj, LossSpec):
                        self.add(obj)
                    elif callable(obj) and not isinstance(obj, type):
                        obj()
            except LossbenchError:
                raise  # a name clash is the plugin author's bug to fix, not to skip
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break lossbench
                # roll back anything the broken plugin half-registered
                self._specs = before
                self._aliases = {a: n for a, n in self._aliases.items() if n in before}
                warnings.warn(
                    f"Skipping lossbench plugin {source}: it failed to load "
                    f"({type(exc).__name__}: {exc}). Fix or uninstall that package.",
                    RuntimeWarning,
                    stacklevel=2,
                )

    @contextlib.contextmanager
    def _as_source(self, source: str) -> Iterator[None]:
        old, self._source = self._source, source
        try:
            yield
        finally:
            self._source = old

    # -- registration
    def add(self, spec: LossSpec) -> LossSpec:
        if spec.source == BUILTIN_SOURCE and self._source != BUILTIN_SOURCE:
            spec = replace(spec, source=self._source)
        for name in (spec.name, *spec.aliases):
            owner = self._specs.get(self._aliases.get(name, name))
            if owner is not None:
                raise LossbenchError(
                    f"The {self.kind} name '{name}' is registered twice: by {owner.source} "
                    f"and by {spec.source}. Rename one of them (or uninstall one plugin)."
                )
        bad_tasks = set(spec.tasks) - set(TASKS)
        if bad_tasks or not spec.tasks:
            raise ValueError(f"{spec.name}: tasks must be among {TASKS}, got {spec.tasks}")
        bad_traits = set(spec.traits) - set(TRAITS)
        if bad_traits:
            raise ValueError(f"{spec.name}: unknown traits {sorted(bad_traits)}; known: {TRAITS}")
        self._specs[spec.name] = spec
        for a in spec.aliases:
            self._aliases[a] = spec.name
        return spec

    # -- lookup
    def canonical(self, name: str) -> str:
        self._ensure_loaded()
        name = self._aliases.get(name, name)
        if name not in self._specs:
            raise unknown_name(
                self.kind, name, list(self._specs), hint="List them with `python -m lossbench.losses`."
            )
        return name

    def get(self, name: str) -> LossSpec:
        return self._specs[self.canonical(name)]

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._specs)

    def specs(self) -> list[LossSpec]:
        return [self._specs[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._specs or name in self._aliases


LOSSES = Registry("loss", builtin_module="lossbench.losses", entry_point_group=ENTRY_POINT_GROUP)


# --------------------------------------------------------------------------- modules
class FunctionalLoss(nn.Module):
    """An ``nn.Module`` that validates nothing itself and calls a pure loss function.

    Construction (through :func:`create_loss`) has already validated the parameters.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], name: str, **params: Any):
        super().__init__()
        self.fn = fn
        self.loss_name = name
        self.params = params

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(pred, target, **self.params)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.params.items())


def register_loss(
    name: str,
    *,
    tasks: Sequence[str],
    params: Sequence[Param] = (),
    traits: Sequence[str] = (),
    needs: Sequence[str] = (),
    head: str = "linear",
    description: str = "",
    reference: str = "",
    aliases: Sequence[str] = (),
    minimum: float = 0.0,
    example: Mapping[str, Any] | None = None,
    function: Callable[..., torch.Tensor] | None = None,
) -> Callable[[Any], Any]:
    """Register a loss. Decorates either a pure function or an ``nn.Module`` class.

    A decorated function ``f(pred, target, *, <params>, reduction)`` becomes a
    :class:`FunctionalLoss`; a decorated ``nn.Module`` class is called with the validated
    parameters (pass its pure function as ``function=`` so tests can compare the two).
    Every loss takes ``reduction`` in ``"mean" | "sum" | "none"``; it is added to
    ``params`` here, so specs do not repeat it.
    """
    if head not in HEADS:
        raise ValueError(f"loss '{name}': head must be one of {HEADS}, got {head!r}.")
    all_params = list(params)
    if not any(p.name == "reduction" for p in all_params):
        all_params.append(Param("reduction", "mean", "str", choices=REDUCTIONS, help="how per-sample losses combine"))

    def deco(obj: Any) -> Any:
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            factory, fn = obj, function
        elif callable(obj):
            fn = obj

            def factory(**kw: Any) -> nn.Module:
                return FunctionalLoss(fn, name, **kw)

        else:  # pragma: no cover
            raise TypeError("@register_loss decorates a function or an nn.Module class")
        LOSSES.add(
            LossSpec(
                name=name,
                factory=factory,
                tasks=tuple(tasks),
                params=tuple(all_params),
                traits=frozenset(traits),
                needs=tuple(needs),
                head=head,
                description=description,
                reference=reference,
                aliases=tuple(aliases),
                function=fn,
                minimum=minimum,
                example=dict(example or {}),
            )
        )
        return obj

    return deco


# --------------------------------------------------------------------------- public API
def list_losses(task: str | None = None, trait: str | None = None) -> list[str]:
    """Names of the registered losses, optionally only those fitting ``task`` / having ``trait``."""
    if task is not None and task not in TASKS:
        raise unknown_name("task", task, TASKS)
    if trait is not None and trait not in TRAITS:
        raise unknown_name("trait", trait, TRAITS)
    out = []
    for spec in LOSSES.specs():
        if task is not None and not task_fits(spec.tasks, task):
            continue
        if trait is not None and trait not in spec.traits:
            continue
        out.append(spec.name)
    return out


def loss_info(name: str) -> LossSpec:
    """The frozen spec of a loss (aliases resolve to their loss)."""
    return LOSSES.get(name)


def _context_value(context: Any, key: str) -> Any:
    if context is None:
        return None
    if isinstance(context, Mapping):
        return context.get(key)
    return getattr(context, key, None)


def _task_hint(context: Any, tasks: Sequence[str]) -> str:
    """A dataset's advice for data of the loss's task (``DataInfo.extra["task_hints"]``), if any."""
    hints = (_context_value(context, "extra") or {}).get("task_hints") or {}
    return next((f" {hints[t]}" for t in tasks if t in hints), "")


def create_loss(name: str, *, context: Any = None, **params: Any) -> nn.Module:
    """Build a loss module by name, validating every parameter first.

    ``context`` (a ``DataInfo`` or a mapping with ``task`` and ``class_counts``) lets the
    pipeline check that the loss fits the data and supply what the loss needs from it.
    Parameters given explicitly win over the context.
    """
    spec = LOSSES.get(name)
    data_task = _context_value(context, "task")
    if data_task is not None and not task_fits(spec.tasks, data_task):
        fitting = list_losses(task=data_task)
        raise LossbenchError(
            f"The loss '{spec.name}' is for {'/'.join(spec.tasks)} tasks, but the data is a "
            f"{data_task} task. Losses that fit {data_task} data: {', '.join(fitting)}."
            f"{_task_hint(context, spec.tasks)}"
        )
    known = {p.name for p in spec.params}
    unknown = [k for k in params if k not in known]
    if unknown:
        raise unknown_name(f"parameter of {spec.name}", unknown[0], known)
    # what the data knows (class_counts) fills any parameter of that name left unset:
    # required ones (`needs`) and optional pass-throughs such as combo's
    for key in ("class_counts",):
        if key in known and params.get(key) is None:
            value = _context_value(context, key)
            if value is not None:
                params[key] = value
    missing = [n for n in spec.needs if params.get(n) is None]
    if missing:
        raise ParameterError(
            f"The loss '{spec.name}' needs {missing[0]} (the number of training samples per class), "
            f"and none was given. Pass {missing[0]}=[n_0, n_1, ...] to create_loss, or run it "
            f"through `python -m lossbench`, which fills it from the data."
        )
    values = {}
    for p in spec.params:
        values[p.name] = p.validate(spec.name, params.get(p.name, p.default))
    module = spec.factory(**values)
    module.loss_name = spec.name
    if not hasattr(module, "tasks"):  # combo derives its tasks from its terms
        module.tasks = spec.tasks
    if data_task is not None and not task_fits(module.tasks, data_task):
        raise LossbenchError(
            f"The loss '{spec.name}' as configured is for {'/'.join(module.tasks)} tasks, but the data is a "
            f"{data_task} task. Losses that fit {data_task} data: {', '.join(list_losses(task=data_task))}."
            f"{_task_hint(context, module.tasks)}"
        )
    return module

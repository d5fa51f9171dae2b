"""lossbench: benchmark loss functions and choose one, with evidence.

The public names resolve on first use (PEP 562), so ``import lossbench`` and the parts that
need no tensors (the CLI's argument checks, the report's statistics) do not import torch.

The Python API (:mod:`lossbench.api`) is ``lossbench.run``, ``lossbench.sweep`` and
``lossbench.choose``. The last two share their names with modules (``lossbench/sweep.py``,
``lossbench/choose/``), so those modules are made callable: ``lossbench.sweep`` is the module
(``lossbench.sweep.SweepCallback`` still resolves) and ``lossbench.sweep(...)`` calls
:func:`lossbench.api.sweep`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ChooseResult": ".api",
    "LossbenchError": ".errors",
    "Param": ".registry",
    "Search": ".registry",
    "create_loss": ".registry",
    "list_losses": ".registry",
    "loss_info": ".registry",
    "register_loss": ".registry",
    "run": ".api",
}
_CALLABLE_MODULES = ("choose", "sweep")  # modules that are also API functions

__all__ = ["__version__", *_LAZY, *_CALLABLE_MODULES]


def __getattr__(name: str) -> Any:
    if name in _CALLABLE_MODULES:
        return importlib.import_module(f".{name}", __name__)  # the import sets the attribute (callable)
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'lossbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _CallableModule(types.ModuleType):
    """A module that, called, runs the API function of its name (``lossbench.sweep(...)``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from . import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """The package's module type: it makes the modules in :data:`_CALLABLE_MODULES` callable
    as they are imported and bound to the package."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE_MODULES and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

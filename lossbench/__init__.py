"""lossbench: benchmark loss functions and choose one, with evidence.

The public names resolve on first use (PEP 562), so ``import lossbench`` and the parts that
need no tensors (the CLI's argument checks, the report's statistics) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "LossbenchError": ".errors",
    "Param": ".registry",
    "Search": ".registry",
    "create_loss": ".registry",
    "list_losses": ".registry",
    "loss_info": ".registry",
    "register_loss": ".registry",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'lossbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

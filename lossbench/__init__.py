"""lossbench: benchmark loss functions and choose one, with evidence."""

from .errors import LossbenchError
from .registry import Param, Search, create_loss, list_losses, loss_info, register_loss

__version__ = "0.1.0"

__all__ = [
    "LossbenchError",
    "Param",
    "Search",
    "__version__",
    "create_loss",
    "list_losses",
    "loss_info",
    "register_loss",
]

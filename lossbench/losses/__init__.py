"""Built-in losses, grouped by family. Importing this package registers them all."""

from . import classification, divergence, regression  # noqa: F401  (registration side effects)
from . import combo  # noqa: F401  (last: it builds on the others)
from ._common import validation

__all__ = ["validation"]

"""lossbench's Hydra configs, shipped inside the package (``lossbench.configs``).

Importing it registers the OmegaConf resolvers the config files use, in every process
that composes or resolves them (the CLI, the API, launcher workers, tests).
"""

from pathlib import Path

from omegaconf import OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent


def _epoch_at(fraction: float, _root_: object) -> int:
    """``${lossbench_epoch_at:0.8}``: the epoch that far into ``trainer.max_epochs`` (160 of 200)."""
    f = float(fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"lossbench_epoch_at takes a fraction of training in [0, 1], got {fraction!r}")
    return int(f * int(_root_.trainer.max_epochs))  # type: ignore[attr-defined]


if not OmegaConf.has_resolver("lossbench_epoch_at"):
    OmegaConf.register_new_resolver("lossbench_epoch_at", _epoch_at)

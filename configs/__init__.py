"""lossbench's Hydra configs, shipped inside the package (``lossbench.configs``)."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent

"""lossbench datasets: the DataModule contract and every built-in dataset.

``import lossbench.data`` loads only the contract (:mod:`.base`); a dataset class is
imported on first access (``lossbench.data.CIFAR10LT``), and torchvision's datasets only
when an image set actually reads or downloads its files.

``DATASETS`` maps each dataset's name (the stem of its config file under
``configs/data/``) to the import path of its class; :func:`dataset_class` looks one up.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import unknown_name
from .base import DataInfo, Splits, TensorBatches, TensorDataModule, split_indices, stratified_split_indices

DATASETS: dict[str, str] = {
    "regression_outliers": "lossbench.data.synthetic.RegressionOutliers",
    "imbalanced": "lossbench.data.synthetic.ImbalancedClassification",
    "digits_lt": "lossbench.data.sklearn_sets.DigitsLT",
    "breast_cancer": "lossbench.data.sklearn_sets.BreastCancer",
    "diabetes": "lossbench.data.sklearn_sets.Diabetes",
    "mnist_lt": "lossbench.data.vision.MNISTLT",
    "fashion_mnist_lt": "lossbench.data.vision.FashionMNISTLT",
    "cifar10_lt": "lossbench.data.vision.CIFAR10LT",
    "cifar100_lt": "lossbench.data.vision.CIFAR100LT",
    "csv": "lossbench.data.tabular.TabularData",
}

_CLASSES = {path.rsplit(".", 1)[1]: path for path in DATASETS.values()}


def dataset_class(name: str) -> type[TensorDataModule]:
    """The DataModule class registered under ``name`` (a config stem such as ``"cifar10_lt"``)."""
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS, hint="Dataset configs live in configs/data/.")
    module, cls = DATASETS[name].rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)


def __getattr__(attr: str) -> Any:  # PEP 562: import a dataset module on first use
    if attr in _CLASSES:
        module, cls = _CLASSES[attr].rsplit(".", 1)
        return getattr(importlib.import_module(module), cls)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = [
    "DATASETS",
    "DataInfo",
    "Splits",
    "TensorBatches",
    "TensorDataModule",
    "dataset_class",
    "split_indices",
    "stratified_split_indices",
    *sorted(_CLASSES),
]

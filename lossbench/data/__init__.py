"""lossbench datasets: the DataModule contract and every built-in dataset.

``import lossbench.data`` loads only the contract (:mod:`.base`). A dataset is chosen by
its config file, ``configs/data/<name>.yaml``, whose ``_target_`` names its class (in
:mod:`.synthetic`, :mod:`.sklearn_sets`, :mod:`.vision` or :mod:`.tabular`); torchvision's
datasets load only when an image set actually reads or downloads its files.
"""

from __future__ import annotations

from .base import DataInfo, Splits, TensorBatches, TensorDataModule, split_indices, stratified_split_indices

__all__ = ["DataInfo", "Splits", "TensorBatches", "TensorDataModule", "split_indices", "stratified_split_indices"]

"""Networks and the LightningModule that trains them.

A network is chosen by its config file, ``configs/model/<name>.yaml``, whose ``_target_``
names its class here.
"""

from .networks import MLP, LinearNet, ResNet18, ResNet32, SmallCNN

__all__ = ["MLP", "LinearNet", "ResNet18", "ResNet32", "SmallCNN"]

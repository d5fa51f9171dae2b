"""Networks and the LightningModule that trains them."""

from .networks import NETWORKS, MLP, LinearNet, ResNet18, ResNet32, SmallCNN, build_network

__all__ = ["MLP", "NETWORKS", "LinearNet", "ResNet18", "ResNet32", "SmallCNN", "build_network"]

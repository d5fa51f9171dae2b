"""Learning-rate schedules that torch does not configure from a YAML file.

``WarmupStep`` is the schedule of Cao et al. ("Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", NeurIPS 2019) for CIFAR-LT, which the long-tail
literature keeps: a linear warm-up over the first epochs (the lr of epoch e < w is
``lr * (e + 1) / w``), then the full lr, multiplied by ``gamma`` at each milestone epoch.
Their 200-epoch run: w = 5, milestones 160 and 180, gamma 0.01 (lr 0.1 -> 1e-3 -> 1e-5).
torch can compose this from ``LinearLR``, ``MultiStepLR`` and ``SequentialLR``, but not from
one flat config node; as one scheduler it is one node, and both engines step it per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..constraints import Interval, ListOf
from ..errors import ParameterError

_EPOCHS = Interval(int, 0)
_GAMMA = Interval(float, 0, 1, "right")


class WarmupStep(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up for ``warmup_epochs``, then ``gamma`` times the lr at each milestone."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_epochs: int = 5,
        milestones: Sequence[int] = (160, 180),
        gamma: float = 0.01,
        last_epoch: int = -1,
    ):
        owner = "scheduler 'warmup_step'"
        self.warmup_epochs = _EPOCHS.check("warmup_epochs", warmup_epochs, owner=owner)
        self.milestones = ListOf(_EPOCHS, empty=True).check("milestones", list(milestones), owner=owner)
        if self.milestones != sorted(set(self.milestones)):
            raise ParameterError(
                f"The 'milestones' of {owner} must be increasing epochs, like [160, 180]. Got {self.milestones}."
            )
        self.gamma = _GAMMA.check("gamma", gamma, owner=owner)
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch: int) -> float:
        """The multiple of the base lr during ``epoch`` (0-based)."""
        if epoch < self.warmup_epochs:
            return (epoch + 1) / self.warmup_epochs
        return self.gamma ** sum(epoch >= m for m in self.milestones)

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

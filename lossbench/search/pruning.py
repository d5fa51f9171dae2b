"""The Lightning callback that puts a trial trained alone before Optuna's pruner after each validation epoch."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl

from .. import schema as S
from ..pipeline import RunStopped


class OptunaPruning(pl.Callback):
    """After every validation epoch, hand the objective to ``judge`` (the search's ``_Judge``,
    which reports it to the trial); stop a run it finds hopeless at the next epoch's start.

    The run ends through :class:`lossbench.pipeline.RunStopped`, so MLflow records it as
    KILLED with the tag ``pruned=true``; a run judged after its last epoch completes anyway.
    """

    def __init__(self, judge: Any):
        self.judge = judge
        self._verdict: str | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = None if trainer.sanity_checking else trainer.callback_metrics.get(self.judge.monitor)
        if value is not None and math.isfinite(v := float(value)):  # a diverging run stops on its own
            self._verdict = self.judge(int(trainer.current_epoch), v)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._verdict is not None:
            tags = {S.TAG_PRUNED: "true", S.TAG_PRUNED_EPOCH: str(self.judge.pruned_epoch)}
            raise RunStopped(self._verdict, status="KILLED", tags=tags)

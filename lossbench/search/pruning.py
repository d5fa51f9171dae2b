"""The Lightning callback that reports each epoch's validation objective to an Optuna trial."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl

from .. import schema as _S
from ..pipeline import RunStopped

TAG_PRUNED = _S.TAG_PRUNED
TAG_PRUNED_EPOCH = _S.TAG_PRUNED_EPOCH


class OptunaPruning(pl.Callback):
    """After every validation epoch, report ``monitor`` to ``trial`` and stop a hopeless run.

    The run ends through :class:`lossbench.pipeline.RunStopped`, so MLflow records it as
    KILLED with the tag ``pruned=true``; the caller then tells Optuna the trial was pruned.
    It stops at the start of the next epoch, once the epoch the pruner judged is logged;
    a run judged hopeless after its last epoch has finished anyway and completes.
    """

    def __init__(self, trial: Any, monitor: str):
        self.trial = trial
        self.monitor = monitor
        self.pruned_epoch: int | None = None
        self.reported: dict[int, float] = {}
        self._verdict: str | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        v = float(value)  # one host sync per epoch
        if not math.isfinite(v):
            return  # a diverging run stops on its own, as FAILED/diverged
        epoch = int(trainer.current_epoch)
        self.trial.report(v, epoch)
        self.reported[epoch] = v
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            self._verdict = f"pruned by Optuna after epoch {epoch} ({self.monitor}={v:.4g})"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._verdict is not None:
            raise RunStopped(
                self._verdict, status="KILLED", tags={TAG_PRUNED: "true", TAG_PRUNED_EPOCH: str(self.pruned_epoch)}
            )

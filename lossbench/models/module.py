"""The one LightningModule: any network, any registered loss, any optimizer.

It adapts the network's output to the loss's input convention, logs per-epoch metrics
with the epoch as the MLflow step, stops a run the moment its loss stops being finite,
and keeps the best validation weights in memory so the test split is scored with the
model selected on validation (no checkpoint files needed).

Under DDP (``trainer.strategy=ddp``) every rank scores the whole validation and test split
(the data's loaders shard only the training split), and rank 0's numbers are broadcast, so
the best epoch, a stop and a divergence are decided alike on every rank: a rank that
decided otherwise would leave the others waiting forever in the next collective.
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from .outputs import adapt, evaluate, num_outputs, output_kind  # noqa: F401 - the names live there
from ..data.base import DataInfo
from ..losses.classification import set_loss_epoch
from ..schema import METRIC_BEST_VAL


class Diverged(RuntimeError):
    """The training loss became NaN or infinite: a result to record, not a crash."""

    def __init__(self, step: int, epoch: int, value: float):
        super().__init__(f"the training loss became {value} at step {step} (epoch {epoch})")
        self.step, self.epoch, self.value = step, epoch, value


class LossbenchModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        info: DataInfo,
        kind: str,
        scheduler: Callable[..., Any] | None = None,
    ):
        super().__init__()
        self.net = net
        self.loss_fn = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.info = info
        self.kind = kind
        self.objective = info.objective
        self.maximize = info.objective_mode == "max"
        self.best_value = -math.inf if self.maximize else math.inf
        self.best_epoch = -1
        self._best_state: dict[str, torch.Tensor] | None = None
        self._train_sum: torch.Tensor | None = None
        self._train_n = 0
        self._outputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"val": [], "test": []}
        self.history: list[dict[str, float]] = []  # per-epoch metrics, for the curve artifact
        self._epoch_row: dict[str, float] = {}  # this epoch's metrics, flushed at its end
        self._unlogged: list[tuple[int, dict[str, float]]] = []  # epochs not yet sent to MLflow
        self._last_flush = time.monotonic()
        self.sink: Callable[[list[Any]], None] | None = None  # where per-epoch MLflow metrics go (Run.log_metrics)
        self.test_metrics: dict[str, float] = {}
        self.per_class: list[dict[str, Any]] = []
        self._sigterm: Any = None

    # ------------------------------------------------------------------ plumbing
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is not None and hasattr(dm, "to_device"):
            dm.to_device(self.trainer.strategy.root_device)
        self._sigterm = signal.getsignal(signal.SIGTERM)  # the run's own, before Lightning puts its own first

    def _keep_own_sigterm(self) -> None:
        """Under DDP, SIGTERM is the run's handler alone (it ends the run KILLED). Lightning's
        handler, which it installs after ``setup``, broadcasts from rank 0 inside the signal
        handler: a rank signalled alone then waits in that broadcast while the others wait
        in the next step's all-reduce, and neither ever returns (seen with SIGTERM to rank 1)."""
        if self._world() > 1 and threading.current_thread() is threading.main_thread() and self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)

    def on_train_start(self) -> None:
        self._keep_own_sigterm()

    def on_test_start(self) -> None:
        self._keep_own_sigterm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _adapt(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return adapt(self.kind, out, y)

    def configure_optimizers(self) -> Any:
        # learnable loss parameters (adaptive barron, learnable combo terms) train too
        opt = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=opt), "interval": "epoch"}}

    # ------------------------------------------------------------------ train
    def on_train_epoch_start(self) -> None:
        set_loss_epoch(self.loss_fn, int(self.current_epoch))  # deferred re-weighting switches here
        self._train_sum = torch.zeros((), device=self.device)
        self._train_n = 0

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        pred, target = self._adapt(self.net(x), y)
        loss = self.loss_fn(pred, target)
        # one host sync per step: a diverged run must stop at the step it diverged
        if self._world() > 1:  # on every rank at once, whichever rank's loss went first: a sum
            total = self.trainer.strategy.reduce(loss.detach().clone(), reduce_op="sum")  # is finite iff all are
            if not bool(torch.isfinite(total)):
                raise Diverged(int(self.global_step), int(self.current_epoch), float(loss if not torch.isfinite(loss) else total))
        elif not bool(torch.isfinite(loss)):
            raise Diverged(int(self.global_step), int(self.current_epoch), float(loss.detach()))
        assert self._train_sum is not None
        self._train_sum = self._train_sum + loss.detach() * x.shape[0]
        self._train_n += x.shape[0]
        return loss

    def on_train_epoch_end(self) -> None:
        if self._train_sum is not None and self._world() > 1:  # the mean over every rank's samples
            both = torch.stack([self._train_sum.float(), torch.tensor(float(self._train_n), device=self._train_sum.device)])
            total = self.trainer.strategy.reduce(both, reduce_op="sum")
            self._train_sum, self._train_n = total[0], int(total[1])
        if self._train_sum is not None and self._train_n:
            self._epoch_row["train_loss"] = float(self._train_sum) / self._train_n
        self._flush_epoch()

    # ------------------------------------------------------------------ val / test
    def _collect(self, split: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        out = self.net(x)
        self._outputs[split].append((out.detach(), y))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._collect("val", batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._collect("test", batch)

    def _world(self) -> int:
        return int(self.trainer.world_size) if self._trainer is not None else 1

    def _evaluate(self, split: str) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """The split's metrics. Every rank has scored the whole split (its loaders do not
        shard val or test); under DDP rank 0's result is broadcast so all ranks hold the
        same numbers, bit for bit, whatever their devices rounded."""
        outs = self._outputs[split]
        self._outputs[split] = []
        out = torch.cat([o for o, _ in outs])
        y = torch.cat([t for _, t in outs])
        result = evaluate(self.kind, self.info, self.loss_fn, out, y, per_class=split == "test")
        if self._world() > 1:
            n = int(getattr(self.info, f"n_{split}", 0))
            if n and out.shape[0] != n:  # a rank's shard scored as if it were the split
                raise RuntimeError(f"under DDP this rank's {split} outputs cover {out.shape[0]} of the split's {n} samples")
            result = self.trainer.strategy.broadcast(result, src=0)
        return result

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._outputs["val"] = []
            return
        metrics, _ = self._evaluate("val")
        for k, v in metrics.items():
            if not k.startswith("recall_class_"):
                self._epoch_row[f"val_{k}"] = v
        value = metrics.get(self.objective, math.nan)
        self.log(f"val_{self.objective}", value, prog_bar=True, logger=False)
        better = value > self.best_value if self.maximize else value < self.best_value
        if math.isfinite(value) and (better or self._best_state is None):
            self.best_value, self.best_epoch = value, int(self.current_epoch)
            self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.state_dict().items()}

    # per-epoch metrics go to MLflow in batches, at most this often: one SQLite commit per
    # epoch dominated short runs, and a few seconds' delay does not spoil live monitoring
    FLUSH_SECONDS = 2.0

    def _flush_epoch(self) -> None:
        row, self._epoch_row = self._epoch_row, {}
        if not row:
            return
        self.history.append({"epoch": int(self.current_epoch), **row})
        self._unlogged.append((int(self.current_epoch), row))
        if time.monotonic() - self._last_flush >= self.FLUSH_SECONDS:
            self.flush_metrics()

    def flush_metrics(self) -> None:
        """Write the buffered per-epoch metrics to ``sink`` (the MLflow run), in one batch."""
        rows, self._unlogged = self._unlogged, []
        self._last_flush = time.monotonic()
        if rows and self.sink is not None:
            from ..tracking import metrics_at

            self.sink(metrics_at(rows))

    def on_train_end(self) -> None:
        self.flush_metrics()

    def restore_best(self) -> None:
        """Load the weights of the best validation epoch (model selection on validation)."""
        if self._best_state is not None:
            self.load_state_dict(copy.deepcopy(self._best_state))

    def on_test_epoch_end(self) -> None:
        metrics, per_class = self._evaluate("test")
        self.test_metrics = {f"test_{k}": v for k, v in metrics.items()}
        if math.isfinite(self.best_value):
            self.test_metrics[METRIC_BEST_VAL] = self.best_value
        self.per_class = per_class

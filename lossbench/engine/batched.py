"""Train a group of K compatible runs as one stacked model; record each as its own MLflow run.

Every member keeps what a run trained alone has: its own data (split, noise, class
counts), initialisation, shuffling, loss and hyperparameters, learning rate and weight
decay; per-epoch validation, best-epoch selection, the test on the best weights,
per-class tables and learnable loss parameters. A member that diverges or raises stops
alone and is recorded at once; the others go on. Ctrl-C or SIGTERM ends every member
that is still training as KILLED.

The randomness protocol is the one the Lightning path (``engine=sequential``) uses:
the network is initialised by ``pipeline.prepare`` (``seed_everything(seed)`` then the
constructor), and epoch ``e`` shuffles with ``torch.Generator().manual_seed(seed *
100_003 + e)`` (:class:`lossbench.data.base.TensorBatches`). So a member's test metrics
equal those of the same config trained alone, up to float rounding.

Over 500 lines on purpose: one training loop (train, validate, select, test, record) for K
members at once; its steps share the group's tensors and member state.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import schema as S
from .. import tracking
from ..pipeline import Interrupted, Prepared, RunResult, log_curves, record_finished
from . import optim as O
from .stacked import StackedModel, unsupported_reason

log = logging.getLogger("lossbench")

# stack the members' whole splits up front below this size; gather per batch above it
_STACK_BYTES = 1 << 30
_SUPPORTED_PRECISION = {"32-true": None, "32": None, 32: None, "bf16-mixed": torch.bfloat16}


# ---------------------------------------------------------------------------- compatibility
def _opt_parts(p: Prepared) -> tuple[type, float, float, dict[str, Any]]:
    from hydra.utils import get_class

    cfg = dict(p.cfg["optimizer"])
    cls = get_class(cfg.pop("_target_"))
    cfg.pop("name", None)
    cfg.pop("_partial_", None)
    lr = float(cfg.pop("lr"))
    wd = float(cfg.pop("weight_decay", 0.0) or 0.0)
    return cls, lr, wd, cfg


def device_of(p: Prepared) -> torch.device:
    t = p.cfg["trainer"]
    acc = str(t.get("accelerator", "auto"))
    devices = t.get("devices", 1)
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if isinstance(devices, list | tuple) and len(devices) == 1:
            return torch.device(f"cuda:{int(devices[0])}")
        return torch.device("cuda")
    return torch.device("cpu")


def unsupported(p: Prepared) -> str | None:
    """Why this run cannot train in the batched engine (None when it can)."""
    t = p.cfg["trainer"]
    if str(t.get("strategy", "auto")) not in ("auto", "None", "none"):
        return f"trainer.strategy={t.get('strategy')} (the batched engine trains on one device)"
    devices = t.get("devices", 1)
    if not (devices in (1, "1", "auto") or (isinstance(devices, list | tuple) and len(devices) == 1)):
        return f"trainer.devices={devices} (the batched engine trains on one device)"
    if t.get("num_nodes", 1) not in (1, None):
        return "trainer.num_nodes > 1"
    if t.get("precision", "32-true") not in _SUPPORTED_PRECISION:
        return f"trainer.precision={t.get('precision')} (the batched engine runs 32-true and bf16-mixed)"
    if t.get("accumulate_grad_batches", 1) not in (1, None):
        return "trainer.accumulate_grad_batches > 1"
    if t.get("gradient_clip_algorithm", "norm") not in ("norm", None):
        return "trainer.gradient_clip_algorithm=value (the batched engine clips by norm)"
    cls, _, _, options = _opt_parts(p)
    if cls not in O.SUPPORTED:
        names = ", ".join(f"{c.__module__}.{c.__name__}" for c in O.SUPPORTED)
        return f"optimizer {cls.__name__} (the batched engine stacks {names})"
    try:
        O.check_options(cls, options)
    except ValueError as exc:
        return str(exc)
    sched = p.cfg.get("scheduler")
    if sched and "ReduceLROnPlateau" in str(sched.get("_target_", "")):
        return "scheduler ReduceLROnPlateau (needs a monitored metric)"
    return unsupported_reason(p.net)


def compat_key(p: Prepared) -> tuple[Any, ...]:
    """Runs with equal keys can train as one stacked model.

    Equal: the output convention and tensor shapes, the network and its width, the batch
    sizes, epochs, device and precision, the optimizer class and its options other than
    lr and weight decay, the scheduler, gradient clipping. Anything else may differ.
    """
    dm = p.datamodule
    sizes = tuple(tuple(dm.tensors(s)[0].shape) + tuple(dm.tensors(s)[1].shape[1:]) for s in ("train", "val", "test"))
    cls, _, _, options = _opt_parts(p)
    t = p.cfg["trainer"]
    sched = p.cfg.get("scheduler") or {}
    return (
        p.kind,
        sizes,
        repr(sorted((k, repr(v)) for k, v in p.cfg["model"].items())),
        int(dm.batch_size),
        int(dm.eval_batch_size),
        int(t.get("max_epochs") or 0),
        str(device_of(p)),
        str(t.get("precision", "32-true")),
        t.get("gradient_clip_val"),
        cls.__module__ + "." + cls.__name__,
        repr(sorted((k, repr(v)) for k, v in options.items())),
        repr(sorted((k, repr(v)) for k, v in dict(sched).items())),
    )


def describe(p: Prepared) -> str:
    t = p.cfg["trainer"]
    return f"{p.model_name}, {p.data_name}, batch {p.datamodule.batch_size}, {t.get('max_epochs')} epochs, {device_of(p)}"


# ---------------------------------------------------------------------------- one member
@dataclass
class Member:
    """One run of a group: its prepared config, its open MLflow run and its progress."""

    p: Prepared
    result: RunResult
    run: tracking.Run
    lr: float
    weight_decay: float
    driver: torch.optim.Optimizer | None  # carries the lr schedule and steps learnable loss parameters
    scheduler: Any
    has_loss_params: bool
    maximize: bool
    objective: str
    curves: bool
    # after each validation epoch: (epoch, objective value) -> a reason to stop, or None
    # (an Optuna pruner); the member then stops at the start of the next epoch, KILLED
    on_epoch: Callable[[int, float], str | None] | None = None
    stop: tuple[str, int] | None = None
    alive: bool = True
    best_value: float = math.nan
    best_epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    unlogged: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    test_metrics: dict[str, float] = field(default_factory=dict)
    per_class: list[dict[str, Any]] = field(default_factory=list)

    def better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_epoch < 0:
            return True
        return value > self.best_value if self.maximize else value < self.best_value


def _driver(p: Prepared, loss: torch.nn.Module, device: torch.device) -> tuple[torch.optim.Optimizer | None, Any, bool]:
    """A real torch optimizer for member k's learnable loss parameters (a dummy for a schedule).

    Its learning rate is the member's, and the member's scheduler steps it; the stacked
    optimizer reads the scheduled lr from it each epoch, so any torch scheduler works.
    None when the member has neither (building a torch optimizer the first time imports
    torch's compiler stack: seconds).
    """
    lp = [q for q in loss.parameters() if q.requires_grad]
    if not lp and p.scheduler is None:
        return None, None, False
    cls, lr, wd, options = _opt_parts(p)
    has = bool(lp)
    if not has:
        lp = [torch.zeros(1, device=device, requires_grad=True)]
    opt = cls(lp, lr=lr, weight_decay=wd, **options)
    sched = p.scheduler(optimizer=opt) if p.scheduler is not None else None
    return opt, sched, has


# ---------------------------------------------------------------------------- the engine
class GroupTrainer:
    """Trains one group. ``members`` must share :func:`compat_key` and have open runs."""

    FLUSH_SECONDS = 2.0
    PROGRESS_SECONDS = 10.0

    def __init__(self, members: Sequence[Member], *, group_id: str):
        self.members = list(members)
        self.group_id = group_id
        first = self.members[0].p
        self.device = device_of(first)
        if self.device.type == "cuda":  # Tensor Cores, as the Lightning path asks for them
            torch.set_float32_matmul_precision("high")
        t = first.cfg["trainer"]
        self.epochs = int(t.get("max_epochs") or 0)
        self.autocast = _SUPPORTED_PRECISION.get(t.get("precision", "32-true"))
        clip = t.get("gradient_clip_val")
        self.clip = float(clip) if clip not in (None, 0, 0.0) else None
        self.kind = first.kind
        self.k = len(self.members)
        self._last_flush = time.monotonic()
        self._flush_cost = 0.0
        self._stacked: dict[int, Any] = {}
        self._best: dict[str, torch.Tensor] | None = None  # stacked state of each member's best epoch
        # where the group's time goes (seconds), for the closing line of the group
        self.timing: dict[str, float] = {"train": 0.0, "validate": 0.0, "test+record": 0.0}

    # -------------------------------------------------------------- data
    def _split(self, split: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        xs, ys = [], []
        for m in self.members:
            x, y = m.p.datamodule.tensors(split)
            xs.append(x.to(self.device))
            ys.append(y.to(self.device))
        return xs, ys

    @staticmethod
    def _stack_or_keep(xs: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        total = sum(x.numel() * x.element_size() for x in xs)
        return torch.stack(xs) if total <= _STACK_BYTES else xs

    def _take(self, data: torch.Tensor | list[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx[k]`` of member k's tensor, stacked: ``(K, B, ...)``."""
        if isinstance(data, torch.Tensor):
            rows = torch.arange(self.k, device=idx.device).unsqueeze(1)
            return data[rows, idx]
        return torch.stack([d[i] for d, i in zip(data, idx, strict=True)])

    def _slice(self, data: torch.Tensor | list[torch.Tensor], start: int, stop: int) -> torch.Tensor:
        if isinstance(data, torch.Tensor):
            return data[:, start:stop]
        return torch.stack([d[start:stop] for d in data])

    # -------------------------------------------------------------- records
    def _flush(self) -> None:
        """Buffered per-epoch metrics to MLflow: at most every 2 s, and never more than
        a tenth of the time (K runs' writes cost K times one run's)."""
        now = time.monotonic()
        if now - self._last_flush < max(self.FLUSH_SECONDS, 10 * self._flush_cost):
            return
        tic = time.monotonic()
        for m in self.members:
            metrics = self._pending(m)
            if metrics:
                m.run.log_metrics(metrics)
        self._flush_cost = time.monotonic() - tic
        self._last_flush = time.monotonic()

    @staticmethod
    def _pending(m: Member) -> list[Any]:
        """Member m's per-epoch metrics not yet written, as MLflow metrics."""
        rows, m.unlogged = m.unlogged, []
        return tracking.metrics_at(rows)

    def _end_member(
        self, m: Member, status: str, *, failure: str | None = None, message: str = "", step: int | None = None,
        tb: str | None = None, tags: dict[str, Any] | None = None,
    ) -> None:
        """Stop member m now and record how it ended (its epochs so far are in the record)."""
        m.alive = False
        m.result.status, m.result.failure, m.result.message = status, failure, message
        if status == "KILLED" and math.isfinite(m.best_value):
            m.result.metrics = {S.METRIC_BEST_VAL: m.best_value}
        tags = dict(tags or {})
        if failure:
            tags[S.TAG_FAILURE] = failure
        if step is not None:
            tags[S.TAG_FAILURE_STEP] = step
        if m.curves and status != "KILLED":
            log_curves(m.run, m.history, m.objective)
        files = {S.ARTIFACT_TRACEBACK: tb} if tb else None
        m.run.end(status, tags, metrics=self._pending(m), artifacts=files)

    def _fail(self, m: Member, exc: BaseException) -> None:
        self._end_member(m, "FAILED", failure=S.FAILURE_ERROR, message=f"{type(exc).__name__}: {exc}", tb=traceback.format_exc())

    # -------------------------------------------------------------- the loop
    def fit(self) -> None:
        """Train, validate, select, test and record every member."""
        try:
            self._fit()
        except KeyboardInterrupt:
            for m in self.members:
                if m.alive:
                    self._end_member(m, "KILLED", message="interrupted")
            raise Interrupted("interrupted") from None
        except Exception as exc:  # noqa: BLE001 - a failure of the shared computation ends every live member
            for m in self.members:
                if m.alive:
                    self._fail(m, exc)

    def _fit(self) -> None:
        from ..data.augment import generator as augment_generator
        from ..losses import validation
        from ..losses.classification import set_loss_epoch

        members, k, dev = self.members, self.k, self.device
        for m in members:
            m.p.loss.to(dev)
        model = StackedModel([m.p.net for m in members], dev)
        cls, _, _, options = _opt_parts(members[0].p)
        # float64: the stacked optimizers keep lr and weight decay as torch.optim does, unrounded
        lr = torch.tensor([m.lr for m in members], dtype=torch.float64, device=dev)
        wd = torch.tensor([m.weight_decay for m in members], dtype=torch.float64, device=dev)
        opt = O.stacked_optimizer(cls, model.params, lr, wd, options)

        xs, ys = self._split("train")
        x_train, y_train = self._stack_or_keep(xs), self._stack_or_keep(ys)
        n_train = xs[0].shape[0]
        x_val, y_val = self._split("val")
        x_test, y_test = self._split("test")
        batch = int(members[0].p.datamodule.batch_size)
        eval_batch = int(members[0].p.datamodule.eval_batch_size)
        seeds = [int(m.p.datamodule.seed) for m in members]
        # each member's training-batch transform (data.augment), drawn from its own stream as
        # the Lightning path draws it (lossbench.data.augment), so a member sees the same batches
        transforms = [m.p.datamodule.train_transform() for m in members]
        zero = torch.zeros((), device=dev)
        step = 0
        started = last_progress = time.monotonic()
        def amp() -> Any:  # the autocast of the trainer's precision (bf16-mixed), or none
            return torch.autocast(dev.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()


        with validation(False):
            for epoch in range(self.epochs):
                for m in members:
                    if m.alive and m.stop is not None:  # judged hopeless after the last epoch: stop now
                        reason, judged = m.stop
                        self._end_member(m, "KILLED", message=reason, tags={S.TAG_PRUNED: "true", S.TAG_PRUNED_EPOCH: judged})
                if not any(m.alive for m in members):
                    break
                model.train(True)
                for m in members:  # deferred re-weighting switches here, as in the Lightning module
                    set_loss_epoch(m.p.loss, epoch)
                epoch_start = time.monotonic()
                order = torch.stack(
                    [torch.randperm(n_train, generator=torch.Generator().manual_seed(s * 100_003 + epoch)) for s in seeds]
                ).to(dev)
                augment = [augment_generator(s, epoch) if t is not None else None for s, t in zip(seeds, transforms, strict=True)]
                train_sum = torch.zeros(k, device=dev)
                alive_now = [m.alive for m in members]
                alive_t = torch.tensor(alive_now, device=dev)
                for start in range(0, n_train, batch):
                    idx = order[:, start : start + batch]
                    xb, yb = self._take(x_train, idx), self._take(y_train, idx)
                    if any(g is not None for g in augment):
                        xb = torch.stack([x if g is None else t(x, g) for x, t, g in zip(xb, transforms, augment, strict=True)])
                    with amp():
                        out = model(xb)
                        losses = []
                        for i, m in enumerate(members):
                            if not m.alive:
                                losses.append(zero)
                                continue
                            try:
                                losses.append(m.p.loss(*_adapt(m.p.kind, out[i], yb[i])).float().reshape(()))
                            except Exception as exc:  # noqa: BLE001 - this member's error is its own
                                self._fail(m, exc)
                                losses.append(zero)
                    lvec = torch.stack(losses)
                    finite = torch.isfinite(lvec).tolist()  # the one host sync of a step
                    for i, m in enumerate(members):
                        if m.alive and not finite[i]:
                            value = float(lvec[i].detach())
                            self._end_member(
                                m, "FAILED", failure=S.FAILURE_DIVERGED, step=step,
                                message=f"the training loss became {value} at step {step} (epoch {epoch})",
                            )
                    if [m.alive for m in members] != alive_now:
                        alive_now = [m.alive for m in members]
                        alive_t = torch.tensor(alive_now, device=dev)
                    if not any(m.alive for m in members):
                        break
                    for t in model.params.values():
                        t.grad = None
                    for m in members:
                        if m.has_loss_params and m.driver is not None:
                            m.driver.zero_grad(set_to_none=True)
                    total = torch.where(alive_t, lvec, zero).sum()
                    total.backward()
                    active = None if all(alive_now) else alive_t  # no masking while every member trains
                    if self.clip is not None:
                        O.clip_grad_norm_(model.params, self.clip, active=active)
                    opt.step(active=active)
                    for m in members:
                        if m.alive and m.has_loss_params and m.driver is not None:
                            m.driver.step()
                    train_sum = train_sum + torch.where(alive_t, lvec.detach(), zero) * idx.shape[1]
                    step += 1
                else:
                    tic = time.monotonic()
                    self.timing["train"] += tic - epoch_start
                    self._end_epoch(model, epoch, train_sum, n_train, x_val, y_val, eval_batch, amp)
                    self.timing["validate"] += time.monotonic() - tic
                    self._schedule(opt)
                    now = time.monotonic()
                    if now - last_progress >= self.PROGRESS_SECONDS:
                        last_progress = now
                        alive = sum(m.alive for m in members)
                        log.info(f"  group {self.group_id}: epoch {epoch + 1}/{self.epochs}, {alive}/{k} runs training, {now - started:.0f} s")
                    continue
                break
            tic = time.monotonic()
            self._test(model, x_test, y_test, eval_batch, amp)
            self.timing["test+record"] += time.monotonic() - tic

    def _evaluate_all(self, model: StackedModel, xs: list[torch.Tensor], eval_batch: int, amp: Any) -> torch.Tensor:
        model.train(False)
        n = xs[0].shape[0]
        key = id(xs)
        if key not in self._stacked:  # each split is stacked once, not every epoch
            self._stacked[key] = self._stack_or_keep(xs)
        data = self._stacked[key]
        outs = []
        with torch.no_grad(), amp():
            for start in range(0, n, eval_batch):
                outs.append(model(self._slice(data, start, start + eval_batch)))
        return torch.cat(outs, dim=1)

    def _end_epoch(self, model, epoch, train_sum, n_train, x_val, y_val, eval_batch, amp) -> None:
        from ..models.outputs import evaluate

        out = self._evaluate_all(model, x_val, eval_batch, amp)
        improved = []
        train_loss = (train_sum / n_train).tolist()
        for i, m in enumerate(self.members):
            if not m.alive:
                improved.append(False)
                continue
            try:
                metrics, _ = evaluate(m.p.kind, m.p.info, m.p.loss, out[i], y_val[i])
            except Exception as exc:  # noqa: BLE001
                self._fail(m, exc)
                improved.append(False)
                continue
            row = {"train_loss": train_loss[i], **{f"val_{k}": v for k, v in metrics.items() if not k.startswith("recall_class_")}}
            m.history.append({"epoch": epoch, **row})
            m.unlogged.append((epoch, row))
            value = metrics.get(m.objective, math.nan)
            good = m.better(value)
            if good:
                m.best_value, m.best_epoch = value, epoch
            improved.append(good)
            if m.on_epoch is not None and math.isfinite(value):
                reason = m.on_epoch(epoch, value)
                if reason:
                    m.stop = (reason, epoch)
        if any(improved):
            mask = torch.tensor(improved, device=self.device)
            state = model.state()
            if self._best is None:
                self._best = {n: t.clone() for n, t in state.items()}
            for n, t in state.items():
                m_ = mask.view(-1, *([1] * (t.dim() - 1)))
                self._best[n] = torch.where(m_, t, self._best[n])
        self._flush()

    def _schedule(self, opt: O.StackedOptimizer) -> None:
        if all(m.scheduler is None for m in self.members):
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*lr_scheduler.step\(\)` before `optimizer.step\(\)`.*")
            for m in self.members:
                if m.scheduler is not None:
                    m.scheduler.step()
        lrs = [float(m.driver.param_groups[0]["lr"]) if m.driver is not None else m.lr for m in self.members]
        opt.set_lr(torch.tensor(lrs, dtype=torch.float64, device=self.device))

    def _test(self, model: StackedModel, x_test, y_test, eval_batch, amp) -> None:
        from ..models.outputs import evaluate

        live = [m for m in self.members if m.alive]
        if not live:
            return
        if self._best is not None:
            has_best = torch.tensor([m.best_epoch >= 0 for m in self.members], device=self.device)
            model.load_where(has_best, self._best)
        out = self._evaluate_all(model, x_test, eval_batch, amp)
        for i, m in enumerate(self.members):
            if not m.alive:
                continue
            try:
                metrics, per_class = evaluate(m.p.kind, m.p.info, m.p.loss, out[i], y_test[i], per_class=True)
                m.test_metrics = {f"test_{k}": v for k, v in metrics.items()}
                if math.isfinite(m.best_value):
                    m.test_metrics[S.METRIC_BEST_VAL] = m.best_value
                m.per_class = per_class
                record_finished(
                    m.p, m.run, m.test_metrics, per_class, m.history, m.objective, curves=m.curves, metrics=self._pending(m)
                )
            except Exception as exc:  # noqa: BLE001
                self._fail(m, exc)
                continue
            m.alive = False
            m.result.status = "FINISHED"
            m.result.metrics = dict(m.test_metrics)


def _adapt(kind: str, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from ..models.outputs import adapt

    return adapt(kind, out, y)


def new_group_id() -> str:
    return uuid.uuid4().hex[:12]


__all__ = ["GroupTrainer", "Member", "compat_key", "describe", "device_of", "new_group_id", "unsupported"]

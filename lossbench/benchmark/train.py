"""One lossbench training run next to a hand-written PyTorch loop doing the same training.

The lossbench side is the real path a user runs: ``pipeline.run(cfg)`` on a config composed
by Hydra from the shipped configs, logging to a temporary SQLite MLflow store that is
created (schema migration and experiment) *before* any timing. Three figures come from each
run, all measured inside the same call:

``run``    the whole ``pipeline.run``: preparing the data and model, the MLflow run and its
           params, ``trainer.fit``, ``trainer.test``, the artifacts (config, per-class table,
           curves figure) and closing the run. What a user waits for.
``fit``    ``trainer.fit`` only (a Lightning callback stamps its ``setup`` and ``teardown``):
           the training epochs plus the validation pass and metrics after every epoch,
           which lossbench needs to select the best epoch. **The headline ratio.**
``train``  ``fit`` minus the validation passes: the training epochs with Lightning's loop,
           hooks and the per-epoch logging.

The hand-written loop (``hand``) trains a copy of the same network, from the same initial
weights, on the same training tensors, with the same batch size, epochs, optimizer (and
scheduler) and loss, shuffling with ``randperm`` each epoch, and nothing else: no validation,
no logging. So ``train / hand`` measures the training loop's own overhead, and
``fit / hand`` adds the cost of the per-epoch validation lossbench does on purpose.

Rounds alternate lossbench, hand, then hand, lossbench, and so on, after one untimed warm-up
of each; the ratios are medians of the per-round ratios. On CUDA both sides synchronise the
device before reading the clock. The profile (on by default; ``--no-profile`` skips it) runs
lossbench once more under cProfile and prints where its time goes: in public entry points
(Lightning's Trainer and the hooks it calls, torch's backward and optimizer step,
``pipeline.prepare``), named as objects so that a rename fails loudly, and inside MLflow and
matplotlib as wholes.

Over 500 lines on purpose: the hand-written reference loop must sit beside the lossbench
side it is compared with, so that a reader can check they do the same work.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import itertools
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import console, describe_machine, machine_info, median, pairwise_ratio, profile_breakdown, write_json

GOAL = 1.3  # fit / hand

EXPERIMENT = "lossbench-benchmark-train"

# Where a profiled lossbench run spends its time. Each part names public entry points as
# objects (a rename fails here, loudly, instead of reading 0): Lightning's Trainer API and the
# hooks it calls by name, torch's backward and optimizer functions, and pipeline.prepare.
# Top-level parts are not nested in each other; indented ones are inside trainer.fit.
def profile_parts() -> dict[str, list[Any]]:
    import pytorch_lightning as pl
    import torch
    from torch.optim import adam, sgd

    from .. import pipeline
    from ..models.module import LossbenchModule

    return {
        "prepare (data, model, first-batch check)": [pipeline.prepare],
        "Trainer construction": [pl.Trainer.__init__],
        "trainer.fit": [pl.Trainer.fit],
        "  training_step (forward, loss, finite check)": [LossbenchModule.training_step],
        "  backward": [torch.Tensor.backward],
        "  optimizer update": [adam.adam, sgd.sgd],  # AdamW's step runs adam() too
        "  validation forward (validation_step)": [LossbenchModule.validation_step],
        "  validation metrics (on_validation_epoch_end)": [LossbenchModule.on_validation_epoch_end],
        "trainer.test": [pl.Trainer.test],
    }


# time inside these packages, whoever called them: it overlaps the parts above
PROFILE_LIBRARIES = {
    "mlflow (the run, params, per-epoch metrics, artifacts)": "/mlflow/",
    "matplotlib (the curves figure)": "/matplotlib/",
}


def _with_remainders(prof: dict[str, Any]) -> dict[str, Any]:
    """Add "the rest" rows: fit minus its indented parts, and the run minus its top-level parts."""
    parts = prof["parts"]
    out: dict[str, float] = {}
    top_sum = 0.0
    child_sum = 0.0
    for label, sec in parts.items():
        if label.startswith("  "):
            child_sum += sec
        else:
            top_sum += sec
        out[label] = sec
    fit = parts.get("trainer.fit", 0.0)
    if fit:
        keys = list(out)
        last_child = max(i for i, k in enumerate(keys) if k.startswith("  "))
        items = list(out.items())
        items.insert(last_child + 1, ("  rest of fit (Lightning loop, hooks, batches)", max(fit - child_sum, 0.0)))
        out = dict(items)
    out["rest of run (MLflow run and artifacts, curves figure, ...)"] = max(prof["total_s"] - top_sum, 0.0)
    return {**prof, "parts": out}


@dataclass
class TrainTiming:
    scenario: dict[str, Any]
    run_s: list[float] = field(default_factory=list)
    fit_s: list[float] = field(default_factory=list)
    val_s: list[float] = field(default_factory=list)
    hand_s: list[float] = field(default_factory=list)
    profile: dict[str, Any] | None = None

    @property
    def train_s(self) -> list[float]:
        return [f - v for f, v in zip(self.fit_s, self.val_s, strict=True)]

    def summary(self) -> dict[str, Any]:
        return {
            "median_s": {
                "run": median(self.run_s),
                "fit": median(self.fit_s),
                "train": median(self.train_s),
                "validation": median(self.val_s),
                "hand": median(self.hand_s),
            },
            "ratio": {
                "run/hand": pairwise_ratio(self.run_s, self.hand_s),
                "fit/hand": pairwise_ratio(self.fit_s, self.hand_s),
                "train/hand": pairwise_ratio(self.train_s, self.hand_s),
            },
        }


# ----------------------------------------------------------------------------- config
def compose(
    *,
    uri: str,
    data: str,
    model: str,
    loss: str,
    epochs: int,
    device: str,
    overrides: Sequence[str] = (),
    experiment: str = EXPERIMENT,
) -> Any:
    """The train config a user would get from ``python -m lossbench loss=.. data=.. model=..``."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from ..__main__ import preflight
    from ..errors import LossbenchError

    choices = [f"loss={loss}", f"data={data}", f"model={model}", *overrides]
    preflight(choices)  # an unknown loss / data / model name: LossbenchError with a did-you-mean
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    extra = []
    if device.startswith("cuda:"):
        extra.append(f"trainer.devices=[{int(device.split(':', 1)[1])}]")
    if GlobalHydra.instance().is_initialized():  # e.g. called from inside a Hydra app
        GlobalHydra.instance().clear()
    try:
        return _compose(choices, epochs, accelerator, extra, uri, experiment)
    except HydraException as exc:
        raise LossbenchError(f"Cannot compose the training config from {' '.join(choices)}: {exc}") from None


def _compose(choices: list[str], epochs: int, accelerator: str, extra: list[str], uri: str, experiment: str) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ..configs import CONFIG_DIR

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return hydra_compose(
            "train",
            overrides=[
                *choices[:3],
                f"trainer.max_epochs={epochs}",
                f"trainer.accelerator={accelerator}",
                *extra,
                "trainer.enable_progress_bar=false",
                f"tracking.uri={uri}",
                f"tracking.experiment_name={experiment}",
                "tracking.skip_finished=false",  # every round trains for real
                *choices[3:],
            ],
        )


# ----------------------------------------------------------------------------- lossbench side
def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _fit_clock() -> Any:
    """A Lightning callback recording the seconds of ``trainer.fit`` and of its validation passes."""
    import pytorch_lightning as pl

    class FitClock(pl.Callback):
        def __init__(self) -> None:
            self.fit_s = math.nan
            self.val_s = 0.0
            self._t0 = self._v0 = 0.0

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if stage == "fit":
                _sync(trainer.strategy.root_device)
                self._t0 = time.perf_counter()

        def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
            if stage == "fit":
                _sync(trainer.strategy.root_device)
                self.fit_s = time.perf_counter() - self._t0

        def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
            if trainer.state.fn == "fit":
                _sync(trainer.strategy.root_device)
                self._v0 = time.perf_counter()

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.state.fn == "fit":
                _sync(trainer.strategy.root_device)
                self.val_s += time.perf_counter() - self._v0

    return FitClock()


def lossbench_once(cfg: Any) -> tuple[float, float, float]:
    """``(run_s, fit_s, val_s)`` of one ``pipeline.run``; fails loudly unless the run FINISHED."""
    from .. import pipeline

    clock = _fit_clock()
    t0 = time.perf_counter()
    result = pipeline.run(cfg, quiet=True, callbacks=[clock])
    run_s = time.perf_counter() - t0
    if result.status != "FINISHED":
        raise RuntimeError(f"the lossbench run ended {result.status}: {result.message}")
    return run_s, clock.fit_s, clock.val_s


# ----------------------------------------------------------------------------- hand side
@dataclass
class HandSetup:
    """What the hand-written loop needs, taken from ``pipeline.prepare`` (same data, same init)."""

    net: Any
    init_state: dict[str, Any]
    loss: Any
    optimizer: Any
    scheduler: Any
    kind: str
    x: Any
    y: Any
    batch_size: int
    data_seed: int


def hand_setup(cfg: Any) -> HandSetup:
    from .. import pipeline

    p = pipeline.prepare(cfg)
    x, y = p.datamodule.tensors("train")
    return HandSetup(
        net=p.net,
        init_state={k: v.detach().clone() for k, v in p.net.state_dict().items()},
        loss=p.loss,
        optimizer=p.optimizer,
        scheduler=p.scheduler,
        kind=p.kind,
        x=x,
        y=y,
        batch_size=int(p.datamodule.batch_size),
        data_seed=int(p.datamodule.seed),
    )


def hand_train(h: HandSetup, epochs: int, device: str) -> tuple[float, Any]:
    """A minimal PyTorch training loop: ``(seconds, trained network)``.

    Timed from moving the model and data to the device to the last optimizer step. Each
    epoch's order is ``randperm`` seeded as lossbench's loader seeds it, so on the CPU both
    sides see the same batches and reach the same weights (the tests check this).
    """
    import torch
    import torch.nn.functional as F

    from ..losses import validation

    net = copy.deepcopy(h.net)
    net.load_state_dict(h.init_state)
    loss_fn = copy.deepcopy(h.loss)
    _sync(device)
    t0 = time.perf_counter()
    net.to(device).train()
    loss_fn.to(device)
    x, y = h.x.to(device), h.y.to(device)
    params = [q for q in itertools.chain(net.parameters(), loss_fn.parameters()) if q.requires_grad]
    opt = h.optimizer(params=params)
    sched = h.scheduler(optimizer=opt) if h.scheduler is not None else None
    n, bs = x.shape[0], h.batch_size
    with validation(False):
        for epoch in range(epochs):
            g = torch.Generator().manual_seed(h.data_seed * 100_003 + epoch)
            order = torch.randperm(n, generator=g).to(device)
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                out, target = net(x[idx]), y[idx]
                if h.kind in ("regression", "binary"):
                    out, target = out.reshape(-1), target.to(out.dtype)
                elif h.kind == "distribution":
                    target = F.one_hot(target, out.shape[1]).to(out.dtype)
                loss = loss_fn(out, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if sched is not None:
                sched.step()
    _sync(device)
    return time.perf_counter() - t0, net


def hand_once(h: HandSetup, epochs: int, device: str) -> float:
    """Seconds of :func:`hand_train`."""
    return hand_train(h, epochs, device)[0]


# ----------------------------------------------------------------------------- benchmark
@contextlib.contextmanager
def _store(tracking_uri: str | None) -> Iterator[str]:
    """The MLflow store to log to, its experiment created: a temporary one unless the user named one.

    A temporary store keeps its artifacts with it (MLflow would otherwise put a SQLite store's
    artifacts under ``./mlruns`` in the working directory).
    """
    from .. import tracking

    if tracking_uri:
        tracking.ensure_experiment(tracking_uri, EXPERIMENT)
        yield tracking_uri
        return
    with tempfile.TemporaryDirectory(prefix="lossbench-bench-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        tracking.client(uri).create_experiment(EXPERIMENT, artifact_location=(Path(tmp) / "artifacts").as_uri())
        yield uri


def bench_train(
    *,
    data: str = "imbalanced",
    model: str = "mlp",
    loss: str = "cross_entropy",
    epochs: int = 5,
    rounds: int = 5,
    device: str = "cpu",
    overrides: Sequence[str] = (),
    profile: bool = True,
    tracking_uri: str | None = None,
    threads: int | None = None,
) -> TrainTiming:
    """Time lossbench and the hand loop alternately; see the module docstring for what is timed."""
    import torch

    from ..errors import LossbenchError
    from ..pipeline import silence_lightning

    if rounds < 1 or epochs < 1:
        raise LossbenchError(f"--rounds and --epochs must be >= 1, got {rounds} and {epochs}.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LossbenchError("--device cuda was asked for, but torch sees no CUDA device. Use --device cpu.")
    if not (device == "cpu" or device.startswith("cuda")):
        raise LossbenchError(f"--device must be cpu, cuda or cuda:N, got {device!r}.")
    from ..__main__ import preflight

    preflight([f"loss={loss}", f"data={data}", f"model={model}", *overrides])  # before any store exists
    silence_lightning()
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _bench(data, model, loss, epochs, rounds, device, overrides, profile, tracking_uri)
    finally:
        torch.set_num_threads(old_threads)


def _bench(
    data: str,
    model: str,
    loss: str,
    epochs: int,
    rounds: int,
    device: str,
    overrides: Sequence[str],
    profile: bool,
    tracking_uri: str | None,
) -> TrainTiming:
    import torch

    with _store(tracking_uri) as uri:  # store creation, migration and experiment: never timed
        cfg = compose(uri=uri, data=data, model=model, loss=loss, epochs=epochs, device=device, overrides=overrides)
        h = hand_setup(cfg)
        n_train = int(h.x.shape[0])
        timing = TrainTiming(
            scenario={
                "data": data,
                "model": model,
                "loss": loss,
                "epochs": epochs,
                "batch_size": h.batch_size,
                "n_train": n_train,
                "steps_per_epoch": math.ceil(n_train / h.batch_size),
                "device": device,
                "overrides": list(overrides),
                "optimizer": str(cfg.optimizer.name),
                "precision": str(cfg.trainer.precision),
                "torch_threads": torch.get_num_threads(),
            }
        )
        with _quiet():
            lossbench_once(cfg)  # warm-up: first-call costs (lazy imports, kernels) are not the loop's
            hand_once(h, epochs, device)
            for r in range(rounds):
                # A B, then B A: a drift in the machine's speed cancels out of the ratios
                if r % 2:
                    timing.hand_s.append(hand_once(h, epochs, device))
                run_s, fit_s, val_s = lossbench_once(cfg)
                timing.run_s.append(run_s)
                timing.fit_s.append(fit_s)
                timing.val_s.append(val_s)
                if not r % 2:
                    timing.hand_s.append(hand_once(h, epochs, device))
            if profile:
                timing.profile = _with_remainders(
                    profile_breakdown(lambda: lossbench_once(cfg), profile_parts(), PROFILE_LIBRARIES)
                )
    return timing


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Lightning prints banners (GPU available, TPU ...) to stdout and warnings to stderr."""
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = logging.getLogger("lightning.pytorch").level, logging.getLogger("pytorch_lightning").level
        for name in ("lightning.pytorch", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                yield
        finally:
            logging.getLogger("lightning.pytorch").setLevel(old[0])
            logging.getLogger("pytorch_lightning").setLevel(old[1])


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--data", default="imbalanced", help="data config (default imbalanced)")
    p.add_argument("--model", default="mlp", help="model config (default mlp)")
    p.add_argument("--loss", default="cross_entropy", help="loss config (default cross_entropy)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE",
        help="extra Hydra override for both sides, e.g. data.n_max=5000 or data.batch_size=512 (repeatable)",
    )
    p.add_argument(
        "--threads", type=int, default=None,
        help="torch intra-op threads for both sides (default: torch's own choice, as a user's run gets)",
    )
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip the profiled extra run")
    p.add_argument("--tracking-uri", default=None, help="MLflow store to log to (default: a temporary SQLite file)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def run(args: argparse.Namespace) -> dict[str, Any]:
    t = bench_train(
        data=args.data,
        model=args.model,
        loss=args.loss,
        epochs=args.epochs,
        rounds=args.rounds,
        device=args.device,
        overrides=args.override,
        profile=args.profile,
        tracking_uri=args.tracking_uri,
        threads=args.threads,
    )
    machine = {**machine_info(args.device), "torch_threads": t.scenario["torch_threads"]}
    payload = {
        "benchmark": "train",
        "machine": machine,
        "settings": {**t.scenario, "rounds": args.rounds, "goal_fit_over_hand": GOAL},
        "rounds": {"run_s": t.run_s, "fit_s": t.fit_s, "validation_s": t.val_s, "train_s": t.train_s,
                   "hand_s": t.hand_s},
        **t.summary(),
        "profile": t.profile,
    }
    print_result(t, machine, args.rounds)
    if args.json:
        write_json(args.json, payload)
    return payload


def print_result(t: TrainTiming, machine: dict[str, Any], rounds: int) -> None:
    from rich.table import Table

    s = t.summary()
    sc = t.scenario
    out = console()
    table = Table(
        title=f"Training: data={sc['data']} model={sc['model']} loss={sc['loss']}, {sc['epochs']} epochs x "
        f"{sc['steps_per_epoch']} steps (batch {sc['batch_size']}, {sc['n_train']} samples), {sc['device']}",
        caption=f"median of {rounds} alternating rounds; ratio = median of per-round ratios; goal fit/hand <= {GOAL}x",
    )
    table.add_column("lossbench part")
    table.add_column("median s", justify="right")
    table.add_column("vs hand loop", justify="right")
    hand = s["median_s"]["hand"]
    rows = [
        ("run  (pipeline.run: prepare, MLflow, fit, test, artifacts)", "run", "run/hand"),
        ("fit  (trainer.fit: training + per-epoch validation)", "fit", "fit/hand"),
        ("train (fit minus validation)", "train", "train/hand"),
        ("validation passes (inside fit)", "validation", None),
    ]
    for label, key, ratio_key in rows:
        ratio = s["ratio"].get(ratio_key) if ratio_key else None
        shown = "" if ratio is None else f"{ratio:.2f}x"
        if ratio_key == "fit/hand" and ratio is not None:
            shown += "" if ratio <= GOAL else " [red](over goal)[/]"
        table.add_row(label, f"{s['median_s'][key]:.3f}", shown)
    table.add_row("hand-written PyTorch loop", f"{hand:.3f}", "1.00x")
    out.print(table)
    steps = sc["epochs"] * sc["steps_per_epoch"]
    if steps and hand:
        per_step_hand = 1e3 * hand / steps
        per_step_lb = 1e3 * (s["median_s"]["train"] or 0.0) / steps
        out.print(
            f"per training step: lossbench {per_step_lb:.2f} ms (incl. per-epoch hooks), hand {per_step_hand:.2f} ms"
        )
    if t.profile:
        prof = Table(title=f"Where a lossbench run spends its time (one profiled run, {t.profile['total_s']:.2f} s "
                     f"under cProfile; read shares, not absolute times)",
                     caption="the last rows: time inside a library, whoever called it (they overlap the rows above "
                     "and each other: MLflow saves the figure with matplotlib)")
        prof.add_column("part")
        prof.add_column("s", justify="right")
        prof.add_column("share", justify="right")
        total = t.profile["total_s"] or 1.0
        for label, sec in t.profile["parts"].items():
            prof.add_row(label, f"{sec:.3f}", f"{100 * sec / total:.0f}%")
        libraries = t.profile.get("libraries", {})
        if libraries:
            prof.add_section()
            for label, sec in libraries.items():
                prof.add_row(f"inside {label}", f"{sec:.3f}", f"{100 * sec / total:.0f}%")
        out.print(prof)
        top = Table(title="Top functions by own time (profiled run)")
        top.add_column("function")
        top.add_column("own s", justify="right")
        top.add_column("calls", justify="right")
        for row in t.profile["top_own_time"][:10]:
            top.add_row(row["function"], f"{row['own_s']:.3f}", str(row["calls"]))
        out.print(top)
    out.print(f"Machine: {describe_machine(machine)}")


__all__ = ["TrainTiming", "bench_train", "compose", "hand_once", "hand_setup", "hand_train", "lossbench_once"]

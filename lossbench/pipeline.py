"""One experiment: resolved config in, one MLflow run out.

``run(cfg)`` knows nothing of Hydra's command line: it takes a composed config (from the
CLI, a sweep, or a test) and does, in order: validate everything a user can get wrong
(data, loss, model, optimizer, tracking) before any training; create the MLflow run;
train; select the best validation epoch; test; record. A diverged loss, an error, and
an interruption each end the run with its own status, so the record stays complete.

Over 500 lines on purpose: it is the one path every run takes, from config to record, and
both engines call its pieces (prepare, run_tags, record_finished); the checks, the run's
life and its records stay together so no engine can skip one.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import json
import logging
import math
import os
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from . import __version__
from . import schema as S
from . import tracking
from .configs import CONFIG_DIR
from .constraints import Interval, Options
from .errors import LossbenchError, ParameterError, did_you_mean, unknown_name

log = logging.getLogger("lossbench")

# data config keys that say where/how data is read, not which data variant it is
_NOT_SCENARIO = ("seed", "batch_size", "eval_batch_size", "data_dir", "download", "verify_md5", "name")


@dataclass
class RunResult:
    status: str  # FINISHED | FAILED | KILLED | SKIPPED
    run_name: str
    run_id: str | None = None
    experiment_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    failure: str | None = None  # diverged | error
    message: str = ""
    tracking_uri: str = ""
    experiment_name: str = ""
    objective: str = ""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run (the run is recorded as KILLED)."""


class RunStopped(Exception):
    """Raised by a callback to end a run early on purpose (e.g. a pruned Optuna trial).

    The run is recorded with ``status`` and ``tags``; the test split is not scored.
    """

    def __init__(self, reason: str, status: str = "KILLED", tags: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.tags = status, dict(tags or {})


# ---------------------------------------------------------------------------- quiet
def silence_lightning() -> None:
    """Silence Lightning's tips and known-harmless warnings; keep real warnings."""
    import pytorch_lightning  # noqa: F401 - its import sets its loggers to INFO; override after

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        r".*does not have many workers.*",
        r".*GPU available but not used.*",
        r".*The number of training batches .* is smaller than the logging interval.*",
        r".*Your `.*_dataloader`'s sampler has shuffling enabled.*",
        r".*Total length of `.*` across ranks is zero.*",
        r".*`training_step` returned `None`.*",
        r".*torch.cuda.amp.*deprecated.*",
        r".*Checkpoint directory .* exists and is not empty.*",
        r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
        r".*You defined a `validation_step` but have no `val_dataloader`.*",
        r".*when logging on epoch level in distributed setting.*",  # every DDP rank logs rank 0's broadcast numbers
    ):
        warnings.filterwarnings("ignore", message=pattern)
    if torch.cuda.is_available():  # Tensor Cores: say what we want instead of being warned
        torch.set_float32_matmul_precision("high")


# ---------------------------------------------------------------------------- build
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (what Lightning's
    ``seed_everything`` does, without importing Lightning), and say so in
    ``PL_GLOBAL_SEED`` for any Lightning code that reads it."""
    import random

    import numpy as np

    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every device's generator, CUDA's included


def lightning_datamodule(dm: Any) -> Any:
    """A lossbench dataset as a Lightning ``LightningDataModule`` (for ``trainer.fit``)."""
    import pytorch_lightning as pl

    class _Adapter(pl.LightningDataModule):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def prepare_data(self) -> None:
            self.inner.prepare_data()

        def setup(self, stage: str | None = None) -> None:
            self.inner.setup(stage)

        def train_dataloader(self) -> Any:
            return self.inner.train_dataloader()

        def val_dataloader(self) -> Any:
            return self.inner.val_dataloader()

        def test_dataloader(self) -> Any:
            return self.inner.test_dataloader()

        def to_device(self, device: Any) -> None:
            self.inner.to_device(device)

    return _Adapter(dm)


def _split_name(node: Mapping[str, Any], group: str) -> tuple[str, dict[str, Any]]:
    d = dict(node)
    name = d.pop("name", None)
    if name is None:
        raise LossbenchError(f"The {group} config has no 'name'. Choose one with {group}=<name>.")
    return str(name), d


def _nested_target(value: Any, top: bool = True) -> bool:
    if isinstance(value, Mapping):
        return (not top and "_target_" in value) or any(_nested_target(v, False) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_nested_target(v, False) for v in value)
    return False


def _instantiate(group: str, name: str, node: dict[str, Any], **extra: Any) -> Any:
    """hydra.utils.instantiate with errors turned into a message naming the bad key."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_class, instantiate

    target = node.get("_target_")
    if target is None:
        raise LossbenchError(f"The {group} config '{name}' has no _target_.")
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001
        cls = None
    if cls is not None:
        sig = inspect.signature(cls)
        accepted = set(sig.parameters)
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            for key in node:
                if not key.startswith("_") and key not in accepted:
                    raise unknown_name(
                        f"{group} parameter",
                        key,
                        sorted(accepted - set(extra)),
                        hint=f"(for {group} '{name}'; set a known one with {group}.<parameter>=<value>)",
                    )
    if cls is not None and not _nested_target(node) and set(k for k in node if k.startswith("_")) <= {"_target_", "_partial_"}:
        # a flat node (every shipped config): call the class, as hydra's instantiate would,
        # without building OmegaConf objects for it (a third of a small run's preparation)
        kwargs = {k: v for k, v in node.items() if not k.startswith("_")}
        if node.get("_partial_"):
            return functools.partial(cls, **kwargs, **extra)
        try:
            return cls(**kwargs, **extra)
        except LossbenchError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise LossbenchError(f"Cannot build {group} '{name}': {exc}") from None
    try:
        return instantiate(node, **extra, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, LossbenchError):
            raise cause from None
        raise LossbenchError(f"Cannot build {group} '{name}': {cause or exc}") from None


def scenario_key(data_name: str, data_cfg: Mapping[str, Any]) -> str:
    parts = [
        f"{k}={data_cfg[k]}" for k in sorted(data_cfg)
        if k not in _NOT_SCENARIO and not k.startswith("_") and not (k == "objective" and data_cfg[k] is None)
    ]
    return f"{data_name}({', '.join(parts)})" if parts else data_name


@dataclass
class Prepared:
    cfg: dict[str, Any]
    datamodule: Any
    info: Any
    loss: torch.nn.Module
    loss_name: str
    loss_params: dict[str, Any]
    data_name: str
    model_name: str
    net: torch.nn.Module
    kind: str
    optimizer: Any
    scheduler: Any
    seed: int
    variant: str | None = None

    @property
    def label(self) -> str:
        """What a person calls this loss: the variant's name if it has one."""
        return self.variant or self.loss_name


def build_data(node: Mapping[str, Any]) -> tuple[str, Any]:
    """The data config's name and its data module (not loaded yet; ``.info`` loads it)."""
    data_name, data_cfg = _split_name(node, "data")
    objective = data_cfg.pop("objective", None)  # a choice of the run, not an argument of the data
    dm = _instantiate("data", data_name, data_cfg)
    if objective is not None:
        dm.set_objective(objective)
    return data_name, dm


_SEED = Interval(int, 0, 2**32 - 1, "both")  # numpy's seed range
_POSITIVE = Interval(float, 0, math.inf, "neither")
_RUN_CHECKS = {
    "trainer.max_epochs": Interval(int, 1),
    "trainer.min_epochs": Interval(int, 0),
    "optimizer.weight_decay": Interval(float, 0),
    "optimizer.momentum": Interval(float, 0),
    "scheduler.T_max": Interval(int, 1),
    "scheduler.step_size": Interval(int, 1),
}


_ACCELERATOR = Options("auto", "cpu", "gpu", "cuda", "mps")
_PRECISION = Options(*(str(p) for p in (64, 32, 16, "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed")))


def _check_trainer(t: Mapping[str, Any]) -> None:
    """Lightning's own errors come only once the run exists, as tracebacks: check first."""
    accelerator = _ACCELERATOR.check("trainer.accelerator", str(t.get("accelerator", "auto")))
    _PRECISION.check("trainer.precision", str(t.get("precision", "32-true")))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ParameterError(
            f"trainer.accelerator={accelerator}, but torch sees no GPU on this machine. "
            "Use trainer=cpu, or trainer.accelerator=auto to take a GPU when there is one."
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ParameterError("trainer.accelerator=mps, but this machine has no Apple GPU. Use trainer.accelerator=auto.")
    extra = sorted(set(t) - _trainer_keys())
    if extra:  # a +trainer.<arg>: Lightning's signature says which it takes
        import inspect

        import pytorch_lightning as pl

        takes = [k for k in inspect.signature(pl.Trainer.__init__).parameters if k != "self"]
        for k in extra:
            if k not in takes:
                raise ParameterError(
                    f"trainer.{k} is not an argument of Lightning's Trainer.{did_you_mean(k, takes)} "
                    "See https://lightning.ai/docs/pytorch/stable/common/trainer.html#trainer-class-api."
                )


@functools.cache
def _trainer_keys() -> frozenset[str]:
    """The keys the shipped trainer configs set: Lightning arguments known to be fine."""
    from .overrides import load_config

    return frozenset(k for f in (CONFIG_DIR / "trainer").glob("*.yaml") for k in load_config(f)) - {"defaults"}


def prepare(cfg: DictConfig | Mapping[str, Any]) -> Prepared:
    """Everything up to (not including) training. Every user mistake surfaces here."""
    from .losses import validation
    from .models.networks import resolve_head, with_head
    from .models.outputs import adapt, num_outputs, output_kind
    from .registry import loss_info

    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    for key in ("loss", "data", "model", "optimizer", "trainer", "tracking"):
        if key not in c or c[key] is None:
            raise LossbenchError(f"The config has no '{key}' node. Choose one with {key}=<name>.")
    seed = _SEED.check("seed", c.get("seed", 0))
    _check_trainer(c["trainer"])
    for key, constraint in _RUN_CHECKS.items():  # checked before anything is built or recorded
        group, _, name = key.partition(".")
        node = c.get(group) or {}
        if node.get(name) is not None:
            constraint.check(key, node[name])

    seed_everything(seed)
    data_name, dm = build_data(c["data"])
    info = dm.info  # loads and checks the data

    loss_name, loss_cfg = _split_name(c["loss"], "loss")
    loss_cfg.pop("reduction", None)
    variant = loss_cfg.pop("variant", None)  # a named config variant (configs/loss/label_smoothing.yaml)
    loss = _build_loss(loss_name, loss_cfg, info)
    kind = output_kind(tuple(loss.tasks), info.task)

    model_name, model_cfg = _split_name(c["model"], "model")
    head = resolve_head(model_cfg.pop("head", "auto"), loss_info(loss_name).head, loss_name)
    net = _instantiate("model", model_name, model_cfg, input_shape=tuple(info.input_shape), num_outputs=num_outputs(kind, info))
    net = with_head(net, head)
    c["model"]["head"] = head  # recorded as resolved; the batched engine groups by it

    opt_cfg = dict(c["optimizer"])
    opt_name = opt_cfg.pop("name", "optimizer")
    _POSITIVE.check("optimizer.lr", opt_cfg.get("lr"))
    opt_cfg["_partial_"] = True
    optimizer = _instantiate("optimizer", opt_name, opt_cfg)
    sched_cfg = c.get("scheduler")
    scheduler = None
    if sched_cfg:
        sched_cfg = dict(sched_cfg)
        sched_name = sched_cfg.pop("name", "scheduler")
        sched_cfg["_partial_"] = True
        scheduler = _instantiate("scheduler", sched_name, sched_cfg)
        try:  # its own checks (milestones, gamma) run on construction: before the run exists
            scheduler(optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0))
        except TypeError as exc:
            raise ParameterError(f"Cannot build scheduler '{sched_name}': {exc}") from None

    # one real forward pass with value checks on, so shape/label problems surface now
    x, y = dm.tensors("train")
    with validation(True), torch.no_grad():
        loss(*adapt(kind, net(x[:8]), y[:8]))
    spec_params = {p.name for p in loss_info(loss_name).params}
    loss_params = {k: v for k, v in loss_cfg.items() if k in spec_params and k != "class_counts"}
    return Prepared(
        c, dm, info, loss, loss_name, loss_params, data_name, model_name, net, kind, optimizer, scheduler, seed, variant
    )


def _build_loss(name: str, params: dict[str, Any], info: Any) -> torch.nn.Module:
    from .registry import create_loss

    return create_loss(name, context=info, **params)


# ---------------------------------------------------------------------------- run
@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's cancel) ends the run like Ctrl-C: recorded as KILLED."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# where a DDP rank reads its number before any Trainer exists: Lightning's ddp re-runs the
# command for ranks 1..n-1 with LOCAL_RANK (and NODE_RANK on other nodes) set; torchrun sets
# RANK, SLURM SLURM_PROCID
_RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
# what Lightning's ddp launcher sets in rank 0's own environment
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def is_rank_zero() -> bool:
    """Whether this process records runs: DDP's rank 0, or any process outside DDP.

    Under DDP only rank 0 creates and writes the MLflow run; the other ranks train in step
    with it and never touch the store (no experiment, no skip check, no run).
    """
    return all(os.environ.get(k, "0").strip() in ("", "0") for k in _RANK_VARS)


@contextlib.contextmanager
def _ddp_session(trainer: Any, cfg: Mapping[str, Any]) -> Iterator[None]:
    """Lightning's ``ddp`` as one run's business, in rank 0.

    Lightning starts ranks 1..n-1 at ``fit`` by re-running this process's command
    (``sys.argv`` as ``python -m <__main__>``), and leaves its rank variables in the
    environment and its process group open. That command may be a whole sweep, a group
    job's several runs, a joblib worker's or a user's script; so for the time the ranks
    start it is ``python -m lossbench`` on this run's resolved config, written to a file:
    every rank trains exactly this run. Afterwards the process group is closed (a rank still
    waiting in a collective then fails at once), the ranks are reaped, and the environment
    is as it was, so a sweep's next job starts ranks of its own instead of waiting for this
    job's, which are gone.

    Lightning also watches the ranks it started and SIGKILLs this process when one exits
    non-zero. That guards the training (a rank that died leaves the others waiting); once
    the training is over it would only kill rank 0 before it records the run, or kill a
    whole sweep, so the watch ends with the training.
    """
    import shutil
    import tempfile

    from hydra.core.hydra_config import HydraConfig

    from . import __main__ as entry

    saved_env = {k: os.environ.get(k) for k in _DDP_ENV}
    saved_argv, saved_main = sys.argv, sys.modules.get("__main__")
    job = tempfile.mkdtemp(prefix="lossbench-ddp-")
    with open(os.path.join(job, "job.yaml"), "w") as f:
        f.write(OmegaConf.to_yaml(OmegaConf.create(dict(cfg))))
    args = ["--config-dir", job, "--config-name", "job"]
    if not HydraConfig.initialized():  # Lightning adds the run folder itself under Hydra
        args += [f"hydra.run.dir={job}", "hydra.output_subdir=null"]
    sys.argv = [saved_argv[0], *args]
    sys.modules["__main__"] = entry
    try:
        yield
    finally:
        sys.argv = saved_argv
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
        ranks = getattr(trainer.strategy.launcher, "procs", None) or []
        started = list(ranks)
        ranks.clear()  # the watcher's list: with no ranks to watch it stands down
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for proc in started:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(job, ignore_errors=True)


def _check_strategy(t: Mapping[str, Any]) -> None:
    """Lightning's spawn and fork strategies train in new processes and hand back only the
    weights: the run's record (its epochs, best epoch, test metrics) would be lost."""
    strategy = str(t.get("strategy", "auto"))
    if any(w in strategy for w in ("spawn", "fork", "notebook")):
        raise ParameterError(
            f"trainer.strategy={strategy} trains in processes that hand back only the weights, so the run "
            "could not be recorded. Use trainer.strategy=ddp (trainer=ddp): it starts the other ranks as "
            "processes of their own and rank 0 records the run."
        )


def skip_if_finished(result: RunResult, c: Mapping[str, Any], chash: str) -> bool:
    """Before a config trains, whichever engine trains it: its runs left RUNNING by a process
    that is gone are ended KILLED; and with ``tracking.skip_finished`` (the default),
    ``result`` is marked SKIPPED when a run of this config hash already FINISHED."""
    assert result.experiment_id is not None
    runs = tracking.runs_of_config(result.tracking_uri, result.experiment_id, chash)
    tracking.settle_stuck(result.tracking_uri, runs)
    if not c["tracking"].get("skip_finished", True):
        return False
    done = runs[0].info.run_id if runs and runs[0].info.status == "FINISHED" else None
    if done:
        result.status, result.run_id = "SKIPPED", done
        result.message = f"already FINISHED as run {done} (tracking.skip_finished=false runs it again)"
    return bool(done)


def run_name(p: Prepared) -> str:
    return f"{p.label}-{p.data_name}-s{p.seed}"


def run_tags(
    p: Prepared,
    chash: str,
    *,
    sweep_id: str | None = None,
    overrides: str = "",
    extra_tags: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The tags of a run: the same whichever engine trains it (the engine adds its own)."""
    info = p.info
    return {
        S.TAG_LOSS: p.loss_name,
        S.TAG_DATA: p.data_name,
        S.TAG_MODEL: p.model_name,
        S.TAG_TASK: info.task,
        S.TAG_SEED: p.seed,
        S.TAG_VERSION: __version__,
        S.TAG_GIT: tracking.git_commit(),
        S.TAG_OVERRIDES: overrides or None,
        S.TAG_SWEEP: sweep_id,
        S.TAG_PARENT: tracking.sweep_parent(str(p.cfg["tracking"]["uri"]), str(p.cfg["tracking"]["experiment_name"]), sweep_id)
        if sweep_id else None,
        S.TAG_CONFIG_HASH: chash,
        S.TAG_OWNER: tracking.owner(),
        S.TAG_SCENARIO: scenario_key(p.data_name, p.cfg["data"]),
        S.TAG_OBJECTIVE: info.objective,
        S.TAG_OBJECTIVE_MODE: info.objective_mode,
        S.TAG_LOSS_PARAMS: json.dumps(p.loss_params, sort_keys=True, default=str),
        S.TAG_LOSS_VARIANT: p.variant,
        "mlflow.note.content": f"lossbench {__version__}: loss={p.loss_name} data={p.data_name} model={p.model_name} seed={p.seed}",
        **(extra_tags or {}),
    }


def run_params(p: Prepared) -> dict[str, Any]:
    """The params of a run: the resolved config (less how it runs) and the data's measured traits."""
    params = tracking.flatten({k: v for k, v in p.cfg.items() if k != "engine"})
    for k, v in p.info.as_dict().items():
        if k in ("extra", "class_counts"):
            continue
        params[f"data_info.{k}"] = v
    return params


def curves_wanted(c: Mapping[str, Any], multirun: bool) -> bool:
    """``tracking.curves``: auto draws the PNG for a single run; a sweep leaves it to MLflow's charts."""
    flag = c["tracking"].get("curves", "auto")
    if flag == "auto":
        return not multirun
    return bool(flag)


def record_finished(
    p: Prepared,
    run: tracking.Run,
    test_metrics: Mapping[str, float],
    per_class: list[dict[str, Any]],
    history: list[dict[str, float]],
    objective: str,
    *,
    curves: bool,
    metrics: Sequence[Any] = (),
) -> None:
    """What every FINISHED run records after its test, whichever engine trained it.

    ``metrics`` are MLflow metrics not yet written (the last epochs), sent with the test
    metrics in the same batch as the run's end.
    """
    files: dict[str, Any] = {S.ARTIFACT_CONFIG: OmegaConf.to_yaml(OmegaConf.create(p.cfg))}
    if per_class:
        files[S.ARTIFACT_PER_CLASS] = per_class
    if curves:
        log_curves(run, history, objective)
    step = max((int(r["epoch"]) + 1 for r in history), default=0)  # the epochs trained, as both engines count
    run.end("FINISHED", metrics=[*metrics, *tracking.metrics_at([(step, test_metrics)])], artifacts=files)


def _progress_enabled(c: Mapping[str, Any], multirun: bool) -> bool:
    flag = c["trainer"].get("enable_progress_bar", "auto")
    if flag == "auto":
        return (not multirun) and sys.stdout.isatty()
    return bool(flag)


def run(
    cfg: DictConfig | Mapping[str, Any],
    *,
    sweep_id: str | None = None,
    overrides: str = "",
    multirun: bool = False,
    quiet: bool = False,
    callbacks: list[Any] | None = None,
    extra_tags: Mapping[str, Any] | None = None,
) -> RunResult:
    """Train and record one run. Raises LossbenchError for a user mistake, before any run exists.

    ``callbacks`` are extra Lightning callbacks (e.g. Optuna pruning); one may raise
    :class:`RunStopped` to end the run early. ``extra_tags`` are added to the run's tags.
    """
    silence_lightning()
    p = prepare(cfg)
    c = p.cfg
    uri = str(c["tracking"]["uri"])
    exp_name = str(c["tracking"]["experiment_name"])
    result = RunResult("RUNNING", run_name(p), tracking_uri=uri, experiment_name=exp_name, objective=p.info.objective)
    _check_strategy(c["trainer"])
    if not is_rank_zero():  # a DDP rank 1..n-1: it trains in step with rank 0, which records
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - rank 0 reports the run; this one's banners and summary would repeat it
        _train(p, None, result, multirun=multirun, quiet=True, callbacks=callbacks or [])
        return result
    exp_id = tracking.ensure_experiment(uri, exp_name)
    result.experiment_id = exp_id
    chash = tracking.config_hash(c)
    if skip_if_finished(result, c, chash):
        return result

    tags = run_tags(p, chash, sweep_id=sweep_id, overrides=overrides, extra_tags={S.TAG_ENGINE: "sequential", **(extra_tags or {})})
    params = run_params(p)
    run: tracking.Run | None = None
    try:
        with _sigterm_as_interrupt():  # from the run's creation on, SIGTERM ends it KILLED like Ctrl-C
            with tracking.signals_deferred():  # a signal during the creation arrives once run is known
                run = tracking.Run.start(uri, exp_id, result.run_name, tags, params)
                result.run_id = run.run_id
            _train(p, run, result, multirun=multirun, quiet=quiet, callbacks=callbacks or [])
    except KeyboardInterrupt:
        if run is not None and result.status == "RUNNING":  # interrupted outside fit (setup, test, logging)
            result.status = "KILLED"
            run.end("KILLED")
        raise
    except BaseException as exc:
        if run is not None and result.status == "RUNNING":  # anything _train did not record
            result.status, result.failure = "FAILED", S.FAILURE_ERROR
            lost = tracking.removed_store_message(uri) if isinstance(exc, Exception) else None
            if lost is not None:  # the store was deleted: nothing can be recorded, say so once
                result.message = lost
                return result
            run.end("FAILED", {S.TAG_FAILURE: S.FAILURE_ERROR}, artifacts={S.ARTIFACT_TRACEBACK: traceback.format_exc()})
        raise
    return result


def _train(
    p: Prepared, run: tracking.Run | None, result: RunResult, *, multirun: bool, quiet: bool, callbacks: list[Any]
) -> None:
    """Fit, select, test and record. ``run`` is None on a DDP rank other than 0: it does
    all the work in step with rank 0 (whose records are the run's) and writes nothing."""
    import pytorch_lightning as pl

    from .losses import validation
    from .models.module import Diverged, LossbenchModule

    c = p.cfg
    module = LossbenchModule(p.net, p.loss, p.optimizer, p.info, p.kind, scheduler=p.scheduler)
    # the run is written by lossbench alone: Lightning has no logger to end it
    module.sink = run.log_metrics if run is not None else None

    def end(status: str, tags: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if run is not None:
            run.end(status, tags, **kwargs)

    def curves_so_far() -> None:
        if curves and run is not None:
            log_curves(run, module.history, module.objective)
    datamodule = lightning_datamodule(p.datamodule)
    trainer_cfg = dict(c["trainer"])
    trainer_cfg.pop("enable_progress_bar", None)
    callbacks = list(callbacks)
    progress = _progress_enabled(c, multirun) and not quiet
    curves = curves_wanted(c, multirun)
    if progress:
        from pytorch_lightning.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=False))
    trainer = pl.Trainer(
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        **trainer_cfg,
    )
    try:
        with _sigterm_as_interrupt(), validation(False), _quiet_stdout(not progress), \
                _ddp_session(trainer, c) if run is not None and trainer.world_size > 1 else contextlib.nullcontext():
            try:
                trainer.fit(module, datamodule=datamodule)
            finally:  # whatever ends the fit, the epochs it ran are in the record
                module.flush_metrics()
            module.restore_best()  # every DDP rank chose the same epoch: the same broadcast numbers
            trainer.test(module, datamodule=datamodule, verbose=False)
    except Diverged as exc:
        result.status, result.failure = "FAILED", S.FAILURE_DIVERGED
        result.message = str(exc)
        curves_so_far()
        end("FAILED", {S.TAG_FAILURE: S.FAILURE_DIVERGED, S.TAG_FAILURE_STEP: exc.step})
        return
    except RunStopped as exc:
        result.status, result.message = exc.status, str(exc)
        result.metrics = {S.METRIC_BEST_VAL: module.best_value} if math.isfinite(module.best_value) else {}
        curves_so_far()
        end(exc.status, exc.tags)
        return
    except (KeyboardInterrupt, SystemExit) as exc:
        if isinstance(exc, SystemExit) and trainer.state.status.value != "interrupted":
            raise
        result.status, result.message = "KILLED", "interrupted"
        end("KILLED")
        raise Interrupted("interrupted") from None
    except Exception as exc:  # noqa: BLE001 - any other failure is recorded, then reported
        result.status, result.failure = "FAILED", S.FAILURE_ERROR
        result.message = f"{type(exc).__name__}: {exc}"
        lost = tracking.removed_store_message(run.uri) if run is not None else None
        if lost is not None:  # nothing can be recorded: say so, once
            result.message = lost
            return
        end("FAILED", {S.TAG_FAILURE: S.FAILURE_ERROR}, artifacts={S.ARTIFACT_TRACEBACK: traceback.format_exc()})
        return
    result.metrics = dict(module.test_metrics)
    if run is not None:
        record_finished(p, run, module.test_metrics, module.per_class, module.history, module.objective, curves=curves)
    result.status = "FINISHED"


@contextlib.contextmanager
def _quiet_stdout(enabled: bool) -> Iterator[None]:
    """Without a progress bar, swallow what Lightning prints to stdout (its banners)."""
    if not enabled or os.environ.get("LOSSBENCH_DEBUG"):
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def log_curves(run: tracking.Run, history: list[dict[str, float]], objective: str) -> None:
    """The per-run training-curves PNG (``tracking.curves``)."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for row in history for k in row if k != "epoch"})
    shown = [k for k in ("train_loss", "val_loss", f"val_{objective}") if k in keys]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3), squeeze=False)
    for ax, key in zip(axes[0], shown, strict=True):
        xs = [r["epoch"] for r in history if key in r]
        ys = [r[key] for r in history if key in r]
        ax.plot(xs, ys, marker="o", ms=3)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    run.log_figure(fig, S.ARTIFACT_CURVES)
    plt.close(fig)

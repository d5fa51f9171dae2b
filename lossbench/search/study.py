"""One Optuna study per loss, the same trial budget for each, every trial one MLflow run.

The studies live apart from MLflow: a journal file by default, or a database. A study's
budget counts its complete, pruned and failed trials over every run of the command and
every worker, so re-running the command continues a study up to ``search.n_trials``.
Workers sharing a study file count and ask under one file lock, so the budget is exact
(on a database server a rare race may add a trial per extra worker). A trial stopped by
Ctrl-C or SIGTERM, or left RUNNING by a worker that died, ends FAIL and is queued again
with its parameters by Optuna's retry callback, and does not count. The sampler of trial
*n* is seeded from ``(search.seed, n)``: the same command proposes the same trials however
many workers and restarts it took. ``search.batch_size`` trials are asked for at once and
trained as one stacked group, hence ask/tell rather than ``Study.optimize`` (one trial a call).

Over 500 lines on purpose: the study's life (plan, storage, budget lock, stale trials,
batches, best run) is one sequence whose steps share the same objects; split apart, each
half would need the other's internals.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import socket
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from .. import overrides as ov
from .. import schema as S
from .. import tracking
from ..errors import LossbenchError, ParameterError, path_blocker, unknown_name
from .space import SearchSettings, check_loss_keys, distribution, loss_space

TAG_BEST, ARTIFACT_BEST = S.TAG_BEST, S.ARTIFACT_BEST  # MLflow names (TAG_STUDY/TAG_TRIAL: lossbench.schema)
# Optuna trial user attributes
ATTR_RUN = "mlflow_run_id"
ATTR_WORKER = "worker"  # {"host": ..., "pid": ...}
ATTR_FAILURE = "failure"  # diverged | error | no_objective | interrupted | invalid
ATTR_MESSAGE = "message"
_UNCOUNTED = ("interrupted", "invalid")  # failures that did not use up a trial of the budget
# Optuna study user attributes: what a study was created for, checked when it continues
ATTR_LOSS, ATTR_OBJECTIVE = "lossbench_loss", "lossbench_objective"
ATTR_SPACE, ATTR_CONFIG = "lossbench_search_space", "lossbench_config"
# set on every trial, a new run each time; they change no result, so a study's identity leaves them out
_TRIAL_SETTINGS = {"trainer.enable_progress_bar": False, "tracking.skip_finished": False}
# on a database storage a running trial beats every HEARTBEAT_S; silent for GRACE_S, it is stale
HEARTBEAT_S, GRACE_S = 20, 60

Printer = Callable[[str], None]
_print: Printer = functools.partial(print, flush=True)
_ABSENT = object()


@dataclass
class LossOutcome:
    """One loss's study: its plan, checked before any trial runs, then where it stands after this
    process's trials."""

    loss: str  # the loss config's name (a loss, or a named variant of one)
    cfg: DictConfig
    space: dict[str, dict[str, Any]]
    fixed: list[str]  # keys of the loss's space held at their configured value
    budget: int
    objective: str  # the validation metric optimised, e.g. "val_balanced_accuracy"
    direction: str  # maximize | minimize
    study_name: str
    overrides: list[str]  # training overrides that reproduce the base config
    identity: dict[str, Any]
    note: str = ""
    storage: str = ""
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_trial: int | None = None
    best_run_id: str | None = None
    trials: list[Any] = field(default_factory=list)  # the FrozenTrials this process ran
    timed_out: bool = False

    @property
    def used(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def errors(self) -> int:
        """Trials of this process that failed with an error (not a divergence)."""
        return sum(1 for t in self.trials if t.user_attrs.get(ATTR_FAILURE) == S.FAILURE_ERROR)


LossPlan = LossOutcome  # before its trials run, the same object is the loss's plan


# ---------------------------------------------------------------------------- config
def normalize_overrides(args: Sequence[str]) -> list[str]:
    """``loss=a,b`` (or ``choice``, ``glob``) and ``search.losses=a,b`` -> ``search.losses=[a,b]`` plus ``loss=a``.

    A plain Hydra app refuses a sweep outside ``-m``; the search runs its losses itself. An unknown name is refused.
    """
    out: list[str] = []
    losses: list[str] | None = None
    loss_given, at = False, 0
    for arg in args:
        o = ov.parse(arg) if ov.is_override(arg) else None
        key = o.key_or_group if o is not None else ""
        if (key == "loss" and o.is_sweep_override()) or key == "search.losses":
            if losses is not None:
                raise ParameterError("Name the losses once: either loss=a,b or search.losses=[a,b].")
            losses = ov.names(o, loss_choices())
            unknown = [n for n in losses if n not in loss_choices()]
            if unknown:  # a typo gets a did-you-mean
                raise unknown_name("loss", unknown[0], loss_choices(), hint="List them with `python -m lossbench.losses`.")
            at = len(out)  # in its place: after a flag such as --cfg job, Hydra would not read it
            continue
        loss_given = loss_given or key == "loss"
        out.append(arg)
    if losses:
        out[at:at] = [f"search.losses=[{','.join(losses)}]"] + ([] if loss_given else [f"loss={losses[0]}"])
    return out


def loss_choices() -> list[str]:
    """The loss configs a search can name (``configs/loss/*.yaml``: losses and named variants)."""
    from ..configs import CONFIG_DIR

    return sorted(p.stem for p in (Path(CONFIG_DIR) / "loss").glob("*.yaml"))


def compose_config(overrides: Sequence[str], loss: str | None = None) -> tuple[DictConfig, str]:
    """The ``search`` config composed with ``overrides`` (and ``loss=<loss>`` if given).

    Returns the config and the name of the loss config chosen (``label_smoothing`` for
    that variant of ``cross_entropy``, whose ``loss.name`` is ``cross_entropy``).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ..configs import CONFIG_DIR

    if loss is not None and loss not in loss_choices():
        raise unknown_name("loss", loss, loss_choices(), hint=f"The loss configs live in {Path(CONFIG_DIR) / 'loss'}.")
    picked = [o for o in overrides if not (loss and ov.key(o) == "loss")] + ([f"loss={loss}"] if loss else [])
    inside = GlobalHydra.instance().is_initialized()  # inside the Hydra app
    try:
        with contextlib.nullcontext() if inside else initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            cfg = compose(config_name="search", overrides=picked, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        if loss is None:
            raise LossbenchError(f"Cannot compose the config: {exc}") from None
        raise LossbenchError(
            f"Cannot compose the config for loss '{loss}': {exc}\nThe overrides apply to every loss searched; "
            f"a loss.<param> override needs a loss that has it (search such a loss on its own)."
        ) from None
    choice = str(cfg.hydra.runtime.choices.get("loss"))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choice


def trial_config(cfg: DictConfig, params: Mapping[str, Any]) -> dict[str, Any]:
    """The training config of one trial: ``cfg`` without its ``search`` node, ``params`` set.

    A loss parameter missing from the loss's config file (``loss.adaptive``) is added; ``create_loss`` checks it.
    """
    c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    if "search" in c:
        del c["search"]
    for key, value in {**params, **_TRIAL_SETTINGS}.items():
        OmegaConf.update(c, key, value, merge=False, force_add=True)
    out = OmegaConf.to_container(c, resolve=True)
    assert isinstance(out, dict)
    return out


def make_plan(
    cfg: DictConfig, choice: str, settings: SearchSettings, command_line_keys: set[str], overrides: Sequence[str]
) -> LossPlan:
    """Check one loss's config and space (building its data, model and loss once).

    ``choice`` names the loss config. A named variant (``label_smoothing``) is defined by
    the parameters it sets away from the loss's defaults; the search holds those fixed.
    """
    from .. import pipeline
    from ..registry import loss_info

    base = trial_config(cfg, {})
    prepared = pipeline.prepare(base)  # every user mistake surfaces here, before any study
    loss = prepared.loss_name
    fixed = set(command_line_keys)
    if prepared.variant:
        defaults = loss_info(loss).defaults
        fixed |= {f"loss.{k}" for k, v in prepared.loss_params.items() if v != defaults.get(k)}
    full, space = loss_space(loss, settings), loss_space(loss, settings, fixed=fixed)
    for key in space:
        if not key.startswith("loss.") and OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise ParameterError(
                f"search.space.{key}: the config has no key '{key}'. Search keys of the training config, "
                "like optimizer.lr or optimizer.weight_decay (print them with --cfg job)."
            )
    held = f" (held fixed: {', '.join(sorted(full))})" if full else ""
    identity = {k: v for k, v in tracking.flatten(base).items() if k not in space and k not in _TRIAL_SETTINGS}
    return LossPlan(
        loss=choice,
        cfg=cfg,
        space=space,
        fixed=sorted(set(full) - set(space)),
        budget=settings.n_trials if space else 1,  # the same config every time: one trial says all
        objective=f"val_{prepared.info.objective}",
        direction="maximize" if prepared.info.objective_mode == "max" else "minimize",
        study_name=f"{settings.study_name}-{choice}",
        overrides=[f"loss={choice}"]
        + [o for o in overrides if ov.key(o) != "loss" and not ov.key(o).startswith(("search.", "hydra."))],
        identity=json.loads(json.dumps(identity, sort_keys=True, default=str)),
        note="" if space else f"no hyperparameters to tune{held}: 1 trial",
    )


# ---------------------------------------------------------------------------- storage
@dataclass
class Storage:
    """An Optuna storage, and the lock file that makes its budget check atomic where it is a file."""

    spec: str
    storage: Any
    lock_path: str | None
    journal: bool = False


def open_storage(spec: str, tracking_uri: str) -> Storage:
    """A journal file (the default) or a database URL (``RDBStorage``, with heartbeats)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal = "://" not in spec
    file = Path(spec).expanduser() if journal else tracking.sqlite_path(spec)  # None: a database server
    mlflow_db = tracking.sqlite_path(tracking_uri)
    if spec == tracking_uri or (file is not None and mlflow_db is not None and file.resolve() == mlflow_db.resolve()):
        raise ParameterError(
            f"search.storage is the MLflow database ({spec}). Keep the Optuna studies apart: "
            "drop search.storage for the default journal file, or name another file or database."
        )
    if file is not None and file.is_dir():
        raise ParameterError(f"search.storage {spec} is a directory; name a file, like {file / 'studies.journal'}.")
    if file is not None:
        _check_writable(file, spec)
    lock = str(file) + ".budget" if file is not None else None
    if journal:
        assert file is not None
        _check_journal(file, spec)
        try:
            return Storage(spec, JournalStorage(JournalFileBackend(str(file))), lock, journal=True)
        except Exception as exc:  # noqa: BLE001 - a line that is not JSON, or JSON that is not an Optuna record
            raise ParameterError(
                f"search.storage {spec} is not a readable Optuna journal ({_why(exc)}); {_ANOTHER_JOURNAL}"
            ) from None
    try:
        beats = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S, "heartbeat_stale_trial_callback": _retry}
        return Storage(spec, optuna.storages.RDBStorage(spec, **beats), lock)
    except Exception as exc:  # noqa: BLE001 - a bad URL or an unreachable database
        raise LossbenchError(
            f"Cannot open the Optuna storage {spec}: {_why(exc)}. Fix search.storage "
            "(a journal file path, or a database URL such as sqlite:///optuna.db)."
        ) from None


_ANOTHER_JOURNAL = (
    "name another file with search.storage=<file>, or move this one away to start the studies anew."
)


def _why(exc: BaseException) -> str:
    """An error in one line: its type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else 'no detail'}"


def _check_writable(file: Path, spec: str) -> None:
    """The storage file can be created (its folder made) and written: checked before any trial."""
    if not file.parent.is_dir():
        kind, blocker = path_blocker(file, file=True) or ("", file)
        if kind == "file":
            raise ParameterError(
                f"search.storage {spec}: {blocker} is a file, not a folder, so the storage cannot be made there; "
                "name a file in a folder, like search.storage=studies.journal."
            )
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ParameterError(
                f"search.storage {spec}: cannot make its folder {file.parent} ({exc.strerror or exc}); "
                "name a file in a folder you can write to."
            ) from None
    try:
        with open(file, "ab"):  # an empty file is an empty journal, and an empty SQLite database
            pass
    except OSError as exc:
        raise ParameterError(
            f"search.storage {spec} cannot be written ({exc.strerror or exc}); name a file in a folder you can "
            "write to, like search.storage=studies.journal."
        ) from None


def _check_journal(file: Path, spec: str) -> None:
    """A file that is there already must be an Optuna journal: one JSON record per line."""
    with open(file, "rb") as f:
        head = f.read(1 << 16)
    first = head.split(b"\n", 1)[0].strip()
    if not head or first.startswith(b'{"op_code"'):  # what Optuna writes (possibly still being written)
        return
    with contextlib.suppress(ValueError):
        if isinstance(record := json.loads(first), dict) and "op_code" in record:
            return
    try:
        text = first[:40].decode("utf-8")
    except UnicodeDecodeError:
        text = "\0"  # not printable: binary
    what = f"its first line is {text!r}" if text.isprintable() else "it holds binary data"
    raise ParameterError(
        f"search.storage {spec} is not an Optuna journal ({what}, not an Optuna record); {_ANOTHER_JOURNAL}"
    )


@contextlib.contextmanager
def _budget_lock(path: str | None) -> Iterator[None]:
    """Serialise "count the trials, then ask" across the processes sharing a study file."""
    from optuna.storages.journal import JournalFileOpenLock

    if path is None:  # a database server: no file to lock
        yield
        return
    lock = JournalFileOpenLock(path)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _sampler(seed: int, n: int) -> Any:
    import numpy as np
    import optuna

    return optuna.samplers.TPESampler(seed=int(np.random.SeedSequence([seed, n]).generate_state(1)[0]))


def open_study(plan: LossPlan, settings: SearchSettings, storage: Storage) -> Any:
    """Create the loss's study, or load it and check it was run with the same config."""
    import optuna

    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=settings.n_startup_trials, n_warmup_steps=settings.n_warmup_steps)
        if settings.prune else optuna.pruners.NopPruner()
    )
    try:
        study = optuna.create_study(
            storage=storage.storage, study_name=plan.study_name, direction=plan.direction, load_if_exists=True,
            sampler=_sampler(settings.seed, 0), pruner=pruner,
        )
    except Exception as exc:  # noqa: BLE001 - an unreadable journal, a database error
        if storage.journal:
            raise ParameterError(
                f"search.storage {storage.spec} is not a readable Optuna journal ({_why(exc)}); {_ANOTHER_JOURNAL}"
            ) from None
        raise LossbenchError(
            f"Cannot use the Optuna storage {storage.spec}: {_why(exc)}. Fix search.storage, or name another database."
        ) from None
    where = f"The study '{plan.study_name}' in {storage.spec}"
    elsewhere = (
        "Continue it with the same settings, or start another study with search.study_name=<name> or search.storage=<file>."
    )
    if study.direction.name.lower() != plan.direction:
        raise LossbenchError(
            f"{where} was run to {study.direction.name.lower()} its objective, but {plan.objective} is to "
            f"{plan.direction}. {elsewhere}"
        )
    attrs = study.user_attrs
    space = json.loads(json.dumps(plan.space))
    if ATTR_CONFIG not in attrs:
        for k, v in ((ATTR_LOSS, plan.loss), (ATTR_OBJECTIVE, plan.objective), (ATTR_SPACE, space), (ATTR_CONFIG, plan.identity)):
            study.set_user_attr(k, v)
        return study
    if attrs.get(ATTR_LOSS) != plan.loss:
        raise LossbenchError(f"{where} searched the loss {attrs.get(ATTR_LOSS)}, not {plan.loss}. {elsewhere}")
    for what, old, new in (("search space", attrs.get(ATTR_SPACE) or {}, space), ("config", attrs[ATTR_CONFIG], plan.identity)):
        keys = [k for k in sorted(set(old) | set(new)) if old.get(k, "<unset>") != new.get(k, "<unset>")]
        if keys:
            changes = ", ".join(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in keys[:6])
            changes += f" and {len(keys) - 6} more" if len(keys) > 6 else ""
            raise LossbenchError(
                f"{where} was run with another {what} ({changes}); its trials would not compare with new ones. "
                f"{elsewhere}"
            )
    return study


# ---------------------------------------------------------------------------- budget and retries
def _counts(trials: Sequence[Any]) -> Counter[str]:
    """How many trials are complete, pruned, failed (using the budget), running, waiting, or uncounted."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    replaced = {n for t in trials for n in Retry.retry_history(t)}  # failed trials that run again

    def kind(t: Any) -> str:
        if t.state.name == "FAIL" and (t.number in replaced or t.user_attrs.get(ATTR_FAILURE) in _UNCOUNTED):
            return "uncounted"
        return "failed" if t.state.name == "FAIL" else t.state.name.lower()

    return Counter(kind(t) for t in trials)


def _used(trials: Sequence[Any]) -> int:
    c = _counts(trials)
    return c["complete"] + c["pruned"] + c["failed"] + c["running"]


def _retry(study: Any, trial: Any) -> None:
    """Queue a failed trial's parameters again: Optuna's retry callback, without the failed run's attributes."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    trial = copy.copy(trial)
    trial.user_attrs = {}
    RetryHeartbeatStaleTrialCallback()(study, trial)


def _worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _fail_stale(study: Any, storage: Storage, plan: LossPlan, experiment_id: str, printer: Printer) -> None:
    """Fail the trials that a dead worker left RUNNING and queue each again; their MLflow runs end KILLED.

    Called between batches, under the budget lock, so no trial of this process is running.
    """
    import optuna
    from optuna.trial import TrialState

    running = {t.number: t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING}
    if not running:
        return
    if not storage.journal:
        optuna.storages.fail_stale_trials(study)  # by heartbeat; calls _retry for each
    else:
        # Optuna's JournalStorage has no heartbeat (it is not a BaseHeartbeat, up to Optuna 5),
        # so on a journal file a trial is stale when its worker, on this machine, is gone.
        me = _worker()
        for t in running.values():
            w = t.user_attrs.get(ATTR_WORKER) or {}
            pid = w.get("pid")
            gone = isinstance(pid, int) and pid > 0 and not tracking.pid_alive(pid)
            if w.get("host") == me["host"] and (pid == me["pid"] or gone):
                _retry(study, study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True))
    uri = str(plan.cfg.tracking.uri)
    client = tracking.client(uri)
    for t in study.get_trials(deepcopy=False):
        if t.number in running and t.state == TrialState.FAIL:
            pid = (running[t.number].user_attrs.get(ATTR_WORKER) or {}).get("pid")
            printer(f"{plan.loss}  #{t.number}  was left running by a stopped worker (pid {pid}); it runs again")
            flt = f"tags.{S.TAG_STUDY} = {tracking.filter_value(plan.study_name)} and tags.{S.TAG_TRIAL} = '{t.number}'"
            for run in client.search_runs([experiment_id], filter_string=f"{flt} and attributes.status = 'RUNNING'"):
                tracking.Run(uri, run.info.run_id).end("KILLED")  # as an interrupted run ends


# ---------------------------------------------------------------------------- trials
class _Judge:
    """The pruner's verdict on a trial after each validation epoch: the batched engine's ``on_epoch``,
    and what :class:`~lossbench.search.pruning.OptunaPruning` asks for a trial trained alone."""

    def __init__(self, trial: Any, monitor: str):
        self.trial, self.monitor = trial, monitor
        self.pruned_epoch: int | None = None

    def __call__(self, epoch: int, value: float) -> str | None:
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            return self.verdict(epoch, self.monitor, value)
        return None

    @staticmethod
    def verdict(epoch: int, monitor: str, value: float) -> str:
        return f"pruned by Optuna after epoch {epoch} ({monitor}={value:.4g})"


def _train_overrides(plan: LossPlan, params: Mapping[str, Any]) -> list[str]:
    return [*plan.overrides, *(f"{k}={ov.value_text(v)}" for k, v in params.items())]


def _run_trials(
    study: Any, storage: Storage, trials: Sequence[Any], plan: LossPlan, settings: SearchSettings,
    printer: Printer, extra_callbacks: Sequence[Any] = (), parent: str | None = None,
) -> list[Any]:
    """Train trials of one study: one by one on Lightning (``search.batch_size=1``, or with extra
    Lightning callbacks), else as one stacked group; tell Optuna how each ended."""
    from optuna.storages._heartbeat import get_heartbeat_thread
    from optuna.trial import TrialState

    from ..engine import run_jobs

    judges = {i: _Judge(t, plan.objective) for i, t in enumerate(trials) if settings.prune}

    def alone(i: int) -> list[Any]:  # Lightning callbacks of a trial that trains alone
        from .pruning import OptunaPruning

        return [*extra_callbacks, *([OptunaPruning(judges[i])] if i in judges else [])]

    start = time.monotonic()
    try:
        with contextlib.ExitStack() as beats:  # heartbeats, on a database storage
            for t in trials:
                beats.enter_context(get_heartbeat_thread(t._trial_id, storage.storage))
            jobs = [(i, trial_config(plan.cfg, t.params), " ".join(_train_overrides(plan, t.params)))
                    for i, t in enumerate(trials)]
            tags = {i: {S.TAG_STUDY: study.study_name, S.TAG_TRIAL: t.number, S.TAG_PARENT: parent}
                    for i, t in enumerate(trials)}
            engine = "sequential" if settings.batch_size == 1 or extra_callbacks else "batched"
            results = run_jobs(jobs, multirun=False, engine=engine, tags=tags, on_epoch=judges, callbacks=alone)
    except BaseException as exc:  # none was told yet: each ends FAIL, and after Ctrl-C runs again
        interrupted = isinstance(exc, KeyboardInterrupt)
        failure = "interrupted" if interrupted else "invalid" if isinstance(exc, LossbenchError) else S.FAILURE_ERROR
        for t in trials:
            with contextlib.suppress(Exception):  # record what we can; the original error matters more
                t.set_user_attr(ATTR_FAILURE, failure)
                t.set_user_attr(ATTR_MESSAGE, f"{type(exc).__name__}: {exc}"[:1000])
            with contextlib.suppress(Exception):
                frozen = study.tell(t, state=TrialState.FAIL)
                if interrupted:
                    _retry(study, frozen)
        raise
    seconds, done = (time.monotonic() - start) / max(1, len(trials)), []
    for i, t in enumerate(trials):
        r = results[i]
        value = r.metrics.get(S.METRIC_BEST_VAL) if r.status == "FINISHED" else None
        attrs = {ATTR_RUN: r.run_id} if r.run_id else {}
        if value is not None and math.isfinite(value):
            state = TrialState.COMPLETE
        elif i in judges and judges[i].pruned_epoch is not None and r.status == "KILLED":
            state, value = TrialState.PRUNED, None
        else:
            state, value, finished = TrialState.FAIL, None, r.status == "FINISHED"
            attrs[ATTR_FAILURE] = "no_objective" if finished else r.failure or r.status.lower()
            attrs[ATTR_MESSAGE] = (f"no finite {plan.objective} in any epoch" if finished else r.message)[:1000]
        for k, v in attrs.items():
            t.set_user_attr(k, v)
        done.append(study.tell(t, value, state=state))
        printer(_trial_line(plan, done[-1], seconds))
    return done


def format_params(params: Mapping[str, Any]) -> str:
    def one(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k.removeprefix('loss.')}={one(v)}" for k, v in params.items()) or "-"


def _trial_line(plan: LossPlan, t: Any, seconds: float) -> str:
    run_id = t.user_attrs.get(ATTR_RUN)
    if t.state.name == "COMPLETE":
        what = f"complete  {plan.objective}={t.value:.4g}"
    elif t.state.name == "PRUNED":
        what = f"pruned    {_Judge.verdict(t.last_step, plan.objective, t.intermediate_values[t.last_step])}"
    else:
        what = f"failed    {t.user_attrs.get(ATTR_FAILURE)}: {t.user_attrs.get(ATTR_MESSAGE, '')}"
    run = f"run {run_id[:8]}" if run_id else "no run"
    return f"{plan.loss}  #{t.number}  {what}  [{format_params(t.params)}]  ({run}, {seconds:.1f} s)"


def search_loss(
    plan: LossPlan, settings: SearchSettings, storage: Storage, study: Any, experiment_id: str,
    *, printer: Printer = _print, callbacks: Sequence[Any] = (),
) -> None:
    """Run trials of one loss's study until its budget is used (or ``search.timeout``); ``plan.trials``
    gets them. Its counts and best are filled by run_search, under the study's lock.

    ``search.batch_size`` trials are asked for at once; with extra Lightning ``callbacks``
    (an API for tests and tools) one at a time.
    """
    dists = {k: distribution(v) for k, v in plan.space.items()}
    plan.storage = storage.spec
    deadline = time.monotonic() + settings.timeout if settings.timeout else None
    uri = str(plan.cfg.tracking.uri)
    with _budget_lock(storage.lock_path):  # one parent run per study, whichever worker comes first
        parent = tracking.parent_run(uri, experiment_id, "study", plan.study_name, f"study-{plan.study_name}", create=True)
    while not (deadline is not None and time.monotonic() >= deadline):
        batch: list[Any] = []
        with _budget_lock(storage.lock_path):
            _fail_stale(study, storage, plan, experiment_id, printer)
            trials = study.get_trials(deepcopy=False)
            for _ in range(max(0, min(1 if callbacks else settings.batch_size, plan.budget - _used(trials)))):
                # reseeded per trial number: the same trials whatever the batch size or workers
                study.sampler = _sampler(settings.seed, len(trials) + len(batch))
                batch.append(study.ask(dists))
                batch[-1].set_user_attr(ATTR_WORKER, _worker())
        if not batch:
            break
        plan.trials.extend(_run_trials(study, storage, batch, plan, settings, printer, callbacks, parent))
    else:
        plan.timed_out = True


def _fill(outcome: LossOutcome, study: Any) -> None:
    c = _counts(study.get_trials(deepcopy=False))
    outcome.complete, outcome.pruned, outcome.failed = c["complete"], c["pruned"], c["failed"]
    if c["complete"]:
        best = study.best_trial
        outcome.best_value, outcome.best_params, outcome.best_trial = best.value, dict(best.params), best.number
        outcome.best_run_id = best.user_attrs.get(ATTR_RUN)
    if outcome.timed_out and outcome.used < outcome.budget:
        outcome.note = f"stopped by search.timeout at {outcome.used}/{outcome.budget} trials; run again to continue"


def best_summary(o: LossOutcome) -> dict[str, Any]:
    """What ``best_params.json`` holds: the best trial and how to train with its parameters."""
    return {
        "loss": o.loss, "study": o.study_name, "storage": o.storage, "objective": o.objective, "direction": o.direction,
        "best_value": o.best_value, "best_params": o.best_params, "best_trial": o.best_trial, "mlflow_run_id": o.best_run_id,
        "train_command": "python -m lossbench " + " ".join(_train_overrides(o, o.best_params)),
        "trials": {"complete": o.complete, "pruned": o.pruned, "failed": o.failed, "budget": o.budget},
        "search_space": o.space, "fixed": o.fixed, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def record_best(outcome: LossOutcome, uri: str, experiment_id: str) -> None:
    """Tag the best trial's run ``optuna_best=true`` (only it) and log ``best_params.json`` on it.

    Call it under the study's lock, with ``outcome`` filled from the study inside that lock.
    """
    client = tracking.client(uri)
    flt = f"tags.{S.TAG_STUDY} = {tracking.filter_value(outcome.study_name)} and tags.{TAG_BEST} = 'true'"
    for run in client.search_runs([experiment_id], filter_string=flt, max_results=1000):
        if run.info.run_id != outcome.best_run_id:
            client.delete_tag(run.info.run_id, TAG_BEST)
    if outcome.best_run_id:
        client.set_tag(outcome.best_run_id, TAG_BEST, "true")
        client.log_dict(outcome.best_run_id, best_summary(outcome), ARTIFACT_BEST)
    parent = tracking.parent_run(uri, experiment_id, "study", outcome.study_name, "", create=False)
    if parent:  # the study's parent run holds its best so far; trials added later still fold under it
        best = {"best_value": outcome.best_value} if outcome.best_value is not None else {}
        counts = {"trials_complete": outcome.complete, "trials_pruned": outcome.pruned, "trials_failed": outcome.failed}
        tracking.Run(uri, parent).end("FINISHED", {"best_run_id": outcome.best_run_id or ""},
                                      metrics=tracking.metrics_at([(0, {**counts, **best})]))


# ---------------------------------------------------------------------------- entry point
def run_search(
    overrides: Sequence[str] = (), *, printer: Printer = _print, callbacks: Sequence[Any] = ()
) -> list[LossOutcome]:
    """Search every loss of ``search.losses`` (or the one ``loss``) with the same budget.

    ``overrides`` are command-line overrides of the ``search`` config (which composes
    ``train``); ``printer`` gets one line per finished trial; ``callbacks`` are extra
    Lightning callbacks for every trial. Everything is checked (configs, spaces, storage,
    studies) before the first trial. Raises :class:`LossbenchError` for a user mistake; Ctrl-C propagates as
    ``KeyboardInterrupt`` after the running trials are recorded and queued again.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    overrides = normalize_overrides(overrides)  # checks the names listed, before composing
    first, first_choice = compose_config(overrides)
    node = OmegaConf.to_container(first.search, resolve=True) if "search" in first else None
    settings = SearchSettings.from_config(node)  # type: ignore[arg-type]
    choices = list(settings.losses) or [first_choice]
    cfgs = {c: first if c == first_choice else compose_config(overrides, c)[0] for c in choices}
    check_loss_keys(list(dict.fromkeys(str(c.loss.name) for c in cfgs.values())), settings)
    command_line_keys = {ov.key(o) for o in overrides} - {""}
    plans = [make_plan(cfgs[c], c, settings, command_line_keys, overrides) for c in choices]
    uri = str(plans[0].cfg.tracking.uri)
    with warnings.catch_warnings():  # heartbeats and the retry callback are "experimental" in Optuna
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        storage = open_storage(settings.storage, uri)
        studies = [open_study(p, settings, storage) for p in plans]
        experiment_id = tracking.ensure_experiment(uri, str(plans[0].cfg.tracking.experiment_name))
        for plan, study in zip(plans, studies, strict=True):
            done = _used(study.get_trials(deepcopy=False))
            fixed = f"; held fixed: {', '.join(plan.fixed)}" if plan.fixed else ""
            printer(
                f"{plan.loss}: study '{plan.study_name}' in {storage.spec}, {min(done, plan.budget)}/{plan.budget} "
                f"trials done; searching {', '.join(plan.space) or 'nothing'}{fixed}"
            )
            search_loss(plan, settings, storage, study, experiment_id, printer=printer, callbacks=callbacks)
            # Read the study as it stands now (every worker's trials in it) and move the best tag
            # in one locked step: two workers ending together otherwise each tagged their own best.
            with _budget_lock(storage.lock_path):
                _fill(plan, study)
                record_best(plan, uri, experiment_id)
    return plans

"""One Optuna study per loss, the same trial budget for each, every trial one MLflow run.

The studies live in their own storage (a journal file by default), never in the MLflow
database. A study's budget counts its complete, pruned and failed trials over every run
of the command and every worker, so re-running the command continues a study up to
``search.n_trials`` and several processes can share it. The budget check and the
``ask`` happen under a file lock, so workers sharing a journal file (or SQLite file)
never overshoot the budget. A trial stopped by Ctrl-C or SIGTERM, or left RUNNING by a
worker of this machine that was killed, is re-queued with its parameters and does not
count. The sampler of trial *n* is seeded from ``(search.seed, n)``: the same command
proposes the same trials however many workers and restarts it took.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from .. import schema as S
from .. import tracking
from ..errors import LossbenchError, ParameterError, unknown_name
from .space import SearchSettings, check_loss_keys, distribution, loss_space

# MLflow names written by the search (the run tags TAG_STUDY/TAG_TRIAL are in lossbench.schema)
TAG_BEST = S.TAG_BEST
ARTIFACT_BEST = S.ARTIFACT_BEST

# Optuna trial user attributes
ATTR_RUN = "mlflow_run_id"
ATTR_WORKER = "worker"  # {"host": ..., "pid": ...}
ATTR_FAILURE = "failure"  # diverged | error | no_objective | interrupted | invalid
ATTR_MESSAGE = "message"
ATTR_RETRY_OF = "retry_of"  # on a re-queued trial: the number of the trial it replaces
_UNCOUNTED = ("interrupted", "invalid")  # failures that did not use up a trial of the budget

# Optuna study user attributes: what a study was created for, checked when it continues
ATTR_LOSS = "lossbench_loss"
ATTR_OBJECTIVE = "lossbench_objective"
ATTR_SPACE = "lossbench_search_space"
ATTR_CONFIG = "lossbench_config"

# config keys that do not change what a trial computes
_NOT_IDENTITY = ("trainer.enable_progress_bar", "tracking.skip_finished")

Printer = Callable[[str], None]

# (study, trial number) of the trials this process is running now; any other RUNNING trial it owns is stale
_ACTIVE: set[tuple[str, int]] = set()


def _print(line: str) -> None:
    print(line, flush=True)


# ---------------------------------------------------------------------------- records
@dataclass
class TrialRecord:
    """One trial run by this process."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None
    params: dict[str, Any]
    run_id: str | None
    failure: str | None = None
    message: str = ""
    seconds: float = 0.0


@dataclass
class LossOutcome:
    """Where one loss's study stands after this process's trials."""

    loss: str
    study_name: str
    storage: str
    objective: str  # the validation metric optimised, e.g. "val_balanced_accuracy"
    direction: str  # maximize | minimize
    budget: int
    space: dict[str, dict[str, Any]]
    fixed: list[str]
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_trial: int | None = None
    best_run_id: str | None = None
    trials: list[TrialRecord] = field(default_factory=list)  # run by this process
    timed_out: bool = False
    note: str = ""

    @property
    def used(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def errors(self) -> int:
        """Trials of this process that failed with an error (not a divergence)."""
        return sum(1 for t in self.trials if t.failure == S.FAILURE_ERROR)


@dataclass
class LossPlan:
    """Everything a loss's study needs, checked before any trial runs."""

    loss: str  # the loss config's name (a loss, or a named variant of one)
    cfg: DictConfig
    space: dict[str, dict[str, Any]]
    fixed: list[str]  # keys of the loss's space held at their configured value
    budget: int
    objective: str
    direction: str
    study_name: str
    overrides: list[str]  # training overrides that reproduce the base config
    identity: dict[str, Any]
    note: str = ""


# ---------------------------------------------------------------------------- overrides
def _is_sweep_value(value: str) -> bool:
    return "," in value and not value.startswith(("[", "{", "'", '"')) and "(" not in value


def _key(override: str) -> str:
    key = override.partition("=")[0]
    return key.lstrip("+~")


def normalize_overrides(args: Sequence[str]) -> list[str]:
    """``loss=a,b`` and ``search.losses=a,b`` -> ``search.losses=[a,b]`` plus ``loss=a``.

    A plain Hydra app refuses a comma list outside ``-m``; the search runs its losses
    itself, so the shorthand is turned into the ``search.losses`` list here.
    """
    out: list[str] = []
    losses: list[str] | None = None
    loss_given = False
    for arg in args:
        key, eq, value = arg.partition("=")
        names: list[str] | None = None
        if eq and key == "loss" and _is_sweep_value(value):
            names = [v.strip() for v in value.split(",") if v.strip()]
        elif eq and key.lstrip("+") == "search.losses":
            names = _names(value)
        if names is not None:
            if losses is not None:
                raise ParameterError("Name the losses once: either loss=a,b or search.losses=[a,b].")
            losses = names
            continue
        if eq and key == "loss":
            loss_given = True
        out.append(arg)
    if losses:
        out.append(f"search.losses=[{','.join(losses)}]")
        if not loss_given:
            out.append(f"loss={losses[0]}")
    return out


def _names(value: str) -> list[str]:
    inner = value.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    return [v.strip().strip("'\"") for v in inner.split(",") if v.strip()]


def listed_losses(overrides: Sequence[str]) -> list[str]:
    """The names in a ``search.losses=[a,b]`` override, if any."""
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+") == "search.losses":
            return _names(value)
    return []


def _override_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


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
    ov = [o for o in overrides if not (loss and _key(o) == "loss")]
    if loss:
        ov.append(f"loss={loss}")
    try:
        if GlobalHydra.instance().is_initialized():  # inside the Hydra app
            cfg = compose(config_name="search", overrides=ov, return_hydra_config=True)
        else:
            with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
                cfg = compose(config_name="search", overrides=ov, return_hydra_config=True)
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

    A loss parameter missing from the loss's config file (e.g. ``loss.adaptive``) is
    added; ``create_loss`` validates it.
    """
    c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    if "search" in c:
        del c["search"]
    for key, value in params.items():
        OmegaConf.update(c, key, value, merge=False, force_add=True)
    OmegaConf.update(c, "trainer.enable_progress_bar", False, force_add=True)
    OmegaConf.update(c, "tracking.skip_finished", False, force_add=True)  # every trial is a new run
    out = OmegaConf.to_container(c, resolve=True)
    assert isinstance(out, dict)
    return out


def _identity(base: Mapping[str, Any], space: Mapping[str, Any]) -> dict[str, Any]:
    flat = tracking.flatten(base)
    kept = {k: v for k, v in flat.items() if k not in space and k not in _NOT_IDENTITY}
    return json.loads(json.dumps(kept, sort_keys=True, default=str))


def _has_key(cfg: Mapping[str, Any], key: str) -> bool:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


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
    full = loss_space(loss, settings)
    space = loss_space(loss, settings, fixed=fixed)
    for key in space:
        if not key.startswith("loss.") and not _has_key(base, key):
            raise ParameterError(
                f"search.space.{key}: the config has no key '{key}'. Search keys of the training config, "
                "like optimizer.lr or optimizer.weight_decay (print them with --cfg job)."
            )
    note = ""
    budget = settings.n_trials
    if not space:  # the same config every time: one trial says all
        budget = 1
        held = f" (held fixed: {', '.join(sorted(full))})" if full else ""
        note = f"no hyperparameters to tune{held}: 1 trial"
    train_overrides = [f"loss={choice}"] + [
        o for o in overrides if _key(o) != "loss" and not _key(o).startswith(("search.", "hydra."))
    ]
    return LossPlan(
        loss=choice,
        cfg=cfg,
        space=space,
        fixed=sorted(set(full) - set(space)),
        budget=budget,
        objective=f"val_{prepared.info.objective}",
        direction="maximize" if prepared.info.objective_mode == "max" else "minimize",
        study_name=f"{settings.study_name}-{choice}",
        overrides=train_overrides,
        identity=_identity(base, space),
        note=note,
    )


# ---------------------------------------------------------------------------- storage
@dataclass
class Storage:
    """An Optuna storage and the lock file that makes its budget check atomic."""

    spec: str
    storage: Any
    lock_path: str | None


def _sqlite_file(url: str) -> Path | None:
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def open_storage(spec: str, tracking_uri: str) -> Storage:
    """A journal file (the default; ``JournalFileBackend``) or an RDB URL (``RDBStorage``)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    mlflow_db = _sqlite_file(tracking_uri)
    if "://" in spec:
        db = _sqlite_file(spec)
        if spec == tracking_uri or (db is not None and mlflow_db is not None and db.resolve() == mlflow_db.resolve()):
            raise ParameterError(
                f"search.storage is the MLflow database ({spec}). Keep the Optuna studies apart: "
                "drop search.storage for the default journal file, or name another database."
            )
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        try:
            storage = optuna.storages.RDBStorage(spec)
        except Exception as exc:  # noqa: BLE001 - a bad URL or an unreachable database
            raise LossbenchError(
                f"Cannot open the Optuna storage {spec}: {type(exc).__name__}: {exc}. Fix search.storage "
                "(a journal file path, or a database URL such as sqlite:///optuna.db)."
            ) from None
        return Storage(spec, storage, str(db) + ".budget" if db is not None else None)
    path = Path(spec).expanduser()
    if mlflow_db is not None and path.resolve() == mlflow_db.resolve():
        raise ParameterError(f"search.storage is the MLflow database ({spec}). Name another file.")
    if path.is_dir():
        raise ParameterError(f"search.storage {spec} is a directory; name a file, like {path / 'studies.journal'}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return Storage(spec, JournalStorage(JournalFileBackend(str(path))), str(path) + ".budget")


@contextlib.contextmanager
def _budget_lock(path: str | None) -> Iterator[None]:
    """Serialise "count the trials, then ask for one" across the processes sharing a study."""
    if path is None:  # a server database: a rare race may add a trial per extra worker
        yield
        return
    from optuna.storages.journal import JournalFileOpenLock

    lock = JournalFileOpenLock(path)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _sampler(seed: int, n: int) -> Any:
    import numpy as np
    import optuna

    trial_seed = int(np.random.SeedSequence([seed, n]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=trial_seed)


def _pruner(settings: SearchSettings) -> Any:
    import optuna

    if not settings.prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=settings.n_startup_trials, n_warmup_steps=settings.n_warmup_steps
    )


def open_study(plan: LossPlan, settings: SearchSettings, storage: Storage) -> Any:
    """Create the loss's study, or load it and check it was run with the same config."""
    import optuna

    try:
        study = optuna.create_study(
            storage=storage.storage,
            study_name=plan.study_name,
            direction=plan.direction,
            load_if_exists=True,
            sampler=_sampler(settings.seed, 0),
            pruner=_pruner(settings),
        )
    except LossbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unreadable journal, a database error
        raise LossbenchError(f"Cannot use the Optuna storage {storage.spec}: {type(exc).__name__}: {exc}") from None
    elsewhere = (
        "Continue it with the same settings, or start another study with "
        "search.study_name=<name> or search.storage=<file>."
    )
    if study.direction.name.lower() != plan.direction:
        raise LossbenchError(
            f"The study '{plan.study_name}' in {storage.spec} was run to {study.direction.name.lower()} its "
            f"objective, but {plan.objective} is to {plan.direction}. {elsewhere}"
        )
    attrs = study.user_attrs
    expected = {
        ATTR_LOSS: plan.loss,
        ATTR_OBJECTIVE: plan.objective,
        ATTR_SPACE: json.loads(json.dumps(plan.space)),
        ATTR_CONFIG: plan.identity,
    }
    if ATTR_CONFIG not in attrs:
        for k, v in expected.items():
            study.set_user_attr(k, v)
        return study
    if attrs.get(ATTR_LOSS) != plan.loss:
        raise LossbenchError(
            f"The study '{plan.study_name}' in {storage.spec} searched the loss {attrs.get(ATTR_LOSS)}, "
            f"not {plan.loss}. {elsewhere}"
        )
    for what, old, new in (
        ("search space", attrs.get(ATTR_SPACE) or {}, expected[ATTR_SPACE]),
        ("config", attrs.get(ATTR_CONFIG) or {}, plan.identity),
    ):
        changes = _differences(old, new)
        if changes:
            raise LossbenchError(
                f"The study '{plan.study_name}' in {storage.spec} was run with another {what} ({changes}); "
                f"its trials would not compare with new ones. {elsewhere}"
            )
    return study


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], shown: int = 6) -> str:
    """``"data.n_samples: 200 -> 300, ..."`` for the keys whose values differ."""
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k, "<unset>") != new.get(k, "<unset>")]
    text = ", ".join(f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in keys[:shown])
    return text + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


# ---------------------------------------------------------------------------- budget
def _counts(trials: Sequence[Any]) -> dict[str, int]:
    """complete / pruned / failed (budget-using) / running / uncounted trials of a study."""
    from optuna.trial import TrialState

    replaced = {t.user_attrs.get(ATTR_RETRY_OF) for t in trials} - {None}
    out = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "uncounted": 0}
    for t in trials:
        if t.state == TrialState.COMPLETE:
            out["complete"] += 1
        elif t.state == TrialState.PRUNED:
            out["pruned"] += 1
        elif t.state == TrialState.RUNNING:
            out["running"] += 1
        elif t.state == TrialState.FAIL:
            if t.number in replaced or t.user_attrs.get(ATTR_FAILURE) in _UNCOUNTED:
                out["uncounted"] += 1
            else:
                out["failed"] += 1
    return out


def _used(trials: Sequence[Any]) -> int:
    c = _counts(trials)
    return c["complete"] + c["pruned"] + c["failed"] + c["running"]


def _worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: Any) -> bool:
    if os.name == "nt" or not isinstance(pid, int) or pid <= 0:
        return True  # cannot tell: assume it is
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, owned by someone else
        return True
    return True


def _requeue_stale(study: Any, trials: Sequence[Any], printer: Printer, loss: str) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker, on this machine, no longer runs them.

    Returns their numbers. A worker on another machine cannot be checked: its trial stays
    RUNNING (and counts).
    """
    from optuna.trial import TrialState

    me = _worker()
    replaced = {t.user_attrs.get(ATTR_RETRY_OF) for t in trials} - {None}
    found = []
    for t in trials:
        w = t.user_attrs.get(ATTR_WORKER) or {}
        if t.state != TrialState.RUNNING or w.get("host") != me["host"]:
            continue
        if w.get("pid") == me["pid"]:
            if (study.study_name, t.number) in _ACTIVE:
                continue
        elif _alive(w.get("pid")):
            continue
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        if t.number not in replaced:
            study.enqueue_trial(dict(t.params), user_attrs={ATTR_RETRY_OF: t.number})
        printer(f"{loss}  #{t.number}  was left running by a stopped worker (pid {w.get('pid')}); it runs again")
        found.append(t.number)
    return found


def _filter_value(s: str) -> str:
    return f'"{s}"' if "'" in s else f"'{s}'"


def _end_orphan_runs(uri: str, experiment_id: str, study_name: str, numbers: Sequence[int]) -> None:
    """The MLflow runs that stale trials left RUNNING end as KILLED, like an interrupted run."""
    client = tracking.client(uri)
    for n in numbers:
        runs = client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.{S.TAG_STUDY} = {_filter_value(study_name)} and tags.{S.TAG_TRIAL} = '{n}' "
                "and attributes.status = 'RUNNING'"
            ),
        )
        for run in runs:
            tracking.end_run(uri, run.info.run_id, "KILLED")


# ---------------------------------------------------------------------------- trials
def _run_trial(
    study: Any,
    trial: Any,
    plan: LossPlan,
    settings: SearchSettings,
    printer: Printer,
    extra_callbacks: Sequence[Any] = (),
) -> TrialRecord:
    from optuna.trial import TrialState

    from .. import pipeline

    params = dict(trial.params)
    pruning = None
    start = time.monotonic()
    try:
        cfg = trial_config(plan.cfg, params)
        callbacks: list[Any] = list(extra_callbacks)
        if settings.prune:
            from .pruning import OptunaPruning

            pruning = OptunaPruning(trial, plan.objective)
            callbacks.append(pruning)
        tags = {S.TAG_STUDY: study.study_name, S.TAG_TRIAL: trial.number}
        overrides = " ".join([*plan.overrides, *(f"{k}={_override_value(v)}" for k, v in params.items())])
        result = pipeline.run(cfg, callbacks=callbacks, extra_tags=tags, overrides=overrides, quiet=True)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        failure = "interrupted" if interrupted else "invalid" if isinstance(exc, LossbenchError) else S.FAILURE_ERROR
        with contextlib.suppress(Exception):  # record what we can; the original error matters more
            trial.set_user_attr(ATTR_FAILURE, failure)
            trial.set_user_attr(ATTR_MESSAGE, f"{type(exc).__name__}: {exc}"[:1000])
        with contextlib.suppress(Exception):
            study.tell(trial, state=TrialState.FAIL)
            if interrupted:  # the next run of the command runs these parameters again
                study.enqueue_trial(params, user_attrs={ATTR_RETRY_OF: trial.number})
        raise
    finally:
        _ACTIVE.discard((study.study_name, trial.number))
    seconds = time.monotonic() - start
    pruned = pruning.pruned_epoch if pruning is not None else None
    reported = pruning.reported if pruning is not None else {}
    return _finish_trial(study, trial, plan, params, result, pruned, reported, seconds, printer)


def _finish_trial(
    study: Any,
    trial: Any,
    plan: LossPlan,
    params: Mapping[str, Any],
    result: Any,
    pruned_epoch: int | None,
    reported: Mapping[int, float],
    seconds: float,
    printer: Printer,
) -> TrialRecord:
    """Tell Optuna how a trained trial ended, and print its line."""
    from optuna.trial import TrialState

    if result.run_id:
        trial.set_user_attr(ATTR_RUN, result.run_id)
    record = TrialRecord(trial.number, "FAIL", None, dict(params), result.run_id, seconds=seconds, message=result.message)
    if result.status == "FINISHED":
        value = result.metrics.get(S.METRIC_BEST_VAL)
        if value is not None and math.isfinite(value):
            study.tell(trial, float(value))
            record.state, record.value = "COMPLETE", float(value)
        else:
            record.failure, record.message = "no_objective", f"no finite {plan.objective} in any epoch"
    elif pruned_epoch is not None and result.status == "KILLED":
        study.tell(trial, state=TrialState.PRUNED)
        record.state = "PRUNED"
        record.value = reported.get(pruned_epoch)
    else:
        record.failure = result.failure or result.status.lower()
    if record.state == "FAIL":
        trial.set_user_attr(ATTR_FAILURE, record.failure)
        trial.set_user_attr(ATTR_MESSAGE, record.message[:1000])
        study.tell(trial, state=TrialState.FAIL)
    printer(_trial_line(plan, record))
    return record


class _EpochJudge:
    """The pruner's verdict after each validation epoch of a trial trained in a group
    (what :class:`~lossbench.search.pruning.OptunaPruning` does for a trial trained alone)."""

    def __init__(self, trial: Any, monitor: str):
        self.trial, self.monitor = trial, monitor
        self.pruned_epoch: int | None = None
        self.reported: dict[int, float] = {}

    def __call__(self, epoch: int, value: float) -> str | None:
        self.trial.report(value, epoch)
        self.reported[epoch] = value
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            return f"pruned by Optuna after epoch {epoch} ({self.monitor}={value:.4g})"
        return None


def _run_trials(
    study: Any,
    trials: Sequence[Any],
    plan: LossPlan,
    settings: SearchSettings,
    printer: Printer,
    extra_callbacks: Sequence[Any] = (),
) -> list[TrialRecord]:
    """Train several trials of one study as one stacked group (``search.batch_size``)."""
    from optuna.trial import TrialState

    from ..engine import run_jobs

    jobs, tags, judges, callbacks, params_of = [], {}, {}, {}, {}
    start = time.monotonic()

    def alone(i: int) -> list[Any]:  # Lightning callbacks of a trial that cannot join the group
        callbacks[i] = list(extra_callbacks)
        if settings.prune:
            from .pruning import OptunaPruning

            callbacks[i].append(OptunaPruning(trials[i], plan.objective))
        return callbacks[i]

    try:
        for i, trial in enumerate(trials):
            params = params_of[i] = dict(trial.params)
            overrides = " ".join([*plan.overrides, *(f"{k}={_override_value(v)}" for k, v in params.items())])
            jobs.append((i, trial_config(plan.cfg, params), overrides))
            tags[i] = {S.TAG_STUDY: study.study_name, S.TAG_TRIAL: trial.number}
            if settings.prune:
                judges[i] = _EpochJudge(trial, plan.objective)
        results = run_jobs(jobs, multirun=False, engine="batched", tags=tags, on_epoch=judges, callbacks=alone)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        failure = "interrupted" if interrupted else "invalid" if isinstance(exc, LossbenchError) else S.FAILURE_ERROR
        for i, trial in enumerate(trials):  # none was told yet: each ends FAIL, and runs again after Ctrl-C
            with contextlib.suppress(Exception):  # record what we can; the original error matters more
                trial.set_user_attr(ATTR_FAILURE, failure)
                trial.set_user_attr(ATTR_MESSAGE, f"{type(exc).__name__}: {exc}"[:1000])
            with contextlib.suppress(Exception):
                study.tell(trial, state=TrialState.FAIL)
                if interrupted:
                    study.enqueue_trial(params_of.get(i, dict(trial.params)), user_attrs={ATTR_RETRY_OF: trial.number})
        raise
    finally:
        for trial in trials:
            _ACTIVE.discard((study.study_name, trial.number))
    seconds = (time.monotonic() - start) / max(1, len(trials))
    records = []
    for i, trial in enumerate(trials):
        judge = judges.get(i)
        by_callback = next((c for c in callbacks.get(i, []) if hasattr(c, "pruned_epoch")), None)
        pruned = judge.pruned_epoch if judge and judge.pruned_epoch is not None else getattr(by_callback, "pruned_epoch", None)
        reported = (judge.reported if judge and judge.reported else getattr(by_callback, "reported", {})) or {}
        records.append(_finish_trial(study, trial, plan, params_of[i], results[i], pruned, reported, seconds, printer))
    return records


def format_params(params: Mapping[str, Any]) -> str:
    def one(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k.removeprefix('loss.')}={one(v)}" for k, v in params.items()) or "-"


def _trial_line(plan: LossPlan, r: TrialRecord) -> str:
    run = f"run {r.run_id[:8]}" if r.run_id else "no run"
    if r.state == "COMPLETE":
        what = f"complete  {plan.objective}={r.value:.4g}"
    elif r.state == "PRUNED":
        what = f"pruned    {r.message}"
    else:
        what = f"failed    {r.failure}: {r.message}"
    return f"{plan.loss}  #{r.number}  {what}  [{format_params(r.params)}]  ({run}, {r.seconds:.1f} s)"


def search_loss(
    plan: LossPlan,
    settings: SearchSettings,
    storage: Storage,
    study: Any,
    experiment_id: str,
    *,
    printer: Printer = _print,
    callbacks: Sequence[Any] = (),
) -> LossOutcome:
    """Run trials of one loss's study until its budget is used (or ``search.timeout``).

    ``search.batch_size`` trials are asked for at once and trained as one stacked group;
    with extra Lightning ``callbacks`` (an API for tests and tools) each trial trains alone.
    """
    dists = {k: distribution(v) for k, v in plan.space.items()}
    outcome = LossOutcome(
        plan.loss, plan.study_name, storage.spec, plan.objective, plan.direction, plan.budget, plan.space, plan.fixed,
        note=plan.note,
    )
    deadline = time.monotonic() + settings.timeout if settings.timeout else None
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            outcome.timed_out = True
            break
        batch: list[Any] = []
        with _budget_lock(storage.lock_path):
            trials = study.get_trials(deepcopy=False)
            stale = _requeue_stale(study, trials, printer, plan.loss)
            if stale:
                trials = study.get_trials(deepcopy=False)
            free = plan.budget - _used(trials)
            for _ in range(max(0, min(1 if callbacks else settings.batch_size, free))):
                # reseeded per trial number: the same trials whatever the batch size or workers
                study.sampler = _sampler(settings.seed, len(trials) + len(batch))
                trial = study.ask(dists)
                _ACTIVE.add((study.study_name, trial.number))
                trial.set_user_attr(ATTR_WORKER, _worker())
                batch.append(trial)
        if stale:
            _end_orphan_runs(str(plan.cfg.tracking.uri), experiment_id, plan.study_name, stale)
        if not batch:
            break
        if settings.batch_size == 1 or callbacks:  # Lightning callbacks need a Lightning run each
            outcome.trials.append(_run_trial(study, batch[0], plan, settings, printer, callbacks))
        else:
            outcome.trials.extend(_run_trials(study, batch, plan, settings, printer, callbacks))
    return outcome  # counts and best: filled by run_search under the study's lock


def _fill(outcome: LossOutcome, study: Any) -> None:
    trials = study.get_trials(deepcopy=False)
    c = _counts(trials)
    outcome.complete, outcome.pruned, outcome.failed = c["complete"], c["pruned"], c["failed"]
    if c["complete"]:
        best = study.best_trial
        outcome.best_value, outcome.best_params, outcome.best_trial = best.value, dict(best.params), best.number
        outcome.best_run_id = best.user_attrs.get(ATTR_RUN)
    if outcome.timed_out and outcome.used < outcome.budget:
        outcome.note = f"stopped by search.timeout at {outcome.used}/{outcome.budget} trials; run again to continue"


def best_summary(outcome: LossOutcome, plan: LossPlan) -> dict[str, Any]:
    """What ``best_params.json`` holds: the best trial and how to train with its parameters."""
    train = [*plan.overrides, *(f"{k}={_override_value(v)}" for k, v in outcome.best_params.items())]
    return {
        "loss": outcome.loss,
        "study": outcome.study_name,
        "storage": outcome.storage,
        "objective": outcome.objective,
        "direction": outcome.direction,
        "best_value": outcome.best_value,
        "best_params": outcome.best_params,
        "best_trial": outcome.best_trial,
        "mlflow_run_id": outcome.best_run_id,
        "train_command": "python -m lossbench " + " ".join(train),
        "trials": {
            "complete": outcome.complete,
            "pruned": outcome.pruned,
            "failed": outcome.failed,
            "budget": outcome.budget,
        },
        "search_space": outcome.space,
        "fixed": outcome.fixed,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def record_best(outcome: LossOutcome, plan: LossPlan, uri: str, experiment_id: str) -> None:
    """Tag the best trial's run ``optuna_best=true`` (only it) and log ``best_params.json`` on it.

    Call it under the study's lock, with ``outcome`` filled from the study inside that lock.
    """
    client = tracking.client(uri)
    tagged = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{S.TAG_STUDY} = {_filter_value(outcome.study_name)} and tags.{TAG_BEST} = 'true'",
        max_results=1000,
    )
    for run in tagged:
        if run.info.run_id != outcome.best_run_id:
            client.delete_tag(run.info.run_id, TAG_BEST)
    if outcome.best_run_id:
        client.set_tag(outcome.best_run_id, TAG_BEST, "true")
        client.log_dict(outcome.best_run_id, best_summary(outcome, plan), ARTIFACT_BEST)


# ---------------------------------------------------------------------------- entry point
def run_search(
    overrides: Sequence[str] = (), *, printer: Printer = _print, callbacks: Sequence[Any] = ()
) -> list[LossOutcome]:
    """Search every loss of ``search.losses`` (or the one ``loss``) with the same budget.

    ``overrides`` are command-line overrides of the ``search`` config (which composes
    ``train``); ``printer`` gets one line per finished trial; ``callbacks`` are extra
    Lightning callbacks for every trial. Everything is checked (configs, spaces, storage,
    studies) before the first trial. Raises :class:`LossbenchError` for a user mistake; Ctrl-C propagates as
    ``KeyboardInterrupt`` after the running trial is recorded and re-queued.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    overrides = normalize_overrides(overrides)
    for name in listed_losses(overrides):  # before composing: a typo gets a did-you-mean
        if name not in loss_choices():
            raise unknown_name("loss", name, loss_choices(), hint="List them with `python -m lossbench.losses`.")
    first, first_choice = compose_config(overrides)
    node = OmegaConf.to_container(first.search, resolve=True) if "search" in first else None
    settings = SearchSettings.from_config(node)  # type: ignore[arg-type]
    choices = list(settings.losses) or [first_choice]
    cfgs = {c: first if c == first_choice else compose_config(overrides, c)[0] for c in choices}
    check_loss_keys(list(dict.fromkeys(str(c.loss.name) for c in cfgs.values())), settings)
    command_line_keys = {_key(o) for o in overrides if "=" in o}
    plans = [make_plan(cfgs[c], c, settings, command_line_keys, overrides) for c in choices]
    uri = str(plans[0].cfg.tracking.uri)
    storage = open_storage(settings.storage, uri)
    studies = [open_study(p, settings, storage) for p in plans]
    experiment_id = tracking.ensure_experiment(uri, str(plans[0].cfg.tracking.experiment_name))
    outcomes = []
    for plan, study in zip(plans, studies, strict=True):
        done = _used(study.get_trials(deepcopy=False))
        searched = ", ".join(plan.space) or "nothing"
        fixed = f"; held fixed: {', '.join(plan.fixed)}" if plan.fixed else ""
        printer(
            f"{plan.loss}: study '{plan.study_name}' in {storage.spec}, {min(done, plan.budget)}/{plan.budget} "
            f"trials done; searching {searched}{fixed}"
        )
        outcome = search_loss(plan, settings, storage, study, experiment_id, printer=printer, callbacks=callbacks)
        # Read the study as it stands now (every worker's trials in it) and move the best tag
        # in one locked step: two workers ending together otherwise each tagged their own
        # best, or one wrote a best it had read before the other's last trial finished.
        with _budget_lock(storage.lock_path):
            _fill(outcome, study)
            record_best(outcome, plan, uri, experiment_id)
        outcomes.append(outcome)
    return outcomes

"""Hydra's basic sweeper, handing its launcher groups of compatible jobs instead of single jobs.

The sweeper is the one place that sees all of a sweep's jobs before any starts. It
composes each job's config once (as the basic sweeper already does, to validate it),
groups the jobs that can train as one stacked model, and hands the configured launcher
(basic, joblib, submitit, Ray) one *group job* per group. A group job's config is its
first member's, plus ``engine.members``: every member's job number and overrides. The
worker composes the members and trains them with :func:`lossbench.engine.run_jobs`,
which splits off any run that turns out not to fit (a data size that differs, say).

``engine=sequential`` keeps one job per run, as Hydra's basic sweeper does.

A launcher whose jobs may run in another working directory, environment or machine (Ray,
submitit) gets each job's ``tracking.uri`` as this process resolved it, made absolute, and
the sweep folder as an absolute path; a Ray sweep is split into at least as many group jobs
as the cluster runs tasks at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from ..errors import LossbenchError
from ..overrides import value_text
from . import chunks, encode_members, engine_settings, pack, runs_per_job

log = logging.getLogger("lossbench")

# where Hydra looks for plugins; the class is registered explicitly (see register())
PLUGIN_MODULE = "hydra_plugins.lossbench_sweeper"

# settings that decide whether jobs can share a stacked model, read from the composed
# config before any data is loaded (the worker checks the tensor shapes too)
_DATA_KEYS_SHARED = ("name", "batch_size", "eval_batch_size")


def group_key(cfg: DictConfig) -> tuple[Any, ...] | None:
    """The jobs with equal keys go to one group job; None: this job runs alone."""
    engine, _ = engine_settings(cfg)
    if engine == "sequential":
        return None

    def node(key: str) -> str:
        value = cfg.get(key)
        if value is None:
            return "None"
        return repr(OmegaConf.to_container(value, resolve=False) if isinstance(value, DictConfig) else value)

    opt = cfg.get("optimizer") or {}
    opt_rest = {k: v for k, v in opt.items() if k not in ("lr", "weight_decay")}
    data = cfg.get("data") or {}
    return (
        node("model"),
        node("trainer"),
        repr(sorted((k, repr(v)) for k, v in opt_rest.items())),
        node("scheduler"),
        tuple(repr(data.get(k)) for k in _DATA_KEYS_SHARED),
    )


def parallel_workers(launcher_cfg: Any, inner: Launcher | None = None) -> int:
    """How many group jobs the launcher runs at once: joblib's n_jobs, or the tasks a Ray
    cluster holds at once (Ray is started here, as its launcher would, to ask it)."""
    n = launcher_cfg.get("n_jobs") if launcher_cfg is not None else None
    if isinstance(n, int) and n != 0:
        return os.cpu_count() or 1 if n < 0 else n
    if inner is not None and hasattr(inner, "ray_cfg"):
        return ray_slots(inner.ray_cfg)
    return 1


def ray_slots(ray_cfg: Any) -> int:
    """Tasks of ``hydra.launcher.ray.remote``'s size (default one CPU) the cluster runs at once."""
    import ray
    from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray

    start_ray(ray_cfg.init)  # the launcher finds it running and attaches to this one
    have = ray.cluster_resources()
    remote = ray_cfg.get("remote") or {}
    need = {"CPU": remote.get("num_cpus", 1), "GPU": remote.get("num_gpus", 0)}
    for k, v in need.items():
        if v and have.get(k, 0) < v:  # Ray would hold every task as infeasible, and the sweep would wait forever
            from ..errors import ParameterError

            raise ParameterError(
                f"Each Ray task asks for {v:g} {k} (hydra.launcher.ray.remote.num_{k.lower()}s), and the Ray cluster "
                f"has {have.get(k, 0):g}. "
                + ("Use hydra/launcher=ray on a cluster without GPUs, or attach to one that has them."
                   if k == "GPU" else "Ask for fewer, or attach to a larger cluster.")
            )
    fits = [int(have.get(k, 0) // v) for k, v in need.items() if v]
    return max(1, min(fits)) if fits else 1


def runs_elsewhere(launcher: Launcher) -> bool:
    """Whether the launcher may run jobs in another working directory, environment or machine
    (Ray, submitit): not Hydra's basic launcher nor joblib's workers, which inherit both."""
    return type(launcher).__name__ not in ("BasicLauncher", "JoblibLauncher")


def absolute_uri(uri: str) -> str:
    """A tracking URI that names the same store from any working directory: a relative SQLite
    file (``sqlite:///mlflow.db``, the default) or local path made absolute from this one."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        if path and path != ":memory:" and not os.path.isabs(path):
            return "sqlite:///" + os.path.abspath(path)
        return uri
    if uri and "://" not in uri and not uri.startswith("file:"):
        return os.path.abspath(uri)
    return uri


def pin_tracking(overrides: Sequence[str], uri: str | None) -> list[str]:
    """The job's overrides with ``tracking.uri`` set to the store the driver resolved."""
    if uri is None:
        return list(overrides)
    kept = [o for o in overrides if o.lstrip("+").split("=", 1)[0] != "tracking.uri"]
    return [*kept, f"tracking.uri={value_text(uri)}"]


class GroupingLauncher(Launcher):
    """Wraps the configured launcher: jobs in, group jobs out."""

    def __init__(self, inner: Launcher, sweeper: LossbenchSweeper):
        self.inner = inner
        self.sweeper = sweeper

    def setup(self, **kwargs: Any) -> None:  # the inner launcher is set up already
        pass

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.sweeper.config is not None
        max_group = self.sweeper.max_group
        try:
            workers = parallel_workers(self.sweeper.config.hydra.get("launcher"), self.inner)
        except LossbenchError as exc:  # before any job: one line and status 2, as for any bad setting
            if os.environ.get("LOSSBENCH_DEBUG"):
                raise
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        # a task on another node, or in a Ray worker's working directory, gets the store this
        # process resolved and created (its environment's MLFLOW_TRACKING_URI, its own folder)
        elsewhere = runs_elsewhere(self.inner)
        by_key: dict[Any, list[tuple[int, list[str]]]] = {}
        alone: list[list[str]] = []
        one_by_one: list[tuple[int, list[str]]] = []  # engine=sequential: packed by engine.runs_per_job
        per_job = self.sweeper.runs_per_job
        for i, overrides in enumerate(job_overrides):
            key = self.sweeper.keys.get(tuple(overrides))
            packable = tuple(overrides) in self.sweeper.sequential
            if elsewhere:
                overrides = pin_tracking(overrides, self.sweeper.uris.get(tuple(overrides)))
            if key is None and packable and per_job is not None:
                one_by_one.append((initial_job_idx + i, list(overrides)))
            elif key is None:
                alone.append(list(overrides))
            else:
                by_key.setdefault(key, []).append((initial_job_idx + i, list(overrides)))
        keys = list(by_key)
        jobs: list[list[str]] = []
        sizes: list[int] = []

        def add(part: list[Any]) -> None:  # one launcher job: a run alone, or runs under engine.members
            jobs.append(part[0][1] if len(part) == 1 else [*part[0][1], f"engine.members='{encode_members(part)}'"])
            sizes.append(len(part))

        for key in keys:
            members = by_key[key]
            # keep every worker busy: at least as many group jobs as workers, when there are runs enough
            share = max(1, round(workers * len(members) / max(1, len(job_overrides))))
            bound = min(b for b in (max_group, per_job, len(members)) if b is not None)
            for part in chunks(members, bound, min_chunks=share):
                add(part)
        # runs that train one by one, engine.runs_per_job of them to a job (the worker's run_jobs
        # trains them in turn): a SLURM array task holds minutes of work, not seconds
        share = max(1, round(workers * len(one_by_one) / max(1, len(job_overrides))))
        for part in pack(one_by_one, per_job, workers=share):
            add(part)
        jobs.extend(alone)
        sizes.extend([1] * len(alone))
        if elsewhere:  # its job folders under the sweep folder this process made, not the worker's
            sweep_dir = os.path.abspath(str(self.sweeper.config.hydra.sweep.dir))
            jobs = [[*job, f"hydra.sweep.dir={value_text(sweep_dir)}"] for job in jobs]
        if any(s > 1 for s in sizes):
            log.info(
                f"lossbench engine: {len(job_overrides)} jobs as {len(jobs)} group job(s) "
                f"({', '.join(str(s) for s in sizes)} runs each)"
            )
        if type(self.inner).__name__ == "BasicLauncher":  # jobs run in this process: their runs handle signals
            return self.inner.launch(jobs, initial_job_idx=initial_job_idx)
        from ..sweep import sweep_id_from_dir
        from .stop import workers_stop_cleanly

        cfg = self.sweeper.config
        with workers_stop_cleanly(str(cfg.tracking.uri), str(cfg.tracking.experiment_name), sweep_id_from_dir(cfg.hydra.sweep.dir)):
            return self.inner.launch(jobs, initial_job_idx=initial_job_idx)


class LossbenchSweeper(Sweeper):
    """Hydra's basic sweeper (same override grammar, same ``params``) that groups jobs.

    It holds a basic sweeper rather than subclassing it: Hydra re-imports its core
    plugins when it scans for plugins, so a subclass made at import time would derive
    from a stale class.
    """

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 grids: list[dict[str, str]] | None = None):
        super().__init__()
        self.max_batch_size, self.params, self.grids = max_batch_size, params, grids
        self.keys: dict[tuple[str, ...], Any] = {}
        self.uris: dict[tuple[str, ...], str] = {}  # each job's tracking.uri, absolute, as resolved here
        self.max_group: int | None = 256
        self.runs_per_job: int | None = None  # engine.runs_per_job (see configs/engine/auto.yaml)
        self.sequential: set[tuple[str, ...]] = set()  # jobs with valid settings and engine=sequential
        self.config: DictConfig | None = None
        self.hydra_context: Any = None
        self.basic: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        self.hydra_context, self.config = hydra_context, config
        self.basic = BasicSweeper(max_batch_size=self.max_batch_size, params=self.params)
        self.basic.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.basic.launcher = GroupingLauncher(self.basic.launcher, self)
        self.basic.validate_batch_is_legal = self.validate_batch_is_legal

    def sweep(self, arguments: list[str]) -> Any:
        if not self.grids:
            return self.basic.sweep(arguments)
        # a union of grids (lossbench.engine.grids): the basic sweeper runs the jobs, as one sweep
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from .grids import grid_jobs

        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs = grid_jobs(parser, dict(self.params or {}), [dict(g) for g in self.grids], arguments)
        size = self.max_batch_size or max(1, len(jobs))
        self.basic.params = {}
        self.basic.split_arguments = lambda *_: [jobs[i : i + size] for i in range(0, len(jobs), size)]
        return self.basic.sweep([])

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose every job once, as the basic sweeper does, and note its group key."""
        from .compose import JobComposer

        assert self.hydra_context is not None and self.config is not None
        composer = JobComposer(self.hydra_context.config_loader, self.config)
        for overrides in batch:
            cfg = composer(list(overrides), keep=True)
            with contextlib.suppress(Exception):  # a job with no valid store reports it when it runs
                self.uris[tuple(overrides)] = absolute_uri(str(cfg.tracking.uri))
            try:  # before any run: a job folder per run would be the wrong thing to hand SLURM
                self.runs_per_job = runs_per_job(cfg)
            except LossbenchError as exc:
                if os.environ.get("LOSSBENCH_DEBUG"):
                    raise
                print(f"error: {exc}", file=sys.stderr)
                raise SystemExit(2) from None
            try:
                key = group_key(cfg)
                name, self.max_group = engine_settings(cfg)
                if name == "sequential":
                    self.sequential.add(tuple(overrides))
            except Exception:  # noqa: BLE001 - the job reports its own bad settings when it runs
                key = None
            self.keys[tuple(overrides)] = key


def register() -> None:
    """Make the sweeper known to Hydra (``hydra/sweeper=lossbench`` in configs/train.yaml).

    Hydra instantiates plugins only from the ``hydra_plugins`` package; registering the
    class under that module name spares the project a second top-level package.
    """
    import sys

    from hydra.core.plugins import Plugins

    LossbenchSweeper.__module__ = PLUGIN_MODULE
    sys.modules.setdefault(PLUGIN_MODULE, sys.modules[__name__])  # so that Hydra can locate it by name
    Plugins.instance().register(LossbenchSweeper)

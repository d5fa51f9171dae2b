"""``python -m lossbench loss=<name> data=<name> [model=<name>] [key=value ...]``

A Hydra application (``--help``, ``--cfg job``, ``--info``, ``-m`` for sweeps and tab
completion work as in any Hydra app). A user's mistake prints one clear message and
exits with status 2; set ``LOSSBENCH_DEBUG=1`` to see the traceback too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .configs import CONFIG_DIR
from .errors import LossbenchError
from .gpus import gpu_count, gpu_for_job

log = logging.getLogger("lossbench")


def preflight(argv: list[str]) -> None:
    """Check group choices (``loss=hubr``, ``loss=glob(hub*)``) and keys (``data.n_sampels=5``)
    before Hydra starts, with a did-you-mean."""
    from .overrides import check_choices, check_keys

    check_choices(argv, CONFIG_DIR)
    check_keys(argv, CONFIG_DIR)
    check_launcher(argv)


# launchers that come with the cluster extra: config name prefix -> the modules they import
_EXTRA_LAUNCHERS = {
    "ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
    "submitit": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
}


def check_launcher(argv: list[str]) -> None:
    """``hydra/launcher=ray`` (or ray_gpus, slurm, submitit_*) without the cluster extra: say
    what to install, instead of Hydra's "Could not find" or an ImportError from a worker."""
    import importlib.util

    from .errors import ParameterError
    from .overrides import is_override, load_config, parse

    for arg in argv:
        if not is_override(arg) or parse(arg).key_or_group != "hydra/launcher":
            continue
        name = base = str(parse(arg).value())
        for _ in range(5):  # our configs extend the plugins' (ray_gpus -> ray, slurm -> submitit_slurm)
            path = CONFIG_DIR / "hydra" / "launcher" / f"{base}.yaml"
            defaults = load_config(path).get("defaults") if path.exists() else None
            if not defaults or not isinstance(defaults[0], str) or defaults[0] == base:
                break
            base = defaults[0]
        modules = next((m for prefix, m in _EXTRA_LAUNCHERS.items() if base.startswith(prefix)), ())

        def missing(module: str) -> bool:
            try:
                return importlib.util.find_spec(module) is None
            except (ImportError, ValueError):  # a parent package missing, or a module blocked
                return True

        absent = [m for m in modules if missing(m)]
        if absent:
            raise ParameterError(
                f"hydra/launcher={name} needs {' and '.join(absent)}, which this Python does not have. "
                'Install the cluster extra: pip install "lossbench[cluster]" (in a checkout: pip install -e ".[cluster]").'
            )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _app(cfg: DictConfig) -> object:
    from . import pipeline
    from .sweep import sweep_id_from_dir

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    sweep_id = sweep_id_from_dir(hc.sweep.dir) if multirun else None
    overrides = " ".join(hc.overrides.task)
    if multirun:
        _share_cores(hc)
    try:
        from .engine import engine_settings

        engine, max_group = engine_settings(cfg)
        members = cfg.engine.get("members") if cfg.get("engine") else None
        if members or (engine != "sequential" and (multirun or engine == "batched")):
            return _run_engine(cfg, hc, engine, max_group, members, sweep_id, multirun)
        with gpu_for_job([cfg], int(hc.job.num)) if multirun else contextlib.nullcontext():
            result = pipeline.run(cfg, sweep_id=sweep_id, overrides=overrides, multirun=multirun)
    except LossbenchError as exc:
        if os.environ.get("LOSSBENCH_DEBUG"):
            raise
        if not multirun:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        from .sweep import record_invalid_job

        record_invalid_job(cfg, sweep_id, overrides, exc)
        log.info(f"[job {hc.job.num}] invalid   {overrides}: {exc}")
        return None
    except pipeline.Interrupted:
        _say("\nInterrupted: the current run is recorded as KILLED.")
        raise SystemExit(130) from None
    if multirun:
        log.info(f"[job {hc.job.num}] {_one_line(result)}  [{overrides}]")
    else:
        _summary(result)
        if result.status == "FAILED" and result.failure != "diverged":
            raise SystemExit(1)
    return result.status


def _say(line: str) -> None:
    """Tell the terminal, if there still is one: with the parent gone (a closed pipe), an
    error while printing must not turn a Ctrl-C or SIGTERM into "go on with the sweep"."""
    import contextlib

    with contextlib.suppress(OSError):
        print(line, file=sys.stderr)


def _member_configs(members: str, hc: object) -> list[tuple[int, DictConfig, str]]:
    """A group job's members, each composed as Hydra composes a sweep job."""
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from .engine import decode_members
    from .engine.compose import JobComposer

    master = OmegaConf.create({"hydra": OmegaConf.to_container(hc, resolve=False)})  # type: ignore[arg-type]
    composer = JobComposer(GlobalHydra.instance().config_loader(), master)
    return [(num, composer(overrides), " ".join(overrides)) for num, overrides in decode_members(members)]


def _run_engine(cfg, hc, engine, max_group, members, sweep_id, multirun):  # type: ignore[no-untyped-def]
    """Train this job's runs (a group job's members, or the job itself) with the engines."""
    from . import pipeline
    from .engine import run_jobs

    if members:
        jobs = _member_configs(str(members), hc)
    else:
        jobs = [(int(hc.job.num) if multirun else 0, cfg, " ".join(hc.overrides.task))]

    def emit(num: int, result: object, overrides: str) -> None:
        if multirun:
            log.info(f"[job {num}] {_one_line(result)}  [{overrides}]")

    try:
        with gpu_for_job([c for _, c, _ in jobs], int(hc.job.num)) if multirun else contextlib.nullcontext():
            results = run_jobs(jobs, sweep_id=sweep_id, multirun=multirun, engine=engine, max_group=max_group, emit=emit)
    except pipeline.Interrupted:
        _say("\nInterrupted: the runs in training are recorded as KILLED.")
        raise SystemExit(130) from None
    if not multirun:
        (result,) = results.values()
        _summary(result)
        if result.status == "FAILED" and result.failure != "diverged":
            raise SystemExit(1)
        return result.status
    return [r.status if r is not None else None for r in results.values()]


def _share_cores(hc: object) -> None:
    """Joblib workers share the machine: each takes cores // n_jobs torch threads.

    Without it every worker starts one thread per core, and a step was measured 14x
    slower on a loaded 2-core machine.
    """
    launcher = getattr(hc, "launcher", None)
    target = str(launcher.get("_target_", "")) if launcher is not None else ""
    if "joblib" not in target.lower():
        return
    n = launcher.get("n_jobs", 1)
    cores = os.cpu_count() or 1
    n = cores if not isinstance(n, int) or n < 0 else max(n, 1)
    import torch

    torch.set_num_threads(max(1, cores // n))


def _one_line(r: object) -> str:
    from .pipeline import RunResult

    assert isinstance(r, RunResult)
    if r.status == "SKIPPED":
        return f"skipped   {r.run_name}: {r.message}"
    if r.status == "FAILED":
        return f"{r.failure:9s} {r.run_name}: {r.message}"
    key = f"test_{r.objective}"
    shown = f"{key}={r.metrics[key]:.4g}" if key in r.metrics else ""
    return f"finished  {r.run_name}: {shown}"


def _summary(r: object) -> None:
    from rich.console import Console
    from rich.table import Table

    from . import tracking
    from .pipeline import RunResult

    assert isinstance(r, RunResult)
    console = Console(stderr=False)
    if r.status == "SKIPPED":
        console.print(f"[yellow]Skipped[/]: {r.run_name} {r.message}.")
        return
    if r.status == "FAILED":
        console.print(f"[red]Run {r.run_name} {r.failure}[/]: {r.message}")
    else:
        table = Table(title=f"{r.run_name}: test metrics", show_header=True)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in r.metrics.items():
            if k.startswith("test_recall_class_"):
                continue
            table.add_row(k, f"{v:.4f}")
        console.print(table)
    console.print(f"MLflow experiment [bold]{r.experiment_name}[/], run [bold]{r.run_name}[/] ({r.run_id}) at {r.tracking_uri}")
    console.print(f"Open the UI: {tracking.ui_command(r.tracking_uri)}")


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("lossbench_gpu_count"):
        OmegaConf.register_new_resolver("lossbench_gpu_count", lambda: max(gpu_count(), 1))


def main() -> None:
    _register_resolvers()
    from .engine.sweeper import register

    register()
    argv = sys.argv[1:]
    try:
        preflight(argv)
    except LossbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if any(a in ("-m", "--multirun") for a in argv) and not any(a.lstrip("+").startswith("hydra.sweep.dir=") for a in argv):
        # Hydra's default names a sweep by the second it started: two sweeps started together
        # would share a folder and a sweep id, and count each other's runs
        sys.argv.append(f"hydra.sweep.dir=multirun/{time.strftime('%Y-%m-%d/%H-%M-%S')}-{secrets.token_hex(2)}")
    try:
        _app()  # a status other than 0 leaves as SystemExit: from the run, or from the sweep's summary
    except KeyboardInterrupt:  # a sweep whose workers were stopped (engine/stop.py)
        _say("\nInterrupted: the sweep's runs in progress are recorded as KILLED.")
        raise SystemExit(130) from None
    finally:  # a sweep that stopped before its end: its parent run too
        from .sweep import end_open_parents

        end_open_parents("KILLED")


if __name__ == "__main__":
    main()

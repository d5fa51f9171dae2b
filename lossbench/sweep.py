"""Hydra multirun glue: one MLflow store and experiment per sweep, a line per job, a summary.

:class:`SweepCallback` is registered in ``configs/train.yaml`` under ``hydra.callbacks``.
Its ``on_multirun_start`` runs in the parent process before any launcher starts a
worker, so the store and the experiment are created exactly once.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from . import schema as S
from . import tracking

log = logging.getLogger("lossbench")


def sweep_id_from_dir(sweep_dir: str) -> str:
    """A readable sweep id from Hydra's sweep directory (``multirun/2026-11-24/07-00-00``).

    Read from the absolute path: the Ray and SLURM launchers hand their workers the sweep
    folder made absolute, so a relative one-part folder (``hydra.sweep.dir=out``) gave the
    driver the id ``out`` and the workers ``<parent>_out``, and the runs lost their parent.
    """
    parts = [p for p in re.split(r"[\\/]+", os.path.abspath(str(sweep_dir))) if p and p not in (".", "multirun")]
    return "_".join(parts[-2:]) if parts else "sweep"


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        uri = str(config.tracking.uri)
        name = str(config.tracking.experiment_name)
        sid = sweep_id_from_dir(config.hydra.sweep.dir)
        exp_id = tracking.ensure_experiment(uri, name)  # once, here, before workers start
        # the parent run that folds the sweep's runs in MLflow's UI; the jobs find it by its tags
        parent = tracking.parent_run(uri, exp_id, "sweep", sid, f"sweep-{sid}", create=True)
        assert parent is not None
        _OPEN_PARENTS[parent] = tracking.Run(uri, parent)
        log.info(f"lossbench sweep {sid} -> MLflow experiment '{name}' at {uri}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        uri = str(config.tracking.uri)
        name = str(config.tracking.experiment_name)
        sid = sweep_id_from_dir(config.hydra.sweep.dir)
        runs = tracking.sweep_runs(uri, name, sid)
        summary = summarize(runs)
        log.info(format_summary(summary, sid, name, uri))
        parent = tracking.sweep_parent(uri, name, sid)
        if parent in _OPEN_PARENTS:
            counts = {"runs_finished": summary["FINISHED"], "runs_diverged": summary["diverged"],
                      "runs_failed": summary["error"], "runs_killed": summary["KILLED"]}
            _OPEN_PARENTS.pop(parent).end(
                "FAILED" if summary["error"] else "FINISHED", metrics=tracking.metrics_at([(0, counts)])
            )
        if summary["error"]:  # the command's exit status (Hydra passes a SystemExit from a callback on)
            raise SystemExit(1)


# parent runs of sweeps this process started and has not ended (ended KILLED if it stops early)
_OPEN_PARENTS: dict[str, tracking.Run] = {}


def end_open_parents(status: str = "KILLED") -> None:
    """End the parent runs of sweeps that stopped early; one that no job reached (a sweep refused
    before its first job, say) holds nothing, and is deleted rather than left as a KILLED husk."""
    while _OPEN_PARENTS:
        parent, run = _OPEN_PARENTS.popitem()
        client = tracking.client(run.uri)
        experiment_id = client.get_run(parent).info.experiment_id
        flt = f"tags.`{S.TAG_PARENT}` = {tracking.filter_value(parent)}"
        run.end(status)
        if not client.search_runs([experiment_id], filter_string=flt, max_results=1):
            client.delete_run(parent)


def summarize(runs: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"FINISHED": 0, "diverged": 0, "error": 0, "KILLED": 0, "failed_runs": []}
    for r in runs:
        status = r.info.status
        if status == "FINISHED":
            out["FINISHED"] += 1
        elif status == "KILLED":
            out["KILLED"] += 1
        elif status == "FAILED":
            kind = r.data.tags.get(S.TAG_FAILURE, S.FAILURE_ERROR)
            out["diverged" if kind == S.FAILURE_DIVERGED else "error"] += 1
            out["failed_runs"].append((r.info.run_name, kind, r.data.tags.get(S.TAG_OVERRIDES, "")))
    return out


def format_summary(s: dict[str, Any], sid: str, name: str, uri: str) -> str:
    lines = [
        "",
        f"Sweep {sid} done: {s['FINISHED']} finished, {s['diverged']} diverged, {s['error']} failed with an error"
        + (f", {s['KILLED']} killed" if s["KILLED"] else "")
        + ".",
    ]
    for run_name, kind, overrides in s["failed_runs"]:
        lines.append(f"  {kind:8s} {run_name}  [{overrides}]")
    lines.append(f"Report: python -m lossbench.report tracking.experiment_name={name} tracking.uri={uri}")
    lines.append(f"Browse: {tracking.ui_command(uri)}")
    return "\n".join(lines)


def record_invalid_job(cfg: DictConfig, sweep_id: str | None, overrides: str, exc: Exception) -> None:
    """A sweep job whose config is invalid still leaves a FAILED run, so the record is complete."""
    uri = str(cfg.tracking.uri)
    exp_id = tracking.ensure_experiment(uri, str(cfg.tracking.experiment_name))
    loss = str(cfg.get("loss", {}).get("name", "?"))
    data = str(cfg.get("data", {}).get("name", "?"))
    run = tracking.Run.start(
        uri,
        exp_id,
        f"{loss}-{data}-s{cfg.get('seed', '?')}",
        {S.TAG_LOSS: loss, S.TAG_DATA: data, S.TAG_SWEEP: sweep_id, S.TAG_OVERRIDES: overrides,
         S.TAG_PARENT: tracking.sweep_parent(uri, str(cfg.tracking.experiment_name), sweep_id) if sweep_id else None},
        {},
    )
    run.end(
        "FAILED",
        {S.TAG_FAILURE: S.FAILURE_ERROR, "error_message": str(exc)[:4000]},
        artifacts={S.ARTIFACT_TRACEBACK: f"{type(exc).__name__}: {exc}\n"},
    )

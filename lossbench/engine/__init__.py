"""Training engines: one run at a time (Lightning), or many runs as one stacked model.

:func:`run_jobs` takes a list of composed job configs (a sweep's, or a group of one),
validates each, skips those already FINISHED, groups the rest by
:func:`~lossbench.engine.batched.compat_key`, trains each group with the batched
engine and any run that cannot join one alone, and returns each job's result. A Hydra
launcher (joblib, submitit, Ray) runs it on a *group job*: the unit of work handed to
workers is a group (see :mod:`lossbench.engine.sweeper`).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import schema as S

log = logging.getLogger("lossbench")

ENGINES = ("auto", "batched", "sequential")


def encode_members(members: Sequence[tuple[int, Sequence[str]]]) -> str:
    """A group's members (job number, overrides) as one token safe in a Hydra override."""
    blob = json.dumps([[int(n), list(o)] for n, o in members], separators=(",", ":"))
    return base64.urlsafe_b64encode(blob.encode()).decode()


def decode_members(token: str) -> list[tuple[int, list[str]]]:
    return [(int(n), list(o)) for n, o in json.loads(base64.urlsafe_b64decode(token.encode()).decode())]


def engine_settings(cfg: Mapping[str, Any]) -> tuple[str, int | None]:
    from ..errors import ParameterError

    node = cfg.get("engine") or {}
    name = str(node.get("name", "auto"))
    if name not in ENGINES:
        raise ParameterError(f"engine must be one of {', '.join(ENGINES)}. Got {name!r} instead (choose with engine=<name>).")
    mg = node.get("max_group", 256)
    if mg is not None and (isinstance(mg, bool) or not isinstance(mg, int) or mg < 1):
        raise ParameterError(f"engine.max_group must be a positive integer or null. Got {mg!r} instead.")
    runs_per_job(cfg)
    return name, mg


def runs_per_job(cfg: Mapping[str, Any]) -> int | None:
    """``engine.runs_per_job``: the most runs one launcher job (one SLURM array task) trains; null: no bound."""
    from ..errors import ParameterError

    node = cfg.get("engine") or {}
    n = node.get("runs_per_job", None)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ParameterError(
            f"engine.runs_per_job must be a positive integer or null (null: one run per job, or a whole "
            f"stacked group). Got {n!r} instead (set it with engine.runs_per_job=<n>)."
        )
    return n


def pack(items: Sequence[Any], runs_per_job: int | None, workers: int = 1) -> list[list[Any]]:
    """Jobs that train one by one, packed into launcher jobs of at most ``runs_per_job`` runs
    (near-equal, and at least ``workers`` of them when there are runs enough); null: one each."""
    if runs_per_job is None:
        return [[item] for item in items]
    return chunks(items, runs_per_job, min_chunks=workers)


def chunks(items: Sequence[Any], max_group: int | None, min_chunks: int = 1) -> list[list[Any]]:
    """Split ``items`` into near-equal chunks of at most ``max_group``, at least ``min_chunks``."""
    n = len(items)
    if n == 0:
        return []
    parts = max(min_chunks, 1, -(-n // max_group) if max_group else 1)
    parts = min(parts, n)
    size, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        out.append(list(items[start:stop]))
        start = stop
    return out


def run_jobs(
    jobs: Sequence[tuple[int, Any, str]],
    *,
    sweep_id: str | None = None,
    multirun: bool = True,
    engine: str = "auto",
    max_group: int | None = 256,
    emit: Callable[[int, Any, str], None] | None = None,
    tags: Mapping[int, Mapping[str, Any]] | None = None,
    on_epoch: Mapping[int, Callable[[int, float], str | None]] | None = None,
    callbacks: Callable[[int], Sequence[Any]] | None = None,
) -> dict[int, Any]:
    """Train ``jobs`` = [(job number, composed config, overrides string)]; return {number: RunResult | None}.

    A job whose config is invalid is recorded FAILED in a sweep (None in the result) and
    raises :class:`LossbenchError` for a single run. ``emit(num, result, overrides)`` is
    called as each job ends. Per job number: ``tags`` are added to its run, ``on_epoch``
    judges each validation epoch (an Optuna pruner, in a group); ``callbacks(num)`` gives
    its Lightning callbacks, asked for only should it train alone (the same pruner).
    """
    from .. import pipeline, tracking
    from ..errors import LossbenchError
    from ..pipeline import RunResult, _sigterm_as_interrupt, prepare, run_name, skip_if_finished
    from ..sweep import record_invalid_job
    from . import batched as B

    emit = emit or (lambda num, result, overrides: None)
    results: dict[int, Any] = {}
    experiments: dict[tuple[str, str], str] = {}
    batchable: list[tuple[int, Any, str, str, str]] = []
    alone: list[tuple[int, Any, str, str]] = []
    tic = time.monotonic()
    for num, cfg, overrides in jobs:
        try:
            p = prepare(cfg)
        except LossbenchError as exc:
            if not multirun:
                raise
            record_invalid_job(cfg, sweep_id, overrides, exc)
            log.info(f"[job {num}] invalid   {overrides}: {exc}")
            results[num] = None
            continue
        c = p.cfg
        uri, exp_name = str(c["tracking"]["uri"]), str(c["tracking"]["experiment_name"])
        if (uri, exp_name) not in experiments:
            experiments[(uri, exp_name)] = tracking.ensure_experiment(uri, exp_name)
        exp_id = experiments[(uri, exp_name)]
        chash = tracking.config_hash(c)
        r = RunResult("RUNNING", run_name(p), experiment_id=exp_id, tracking_uri=uri, experiment_name=exp_name,
                      objective=p.info.objective)
        if skip_if_finished(r, c, chash):
            results[num] = r
            emit(num, r, overrides)
            continue
        reason = "engine=sequential" if engine == "sequential" else B.unsupported(p)
        if reason:
            alone.append((num, cfg, overrides, reason))
        else:
            batchable.append((num, p, overrides, chash, exp_id))

    prepared_s = time.monotonic() - tic
    groups: dict[tuple[Any, ...], list[tuple[int, Any, str, str, str]]] = {}
    for item in batchable:
        groups.setdefault(B.compat_key(item[1]), []).append(item)
    plan = [g for members in groups.values() for g in chunks(members, max_group)]
    if len(plan) > 1 or (alone and engine != "sequential"):  # a packed sequential job: no groups to tell of
        log.info(f"lossbench engine: {len(batchable)} runs in {len(plan)} stacked group(s), {len(alone)} alone")
    for members in plan:
        opened = time.monotonic()
        gid = B.new_group_id()
        first = members[0][1]
        log.info(f"  group {gid}: {len(members)} run(s) together ({B.describe(first)})")
        ms = []
        try:
            with _sigterm_as_interrupt():
                for num, p, overrides, chash, exp_id in members:
                    ms.append(_open_member(p, num, overrides, chash, exp_id, gid, len(members), sweep_id, multirun, tags, on_epoch))
        except KeyboardInterrupt:  # Ctrl-C while the runs were being created: none is left RUNNING
            for m in ms:
                m.run.end("KILLED")
            raise pipeline.Interrupted("interrupted") from None
        trainer = B.GroupTrainer(ms, group_id=gid)
        opened = time.monotonic() - opened
        try:
            with _sigterm_as_interrupt():
                trainer.fit()
            t = trainer.timing
            log.info(
                f"  group {gid}: {len(members)} run(s) in {sum(t.values()) + opened:.1f} s (runs opened {opened:.1f}, "
                f"training {t['train']:.1f}, validation {t['validate']:.1f}, test and records {t['test+record']:.1f}; "
                f"checking the configs of this job took {prepared_s:.1f})"
            )
        finally:
            for (num, _, overrides, _, _), m in zip(members, ms, strict=True):
                if m.result.status != "RUNNING":
                    results[num] = m.result
                    emit(num, m.result, overrides)
    for num, cfg, overrides, reason in alone:
        if engine != "sequential":
            log.info(f"[job {num}] trains alone: {reason}")
        r = pipeline.run(
            cfg, sweep_id=sweep_id, overrides=overrides, multirun=multirun, quiet=True,
            callbacks=list(callbacks(num)) if callbacks else [], extra_tags=(tags or {}).get(num),
        )
        results[num] = r
        emit(num, r, overrides)
    return results


def _open_member(p: Any, num: int, overrides: str, chash: str, exp_id: str, gid: str, size: int, sweep_id: str | None,
                 multirun: bool, tags: Mapping[int, Mapping[str, Any]] | None,
                 on_epoch: Mapping[int, Callable[[int, float], str | None]] | None) -> Any:
    """Create member ``num``'s MLflow run (RUNNING, with its tags and params) and its engine state."""
    from .. import tracking
    from ..pipeline import RunResult, curves_wanted, run_name, run_params, run_tags
    from . import batched as B

    c = p.cfg
    uri = str(c["tracking"]["uri"])
    r = RunResult("RUNNING", run_name(p), experiment_id=exp_id, tracking_uri=uri,
                  experiment_name=str(c["tracking"]["experiment_name"]), objective=p.info.objective)
    extra = {**(tags or {}).get(num, {}), S.TAG_ENGINE: "batched", S.TAG_GROUP: gid, S.TAG_GROUP_SIZE: size}
    run = tracking.Run.start(uri, exp_id, r.run_name, run_tags(p, chash, sweep_id=sweep_id, overrides=overrides, extra_tags=extra), run_params(p))
    r.run_id = run.run_id
    _, lr, wd, _ = B._opt_parts(p)
    driver, sched, has = B._driver(p, p.loss, B.device_of(p))
    if sched is not None:  # the schedule's lr for the first epoch (a warm-up starts below the config's)
        lr = float(driver.param_groups[0]["lr"])
    return B.Member(
        p=p, result=r, run=run, lr=lr, weight_decay=wd, driver=driver, scheduler=sched,
        has_loss_params=has, maximize=p.info.objective_mode == "max", objective=p.info.objective,
        curves=curves_wanted(c, multirun), on_epoch=(on_epoch or {}).get(num),
    )


__all__ = ["ENGINES", "chunks", "decode_members", "encode_members", "engine_settings", "pack", "run_jobs", "runs_per_job"]

"""Runs per second that N worker processes write into each MLflow store: SQLite against PostgreSQL.

Each side is one store, written at once by ``--workers`` processes (default 8), each writing
``--runs-per-worker`` runs (default 40) the way a lossbench run writes itself, through
:class:`lossbench.tracking.Run`: the run created RUNNING with its tags (MLflow's context tags
included) and ~60 params, ``--epochs`` per-epoch metric batches (default 5: train_loss,
val_loss, val_rmse), then its end: the test metrics and closing tags in one batch, two small
JSON artifacts, and FINISHED. The sides:

``sqlite``    a fresh SQLite file (``sqlite:///<tmp>/mlflow.db``), the default store
``postgres``  PostgreSQL 15 directly (``postgresql+psycopg://...``, each worker its own pool)
``server``    ``mlflow server`` on that PostgreSQL over HTTP (``--server-workers``, default 2;
              ``--default-artifact-root`` on the local disk, so artifacts skip HTTP as with
              a shared file system)

PostgreSQL and the server are started in temp folders on 127.0.0.1 by
:mod:`lossbench.servers` (``initdb`` as the ``postgres`` user when run as root) and stopped
after; starting them is not timed. The workers are spawned, import MLflow, make their client
and wait; the clock runs from the moment all are released until the last one is done, so
runs/s = workers x runs per worker / that time. Every side writes a fresh experiment, and the
rounds alternate the sides' order. After the timing the runs are read back: each side must
hold every run exactly once, FINISHED (errors are counted, not retried).

A hand check on the shared 2-core machine gave 11.4 runs/s into SQLite, 22.4 into PostgreSQL
directly and 13.8 through the server over HTTP (8 writers x 40 runs, 0 errors).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import console, describe_machine, machine_info, median, pairwise_ratio, publish

SIDES = ("sqlite", "postgres", "server")
HAND_CHECK = {"sqlite": 11.4, "postgres": 22.4, "server": 13.8}  # runs/s, 8 writers x 40 runs, this machine kind


# ----------------------------------------------------------------------------- one worker
def _params(worker: int, i: int) -> dict[str, Any]:
    """~60 params, as the flattened config of a small regression run looks."""
    p: dict[str, Any] = {"seed": i, "loss.name": "huber", "loss.delta": 1.0, "data.name": "regression_outliers",
                         "data.n_samples": 200, "data.outlier_fraction": 0.1, "model.name": "linear",
                         "optimizer.name": "adam", "optimizer.lr": 0.01, "trainer.max_epochs": 5,
                         "bench.worker": worker}
    p.update({f"data_info.feature_{k}": k * 0.5 for k in range(25)})
    p.update({f"trainer.option_{k}": f"value-{k}" for k in range(24)})
    return p


def _write_run(uri: str, experiment_id: str, worker: int, i: int, epochs: int) -> None:
    from .. import tracking

    tags = {"loss": "huber", "data": "regression_outliers", "model": "linear", "seed": i, "task": "regression",
            "objective": "test_rmse", "engine": "sequential", "bench_worker": worker, "owner": tracking.owner()}
    run = tracking.Run.start(uri, experiment_id, f"huber-regression_outliers-w{worker}-s{i}", tags,
                             _params(worker, i), system_metrics=False)
    for epoch in range(epochs):
        run.log_metrics(tracking.metrics_at([(epoch, {"train_loss": 1.0 / (epoch + 1), "val_loss": 1.1 / (epoch + 1),
                                                      "val_rmse": 2.0 / (epoch + 1)})]))
    test = {"test_rmse": 1.5, "test_mae": 1.1, "test_median_ae": 0.9, "best_val_objective": 1.4}
    run.end("FINISHED", {"best_epoch": epochs - 1}, metrics=tracking.metrics_at([(epochs, test)]),
            artifacts={"config.json": _params(worker, i), "test_metrics.json": test})


def _worker(uri: str, experiment_id: str, worker: int, runs: int, epochs: int, ready: Any, go: Any, out: Any) -> None:
    """One writer process: get ready (imports, client), wait for ``go``, write ``runs`` runs, report."""
    try:
        from .. import tracking

        # before the clock: MLflow's imports, the client and its first request, the context tags (git)
        tracking.client(uri).get_experiment(experiment_id)
        tracking.context_tags()
        from mlflow.entities import Metric, Param, RunTag  # noqa: F401
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository  # noqa: F401
        ready.put(worker)
        go.wait()
        t0 = time.perf_counter()
        errors: list[str] = []
        for i in range(runs):
            try:
                _write_run(uri, experiment_id, worker, i, epochs)
            except Exception as exc:  # noqa: BLE001 - counted and reported, never retried
                errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
        out.put({"worker": worker, "start": t0, "end": time.perf_counter(), "errors": errors})
    except BaseException:  # noqa: BLE001 - the parent must hear of it, or it waits forever
        out.put({"worker": worker, "fatal": traceback.format_exc()[-2000:]})
        ready.put(worker)


def time_side(uri: str, experiment: str, *, workers: int, runs: int, epochs: int, artifacts: Path | None = None,
              env: dict[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Spawn ``workers`` writers on ``uri``, release them at once, and time until the last is done.

    ``artifacts``: the experiment's artifact folder (a database store's default is ./mlruns)."""
    from .. import tracking
    from ..errors import LossbenchError

    if artifacts is not None and tracking.client(uri).get_experiment_by_name(experiment) is None:
        tracking.client(uri).create_experiment(experiment, artifact_location=artifacts.resolve().as_uri())
    experiment_id = tracking.ensure_experiment(uri, experiment)  # once, here, before any writer
    ctx = mp.get_context("spawn")  # no forked copy of this process's database connections
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})  # spawned children inherit the environment at start
    try:
        procs = [ctx.Process(target=_worker, args=(uri, experiment_id, w, runs, epochs, ready, go, out), daemon=True)
                 for w in range(workers)]
        for p in procs:
            p.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        for _ in procs:
            ready.get(timeout=timeout)
        t0 = time.perf_counter()
        go.set()
        reports = [out.get(timeout=timeout) for _ in procs]
        t1 = time.perf_counter()
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    fatal = [r["fatal"] for r in reports if "fatal" in r]
    if fatal:
        raise LossbenchError(f"a writer process on {uri} failed before writing:\n{fatal[0]}")
    wall = t1 - t0
    errors = [e for r in reports for e in r["errors"]]
    total = workers * runs
    return {"wall_s": wall, "runs": total, "errors": len(errors), "first_error": errors[0] if errors else None,
            "runs_per_s": (total - len(errors)) / wall if wall > 0 else None}


def check_side(uri: str, experiment: str, expected: int) -> dict[str, Any]:
    """Read the experiment back (not timed): every run exactly once, FINISHED."""
    from collections import Counter

    from .. import tracking

    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=50000) if exp else []
    names = Counter(r.info.run_name for r in runs)
    statuses = Counter(r.info.status for r in runs)
    return {"found": len(runs), "expected": expected, "duplicates": sum(n - 1 for n in names.values() if n > 1),
            "status": dict(statuses),
            "ok": len(runs) == expected and len(names) == expected and statuses.get("FINISHED", 0) == expected}


# ----------------------------------------------------------------------------- the stores
@contextlib.contextmanager
def stores(sides: Sequence[str], root: Path, server_workers: int) -> Iterator[dict[str, tuple[str, dict[str, str]]]]:
    """Each side's tracking URI (and the writers' extra environment), its servers running meanwhile."""
    from .. import servers

    out: dict[str, tuple[str, dict[str, str]]] = {}
    with contextlib.ExitStack() as stack:
        if "sqlite" in sides:
            out["sqlite"] = (f"sqlite:///{root / 'sqlite' / 'mlflow.db'}", {})
            (root / "sqlite").mkdir()
        if "postgres" in sides or "server" in sides:
            pg = stack.enter_context(servers.postgres())
            if "postgres" in sides:
                pg.create_database("direct")
                out["postgres"] = (pg.uri(database="direct"), {})
            if "server" in sides:
                srv = stack.enter_context(servers.mlflow_server(pg.uri(), root / "server-artifacts",
                                                                workers=server_workers))
                out["server"] = (srv.url, {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"})  # "View run ..."
        yield out


# ----------------------------------------------------------------------------- benchmark
def bench_store(*, workers: int = 8, runs_per_worker: int = 40, epochs: int = 5, rounds: int = 1,
                sides: Sequence[str] = SIDES, server_workers: int = 2, progress: bool = True) -> dict[str, Any]:
    """Time every side in alternating rounds, then read each store back; see the module docstring."""
    from ..errors import LossbenchError
    from ..servers import postgres_missing

    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        raise LossbenchError(f"--sides takes a comma-separated subset of {','.join(SIDES)}, got {','.join(sides)!r}.")
    if min(workers, runs_per_worker, rounds, server_workers) < 1 or epochs < 0:
        raise LossbenchError("--workers, --runs-per-worker, --rounds and --server-workers must be >= 1, --epochs >= 0.")
    if any(s in sides for s in ("postgres", "server")):
        missing = postgres_missing()
        if missing:
            raise LossbenchError(f"The postgres and server sides need a local PostgreSQL: {missing}. "
                                 f"Or run only --sides sqlite.")
    sides = [s for s in SIDES if s in sides]
    per_round: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    checks: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory(prefix="lossbench-bench-store-") as tmp:
        if progress:
            print("starting the stores (PostgreSQL, then the MLflow server: up to a minute or more) ...", flush=True)
        t_setup = time.perf_counter()
        with stores(sides, Path(tmp), server_workers) as uris:
            setup_s = time.perf_counter() - t_setup
            for r in range(rounds):
                order = sides if r % 2 == 0 else sides[::-1]
                for side in order:
                    uri, env = uris[side]
                    experiment = f"bench-store-{side}-round{r + 1}"
                    if progress:
                        print(f"round {r + 1}/{rounds}: {side} ({workers} writers x {runs_per_worker} runs) ...",
                              end=" ", flush=True)
                    art = None if side == "server" else Path(tmp) / f"{side}-artifacts" / experiment
                    res = time_side(uri, experiment, workers=workers, runs=runs_per_worker, epochs=epochs,
                                    artifacts=art, env=env)
                    per_round[side].append(res)
                    checks[side].append(check_side(uri, experiment, workers * runs_per_worker))
                    if progress:
                        print(f"{res['wall_s']:.1f} s, {res['runs_per_s']:.1f} runs/s, {res['errors']} errors",
                              flush=True)
            shown = {s: _redact(uris[s][0]) for s in sides}
    rate = {s: median([x["runs_per_s"] for x in per_round[s] if x["runs_per_s"]]) for s in sides}
    ratio = {}
    if "sqlite" in sides:
        for s in sides:
            if s != "sqlite":
                # runs/s of s / runs/s of sqlite = sqlite's wall time / s's, round by round
                ratio[f"{s}/sqlite"] = pairwise_ratio([x["wall_s"] for x in per_round["sqlite"]],
                                                      [x["wall_s"] for x in per_round[s]])
    return {
        "settings": {"workers": workers, "runs_per_worker": runs_per_worker, "epochs": epochs, "rounds": rounds,
                     "sides": sides, "server_workers": server_workers, "stores": shown,
                     "setup_s": round(setup_s, 1)},
        "results": {
            "runs_per_s": rate,
            "ratio_vs_sqlite": ratio,
            "per_round": per_round,
            "errors": {s: sum(x["errors"] for x in per_round[s]) for s in sides},
            "readback": checks,
            "all_landed_once": all(c["ok"] for s in sides for c in checks[s]),
            "hand_check_runs_per_s": {s: HAND_CHECK[s] for s in sides},
        },
    }


def _redact(uri: str) -> str:
    """The URI without its temp folder's name (it is gone by now)."""
    return uri.split("?")[0] if not uri.startswith("sqlite") else "sqlite:///<tmp>/mlflow.db"


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=8, help="writer processes per store, all at once (default 8)")
    p.add_argument("--runs-per-worker", type=int, default=40, help="runs each writer writes (default 40)")
    p.add_argument("--epochs", type=int, default=5, help="per-epoch metric batches of each run (default 5)")
    p.add_argument("--rounds", type=int, default=1,
                   help="alternating rounds of all sides, a fresh experiment each (default 1: ~3 minutes here, "
                        "most of it starting the MLflow server)")
    p.add_argument("--sides", default=None,
                   help=f"comma-separated stores to time, of {','.join(SIDES)} (default: all three; sqlite alone, "
                        f"with a note, where no PostgreSQL can start)")
    p.add_argument("--server-workers", type=int, default=2, help="`mlflow server --workers` (default 2)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.sides is None:
        from ..servers import postgres_missing

        missing = postgres_missing()
        if missing:
            print(f"note: timing SQLite alone: the postgres and server sides need a local PostgreSQL ({missing})",
                  flush=True)
        sides = ["sqlite"] if missing else list(SIDES)
    else:
        sides = [s.strip() for s in str(args.sides).split(",") if s.strip()]
    res = bench_store(workers=args.workers, runs_per_worker=args.runs_per_worker, epochs=args.epochs,
                      rounds=args.rounds, sides=sides, server_workers=args.server_workers)
    return publish("store", res, machine_info("cpu"), print_result, args.json)


def print_result(res: dict[str, Any], machine: dict[str, Any]) -> None:
    from rich.table import Table

    s, r = res["settings"], res["results"]
    out = console()
    table = Table(
        title=f"MLflow stores written by {s['workers']} processes at once, {s['runs_per_worker']} runs each "
              f"({s['epochs']} epochs of metrics, 2 artifacts per run)",
        caption=f"median of {s['rounds']} alternating round(s); ratio = median of per-round sqlite / side wall "
                f"times; hand check on this machine kind: " + ", ".join(f"{k} {v}" for k, v in HAND_CHECK.items())
                + " runs/s",
    )
    table.add_column("store")
    table.add_column("runs/s", justify="right")
    table.add_column("vs sqlite", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("read back")
    labels = {"sqlite": "SQLite file", "postgres": "PostgreSQL 15, direct",
              "server": f"mlflow server on PostgreSQL, HTTP ({s['server_workers']} workers)"}
    for side in s["sides"]:
        ratio = r["ratio_vs_sqlite"].get(f"{side}/sqlite")
        checks = r["readback"][side]
        back = "every run once, FINISHED" if all(c["ok"] for c in checks) else \
            "; ".join(f"{c['found']}/{c['expected']} runs, {c['duplicates']} duplicates, {c['status']}" for c in checks)
        table.add_row(labels[side], f"{r['runs_per_s'][side]:.1f}",
                      "1.00x" if side == "sqlite" else (f"{ratio:.2f}x" if ratio else "-"),
                      str(r["errors"][side]), back)
    out.print(table)
    for side in s["sides"]:
        first = next((x["first_error"] for x in r["per_round"][side] if x["first_error"]), None)
        if first:
            out.print(f"[red]{side}: first error[/]: {first}")
    out.print(f"Stores started in {s['setup_s']:.0f} s (not timed). Machine: {describe_machine(machine)}")


__all__ = ["SIDES", "bench_store", "check_side", "time_side"]

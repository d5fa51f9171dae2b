"""A whole sweep as a user runs it, with the batched engine against the sequential one.

The command timed is the one a user types, run as a subprocess (this interpreter, from
spawn to exit, so start-up, composing the jobs, creating the MLflow store and experiment,
training, testing and logging all count)::

    python -m lossbench -m loss=cross_entropy,focal,logit_adjusted,balanced_softmax seed=range(S) \\
        model=mlp data=imbalanced trainer.max_epochs=10 ...

with S = runs / 4 seeds (``--runs 32``: 8 seeds, the default; ``--runs 256``: 64), once
with ``engine=sequential`` (one Lightning run per job) and once with the default
``engine=auto`` (the sweep's compatible runs train as one stacked model). Each command
runs in its own fresh temporary directory, as its working directory, with a fresh SQLite
store there, so both pay for creating the store. ``MLFLOW_TRACKING_URI`` and
``LOSSBENCH_DEBUG`` are dropped from the environment and ``MPLBACKEND=Agg`` is set;
torch picks its own number of CPU threads, as in a user's run, unless ``--threads N``
sets ``OMP_NUM_THREADS`` (on a machine other work keeps busy, several threads per small
step can cost far more than they save, and more so one run at a time than stacked).

Rounds alternate the order (sequential first in odd rounds, batched first in even ones);
the speed-up is the median of the per-round ratios sequential / batched, printed beside
the median seconds of each command. Goals: 4x at 32 runs and 10x at 256 on the CPU, 30x
at 256 on a GPU.

After the timing (never timed) both stores are read and their runs matched by the
``config_hash`` tag, which is the same for the same config whatever the engine: for each
test metric (``test_*`` and ``best_val_objective``) the largest absolute and relative
difference between the engines, runs found on one side only, statuses (all should be
FINISHED) and the ``engine`` tag each side recorded.

``--launchers joblib,ray`` times instead the same sweep with the default engine under each
``hydra/launcher`` (``--runs 64``: 4 losses x 16 seeds), alternating as above: ``ray`` starts
a local Ray inside the command and stops it at its end, so Ray's start-up counts, as in a
user's sweep. Each side's store is read after: runs found (and distinct), statuses, and the
test metrics matched by ``config_hash`` against the first launcher's.

Over 500 lines on purpose: timing the command and proving the two engines' stores hold the
same runs with the same metrics are one benchmark; a speed-up without that check means nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import console, describe_machine, machine_info, median, pairwise_ratio, publish

LOSSES = ("cross_entropy", "focal", "logit_adjusted", "balanced_softmax")
MODEL = "mlp"
DATA = "imbalanced"
ENGINES = ("sequential", "batched")  # the side's name; "batched" runs with the default engine=auto

# speed-up goals, sequential / batched, by (device kind, runs)
GOALS: dict[tuple[str, int], float] = {("cpu", 32): 4.0, ("cpu", 256): 10.0, ("cuda", 256): 30.0}

TAIL_CHARS = 3000  # of a failed command's stderr


def goal_for(device: str, runs: int) -> float | None:
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return GOALS.get((kind, runs))


def experiment_name(runs: int, epochs: int) -> str:
    return f"lossbench-benchmark-sweep-{runs}r-{epochs}e"


def command(engine: str, *, seeds: int, epochs: int, device: str, workdir: Path, experiment: str,
            launcher: str | None = None) -> list[str]:
    """The command line of one side; ``engine`` is "sequential" or "batched" (the default engine);
    ``launcher``: a ``hydra/launcher`` config (joblib, ray), else Hydra's basic launcher."""
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    argv = [
        sys.executable, "-m", "lossbench", "-m",
        f"loss={','.join(LOSSES)}",
        f"seed=range({seeds})",
        f"model={MODEL}",
        f"data={DATA}",
        f"trainer.max_epochs={epochs}",
        f"tracking.experiment_name={experiment}",
        f"tracking.uri={store_uri(workdir)}",
        f"trainer.accelerator={accelerator}",
        f"hydra.sweep.dir={workdir / 'multirun'}",
    ]
    if device.startswith("cuda:"):
        argv.append(f"trainer.devices=[{int(device.split(':', 1)[1])}]")
    if engine == "sequential":
        argv.append("engine=sequential")
    if launcher:
        argv.append(f"hydra/launcher={launcher}")
    return argv


def store_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def environment(threads: int | None = None) -> dict[str, str]:
    """This process's environment less the store and debug switches; ``threads`` caps torch's CPU threads."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    env["MPLBACKEND"] = "Agg"
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def time_command(argv: list[str], cwd: Path, env: Mapping[str, str]) -> float:
    """Wall seconds from spawn to exit; a non-zero exit is a LossbenchError naming the command."""
    from ..errors import LossbenchError

    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=dict(env), capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = proc.stderr.strip()[-TAIL_CHARS:] or proc.stdout.strip()[-TAIL_CHARS:]
        print(f"--- stderr tail of the failed command ---\n{tail}\n---", file=sys.stderr, flush=True)
        raise LossbenchError(
            f"The sweep command exited with status {proc.returncode} after {elapsed:.1f} s: "
            f"{shlex.join(['python', *argv[1:]])} (in {cwd})"
        )
    return elapsed


@contextlib.contextmanager
def _workdir(keep: str | None, prefix: str) -> Iterator[Path]:
    """A fresh, empty directory: under ``keep`` (left there) or a temporary one (removed)."""
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield Path(tempfile.mkdtemp(prefix=prefix, dir=keep)).resolve()
        return
    with tempfile.TemporaryDirectory(prefix=f"lossbench-bench-{prefix}") as tmp:
        yield Path(tmp).resolve()


# ----------------------------------------------------------------------------- reading the stores
def read_runs(uri: str, experiment: str) -> list[Any]:
    from .. import schema as S
    from .. import tracking

    c = tracking.client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = c.search_runs([exp.experiment_id], max_results=50000)
    return [r for r in runs if S.TAG_KIND not in r.data.tags]  # the runs, not the sweep's parent run


def _metric_keys(metrics: Mapping[str, float]) -> set[str]:
    from .. import schema as S

    return {k for k in metrics if k.startswith("test_") or k == S.METRIC_BEST_VAL}


def _rel(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def compare(sequential: Sequence[Any], batched: Sequence[Any]) -> dict[str, Any]:
    """Match the two sides' runs by config hash and compare their test metrics, statuses and tags."""
    from .. import schema as S

    def by_hash(runs: Sequence[Any]) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        dup = 0
        for r in runs:
            h = r.data.tags.get(S.TAG_CONFIG_HASH)
            if h is None or h in out:
                dup += 1
                continue
            out[h] = r
        return out, dup

    seq, seq_dup = by_hash(sequential)
    bat, bat_dup = by_hash(batched)
    matched = sorted(set(seq) & set(bat))
    metrics: dict[str, dict[str, Any]] = {}
    status_mismatch: list[dict[str, Any]] = []
    for h in matched:
        s, b = seq[h], bat[h]
        if s.info.status != b.info.status:
            status_mismatch.append({"config_hash": h, "run_name": s.info.run_name,
                                    "sequential": s.info.status, "batched": b.info.status})
        sm, bm = s.data.metrics, b.data.metrics
        for key in sorted(_metric_keys(sm) | _metric_keys(bm)):
            m = metrics.setdefault(key, {"n": 0, "max_abs_diff": 0.0, "max_rel_diff": 0.0, "worst_run": None,
                                         "only_sequential": 0, "only_batched": 0})
            if key not in bm:
                m["only_sequential"] += 1
                continue
            if key not in sm:
                m["only_batched"] += 1
                continue
            a, c = float(sm[key]), float(bm[key])
            m["n"] += 1
            if math.isnan(a) and math.isnan(c):
                continue
            abs_d = abs(a - c) if not (math.isnan(a) or math.isnan(c)) else math.inf
            rel_d = _rel(a, c) if math.isfinite(abs_d) else math.inf
            if rel_d > m["max_rel_diff"]:
                m["worst_run"] = s.info.run_name
            m["max_abs_diff"] = max(m["max_abs_diff"], abs_d)
            m["max_rel_diff"] = max(m["max_rel_diff"], rel_d)
    return {
        "runs": {"sequential": len(sequential), "batched": len(batched)},
        "matched": len(matched),
        "only_sequential": sorted(r.info.run_name for h, r in seq.items() if h not in bat),
        "only_batched": sorted(r.info.run_name for h, r in bat.items() if h not in seq),
        "duplicate_or_missing_hash": {"sequential": seq_dup, "batched": bat_dup},
        "status": {"sequential": dict(Counter(r.info.status for r in sequential)),
                   "batched": dict(Counter(r.info.status for r in batched))},
        "status_mismatch": status_mismatch,
        "engine_tag": {"sequential": dict(Counter(r.data.tags.get(S.TAG_ENGINE, "(none)") for r in sequential)),
                       "batched": dict(Counter(r.data.tags.get(S.TAG_ENGINE, "(none)") for r in batched))},
        "metrics": metrics,
        "max_rel_diff": max((m["max_rel_diff"] for m in metrics.values()), default=None),
    }


def merge(comparisons: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The rounds' comparisons as one: counts summed, maxima of the differences."""
    if len(comparisons) == 1:
        return comparisons[0]
    out: dict[str, Any] = {
        "runs": {e: sum(c["runs"][e] for c in comparisons) for e in ENGINES},
        "matched": sum(c["matched"] for c in comparisons),
        "only_sequential": sorted({n for c in comparisons for n in c["only_sequential"]}),
        "only_batched": sorted({n for c in comparisons for n in c["only_batched"]}),
        "duplicate_or_missing_hash": {e: sum(c["duplicate_or_missing_hash"][e] for c in comparisons)
                                      for e in ENGINES},
        "status": {e: dict(sum((Counter(c["status"][e]) for c in comparisons), Counter())) for e in ENGINES},
        "status_mismatch": [m for c in comparisons for m in c["status_mismatch"]],
        "engine_tag": {e: dict(sum((Counter(c["engine_tag"][e]) for c in comparisons), Counter()))
                       for e in ENGINES},
        "metrics": {},
    }
    for c in comparisons:
        for key, m in c["metrics"].items():
            acc = out["metrics"].setdefault(key, {"n": 0, "max_abs_diff": 0.0, "max_rel_diff": 0.0,
                                                  "worst_run": None, "only_sequential": 0, "only_batched": 0})
            for k in ("n", "only_sequential", "only_batched"):
                acc[k] += m[k]
            if m["max_rel_diff"] > acc["max_rel_diff"]:
                acc["worst_run"] = m["worst_run"]
            acc["max_abs_diff"] = max(acc["max_abs_diff"], m["max_abs_diff"])
            acc["max_rel_diff"] = max(acc["max_rel_diff"], m["max_rel_diff"])
    out["max_rel_diff"] = max((m["max_rel_diff"] for m in out["metrics"].values()), default=None)
    return out


# ----------------------------------------------------------------------------- benchmark
def bench_sweep(
    *,
    runs: int = 32,
    rounds: int = 1,
    epochs: int = 10,
    device: str = "cpu",
    seeds_per_loss: int | None = None,
    keep: str | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Time both commands alternately, then compare their stores; see the module docstring."""
    from ..errors import LossbenchError

    if seeds_per_loss is not None:
        if seeds_per_loss < 1:
            raise LossbenchError(f"--seeds-per-loss must be >= 1, got {seeds_per_loss}.")
        runs = len(LOSSES) * seeds_per_loss
    if runs < len(LOSSES) or runs % len(LOSSES):
        raise LossbenchError(f"--runs must be a positive multiple of {len(LOSSES)} (one seed per loss each), "
                             f"got {runs}.")
    if rounds < 1 or epochs < 1:
        raise LossbenchError(f"--rounds and --epochs must be >= 1, got {rounds} and {epochs}.")
    if threads is not None and threads < 1:
        raise LossbenchError(f"--threads must be >= 1, got {threads}.")
    if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        raise LossbenchError(f"--device must be cpu, cuda or cuda:N, got {device!r}.")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise LossbenchError("--device cuda was asked for, but torch sees no CUDA device. Use --device cpu.")
    seeds = runs // len(LOSSES)
    experiment = experiment_name(runs, epochs)
    env = environment(threads)
    times: dict[str, list[float]] = {e: [] for e in ENGINES}
    comparisons: list[dict[str, Any]] = []
    kept: list[dict[str, str]] = []
    shown: dict[str, str] = {}
    for r in range(rounds):
        order = ENGINES if r % 2 == 0 else ENGINES[::-1]  # sequential first in rounds 1, 3, ...
        with contextlib.ExitStack() as stack:
            dirs = {e: stack.enter_context(_workdir(keep, f"round{r + 1}-{e}-")) for e in order}
            for e in order:
                argv = command(e, seeds=seeds, epochs=epochs, device=device, workdir=dirs[e], experiment=experiment)
                shown.setdefault(e, shlex.join(["python", *argv[1:]]))
                if progress:
                    print(f"round {r + 1}/{rounds}: {e} ({runs} runs) ...", end=" ", flush=True)
                seconds = time_command(argv, dirs[e], env)
                times[e].append(seconds)
                if progress:
                    print(f"{seconds:.1f} s", flush=True)
            comparisons.append(compare(read_runs(store_uri(dirs["sequential"]), experiment),
                                       read_runs(store_uri(dirs["batched"]), experiment)))
            if keep:
                kept.append({e: str(d) for e, d in dirs.items()})
    med = {e: median(times[e]) for e in ENGINES}
    speedup = pairwise_ratio(times["sequential"], times["batched"])
    goal = goal_for(device, runs)
    return {
        "settings": {
            "runs": runs, "seeds_per_loss": seeds, "losses": list(LOSSES), "model": MODEL, "data": DATA,
            "epochs": epochs, "rounds": rounds, "device": device, "threads": threads, "experiment": experiment,
            "commands": shown, "kept": kept or None,
        },
        "results": {
            "runs": runs,
            "rounds_s": times,
            "median_s": med,
            "per_run_s": {e: (None if med[e] is None else med[e] / runs) for e in ENGINES},
            "speedup_per_round": [s / b for s, b in zip(times["sequential"], times["batched"], strict=True)],
            "speedup": speedup,
            "goal": goal,
            "goal_met": None if goal is None or speedup is None else speedup >= goal,
            "comparison": merge(comparisons),
            "comparison_per_round": comparisons if rounds > 1 else None,
        },
    }


LAUNCHERS = ("joblib", "ray")  # --launchers: hydra/launcher configs a sweep can be timed with


def bench_launchers(
    *,
    launchers: Sequence[str] = LAUNCHERS,
    runs: int = 64,
    rounds: int = 1,
    epochs: int = 10,
    keep: str | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The same sweep (default engine) under each ``hydra/launcher``, alternating, on the CPU.

    ``ray`` starts a local Ray inside the command (one task per CPU, each task a group of the
    batched engine) and stops it at the command's end, so Ray's start-up is in its time, as in
    a user's sweep; ``joblib`` runs one worker per core. Each side's store is then read:
    every run once and FINISHED, and the two sides' test metrics matched by config_hash.
    """
    from ..errors import LossbenchError

    bad = [name for name in launchers if name not in LAUNCHERS]
    if len(launchers) < 1 or bad:
        raise LossbenchError(f"--launchers takes names among {', '.join(LAUNCHERS)} (comma-separated), got {','.join(launchers)}.")
    if runs < len(LOSSES) or runs % len(LOSSES) or rounds < 1 or epochs < 1:
        raise LossbenchError(f"--runs must be a positive multiple of {len(LOSSES)}, --rounds and --epochs >= 1.")
    seeds = runs // len(LOSSES)
    experiment = experiment_name(runs, epochs)
    env = environment(threads)
    times: dict[str, list[float]] = {name: [] for name in launchers}
    stores: dict[str, list[dict[str, Any]]] = {name: [] for name in launchers}
    shown: dict[str, str] = {}
    for r in range(rounds):
        order = list(launchers) if r % 2 == 0 else list(launchers)[::-1]
        with contextlib.ExitStack() as stack:
            for name in order:
                workdir = stack.enter_context(_workdir(keep, f"round{r + 1}-{name}-"))
                argv = command("batched", seeds=seeds, epochs=epochs, device="cpu", workdir=workdir,
                               experiment=experiment, launcher=name)
                shown.setdefault(name, shlex.join(["python", *argv[1:]]))
                if progress:
                    print(f"round {r + 1}/{rounds}: hydra/launcher={name} ({runs} runs) ...", end=" ", flush=True)
                times[name].append(time_command(argv, workdir, env))
                if progress:
                    print(f"{times[name][-1]:.1f} s", flush=True)
                found = read_runs(store_uri(workdir), experiment)
                names = Counter(x.info.run_name for x in found)
                stores[name].append({"runs": len(found), "distinct": len(names),
                                     "status": dict(Counter(x.info.status for x in found)), "found": found})
    first = launchers[0]
    med = {name: median(times[name]) for name in launchers}
    result: dict[str, Any] = {}
    for name in launchers:
        got = stores[name]
        same = compare(got[-1]["found"], stores[first][-1]["found"])  # the last round's metrics against the first side
        result[name] = {
            "rounds_s": times[name], "median_s": med[name], "per_run_s": med[name] / runs,
            "vs_first": pairwise_ratio(times[name], times[first]),
            "runs_per_round": [g["runs"] for g in got], "distinct_per_round": [g["distinct"] for g in got],
            "status": dict(sum((Counter(g["status"]) for g in got), Counter())),
            "matched_with_first": same["matched"], "max_rel_diff_vs_first": same["max_rel_diff"],
        }
    return {
        "settings": {"runs": runs, "seeds_per_loss": seeds, "losses": list(LOSSES), "model": MODEL, "data": DATA,
                     "epochs": epochs, "rounds": rounds, "device": "cpu", "threads": threads, "launchers": list(launchers),
                     "experiment": experiment, "commands": shown},
        "results": result,
    }


def print_launchers(res: dict[str, Any], machine: dict[str, Any]) -> None:
    from rich.table import Table

    s, r = res["settings"], res["results"]
    first = s["launchers"][0]
    table = Table(
        title=f"Sweep of {s['runs']} runs ({len(s['losses'])} losses x {s['seeds_per_loss']} seeds), model={s['model']} "
        f"data={s['data']}, {s['epochs']} epochs, cpu, default engine: the whole `python -m lossbench -m ...` per launcher",
        caption=f"median of {s['rounds']} alternating round(s); time / {first}'s: median of per-round ratios",
    )
    for col in ("hydra/launcher", "median s per command", "s per run", f"time / {first}'s", "runs in the store",
                "statuses", "max rel diff of test metrics vs " + first):
        table.add_column(col, justify="left" if col in ("hydra/launcher", "statuses") else "right")
    for name, x in r.items():
        table.add_row(name, f"{x['median_s']:.2f}", f"{x['per_run_s']:.3f}", f"{x['vs_first']:.2f}",
                      " / ".join(f"{n} ({d} distinct)" for n, d in zip(x["runs_per_round"], x["distinct_per_round"], strict=True)),
                      _counts(x["status"]), _fmt(x["max_rel_diff_vs_first"] or 0.0) + f" ({x['matched_with_first']} matched)")
    out = console()
    out.print(table)
    out.print(f"Machine: {describe_machine(machine)}")


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=32,
                   help="runs in the sweep, a multiple of 4: 4 losses x runs/4 seeds (default 32; try 256)")
    p.add_argument("--rounds", type=int, default=1,
                   help="alternating rounds of both commands (default 1: a 32-run sequential sweep takes ~40 s)")
    p.add_argument("--epochs", type=int, default=10, help="trainer.max_epochs of every run (default 10)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--threads", type=int, default=None,
        help="OMP_NUM_THREADS / MKL_NUM_THREADS for both commands (default: unset, torch's own choice, as a user's "
        "run gets; 1 steadies the figures on a busy shared machine)",
    )
    p.add_argument("--seeds-per-loss", type=int, default=None, help=argparse.SUPPRESS)  # overrides --runs
    p.add_argument("--keep", metavar="DIR", help="run in fresh directories under DIR and keep them (stores, logs)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument(
        "--launchers", metavar="A,B", default=None,
        help="time the sweep (default engine, CPU) under these hydra/launcher configs instead of comparing "
        "engines: joblib,ray (ray starts a local Ray in the command; needs pip install \"lossbench[cluster]\")",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "launchers", None):
        launchers = [x.strip() for x in args.launchers.split(",") if x.strip()]
        res = bench_launchers(launchers=launchers, runs=args.runs, rounds=args.rounds, epochs=args.epochs,
                              keep=args.keep, threads=args.threads)
        return publish("sweep-launchers", res, machine_info("cpu"), print_launchers, args.json)
    res = bench_sweep(runs=args.runs, rounds=args.rounds, epochs=args.epochs, device=args.device,
                      seeds_per_loss=args.seeds_per_loss, keep=args.keep, threads=args.threads)
    machine = machine_info(args.device)
    if args.threads:
        machine["torch_threads"] = args.threads  # what the commands ran with, not this process
    return publish("sweep", res, machine, print_result, args.json)


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if math.isinf(x):
        return "inf"
    return f"{x:.2e}"


def print_result(res: dict[str, Any], machine: dict[str, Any]) -> None:
    from rich.table import Table

    s, r = res["settings"], res["results"]
    out = console()
    runs, rounds = r["runs"], s["rounds"]
    table = Table(
        title=f"Sweep of {runs} runs ({len(s['losses'])} losses x {s['seeds_per_loss']} seeds), model={s['model']} "
        f"data={s['data']}, {s['epochs']} epochs, {s['device']}"
        + (f", OMP_NUM_THREADS={s['threads']}" if s["threads"] else "") + ": the whole `python -m lossbench -m ...`",
        caption=f"median of {rounds} alternating round(s); speed-up = median of per-round sequential / batched",
    )
    table.add_column("engine")
    table.add_column("median s per command", justify="right")
    table.add_column("s per run", justify="right")
    table.add_column("speed-up", justify="right")
    table.add_row("sequential (engine=sequential)", f"{r['median_s']['sequential']:.2f}",
                  f"{r['per_run_s']['sequential']:.3f}", "1.00x")
    table.add_row("batched (engine=auto, the default)", f"{r['median_s']['batched']:.2f}",
                  f"{r['per_run_s']['batched']:.3f}", f"{r['speedup']:.2f}x")
    out.print(table)
    goal = r["goal"]
    if goal is None:
        out.print(f"speed-up {r['speedup']:.2f}x; no goal set for {runs} runs on {s['device']} "
                  f"(goals: 4x at 32 runs, 10x at 256 on the CPU; 30x at 256 on a GPU)")
    else:
        verdict = "[green]met[/]" if r["goal_met"] else "[red]not met[/]"
        out.print(f"speed-up {r['speedup']:.2f}x; goal >= {goal:g}x at {runs} runs on {s['device']}: {verdict}")

    c = r["comparison"]
    diff = Table(
        title=f"Batched vs sequential, test metrics of the {c['matched']} runs matched by config_hash",
        caption="relative difference = |a - b| / max(|a|, |b|); maxima over the matched runs"
        + (f" of all {rounds} rounds" if rounds > 1 else ""),
    )
    diff.add_column("metric")
    diff.add_column("runs compared", justify="right")
    diff.add_column("max abs diff", justify="right")
    diff.add_column("max rel diff", justify="right")
    diff.add_column("worst run")
    any_missing = any(m["only_sequential"] or m["only_batched"] for m in c["metrics"].values())
    if any_missing:
        diff.add_column("missing")
    for key, m in sorted(c["metrics"].items()):
        row = [key, str(m["n"]), _fmt(m["max_abs_diff"]), _fmt(m["max_rel_diff"]),
               (m["worst_run"] or "") if m["max_rel_diff"] else ""]
        if any_missing:
            missing = []
            if m["only_sequential"]:
                missing.append(f"in {m['only_sequential']} batched run(s)")
            if m["only_batched"]:
                missing.append(f"in {m['only_batched']} sequential run(s)")
            row.append(", ".join(missing))
        diff.add_row(*row)
    out.print(diff)
    lines = [
        f"runs: sequential {c['runs']['sequential']}, batched {c['runs']['batched']}, matched {c['matched']}; "
        f"only sequential: {len(c['only_sequential'])}, only batched: {len(c['only_batched'])}"
        + (f" ({', '.join((c['only_sequential'] + c['only_batched'])[:6])})"
           if c["only_sequential"] or c["only_batched"] else ""),
        f"statuses: sequential {_counts(c['status']['sequential'])}; batched {_counts(c['status']['batched'])}; "
        f"differing on matched runs: {len(c['status_mismatch'])}",
        f"engine tag: sequential side {_counts(c['engine_tag']['sequential'])}; "
        f"batched side {_counts(c['engine_tag']['batched'])}",
    ]
    dup = c["duplicate_or_missing_hash"]
    if dup["sequential"] or dup["batched"]:
        lines.append(f"[red]runs without a config_hash or sharing one[/]: sequential {dup['sequential']}, "
                     f"batched {dup['batched']}")
    for line in lines:
        out.print(line)
    out.print(f"Machine: {describe_machine(machine)}")


def _counts(c: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"


__all__ = ["GOALS", "LAUNCHERS", "LOSSES", "bench_launchers", "bench_sweep", "command", "compare", "goal_for"]

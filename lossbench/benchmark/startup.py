"""Start-up time of the command line, against ``python -c "import torch"`` (the floor).

Each command runs in a fresh subprocess (the same interpreter as this one, in an empty
temporary working directory) and its wall time is measured from spawn to exit. The
commands take turns within a round, in an order rotated every round, so they share the
machine's state alike; a command's ratio is the median over rounds of its time divided by
that round's ``import torch`` time. Nothing is trained: ``--cfg job`` only composes and
prints the config.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from . import console, describe_machine, machine_info, median, pairwise_ratio, write_json

FLOOR = "import torch"


def commands() -> dict[str, list[str]]:
    py = sys.executable
    return {
        FLOOR: [py, "-c", "import torch"],
        "import lossbench": [py, "-c", "import lossbench"],
        "lossbench --help": [py, "-m", "lossbench", "--help"],
        "lossbench --cfg job": [py, "-m", "lossbench", "--cfg", "job"],
    }


def _time_once(argv: list[str], cwd: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(argv[1:])}` exited with status {proc.returncode}:\n{proc.stderr.strip()[-2000:]}"
        )
    return elapsed


def bench_startup(runs: int = 5, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per command: the wall times of every run, their median, and the median ratio to the floor."""
    from ..errors import LossbenchError

    if runs < 1:
        raise LossbenchError(f"--runs must be >= 1, got {runs}.")
    cmds = commands()
    chosen = [FLOOR, *[n for n in (names or cmds) if n != FLOOR]]
    for n in chosen:
        if n not in cmds:
            raise LossbenchError(f"Unknown start-up command {n!r}; choose from {', '.join(cmds)}.")
    times: dict[str, list[float]] = {n: [] for n in chosen}
    env = dict(os.environ)
    env.setdefault("GIT_PYTHON_REFRESH", "quiet")
    with tempfile.TemporaryDirectory(prefix="lossbench-startup-") as cwd:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{os.path.join(cwd, 'mlflow.db')}"  # never the user's store
        _time_once(cmds[FLOOR], cwd, env)  # warm the file cache once
        for r in range(runs):
            shift = r % len(chosen)
            for n in chosen[shift:] + chosen[:shift]:
                times[n].append(_time_once(cmds[n], cwd, env))
    return {
        n: {
            "command": shlex.join(["python", *cmds[n][1:]]),
            "runs_s": ts,
            "median_s": median(ts),
            "ratio_to_import_torch": pairwise_ratio(ts, times[FLOOR]),
        }
        for n, ts in times.items()
    }


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=5, help="runs of each command (default 5)")
    p.add_argument(
        "--command", action="append", dest="names", metavar="NAME",
        help=f"only this command besides the floor (repeatable): {', '.join(commands())}",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def run(args: argparse.Namespace) -> dict[str, Any]:
    results = bench_startup(args.runs, args.names)
    machine = machine_info("cpu")
    payload = {"benchmark": "startup", "machine": machine, "settings": {"runs": args.runs}, "results": results}
    from rich.table import Table

    table = Table(
        title=f"Start-up wall time, median of {args.runs} runs",
        caption="ratio = median over runs of command / `python -c 'import torch'` timed in the same round",
    )
    table.add_column("command")
    table.add_column("median s", justify="right")
    table.add_column("vs import torch", justify="right")
    for r in results.values():
        table.add_row(r["command"], f"{r['median_s']:.2f}", f"{r['ratio_to_import_torch']:.2f}x")
    out = console()
    out.print(table)
    out.print(f"Machine: {describe_machine(machine)}")
    if args.json:
        write_json(args.json, payload)
    return payload

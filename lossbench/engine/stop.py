"""Ctrl-C or SIGTERM to a sweep whose jobs run in worker processes (joblib, Ray).

joblib answers an interrupt by killing its workers outright, so the runs they were
training stayed RUNNING; a SIGTERM to the parent killed only the parent, and the workers
trained on. Here the parent catches both signals first: it sends SIGTERM to every
worker, whose run ends KILLED through the run's own handler, waits until the sweep has
no RUNNING run left (or ``grace`` seconds), kills what is still there, settles any run
whose process is gone, and only then lets the interrupt through. The workers of a Ray
cluster the driver attached to are not its processes: once the interrupt is through, the
driver disconnects, which makes the cluster stop its tasks, and ends KILLED their runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

log = logging.getLogger("lossbench")


def descendants(pid: int) -> list[int]:
    """The processes below ``pid``, children first (``/proc`` where there is one, else ``pgrep``)."""
    children: dict[int, list[int]] = {}
    if os.path.isdir("/proc"):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        if os.path.isdir("/proc"):
            kids = children.get(p, [])
        else:
            found = subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True).stdout.split()
            kids = [int(k) for k in found]
        out.extend(kids)
        todo.extend(kids)
    return out


def _is_tracker(pid: int) -> bool:
    """loky's resource tracker ignores SIGTERM and ends with its parent: leave it be."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"resource_tracker" in f.read()
    except OSError:
        return False


def _signal(pids: list[int], sig: int) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


def stop_workers(uri: str, experiment: str, sweep_id: str, grace: float = 60.0) -> None:
    """SIGTERM every worker, wait for the sweep's runs to end, kill the rest, settle leftovers."""
    from .. import tracking

    workers = [p for p in descendants(os.getpid()) if not _is_tracker(p)]
    _signal(workers, signal.SIGTERM)
    log.info(f"Stopping {len(workers)} worker process(es): their runs end KILLED")
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        running = [r for r in tracking.sweep_runs(uri, experiment, sweep_id) if r.info.status == "RUNNING"]
        alive = [p for p in workers if tracking.pid_alive(p)]
        if not running or not alive:
            break
        time.sleep(0.5)
    _signal([p for p in workers if tracking.pid_alive(p)], signal.SIGKILL)
    for p in workers:  # reap what we can, so that settle_stuck sees them gone
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p, os.WNOHANG)
    time.sleep(0.2)
    tracking.settle_stuck(uri, tracking.sweep_runs(uri, experiment, sweep_id))


def stop_ray_tasks(uri: str, experiment: str, sweep_id: str, since: float) -> None:
    """Disconnect from Ray, which makes the cluster stop this driver's tasks, and end KILLED the runs
    they were training (the sweep's runs started since ``since``, a time): no signal of ours reached
    a cluster's workers. Not from a signal handler: ``ray.shutdown`` there can wait forever on what
    the interrupted Ray call holds. A failure here is logged: the interrupt stays an interrupt."""
    from .. import schema as S
    from .. import tracking

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    try:
        ray.shutdown()
        for r in tracking.sweep_runs(uri, experiment, sweep_id):
            # a run of another sweep that shares this id started before this one (a minute's slack for clocks)
            if r.info.status == "RUNNING" and r.info.start_time >= (since - 60) * 1000:
                tracking.Run(uri, r.info.run_id).end("KILLED", {S.TAG_SETTLED: "its sweep's driver was stopped"})
    except Exception as exc:  # noqa: BLE001 - the store unreachable, say
        log.warning(f"Could not end the Ray tasks' runs: {type(exc).__name__}: {exc}. "
                    f"List them with `python -m lossbench.runs --stuck`.")


@contextlib.contextmanager
def workers_stop_cleanly(uri: str, experiment: str, sweep_id: str) -> Iterator[None]:
    """Around a launcher's launch: Ctrl-C or SIGTERM stop the workers cleanly, then interrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping, since = [], time.time()

    def handler(signum: int, frame: object) -> None:
        if stopping:  # a second Ctrl-C while stopping: stop at once
            raise KeyboardInterrupt
        stopping.append(signum)
        stop_workers(uri, experiment, sweep_id)
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt:
        stop_ray_tasks(uri, experiment, sweep_id, since)
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)


__all__ = ["descendants", "stop_ray_tasks", "stop_workers", "workers_stop_cleanly"]

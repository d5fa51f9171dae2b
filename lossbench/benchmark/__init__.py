"""lossbench's own benchmark: ``python -m lossbench.benchmark {losses,train,startup,report,sweep,choose,store,all}``.

Machines are shared and absolute times drift, so every timing that matters is a *ratio* of
two things timed alternately (A B A B ...) in the same process, reported as the median of
the pairwise ratios, with the absolute medians printed beside it for context.

``losses``   each registered loss's forward + backward next to its torch / torchvision
             counterpart (or, where none exists, a standard loss of the same task)
``train``    one lossbench training run (the real Lightning path) next to a hand-written
             PyTorch loop on the same network, data, batch size, epochs, optimizer and loss
``startup``  start-up time of the command line against ``python -c "import torch"``
``report``   the report on an MLflow store of many runs (default 1000)
``sweep``    a whole 32-run (or 256-run) sweep command, ``engine=sequential`` against the
             default batched engine, each in a fresh store, with the per-run differences
             of their test metrics
``choose``   ``lossbench.choose`` on synthetic tables with known traits (outliers, imbalance,
             label noise): the profile's error on each, and the recommendation and its
             training runs against a full sweep of every loss of the task
``store``    runs per second that 8 writer processes put into SQLite, into PostgreSQL
             directly and into an MLflow server on PostgreSQL (SQLite alone, with a
             note, where no PostgreSQL can start)

This module holds the helpers the subcommands share; it imports neither torch nor mlflow.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["console", "machine_info", "median", "pairwise_ratio", "profile_breakdown", "profile_modules", "publish", "write_json"]


def median(xs: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return float(statistics.median(xs)) if len(xs) else None


def pairwise_ratio(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Median over rounds of ``a[i] / b[i]``: the two were timed back to back in round ``i``."""
    ratios = [x / y for x, y in zip(a, b, strict=True) if y > 0]
    return median(ratios)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """What the figures were measured on (the load average says how shared the machine was)."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    try:
        info["loadavg_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def describe_machine(info: Mapping[str, Any]) -> str:
    gpu = f", {info['gpu']}" if "gpu" in info else ""
    load = f", load avg {info['loadavg_1min']}" if "loadavg_1min" in info else ""
    return (
        f"{info['cpu']} x{info['cpu_count']}{gpu}{load}; torch {info['torch']} "
        f"({info['torch_threads']} threads), Python {info['python']}, device {info['device']}"
    )


def console() -> Any:
    """A rich console; when the output is not a terminal, wide enough that tables keep their names."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return out


def publish(name: str, res: Mapping[str, Any], machine: Mapping[str, Any],
            printer: Callable[[Any, Any], None], json_path: str | None) -> dict[str, Any]:
    """A subcommand's end: print its results, write them (with the machine) to ``json_path`` if given."""
    payload = {"benchmark": name, "machine": dict(machine), **res}
    printer(res, machine)
    if json_path:
        write_json(json_path, payload)
    return payload


def _code_key(fn: Callable[..., Any]) -> tuple[str, int, str]:
    """cProfile's key for a Python function (decorators unwrapped)."""
    import inspect

    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        raise TypeError(f"profile part {fn!r} is not a Python function; name a Python entry point instead.")
    return code.co_filename, code.co_firstlineno, code.co_name


def _posix(path: str) -> str:
    return path.replace(os.sep, "/")


def profile_breakdown(
    fn: Callable[[], Any],
    parts: Mapping[str, Sequence[Callable[..., Any]]],
    libraries: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``fn`` once under cProfile: time in named entry points and in whole libraries.

    ``parts`` maps a label to functions, given as the objects themselves (public, stable
    entry points: a hook Lightning calls by name, ``Trainer.fit``, ``pipeline.prepare``), so
    a renamed or removed one fails when the parts are built instead of reading 0; their
    cumulative times are summed, and ``calls`` says how often each part ran.
    ``libraries`` maps a label to a path fragment of a package (``"mlflow/"``): the time
    spent inside it when entered from outside it, whichever function did so. The profiler
    slows Python-heavy code more than native code, so read the figures as shares of
    ``total_s``, not as absolute times.
    """
    import cProfile
    import pstats

    keys = {label: [_code_key(f) for f in fns] for label, fns in parts.items()}
    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = max((v[3] for v in raw.values()), default=0.0)
    out_parts = {label: sum(raw[k][3] for k in ks if k in raw) for label, ks in keys.items()}
    calls = {label: sum(raw[k][1] for k in ks if k in raw) for label, ks in keys.items()}
    out_libs: dict[str, float] = {}
    for label, fragment in (libraries or {}).items():
        seconds = 0.0
        for (file, _line, _name), v in raw.items():
            if fragment in _posix(file):
                # the edges into the library from outside it: each caller's cumulative time in it
                seconds += sum(c[3] for (cf, _l, _n), c in v[4].items() if fragment not in _posix(cf))
        out_libs[label] = seconds
    top = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:15]  # by own (tottime) time
    return {
        "total_s": total,
        "parts": out_parts,
        "calls": calls,
        "libraries": out_libs,
        "top_own_time": [
            {"function": f"{Path(file).name}:{line}({name})", "own_s": v[2], "calls": v[1]}
            for (file, line, name), v in top
        ],
    }


ELSEWHERE = "elsewhere"


def profile_modules(fn: Callable[[], Any], prefix: str, interval_s: float = 0.001) -> dict[str, Any]:
    """Run ``fn`` once while a thread samples its stack; where its time went, by module.

    Every ``interval_s`` the calling thread's stack is read, and the time since the previous
    reading is charged to the innermost frame whose file lies under ``prefix`` (e.g.
    ``"lossbench/report/"``), keyed by its path below the prefix (``"stats.py"``), or to
    :data:`ELSEWHERE`. Time inside pandas, matplotlib or MLflow thus counts for the module
    that called them, and a callback into the package for the module it is defined in.
    Nothing names a function, so functions and modules can be renamed and added freely;
    the modules found are the rows. Sampling adds little overhead, unlike cProfile, and the
    figures are wall time, shares to within a few samples.
    """
    import sys
    import threading
    import time

    target = threading.get_ident()
    seconds: dict[str, float] = {}
    stop = threading.Event()
    owners: dict[str, str | None] = {}  # file -> module key, memoised

    def owner(frame: Any) -> str:
        while frame is not None:
            file = frame.f_code.co_filename
            if file not in owners:
                path = _posix(file)
                i = path.rfind(prefix)
                owners[file] = path[i + len(prefix):] if i >= 0 else None
            if owners[file] is not None:
                return owners[file]  # type: ignore[return-value]
            frame = frame.f_back
        return ELSEWHERE

    def sample() -> None:
        last = time.perf_counter()
        while not stop.wait(interval_s):
            frame = sys._current_frames().get(target)
            now = time.perf_counter()
            key = owner(frame)
            seconds[key] = seconds.get(key, 0.0) + (now - last)
            last = now
        now = time.perf_counter()
        seconds[ELSEWHERE] = seconds.get(ELSEWHERE, 0.0) + (now - last)  # the tail after fn returned

    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(min(old_switch, interval_s))  # let the sampler in even while fn runs Python
    sampler = threading.Thread(target=sample, name="lossbench-profile-sampler", daemon=True)
    t0 = time.perf_counter()
    sampler.start()
    try:
        fn()
    finally:
        total = time.perf_counter() - t0
        stop.set()
        sampler.join()
        sys.setswitchinterval(old_switch)
    modules = dict(sorted(((k, v) for k, v in seconds.items() if k != ELSEWHERE), key=lambda kv: -kv[1]))
    return {"total_s": total, "prefix": prefix, "modules": modules, ELSEWHERE: seconds.get(ELSEWHERE, 0.0)}

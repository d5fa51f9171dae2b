"""lossbench's own benchmark: ``python -m lossbench.benchmark {losses,train,startup,report,sweep,all}``.

Machines are shared and absolute times drift, so every figure that matters is a *ratio* of
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

__all__ = ["console", "machine_info", "median", "pairwise_ratio", "profile_breakdown", "write_json"]


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


def profile_breakdown(fn: Callable[[], Any], parts: Mapping[str, Sequence[tuple[str, str]]]) -> dict[str, Any]:
    """Run ``fn`` once under cProfile; cumulative seconds of named parts and the top functions.

    ``parts`` maps a label to ``(file suffix, function name)`` pairs whose cumulative times are
    summed (a part that never ran is 0). The profiler slows Python-heavy code more than
    native code, so read the parts as shares of ``total_s``, not as absolute times.
    """
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
    stats = pstats.Stats(prof)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = max((v[3] for v in raw.values()), default=0.0)
    out_parts: dict[str, float] = {}
    for label, keys in parts.items():
        seconds = 0.0
        for suffix, func in keys:
            for (file, _line, name), v in raw.items():
                if name == func and file.replace(os.sep, "/").endswith(suffix):
                    seconds += v[3]  # cumulative time
        out_parts[label] = seconds
    top = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:15]  # by own (tottime) time
    return {
        "total_s": total,
        "parts": out_parts,
        "top_own_time": [
            {"function": f"{Path(file).name}:{line}({name})", "own_s": v[2], "calls": v[1]}
            for (file, line, name), v in top
        ],
    }

"""Forward + backward time of each loss next to its torch / torchvision counterpart.

Each loss is paired with a *reference* timed on the same inputs:

* an **equivalent** where torch or torchvision computes the same value (``F.mse_loss``,
  ``F.cross_entropy`` with class weights or shifted logits, ``sigmoid_focal_loss`` ...).
  The benchmark checks the two values agree before timing them; the goal is a ratio
  ours / theirs within 1.25x.
* otherwise a **baseline**: the standard torch loss of the same task (``F.mse_loss`` for
  regression, ``F.cross_entropy`` for classes and distributions, binary cross-entropy for
  binary / multi-label). That ratio only says how much more a loss costs than the
  cheapest standard loss; there is no goal for it.

Every loss is timed at two sizes: a batch of ``N`` samples (default 4096; ``C`` = 10
classes where there are classes) and about 1M elements (``2**20`` residuals, or
``2**20 / C`` rows of ``C`` logits), where the arithmetic rather than the per-call
overhead decides. The two sides are timed in interleaved blocks in one process (ours,
theirs, then theirs, ours, ...), each block long enough for the clock, with the garbage
collector off and ``torch.set_num_threads(--threads)`` (default 1). With one thread on a
CPU the clock is this thread's CPU time, which other processes on a shared machine do
not inflate by taking the core away (they still slow it through shared caches); with more
threads, or on CUDA, it is wall time. Noise only ever adds time, so the figure judged
against the goal is the ratio of the two *minimum* per-call times; the median of the
per-block ratios is reported beside it.
Losses are timed as training runs them: with the value checks off
(``lossbench.losses.validation(False)``), which would otherwise read tensor values (a
host sync on a GPU); ``--validate`` times them on.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from . import console, describe_machine, machine_info, pairwise_ratio, write_json

GOAL = 1.25  # ours / equivalent reference
LARGE_ELEMENTS = 2**20  # the second size: about a million elements

# the standard loss each task is compared with when no equivalent exists
_BASELINE_OF_TASK = {
    "regression": "F.mse_loss",
    "multiclass": "F.cross_entropy",
    "distribution": "F.cross_entropy (soft targets)",
    "binary": "F.binary_cross_entropy_with_logits",
    "multilabel": "F.binary_cross_entropy_with_logits",
}


@dataclass
class LossTiming:
    name: str
    task: str
    reference: str  # what it is timed against
    equivalent: bool  # True: the reference computes the same value; False: a baseline for context
    n: int  # rows of the batch (samples)
    elements: int  # elements of pred: n, or n * C where there are classes
    ours_us: float  # fastest per-call time over the blocks
    reference_us: float
    ratio: float  # ours_us / reference_us: the figure held against the goal
    ratio_median: float  # median over the interleaved block pairs of ours / reference
    max_rel_diff: float | None  # |ours - reference| / max(|reference|, 1e-12), equivalents only

    @property
    def within_goal(self) -> bool | None:
        return self.ratio <= GOAL if self.equivalent else None


@dataclass
class Reference:
    label: str
    fn: Callable[[Any, Any], Any]
    equivalent: bool


def class_counts(c: int) -> list[int]:
    """A long-tailed count profile for losses that need ``class_counts``."""
    return [max(1, 1000 // (i + 1) ** 2) for i in range(c)]


def make_inputs(task: str, n: int, c: int, device: str, seed: int = 0) -> tuple[Any, Any]:
    """``(pred, target)`` for a task: logits / predictions requiring grad, and targets."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if task == "regression":
        pred = torch.randn(n, generator=g)
        target = torch.randn(n, generator=g)
    elif task == "multiclass":
        pred = torch.randn(n, c, generator=g)
        target = torch.randint(0, c, (n,), generator=g)
    elif task in ("binary", "multilabel"):
        pred = torch.randn(n, c, generator=g)
        target = (torch.rand(n, c, generator=g) > 0.5).float()
    else:  # distribution
        pred = torch.randn(n, c, generator=g)
        target = torch.softmax(torch.randn(n, c, generator=g), dim=1)
    return pred.to(device).requires_grad_(True), target.to(device)


def _equivalents(counts: Sequence[int], device: str) -> dict[str, Reference]:
    """torch / torchvision expressions of the same value, for the losses' default parameters.

    Anything that depends only on the class counts (weights, prior offsets, margins) is
    computed once here, as a user writing the torch version would.
    """
    import logging

    import torch
    import torch.nn.functional as F

    # torchvision's import warns "No CUDA runtime is found" on a CPU-only machine: not our concern here
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import torchvision

    n = torch.tensor(counts, dtype=torch.float64)
    c = n.numel()

    def dev(t: Any) -> Any:
        return t.float().to(device)

    inv = 1.0 / n
    w_inverse = dev(inv * (c / inv.sum()))
    beta = 0.999
    cb = (1.0 - beta) / (1.0 - beta**n)
    w_cb = dev(cb * (c / cb.sum()))
    log_n = dev(n.log())
    log_prior = dev((n / n.sum()).log())
    margins = n.pow(-0.25)
    margins = dev(margins * (0.5 / margins.max()))

    def focal_ce(p: Any, t: Any) -> Any:
        ce = F.cross_entropy(p, t, reduction="none")
        return ((-torch.expm1(-ce)) ** 2 * ce).mean()

    def poly1(p: Any, t: Any) -> Any:
        ce = F.cross_entropy(p, t, reduction="none")
        return (ce - torch.expm1(-ce)).mean()  # epsilon = 1

    def ldam(p: Any, t: Any) -> Any:
        return F.cross_entropy(30.0 * (p - F.one_hot(t, p.shape[1]) * margins), t)

    def balanced_bce(p: Any, t: Any) -> Any:
        return F.binary_cross_entropy_with_logits(p, t, weight=0.25 * t + 0.75 * (1.0 - t))

    return {
        "mse": Reference("F.mse_loss", lambda p, t: F.mse_loss(p, t), True),
        "rmse": Reference("sqrt(F.mse_loss)", lambda p, t: torch.sqrt(F.mse_loss(p, t)), True),
        "l1": Reference("F.l1_loss", lambda p, t: F.l1_loss(p, t), True),
        "smooth_l1": Reference("F.smooth_l1_loss", lambda p, t: F.smooth_l1_loss(p, t), True),
        "huber": Reference("F.huber_loss", lambda p, t: F.huber_loss(p, t), True),
        "kl_div": Reference(
            "F.kl_div(log_softmax, batchmean)",
            lambda p, t: F.kl_div(F.log_softmax(p, 1), t, reduction="batchmean"),
            True,
        ),
        "cross_entropy": Reference("F.cross_entropy", lambda p, t: F.cross_entropy(p, t), True),
        "weighted_ce": Reference(
            "F.cross_entropy(weight=1/n)", lambda p, t: F.cross_entropy(p, t, weight=w_inverse), True
        ),
        "class_balanced": Reference(
            "F.cross_entropy(weight=CB, none).mean",
            lambda p, t: F.cross_entropy(p, t, weight=w_cb, reduction="none").mean(),
            True,
        ),
        "balanced_softmax": Reference("F.cross_entropy(p + log n)", lambda p, t: F.cross_entropy(p + log_n, t), True),
        "logit_adjusted": Reference(
            "F.cross_entropy(p + log prior)", lambda p, t: F.cross_entropy(p + log_prior, t), True
        ),
        "ldam": Reference("F.cross_entropy(s(p - margin))", ldam, True),
        "focal": Reference("F.cross_entropy -> focal", focal_ce, True),
        "poly": Reference("F.cross_entropy -> Poly-1", poly1, True),
        "bce": Reference(
            "F.binary_cross_entropy_with_logits", lambda p, t: F.binary_cross_entropy_with_logits(p, t), True
        ),
        "balanced_bce": Reference("F.bce_with_logits(weight=alpha_t)", balanced_bce, True),
        "binary_focal": Reference(
            "torchvision sigmoid_focal_loss",
            lambda p, t: torchvision.ops.sigmoid_focal_loss(p, t, reduction="mean"),
            True,
        ),
    }


def _baseline(task: str) -> Reference:
    import torch.nn.functional as F

    if task == "regression":
        return Reference(_BASELINE_OF_TASK[task], lambda p, t: F.mse_loss(p, t), False)
    if task in ("multiclass", "distribution"):
        return Reference(_BASELINE_OF_TASK[task], lambda p, t: F.cross_entropy(p, t), False)
    return Reference(_BASELINE_OF_TASK[task], lambda p, t: F.binary_cross_entropy_with_logits(p, t), False)


def _clock(device: str, threads: int) -> tuple[Callable[[], float], Callable[[], None], str]:
    """``(clock, sync, name)``: on a CPU with one torch thread all the work runs on this
    thread, so its CPU time (``time.thread_time``) is the measure, which other processes on
    a shared machine cannot inflate by taking the core away; otherwise wall time, with the
    device synchronised before each reading on CUDA."""
    import time

    import torch

    if device.startswith("cuda"):
        return time.perf_counter, torch.cuda.synchronize, "wall time"
    if threads == 1:
        return time.thread_time, lambda: None, "thread CPU time"
    return time.perf_counter, lambda: None, "wall time"


def _interleaved(
    ours: Callable[[], None],
    theirs: Callable[[], None],
    rounds: int,
    min_block_s: float,
    clock: Callable[[], float],
    sync: Callable[[], None],
) -> tuple[list[float], list[float]]:
    """Per-call seconds of ``ours`` and ``theirs``, one value per block, blocks interleaved.

    Each side runs as many calls per block as make the block last ``min_block_s`` (found
    once, after a warm-up); round ``r`` times ours then theirs, round ``r + 1`` theirs then
    ours, so a drift in the machine's speed hits both sides alike.
    """
    import gc

    def block(fn: Callable[[], None], calls: int) -> float:
        sync()
        t = clock()
        for _ in range(calls):
            fn()
        sync()
        return (clock() - t) / calls

    def calls_for(fn: Callable[[], None]) -> int:
        for _ in range(2):  # warm-up: allocator, lazy kernels
            fn()
        per_call = min(block(fn, 1) for _ in range(3))
        return max(1, math.ceil(min_block_s / max(per_call, 1e-9)))

    sides = (ours, theirs)
    calls = [calls_for(fn) for fn in sides]
    times: tuple[list[float], list[float]] = ([], [])
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                times[i].append(block(sides[i], calls[i]))
    finally:
        if was_enabled:
            gc.enable()
    return times


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def sizes_of(task: str, n: int, elements: int, c: int) -> list[int]:
    """The batch sizes (rows) a loss is timed at: ``n``, and the rows that make ``elements``
    elements (``elements`` itself for regression, ``elements / c`` rows of ``c`` otherwise)."""
    out = [n]
    if elements:
        rows = elements if task == "regression" else max(1, round(elements / c))
        if rows != n:
            out.append(rows)
    return out


def _build(name: str, c: int, device: str) -> Any:
    from ..registry import create_loss, loss_info

    spec = loss_info(name)
    params = dict(spec.example)
    if "class_counts" in {p.name for p in spec.params}:
        params.setdefault("class_counts", class_counts(c))
    return create_loss(name, **params).to(device)


def bench_losses(
    device: str = "cpu",
    n: int = 4096,
    c: int = 10,
    rounds: int = 20,
    min_run_time: float = 0.005,
    names: Sequence[str] | None = None,
    threads: int = 1,
    validate: bool = False,
    elements: int = LARGE_ELEMENTS,
) -> list[LossTiming]:
    """Time every registered loss (or ``names``) forward + backward against its reference,
    at ``n`` rows and at ``elements`` elements (``elements=0``: ``n`` only).

    Raises :class:`~lossbench.errors.LossbenchError` for an unknown loss name or bad sizes
    and ``RuntimeError`` where an "equivalent" reference disagrees with the loss (the
    pairing would be meaningless).
    """
    import torch

    from ..errors import LossbenchError
    from ..losses import validation
    from ..registry import list_losses, loss_info

    for flag, value, low in (("--rounds", rounds, 1), ("--n", n, 1), ("--threads", threads, 1),
                             ("--classes", c, 2), ("--elements", elements, 0)):
        if value < low:
            skip = " (0 skips the large size)" if flag == "--elements" else ""
            raise LossbenchError(f"{flag} must be >= {low}{skip}, got {value}.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LossbenchError("--device cuda was asked for, but torch sees no CUDA device. Use --device cpu.")
    selected = list(names) if names else list_losses()
    for name in selected:
        loss_info(name)  # an unknown name fails here, with a did-you-mean
    equivalents = _equivalents(class_counts(c), device)
    clock, sync, _ = _clock(device, threads)
    out: list[LossTiming] = []
    with validation(validate), _torch_threads(threads):
        for name in selected:
            canonical = loss_info(name).name
            loss = _build(canonical, c, device)
            task = tuple(getattr(loss, "tasks", loss_info(canonical).tasks))[0]
            ref = equivalents.get(canonical) or _baseline(task)
            for rows in sizes_of(task, n, elements, c):
                pred, target = make_inputs(task, rows, c, device)
                rel = None
                if ref.equivalent:
                    with torch.no_grad():
                        a, b = float(loss(pred, target)), float(ref.fn(pred, target))
                    rel = abs(a - b) / max(abs(b), 1e-12)
                    if not (rel < 1e-4) or not math.isfinite(a):
                        raise RuntimeError(
                            f"{canonical}: its reference {ref.label} gives {b!r}, the loss gives {a!r} at N={rows}; "
                            f"the pairing in lossbench/benchmark/losses.py is wrong or the loss changed."
                        )

                def ours(loss: Any = loss, pred: Any = pred, target: Any = target) -> None:
                    pred.grad = None
                    loss(pred, target).backward()

                def theirs(f: Any = ref.fn, pred: Any = pred, target: Any = target) -> None:
                    pred.grad = None
                    f(pred, target).backward()

                ours_t, ref_t = _interleaved(ours, theirs, rounds, min_run_time, clock, sync)
                out.append(
                    LossTiming(
                        name=canonical,
                        task=task,
                        reference=ref.label,
                        equivalent=ref.equivalent,
                        n=rows,
                        elements=pred.numel(),
                        ours_us=min(ours_t) * 1e6,
                        reference_us=min(ref_t) * 1e6,
                        ratio=min(ours_t) / min(ref_t),
                        ratio_median=pairwise_ratio(ours_t, ref_t) or math.nan,
                        max_rel_diff=rel,
                    )
                )
    return out


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--n", type=int, default=4096, help="samples per batch at the small size (default 4096)")
    p.add_argument(
        "--elements", type=int, default=LARGE_ELEMENTS,
        help=f"elements of pred at the large size (default {LARGE_ELEMENTS} = 2**20; 0 skips it)",
    )
    p.add_argument("--classes", type=int, default=10, help="classes / outputs per sample (default 10)")
    p.add_argument("--rounds", type=int, default=20, help="interleaved block pairs per loss and size (default 20)")
    p.add_argument(
        "--min-run-time", type=float, default=0.005,
        help="seconds each timed block runs for, at least one call (default 0.005)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads while timing (default 1)")
    p.add_argument("--validate", action="store_true", help="time with the value checks on (training runs them off)")
    p.add_argument("--loss", action="append", dest="names", metavar="NAME", help="only this loss (repeatable)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def run(args: argparse.Namespace) -> dict[str, Any]:
    results = bench_losses(
        device=args.device,
        n=args.n,
        c=args.classes,
        rounds=args.rounds,
        min_run_time=args.min_run_time,
        names=args.names,
        threads=args.threads,
        validate=args.validate,
        elements=args.elements,
    )
    machine = machine_info(args.device)
    machine["torch_threads"] = args.threads  # what the timing ran with (restored afterwards)
    payload = {
        "benchmark": "losses",
        "machine": machine,
        "settings": {
            "device": args.device,
            "n": args.n,
            "elements": args.elements,
            "classes": args.classes,
            "rounds": args.rounds,
            "min_run_time": args.min_run_time,
            "threads": args.threads,
            "clock": _clock(args.device, args.threads)[2],
            "validate": args.validate,
            "goal": GOAL,
        },
        "results": [{**asdict(r), "within_goal": r.within_goal} for r in results],
    }
    print_table(results, machine, args)
    if args.json:
        write_json(args.json, payload)
    return payload


def _time(us: float) -> str:
    return f"{us:.0f} µs" if us < 10_000 else f"{us / 1000:.1f} ms"


def print_table(results: Sequence[LossTiming], machine: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.table import Table

    by_loss: dict[str, list[LossTiming]] = {}
    for r in results:
        by_loss.setdefault(r.name, []).append(r)
    n_sizes = max((len(v) for v in by_loss.values()), default=1)
    size_names = ["small", "large"][:n_sizes]
    table = Table(
        title=f"Loss forward+backward, N={args.n} and {args.elements:,} elements, C={args.classes}, {args.device}, "
        f"{args.threads} thread(s), {_clock(args.device, args.threads)[2]}, {args.rounds} interleaved block pairs",
        caption=f"ratio = fastest ours / fastest reference (median of the block ratios in brackets); goal <= {GOAL}x "
        f"where the reference computes the same value; 'baseline' rows (a standard loss of the task) are context only.",
    )
    table.add_column("loss")
    table.add_column("reference")
    for size in size_names:
        table.add_column(f"{size}: N", justify="right")
        table.add_column("ours / ref", justify="right")
        table.add_column("ratio", justify="right")
    table.add_column("", justify="left")
    for name, rows in by_loss.items():
        r0 = rows[0]
        cells = [name, r0.reference]
        for i in range(n_sizes):
            if i < len(rows):
                r = rows[i]
                cells += [f"{r.n:,}", f"{_time(r.ours_us)} / {_time(r.reference_us)}",
                          f"{r.ratio:.2f}x ({r.ratio_median:.2f})"]
            else:
                cells += ["", "", ""]
        verdicts = [r.within_goal for r in rows]
        flag = "baseline" if verdicts[0] is None else ("ok" if all(verdicts) else "[red]over goal[/]")
        table.add_row(*cells, flag)
    out = console()
    out.print(table)
    for i, size in enumerate(size_names):
        eq = [rows[i] for rows in by_loss.values() if i < len(rows) and rows[i].equivalent]
        if not eq:
            continue
        worst = max(eq, key=lambda r: r.ratio)
        n_ok = sum(1 for r in eq if r.within_goal)
        out.print(
            f"{size} ({'N=' + str(args.n) if i == 0 else f'{args.elements:,} elements'}): {n_ok}/{len(eq)} losses "
            f"with an equivalent within {GOAL}x; worst {worst.name} {worst.ratio:.2f}x."
        )
    out.print(f"Machine: {describe_machine(machine)}")

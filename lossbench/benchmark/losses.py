"""Forward + backward time of each loss next to its torch / torchvision counterpart.

Each loss is paired with a *reference* timed on the same inputs:

* an **equivalent** where torch or torchvision computes the same value (``F.mse_loss``,
  ``F.cross_entropy`` with class weights or shifted logits, ``sigmoid_focal_loss`` ...).
  The benchmark checks the two values agree before timing them; the goal is a ratio
  ours / theirs within 1.2x.
* otherwise a **baseline**: the standard torch loss of the same task (``F.mse_loss`` for
  regression, ``F.cross_entropy`` for classes and distributions, binary cross-entropy for
  binary / multi-label). That ratio only says how much more a loss costs than the
  cheapest standard loss; there is no goal for it.

Both sides are timed by ``torch.utils.benchmark.Timer`` (warm-up, CUDA synchronisation,
adaptive repeat counts) in the same process, alternating which goes first each round, and
the ratio is the median over rounds of ``ours / reference``. Losses are timed as training
runs them: with the value checks off (``lossbench.losses.validation(False)``), which
would otherwise read tensor values (a host sync on a GPU); ``--validate`` times them on.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from . import console, describe_machine, machine_info, median, pairwise_ratio, write_json

GOAL = 1.2  # ours / equivalent reference

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
    ours_us: float  # median over rounds
    reference_us: float
    ratio: float  # median over rounds of the pairwise ratio ours / reference
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


def _timer(fn: Callable[[], None], min_run_time: float, threads: int) -> float:
    """Median seconds per call, in microseconds (``Timer`` synchronises CUDA itself)."""
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e6


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
    rounds: int = 3,
    min_run_time: float = 0.2,
    names: Sequence[str] | None = None,
    threads: int = 1,
    validate: bool = False,
) -> list[LossTiming]:
    """Time every registered loss (or ``names``) forward + backward against its reference.

    Raises :class:`~lossbench.errors.LossbenchError` for an unknown loss name and
    ``RuntimeError`` where an "equivalent" reference disagrees with the loss (the pairing
    would be meaningless).
    """
    import torch

    from ..errors import LossbenchError
    from ..losses import validation
    from ..registry import list_losses, loss_info

    if rounds < 1 or n < 1 or c < 2:
        raise LossbenchError(f"--rounds and --n must be >= 1 and --classes >= 2, got {rounds}, {n}, {c}.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LossbenchError("--device cuda was asked for, but torch sees no CUDA device. Use --device cpu.")
    selected = list(names) if names else list_losses()
    for name in selected:
        loss_info(name)  # an unknown name fails here, with a did-you-mean
    equivalents = _equivalents(class_counts(c), device)
    out: list[LossTiming] = []
    with validation(validate):
        for name in selected:
            canonical = loss_info(name).name
            loss = _build(canonical, c, device)
            task = tuple(getattr(loss, "tasks", loss_info(canonical).tasks))[0]
            pred, target = make_inputs(task, n, c, device)
            ref = equivalents.get(canonical) or _baseline(task)
            rel = None
            if ref.equivalent:
                with torch.no_grad():
                    a, b = float(loss(pred, target)), float(ref.fn(pred, target))
                rel = abs(a - b) / max(abs(b), 1e-12)
                if not (rel < 1e-4) or not math.isfinite(a):
                    raise RuntimeError(
                        f"{canonical}: its reference {ref.label} gives {b!r}, the loss gives {a!r}; "
                        f"the pairing in lossbench/benchmark/losses.py is wrong or the loss changed."
                    )

            def ours(loss: Any = loss, pred: Any = pred, target: Any = target) -> None:
                pred.grad = None
                loss(pred, target).backward()

            def theirs(f: Any = ref.fn, pred: Any = pred, target: Any = target) -> None:
                pred.grad = None
                f(pred, target).backward()

            ours_t: list[float] = []
            ref_t: list[float] = []
            for r in range(rounds):
                # alternate which side goes first, so a drift in machine speed cancels out
                if r % 2 == 0:
                    ours_t.append(_timer(ours, min_run_time, threads))
                    ref_t.append(_timer(theirs, min_run_time, threads))
                else:
                    ref_t.append(_timer(theirs, min_run_time, threads))
                    ours_t.append(_timer(ours, min_run_time, threads))
            out.append(
                LossTiming(
                    name=canonical,
                    task=task,
                    reference=ref.label,
                    equivalent=ref.equivalent,
                    ours_us=median(ours_t) or 0.0,
                    reference_us=median(ref_t) or 0.0,
                    ratio=pairwise_ratio(ours_t, ref_t) or math.nan,
                    max_rel_diff=rel,
                )
            )
    return out


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--n", type=int, default=4096, help="samples per batch (default 4096)")
    p.add_argument("--classes", type=int, default=10, help="classes / outputs per sample (default 10)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds per loss (default 5)")
    p.add_argument(
        "--min-run-time", type=float, default=0.2, help="seconds each Timer measurement runs for (default 0.2)"
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
    )
    machine = machine_info(args.device)
    payload = {
        "benchmark": "losses",
        "machine": machine,
        "settings": {
            "device": args.device,
            "n": args.n,
            "classes": args.classes,
            "rounds": args.rounds,
            "min_run_time": args.min_run_time,
            "threads": args.threads,
            "validate": args.validate,
            "goal": GOAL,
        },
        "results": [{**asdict(r), "within_goal": r.within_goal} for r in results],
    }
    print_table(results, machine, args)
    if args.json:
        write_json(args.json, payload)
    return payload


def print_table(results: Sequence[LossTiming], machine: dict[str, Any], args: argparse.Namespace) -> None:
    from rich.table import Table

    table = Table(
        title=f"Loss forward+backward, N={args.n}, C={args.classes}, {args.device}, median of {args.rounds} rounds",
        caption=f"ratio = median of pairwise ours/reference; goal <= {GOAL}x where the reference computes the same "
        f"value. 'baseline' rows are context only.",
    )
    for col, just in (("loss", "left"), ("task", "left"), ("reference", "left"), ("kind", "left"),
                      ("ours µs", "right"), ("ref µs", "right"), ("ratio", "right"), ("", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in results:
        kind = "same value" if r.equivalent else "baseline"
        flag = "" if r.within_goal is None else ("ok" if r.within_goal else "[red]over goal[/]")
        table.add_row(r.name, r.task, r.reference, kind, f"{r.ours_us:.1f}", f"{r.reference_us:.1f}",
                      f"{r.ratio:.2f}x", flag)
    out = console()
    out.print(table)
    eq = [r for r in results if r.equivalent]
    if eq:
        worst = max(eq, key=lambda r: r.ratio)
        n_ok = sum(1 for r in eq if r.within_goal)
        out.print(
            f"{n_ok}/{len(eq)} losses with an equivalent are within {GOAL}x; worst {worst.name} {worst.ratio:.2f}x. "
            f"Machine: {describe_machine(machine)}"
        )

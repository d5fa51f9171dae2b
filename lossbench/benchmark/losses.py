"""Forward + backward time of each loss next to its torch / torchvision counterpart.

Both sides are timed by ``torch.utils.benchmark.Timer`` (warm-up, CUDA synchronisation,
adaptive repeat counts) in the same process, alternating A and B, and reported as the
median ratio ours / theirs: machines are shared and absolute times drift, ratios hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..registry import create_loss, list_losses, loss_info


@dataclass
class LossTiming:
    name: str
    counterpart: str
    ours_us: float  # median over rounds
    theirs_us: float | None
    ratio: float | None  # median over rounds of the pairwise ratio ours / theirs


def _inputs(task: str, n: int, c: int, device: str, seed: int = 0):
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


def _counterparts() -> dict[str, tuple[str, Callable[..., torch.Tensor]]]:
    import torchvision

    return {
        "mse": ("F.mse_loss", lambda p, t: F.mse_loss(p, t)),
        "rmse": ("sqrt(F.mse_loss)", lambda p, t: torch.sqrt(F.mse_loss(p, t))),
        "l1": ("F.l1_loss", lambda p, t: F.l1_loss(p, t)),
        "smooth_l1": ("F.smooth_l1_loss", lambda p, t: F.smooth_l1_loss(p, t)),
        "huber": ("F.huber_loss", lambda p, t: F.huber_loss(p, t)),
        "kl_div": ("F.kl_div(log_softmax)", lambda p, t: F.kl_div(F.log_softmax(p, 1), t, reduction="batchmean")),
        "cross_entropy": ("F.cross_entropy", lambda p, t: F.cross_entropy(p, t)),
        "bce": ("F.binary_cross_entropy_with_logits", lambda p, t: F.binary_cross_entropy_with_logits(p, t)),
        "binary_focal": (
            "torchvision.ops.sigmoid_focal_loss",
            lambda p, t: torchvision.ops.sigmoid_focal_loss(p, t, reduction="mean"),
        ),
    }


def _time(fn: Callable[[], None], min_run_time: float) -> float:
    from torch.utils.benchmark import Timer

    return Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median * 1e6


def bench_losses(
    device: str = "cpu", n: int = 4096, c: int = 10, rounds: int = 3, min_run_time: float = 0.2, names: list[str] | None = None
) -> list[LossTiming]:
    """Time every loss (or ``names``); ratios use the median of ``rounds`` alternating pairs."""
    counterparts = _counterparts()
    out = []
    for name in names or list_losses():
        spec = loss_info(name)
        task = spec.tasks[0]
        params = dict(spec.example)
        if "class_counts" in {p.name for p in spec.params}:
            params.setdefault("class_counts", [100 // (i + 1) + 1 for i in range(c)])
        loss = create_loss(name, **params).to(device)
        pred, target = _inputs(task, n, c, device)

        def ours() -> None:
            pred.grad = None
            loss(pred, target).backward()

        ref = counterparts.get(name)
        ours_t, theirs_t = [], []
        for _ in range(rounds):
            ours_t.append(_time(ours, min_run_time))
            if ref is not None:

                def theirs(f=ref[1]) -> None:
                    pred.grad = None
                    f(pred, target).backward()

                theirs_t.append(_time(theirs, min_run_time))
        ratios = [a / b for a, b in zip(ours_t, theirs_t)]
        out.append(
            LossTiming(name, ref[0] if ref else "-", _median(ours_t), _median(theirs_t), _median(ratios))
        )
    return out


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else 0.5 * (xs[m - 1] + xs[m])

"""A fair sweep of a shortlist: the same number of settings and the same seeds for every loss.

Each loss gets ``variants`` settings. The first is the configured one (the loss's defaults and
``optimizer.lr`` as set); the others are quasi-random points of the Halton sequence (Halton,
Numer. Math. 1960), whose first coordinate sets ``optimizer.lr`` (log-uniform in
``lr_range``) and the next ones the loss's own declared search space, in the order of its
parameters. Every loss therefore sees the same learning rates at the same variant index, and
its own hyperparameters spread over their ranges in the same way; the report picks each
loss's setting on the validation split and ranks on the test split.

The budget caps the runs (losses x variants x seeds): when the shortlist needs more, every
loss gets fewer variants, never fewer seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ParameterError
from ..overrides import value_text


def _defaults() -> dict[str, Any]:
    """The ``choose`` node of ``configs/choose.yaml``, the one place its defaults (and their reasons) are written."""
    from omegaconf import OmegaConf

    from ..configs import CONFIG_DIR

    node = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "choose.yaml").choose)
    assert isinstance(node, dict)
    return node


DEFAULTS = _defaults()
MIN_SEEDS = 5
DEFAULT_SEEDS: int = DEFAULTS["seeds"]
PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29)


@dataclass(frozen=True)
class Setting:
    """One setting of one loss: its fixed and tuned parameters and the learning rate."""

    loss: str  # loss config name
    index: int  # variant number, 0 = the configured defaults
    params: Mapping[str, Any] = field(default_factory=dict)  # loss.<key> values to set
    lr: float | None = None  # None: as configured

    def overrides(self) -> list[str]:
        out = [f"loss={self.loss}"]
        out += [f"loss.{k}={value_text(v)}" for k, v in self.params.items()]
        if self.lr is not None:
            out.append(f"optimizer.lr={self.lr:.4g}")
        return out


@dataclass(frozen=True)
class Plan:
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...]
    variants: int  # per loss, after the budget
    requested_variants: int
    budget: int

    @property
    def n_runs(self) -> int:
        return len(self.settings) * len(self.seeds)

    def describe(self) -> str:
        losses = len({s.loss for s in self.settings})
        cut = (f" (choose.variants={self.requested_variants} would need "
               f"{losses * self.requested_variants * len(self.seeds)} runs, over choose.budget={self.budget})"
               if self.variants < self.requested_variants else "")
        return (f"{losses} loss(es) x {self.variants} setting(s) x {len(self.seeds)} seeds = {self.n_runs} runs{cut}")


def radical_inverse(i: int, base: int) -> float:
    """The ``i``-th term of the van der Corput sequence in ``base`` (one Halton coordinate)."""
    out, f = 0.0, 1.0 / base
    while i > 0:
        out += f * (i % base)
        i //= base
        f /= base
    return out


def _point(u: float, space: Mapping[str, Any]) -> Any:
    kind = space["type"]
    if kind == "categorical":
        choices = list(space["choices"])
        return choices[min(int(u * len(choices)), len(choices) - 1)]
    lo, hi = float(space["low"]), float(space["high"])
    if space.get("log"):
        v = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    else:
        v = lo + u * (hi - lo)
    return int(round(v)) if kind == "int" else float(f"{v:.4g}")


def settings_for(loss: str, base_name: str, fixed: Mapping[str, Any], variants: int,
                 lr_range: Sequence[float]) -> list[Setting]:
    """``variants`` settings of one loss (``base_name``: its registered name, for the search space)."""
    from ..registry import loss_info

    space = {k: v for k, v in loss_info(base_name).search_space.items() if k not in fixed}
    lo, hi = float(lr_range[0]), float(lr_range[1])
    out = [Setting(loss, 0, dict(fixed), None)]
    for i in range(1, variants):
        u_lr = radical_inverse(i, PRIMES[0])
        lr = math.exp(math.log(lo) + u_lr * (math.log(hi) - math.log(lo)))
        params = dict(fixed)
        for j, (name, sp) in enumerate(space.items(), start=1):
            params[name] = _point(radical_inverse(i, PRIMES[j % len(PRIMES)]), sp)
        out.append(Setting(loss, i, params, float(f"{lr:.4g}")))
    return out


def check_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The ``choose`` node, checked: one message naming the key and the fix for each mistake."""
    from ..constraints import BOOL, Interval

    out = {**DEFAULTS, **opts}
    seeds = Interval(int, 1).check("choose.seeds", out["seeds"])
    if seeds < MIN_SEEDS:
        raise ParameterError(
            f"choose.seeds must be at least {MIN_SEEDS}: with fewer, the report cannot tell losses apart. Got {seeds}."
        )
    out["seeds"] = seeds
    out["variants"] = Interval(int, 1).check("choose.variants", out["variants"])
    out["budget"] = Interval(int, 1).check("choose.budget", out["budget"])
    out["max_per_trait"] = Interval(int, 1).check("choose.max_per_trait", out["max_per_trait"])
    out["profile_rows"] = Interval(int, 100).check("choose.profile_rows", out["profile_rows"])
    out["profile_only"] = BOOL.check("choose.profile_only", out["profile_only"])
    lr = out["lr_range"]
    if not isinstance(lr, list | tuple) or len(lr) != 2:
        raise ParameterError(f"choose.lr_range must be [low, high], e.g. choose.lr_range=[3e-4,3e-3]. Got {lr!r}.")
    lo = Interval(float, 0, None, "neither").check("choose.lr_range[0]", lr[0])
    hi = Interval(float, 0, None, "neither").check("choose.lr_range[1]", lr[1])
    if lo > hi:
        raise ParameterError(f"choose.lr_range must be [low, high] with low <= high. Got {list(lr)}.")
    out["lr_range"] = [lo, hi]
    extra = out["extra_losses"] or []
    if isinstance(extra, str) or not isinstance(extra, list | tuple):
        raise ParameterError(f"choose.extra_losses must be a list of loss names, e.g. choose.extra_losses=[poly]. Got {extra!r}.")
    out["extra_losses"] = [str(e) for e in extra]
    return out


def make_plan(candidates: Sequence[Any], opts: Mapping[str, Any], first_seed: int) -> Plan:
    """Settings for every candidate (objects with ``loss`` and ``params``) within ``opts['budget']``."""
    from ..registry import loss_info

    n_losses, n_seeds = len(candidates), int(opts["seeds"])
    budget, wanted = int(opts["budget"]), int(opts["variants"])
    if n_losses * n_seeds > budget:
        raise ParameterError(
            f"choose.budget={budget} runs cannot give the {n_losses} shortlisted losses {n_seeds} seeds each "
            f"({n_losses * n_seeds} runs); raise choose.budget to at least {n_losses * n_seeds}, or lower "
            f"choose.max_per_trait to shorten the list."
        )
    variants = min(wanted, budget // (n_losses * n_seeds))
    settings: list[Setting] = []
    for c in candidates:
        base = loss_info(c.loss).name if c.loss != "combo" else "combo"
        settings += settings_for(c.loss, base, c.params, variants, opts["lr_range"])
    seeds = tuple(first_seed + i for i in range(n_seeds))
    return Plan(tuple(settings), seeds, variants, wanted, budget)

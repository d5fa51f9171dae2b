"""Combinations (``loss=combo``) next to their parts: the terms, and how a combination compares.

The terms are read with :func:`lossbench.losses.combo.normalise_terms`, the function the loss
itself uses, so the report names a combination exactly as it was trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..errors import LossbenchError
from .stats import Paired, against

if TYPE_CHECKING:
    from .ranking import LossResult, VariantStats


def combo_terms(params: Mapping[str, Any]) -> list[tuple[str, float, dict[str, Any]]]:
    """``(loss, weight, params)`` per term of a combo's ``loss_params``; ``[]`` if there are none
    or they are not a valid ``terms`` value (combo itself would have refused them)."""
    if not params.get("terms"):
        return []
    from ..losses.combo import normalise_terms  # imports torch: only when there is a combo

    try:
        return [(t["name"], t["weight"], dict(t["params"])) for t in normalise_terms(params["terms"])]
    except LossbenchError:
        return []


class ComboVerdict(str, Enum):
    """How a combination did against the best of its parts that was run alone."""

    NO_PART_RUN = "no_part_run"  # no term was run (and finished) on its own in the scenario
    NO_FINISHED_RUN = "no_finished_run"  # the combination itself never finished
    BETTER = "better"  # better than its best part, significantly
    BETTER_NOT_SIGNIFICANT = "better_not_significant"
    NOT_BETTER = "not_better"


@dataclass(frozen=True)
class Part:
    name: str
    weight: float
    result: LossResult | None  # None: not run alone in this scenario
    test: Paired | None  # the part against the combination (diff = part - combination), Holm-adjusted


@dataclass(frozen=True)
class ComboResult:
    """One combination (one variant of ``combo``) in one scenario, against each of its parts."""

    variant: VariantStats
    parts: tuple[Part, ...]
    best: Part | None  # the best-scoring part that was run alone
    verdict: ComboVerdict

    @property
    def not_run(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts if p.result is None)


def compare_combos(results: Sequence[LossResult], mode: str, alpha: float) -> tuple[ComboResult, ...]:
    """Each variant of ``combo`` against its parts' chosen variants: paired tests, Holm-adjusted per combination."""
    by_loss = {r.loss: r for r in results}
    combo = by_loss.get("combo")
    if combo is None:
        return ()
    sign = -1.0 if mode == "max" else 1.0
    out = []
    for v in combo.variants:
        terms = combo_terms(v.params)
        ran = {i: by_loss[name] for i, (name, _, _) in enumerate(terms) if name in by_loss}
        tests = against(v.values, {i: r.chosen.values for i, r in ran.items()})
        parts = tuple(Part(name, w, ran.get(i), tests.get(i)) for i, (name, w, _) in enumerate(terms))
        finished = [p for p in parts if p.result is not None and not math.isnan(p.result.chosen.mean)]
        best = min(finished, key=lambda p: sign * p.result.chosen.mean, default=None)  # the first of equals
        if best is None:
            verdict = ComboVerdict.NO_PART_RUN
        elif math.isnan(v.mean):
            verdict = ComboVerdict.NO_FINISHED_RUN
        elif sign * v.mean < sign * best.result.chosen.mean:  # NaN p (too few seeds) is not significant
            verdict = ComboVerdict.BETTER if best.test.p_adjusted < alpha else ComboVerdict.BETTER_NOT_SIGNIFICANT
        else:
            verdict = ComboVerdict.NOT_BETTER
        out.append(ComboResult(v, parts, best, verdict))
    return tuple(out)

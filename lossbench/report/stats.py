"""The report's statistics, in one place: mean and confidence interval over seeds, the paired
t-test of two losses over the seeds both finished, and Holm's correction. numpy and scipy only."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t-distribution confidence interval; the interval is NaN for n < 2."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = x.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return (mean, math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * (float(x.std(ddof=1)) / math.sqrt(n))
    return (mean, mean - half, mean + half)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values; NaN entries stay NaN and do not count in m.

    Holm, "A Simple Sequentially Rejective Multiple Test Procedure", Scandinavian Journal of
    Statistics 6(2), 1979. Sorted ascending ``p_(1) <= ... <= p_(m)``:
    ``adj_(i) = max_{j<=i} min(1, (m - j + 1) p_(j))``.
    """
    p = [float(v) for v in pvalues]
    valid = [i for i, v in enumerate(p) if not math.isnan(v)]
    out = [math.nan] * len(p)
    running = 0.0
    for rank, i in enumerate(sorted(valid, key=lambda i: (p[i], i))):
        running = max(running, min(1.0, (len(valid) - rank) * p[i]))
        out[i] = running
    return out


def paired_test(a: pd.Series, b: pd.Series) -> tuple[float, int, float]:
    """Two-sided paired t-test of two seed-indexed series over their common seeds.

    Returns ``(p, n_pairs, mean difference b - a)``; ``p`` is NaN with fewer than two
    pairs. Identical pairs give p = 1; a constant non-zero difference gives p = 0.
    """
    common = a.index.intersection(b.index)
    x, y = a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)
    diff, n = y - x, len(common)
    if n < 2:
        return (math.nan, n, float(diff.mean()) if n else math.nan)
    if np.all(diff == diff[0]):
        return (1.0 if diff[0] == 0 else 0.0, n, float(diff.mean()))
    return (float(stats.ttest_rel(y, x).pvalue), n, float(diff.mean()))


class Paired(NamedTuple):
    """One paired comparison: ``diff`` is the other minus the reference, over ``n`` common seeds."""

    p: float
    n: int
    diff: float
    p_adjusted: float


def against(reference: pd.Series, others: Mapping[Hashable, pd.Series]) -> dict[Hashable, Paired]:
    """Each of ``others`` against ``reference`` by a paired t-test, Holm-adjusted together."""
    raw = {k: paired_test(reference, v) for k, v in others.items()}
    adjusted = holm([t[0] for t in raw.values()])
    return {k: Paired(*t, p_adj) for (k, t), p_adj in zip(raw.items(), adjusted, strict=True)}


# --------------------------------------------------------------------------- ranks
def ranks(values: Sequence[float], mode: str) -> list[float]:
    """Rank 1 = best (``mode`` "max": the highest value); ties share their average rank; NaN ranks last."""
    x = np.asarray(values, dtype=float)
    signed = np.where(np.isnan(x), np.inf, -x if mode == "max" else x)
    return [float(r) for r in stats.rankdata(signed, method="average")]


class Friedman(NamedTuple):
    """Friedman's test of k treatments over n blocks, and Nemenyi's critical difference of mean ranks.

    Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 7, 2006: the
    mean ranks of two treatments differ significantly when they differ by more than ``cd``.
    """

    statistic: float
    p: float
    cd: float  # Nemenyi's critical difference at ``alpha``
    q: float  # the studentized range quantile over sqrt(2)


def friedman(matrix: np.ndarray, mode: str, alpha: float = 0.05) -> Friedman:
    """``matrix``: n blocks (rows) by k treatments (columns), no NaN, n >= 3 and k >= 3.

    The statistic is scipy's ``friedmanchisquare`` (with its tie correction) on the values
    signed so that a smaller one is better; the direction does not change it.
    """
    m = np.asarray(matrix, dtype=float)
    n, k = m.shape
    if n < 3 or k < 3 or np.isnan(m).any():
        raise ValueError(f"Friedman's test needs a complete table of at least 3 x 3, got {n} x {k}")
    signed = -m if mode == "max" else m
    q = float(stats.studentized_range.ppf(1 - alpha, k, math.inf)) / math.sqrt(2)
    if np.all(signed == signed[:, :1]):  # every block ties every treatment: no evidence of a difference
        stat, p = 0.0, 1.0
    else:
        res = stats.friedmanchisquare(*signed.T)
        stat, p = float(res.statistic), float(res.pvalue)
    return Friedman(stat, p, q * math.sqrt(k * (k + 1) / (6 * n)), q)

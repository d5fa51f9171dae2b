"""Long-tailed class profiles and per-class subsampling, shared by the imbalanced datasets.

Two profiles from the class-imbalance literature, with class 0 the head:

``exp`` (exponential)
    ``n_c = floor(n_max * ratio ** (-c / (C - 1)))`` for ``c = 0..C-1``, so the largest class
    has ``n_max`` samples and the smallest ``floor(n_max / ratio)``. This is the profile of the
    long-tailed CIFAR benchmarks: Cui, Jia, Lin, Song & Belongie, "Class-Balanced Loss Based on
    Effective Number of Samples", CVPR 2019; Cao, Wei, Gaidon, Arechiga & Ma, "Learning
    Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019.
``step``
    the first ``C - C // 2`` classes have ``n_max`` samples, the last ``C // 2`` have
    ``floor(n_max / ratio)``: Buda, Maki & Mazurowski, "A systematic study of the class
    imbalance problem in convolutional neural networks", Neural Networks 2018 (step imbalance
    with a minority fraction of one half).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..constraints import Interval, Options
from ..errors import DataError

PROFILES = ("exp", "step")
PROFILE = Options(*PROFILES)
IMBALANCE_RATIO = Interval(float, 1)  # largest / smallest class; 1 is balanced


def long_tail_counts(n_max: int, n_classes: int, imbalance_ratio: float, profile: str = "exp") -> list[int]:
    """Training samples per class (class 0 the head) for a long-tailed profile.

    ``imbalance_ratio`` is largest / smallest class size (1 gives a balanced set). The counts
    are floored, so the realised ratio ``n_max / n_min`` can be slightly above the one asked for.
    """
    PROFILE.check("profile", profile, error=DataError)
    n_classes = Interval(int, 2).check("n_classes", n_classes, error=DataError)
    ratio = IMBALANCE_RATIO.check("imbalance_ratio", imbalance_ratio, error=DataError)
    n_max = Interval(int, 1).check("n_max", n_max, error=DataError)
    if n_max / ratio < 1.0 - 1e-9:
        raise DataError(
            f"n_max={n_max} with imbalance_ratio={ratio:g} leaves the smallest class with no sample; "
            f"raise n_max to at least {math.ceil(ratio)} or lower imbalance_ratio."
        )
    # the small epsilon keeps exact products (e.g. 5000 / 100 = 50) from flooring to one less
    if profile == "exp":
        return [int(math.floor(n_max * ratio ** (-c / (n_classes - 1)) + 1e-9)) for c in range(n_classes)]
    n_minor = n_classes // 2
    tail = int(math.floor(n_max / ratio + 1e-9))
    return [n_max] * (n_classes - n_minor) + [tail] * n_minor


def per_class_indices(labels: np.ndarray, n_classes: int) -> list[np.ndarray]:
    """Indices of each class 0..n_classes-1 in ``labels`` (ascending)."""
    labels = np.asarray(labels)
    return [np.flatnonzero(labels == c) for c in range(n_classes)]


def sample_per_class(
    labels: np.ndarray,
    counts: Sequence[int],
    rng: np.random.Generator,
    exclude: np.ndarray | None = None,
    what: str = "split",
) -> np.ndarray:
    """A seeded random subset of indices with exactly ``counts[c]`` samples of class ``c``.

    Indices in ``exclude`` are never chosen. Raises :class:`DataError` when a class has too
    few samples. The result is sorted by class, then randomly within each class.
    """
    labels = np.asarray(labels)
    available = np.ones(labels.shape[0], dtype=bool)
    if exclude is not None and len(exclude):
        available[np.asarray(exclude)] = False
    chosen = []
    for c, k in enumerate(counts):
        pool = np.flatnonzero((labels == c) & available)
        if int(k) > pool.size:
            raise DataError(
                f"the {what} needs {int(k)} samples of class {c}, but only {pool.size} are available; "
                f"lower n_max, the per-class val/test sizes, or imbalance_ratio."
            )
        chosen.append(rng.choice(pool, size=int(k), replace=False))
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def scaled_counts(profile_counts: Sequence[int], n_head: int) -> list[int]:
    """``profile_counts`` rescaled so that the largest class has ``n_head`` samples (each >= 1).

    Used for a "natural" (long-tailed) val or test split that follows the training profile.
    """
    top = max(profile_counts)
    return [max(1, int(round(n_head * c / top))) for c in profile_counts]

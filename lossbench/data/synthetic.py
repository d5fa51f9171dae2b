"""Synthetic datasets with a known trait: regression with outliers, imbalanced classification.

Both generators are fully determined by ``seed``; the trait (outliers, imbalance, label
noise) is injected into the training split only, so validation and test measure how well
a loss recovers the clean problem.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..constraints import Interval, Options
from ..errors import DataError
from .base import Splits, TensorDataModule, check_param, check_split_fractions, flip_labels, split_indices
from .longtail import IMBALANCE_RATIO, PROFILE, long_tail_counts, sample_per_class, scaled_counts

OUTLIER_TYPES = ("y_gross", "y_one_sided", "heavy_tail", "x_leverage")
OUTLIER_FRACTION = Interval(float, 0, 0.5, "left")  # outliers are a minority
TEST_DISTRIBUTIONS = ("balanced", "natural")
OUTLIER_THRESHOLD = 3.5  # robust standard deviations beyond which a residual counts as an outlier
MAD_TO_SD = 1.4826  # 1 / Phi^-1(3/4): MAD of a Gaussian times this is its standard deviation


def robust_outlier_fraction(residuals: np.ndarray | torch.Tensor, threshold: float = OUTLIER_THRESHOLD) -> float:
    """Fraction of ``residuals`` farther than ``threshold`` robust standard deviations from their median.

    The robust standard deviation is ``1.4826 * MAD`` (median absolute deviation), which
    equals the standard deviation for Gaussian residuals and is barely moved by a minority of
    gross errors (Rousseeuw & Croux, "Alternatives to the Median Absolute Deviation", JASA
    1993). The threshold 3.5 follows Iglewicz & Hoaglin, "How to Detect and Handle Outliers",
    ASQC 1993. For clean Gaussian residuals the fraction is about 0.0005.
    """
    r = np.asarray(residuals.detach().cpu() if isinstance(residuals, torch.Tensor) else residuals, dtype=np.float64)
    if r.size == 0:
        return 0.0
    dev = np.abs(r - np.median(r))
    sd = MAD_TO_SD * float(np.median(dev))
    cut = threshold * sd if sd > 0 else 1e-12 * max(1.0, float(dev.max()))
    return float(np.mean(dev > cut))


def huber_outlier_fraction(x: np.ndarray, y: np.ndarray, threshold: float = OUTLIER_THRESHOLD) -> float:
    """:func:`robust_outlier_fraction` of the residuals of a robust linear fit of ``y`` on ``x``.

    For data whose clean function is unknown (real tables). The fit is scikit-learn's
    :class:`~sklearn.linear_model.HuberRegressor` (Huber loss with a jointly estimated scale,
    Owen, "A robust hybrid of lasso and ridge regression", 2007) on standardised inputs and
    targets, so gross target errors barely move it. A poor linear fit of a nonlinear function
    inflates the robust scale too, which makes the measure conservative (fewer outliers).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import HuberRegressor

    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64)
    xs = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    y_sd = float(y.std()) or 1.0
    ys = (y - y.mean()) / y_sd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = HuberRegressor(max_iter=500).fit(xs, ys)
    return robust_outlier_fraction(ys - model.predict(xs), threshold)


def inject_target_errors(
    y: np.ndarray, idx: np.ndarray, kind: str, size: float, rng: np.random.Generator
) -> np.ndarray:
    """Return a copy of ``y`` with gross errors added at ``idx``.

    Each error has magnitude ``size * U(0.5, 1.5)``; its sign is random (``y_gross``) or
    always positive (``y_one_sided``).
    """
    if kind not in ("y_gross", "y_one_sided"):
        raise DataError(f"target errors must be 'y_gross' or 'y_one_sided', got {kind!r}.")
    out = np.array(y, dtype=np.float64, copy=True)
    mag = size * rng.uniform(0.5, 1.5, size=len(idx))
    sign = rng.choice(np.array([-1.0, 1.0]), size=len(idx)) if kind == "y_gross" else np.ones(len(idx))
    out[idx] += sign * mag
    return out


class RegressionOutliers(TensorDataModule):
    """Regression with outliers injected into the training split only.

    Inputs ``x ~ N(0, I)`` with ``n_features`` columns. The clean function ``f`` is
    linear (``f(x) = w·x + b`` with ``|w| = 1``) or, with ``nonlinear=True``, a random sum of
    sines and quadratic terms ``sum_j a_j sin(k_j x_j) + c_j x_j^2 / 2`` rescaled to unit
    standard deviation; either way the clean signal has standard deviation about 1, and every
    target gets Gaussian noise of standard deviation ``noise``. Of the training targets, a
    fraction ``outlier_fraction`` is then corrupted by ``outlier_type``:

    ``y_gross``
        a symmetric gross error ``± outlier_scale * U(0.5, 1.5)`` is added to the target.
    ``y_one_sided``
        the same, always positive (biases a least-squares fit).
    ``heavy_tail``
        every training target's Gaussian noise is replaced by ``noise * t(df)`` Student-t
        noise (``outlier_fraction`` is not used: the tail, set by ``df``, decides how many
        residuals are extreme).
    ``x_leverage``
        the inputs are moved ``outlier_scale`` standard deviations along one random direction
        (a cluster of high-leverage points) and their targets are ``f(x)`` plus a gross error
        of one shared sign, so they pull a fit away from ``f``.

    Validation and test are clean. ``DataInfo.outlier_fraction`` is *measured*: the fraction of
    training targets whose residual from the known clean function, ``y - f(x)``, lies more
    than 3.5 robust standard deviations (1.4826 * MAD) from the residuals' median (see
    :func:`robust_outlier_fraction`). For ``y_gross`` it is close to the injected fraction;
    for ``heavy_tail`` it measures how heavy the tail is. The injected fraction and type are
    in ``DataInfo.extra``.

    Targets are scaled with ``normalize_target="robust"`` (median / IQR) by default, so the
    outliers do not set the scale in which a loss's hyperparameters (e.g. Huber's delta) live.
    """

    cacheable = True  # seeded generators of its own only

    name = "regression_outliers"
    task = "regression"
    objective = ("rmse", "min")

    def __init__(
        self,
        n_samples: int = 2000,
        n_features: int = 10,
        noise: float = 0.3,
        nonlinear: bool = False,
        outlier_fraction: float = 0.1,
        outlier_type: str = "y_gross",
        outlier_scale: float = 10.0,
        df: float = 2.0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        batch_size: int = 128,
        seed: int = 0,
        normalize: str = "standard",
        normalize_target: str = "robust",
        eval_batch_size: int = 4096,
    ):
        super().__init__(batch_size, seed, normalize, normalize_target, eval_batch_size)
        self.outlier_type = check_param("outlier_type", outlier_type, Options(*OUTLIER_TYPES))
        self.outlier_fraction = check_param("outlier_fraction", outlier_fraction, OUTLIER_FRACTION)
        self.n_samples = check_param("n_samples", n_samples, Interval(int, 10))
        self.n_features = check_param("n_features", n_features, Interval(int, 1))
        self.noise = check_param("noise", noise, Interval(float, 0))
        self.nonlinear = bool(nonlinear)
        self.outlier_scale = check_param("outlier_scale", outlier_scale, Interval(float, 0))
        self.df = check_param("df", df, Interval(float, 0, None, "neither"))
        self.val_fraction, self.test_fraction = check_split_fractions(val_fraction, test_fraction)
        self._coef: dict[str, np.ndarray | float] | None = None

    # ------------------------------------------------------------------ the clean function
    def _draw_function(self, rng: np.random.Generator, x_all: np.ndarray) -> None:
        d = self.n_features
        if not self.nonlinear:
            w = rng.standard_normal(d)
            self._coef = {"w": w / np.linalg.norm(w), "b": float(rng.uniform(-1.0, 1.0))}
            return
        self._coef = {
            "a": rng.standard_normal(d),
            "k": rng.uniform(0.5, 2.0, d),
            "c": rng.standard_normal(d) / math.sqrt(d),
            "shift": 0.0,
            "scale": 1.0,
        }
        raw = self._f(x_all)
        self._coef["shift"], self._coef["scale"] = float(raw.mean()), float(raw.std()) or 1.0

    def _f(self, x: np.ndarray) -> np.ndarray:
        c = self._coef
        assert c is not None
        if not self.nonlinear:
            return x @ c["w"] + c["b"]
        raw = np.sin(x * c["k"]) @ c["a"] + 0.5 * (x**2) @ c["c"]
        return (raw - c["shift"]) / c["scale"]

    def clean_target(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The clean function ``f`` at raw (unnormalised) inputs; available after :meth:`load`."""
        if self._coef is None:
            self.load()
        xs = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
        return torch.from_numpy(self._f(xs)).float()

    # ------------------------------------------------------------------ data
    def load(self) -> Splits:
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal((self.n_samples, self.n_features))
        self._draw_function(rng, x)
        y = self._f(x) + self.noise * rng.standard_normal(self.n_samples)
        tr, va, te = split_indices(self.n_samples, self.val_fraction, self.test_fraction, self.seed)
        x_tr, y_tr = x[tr].copy(), y[tr].copy()
        n_tr = tr.size

        kind = self.outlier_type
        injected: float | None
        if kind == "heavy_tail":
            y_tr = self._f(x_tr) + self.noise * rng.standard_t(self.df, n_tr)
            n_out, injected = 0, None
        else:
            n_out = int(round(self.outlier_fraction * n_tr))
            idx = np.sort(rng.choice(n_tr, size=n_out, replace=False))
            if kind in ("y_gross", "y_one_sided"):
                y_tr = inject_target_errors(y_tr, idx, kind, self.outlier_scale, rng)
            else:  # x_leverage
                v = rng.standard_normal(self.n_features)
                x_tr[idx] += self.outlier_scale * v / np.linalg.norm(v)
                sign = rng.choice(np.array([-1.0, 1.0]))
                err = sign * self.outlier_scale * rng.uniform(0.5, 1.5, n_out)
                y_tr[idx] = self._f(x_tr[idx]) + self.noise * rng.standard_normal(n_out) + err
            injected = n_out / n_tr

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).float()

        extra = {
            "outlier_type": kind,
            "injected_outlier_fraction": injected,
            "n_injected_outliers": n_out,
            "outlier_scale": self.outlier_scale,
            "noise": self.noise,
            "nonlinear": self.nonlinear,
            "outlier_measure": "share of training residuals y - f(x) beyond 3.5 * 1.4826 * MAD from their median",
        }
        if kind == "heavy_tail":
            extra["df"] = self.df
        return Splits(t(x_tr), t(y_tr), t(x[va]), t(y[va]), t(x[te]), t(y[te]), extra=extra)

    def traits(self, splits: Splits) -> dict[str, Any]:
        residuals = splits.y_train - self.clean_target(splits.x_train)
        return {"outlier_fraction": robust_outlier_fraction(residuals)}


class ImbalancedClassification(TensorDataModule):
    """Long-tailed multiclass classification from :func:`sklearn.datasets.make_classification`.

    A balanced pool (Gaussian clusters on the vertices of a hypercube in ``n_informative``
    dimensions; Guyon, "Design of experiments for the NIPS 2003 variable selection
    benchmark", 2003) is subsampled so that the training class sizes follow the profile
    *exactly* (see :mod:`lossbench.data.longtail`): ``exp`` gives
    ``n_c = floor(n_max * (1/imbalance_ratio) ** (c / (C-1)))`` (Cui et al., CVPR 2019),
    ``step`` gives half the classes ``n_max`` and half ``n_max / imbalance_ratio`` (Buda et al.,
    Neural Networks 2018). Class 0 is the head.

    Test (``test_distribution``) and validation (``val_distribution``) are ``balanced``
    (``n_test_per_class`` / ``n_val_per_class`` samples of every class, the protocol of the
    long-tail literature) or ``natural`` (the training profile rescaled so that the head class
    has that many samples, every class at least one).

    ``label_noise`` flips that fraction of the *training* labels (rounded to a whole number
    of samples, chosen at random) by :func:`~lossbench.data.base.flip_labels`: each to a
    different class drawn uniformly (``noise_type=symmetric``) or from class ``k`` to
    ``k + 1 mod C`` (``pairflip``); the reported
    ``DataInfo.label_noise`` is the fraction actually flipped, and ``DataInfo.class_counts``
    counts the observed (noisy) labels, while ``extra["clean_class_counts"]`` keeps the profile.
    With ``n_classes=2`` the task is ``binary``.
    """

    cacheable = True  # seeded generators of its own only
    # flips its training labels inside load(), from the split's random stream, as it always
    # has: the numbers of earlier runs stay the same (the flips use base.flip_labels)
    flips_own_labels = True

    name = "imbalanced"
    task = "multiclass"
    objective = ("balanced_accuracy", "max")

    def __init__(
        self,
        n_classes: int = 10,
        imbalance_ratio: float = 100.0,
        profile: str = "exp",
        n_max: int = 500,
        n_features: int = 20,
        n_informative: int = 10,
        n_redundant: int = 2,
        n_clusters_per_class: int = 1,
        class_sep: float = 1.0,
        label_noise: float = 0.0,
        noise_type: str = "symmetric",
        test_distribution: str = "balanced",
        val_distribution: str = "balanced",
        n_test_per_class: int = 100,
        n_val_per_class: int = 50,
        batch_size: int = 128,
        seed: int = 0,
        normalize: str = "standard",
        normalize_target: str = "none",
        eval_batch_size: int = 4096,
    ):
        super().__init__(
            batch_size, seed, normalize, normalize_target, eval_batch_size, label_noise=label_noise, noise_type=noise_type
        )
        self.n_classes = check_param("n_classes", n_classes, Interval(int, 2))
        self.profile = check_param("profile", profile, PROFILE)
        self.test_distribution = check_param("test_distribution", test_distribution, Options(*TEST_DISTRIBUTIONS))
        self.val_distribution = check_param("val_distribution", val_distribution, Options(*TEST_DISTRIBUTIONS))
        self.imbalance_ratio = check_param("imbalance_ratio", imbalance_ratio, IMBALANCE_RATIO)
        self.n_max = check_param("n_max", n_max, Interval(int, 1))
        self.n_features = check_param("n_features", n_features, Interval(int, 1))
        self.n_informative = check_param("n_informative", n_informative, Interval(int, 1))
        self.n_redundant = check_param("n_redundant", n_redundant, Interval(int, 0))
        self.n_clusters_per_class = check_param("n_clusters_per_class", n_clusters_per_class, Interval(int, 1))
        self.class_sep = check_param("class_sep", class_sep, Interval(float, 0))
        self.n_test_per_class = check_param("n_test_per_class", n_test_per_class, Interval(int, 1))
        self.n_val_per_class = check_param("n_val_per_class", n_val_per_class, Interval(int, 1))
        if self.n_informative + self.n_redundant > self.n_features:
            raise DataError(
                f"data.n_informative + data.n_redundant ({self.n_informative} + {self.n_redundant}) must not "
                f"exceed data.n_features ({self.n_features})."
            )
        if self.n_classes * self.n_clusters_per_class > 2**self.n_informative:
            need = math.ceil(math.log2(self.n_classes * self.n_clusters_per_class))
            raise DataError(
                f"data.n_classes * data.n_clusters_per_class ({self.n_classes * self.n_clusters_per_class}) must be "
                f"<= 2 ** data.n_informative; raise n_informative to at least {need}."
            )
        # fail at construction, not at setup, when the profile is impossible
        self.class_profile = long_tail_counts(self.n_max, self.n_classes, self.imbalance_ratio, self.profile)
        self._flipped = 0.0  # fraction of training labels flipped, set by load()
        if self.n_classes == 2:
            self.task = "binary"

    def num_classes(self, s: Splits) -> int:
        return self.n_classes

    def load(self) -> Splits:
        from sklearn.datasets import make_classification

        counts = self.class_profile
        head = max(counts)
        n_val = self._split_counts(self.val_distribution, self.n_val_per_class)
        n_test = self._split_counts(self.test_distribution, self.n_test_per_class)
        per_class = head + max(n_val) + max(n_test)  # pool size of every class
        x, y = make_classification(
            n_samples=self.n_classes * self.n_clusters_per_class * math.ceil(per_class / self.n_clusters_per_class),
            n_features=self.n_features,
            n_informative=self.n_informative,
            n_redundant=self.n_redundant,
            n_classes=self.n_classes,
            n_clusters_per_class=self.n_clusters_per_class,
            class_sep=self.class_sep,
            flip_y=0.0,
            random_state=self.seed,
        )
        rng = np.random.default_rng(self.seed)
        te = sample_per_class(y, n_test, rng, what="test split")
        va = sample_per_class(y, n_val, rng, exclude=te, what="validation split")
        tr = rng.permutation(sample_per_class(y, counts, rng, exclude=np.concatenate([te, va]), what="training split"))
        te, va = rng.permutation(te), rng.permutation(va)

        y_tr, n_flip = flip_labels(y[tr], self.label_noise, self.noise_type, self.n_classes, rng)
        self._flipped = n_flip / tr.size

        def fx(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).float()

        def fy(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).long()

        extra = {
            "profile": self.profile,
            "requested_imbalance_ratio": self.imbalance_ratio,
            "clean_class_counts": list(counts),
            "test_distribution": self.test_distribution,
            "val_distribution": self.val_distribution,
            "n_flipped_labels": n_flip,
        }
        return Splits(fx(x[tr]), fy(y_tr), fx(x[va]), fy(y[va]), fx(x[te]), fy(y[te]), extra=extra)

    def _split_counts(self, distribution: str, n_head: int) -> list[int]:
        if distribution == "balanced":
            return [n_head] * self.n_classes
        return scaled_counts(self.class_profile, n_head)

    def traits(self, splits: Splits) -> dict[str, Any]:
        return {"label_noise": self._flipped}

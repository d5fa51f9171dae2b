"""Small real datasets bundled with scikit-learn (no download): digits, breast cancer, diabetes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..constraints import Interval, Options
from .base import Splits, TensorDataModule, check_param, check_split_fractions, stratified_split_indices
from .longtail import IMBALANCE_RATIO, PROFILE, long_tail_counts, per_class_indices, sample_per_class
from .synthetic import OUTLIER_FRACTION, huber_outlier_fraction, inject_target_errors

TARGET_OUTLIER_TYPES = ("y_gross", "y_one_sided")


def _fx(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _fy(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


class DigitsLT(TensorDataModule):
    """scikit-learn's handwritten digits (1797 images of 8x8, 10 classes) with a long-tailed training split.

    Balanced test (``n_test_per_class``) and validation (``n_val_per_class``) samples are drawn
    at random from every class first; the training split then takes, from the rest,
    ``n_c = floor(n_max * (1/imbalance_ratio) ** (c/9))`` samples of digit ``c`` (exp profile,
    Cui et al., CVPR 2019) or a step profile. ``n_max=None`` uses the largest count every
    class can supply (104 with the defaults). Pixel values are 0..16; inputs are the 64
    pixels, or ``(1, 8, 8)`` images with ``as_image=True``. Data: Alpaydin & Kaynak, "Optical
    Recognition of Handwritten Digits", UCI Machine Learning Repository, 1998.
    """

    cacheable = True  # seeded generators of its own only

    name = "digits_lt"
    task = "multiclass"
    objective = ("balanced_accuracy", "max")
    n_classes = 10

    def __init__(
        self,
        imbalance_ratio: float = 10.0,
        profile: str = "exp",
        n_max: int | None = None,
        n_val_per_class: int = 20,
        n_test_per_class: int = 50,
        as_image: bool = False,
        batch_size: int = 128,
        seed: int = 0,
        normalize: str = "standard",
        normalize_target: str = "none",
        eval_batch_size: int = 4096,
        label_noise: float = 0.0,
        noise_type: str = "symmetric",
        augment: str = "none",
    ):
        super().__init__(
            batch_size, seed, normalize, normalize_target, eval_batch_size, label_noise=label_noise, noise_type=noise_type,
            augment=augment,
        )
        self.profile = check_param("profile", profile, PROFILE)
        self.imbalance_ratio = check_param("imbalance_ratio", imbalance_ratio, IMBALANCE_RATIO)
        self.n_max = None if n_max is None else check_param("n_max", n_max, Interval(int, 1))
        self.n_val_per_class = check_param("n_val_per_class", n_val_per_class, Interval(int, 1))
        self.n_test_per_class = check_param("n_test_per_class", n_test_per_class, Interval(int, 1))
        self.as_image = bool(as_image)

    def num_classes(self, s: Splits) -> int:
        return self.n_classes

    def load(self) -> Splits:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        rng = np.random.default_rng(self.seed)
        c = self.n_classes
        te = sample_per_class(y, [self.n_test_per_class] * c, rng, what="test split")
        va = sample_per_class(y, [self.n_val_per_class] * c, rng, exclude=te, what="validation split")
        held = np.concatenate([te, va])
        left = int(min(idx.size - np.isin(idx, held).sum() for idx in per_class_indices(y, c)))
        n_max = left if self.n_max is None else self.n_max
        counts = long_tail_counts(n_max, c, self.imbalance_ratio, self.profile)
        tr = rng.permutation(sample_per_class(y, counts, rng, exclude=held, what="training split"))
        te, va = rng.permutation(te), rng.permutation(va)
        shape = (-1, 1, 8, 8) if self.as_image else (-1, 64)
        extra = {"profile": self.profile, "requested_imbalance_ratio": self.imbalance_ratio, "n_max": n_max}
        return Splits(
            _fx(x[tr]).reshape(shape), _fy(y[tr]),
            _fx(x[va]).reshape(shape), _fy(y[va]),
            _fx(x[te]).reshape(shape), _fy(y[te]),
            extra=extra,
        )  # fmt: skip


class BreastCancer(TensorDataModule):
    """scikit-learn's Wisconsin diagnostic breast cancer set: 569 samples, 30 features, binary.

    Labels as scikit-learn gives them (0 = malignant, 212 samples; 1 = benign, 357). The
    train/val/test split is seeded and stratified by class. Data: Street, Wolberg & Mangasarian,
    "Nuclear feature extraction for breast tumor diagnosis", SPIE 1993.
    """

    cacheable = True  # seeded generators of its own only

    name = "breast_cancer"
    task = "binary"
    objective = ("balanced_accuracy", "max")

    def __init__(
        self,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        batch_size: int = 64,
        seed: int = 0,
        normalize: str = "standard",
        normalize_target: str = "none",
        eval_batch_size: int = 4096,
        label_noise: float = 0.0,
        noise_type: str = "symmetric",
    ):
        super().__init__(
            batch_size, seed, normalize, normalize_target, eval_batch_size, label_noise=label_noise, noise_type=noise_type
        )
        self.val_fraction, self.test_fraction = check_split_fractions(val_fraction, test_fraction)

    def num_classes(self, s: Splits) -> int:
        return 2

    def load(self) -> Splits:
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        x, y = data.data, data.target
        tr, va, te = stratified_split_indices(y, self.val_fraction, self.test_fraction, self.seed)
        extra = {"class_names": [str(n) for n in data.target_names]}
        return Splits(_fx(x[tr]), _fy(y[tr]), _fx(x[va]), _fy(y[va]), _fx(x[te]), _fy(y[te]), extra=extra)


class Diabetes(TensorDataModule):
    """scikit-learn's diabetes progression set: 442 patients, 10 raw (unscaled) features, regression.

    The split is seeded and stratified by target quintile, so every split covers the target's
    range. Optionally a fraction ``outlier_fraction`` of the *training* targets gets a gross
    error of ``outlier_scale * U(0.5, 1.5)`` training-target standard deviations, random sign
    (``y_gross``) or positive (``y_one_sided``); val and test stay clean.
    ``DataInfo.outlier_fraction`` is measured on the training split as the share of residuals
    of a robust linear fit beyond 3.5 robust standard deviations
    (:func:`~lossbench.data.synthetic.huber_outlier_fraction`). Data: Efron, Hastie, Johnstone &
    Tibshirani, "Least Angle Regression", Annals of Statistics 2004.
    """

    cacheable = True  # seeded generators of its own only

    name = "diabetes"
    task = "regression"
    objective = ("rmse", "min")

    def __init__(
        self,
        outlier_fraction: float = 0.0,
        outlier_scale: float = 5.0,
        outlier_type: str = "y_gross",
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        batch_size: int = 64,
        seed: int = 0,
        normalize: str = "standard",
        normalize_target: str = "standard",
        eval_batch_size: int = 4096,
    ):
        super().__init__(batch_size, seed, normalize, normalize_target, eval_batch_size)
        self.outlier_type = check_param("outlier_type", outlier_type, Options(*TARGET_OUTLIER_TYPES))
        self.outlier_fraction = check_param("outlier_fraction", outlier_fraction, OUTLIER_FRACTION)
        self.outlier_scale = check_param("outlier_scale", outlier_scale, Interval(float, 0))
        self.val_fraction, self.test_fraction = check_split_fractions(val_fraction, test_fraction)

    def load(self) -> Splits:
        from sklearn.datasets import load_diabetes

        x, y = load_diabetes(return_X_y=True, scaled=False)
        bins = np.searchsorted(np.quantile(y, [0.2, 0.4, 0.6, 0.8]), y, side="right")
        tr, va, te = stratified_split_indices(bins, self.val_fraction, self.test_fraction, self.seed)
        y_tr = y[tr].astype(np.float64)
        rng = np.random.default_rng([self.seed, 1])
        n_out = int(round(self.outlier_fraction * tr.size))
        idx = np.sort(rng.choice(tr.size, size=n_out, replace=False))
        if n_out:
            y_tr = inject_target_errors(y_tr, idx, self.outlier_type, self.outlier_scale * float(y_tr.std()), rng)
        extra = {
            "outlier_type": self.outlier_type if n_out else None,
            "injected_outlier_fraction": n_out / tr.size,
            "n_injected_outliers": n_out,
            "outlier_scale": self.outlier_scale,
            "outlier_measure": "share of residuals of a Huber linear fit beyond 3.5 * 1.4826 * MAD from their median",
        }
        return Splits(_fx(x[tr]), _fx(y_tr), _fx(x[va]), _fx(y[va]), _fx(x[te]), _fx(y[te]), extra=extra)

    def traits(self, splits: Splits) -> dict[str, Any]:
        return {"outlier_fraction": huber_outlier_fraction(splits.x_train.numpy(), splits.y_train.numpy())}

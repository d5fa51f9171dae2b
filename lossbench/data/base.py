"""The DataModule contract: tensors on the training device, batches sliced, a DataInfo.

Every dataset in lossbench subclasses :class:`TensorDataModule` and implements
:meth:`TensorDataModule.load`, returning raw train/val/test splits as tensors. The base
class then normalises (fit on the training split only), measures the data's traits into
a :class:`DataInfo`, and serves batches by slicing tensors that live on the training
device — no per-sample collation, which dominates the run time of small models.

Over 500 lines on purpose: the DataModule contract, DataInfo, the tensor batches and the
normalise/label-noise/augment steps every dataset shares; every dataset builds on all of them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..constraints import Constraint, Interval, Options
from ..errors import DataError
from .augment import AUGMENTS, crop_flip
from .augment import generator as augment_generator

NORMALIZERS = ("standard", "robust", "minmax", "none")
NOISE_TYPES = ("symmetric", "pairflip")
LABEL_NOISE = Interval(float, 0, 1, "left")  # data.label_noise: the fraction of training labels to flip
# mixed into the data seed so that the flips are drawn apart from the split's own random stream
_NOISE_STREAM = 0x1AB31
_NORM_CHUNK_ELEMENTS = 1 << 22  # elements normalised per float64 chunk in setup()


@dataclass(frozen=True)
class DataInfo:
    """What the rest of lossbench needs to know about a dataset (after ``setup``)."""

    name: str
    task: str  # "regression" | "multiclass" | "binary"
    input_shape: tuple[int, ...]
    num_classes: int | None = None  # None for regression
    class_counts: list[int] | None = None  # per class, training split
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    outlier_fraction: float | None = None  # measured on the training targets (regression)
    imbalance_ratio: float | None = None  # largest / smallest training class
    label_noise: float | None = None  # fraction of training labels flipped, where known
    normalize: str = "none"
    target_normalize: str = "none"
    # regression targets are trained normalised: original = normalised * target_scale + target_shift
    target_shift: float = 0.0
    target_scale: float = 1.0
    objective: str = "loss"  # metric name without split prefix: val_<objective> selects, test_<objective> ranks
    objective_mode: str = "min"  # "min" | "max"
    extra: dict[str, Any] = field(default_factory=dict)  # dataset-specific facts for the report

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Splits:
    """Raw (unnormalised) splits as returned by :meth:`TensorDataModule.load`.

    ``x_*`` are float tensors ``(N, *input_shape)``. ``y_*`` are float ``(N,)`` for
    regression and int64 ``(N,)`` class indices for classification.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


class TensorBatches:
    """An iterable of ``(x, y)`` batches sliced from tensors; what the loaders return.

    Shuffling uses its own seeded generator, advanced once per epoch, so a run is
    reproducible. Under ``torch.distributed`` each rank of a shuffled (training) loader
    takes its own share of every epoch's permutation, padded with the permutation's first
    samples so every rank takes as many steps (a rank with one step more waits forever for
    the others' gradients; torch's DistributedSampler pads alike); an unshuffled (val,
    test) loader gives every rank the whole split, so each scores exactly the split.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None):
        self.x, self.y = x, y
        self.augment = augment  # applied to every shuffled (training) batch, see lossbench.data.augment
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.epoch = 0

    def _rank_world(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _n_local(self) -> int:
        _, world = self._rank_world()
        return -(-self.x.shape[0] // world) if self.shuffle else self.x.shape[0]

    def __len__(self) -> int:
        n = self._n_local()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        rank, world = self._rank_world()
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            perm = torch.randperm(n, generator=g)
            order = torch.cat([perm, perm[: -n % world]])[rank::world].to(self.x.device)
            g_aug = augment_generator(self.seed, self.epoch)
            self.epoch += 1
        else:
            order = None
        m = n if order is None else order.numel()
        stop = m - (m % self.batch_size) if self.drop_last else m
        for start in range(0, stop, self.batch_size):
            if order is None:
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            else:
                idx = order[start : start + self.batch_size]
                xb = self.x[idx]
                yield (xb if self.augment is None else self.augment(xb, g_aug)), self.y[idx]


def _fit_normalizer(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) such that (x - shift) / scale is normalised; per feature, dim 0 = samples.
    ``kind`` is one of :data:`NORMALIZERS`, checked when the DataModule was built."""
    x = x.double()
    if kind == "none":
        return torch.zeros(x.shape[1:], dtype=x.dtype), torch.ones(x.shape[1:], dtype=x.dtype)
    if kind == "standard":
        shift, scale = x.mean(0), x.std(0, unbiased=False)
    elif kind == "robust":
        q = torch.quantile(x.reshape(x.shape[0], -1), torch.tensor([0.25, 0.5, 0.75], dtype=x.dtype), dim=0)
        shift, scale = q[1].reshape(x.shape[1:]), (q[2] - q[0]).reshape(x.shape[1:])
    else:  # minmax
        lo, hi = x.min(0).values, x.max(0).values
        shift, scale = lo, hi - lo
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))  # constant features stay put
    return shift, scale


# generated splits of cacheable datasets, by their attributes (see TensorDataModule.cacheable)
_SPLITS: OrderedDict[tuple[Any, ...], tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], Any, Any]] = OrderedDict()
_SPLITS_MAX_ENTRIES = 128
_SPLITS_MAX_BYTES = 64 << 20


def _simple(v: Any) -> bool:
    if v is None or isinstance(v, bool | int | float | str):
        return True
    if isinstance(v, list | tuple):
        return all(_simple(x) for x in v)
    return False


class TensorDataModule:
    """Base class of every lossbench dataset. Subclasses implement :meth:`load`.

    It has the hooks of a Lightning ``LightningDataModule`` (``prepare_data``, ``setup``,
    ``*_dataloader``) without importing Lightning: the batched engine reads its tensors
    directly, and the Lightning path wraps it (:func:`lossbench.pipeline.lightning_datamodule`).

    Parameters common to all datasets: ``batch_size``, ``seed`` (fixes the data; set
    from the top-level ``seed``), ``normalize`` (features: standard, robust, minmax or
    none; fit on the training split only) and ``normalize_target`` (regression only).

    Classification datasets also take ``label_noise`` (the fraction of *training* labels
    flipped) and ``noise_type`` (``symmetric`` or ``pairflip``, see :func:`flip_labels`). The
    flips are applied here, after :meth:`load`, from a generator seeded by ``seed``; validation
    and test labels stay clean. ``DataInfo.label_noise`` is the fraction actually flipped and
    ``DataInfo.class_counts`` counts the observed (noisy) training labels.
    """

    name = "tensor"
    task = "multiclass"
    objective = ("loss", "min")  # (metric without split prefix, "min" | "max")

    def __init__(
        self,
        batch_size: int = 128,
        seed: int = 0,
        normalize: str = "standard",
        normalize_target: str = "standard",
        eval_batch_size: int = 4096,
        label_noise: float = 0.0,
        noise_type: str = "symmetric",
        augment: str = "none",
    ):
        self.batch_size = check_param("batch_size", batch_size, Interval(int, 1))
        self.eval_batch_size = check_param("eval_batch_size", eval_batch_size, Interval(int, 1))
        self.seed = int(seed)
        self.normalize = check_param("normalize", normalize, Options(*NORMALIZERS))
        self.normalize_target = check_param("normalize_target", normalize_target, Options(*NORMALIZERS))
        self.label_noise = check_param("label_noise", label_noise, LABEL_NOISE)
        self.noise_type = check_param("noise_type", noise_type, Options(*NOISE_TYPES))
        self.augment = check_param("augment", augment, Options(*AUGMENTS))
        self._pad_fill: torch.Tensor | None = None  # the normalised value of a black pixel, per channel
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._info: DataInfo | None = None
        self._loaders: dict[str, TensorBatches] = {}

    # ---------------------------------------------------------------- subclass API
    def load(self) -> Splits:  # pragma: no cover - abstract
        raise NotImplementedError

    def traits(self, splits: Splits) -> dict[str, Any]:
        """Measured traits for :class:`DataInfo` (outlier_fraction, label_noise, ...)."""
        return {}

    # ---------------------------------------------------------------- lifecycle
    def prepare_data(self) -> None:
        """Download or check files, once per machine (as Lightning's hook); nothing by default."""

    # True where load() flips its own training labels with flip_labels (ImbalancedClassification,
    # whose flips come from the split's random stream): then _setup does not flip them again
    flips_own_labels = False

    # True where load() depends only on the instance's simple attributes and draws from its
    # own seeded generators (never a global one): then equal attributes give equal splits,
    # and a process that builds the same data again (the four losses of a sweep at one seed)
    # takes it from a small cache instead of generating it once per run
    cacheable = False

    def _cache_key(self) -> tuple[Any, ...] | None:
        if not type(self).cacheable:
            return None
        items = []
        for k, v in sorted(vars(self).items()):
            if k.startswith("_"):
                continue
            if not _simple(v):
                return None
            items.append((k, repr(v)))
        return (type(self).__module__, type(self).__qualname__, tuple(items))

    def setup(self, stage: str | None = None) -> None:
        if self._tensors is not None:
            return
        key = self._cache_key()
        if key is not None and key in _SPLITS:
            _SPLITS.move_to_end(key)
            tensors, self._info, self._pad_fill = _SPLITS[key]
            self._tensors = dict(tensors)  # the tensors are shared, never written to
            return
        self._setup()
        assert self._tensors is not None
        size = sum(t.numel() * t.element_size() for pair in self._tensors.values() for t in pair)
        if key is not None and size <= _SPLITS_MAX_BYTES:
            _SPLITS[key] = (dict(self._tensors), self._info, self._pad_fill)
            while len(_SPLITS) > _SPLITS_MAX_ENTRIES:
                _SPLITS.popitem(last=False)

    def _setup(self) -> None:
        s = self.load()
        self._check_splits(s)
        noise_traits = self._add_label_noise(s)
        shift, scale = self.fit_normalizer(s.x_train)
        if self.augment != "none":
            self._pad_fill = self._black(s.x_train, shift, scale)

        def norm_x(x: torch.Tensor) -> torch.Tensor:
            # float64 arithmetic, in chunks so that a large image tensor is never copied whole to float64
            rows = max(1, _NORM_CHUNK_ELEMENTS // max(1, x[0].numel()))
            return torch.cat([((c.double() - shift) / scale).float() for c in x.split(rows)])

        tshift, tscale = 0.0, 1.0
        ys = [s.y_train, s.y_val, s.y_test]
        if self.task == "regression":
            ts, tc = _fit_normalizer(s.y_train.reshape(-1, 1), self.normalize_target)
            tshift, tscale = float(ts[0]), float(tc[0])
            ys = [((y.double() - tshift) / tscale).float() for y in ys]
        else:
            ys = [y.long() for y in ys]
        self._tensors = {
            "train": (norm_x(s.x_train), ys[0]),
            "val": (norm_x(s.x_val), ys[1]),
            "test": (norm_x(s.x_test), ys[2]),
        }
        counts = None
        n_classes = None
        imbalance = None
        if self.task != "regression":
            n_classes = int(self.num_classes(s))
            counts = torch.bincount(s.y_train.long(), minlength=n_classes).tolist()
            nz = [c for c in counts if c > 0]
            imbalance = max(nz) / min(nz) if nz else None
        objective, mode = self.objective
        traits = {**noise_traits, **self.traits(s)}
        extra = {**s.extra, **traits.pop("extra", {})}
        self._info = DataInfo(
            name=self.name,
            task=self.task,
            input_shape=tuple(s.x_train.shape[1:]),
            num_classes=n_classes,
            class_counts=counts,
            n_train=int(s.x_train.shape[0]),
            n_val=int(s.x_val.shape[0]),
            n_test=int(s.x_test.shape[0]),
            imbalance_ratio=imbalance,
            normalize=self.normalize,
            target_normalize=self.normalize_target if self.task == "regression" else "none",
            target_shift=tshift,
            target_scale=tscale,
            objective=objective,
            objective_mode=mode,
            extra=extra,
            **traits,
        )

    def _black(self, x_train: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Per channel, what a raw 0 becomes after normalisation: the padding of ``crop_flip``."""
        if x_train.dim() != 4:
            raise DataError(
                f"{self.name}: data.augment={self.augment} crops and flips images (N, C, H, W), but these inputs "
                f"have shape {tuple(x_train.shape[1:])}. Use data.augment=none"
                + (", or data.as_image=true." if hasattr(self, "as_image") else ".")
            )
        black = ((0.0 - shift) / scale).float().expand(x_train.shape[1:])
        return black.mean(dim=(1, 2), keepdim=True)  # per-pixel normalisation: its channel mean

    def train_transform(self) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
        """What is applied to each training batch, with the run's augmentation generator; None: nothing."""
        if self.augment == "none":
            return None
        self.setup("fit")
        fill = self._pad_fill

        def transform(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return crop_flip(x, fill.to(x.device), g)

        return transform

    def _add_label_noise(self, s: Splits) -> dict[str, Any]:
        """Flip ``label_noise`` of the training labels of ``s`` in place; the traits that say so."""
        if self.label_noise == 0.0 or self.flips_own_labels:
            return {}
        if self.task == "regression":
            raise DataError(
                f"{self.name}: data.label_noise flips class labels, but this is a regression task; "
                f"set data.label_noise=0 (or data.task=multiclass/binary for class labels)."
            )
        rng = np.random.default_rng([self.seed, _NOISE_STREAM])
        n_classes = int(self.num_classes(s))  # from the clean labels: pair-flip needs the true C
        clean = s.y_train.long().numpy()
        noisy, n_flip = flip_labels(clean, self.label_noise, self.noise_type, n_classes, rng)
        s.y_train = torch.from_numpy(noisy)
        s.extra = {
            **s.extra,
            "clean_class_counts": np.bincount(clean, minlength=n_classes).tolist(),
            "n_flipped_labels": n_flip,
        }
        return {"label_noise": n_flip / clean.size}

    def fit_normalizer(self, x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(shift, scale)`` fit on the raw training inputs; ``(x - shift) / scale`` is applied
        to every split. Per feature by default; a subclass may override (e.g. per channel),
        returning tensors that broadcast against ``x_train``."""
        return _fit_normalizer(x_train, self.normalize)

    def num_classes(self, s: Splits) -> int:
        return int(max(int(s.y_train.max()), int(s.y_val.max()), int(s.y_test.max())) + 1)

    def _check_splits(self, s: Splits) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(s, f"x_{split}"), getattr(s, f"y_{split}")
            if x.shape[0] != y.shape[0]:
                raise DataError(f"{self.name}: {split} split has {x.shape[0]} inputs but {y.shape[0]} targets.")
            if x.shape[0] == 0:
                raise DataError(f"{self.name}: the {split} split is empty; use more data or smaller val/test fractions.")
            if not torch.isfinite(x).all():
                raise DataError(f"{self.name}: the {split} inputs contain NaN or infinite values.")
            if y.is_floating_point() and not torch.isfinite(y).all():
                raise DataError(f"{self.name}: the {split} targets contain NaN or infinite values.")
            if self.task != "regression":
                if y.is_floating_point() and not torch.equal(y, y.round()):
                    raise DataError(f"{self.name}: the {split} class labels must be whole numbers 0..C-1.")
                if int(y.min()) < 0 or (self.task == "binary" and int(y.max()) > 1):
                    valid = "0 or 1" if self.task == "binary" else "0..C-1"
                    raise DataError(f"{self.name}: the {split} class labels must be {valid}, got values in "
                                    f"[{int(y.min())}, {int(y.max())}].")

    @property
    def info(self) -> DataInfo:
        if self._info is None:
            self.setup("fit")
        assert self._info is not None
        return self._info

    def set_objective(self, metric: str) -> DataInfo:
        """Select on validation and rank on test by ``metric`` (``data.objective``), not the task's default."""
        from .. import schema as S

        info = self.info
        names = ("loss", *(S.REGRESSION_METRICS if info.task == "regression" else S.CLASSIFICATION_METRICS))
        metric = check_param("objective", metric, Options(*names))
        self._info = replace(
            info, objective=metric, objective_mode="max" if S.HIGHER_IS_BETTER[metric] else "min"
        )
        return self._info

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self._tensors is None:
            self.setup("fit")
        assert self._tensors is not None
        return self._tensors[split]

    def to_device(self, device: torch.device | str) -> None:
        """Move every split to ``device`` once; loaders then slice on the device."""
        if self._tensors is None:
            self.setup("fit")
        assert self._tensors is not None
        self._tensors = {k: (x.to(device), y.to(device)) for k, (x, y) in self._tensors.items()}
        for split, loader in self._loaders.items():
            loader.x, loader.y = self._tensors[split]

    # ---------------------------------------------------------------- loaders
    def _loader(self, split: str) -> TensorBatches:
        x, y = self.tensors(split)
        if split not in self._loaders:
            train = split == "train"
            self._loaders[split] = TensorBatches(
                x, y, self.batch_size if train else self.eval_batch_size, shuffle=train, seed=self.seed,
                augment=self.train_transform() if train else None,
            )
        loader = self._loaders[split]
        loader.x, loader.y = x, y
        return loader

    def train_dataloader(self) -> TensorBatches:
        return self._loader("train")

    def val_dataloader(self) -> TensorBatches:
        return self._loader("val")

    def test_dataloader(self) -> TensorBatches:
        return self._loader("test")


def flip_labels(
    y: np.ndarray, fraction: float, noise_type: str, n_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """A copy of the labels ``y`` with ``round(fraction * len(y))`` of them, chosen at random,
    flipped; and how many were flipped.

    ``symmetric``: each flipped label moves to a class drawn uniformly from the *other*
    ``C - 1`` classes (a shift by 1..C-1 modulo C), so a flip always changes the label.
    ``pairflip``: class ``k`` moves to ``k + 1 mod C``, the class-dependent noise of Han et
    al. ("Co-teaching", NeurIPS 2018). With ``C = 2`` both are ``k -> 1 - k``.
    """
    y = np.array(y, dtype=np.int64, copy=True)
    n_flip = int(round(fraction * y.size))
    idx = rng.choice(y.size, size=n_flip, replace=False)
    if noise_type == "symmetric":
        shift = rng.integers(1, n_classes, size=n_flip)
    elif noise_type == "pairflip":
        shift = np.ones(n_flip, dtype=np.int64)
    else:
        raise DataError(f"data.noise_type must be one of {', '.join(NOISE_TYPES)}, got {noise_type!r}.")
    y[idx] = (y[idx] + shift) % n_classes
    return y, n_flip


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random train/val/test split of ``range(n)``."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def check_split_fractions(val_fraction: float, test_fraction: float) -> tuple[float, float]:
    """Validate the val/test fractions of a random split; returns them as floats."""
    val = check_param("val_fraction", val_fraction, Interval(float, 0, 1, "neither"))
    test = check_param("test_fraction", test_fraction, Interval(float, 0, 1, "neither"))
    if val + test >= 1.0:
        raise DataError(
            f"data.val_fraction + data.test_fraction must leave room for training data (sum < 1), "
            f"got {val_fraction!r} + {test_fraction!r}."
        )
    return val, test


def stratified_split_indices(
    groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded train/val/test split of ``range(len(groups))`` stratified by ``groups``.

    Each group (a class, or a bin of a regression target) is split in the given
    proportions (rounded per group), so every split keeps the group frequencies. A group
    too small to give a sample to val or test stays in train. Each split comes back shuffled.
    """
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for g in np.unique(groups):
        idx = rng.permutation(np.flatnonzero(groups == g))
        n_test = int(round(idx.size * test_fraction))
        n_val = int(round(idx.size * val_fraction))
        n_test = min(n_test, idx.size - 1)  # keep at least one sample of the group for training
        n_val = min(n_val, idx.size - 1 - n_test)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    train, val, test = (rng.permutation(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts)
    return train, val, test


def check_param(key: str, value: Any, constraint: Constraint) -> Any:
    """``data.<key>`` checked against ``constraint``: its value in canonical form, or a :class:`DataError`."""
    return constraint.check(f"data.{key}", value, error=DataError)

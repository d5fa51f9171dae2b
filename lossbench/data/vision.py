"""Long-tailed image classification sets built from torchvision's MNIST, Fashion-MNIST and CIFAR.

The training split follows a long-tailed profile (default ``exp`` with
``imbalance_ratio=100``, the CIFAR-LT protocol of Cao et al., "Learning Imbalanced Datasets
with Label-Distribution-Aware Margin Loss", NeurIPS 2019, and Cui et al., "Class-Balanced Loss
Based on Effective Number of Samples", CVPR 2019). How the splits are made:

* **validation**: ``n_val_per_class`` images of every class held out, at random, from the
  official *training* set before the long-tailed subsampling: balanced, small, and disjoint
  from both training and test (the official test set is never used for model selection);
* **training**: from the rest of the official training set, ``n_c`` random images of class
  ``c`` (see :mod:`lossbench.data.longtail`); ``n_max=None`` uses the largest count every
  class can still supply (CIFAR-10: 5000 - 50 = 4950, so the default tail class has 49
  images where Cao et al. have 50);
* **test**: the official test set, made balanced by taking ``n_test_per_class`` random images
  of every class (default: the smallest class's count, i.e. all of CIFAR's test set and
  892 per class of MNIST's).

Images become one float tensor ``(N, C, H, W)`` in ``[0, 1]`` (after subsampling, so the
discarded images are never converted); ``normalize`` is then fit *per channel* on the
training split.

Files are read from ``data_dir`` (default ``$LOSSBENCH_DATA_DIR`` or
``~/.cache/lossbench/data``) in torchvision's layout: ``MNIST/raw/*-ubyte``,
``FashionMNIST/raw/*-ubyte``, ``cifar-10-batches-py/``, ``cifar-100-python/``. With
``download=True`` (the default in the Hydra configs, ``False`` in Python) a missing set is
downloaded by torchvision first; with ``download=False`` a missing set raises a
:class:`~lossbench.errors.DataError` that says how to get it. MNIST files are read by
torchvision itself. CIFAR files (pickled batches) are read here, because torchvision's CIFAR
classes refuse any file whose MD5 differs from the official release; instead, with
``verify_md5=True`` (the default) each CIFAR file is checked against the official MD5 that
torchvision publishes, and ``verify_md5=False`` accepts other files in the same format.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..constraints import Interval
from ..errors import DataError
from .base import Splits, TensorDataModule, _fit_normalizer, check_param
from .longtail import IMBALANCE_RATIO, PROFILE, long_tail_counts, per_class_indices, sample_per_class

DEFAULT_DATA_DIR = "~/.cache/lossbench/data"
DATA_DIR_ENV = "LOSSBENCH_DATA_DIR"


def default_data_dir() -> str:
    """``$LOSSBENCH_DATA_DIR`` if set, else ``~/.cache/lossbench/data``."""
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR



# What a CIFAR batch may contain: dicts, lists, strings, bytes and numpy arrays. Anything
# else (a function, a class, os.system) is refused, so a file planted in data_dir cannot
# run code when it is read, even with verify_md5=false.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays and lists")

class LongTailedVision(TensorDataModule):
    """Base of the long-tailed torchvision sets; see the module docstring for the protocol."""

    task = "multiclass"
    objective = ("balanced_accuracy", "max")
    n_classes = 10
    default_val_per_class = 50
    torchvision_name = ""  # class in torchvision.datasets
    layout = ""  # what the user should find under data_dir, for error messages

    def __init__(
        self,
        data_dir: str | None = None,
        download: bool = False,
        imbalance_ratio: float = 100.0,
        profile: str = "exp",
        n_max: int | None = None,
        n_val_per_class: int | None = None,
        n_test_per_class: int | None = None,
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
        self.data_dir = Path(os.path.expanduser(str(data_dir or default_data_dir())))
        self.download = bool(download)
        self.profile = check_param("profile", profile, PROFILE)
        self.imbalance_ratio = check_param("imbalance_ratio", imbalance_ratio, IMBALANCE_RATIO)
        count = Interval(int, 1)
        self.n_max = None if n_max is None else check_param("n_max", n_max, count)
        n_val = self.default_val_per_class if n_val_per_class is None else n_val_per_class
        self.n_val_per_class = check_param("n_val_per_class", n_val, count)
        n_test = n_test_per_class
        self.n_test_per_class = None if n_test is None else check_param("n_test_per_class", n_test, count)

    # ------------------------------------------------------------------ per dataset
    def _present(self) -> bool:
        raise NotImplementedError

    def _fetch(self) -> None:
        raise NotImplementedError

    def _read(self, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """uint8 images ``(N, C, H, W)``, int64 labels ``(N,)`` and the class names."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def _ensure_files(self) -> None:
        if self._present():
            return
        if not self.download:
            raise DataError(
                f"{self.name}: no {self.torchvision_name} files in {self.data_dir} (expected {self.layout}). "
                f"Set data.download=true to download them (needs internet), or data.data_dir=... to the folder "
                f"that holds them."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._fetch()
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            raise DataError(
                f"{self.name}: downloading {self.torchvision_name} into {self.data_dir} failed ({err}). Check the "
                f"internet connection, or put the files there yourself ({self.layout})."
            ) from err
        if not self._present():
            raise DataError(f"{self.name}: after downloading, {self.layout} is still missing in {self.data_dir}.")

    def prepare_data(self) -> None:
        """Lightning calls this once per node before ``setup``: download here, not on every rank."""
        if self.download:
            self._ensure_files()

    def num_classes(self, s: Splits) -> int:
        return self.n_classes

    def load(self) -> Splits:
        self._ensure_files()
        x_pool, y_pool, class_names = self._read(train=True)
        x_test, y_test, _ = self._read(train=False)
        c = self.n_classes
        for split, y in (("training", y_pool), ("test", y_test)):
            if y.size and (y.min() < 0 or y.max() >= c):
                raise DataError(
                    f"{self.name}: the {split} file has labels outside 0..{c - 1}; is it the right dataset?"
                )
        rng = np.random.default_rng(self.seed)
        va = sample_per_class(y_pool, [self.n_val_per_class] * c, rng, what="validation split")
        left = int(min(idx.size - np.isin(idx, va).sum() for idx in per_class_indices(y_pool, c)))
        n_max = left if self.n_max is None else self.n_max
        counts = long_tail_counts(n_max, c, self.imbalance_ratio, self.profile)
        tr = rng.permutation(sample_per_class(y_pool, counts, rng, exclude=va, what="training split"))
        va = rng.permutation(va)
        n_test = self.n_test_per_class or int(np.bincount(y_test, minlength=c).min())
        te = rng.permutation(sample_per_class(y_test, [n_test] * c, rng, what="test split"))

        def fx(x: np.ndarray, idx: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x[idx])).float().div_(255.0)

        def fy(y: np.ndarray, idx: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(y[idx], dtype=np.int64))

        extra = {
            "profile": self.profile,
            "requested_imbalance_ratio": self.imbalance_ratio,
            "n_max": n_max,
            "class_names": class_names,
            "val": f"{self.n_val_per_class} per class held out from the official training set",
            "test": f"{n_test} per class from the official test set",
        }
        return Splits(
            fx(x_pool, tr), fy(y_pool, tr), fx(x_pool, va), fy(y_pool, va), fx(x_test, te), fy(y_test, te), extra=extra
        )

    def fit_normalizer(self, x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel statistics over all training pixels, shaped ``(C, 1, 1)``."""
        c = x_train.shape[1]
        pixels = x_train.transpose(0, 1).reshape(c, -1).T  # (N * H * W, C)
        shift, scale = _fit_normalizer(pixels, self.normalize)
        return shift.reshape(c, 1, 1), scale.reshape(c, 1, 1)


class _MNISTFamily(LongTailedVision):
    """Read and download through torchvision's own MNIST classes (idx-ubyte files, no MD5 on raw files)."""

    default_val_per_class = 50

    def _torchvision_class(self) -> Any:
        import torchvision.datasets

        return getattr(torchvision.datasets, self.torchvision_name)

    @property
    def layout(self) -> str:  # type: ignore[override]
        return f"{self.torchvision_name}/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte"

    def _present(self) -> bool:
        raw = self.data_dir / self.torchvision_name / "raw"
        names = [f"{split}-{kind}-ubyte" for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]
        return all((raw / n).is_file() for n in names)

    def _fetch(self) -> None:
        self._torchvision_class()(str(self.data_dir), train=True, download=True)

    def _read(self, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
        cls = self._torchvision_class()
        try:
            ds = cls(str(self.data_dir), train=train, download=False)
        except (RuntimeError, AssertionError, ValueError) as err:
            raise DataError(
                f"{self.name}: cannot read the {self.torchvision_name} files in {self.data_dir} "
                f"({err or 'bad format'}); delete them and set data.download=true to fetch them again."
            ) from err
        x = ds.data.numpy()[:, None]  # (N, 1, 28, 28) uint8
        return x, ds.targets.numpy().astype(np.int64), [str(n) for n in cls.classes]


class MNISTLT(_MNISTFamily):
    """Long-tailed MNIST (LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to
    document recognition", Proc. IEEE 1998): 10 classes, ``(1, 28, 28)`` inputs."""

    name = "mnist_lt"
    torchvision_name = "MNIST"


class FashionMNISTLT(_MNISTFamily):
    """Long-tailed Fashion-MNIST (Xiao, Rasul & Vollgraf, "Fashion-MNIST: a Novel Image Dataset
    for Benchmarking Machine Learning Algorithms", arXiv:1708.07747, 2017): 10 classes, ``(1, 28, 28)``."""

    name = "fashion_mnist_lt"
    torchvision_name = "FashionMNIST"


class _CIFARFamily(LongTailedVision):
    """Read CIFAR's pickled python batches here; torchvision downloads them and publishes the MD5s."""

    label_key = "labels"

    def __init__(self, *args: Any, verify_md5: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.verify_md5 = bool(verify_md5)

    def _torchvision_class(self) -> Any:
        import torchvision.datasets

        return getattr(torchvision.datasets, self.torchvision_name)

    def _files(self) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]], dict[str, str]]:
        cls = self._torchvision_class()
        return cls.base_folder, [tuple(f) for f in cls.train_list], [tuple(f) for f in cls.test_list], dict(cls.meta)

    @property
    def layout(self) -> str:  # type: ignore[override]
        folder, train, test, meta = self._files()
        return f"{folder}/{{{','.join(n for n, _ in train + test)},{meta['filename']}}}"

    def _present(self) -> bool:
        folder, train, test, meta = self._files()
        names = [n for n, _ in train + test] + [meta["filename"]]
        return all((self.data_dir / folder / n).is_file() for n in names)

    def _fetch(self) -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        cls = self._torchvision_class()
        download_and_extract_archive(cls.url, str(self.data_dir), filename=cls.filename, md5=cls.tgz_md5)

    def _unpickle(self, name: str, md5: str) -> dict[str, Any]:
        from torchvision.datasets.utils import check_integrity

        folder = self._files()[0]
        path = self.data_dir / folder / name
        if self.verify_md5 and not check_integrity(str(path), md5):
            raise DataError(
                f"{self.name}: {path} does not match the official {self.torchvision_name} release (MD5 differs). "
                f"Delete {self.data_dir / folder} and set data.download=true to fetch it again, or set "
                f"data.verify_md5=false to use these files as they are."
            )
        try:
            with open(path, "rb") as f:
                entry = _ArraysOnlyUnpickler(f, encoding="latin1").load()  # CIFAR's published format
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, ImportError, TypeError) as err:
            raise DataError(f"{self.name}: {path} is not a readable CIFAR python batch ({err}).") from err
        if not isinstance(entry, dict):
            raise DataError(f"{self.name}: {path} is not a CIFAR python batch (expected a dict).")
        return entry

    def _read(self, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
        _, train_files, test_files, meta = self._files()
        xs, ys = [], []
        for name, md5 in train_files if train else test_files:
            entry = self._unpickle(name, md5)
            try:
                xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(entry[self.label_key], dtype=np.int64))
            except (KeyError, ValueError) as err:
                raise DataError(
                    f"{self.name}: {name} lacks 'data' of 3x32x32 images or '{self.label_key}' ({err})."
                ) from err
        names_entry = self._unpickle(meta["filename"], meta["md5"])
        if meta["key"] not in names_entry:
            raise DataError(f"{self.name}: {meta['filename']} lacks '{meta['key']}'.")
        return np.concatenate(xs), np.concatenate(ys), [str(n) for n in names_entry[meta["key"]]]


class CIFAR10LT(_CIFARFamily):
    """Long-tailed CIFAR-10 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
    2009): 10 classes, ``(3, 32, 32)`` inputs."""

    name = "cifar10_lt"
    torchvision_name = "CIFAR10"


class CIFAR100LT(_CIFARFamily):
    """Long-tailed CIFAR-100 (Krizhevsky, 2009), fine labels: 100 classes, ``(3, 32, 32)`` inputs."""

    name = "cifar100_lt"
    torchvision_name = "CIFAR100"
    n_classes = 100
    default_val_per_class = 10
    label_key = "fine_labels"

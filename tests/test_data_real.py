"""Real datasets: scikit-learn's bundled sets, torchvision image sets (from tiny files in the
real on-disk formats, no download) and the user's own tables."""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.datasets
from sklearn.datasets import load_breast_cancer, load_diabetes

from lossbench.data.sklearn_sets import BreastCancer, Diabetes, DigitsLT
from lossbench.data.tabular import TabularData
from lossbench.data.vision import CIFAR10LT, CIFAR100LT, FashionMNISTLT, MNISTLT
from lossbench.errors import DataError


def exp_profile(n_max: int, n_classes: int, ratio: float) -> list[int]:
    """Cui et al. (CVPR 2019): n_c = n_max * ratio ** (-c / (C - 1)), floored."""
    return [math.floor(n_max * ratio ** (-c / (n_classes - 1)) + 1e-9) for c in range(n_classes)]


# =========================================================================== scikit-learn sets
def test_digits_lt_long_tailed_train_balanced_eval():
    dm = DigitsLT(seed=0)
    info = dm.info
    assert info.input_shape == (64,) and info.num_classes == 10 and info.task == "multiclass"
    n_max = info.extra["n_max"]
    assert n_max == 174 - 20 - 50  # digit 8, the smallest class, has 174 images
    assert info.class_counts == exp_profile(n_max, 10, 10)
    assert info.imbalance_ratio == pytest.approx(n_max / math.floor(n_max / 10))
    assert torch.bincount(dm.tensors("test")[1]).tolist() == [50] * 10
    assert torch.bincount(dm.tensors("val")[1]).tolist() == [20] * 10
    image = DigitsLT(seed=0, as_image=True)
    assert image.info.input_shape == (1, 8, 8)
    raw_flat, raw_img = DigitsLT(seed=0).load(), image.load()
    assert torch.equal(raw_img.x_train.reshape(-1, 64), raw_flat.x_train)
    assert float(raw_flat.x_train.max()) == 16.0


def test_breast_cancer_stratified_binary():
    dm = BreastCancer(seed=0)
    info = dm.info
    assert info.task == "binary" and info.num_classes == 2 and info.input_shape == (30,)
    assert info.n_train + info.n_val + info.n_test == 569
    assert info.extra["class_names"] == ["malignant", "benign"]
    overall = 212 / 569
    for split in ("train", "val", "test"):
        y = dm.tensors(split)[1]
        assert float((y == 0).float().mean()) == pytest.approx(overall, abs=0.01)
    # the raw rows are sklearn's rows with their labels
    ref = load_breast_cancer()
    lookup = {tuple(np.float32(r)): int(t) for r, t in zip(ref.data, ref.target)}
    s = dm.load()
    assert all(lookup[tuple(r)] == int(t) for r, t in zip(s.x_test.numpy(), s.y_test))
    assert not torch.equal(BreastCancer(seed=1).load().y_train, s.y_train)


def test_diabetes_outliers_only_in_train():
    dm = Diabetes(outlier_fraction=0.1, outlier_scale=5.0, seed=0)
    s = dm.load()
    x_ref, y_ref = load_diabetes(return_X_y=True, scaled=False)
    lookup = {tuple(np.float32(r)): float(t) for r, t in zip(x_ref, y_ref)}
    truth = {split: np.array([lookup[tuple(r)] for r in x.numpy()]) for split, x in
             (("train", s.x_train), ("val", s.x_val), ("test", s.x_test))}  # fmt: skip
    assert np.array_equal(truth["val"], s.y_val.numpy()) and np.array_equal(truth["test"], s.y_test.numpy())
    changed = np.abs(truth["train"] - s.y_train.numpy()) > 1e-3
    assert changed.sum() == s.extra["n_injected_outliers"] == round(0.1 * len(truth["train"]))
    # each error is 5 * U(0.5, 1.5) training-target sd
    sd = truth["train"].std()
    err = np.abs(truth["train"] - s.y_train.numpy())[changed]
    assert err.min() >= 2.5 * sd * 0.99 and err.max() <= 7.5 * sd * 1.01
    info = dm.info
    assert info.task == "regression" and info.objective == "rmse"
    assert info.outlier_fraction == pytest.approx(0.1, abs=0.03)
    assert Diabetes(seed=0).info.outlier_fraction < 0.03
    # targets come back in original units through target_shift / target_scale
    _, y_te = dm.tensors("test")
    torch.testing.assert_close(y_te * info.target_scale + info.target_shift, s.y_test, atol=1e-3, rtol=1e-5)


def test_diabetes_bad_outlier_type():
    with pytest.raises(DataError, match="data.outlier_type must be one of 'y_gross', 'y_one_sided'. Got 'x_leverage'"):
        Diabetes(outlier_type="x_leverage")


# =========================================================================== torchvision sets, real formats
def _pixel_ids(n: int, label: np.ndarray) -> np.ndarray:
    """Per image: first pixel = its label, second and third = a unique id (low byte, high byte)."""
    ids = np.arange(n)
    return np.stack([label, ids % 256, ids // 256], axis=1).astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx-ubyte format MNIST is published in: big-endian magic (0, 0, 0x08 = ubyte, ndim), dims, data."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_images(counts: list[int], shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    images = rng.integers(0, 256, size=(labels.size, *shape), dtype=np.uint8)
    flat = images.reshape(labels.size, -1)
    flat[:, :3] = _pixel_ids(labels.size, labels)
    return images, labels


def write_mnist(root: Path, folder: str, train_counts: list[int], test_counts: list[int]) -> None:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, counts, seed in (("train", train_counts, 0), ("t10k", test_counts, 1)):
        images, labels = fake_images(counts, (28, 28), seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


def write_cifar(root: Path, n_classes: int, train_per_class: int, test_per_class: int) -> None:
    """CIFAR's python format: pickled dicts with uint8 'data' (N, 3072, channel-major) and labels."""
    tv = torchvision.datasets.CIFAR10 if n_classes == 10 else torchvision.datasets.CIFAR100
    key = "labels" if n_classes == 10 else "fine_labels"
    folder = root / tv.base_folder
    folder.mkdir(parents=True)
    images, labels = fake_images([train_per_class] * n_classes, (3, 32, 32), 0)
    batches = np.array_split(np.arange(labels.size), len(tv.train_list))
    for (name, _), idx in zip(tv.train_list, batches):
        entry = {"data": images[idx].reshape(len(idx), -1), key: labels[idx].tolist(), "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(entry))
    images, labels = fake_images([test_per_class] * n_classes, (3, 32, 32), 1)
    for name, _ in tv.test_list:
        (folder / name).write_bytes(pickle.dumps({"data": images.reshape(labels.size, -1), key: labels.tolist()}))
    names = [f"class_{c}" for c in range(n_classes)]
    (folder / tv.meta["filename"]).write_bytes(pickle.dumps({tv.meta["key"]: names}))


def decode(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(label, id) from the first three pixels of raw [0, 1] images."""
    px = np.rint(x.reshape(x.shape[0], -1)[:, :3].numpy() * 255).astype(np.int64)
    return px[:, 0], px[:, 1] + 256 * px[:, 2]


def check_long_tailed_images(dm, shape, n_classes, ratio, n_val, n_test):
    s = dm.load()
    info = dm.info
    assert info.input_shape == shape and info.num_classes == n_classes and info.task == "multiclass"
    n_max = info.extra["n_max"]
    assert info.class_counts == exp_profile(n_max, n_classes, ratio)
    assert torch.bincount(s.y_val, minlength=n_classes).tolist() == [n_val] * n_classes
    assert torch.bincount(s.y_test, minlength=n_classes).tolist() == [n_test] * n_classes
    ids = {}
    for split in ("train", "val", "test"):
        x, y = getattr(s, f"x_{split}"), getattr(s, f"y_{split}")
        assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        label, ident = decode(x)
        assert np.array_equal(label, y.numpy())  # images read, scaled and labelled correctly
        ids[split] = set(ident.tolist())
        assert len(ids[split]) == x.shape[0]
    assert not ids["train"] & ids["val"]  # val is held out of the training pool
    return s


def test_mnist_lt_from_idx_files(tmp_path):
    write_mnist(tmp_path, "MNIST", [20] * 10, [8 + c % 3 for c in range(10)])
    dm = MNISTLT(data_dir=str(tmp_path), imbalance_ratio=6, n_val_per_class=2, seed=0)
    check_long_tailed_images(dm, (1, 28, 28), 10, 6, n_val=2, n_test=8)  # test balanced to the smallest class
    assert dm.info.extra["n_max"] == 18
    assert dm.info.extra["class_names"][0] == torchvision.datasets.MNIST.classes[0]
    x_tr, _ = dm.tensors("train")
    mean = x_tr.mean(dim=(0, 2, 3))
    assert abs(float(mean)) < 1e-5  # per-channel standardisation on train
    assert abs(float(x_tr.std(unbiased=False)) - 1) < 1e-4


def test_fashion_mnist_lt_from_idx_files(tmp_path):
    write_mnist(tmp_path, "FashionMNIST", [12] * 10, [4] * 10)
    dm = FashionMNISTLT(data_dir=str(tmp_path), imbalance_ratio=10, n_val_per_class=2, seed=1)
    check_long_tailed_images(dm, (1, 28, 28), 10, 10, n_val=2, n_test=4)
    assert dm.info.extra["class_names"][-1] == "Ankle boot"


@pytest.mark.slow
def test_cifar10_lt_from_python_batches(tmp_path):
    write_cifar(tmp_path, 10, train_per_class=20, test_per_class=6)
    dm = CIFAR10LT(data_dir=str(tmp_path), imbalance_ratio=9, n_val_per_class=2, verify_md5=False, seed=0)
    s = check_long_tailed_images(dm, (3, 32, 32), 10, 9, n_val=2, n_test=6)
    assert dm.info.extra["class_names"] == [f"class_{c}" for c in range(10)]
    # channel-major layout kept: channel 0 row 0 holds the id pixels, and channel statistics
    x_tr, _ = dm.tensors("train")
    torch.testing.assert_close(x_tr.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x_tr.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    raw_channel_mean = s.x_train.mean(dim=(0, 2, 3)).double()
    expected = (s.x_val.double() - raw_channel_mean[:, None, None]) / s.x_train.double().std(
        dim=(0, 2, 3), unbiased=False
    )[:, None, None]
    torch.testing.assert_close(dm.tensors("val")[0], expected.float(), atol=1e-4, rtol=1e-4)
    again = CIFAR10LT(data_dir=str(tmp_path), imbalance_ratio=9, n_val_per_class=2, verify_md5=False, seed=0)
    other = CIFAR10LT(data_dir=str(tmp_path), imbalance_ratio=9, n_val_per_class=2, verify_md5=False, seed=1)
    assert torch.equal(again.tensors("train")[0], x_tr)
    assert not torch.equal(other.tensors("train")[1], dm.tensors("train")[1])


def test_cifar_md5_check_refuses_unofficial_files(tmp_path):
    # torchvision publishes the MD5 of the official files; our tiny files cannot match it
    write_cifar(tmp_path, 10, train_per_class=4, test_per_class=2)
    dm = CIFAR10LT(data_dir=str(tmp_path), imbalance_ratio=2, n_val_per_class=1)
    with pytest.raises(DataError, match="MD5.*verify_md5=false"):
        dm.setup()


def test_cifar100_lt_fine_labels(tmp_path):
    write_cifar(tmp_path, 100, train_per_class=6, test_per_class=2)
    dm = CIFAR100LT(data_dir=str(tmp_path), imbalance_ratio=5, n_val_per_class=1, verify_md5=False, seed=0)
    check_long_tailed_images(dm, (3, 32, 32), 100, 5, n_val=1, n_test=2)
    assert dm.info.class_counts[0] == 5 and dm.info.class_counts[-1] == 1


@pytest.mark.parametrize("cls", [MNISTLT, FashionMNISTLT, CIFAR10LT, CIFAR100LT])
def test_missing_vision_data_without_download(cls, tmp_path):
    dm = cls(data_dir=str(tmp_path / "empty"), download=False)
    with pytest.raises(DataError) as err:
        dm.setup()
    msg = str(err.value)
    assert str(tmp_path / "empty") in msg and "data.download=true" in msg and "data.data_dir" in msg
    assert not (tmp_path / "empty").exists()  # nothing was created or fetched


def test_vision_n_max_too_large_is_a_data_error(tmp_path):
    write_mnist(tmp_path, "MNIST", [10] * 10, [3] * 10)
    with pytest.raises(DataError, match="training split needs 50 samples"):
        MNISTLT(data_dir=str(tmp_path), n_max=50, imbalance_ratio=2, n_val_per_class=2).setup()


# =========================================================================== user tables
def table(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n) * 10 + 3
    color = rng.choice(["red", "green", "blue"], size=n)
    return pd.DataFrame(
        {
            "a": a,
            "b": b,
            "color": color,
            "price": 2 * a - b + rng.normal(size=n),
            "kind": np.where(a > 0.3, "cat", np.where(a < -0.3, "dog", "eel")),
            "flag": (b > 3).astype(int),
            "stars": rng.integers(1, 6, size=n),
        }
    )


def write_csv(tmp_path: Path, df: pd.DataFrame, name: str = "t.csv") -> str:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return str(path)


def test_csv_regression_with_onehot_categories(tmp_path):
    df = table()
    path = write_csv(tmp_path, df[["a", "b", "color", "price"]])
    dm = TabularData(path=path, target="price", seed=0)
    info = dm.info
    assert info.task == "regression" and info.objective == "rmse"
    assert info.input_shape == (2 + 3,)
    assert info.extra["features"] == ["a", "b", "color=blue", "color=green", "color=red"]
    s = dm.load()
    onehot = s.x_train[:, 2:]
    assert torch.all(onehot.sum(1) == 1)
    # the rows are the file's rows: rebuild each from its numbers and compare the colour and target
    lookup = {(np.float32(r.a), np.float32(r.b)): (r.color, np.float32(r.price)) for r in df.itertuples()}
    names = ["blue", "green", "red"]
    for x, y in zip(s.x_test.numpy(), s.y_test.numpy()):
        color, price = lookup[(x[0], x[1])]
        assert names[int(np.argmax(x[2:]))] == color and price == y
    x_tr, _ = dm.tensors("train")
    torch.testing.assert_close(x_tr.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    assert info.outlier_fraction is not None and info.outlier_fraction < 0.05
    ordinal = TabularData(path=path, target="price", categorical="ordinal")
    assert ordinal.info.input_shape == (3,)
    assert sorted(ordinal.load().x_train[:, 2].unique().tolist()) == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    "target, task, n_classes",
    [("kind", "multiclass", 3), ("flag", "binary", 2), ("stars", "multiclass", 5), ("price", "regression", None)],
)
def test_csv_auto_task(tmp_path, target, task, n_classes):
    df = table()
    path = write_csv(tmp_path, df[["a", "b", target]])
    dm = TabularData(path=path, target=target, seed=0)
    info = dm.info
    assert info.task == task and info.num_classes == n_classes
    if n_classes:
        assert info.objective == "balanced_accuracy" and info.objective_mode == "max"
        names = info.extra["class_names"]
        assert names == sorted(df[target].unique().tolist())
        s = dm.load()
        lookup = {np.float32(r.a): getattr(r, target) for r in df.itertuples()}
        assert all(names[int(y)] == lookup[x[0]] for x, y in zip(s.x_train.numpy(), s.y_train))
        assert sum(info.class_counts) == info.n_train


def test_csv_explicit_task_overrides_auto(tmp_path):
    path = write_csv(tmp_path, table()[["a", "b", "stars"]])
    assert TabularData(path=path, target="stars", task="regression").info.task == "regression"
    assert TabularData(path=path, target="stars", features=["a"]).info.input_shape == (1,)


def test_parquet_round_trip(tmp_path):
    df = table()
    csv = write_csv(tmp_path, df)
    pq = tmp_path / "t.parquet"
    df.to_parquet(pq, index=False)
    a = TabularData(path=csv, target="kind", seed=3)
    b = TabularData(path=str(pq), target="kind", seed=3)
    for split in ("train", "val", "test"):
        torch.testing.assert_close(a.tensors(split)[0], b.tensors(split)[0])
        assert torch.equal(a.tensors(split)[1], b.tensors(split)[1])
    assert a.info.extra["class_names"] == b.info.extra["class_names"] == ["cat", "dog", "eel"]
    c = TabularData(path=csv, target="kind", seed=4)
    assert not torch.equal(a.tensors("train")[1], c.tensors("train")[1])


def _csv_error(tmp_path, text: str | None, message: str, **kw) -> None:
    path = tmp_path / kw.pop("name", "bad.csv")
    if text is not None:
        path.write_text(text)
    kw.setdefault("target", "y")
    with pytest.raises(DataError, match=message):
        TabularData(path=str(path), **kw).setup()


def test_csv_errors(tmp_path):
    _csv_error(tmp_path, None, "no file .*missing.csv", name="missing.csv")
    _csv_error(tmp_path, "", "is empty")
    _csv_error(tmp_path, "a,y\n", "no data rows")
    _csv_error(
        tmp_path, "a,price\n1,2\n3,4\n", r"no column 'prices'.*Did you mean 'price'.*Columns: a, price", target="prices"
    )
    _csv_error(tmp_path, "a,b,y\n1,,0.5\n2,3,1.5\n4,,2.5\n", r"column 'b' has 2 missing value\(s\) \(rows 0, 2\)")
    _csv_error(tmp_path, "a,y\n1,0.5\ninf,1.5\n", r"column 'a' has 1 infinite value\(s\) \(rows 1\)")
    _csv_error(tmp_path, "a,y\n1,0.5\n2,\n", r"column 'y' has 1 missing")
    _csv_error(tmp_path, "a,y\n1,x\n2,z\n3,x\n", "needs a numeric target.*'x'", task="regression")
    _csv_error(tmp_path, "a,y\n1,x\n2,x\n3,x\n", "single class")
    _csv_error(tmp_path, "a,y\n1,x\n2,z\n3,w\n", "exactly two classes", task="binary")
    _csv_error(tmp_path, "a,y\n1,0.5\n2,1.5\n", "no column 'c'.*Columns: a, y", features=["c"])
    _csv_error(tmp_path, "a,y\n1,0.5\n2,1.5\n", "must not contain the target", features=["a", "y"])
    ids = "\n".join(f"id{i},{i}.5" for i in range(60))
    _csv_error(tmp_path, "a,y\n" + ids + "\n", "60 distinct values.*max_categories")
    _csv_error(tmp_path, "a,y\n1,0.5\n", "unsupported extension", name="t.xlsx")
    with pytest.raises(DataError, match="data.target is required"):
        TabularData(path="x.csv")
    with pytest.raises(DataError, match="'auto', 'regression', 'multiclass', 'binary'"):
        TabularData(path="x.csv", target="y", task="ranking")

"""Label noise on every classification dataset (lossbench.data.base.flip_labels and TensorDataModule).

Each dataset is built twice at one seed, clean and noisy: the flips are read off by comparing
the two training splits, which share their order (the noise is drawn after the split).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lossbench.data.base import flip_labels
from lossbench.data.sklearn_sets import BreastCancer, DigitsLT
from lossbench.data.synthetic import ImbalancedClassification, RegressionOutliers
from lossbench.data.tabular import TabularData
from lossbench.data.vision import CIFAR10LT, MNISTLT
from lossbench.errors import DataError

from test_data_real import table, write_cifar, write_csv, write_mnist


def _digits(**kw):
    return DigitsLT(**kw)


def _breast(**kw):
    return BreastCancer(**kw)


def _imbalanced(**kw):
    return ImbalancedClassification(n_max=200, **kw)


def _csv_factory(tmp_path):
    df = table(300, seed=1)
    path = write_csv(tmp_path, df)
    return lambda **kw: TabularData(path=path, target="kind", task="multiclass", **kw)


def _mnist_factory(tmp_path):
    write_mnist(tmp_path, "MNIST", [60] * 10, [20] * 10)
    return lambda **kw: MNISTLT(data_dir=str(tmp_path), imbalance_ratio=5.0, n_val_per_class=5, **kw)


def _cifar_factory(tmp_path):
    write_cifar(tmp_path, 10, 40, 10)
    return lambda **kw: CIFAR10LT(data_dir=str(tmp_path), imbalance_ratio=4.0, n_val_per_class=5, verify_md5=False, **kw)


FACTORIES = {
    "digits_lt": lambda tmp: _digits,
    "breast_cancer": lambda tmp: _breast,
    "imbalanced": lambda tmp: _imbalanced,
    "csv": _csv_factory,
    "mnist_lt": _mnist_factory,
    "cifar10_lt": _cifar_factory,
}


def _labels(dm, split):
    return dm.tensors(split)[1].cpu()


@pytest.mark.parametrize("noise_type", ["symmetric", "pairflip"])
@pytest.mark.parametrize("name", list(FACTORIES))
def test_every_classification_set_flips_its_training_labels_only(name, noise_type, tmp_path):
    make = FACTORIES[name](tmp_path)
    clean = make(seed=3)
    noisy = make(seed=3, label_noise=0.3, noise_type=noise_type)
    again = make(seed=3, label_noise=0.3, noise_type=noise_type)
    other = make(seed=4, label_noise=0.3, noise_type=noise_type)
    yc, yn = _labels(clean, "train"), _labels(noisy, "train")
    assert torch.equal(clean.tensors("train")[0], noisy.tensors("train")[0])  # same inputs, same order
    flipped = yn != yc
    n = yc.numel()
    # exactly round(0.3 n) labels flip, each to another class; DataInfo says how many
    assert int(flipped.sum()) == round(0.3 * n)
    assert noisy.info.label_noise == pytest.approx(int(flipped.sum()) / n)
    assert abs(noisy.info.label_noise - 0.3) <= 0.5 / n + 1e-12  # a whole number of samples
    assert noisy.info.extra["n_flipped_labels"] == int(flipped.sum())
    c = noisy.info.num_classes
    if noise_type == "pairflip":
        assert torch.equal(yn[flipped], (yc[flipped] + 1) % c)
    # the observed (noisy) labels are what the losses see
    assert noisy.info.class_counts == torch.bincount(yn, minlength=c).tolist()
    # validation and test stay clean
    for split in ("val", "test"):
        assert torch.equal(_labels(clean, split), _labels(noisy, split))
        assert torch.equal(clean.tensors(split)[0], noisy.tensors(split)[0])
    # the same seed flips the same labels; another seed other ones
    assert torch.equal(_labels(again, "train"), yn)
    assert not torch.equal(_labels(other, "train") != _labels(make(seed=4), "train"), flipped)
    # a clean dataset reports what it did before: no noise measured except on imbalanced
    assert clean.info.label_noise == (0.0 if name == "imbalanced" else None)


def test_symmetric_noise_reaches_every_other_class_evenly_and_never_the_same():
    y = np.repeat(np.arange(5), 4000)
    noisy, n_flip = flip_labels(y, 0.5, "symmetric", 5, np.random.default_rng(0))
    assert n_flip == 10_000 and int((noisy != y).sum()) == n_flip
    changed = noisy != y
    for k in range(5):
        dest = noisy[changed & (y == k)]
        assert k not in dest
        share = np.bincount(dest, minlength=5)[[j for j in range(5) if j != k]] / dest.size
        assert np.all(np.abs(share - 0.25) < 0.03), share  # uniform over the 4 other classes
    assert np.array_equal(np.bincount(y), [4000] * 5)  # the input is not written to


def test_pairflip_moves_k_to_k_plus_one_mod_c_and_binary_noise_is_a_swap():
    y = np.arange(7).repeat(10)
    noisy, n_flip = flip_labels(y, 1 / 3, "pairflip", 7, np.random.default_rng(1))
    changed = noisy != y
    assert n_flip == changed.sum() == 23
    assert np.array_equal(noisy[changed], (y[changed] + 1) % 7)
    yb = np.array([0, 1] * 50)
    for kind in ("symmetric", "pairflip"):
        nb, k = flip_labels(yb, 0.2, kind, 2, np.random.default_rng(2))
        assert k == 20 and np.array_equal(nb[nb != yb], 1 - yb[nb != yb])


def test_no_noise_leaves_the_labels_and_the_random_stream_alone():
    y = np.arange(10)
    noisy, n_flip = flip_labels(y, 0.0, "pairflip", 10, np.random.default_rng(0))
    assert n_flip == 0 and np.array_equal(noisy, y)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"label_noise": 1.0}, r"data\.label_noise must be a float in \[0, 1\)"),
        ({"label_noise": -0.1}, r"data\.label_noise must be a float in \[0, 1\)"),
        ({"noise_type": "asymmetric"}, r"data\.noise_type must be one of .*symmetric.*pairflip"),
    ],
)
def test_bad_noise_settings_are_one_line_errors(kw, message):
    with pytest.raises(DataError, match=message):
        DigitsLT(**kw)


def test_label_noise_on_regression_targets_is_refused_with_the_fix(tmp_path):
    path = write_csv(tmp_path, table(120))
    with pytest.raises(DataError, match=r"regression.*data\.label_noise=0"):
        TabularData(path=path, target="price", task="regression", label_noise=0.1)
    auto = TabularData(path=path, target="price", label_noise=0.1)  # the task is only known once read
    with pytest.raises(DataError, match=r"regression task; set data\.label_noise=0"):
        auto.setup()
    assert "label_noise" not in RegressionOutliers.__init__.__code__.co_varnames  # not offered where meaningless

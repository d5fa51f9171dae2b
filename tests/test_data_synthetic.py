"""Synthetic datasets: regression with outliers, imbalanced classification."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LinearRegression

from lossbench.data.synthetic import ImbalancedClassification, RegressionOutliers, robust_outlier_fraction
from lossbench.errors import DataError

NOISE = 0.3


def residuals(dm: RegressionOutliers, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return (y - dm.clean_target(x)).numpy()


# --------------------------------------------------------------------------- outlier measure
def test_robust_outlier_fraction_hand_worked():
    # median 0, |deviations| = 0,1,1,2,2,50 -> MAD = 1.5, robust sd = 2.2239, cut = 7.78: only 50 is out
    r = np.array([0.0, -1.0, 1.0, -2.0, 2.0, 50.0])
    assert robust_outlier_fraction(r) == pytest.approx(1 / 6)
    assert robust_outlier_fraction(np.zeros(5)) == 0.0
    assert robust_outlier_fraction(np.array([0.0, 0.0, 0.0, 5.0])) == pytest.approx(0.25)  # MAD 0


def test_robust_outlier_fraction_of_gaussian_matches_its_tail():
    z = np.random.default_rng(0).standard_normal(400_000)
    expected = 2 * stats.norm.sf(3.5)  # 4.65e-4
    assert robust_outlier_fraction(z) == pytest.approx(expected, rel=0.15)


# --------------------------------------------------------------------------- regression with outliers
@pytest.mark.parametrize("kind", ["y_gross", "y_one_sided", "x_leverage"])
@pytest.mark.parametrize("nonlinear", [False, True])
def test_outliers_only_in_train(kind, nonlinear):
    dm = RegressionOutliers(outlier_type=kind, nonlinear=nonlinear, noise=NOISE, outlier_fraction=0.1, seed=1)
    s = dm.load()
    assert s.x_train.shape == (1200, 10) and s.x_val.shape == (400, 10) and s.x_test.shape == (400, 10)
    n_out = s.extra["n_injected_outliers"]
    assert n_out == 120 and s.extra["injected_outlier_fraction"] == pytest.approx(0.1)
    # clean splits: Gaussian noise only (max of 400 |N(0, 0.3)| is far below 6 sd)
    for x, y in ((s.x_val, s.y_val), (s.x_test, s.y_test)):
        r = residuals(dm, x, y)
        assert np.abs(r).max() < 6 * NOISE
        assert np.std(r) == pytest.approx(NOISE, rel=0.15)
    # train: the injected errors are at least outlier_scale / 2 = 5 clean-signal sd, the clean rows tiny
    r_tr = residuals(dm, s.x_train, s.y_train)
    big = np.abs(r_tr) > 2.0
    assert big.sum() == n_out
    if kind == "y_one_sided":
        assert np.all(r_tr[big] > 0)
    if kind == "x_leverage":
        norms = s.x_train.norm(dim=1).numpy()
        assert norms[big].min() > norms[~big].max() * 0.9  # moved far out
        assert np.unique(np.sign(r_tr[big])).size == 1  # one cluster, one sign
    info = dm.info
    assert info.outlier_fraction == pytest.approx(0.1, abs=0.01)
    assert info.task == "regression" and info.objective == "rmse" and info.objective_mode == "min"
    assert info.extra["outlier_type"] == kind


def test_clean_split_fits_a_linear_model_to_the_noise_level():
    # independent of the generator: ordinary least squares on the clean test split
    s = RegressionOutliers(noise=NOISE, seed=2).load()
    x, y = s.x_test.numpy(), s.y_test.numpy()
    fit = LinearRegression().fit(x, y)
    assert np.std(y - fit.predict(x)) == pytest.approx(NOISE, rel=0.15)
    s_nl = RegressionOutliers(noise=NOISE, nonlinear=True, seed=2).load()
    x, y = s_nl.x_test.numpy(), s_nl.y_test.numpy()
    fit = LinearRegression().fit(x, y)
    assert np.std(y - fit.predict(x)) > 2 * NOISE  # the nonlinear function is not linear
    signal = RegressionOutliers(nonlinear=True, seed=2).clean_target(s_nl.x_test).numpy()
    assert np.std(signal) == pytest.approx(1, rel=0.2)  # the clean signal has unit scale


def test_heavy_tail_measures_the_student_t_tail():
    df = 2.0
    dm = RegressionOutliers(outlier_type="heavy_tail", df=df, noise=NOISE, n_samples=5000, seed=3)
    s = dm.load()
    assert s.extra["injected_outlier_fraction"] is None and s.extra["df"] == df
    # share of a t(df) sample beyond 3.5 * 1.4826 * MAD of t(df) (MAD = its 75% quantile)
    cut = 3.5 * 1.4826 * stats.t.ppf(0.75, df)
    expected = 2 * stats.t.sf(cut, df)
    n = s.x_train.shape[0]
    assert dm.info.outlier_fraction == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / n))
    assert np.abs(residuals(dm, s.x_test, s.y_test)).max() < 6 * NOISE  # test stays Gaussian


def test_no_outliers_measures_almost_none():
    info = RegressionOutliers(outlier_fraction=0.0, seed=4).info
    assert info.outlier_fraction < 0.01 and info.extra["n_injected_outliers"] == 0


def test_regression_normalisation_and_seeds():
    dm = RegressionOutliers(seed=5)
    x_tr, y_tr = dm.tensors("train")
    x_va, _ = dm.tensors("val")
    torch.testing.assert_close(x_tr.mean(0), torch.zeros(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(x_tr.std(0, unbiased=False), torch.ones(10), atol=1e-5, rtol=0)
    assert x_va.mean(0).abs().max() > 1e-3
    assert dm.info.target_normalize == "robust"
    assert float(y_tr.median()) == pytest.approx(0.0, abs=0.01)
    same = RegressionOutliers(seed=5)
    other = RegressionOutliers(seed=6)
    for split in ("train", "val", "test"):
        assert torch.equal(dm.tensors(split)[0], same.tensors(split)[0])
        assert torch.equal(dm.tensors(split)[1], same.tensors(split)[1])
        assert not torch.equal(dm.tensors(split)[1], other.tensors(split)[1])


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"outlier_type": "gross"}, "'y_gross', 'y_one_sided', 'heavy_tail', 'x_leverage'"),
        ({"outlier_fraction": 0.5}, r"data.outlier_fraction must be a float in \[0, 0.5\). Got 0.5 instead."),
        ({"outlier_fraction": 0.6}, "outlier_fraction"),
        ({"outlier_fraction": -0.1}, "outlier_fraction"),
        ({"noise": -1.0}, "noise"),
        ({"df": 0.0}, r"data.df must be a float in \(0, inf\). Got 0.0 instead."),
        ({"n_samples": 5}, "data.n_samples must be an integer >= 10. Got 5 instead."),
        ({"n_samples": True}, "n_samples"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction"),
    ],
)
def test_regression_bad_parameters(kw, message):
    with pytest.raises(DataError, match=message):
        RegressionOutliers(**kw)


def test_regression_train_loader_epoch():
    dm = RegressionOutliers(batch_size=256, seed=0)
    loader = dm.train_dataloader()
    x_all, y_all = dm.tensors("train")
    seen = [yb for _, yb in loader]
    assert [b.shape[0] for b in seen] == [256] * 4 + [1200 - 1024]
    got = torch.cat(seen)
    assert torch.equal(got.sort().values, y_all.sort().values)
    assert not torch.equal(got, y_all)
    dm.to_device("cpu")
    assert sum(b.shape[0] for b, _ in dm.train_dataloader()) == 1200


# --------------------------------------------------------------------------- imbalanced
# exp profile by hand: 500 * 0.01 ** (c / 9) = 500, 299.7, 179.7, 107.7, 64.6, 38.7, 23.2, 13.9, 8.3, 5
EXP_500_100 = [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]


def test_imbalanced_exp_profile_and_balanced_test():
    dm = ImbalancedClassification(seed=0)
    info = dm.info
    assert info.class_counts == EXP_500_100
    assert info.imbalance_ratio == pytest.approx(100.0)
    assert info.num_classes == 10 and info.task == "multiclass"
    assert info.objective == "balanced_accuracy" and info.objective_mode == "max"
    assert info.input_shape == (20,)
    _, y_te = dm.tensors("test")
    _, y_va = dm.tensors("val")
    assert torch.bincount(y_te, minlength=10).tolist() == [100] * 10
    assert torch.bincount(y_va, minlength=10).tolist() == [50] * 10
    assert info.label_noise == 0.0


def test_imbalanced_splits_are_disjoint():
    s = ImbalancedClassification(seed=1).load()
    rows = {tuple(r) for r in s.x_train.numpy().round(6)}
    assert not rows & {tuple(r) for r in s.x_test.numpy().round(6)}
    assert not rows & {tuple(r) for r in s.x_val.numpy().round(6)}


def test_imbalanced_step_profile_and_natural_test():
    dm = ImbalancedClassification(profile="step", n_max=200, imbalance_ratio=10, test_distribution="natural",
                                  n_test_per_class=40, seed=0)  # fmt: skip
    assert dm.info.class_counts == [200] * 5 + [20] * 5
    assert torch.bincount(dm.tensors("test")[1], minlength=10).tolist() == [40] * 5 + [4] * 5
    assert torch.bincount(dm.tensors("val")[1], minlength=10).tolist() == [50] * 10


def test_label_noise_flips_the_stated_fraction():
    clean = ImbalancedClassification(seed=2, label_noise=0.0).load()
    dm = ImbalancedClassification(seed=2, label_noise=0.2)
    noisy = dm.load()
    assert torch.equal(clean.x_train, noisy.x_train)  # same samples, only labels changed
    assert torch.equal(clean.y_test, noisy.y_test) and torch.equal(clean.y_val, noisy.y_val)
    n = clean.y_train.numel()
    flipped = clean.y_train != noisy.y_train
    assert int(flipped.sum()) == round(0.2 * n)
    assert dm.info.label_noise == pytest.approx(int(flipped.sum()) / n)
    assert dm.info.extra["clean_class_counts"] == EXP_500_100
    assert sum(dm.info.class_counts) == n
    # flipped labels land on every class, not only on neighbours of the true one
    assert set(noisy.y_train[flipped].tolist()) == set(range(10))


def test_imbalanced_two_classes_is_binary_and_seeds_differ():
    dm = ImbalancedClassification(n_classes=2, imbalance_ratio=10, n_max=100, seed=0)
    assert dm.info.task == "binary" and dm.info.class_counts == [100, 10]
    a = ImbalancedClassification(seed=3).tensors("train")
    b = ImbalancedClassification(seed=3).tensors("train")
    c = ImbalancedClassification(seed=4).tensors("train")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"profile": "linear"}, "data.profile must be one of 'exp', 'step'. Got 'linear' instead."),
        ({"test_distribution": "uniform"}, "'balanced', 'natural'"),
        ({"val_distribution": "uniform"}, "data.val_distribution"),
        ({"label_noise": 1.0}, r"data.label_noise must be a float in \[0, 1\). Got 1.0 instead."),
        ({"n_informative": 3}, "n_informative"),
        ({"n_max": 50, "imbalance_ratio": 100}, "smallest class"),
        ({"n_classes": 1}, "n_classes"),
    ],
)
def test_imbalanced_bad_parameters(kw, message):
    with pytest.raises(DataError, match=message):
        ImbalancedClassification(**kw)

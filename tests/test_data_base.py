"""The DataModule contract (lossbench.data.base), the long-tail helpers and the data configs."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lossbench.data.base import (
    Splits,
    TensorBatches,
    TensorDataModule,
    check_split_fractions,
    split_indices,
    stratified_split_indices,
)
from lossbench.data.longtail import long_tail_counts, sample_per_class, scaled_counts
from lossbench.errors import DataError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "data"


class ArraySet(TensorDataModule):
    """A dataset made of given tensors: tests the base class on its own."""

    name = "arrays"

    def __init__(self, splits: Splits, task: str = "regression", traits: dict | None = None, **kw):
        super().__init__(**kw)
        self.task = task
        self._splits = splits
        self._traits = traits or {}

    def load(self) -> Splits:
        return self._splits

    def traits(self, splits: Splits) -> dict:
        return dict(self._traits)


def regression_splits(seed: int = 0, n: int = 300, d: int = 4) -> Splits:
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0, 10.0, 0.1, 1000.0])[:d]
    shift = torch.tensor([5.0, -3.0, 100.0, 1e5])[:d]

    def draw(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(m, d, generator=g) * scale + shift
        return x, x[:, 0] * 3.0 + 7.0 + torch.randn(m, generator=g)

    return Splits(*draw(n), *draw(n // 3), *draw(n // 3))


# --------------------------------------------------------------------------- normalisation
def test_standard_normalisation_is_fit_on_train_only():
    s = regression_splits()
    dm = ArraySet(s, normalize="standard")
    x_tr, _ = dm.tensors("train")
    x_va, _ = dm.tensors("val")
    torch.testing.assert_close(x_tr.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(x_tr.std(0, unbiased=False), torch.ones(4), atol=1e-5, rtol=0)
    # val is transformed with the training statistics, so it is not exactly standardised
    expected_val = (s.x_val.double() - s.x_train.double().mean(0)) / s.x_train.double().std(0, unbiased=False)
    torch.testing.assert_close(x_va, expected_val.float(), atol=1e-5, rtol=1e-5)
    assert x_va.mean(0).abs().max() > 1e-3


def test_robust_and_minmax_normalisation_match_numpy():
    s = regression_splits()
    raw = s.x_train.double().numpy()
    x_rob, _ = ArraySet(s, normalize="robust").tensors("train")
    q1, med, q3 = np.percentile(raw, [25, 50, 75], axis=0)
    np.testing.assert_allclose(x_rob.numpy(), (raw - med) / (q3 - q1), rtol=1e-5, atol=1e-5)
    x_mm, _ = ArraySet(s, normalize="minmax").tensors("train")
    np.testing.assert_allclose(x_mm.numpy().min(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(x_mm.numpy().max(0), 1.0, atol=1e-6)
    x_none, _ = ArraySet(s, normalize="none").tensors("train")
    torch.testing.assert_close(x_none, s.x_train)


def test_large_offsets_survive_normalisation():
    # feature 3 is 1e5 + 1000 * z: computing in float32 would lose the fraction
    x_tr, _ = ArraySet(regression_splits(), normalize="standard").tensors("train")
    assert abs(float(x_tr[:, 3].mean())) < 1e-4
    assert abs(float(x_tr[:, 3].std(unbiased=False)) - 1.0) < 1e-4


def test_regression_targets_normalised_and_recoverable():
    s = regression_splits()
    dm = ArraySet(s, normalize_target="standard")
    info = dm.info
    _, y_tr = dm.tensors("train")
    _, y_te = dm.tensors("test")
    assert info.target_normalize == "standard"
    assert info.target_shift == pytest.approx(float(s.y_train.double().mean()), rel=1e-9)
    assert info.target_scale == pytest.approx(float(s.y_train.double().std(unbiased=False)), rel=1e-9)
    torch.testing.assert_close(y_te * info.target_scale + info.target_shift, s.y_test, atol=1e-4, rtol=1e-5)
    assert abs(float(y_tr.mean())) < 1e-5


def test_constant_feature_is_left_in_place():
    s = regression_splits()
    s.x_train[:, 2] = 4.0
    x_tr, _ = ArraySet(s).tensors("train")
    assert torch.all(x_tr[:, 2] == 0.0)


# --------------------------------------------------------------------------- DataInfo
def test_info_counts_and_traits_extra_merge():
    g = torch.Generator().manual_seed(1)
    y_tr = torch.tensor([0] * 30 + [1] * 10 + [2] * 3)
    s = Splits(
        torch.randn(43, 2, generator=g), y_tr,
        torch.randn(6, 2, generator=g), torch.tensor([0, 1, 2, 0, 1, 2]),
        torch.randn(6, 2, generator=g), torch.tensor([2, 1, 0, 2, 1, 0]),
        extra={"from_load": 1},
    )  # fmt: skip
    dm = ArraySet(s, task="multiclass", traits={"label_noise": 0.25, "extra": {"from_traits": 2}})
    info = dm.info
    assert info.class_counts == [30, 10, 3]
    assert info.num_classes == 3
    assert info.imbalance_ratio == pytest.approx(10.0)
    assert info.label_noise == 0.25
    assert info.extra == {"from_load": 1, "from_traits": 2}
    assert info.input_shape == (2,)
    assert (info.n_train, info.n_val, info.n_test) == (43, 6, 6)
    assert dm.tensors("train")[1].dtype == torch.int64


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: setattr(s, "x_val", s.x_val[:0]) or setattr(s, "y_val", s.y_val[:0]), "empty"),
        (lambda s: s.x_train.__setitem__((0, 0), float("nan")), "NaN"),
        (lambda s: s.y_test.__setitem__(0, float("inf")), "NaN or infinite"),
        (lambda s: setattr(s, "y_train", s.y_train[:-1]), "targets"),
    ],
)
def test_bad_splits_raise(mutate, message):
    s = regression_splits()
    mutate(s)
    with pytest.raises(DataError, match=message):
        ArraySet(s).setup()


def test_bad_class_labels_raise():
    x = torch.randn(4, 2)
    bad = Splits(x, torch.tensor([0, 1, -1, 0]), x, torch.tensor([0, 1, 0, 1]), x, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(DataError, match="class labels"):
        ArraySet(bad, task="multiclass").setup()
    three = Splits(x, torch.tensor([0, 1, 2, 0]), x, torch.tensor([0, 1, 0, 1]), x, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(DataError, match="0 or 1"):
        ArraySet(three, task="binary").setup()


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"normalize": "zscore"}, "data.normalize must be one of 'standard', 'robust', 'minmax', 'none'. Got 'zscore'"),
        ({"normalize_target": "log"}, "data.normalize_target must be one of"),
        ({"batch_size": 0}, "data.batch_size must be an integer >= 1. Got 0 instead."),
        ({"batch_size": 1.5}, "data.batch_size must be an integer >= 1. Got 1.5 instead."),
        ({"eval_batch_size": "big"}, "data.eval_batch_size must be an integer >= 1"),
    ],
)
def test_bad_base_arguments_raise(kw, message):
    with pytest.raises(DataError, match=re.escape(message)):
        ArraySet(regression_splits(), **kw)


# --------------------------------------------------------------------------- batches
def _epoch(loader) -> tuple[list[int], torch.Tensor]:
    sizes, ys = [], []
    for xb, yb in loader:
        assert xb.shape[0] == yb.shape[0]
        sizes.append(int(xb.shape[0]))
        ys.append(yb)
    return sizes, torch.cat(ys)


def test_tensor_batches_cover_every_sample_once_per_epoch_shuffled():
    x = torch.arange(103, dtype=torch.float32)[:, None]
    y = torch.arange(103)
    loader = TensorBatches(x, y, batch_size=10, shuffle=True, seed=5)
    assert len(loader) == 11
    sizes1, order1 = _epoch(loader)
    sizes2, order2 = _epoch(loader)
    assert sizes1 == sizes2 == [10] * 10 + [3]
    assert sorted(order1.tolist()) == sorted(order2.tolist()) == list(range(103))
    assert not torch.equal(order1, order2)  # a new permutation each epoch
    assert not torch.equal(order1, y)
    # same seed: same sequence of epochs
    again = TensorBatches(x, y, batch_size=10, shuffle=True, seed=5)
    assert torch.equal(_epoch(again)[1], order1)


def test_tensor_batches_eval_order_and_drop_last():
    x = torch.arange(25, dtype=torch.float32)[:, None]
    y = torch.arange(25)
    sizes, order = _epoch(TensorBatches(x, y, batch_size=10, shuffle=False, seed=0))
    assert sizes == [10, 10, 5] and torch.equal(order, y)
    dropped = TensorBatches(x, y, batch_size=10, shuffle=True, seed=0, drop_last=True)
    assert len(dropped) == 2
    sizes, order = _epoch(dropped)
    assert sizes == [10, 10] and len(set(order.tolist())) == 20


def test_datamodule_loaders_and_to_device():
    dm = ArraySet(regression_splits(), batch_size=32, eval_batch_size=64)
    train = dm.train_dataloader()
    sizes, _ = _epoch(train)
    assert sizes == [32] * 9 + [12]
    assert _epoch(dm.val_dataloader())[0] == [64, 36]
    x_before = dm.tensors("test")[0].clone()
    dm.to_device("cpu")
    assert dm.tensors("test")[0].device.type == "cpu"
    torch.testing.assert_close(dm.tensors("test")[0], x_before)
    assert dm.train_dataloader() is train  # the loader is kept, pointed at the moved tensors
    assert train.x is dm.tensors("train")[0]


# --------------------------------------------------------------------------- splits
def test_split_indices_partition():
    tr, va, te = split_indices(101, 0.2, 0.1, seed=3)
    assert (len(tr), len(va), len(te)) == (71, 20, 10)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(101))
    assert not np.array_equal(split_indices(101, 0.2, 0.1, seed=4)[2], te)


def test_stratified_split_keeps_group_proportions():
    groups = np.array([0] * 100 + [1] * 40 + [2] * 10 + [3] * 1)
    tr, va, te = stratified_split_indices(groups, 0.2, 0.2, seed=0)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(groups.size))
    assert np.bincount(groups[te], minlength=4).tolist() == [20, 8, 2, 0]
    assert np.bincount(groups[va], minlength=4).tolist() == [20, 8, 2, 0]
    assert np.bincount(groups[tr], minlength=4).tolist() == [60, 24, 6, 1]  # a singleton group stays in train


@pytest.mark.parametrize("val, test", [(0.0, 0.2), (0.2, 1.0), (0.5, 0.5), ("0.1", 0.2)])
def test_bad_split_fractions(val, test):
    with pytest.raises(DataError, match="fraction"):
        check_split_fractions(val, test)


# --------------------------------------------------------------------------- long tail
def test_exp_profile_matches_the_cifar_lt_benchmarks():
    # CIFAR-10-LT and CIFAR-100-LT at imbalance 100 have 12,406 and 10,847 training images
    # (Cao et al., NeurIPS 2019, Table 1 protocol; Cui et al., CVPR 2019).
    c10 = long_tail_counts(5000, 10, 100, "exp")
    assert c10[0] == 5000 and c10[-1] == 50 and sum(c10) == 12406
    c100 = long_tail_counts(500, 100, 100, "exp")
    assert c100[0] == 500 and c100[-1] == 5 and sum(c100) == 10847
    assert all(a >= b for a, b in zip(c10, c10[1:]))


def test_step_profile_and_scaled_counts():
    assert long_tail_counts(200, 5, 10, "step") == [200, 200, 200, 20, 20]
    assert long_tail_counts(200, 4, 1, "exp") == [200] * 4
    assert scaled_counts([500, 50, 5], 100) == [100, 10, 1]


@pytest.mark.parametrize(
    "args, message",
    [
        ((5, 10, 100, "exp"), "smallest class"),
        ((50, 10, 0.5, "exp"), "imbalance_ratio"),
        ((50, 10, 10, "lin"), "profile must be one of 'exp', 'step'. Got 'lin' instead."),
        ((50, 1, 10, "exp"), "n_classes must be an integer >= 2. Got 1 instead."),
    ],
)
def test_bad_profiles(args, message):
    with pytest.raises(DataError, match=message):
        long_tail_counts(*args)


def test_sample_per_class_exact_and_exclusive():
    labels = np.repeat(np.arange(3), 10)
    rng = np.random.default_rng(0)
    first = sample_per_class(labels, [4, 4, 4], rng)
    second = sample_per_class(labels, [6, 3, 1], rng, exclude=first)
    assert np.bincount(labels[second]).tolist() == [6, 3, 1]
    assert not set(first) & set(second)
    with pytest.raises(DataError, match="class 0"):
        sample_per_class(labels, [7, 0, 0], rng, exclude=first)


# --------------------------------------------------------------------------- registry and configs
def config_files() -> list[Path]:
    return sorted(CONFIG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", config_files(), ids=lambda p: p.stem)
def test_every_data_config_instantiates_with_the_class_defaults(path, tmp_path):
    cfg = OmegaConf.load(path)
    assert cfg.name == path.stem
    assert OmegaConf.to_yaml(cfg).count("${seed}") == 1
    root = OmegaConf.create({"seed": 7, "data": cfg})
    if path.stem == "csv":
        table = tmp_path / "t.csv"
        table.write_text("a,b,y\n1,2,0.5\n3,4,1.5\n")
        root.data.path, root.data.target = str(table), "y"
    params = OmegaConf.to_container(root.data, resolve=True)
    name = params.pop("name")
    assert params.pop("objective") is None  # a choice of the run, read by pipeline.build_data
    dm = instantiate(params)
    assert isinstance(dm, TensorDataModule) and dm.name == name and dm.seed == 7
    # every value in the config equals the constructor's default, so Python and CLI agree
    defaults: dict = {}
    for cls in type(dm).__mro__[::-1]:  # subclasses' defaults win
        if "__init__" in vars(cls) and issubclass(cls, TensorDataModule):
            for k, p in inspect.signature(cls.__init__).parameters.items():
                if p.default is not inspect.Parameter.empty:
                    defaults[k] = p.default
    differs = {"_target_", "seed", "path", "target", "data_dir", "download"}
    for key, value in params.items():
        if key in differs:
            continue
        assert key in defaults, f"{path.name}: {key} is not a constructor argument"
        d = defaults[key]
        if d is None and value is not None:  # "None: dataset-specific default": compare the resolved value
            d = getattr(type(dm)(), key)
        same = math.isclose(value, d) if isinstance(d, float) and isinstance(value, (int, float)) else value == d
        assert same, f"{path.name}: {key}={value!r} but the class default is {d!r}"
    if "download" in params:
        assert params["download"] is True  # documented: the CLI downloads on first use


def test_the_same_generated_data_is_built_once_per_process_and_stays_the_same():
    """A sweep's losses at one seed share their data: built once, shared, never altered."""
    from lossbench.data.synthetic import ImbalancedClassification

    a = ImbalancedClassification(seed=11, n_max=120)
    b = ImbalancedClassification(seed=11, n_max=120)
    other = ImbalancedClassification(seed=12, n_max=120)
    xa, ya = a.tensors("train")
    xb, yb = b.tensors("train")
    assert xb is xa and yb is ya and b.info == a.info  # taken from the cache
    assert not torch.equal(other.tensors("train")[0][: len(xa)], xa[: len(other.tensors("train")[0])])
    # what the cache gives equals what generating it again gives
    from lossbench.data import base

    base._SPLITS.clear()
    c = ImbalancedClassification(seed=11, n_max=120)
    xc, yc = c.tensors("train")
    assert xc is not xa and torch.equal(xc, xa) and torch.equal(yc, ya) and c.info == a.info
    # a dataset whose attributes are not plain values is never cached
    d = ImbalancedClassification(seed=11, n_max=120)
    d.note = object()
    assert d._cache_key() is None


# --------------------------------------------------------------------------- the user's table: what its messages say
def _table_error(tmp_path: Path, text: str, **kw) -> str:
    from lossbench.data.tabular import TabularData

    path = tmp_path / kw.pop("name", "t.csv")
    path.write_text(text)
    with pytest.raises(DataError) as err:
        TabularData(path=str(path), target=kw.pop("target", "y"), **kw).setup()
    return str(err.value)


def test_table_messages_name_the_cause_and_a_fix_that_works(tmp_path):
    from lossbench.data.tabular import TabularData

    rows = "".join(f"{i},,,{i % 3},{i}.5\n" for i in range(12))
    msg = _table_error(tmp_path, "a,e1,e2,b,y\n" + rows)
    assert msg == "columns 'e1', 'e2' are empty: none of the 12 rows has a value; drop them from the file, or leave " \
                  "them out with data.features=[a,b]."
    path = tmp_path / "t.csv"  # the fix the message gives reads the file
    assert TabularData(path=str(path), target="y", features=["a", "b"]).info.input_shape == (2,)
    assert "target column 'y' is empty" in _table_error(tmp_path, "a,y\n1,\n2,\n3,\n")
    # too large for float32, in the target too; 3e38 still fits
    assert "'y' has 1 value(s) too large for float32" in _table_error(tmp_path, "a,y\n1,0.5\n2,-4e38\n3,1\n")
    assert TabularData(path=str(_write(tmp_path, "a,y\n1,0.5\n2,3e38\n3,1\n4,2\n5,3\n")), target="y").info.task


def _write(tmp_path: Path, text: str, name: str = "ok.csv") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path / name


def test_a_column_of_mostly_words_stays_categories_and_of_mostly_numbers_is_refused(tmp_path):
    from lossbench.data.tabular import TabularData

    # 20 rows: 17 numbers and 3 words is text with numbers in it (85%): one-hot, as before
    mixed = "".join(f"{w},{i}.5\n" for i, w in enumerate([*(str(k) for k in range(17)), "x", "y", "z"]))
    dm = TabularData(path=str(_write(tmp_path, "c,y\n" + mixed)), target="y", categorical="ordinal")
    assert dm.info.input_shape == (1,)
    # 19 numbers and one 'n/a' typo: refused, with the value and its row
    typo = "".join(f"{w},{i}.5\n" for i, w in enumerate([*(str(k) for k in range(19)), "n/a?"]))
    msg = _table_error(tmp_path, "c,y\n" + typo)
    assert "holds numbers except 1 value(s) that are not numbers ('n/a?'; rows 19)" in msg
    assert "max_categories" not in msg


def test_the_separator_by_name_character_or_escape(tmp_path):
    from lossbench.data.tabular import TabularData

    tab = _write(tmp_path, "a\tb\ty\n" + "".join(f"{i}\t{i * 2}\t{i}.5\n" for i in range(10)), "tab.csv")
    msg = _table_error(tmp_path, tab.read_text(), name="tab.csv")
    assert "looks separated by '\\t', not ','" in msg and "data.sep=tab" in msg
    for sep in ("tab", "\t", "\\t"):  # \t as typed on a command line arrives as backslash-t
        assert TabularData(path=str(tab), target="y", sep=sep).info.input_shape == (2,)
    piped = _write(tmp_path, "a|y\n1|2.5\n3|4.5\n5|6.5\n7|8.5\n9|1.5\n", "p.txt")
    assert TabularData(path=str(piped), target="y", sep="pipe").info.input_shape == (1,)
    # a wrong one given explicitly: the hint names the right one
    assert "looks separated by ',', not ';'" in _table_error(tmp_path, "a,y\n1,2\n", sep=";")
    with pytest.raises(DataError, match="data.sep must be a column separator"):
        TabularData(path="x.csv", target="y", sep="")


def test_a_guessed_task_tells_the_loss_check_what_to_set(tmp_path):
    from lossbench import create_loss
    from lossbench.data.tabular import TabularData

    ratings = _write(tmp_path, "a,y\n" + "".join(f"{i},{i % 5 + 1}\n" for i in range(40)), "r.csv")
    with pytest.raises(Exception, match=r"set data.task=regression \(data.task=auto read its 5 whole-number"):
        create_loss("huber", context=TabularData(path=str(ratings), target="y").info)
    counts = _write(tmp_path, "a,y\n" + "".join(f"{i},{i}\n" for i in range(40)), "c.csv")
    with pytest.raises(Exception, match=r"set data.task=multiclass \(.*more than data.max_auto_classes=20\)"):
        create_loss("cross_entropy", context=TabularData(path=str(counts), target="y").info)
    # told the task, nothing is guessed and nothing is hinted
    info = TabularData(path=str(ratings), target="y", task="multiclass").info
    assert "task_hints" not in info.extra

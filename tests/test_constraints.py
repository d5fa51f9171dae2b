"""lossbench.constraints: the words each constraint uses, what it takes, and the one message format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lossbench.constraints import BOOL, STRING, Counts, Interval, ListOf, Options
from lossbench.errors import DataError, ParameterError


@pytest.mark.parametrize(
    "constraint, words",
    [
        (Interval(float, 0, None, "neither"), "a float in (0, inf)"),
        (Interval(float, 0), "a float in [0, inf)"),
        (Interval(float, 0, 1, "left"), "a float in [0, 1)"),
        (Interval(float, 0, 1, "right"), "a float in (0, 1]"),
        (Interval(float, -math.inf, 2), "a float in [-inf, 2]"),
        (Interval(float, 1e-5, 0.5), "a float in [1e-05, 0.5]"),
        (Interval(float), "a float"),
        (Interval(int), "an int"),
        (Interval(int, 1), "an integer >= 1"),
        (Interval(int, 0, None, "neither"), "an int in (0, inf)"),
        (Interval(int, 1, 10), "an int in [1, 10]"),
        (Options("mean", "sum", "none"), "one of 'mean', 'sum', 'none'"),
        (BOOL, "a bool"),
        (STRING, "a string"),
        (ListOf(Interval(float, 0)), "a list of floats in [0, inf)"),
        (ListOf(Interval(int, 1), length=2), "a list of 2 integers >= 1"),
        (ListOf(Interval(float, 0), scalar=True, per_class=True), "a float or a list of floats (one per class) in [0, inf)"),
        (Counts(), "a list of class counts (non-negative numbers, one per class)"),
    ],
)
def test_each_constraint_describes_itself(constraint, words):
    assert constraint.describe() == words


def test_the_message_names_owner_parameter_rule_and_value():
    with pytest.raises(ParameterError) as e:
        Interval(float, 0, None, "neither").check("delta", -1, owner="huber")
    assert str(e.value) == "The 'delta' parameter of huber must be a float in (0, inf). Got -1 instead."
    with pytest.raises(ParameterError) as e:
        Interval(int, 1).check("trainer.max_epochs", 0)
    assert str(e.value) == "trainer.max_epochs must be an integer >= 1. Got 0 instead."
    with pytest.raises(DataError, match=r"^data.profile must be one of 'exp', 'step'. Got 'lin' instead.$"):
        Options("exp", "step").check("data.profile", "lin", error=DataError)


@pytest.mark.parametrize(
    "value, expected",
    [(3, 3.0), (2.5, 2.5), (np.float32(0.5), 0.5), (np.int64(4), 4.0), (torch.tensor(1.5), 1.5), (math.inf, math.inf)],
)
def test_a_float_interval_takes_any_real_and_returns_a_float(value, expected):
    out = Interval(float, 0).check("x", value)
    assert out == expected and type(out) is float


@pytest.mark.parametrize("value", [-0.1, math.nan, True, "1", None, [1.0], torch.tensor([1.0, 2.0])])
def test_a_float_interval_refuses(value):
    with pytest.raises(ParameterError):
        Interval(float, 0).check("x", value)


def test_bounds_open_and_closed():
    half_open = Interval(float, 0, 0.5, "left")
    assert half_open.check("x", 0) == 0.0
    with pytest.raises(ParameterError):
        half_open.check("x", 0.5)
    finite = Interval(float, -math.inf, math.inf, "neither")
    for bad in (math.inf, -math.inf):
        with pytest.raises(ParameterError):
            finite.check("x", bad)
    assert Interval(float, -math.inf, 2).check("x", -math.inf) == -math.inf


def test_an_int_interval_takes_integral_numbers_only():
    count = Interval(int, 1)
    assert count.check("n", 3) == 3 and count.check("n", 3.0) == 3 and count.check("n", np.int32(7)) == 7
    assert type(count.check("n", 3.0)) is int
    for bad in (1.5, 0, True, "3", math.inf, math.nan):
        with pytest.raises(ParameterError):
            count.check("n", bad)


def test_options_match_type_and_value():
    choice = Options("relu", "gelu")
    assert choice.check("activation", "gelu") == "gelu"
    for bad in ("swish", None, ["relu"]):
        with pytest.raises(ParameterError):
            choice.check("activation", bad)
    with pytest.raises(ParameterError):
        Options(1, 2).check("k", "1")
    assert BOOL.check("b", False) is False
    with pytest.raises(ParameterError):
        BOOL.check("b", 0)


def test_lists_take_sequences_tensors_and_configs():
    widths = ListOf(Interval(int, 1))
    assert widths.check("hidden", (4, 2)) == [4, 2]
    assert widths.check("hidden", OmegaConf.create([8, 4])) == [8, 4]
    assert widths.check("hidden", np.array([3])) == [3]
    for bad in ([], [4, 0], "42", {"a": 1}, 4, torch.tensor(4)):
        with pytest.raises(ParameterError):
            widths.check("hidden", bad)
    assert ListOf(Interval(int, 1), empty=True).check("hidden", []) == []
    with pytest.raises(ParameterError, match="a list of 2 integers >= 1. Got \\[8\\] instead"):
        ListOf(Interval(int, 1), length=2).check("channels", [8])
    weights = ListOf(Interval(float, 0), scalar=True)
    assert weights.check("alpha", 2) == 2.0 and weights.check("alpha", torch.tensor([1, 2])) == [1.0, 2.0]
    with pytest.raises(ParameterError):
        weights.check("alpha", -1)


def test_counts_need_a_positive_total():
    assert Counts().check("class_counts", [5, 0, 2]) == [5.0, 0.0, 2.0]
    for bad in ([0, 0], [3, -1], [1, math.inf], []):
        with pytest.raises(ParameterError, match="class_counts"):
            Counts().check("class_counts", bad)


def test_a_bad_definition_fails_at_once():
    with pytest.raises(TypeError):
        Interval(str)
    with pytest.raises(ValueError):
        Interval(float, 0, 1, closed="open")

"""What a parameter may be, and the one message for a value that is not.

A constraint describes itself in the words messages use (``Interval(float, 0, None,
"neither").describe()`` is ``"a float in (0, inf)"``). ``check(name, value, owner)``
returns the value in its canonical type (an int, a float, a list) or raises one line that
names the parameter, what it must be and what it got::

    The 'delta' parameter of huber must be a float in (0, inf). Got -1 instead.   # owner="huber"
    trainer.max_epochs must be an integer >= 1. Got 0 instead.                    # no owner: a config key

Loss specs (:class:`lossbench.registry.Param`), datasets, networks and search spaces all
check their parameters with these.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import LossbenchError, ParameterError

class Invalid(Exception):
    """Raised by :meth:`Constraint.convert` for a value the constraint does not take."""


def message(name: str, valid: str, value: Any, owner: str | None = None) -> str:
    """The one format: ``The 'name' parameter of owner must be valid. Got value instead.``"""
    subject = f"The '{name}' parameter of {owner}" if owner else name
    return f"{subject} must be {valid}. Got {value!r} instead."


class Constraint:
    """What a value may be. Subclasses implement :meth:`convert` and :meth:`describe`."""

    def convert(self, value: Any) -> Any:  # pragma: no cover - abstract
        """The value in its canonical type, or raise :class:`Invalid`."""
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        """The phrase that completes "must be ...", e.g. ``"one of 'mean', 'sum', 'none'"``."""
        raise NotImplementedError

    def check(
        self, name: str, value: Any, owner: str | None = None, error: type[LossbenchError] = ParameterError
    ) -> Any:
        """``convert(value)``, or raise ``error`` with :func:`message`."""
        try:
            return self.convert(value)
        except Invalid:
            raise error(message(name, self.describe(), value, owner)) from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.describe()}>"


def _fmt(x: float) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x)


class Interval(Constraint):
    """A number of ``type`` (``int`` or ``float``) between ``low`` and ``high``.

    ``None`` leaves a side unbounded. ``closed`` says which bounds are allowed values:
    ``"both"``, ``"left"`` (``[low, high)``), ``"right"`` (``(low, high]``) or
    ``"neither"``. NaN and booleans never pass. An int parameter also takes a float with
    an integral value (``3.0``); a float parameter takes any real number, and a
    one-element tensor or array.
    """

    def __init__(self, type: type, low: float | None = None, high: float | None = None, closed: str = "both"):
        if type not in (int, float):
            raise TypeError(f"Interval takes int or float, not {type!r}")
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be 'both', 'left', 'right' or 'neither', not {closed!r}")
        self.type, self.low, self.high, self.closed = type, low, high, closed

    def _closed(self, side: str) -> bool:
        return self.closed in ("both", side)

    def convert(self, value: Any) -> Any:
        if not isinstance(value, numbers.Number) and hasattr(value, "item"):  # a tensor or an array
            try:
                value = value.item()
            except (ValueError, RuntimeError):
                raise Invalid from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise Invalid
        if self.type is int:
            if not isinstance(value, numbers.Integral) and not float(value).is_integer():
                raise Invalid
            value = int(value)
        else:
            value = float(value)
        lo, hi = self.low, self.high
        if math.isnan(value) or (lo is not None and not (value >= lo if self._closed("left") else value > lo)):
            raise Invalid
        if hi is not None and not (value <= hi if self._closed("right") else value < hi):
            raise Invalid
        return value

    def words(self, plural: bool = False) -> tuple[str, str]:
        """(noun, range): ``("a float", "in [0, 1)")``; an integer bounded only below reads ``>= low``."""
        if self.type is int and self.high is None and self.low is not None and self._closed("left"):
            return ("integers" if plural else "an integer"), f">= {_fmt(self.low)}"
        noun = ("ints" if plural else "an int") if self.type is int else ("floats" if plural else "a float")
        if self.low is None and self.high is None:
            return noun, ""
        left = "[" if self.low is not None and self._closed("left") else "("
        right = "]" if self.high is not None and self._closed("right") else ")"
        low = "-inf" if self.low is None else _fmt(self.low)
        high = "inf" if self.high is None else _fmt(self.high)
        return noun, f"in {left}{low}, {high}{right}"

    def describe(self) -> str:
        return " ".join(w for w in self.words() if w)


class Options(Constraint):
    """One of the given values (of the same type: ``1`` is not ``"1"``)."""

    def __init__(self, *values: Any):
        self.values = tuple(values)

    def convert(self, value: Any) -> Any:
        if any(isinstance(value, type(v)) and value == v for v in self.values):
            return value
        raise Invalid

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


class InstanceOf(Constraint):
    """Any value of a Python type, e.g. ``InstanceOf(bool, "a bool")``."""

    def __init__(self, type: type, words: str):
        self.type, self.words = type, words

    def convert(self, value: Any) -> Any:
        if isinstance(value, self.type):
            return value
        raise Invalid

    def describe(self) -> str:
        return self.words


BOOL = InstanceOf(bool, "a bool")
STRING = InstanceOf(str, "a string")


class ListOf(Constraint):
    """A non-empty list of values that each meet ``item`` (an :class:`Interval`); returns a list.

    Takes a list, a tuple, an OmegaConf ``ListConfig``, a 1-D tensor or array. ``length``:
    exactly that many; ``empty``: ``[]`` is allowed too; ``scalar``: a single value is
    taken as it is; ``per_class`` only adds "(one per class)" to the words.
    """

    def __init__(self, item: Interval, *, length: int | None = None, empty=False, scalar=False, per_class=False):
        self.item, self.length, self.empty, self.scalar, self.per_class = item, length, empty, scalar, per_class

    def convert(self, value: Any) -> Any:
        if self.scalar:
            try:
                return self.item.convert(value)
            except Invalid:
                pass
        if not isinstance(value, str | bytes | Mapping | Sequence) and hasattr(value, "tolist"):
            value = value.tolist()  # a tensor or an array; a 0-d one gives a scalar, refused below
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
            raise Invalid
        if (not value and not self.empty) or (self.length is not None and len(value) != self.length):
            raise Invalid
        return [self.item.convert(x) for x in value]

    def describe(self) -> str:
        noun, rng = self.item.words(plural=True)
        what = f"a list of {f'{self.length} ' if self.length else ''}{noun}"
        if self.per_class:
            what += " (one per class)"
        if self.scalar:
            what = f"{self.item.words()[0]} or {what}"
        return f"{what} {rng}".strip()


class Counts(ListOf):
    """Training samples per class: finite numbers >= 0, at least one of them above 0."""

    def __init__(self) -> None:
        super().__init__(Interval(float, 0.0, math.inf, closed="left"))

    def convert(self, value: Any) -> Any:
        counts = super().convert(value)
        if sum(counts) <= 0:
            raise Invalid
        return counts

    def describe(self) -> str:
        return "a list of class counts (non-negative numbers, one per class)"

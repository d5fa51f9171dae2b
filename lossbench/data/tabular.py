"""The user's own table (CSV or Parquet) as a lossbench dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..constraints import Interval, Options
from ..errors import DataError, did_you_mean
from .base import Splits, TensorDataModule, check_param, check_split_fractions, split_indices, stratified_split_indices
from .synthetic import huber_outlier_fraction

TASKS = ("auto", "regression", "multiclass", "binary")
ENCODINGS = ("onehot", "ordinal")
READERS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
# data.sep by name, for a shell command line where ';' and '|' need quoting
SEPARATORS = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|", "space": " "}
_SEP_NAMES = {v: k for k, v in SEPARATORS.items()}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
OBJECTIVES = {
    "regression": ("rmse", "min"),
    "multiclass": ("balanced_accuracy", "max"),
    "binary": ("balanced_accuracy", "max"),
}


def _rows(mask: np.ndarray, limit: int = 5) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (", ..." if rows.size > limit else "")


def _listed(values: list[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


class TabularData(TensorDataModule):
    """A table from ``path`` (``.csv``/``.tsv`` read with pandas, ``.parquet``/``.pq`` with pyarrow).

    ``target`` names the column to predict; ``features`` lists the input columns (default:
    every other column). ``task="auto"`` infers the task: a target that is not numeric
    (strings, categories, booleans), or numeric with whole-number values only and at most
    ``max_auto_classes`` distinct values, is classification (``binary`` with two classes,
    else ``multiclass``); anything else is regression. Set ``task`` when the guess is wrong
    (e.g. a count with few values that you want to regress).

    ``sep`` is the column separator of a text file: a character, or ``comma``, ``semicolon``,
    ``tab``, ``pipe``, ``space``; by default ``,`` (a tab for ``.tsv``). A file read as one
    column whose header holds another separator is refused with the setting that reads it.

    Feature columns that are not numeric (strings, categories, booleans) are encoded with
    pandas: ``categorical="onehot"`` gives one 0/1 column per category, ``"ordinal"`` one
    column of category codes in sorted order. The categories are taken from the whole
    table (so every split has the same columns); a column with more than ``max_categories``
    categories is refused (an identifier, most likely). Class labels become ``0..C-1`` in
    sorted order; ``DataInfo.extra["class_names"]`` keeps the original labels.

    The split is seeded; stratified by class for classification, random for regression.
    Missing or infinite values, values too large for float32 (lossbench trains in float32),
    and a few stray words in a column of numbers (a ``?`` for "unknown") are refused with
    the column and the rows (0-based data rows, the header not counted) so you can clean the
    file; so is a column with no value at all. For regression,
    ``DataInfo.outlier_fraction`` is measured as in
    :func:`~lossbench.data.synthetic.huber_outlier_fraction`.
    """

    name = "csv"
    task = "auto"  # resolved from the file in load(); DataInfo.task holds the answer
    objective = ("loss", "min")

    def __init__(
        self,
        path: str | None = None,
        target: str | None = None,
        features: list[str] | None = None,
        task: str = "auto",
        categorical: str = "onehot",
        max_categories: int = 50,
        max_auto_classes: int = 20,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        batch_size: int = 128,
        seed: int = 0,
        normalize: str = "standard",
        normalize_target: str = "standard",
        eval_batch_size: int = 4096,
        label_noise: float = 0.0,
        noise_type: str = "symmetric",
        sep: str | None = None,
    ):
        super().__init__(
            batch_size, seed, normalize, normalize_target, eval_batch_size, label_noise=label_noise, noise_type=noise_type
        )
        if not path:
            raise DataError("data.path is required: the CSV or Parquet file to read, e.g. data.path=my_table.csv.")
        if not target:
            raise DataError("data.target is required: the name of the column to predict, e.g. data.target=price.")
        check_param("task", task, Options(*TASKS))
        check_param("categorical", categorical, Options(*ENCODINGS))
        self.path = Path(str(path)).expanduser()
        if self.path.suffix.lower() not in READERS:
            raise DataError(
                f"data.path {str(self.path)!r} has an unsupported extension; use one of {', '.join(READERS)}."
            )
        self.target = str(target)
        self.features = None if features is None else [str(f) for f in features]
        self.requested_task = task
        self.categorical = categorical
        self.max_categories = check_param("max_categories", max_categories, Interval(int, 1))
        self.max_auto_classes = check_param("max_auto_classes", max_auto_classes, Interval(int, 2))
        self.val_fraction, self.test_fraction = check_split_fractions(val_fraction, test_fraction)
        self.sep = _separator(sep)
        self._n_classes = 0  # set by load() for classification
        if task != "auto":
            self.task, self.objective = task, OBJECTIVES[task]
        if task == "regression" and self.label_noise > 0:
            raise DataError("data.label_noise flips class labels, but data.task is regression; set data.label_noise=0.")

    # ------------------------------------------------------------------ reading
    def _read_table(self) -> pd.DataFrame:
        if not self.path.is_file():
            where = "" if self.path.is_absolute() else f" (looked in {Path.cwd()})"
            raise DataError(f"data.path: no file {str(self.path)!r}{where}. Give an existing CSV or Parquet file.")
        if self.path.stat().st_size == 0:
            raise DataError(f"data.path: {str(self.path)!r} is empty; it needs a header row and data rows.")
        text = READERS[self.path.suffix.lower()] == "csv"
        sep = self.sep or ("\t" if self.path.suffix.lower() == ".tsv" else ",")
        try:
            df = pd.read_csv(self.path, sep=sep) if text else pd.read_parquet(self.path)
        except pd.errors.EmptyDataError as err:
            raise DataError(
                f"data.path: {str(self.path)!r} has no columns; it needs a header row and data rows."
            ) from err
        except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
            raise DataError(f"data.path: cannot read {str(self.path)!r} as a table ({err}).") from err
        if text:
            self._check_separator(df, sep)
        if df.shape[0] == 0:
            raise DataError(f"data.path: {str(self.path)!r} has a header but no data rows.")
        df.columns = [str(c) for c in df.columns]
        return df

    def _check_separator(self, df: pd.DataFrame, sep: str) -> None:
        """One column whose header holds another separator: the file was split on the wrong one."""
        if df.shape[1] != 1:
            return
        header = str(df.columns[0])
        for other, name in _SEP_NAMES.items():
            if other != sep and other != " " and other in header:
                raise DataError(
                    f"data.path: {self.path.name} looks separated by {other!r}, not {sep!r} (it reads as one column, "
                    f"{header!r}): set data.sep={name} (the same as data.sep={other!r})."
                )

    def _columns(self, df: pd.DataFrame) -> list[str]:
        cols = list(df.columns)
        if self.target not in cols:
            raise DataError(
                f"data.target: no column {self.target!r} in {self.path.name}.{did_you_mean(self.target, cols)} "
                f"Columns: {', '.join(cols)}."
            )
        if self.features is None:
            return [c for c in cols if c != self.target]
        for f in self.features:
            if f not in cols:
                raise DataError(
                    f"data.features: no column {f!r} in {self.path.name}.{did_you_mean(f, cols)} "
                    f"Columns: {', '.join(cols)}."
                )
        if self.target in self.features:
            raise DataError(f"data.features must not contain the target column {self.target!r}.")
        if not self.features:
            raise DataError("data.features is empty; list at least one input column, or leave it unset for all.")
        return list(self.features)

    def _check_values(self, df: pd.DataFrame, columns: list[str]) -> None:
        self._check_empty(df, columns)
        for col in columns:
            s = df[col]
            missing = s.isna().to_numpy()
            if missing.any():
                raise DataError(
                    f"column {col!r} has {int(missing.sum())} missing value(s) (rows {_rows(missing)}); fill or drop "
                    f"those rows before training."
                )
            if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                values = s.to_numpy(dtype=np.float64)
                inf = ~np.isfinite(values)
                if inf.any():
                    raise DataError(
                        f"column {col!r} has {int(inf.sum())} infinite value(s) (rows {_rows(inf)}); replace or drop "
                        f"those rows before training."
                    )
                huge = np.abs(values) > _FLOAT32_MAX
                if huge.any():
                    raise DataError(
                        f"column {col!r} has {int(huge.sum())} value(s) too large for float32, the precision lossbench "
                        f"trains in ({_listed(values[huge].tolist())} in rows {_rows(huge)}; float32 ends at "
                        f"{_FLOAT32_MAX:.3g}); rescale the column (divide it by a power of ten) or drop those rows."
                    )
            else:
                self._check_numbers(s, col)

    def _check_empty(self, df: pd.DataFrame, columns: list[str]) -> None:
        """A column with no value at all: leave the column out, not its rows (that would be every row)."""
        if df[self.target].isna().all():
            raise DataError(
                f"the target column {self.target!r} is empty: none of its {len(df)} rows has a value. Fill it, or "
                f"choose another column with data.target=<column>."
            )
        empty = [c for c in columns if c != self.target and df[c].isna().all()]
        if not empty:
            return
        kept = [c for c in columns if c != self.target and c not in empty]
        one = len(empty) == 1
        what, it = (f"column {empty[0]!r} is", "it") if one else (f"columns {_listed(empty, 10)} are", "them")
        if not kept:
            fix = "give the file at least one input column with values."
        elif len(kept) <= 10:
            fix = f"drop {it} from the file, or leave {it} out with data.features=[{','.join(kept)}]."
        else:
            fix = f"drop {it} from the file, or list the other input columns in data.features=[...]."
        raise DataError(f"{what} empty: none of the {len(df)} rows has a value; {fix}")

    @staticmethod
    def _check_numbers(s: pd.Series, col: str) -> None:
        """Numbers with a few stray words ('?', 'n/a', a typo) would be read as a column of categories."""
        if pd.api.types.is_bool_dtype(s):
            return
        number = pd.to_numeric(s, errors="coerce").notna().to_numpy()
        words = ~number
        if not words.any() or number.mean() < 0.9:  # all numbers, or text with some numbers in it
            return
        tokens = list(dict.fromkeys(str(v) for v in s[words]))
        raise DataError(
            f"column {col!r} holds numbers except {int(words.sum())} value(s) that are not numbers "
            f"({_listed(tokens)}; rows {_rows(words)}); fix those values or drop their rows, so the column is "
            f"read as numbers."
        )

    # ------------------------------------------------------------------ task and encoding
    def _resolve_task(self, y: pd.Series) -> str:
        numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
        if self.requested_task != "auto":
            if self.requested_task == "regression" and not numeric:
                example = y.iloc[0]
                raise DataError(
                    f"data.task=regression needs a numeric target, but column {self.target!r} holds e.g. {example!r}; "
                    f"use data.task=multiclass or binary, or data.task=auto."
                )
            return self.requested_task
        if not numeric:
            return "binary" if y.nunique() == 2 else "multiclass"
        values = y.to_numpy(dtype=np.float64)
        whole = bool(np.all(values == np.round(values)))
        n = int(np.unique(values).size)
        if whole and n <= self.max_auto_classes:
            return "binary" if n == 2 else "multiclass"
        return "regression"

    def _task_hints(self, y: pd.Series, task: str) -> dict[str, str]:
        """Per task a loss may be for, what to set when data.task=auto guessed another one.

        The loss-task check (:func:`lossbench.registry.create_loss`) adds the hint for the
        loss's task to its message: integer ratings read as classes, with a regression loss.
        """
        if self.requested_task != "auto" or not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            return {}
        values = y.to_numpy(dtype=np.float64)
        n = int(np.unique(values).size)
        if task != "regression":
            return {"regression": (
                f"Or, to predict {self.target!r} as a number, set data.task=regression (data.task=auto read its "
                f"{n} whole-number values as classes)."
            )}
        if bool(np.all(values == np.round(values))):
            return {"multiclass": (
                f"Or, to predict {self.target!r} as classes, set data.task=multiclass (data.task=auto read its {n} "
                f"whole-number values as a number: more than data.max_auto_classes={self.max_auto_classes})."
            )}
        return {}

    def _encode_features(self, df: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, list[str]]:
        blocks: list[np.ndarray] = []
        names: list[str] = []
        for col in columns:
            s = df[col]
            if pd.api.types.is_bool_dtype(s):
                blocks.append(s.to_numpy(dtype=np.float64)[:, None])
                names.append(col)
            elif pd.api.types.is_numeric_dtype(s):
                blocks.append(s.to_numpy(dtype=np.float64)[:, None])
                names.append(col)
            else:
                cats = sorted(pd.unique(s.astype(str)))
                if len(cats) > self.max_categories:
                    raise DataError(
                        f"column {col!r} is not numeric and has {len(cats)} distinct values (more than "
                        f"data.max_categories={self.max_categories}); drop it from data.features if it is an "
                        f"identifier, or raise data.max_categories."
                    )
                codes = pd.Categorical(s.astype(str), categories=cats).codes.astype(np.int64)
                if self.categorical == "ordinal":
                    blocks.append(codes[:, None].astype(np.float64))
                    names.append(col)
                else:
                    blocks.append(np.eye(len(cats))[codes])
                    names.extend(f"{col}={c}" for c in cats)
        return np.concatenate(blocks, axis=1), names

    # ------------------------------------------------------------------ DataModule API
    def load(self) -> Splits:
        df = self._read_table()
        columns = self._columns(df)
        self._check_values(df, [self.target, *columns])
        y_raw = df[self.target]
        task = self._resolve_task(y_raw)
        x, feature_names = self._encode_features(df, columns)
        extra: dict[str, Any] = {"path": str(self.path), "target": self.target, "features": feature_names}
        hints = self._task_hints(y_raw, task)
        if hints:
            extra["task_hints"] = hints
        if task == "regression":
            y = y_raw.to_numpy(dtype=np.float64, copy=True)
            tr, va, te = split_indices(len(df), self.val_fraction, self.test_fraction, self.seed)
            y_t = torch.from_numpy(y).float()
        else:
            labels = y_raw.astype(str) if not pd.api.types.is_numeric_dtype(y_raw) else y_raw
            classes = sorted(pd.unique(labels))
            if len(classes) < 2:
                raise DataError(
                    f"target column {self.target!r} has a single class ({classes[0]!r}); classification needs at "
                    f"least two."
                )
            if task == "binary" and len(classes) != 2:
                raise DataError(
                    f"data.task=binary needs exactly two classes, but {self.target!r} has {len(classes)}; "
                    f"use data.task=multiclass."
                )
            codes = pd.Categorical(labels, categories=classes).codes.astype(np.int64)
            tr, va, te = stratified_split_indices(codes, self.val_fraction, self.test_fraction, self.seed)
            extra["class_names"] = [_plain(c) for c in classes]
            self._n_classes = len(classes)
            y_t = torch.from_numpy(codes)
        self.task, self.objective = task, OBJECTIVES[task]
        x_t = torch.from_numpy(x).float()
        idx = [torch.from_numpy(i) for i in (tr, va, te)]
        return Splits(*(t for i in idx for t in (x_t[i], y_t[i])), extra=extra)

    def num_classes(self, s: Splits) -> int:
        return self._n_classes

    def traits(self, splits: Splits) -> dict[str, Any]:
        if self.task != "regression":
            return {}
        return {"outlier_fraction": huber_outlier_fraction(splits.x_train.numpy(), splits.y_train.numpy())}


def _separator(sep: Any) -> str | None:
    """``data.sep`` as the string pandas splits on: None (by the extension), a name, or the separator itself."""
    if sep is None:
        return None
    if not isinstance(sep, str) or not sep:
        raise DataError(
            f"data.sep must be a column separator: one of {', '.join(SEPARATORS)}, or the character itself; "
            f"got {sep!r}."
        )
    if sep in ("\\t", "\t"):  # a tab written as \t on the command line
        return "\t"
    return SEPARATORS.get(sep.lower(), sep)


def _plain(value: Any) -> Any:
    """A class label as a plain Python value (for JSON in MLflow)."""
    return value.item() if isinstance(value, np.generic) else value

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
OBJECTIVES = {
    "regression": ("rmse", "min"),
    "multiclass": ("balanced_accuracy", "max"),
    "binary": ("balanced_accuracy", "max"),
}


def _rows(mask: np.ndarray, limit: int = 5) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (", ..." if rows.size > limit else "")


class TabularData(TensorDataModule):
    """A table from ``path`` (``.csv``/``.tsv`` read with pandas, ``.parquet``/``.pq`` with pyarrow).

    ``target`` names the column to predict; ``features`` lists the input columns (default:
    every other column). ``task="auto"`` infers the task: a target that is not numeric
    (strings, categories, booleans), or numeric with whole-number values only and at most
    ``max_auto_classes`` distinct values, is classification (``binary`` with two classes,
    else ``multiclass``); anything else is regression. Set ``task`` when the guess is wrong
    (e.g. a count with few values that you want to regress).

    Feature columns that are not numeric (strings, categories, booleans) are encoded with
    pandas: ``categorical="onehot"`` gives one 0/1 column per category, ``"ordinal"`` one
    column of category codes in sorted order. The categories are taken from the whole
    table (so every split has the same columns); a column with more than ``max_categories``
    categories is refused (an identifier, most likely). Class labels become ``0..C-1`` in
    sorted order; ``DataInfo.extra["class_names"]`` keeps the original labels.

    The split is seeded; stratified by class for classification, random for regression.
    Missing or infinite values are refused with the column and the rows (0-based data rows,
    the header not counted) so you can clean the file. For regression,
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
    ):
        super().__init__(batch_size, seed, normalize, normalize_target, eval_batch_size)
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
        self._n_classes = 0  # set by load() for classification
        if task != "auto":
            self.task, self.objective = task, OBJECTIVES[task]

    # ------------------------------------------------------------------ reading
    def _read_table(self) -> pd.DataFrame:
        if not self.path.is_file():
            where = "" if self.path.is_absolute() else f" (looked in {Path.cwd()})"
            raise DataError(f"data.path: no file {str(self.path)!r}{where}. Give an existing CSV or Parquet file.")
        if self.path.stat().st_size == 0:
            raise DataError(f"data.path: {str(self.path)!r} is empty; it needs a header row and data rows.")
        try:
            if READERS[self.path.suffix.lower()] == "parquet":
                df = pd.read_parquet(self.path)
            else:
                sep = "\t" if self.path.suffix.lower() == ".tsv" else ","
                df = pd.read_csv(self.path, sep=sep)
        except pd.errors.EmptyDataError as err:
            raise DataError(
                f"data.path: {str(self.path)!r} has no columns; it needs a header row and data rows."
            ) from err
        except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
            raise DataError(f"data.path: cannot read {str(self.path)!r} as a table ({err}).") from err
        if df.shape[0] == 0:
            raise DataError(f"data.path: {str(self.path)!r} has a header but no data rows.")
        df.columns = [str(c) for c in df.columns]
        return df

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

    @staticmethod
    def _check_values(df: pd.DataFrame, columns: list[str]) -> None:
        for col in columns:
            s = df[col]
            missing = s.isna().to_numpy()
            if missing.any():
                raise DataError(
                    f"column {col!r} has {int(missing.sum())} missing value(s) (rows {_rows(missing)}); fill or drop "
                    f"those rows before training."
                )
            if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                inf = ~np.isfinite(s.to_numpy(dtype=np.float64))
                if inf.any():
                    raise DataError(
                        f"column {col!r} has {int(inf.sum())} infinite value(s) (rows {_rows(inf)}); replace or drop "
                        f"those rows before training."
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


def _plain(value: Any) -> Any:
    """A class label as a plain Python value (for JSON in MLflow)."""
    return value.item() if isinstance(value, np.generic) else value

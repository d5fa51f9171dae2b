"""What a scenario's data looked like: its settings (``data.*`` params) and measured traits
(``data_info.*``), which settings were swept, and which scenarios differ only in normalisation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from .aggregate import as_text, mode_value
from .columns import PARAM_PREFIX

DATA_TRAITS = ("outlier_fraction", "imbalance_ratio", "label_noise")
NORMALIZE_KEYS = ("data.normalize", "data.normalize_target")


def _first_number(df: pd.DataFrame, cols: Sequence[str]) -> float:
    for c in cols:
        if c in df.columns:
            v = pd.to_numeric(df[c], errors="coerce").dropna()
            if len(v):
                return float(v.mean())
    return math.nan


def data_traits(df: pd.DataFrame, scenario: str) -> dict[str, float]:
    """Measured traits of a scenario's data (``data_info.*``), else the generator's settings (``data.*``)."""
    sub = df[df["scenario"] == scenario]
    out = {}
    for t in DATA_TRAITS:
        out[t] = _first_number(sub, [f"params.data_info.{t}", f"data_info.{t}", f"params.data.{t}"])
    return out


def scenario_settings(df: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario: its ``data.*`` params (seed-like ones dropped), as logged."""
    cols = [
        c
        for c in df.columns
        if c.startswith("params.data.") and "seed" not in c and not c[len("params.data.") :].startswith("_")
    ]
    rows = {}
    for scen, g in df.groupby("scenario", sort=True):
        rows[scen] = {c[len(PARAM_PREFIX) :]: mode_value(g[c]) for c in cols}
    return pd.DataFrame.from_dict(rows, orient="index")


def data_axes(settings: pd.DataFrame) -> dict[str, list[str]]:
    """Per dataset name, the numeric ``data.*`` settings that vary across its scenarios."""
    out: dict[str, list[str]] = {}
    if settings.empty:
        return out
    names = settings["data.name"] if "data.name" in settings.columns else pd.Series("data", index=settings.index)
    for name, idx in settings.groupby(as_text(names).replace("", "data"), sort=True).groups.items():
        sub = settings.loc[idx]
        axes = []
        for c in sub.columns:
            if c in ("data.name", *NORMALIZE_KEYS):
                continue
            num = pd.to_numeric(sub[c], errors="coerce")
            if num.notna().all() and num.nunique() > 1:
                axes.append(c)
        if axes:
            out[str(name)] = axes
    return out


def normalize_groups(settings: pd.DataFrame) -> list[list[str]]:
    """Groups of scenarios that differ only in their normalisation (groups of two or more)."""
    if settings.empty or not any(k in settings.columns for k in NORMALIZE_KEYS):
        return []
    rest = [c for c in settings.columns if c not in NORMALIZE_KEYS]
    norm = [k for k in NORMALIZE_KEYS if k in settings.columns]
    key = pd.Series(
        ["|".join(row) for row in as_text(settings[rest]).itertuples(index=False, name=None)] if rest else "",
        index=settings.index,
    )
    groups = []
    for _, idx in settings.groupby(key, sort=True).groups.items():
        sub = settings.loc[idx]
        if len(sub) > 1 and as_text(sub[norm]).drop_duplicates().shape[0] > 1:
            groups.append(sorted(str(s) for s in idx))
    return groups

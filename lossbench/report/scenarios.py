"""What a scenario's data looked like: its settings (``data.*`` params) and measured traits
(``data_info.*``), which settings were swept, which scenarios differ only in normalisation, and
which of the data's traits the recommended loss answers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from .table import PARAM_PREFIX, as_text, is_missing, loss_spec, mode_value

if TYPE_CHECKING:
    from .ranking import Standing
    from .recommend import ScenarioResult

DATA_TRAITS = ("outlier_fraction", "imbalance_ratio", "label_noise")
NORMALIZE_KEYS = ("data.normalize", "data.normalize_target")
# data trait -> (the value above which it matters, the loss traits that address it)
DATA_TRAIT_RULES = {
    "outlier_fraction": (0.01, ("robust_to_outliers", "bounded_influence")),
    "imbalance_ratio": (1.5, ("handles_imbalance",)),
    "label_noise": (0.01, ("handles_label_noise",)),
}


def data_traits(df: pd.DataFrame, scenario: str) -> dict[str, float]:
    """Measured traits of a scenario's data (``data_info.*``), else the generator's settings (``data.*``)."""
    sub, out = df[df["scenario"] == scenario], {}
    for t in DATA_TRAITS:
        cols = [c for c in (f"params.data_info.{t}", f"data_info.{t}", f"params.data.{t}") if c in sub.columns]
        means = [float(pd.to_numeric(sub[c], errors="coerce").mean()) for c in cols]
        out[t] = next((m for m in means if not math.isnan(m)), math.nan)
    return out


def scenario_settings(df: pd.DataFrame) -> pd.DataFrame:
    """One row per scenario: its ``data.*`` params (seed-like ones dropped), as logged."""
    cols = [c for c in df.columns
            if c.startswith("params.data.") and "seed" not in c and not c.removeprefix("params.data.").startswith("_")]
    settings = df.groupby("scenario", sort=True)[cols].agg(mode_value)
    return settings.rename(columns=lambda c: c.removeprefix(PARAM_PREFIX)).rename_axis(None)


def dataset_names(settings: pd.DataFrame) -> pd.Series:
    """Each scenario's dataset (``data.name``), ``"data"`` where it was not logged."""
    names = settings["data.name"] if "data.name" in settings.columns else pd.Series("", index=settings.index)
    return as_text(names).replace("", "data")


def settings_text(settings: pd.DataFrame, scen: str) -> str:
    """A scenario's data settings as ``key=value, ...`` (the dataset's name left out)."""
    if scen not in settings.index:
        return ""
    return ", ".join(f"{k.removeprefix('data.')}={v}" for k, v in settings.loc[scen].items()
                     if not is_missing(v) and k != "data.name")


def short_labels(settings: pd.DataFrame, scenarios: Sequence[str], with_name: bool = False) -> dict[str, str]:
    """Short names for ``scenarios``: per dataset, only the settings that differ between them
    (``outlier_fraction=0.1``), prefixed by the dataset's name when ``with_name`` or when
    several datasets are present. Falls back on the full scenario keys when that is ambiguous."""
    full = {s: s for s in scenarios}
    if any(s not in settings.index for s in scenarios) or "data.name" not in settings.columns:
        return full
    sub = settings.loc[list(scenarios)]
    names = as_text(sub["data.name"])
    show_name = with_name or names.nunique() > 1
    out = {}
    for name, group in sub.groupby(names, sort=False):
        varying = [c for c in group.columns
                   if c != "data.name" and as_text(group[c]).nunique() > 1 and not group[c].map(is_missing).any()]
        for scen in group.index:
            parts = ", ".join(f"{c.removeprefix('data.')}={group.at[scen, c]}" for c in varying)
            out[str(scen)] = (f"{name}({parts})" if parts else str(name)) if show_name else (parts or str(name))
    return full if len(set(out.values())) < len(out) else out


def data_axes(settings: pd.DataFrame) -> dict[str, list[str]]:
    """Per dataset name, the numeric ``data.*`` settings that vary across its scenarios."""
    out = {}
    for name, sub in settings.groupby(dataset_names(settings), sort=True):
        numeric = sub.drop(columns=["data.name", *NORMALIZE_KEYS], errors="ignore")
        numeric = numeric.apply(pd.to_numeric, errors="coerce")
        axes = [c for c, x in numeric.items() if x.notna().all() and x.nunique() > 1]
        if axes:
            out[str(name)] = axes
    return out


def normalize_groups(settings: pd.DataFrame) -> list[list[str]]:
    """Groups of scenarios that differ only in their normalisation (groups of two or more)."""
    norm = [k for k in NORMALIZE_KEYS if k in settings.columns]
    if settings.empty or not norm:
        return []
    text = as_text(settings)
    rest = [c for c in settings.columns if c not in norm]
    key = text[rest].agg("|".join, axis=1) if rest else pd.Series("", index=settings.index)
    groups = text.groupby(key, sort=True)
    return [sorted(g.index) for _, g in groups if len(g) > 1 and len(g[norm].drop_duplicates()) > 1]


def loss_traits(name: str) -> tuple[str, ...]:
    spec = loss_spec(name)
    return tuple(sorted(spec.traits)) if spec is not None else ()


@dataclass(frozen=True)
class TraitFinding:
    """A trait that stands out in a scenario's data, and the losses that address it."""

    key: str  # one of DATA_TRAITS
    value: float
    matching: tuple[str, ...]  # the recommended loss's traits that address it
    fitting: tuple[tuple[str, Standing], ...]  # the compared losses built for it, and how each did


def trait_findings(s: ScenarioResult, traits: dict[str, float]) -> list[TraitFinding]:
    """Per data trait above its threshold: whether the recommended loss addresses it, else which losses did."""
    rec = s.recommendation
    if rec.loss is None:
        return []
    has = set(loss_traits(s.by_loss(rec.loss).base))
    out = []
    for key, (threshold, wanted) in DATA_TRAIT_RULES.items():
        value = traits.get(key, math.nan)
        if math.isnan(value) or value <= threshold:
            continue
        fitting = tuple((r.loss, r.comparison) for r in s.losses if set(loss_traits(r.base)) & set(wanted))
        out.append(TraitFinding(key, value, tuple(t for t in wanted if t in has), fitting))
    return out

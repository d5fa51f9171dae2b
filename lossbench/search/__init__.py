"""Hyperparameter search with Optuna: tune each loss fairly before comparing losses.

``python -m lossbench.search search.losses=[focal,ldam,cross_entropy] data=imbalanced search.n_trials=20``

Each loss gets one Optuna study over its declared search space (plus ``search.space`` and,
with ``search.tune_lr=true``, ``optimizer.lr``) and the same trial budget; the objective is
a run's best validation value, never a test metric. See :mod:`lossbench.search.study`.
"""

from __future__ import annotations

from .space import LR_DIMENSION, SearchSettings, loss_space
from .study import (
    ARTIFACT_BEST, TAG_BEST, LossOutcome, best_summary, compose_config, normalize_overrides, run_search, trial_config,
)

__all__ = [
    "ARTIFACT_BEST", "LR_DIMENSION", "TAG_BEST", "LossOutcome", "SearchSettings", "best_summary", "compose_config",
    "loss_space", "normalize_overrides", "run_search", "trial_config",
]

"""Hyperparameter search with Optuna: tune each loss fairly before comparing losses.

``python -m lossbench.search search.losses=[focal,ldam,cross_entropy] data=imbalanced search.n_trials=20``

Each loss gets one Optuna study over its declared search space
(``lossbench.loss_info(name).search_space``, plus ``search.space`` and, with
``search.tune_lr=true``, ``optimizer.lr``) and the same trial budget. The studies persist
apart from MLflow (a journal file by default), so re-running the command continues them
and several processes can share them. Every trial is an MLflow run tagged
``optuna_study``/``optuna_trial``; the objective is the run's best validation value of
the data's objective, never a test metric. Diverged trials fail, hopeless ones are pruned
(MedianPruner), and each study's best run is tagged ``optuna_best=true`` and carries
``best_params.json``.
"""

from __future__ import annotations

from .space import LR_DIMENSION, SearchSettings, loss_space
from .study import (
    ARTIFACT_BEST,
    TAG_BEST,
    LossOutcome,
    TrialRecord,
    best_summary,
    compose_config,
    normalize_overrides,
    run_search,
    trial_config,
)

__all__ = [
    "ARTIFACT_BEST",
    "LR_DIMENSION",
    "TAG_BEST",
    "LossOutcome",
    "SearchSettings",
    "TrialRecord",
    "best_summary",
    "compose_config",
    "loss_space",
    "normalize_overrides",
    "run_search",
    "trial_config",
]

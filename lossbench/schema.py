"""What lossbench writes to MLflow: the one place that names tags, metrics and artifacts.

The training side (``tracking``, ``pipeline``) writes these names and the report reads
them; neither imports the other.

Runs
    name ``{loss}-{data}-s{seed}``; status FINISHED, FAILED (diverged or error) or KILLED.
Params
    the full resolved config, flattened with dots: ``loss.name``, ``loss.delta``,
    ``data.name``, ``data.outlier_fraction``, ``model.name``, ``optimizer.lr``, ``seed``...
Metrics
    per epoch ``train_loss``, ``val_loss`` and ``val_<m>``; once at the end ``test_<m>``
    and ``best_val_objective`` (the best validation value of the objective, whose weights
    were restored before testing: model selection on validation, never on test).
    Classification ``<m>``: CLASSIFICATION_METRICS plus ``recall_class_<k>``.
    Regression ``<m>``: REGRESSION_METRICS, in the targets' original units.
Artifacts
    ``config.yaml`` (resolved config), ``per_class.json`` (classification),
    ``training_curves.png``, ``traceback.txt`` (failed with an error).
"""

from __future__ import annotations

# tags
TAG_LOSS = "loss"
TAG_DATA = "data"
TAG_MODEL = "model"
TAG_TASK = "task"
TAG_SEED = "seed"
TAG_VERSION = "lossbench_version"
TAG_GIT = "git_commit"
TAG_OVERRIDES = "overrides"
TAG_SWEEP = "sweep_id"
TAG_CONFIG_HASH = "config_hash"
TAG_SCENARIO = "scenario"  # data variant: data name + its non-seed parameters
TAG_OBJECTIVE = "objective"  # metric name without prefix, e.g. "balanced_accuracy"
TAG_OBJECTIVE_MODE = "objective_mode"  # "max" | "min"
TAG_FAILURE = "failure"  # "diverged" | "error"
TAG_FAILURE_STEP = "failure_step"
TAG_LOSS_PARAMS = "loss_params"  # JSON of the loss's hyperparameters
TAG_LOSS_VARIANT = "loss_variant"  # a named config variant of a loss (e.g. label_smoothing of cross_entropy)
TAG_STUDY = "optuna_study"
TAG_TRIAL = "optuna_trial"
TAG_BEST = "optuna_best"  # "true" on the run of each study's best trial
TAG_PRUNED = "pruned"  # "true" on a run an Optuna pruner stopped early
TAG_PRUNED_EPOCH = "pruned_epoch"
TAG_ENGINE = "engine"  # "sequential" (one Lightning run) | "batched" (trained in a stacked group)
TAG_GROUP = "engine_group"  # batched: the group's id, shared by the runs trained together
TAG_GROUP_SIZE = "engine_group_size"
TAG_OWNER = "owner"  # "host:pid" of the process that trains the run, to tell a stuck run from a live one
TAG_SETTLED = "settled"  # why lossbench marked a stuck run KILLED
TAG_KIND = "lossbench_kind"  # "sweep" | "study" on the parent run that folds a sweep's or a study's runs
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own: a child run of a sweep or a study

METRIC_BEST_VAL = "best_val_objective"

FAILURE_DIVERGED = "diverged"
FAILURE_ERROR = "error"

REGRESSION_METRICS = ("mse", "rmse", "mae", "median_ae", "r2")
CLASSIFICATION_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "nll",
    "ece",
    "auroc",
    "many_shot_accuracy",
    "medium_shot_accuracy",
    "few_shot_accuracy",
)
# direction of each metric: True where larger is better
HIGHER_IS_BETTER = {
    "mse": False,
    "rmse": False,
    "mae": False,
    "median_ae": False,
    "r2": True,
    "accuracy": True,
    "balanced_accuracy": True,
    "macro_f1": True,
    "nll": False,
    "ece": False,
    "auroc": True,
    "many_shot_accuracy": True,
    "medium_shot_accuracy": True,
    "few_shot_accuracy": True,
    "loss": False,
}

ARTIFACT_CONFIG = "config.yaml"
ARTIFACT_PER_CLASS = "per_class.json"
ARTIFACT_CURVES = "training_curves.png"
ARTIFACT_TRACEBACK = "traceback.txt"
ARTIFACT_BEST = "best_params.json"  # on a study's best trial: its parameters and the command

"""The run table's column names, shared by ``collect`` (which fills it from MLflow) and
``aggregate`` (which computes on it); see :mod:`lossbench.report.aggregate` for their meaning."""

from __future__ import annotations

REQUIRED_COLUMNS = ("status", "loss", "scenario", "seed")
OPTIONAL_COLUMNS = (
    "run_id",
    "run_name",
    "start_time",
    "task",
    "objective",
    "objective_mode",
    "failure",
    "failure_step",
    "loss_params",
    "model",
    "data",
    "sweep_id",
)
METRIC_PREFIX = "metrics."
PARAM_PREFIX = "params."

# A named loss variant (configs/loss/label_smoothing.yaml: cross_entropy with smoothing)
# is reported as a loss of its own; registry lookups (traits, hyperparameters, appendix
# curves) go to the loss it is a variant of. Filled by ``collect.run_table`` from the
# runs' own tags: the mapping is a fact of the configs, the same for every experiment.
BASE_LOSS: dict[str, str] = {}


def base_loss(name: str) -> str:
    """The registered loss behind a report label (itself, unless it names a variant)."""
    return BASE_LOSS.get(name, name)


def loss_spec(name: str):
    """``loss_info`` for a report label, variants resolved to their base loss."""
    from ..registry import loss_info  # registry only: no trainer, no data

    return loss_info(base_loss(name))

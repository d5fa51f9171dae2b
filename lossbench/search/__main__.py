"""``python -m lossbench.search [search.losses=[a,b,...]] data=<name> [search.n_trials=N] [key=value ...]``

Tune each loss's hyperparameters with Optuna, the same number of trials per loss, and print
each loss's best validation value and parameters. ``loss=a,b`` (or ``choice``, ``glob``) is
shorthand for ``search.losses=[a,b]``; every ``python -m lossbench`` override works; the
options are the ``search`` node (``--cfg job`` prints it). Exit status: 2 for a user's mistake
(``LOSSBENCH_DEBUG=1`` shows the traceback), 130 after Ctrl-C, 1 if a trial failed with an error.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .. import tracking
from ..configs import CONFIG_DIR
from ..errors import LossbenchError, command_exits, refuse_multirun
from .study import TAG_BEST, LossOutcome, format_params, normalize_overrides, run_search

_MULTIRUN = (
    "python -m lossbench.search runs its studies itself and takes no -m/--multirun. Name several "
    "losses with search.losses=[a,b]; for several data sets, run the command once per data set."
)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="search")
def _app(cfg: DictConfig) -> None:
    refuse_multirun(_MULTIRUN)
    again = "run the same command again to run it anew and continue the studies."
    with command_exits(f"the running trial is recorded as KILLED in MLflow; {again}"):
        outcomes = run_search(list(HydraConfig.get().overrides.task))
    print_summary(outcomes, str(cfg.tracking.uri))
    if any(o.errors for o in outcomes):  # a trial failed with an error (not a divergence)
        raise SystemExit(1)


def print_summary(outcomes: Sequence[LossOutcome], tracking_uri: str) -> None:
    """The table: each loss, its best validation value and parameters, its trials."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a log file or a pipe: wide enough for the parameters
        console = Console(width=160)
    first = outcomes[0]
    arrow = "higher is better" if first.direction == "maximize" else "lower is better"
    table = Table(title=f"Best {first.objective} per loss ({arrow}), validation split")
    for name in ("loss", f"best {first.objective}", "best parameters", "complete", "pruned", "failed", "budget", "study"):
        table.add_column(name, justify="left" if name in ("loss", "best parameters", "study") else "right")
    scored = [o for o in outcomes if o.best_value is not None]
    pick = max if first.direction == "maximize" else min
    top = pick(scored, key=lambda o: o.best_value).loss if scored else None
    for o in outcomes:
        value = f"{o.best_value:.4f}" if o.best_value is not None else "-"
        style = "bold green" if o.loss == top else None
        table.add_row(
            o.loss, value, format_params(o.best_params) if o.best_value is not None else "-",
            str(o.complete), str(o.pruned), str(o.failed), str(o.budget), o.study_name, style=style,
        )
    console.print(table)
    for o in outcomes:
        if o.note:
            console.print(f"note: {o.loss}: {o.note}")
    console.print(f"Studies: {first.storage}. Every trial is an MLflow run tagged optuna_study/optuna_trial;")
    console.print(f"each loss's best run is tagged {TAG_BEST}=true and carries best_params.json.")
    console.print(f"Open the UI: {tracking.ui_command(tracking_uri)}")


def main() -> None:
    """Refuse -m, turn ``loss=a,b`` into ``search.losses``, check the names, then start Hydra."""
    from ..__main__ import preflight

    try:
        if any(a in ("-m", "--multirun") or a.partition("=")[0].lstrip("+") == "hydra.mode" for a in sys.argv[1:]):
            raise LossbenchError(_MULTIRUN)
        argv = normalize_overrides(sys.argv[1:])
        preflight(argv)
    except LossbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    sys.argv = [sys.argv[0], *argv]
    _app()


if __name__ == "__main__":
    main()

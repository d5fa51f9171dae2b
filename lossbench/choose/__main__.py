"""``python -m lossbench.choose data=<name> [data.*] [choose.*] [tracking.*] [report.*]``

Profile the training split, shortlist losses from the data's traits, sweep them with the same
tuning for every loss, and write the report (the profile as its first section) and
``profile.json`` under ``report.out_dir``. ``choose.profile_only=true`` stops after the
profile. A user's mistake prints one line and exits with status 2 (``LOSSBENCH_DEBUG=1``
shows the traceback); Ctrl-C records the runs in training as KILLED and exits with 130.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ..configs import CONFIG_DIR
from ..errors import LossbenchError, command_exits, refuse_multirun

_MULTIRUN = (
    "python -m lossbench.choose runs its own sweep and takes no -m/--multirun; run it once per data set."
)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="choose")
def _app(cfg: DictConfig) -> None:
    from .flow import run_choose

    refuse_multirun(_MULTIRUN)
    with command_exits("the runs in training are recorded as KILLED; run the same command again to go on."):
        outcome = run_choose(list(HydraConfig.get().overrides.task))
    if outcome.report is None:
        return
    paths = outcome.report
    print(f"Report written to {paths.out_dir}" + ("" if outcome.profile_in_report else
          " (the profile is in profile.md beside it: the report's layout had no place for it)") + ":")
    for p in (paths.html, paths.markdown, paths.summary, outcome.profile_json):
        if p is not None:
            print(f"  {p}")
    summary = outcome.summary or {}
    for s in summary.get("scenarios", []):
        rec = s.get("recommended") or {}
        print(f"Recommended for {s.get('name')}: {rec.get('label') or rec.get('loss') or 'none'} ({s.get('verdict')}; "
              f"objective {s.get('objective')}).")
    if any(r is None or (r.status == "FAILED" and r.failure != "diverged") for r in outcome.results.values()):
        raise SystemExit(1)


def main() -> None:
    from ..__main__ import _register_resolvers
    from .flow import check_overrides

    _register_resolvers()
    try:  # before Hydra starts, so that a mistyped name is one line with a did-you-mean
        check_overrides(sys.argv[1:])
    except LossbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _app()


if __name__ == "__main__":
    main()

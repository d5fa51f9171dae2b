"""``python -m lossbench.report tracking.experiment_name=<name> [tracking.uri=...] [report.out_dir=...]``

A Hydra application over ``configs/report.yaml``. A user's mistake (unknown experiment,
no store at the given URI, a bad option) prints one message and exits with status 2;
set ``LOSSBENCH_DEBUG=1`` to see the traceback too.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from ..configs import CONFIG_DIR
from ..errors import command_exits
from .build import build_report


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="report")
def main(cfg: DictConfig) -> None:
    opts = cfg.report
    formats = OmegaConf.to_container(opts.formats) if OmegaConf.is_list(opts.formats) else [opts.formats]
    with command_exits():
        paths = build_report(cfg.tracking.experiment_name, cfg.tracking.uri, opts.out_dir, alpha=opts.alpha,
                             formats=formats, max_curve_runs=opts.max_curve_runs, appendix=bool(opts.appendix))
    print(f"Report on experiment '{cfg.tracking.experiment_name}' written to {paths.out_dir}:")
    for path in (paths.html, paths.markdown, paths.summary):
        if path is not None:
            print(f"  {path}")
    if paths.figures:
        print(f"  {len(paths.figures)} figure(s) in {paths.out_dir / 'figures'}")


if __name__ == "__main__":
    main()

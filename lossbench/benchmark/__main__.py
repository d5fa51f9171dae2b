"""``python -m lossbench.benchmark {losses,train,startup,report,sweep,choose,store,all} [--device cpu|cuda] [options]``

Prints ratios of two things timed alternately in one process (machines are shared and
absolute times drift), with the absolute medians beside them; ``choose`` measures
``lossbench.choose`` itself (the profile against known traits, the recommendation and its
compute against a full sweep); ``store`` the rate at which parallel writers put runs into
each MLflow store. ``--json PATH`` also writes the results. ``all`` runs every
benchmark in sequence with its defaults.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

_SUBCOMMANDS = ("losses", "train", "startup", "report", "sweep", "choose", "store")
_HELP = {
    "losses": "forward+backward of every loss vs its torch/torchvision counterpart",
    "train": "one lossbench training run vs a hand-written PyTorch loop",
    "startup": "start-up time of the command line vs `python -c 'import torch'`",
    "report": "the report on an MLflow store of many runs (default 1000)",
    "sweep": "a whole `python -m lossbench -m` sweep: batched engine vs engine=sequential",
    "choose": "lossbench.choose on tables with known traits: profile error, pick vs a full sweep, compute",
    "store": "runs/s from 8 writer processes into SQLite, PostgreSQL directly and an MLflow server on it",
}


def _module(name: str) -> Any:
    import importlib

    return importlib.import_module(f"lossbench.benchmark.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lossbench.benchmark",
        description="lossbench's own benchmark: ratios of things timed side by side in one run.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{losses,train,startup,report,sweep,choose,store,all}")
    for name in _SUBCOMMANDS:
        p = sub.add_parser(name, help=_HELP[name], description=(_module(name).__doc__ or "").split("\n\n")[0])
        _module(name).add_arguments(p)
    p = sub.add_parser("all", help="every benchmark in sequence, with its defaults (choose: two of its tables)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N for losses, train, sweep and choose (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for train (default: torch's choice)")
    p.add_argument("--store", metavar="DIR", help="keep / reuse the report benchmark's generated MLflow store here")
    p.add_argument("--json", metavar="PATH", help="also write all results as one JSON file")
    return parser


def _defaults(name: str, args: argparse.Namespace) -> argparse.Namespace:
    """The subcommand's default arguments, with what ``all`` passes on."""
    p = argparse.ArgumentParser()
    _module(name).add_arguments(p)
    argv: list[str] = []
    if name in ("losses", "train", "sweep", "choose"):
        argv += ["--device", args.device]
    if name == "train" and args.threads:
        argv += ["--threads", str(args.threads)]
    if name == "report" and args.store:
        argv += ["--store", args.store]
    if name == "choose":  # two of its tables: all twelve take minutes
        from .choose import QUICK

        argv += ["--tables", ",".join(QUICK)]
    sub = p.parse_args(argv)
    sub.json = None
    return sub


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    warnings.filterwarnings("ignore", message=r".*Filesystem tracking backend.*")
    args = build_parser().parse_args(argv)
    from ..errors import LossbenchError

    try:
        if args.command != "all":
            return _module(args.command).run(args)
        out: dict[str, Any] = {}
        for name in _SUBCOMMANDS:
            print(f"\n=== {name} ===", flush=True)
            out[name] = _module(name).run(_defaults(name, args))
        if args.json:
            from . import write_json

            write_json(args.json, {"benchmark": "all", "results": out})
        return out
    except LossbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

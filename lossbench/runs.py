"""Find and settle runs left RUNNING by a process that was killed (``kill -9``, a lost node).

    python -m lossbench.runs --stuck                  # list RUNNING runs and whether their process lives
    python -m lossbench.runs --stuck --settle         # end KILLED those whose process on this host is gone
    python -m lossbench.runs --stuck --settle --older-than 24
                                                      # also those of other hosts started over 24 h ago

A run records its process as ``owner`` (``host:pid``). Only a process on this host can be
checked; a run of another host (or one from before the tag existed) is settled only with
``--older-than``. Every run and sweep also settles its own config's stuck runs as it starts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from . import schema as S
from . import tracking
from .errors import LossbenchError


def stuck_runs(uri: str, experiment: str | None) -> list[Any]:
    """RUNNING runs of one experiment (or of all), oldest first."""
    c = tracking.client(uri)
    if experiment:
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            raise LossbenchError(f"No MLflow experiment '{experiment}' at {uri}. Leave out --experiment to look in all.")
        ids = [exp.experiment_id]
    else:
        ids = [e.experiment_id for e in c.search_experiments()]
    if not ids:
        return []
    runs = c.search_runs(ids, filter_string="attributes.status = 'RUNNING'", max_results=50000)
    return sorted(runs, key=lambda r: r.info.start_time or 0)


def _state(run: Any) -> str:
    gone = tracking.owner_gone(run.data.tags.get(S.TAG_OWNER))
    return {True: "process gone", False: "process alive", None: "another host or unknown"}[gone]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lossbench.runs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stuck", action="store_true", required=True, help="list runs left RUNNING")
    parser.add_argument("--settle", action="store_true", help="end KILLED those whose process is gone")
    parser.add_argument("--older-than", type=float, metavar="HOURS", help="with --settle: also runs of other hosts started longer ago")
    parser.add_argument("--uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"), help="the MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--experiment", help="only this experiment (default: all)")
    args = parser.parse_args(argv)
    if args.older_than is not None and (args.older_than < 0 or not args.settle):
        parser.error("--older-than takes a number of hours >= 0, with --settle")
    if args.uri.startswith("sqlite:///") and not os.path.exists(args.uri[len("sqlite:///"):]):
        print(f"error: no MLflow store at {args.uri}. Pass --uri or run from the folder that holds mlflow.db.", file=sys.stderr)
        return 2
    try:
        runs = stuck_runs(args.uri, args.experiment)
    except LossbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    print(f"{len(runs)} run(s) RUNNING at {args.uri}")
    settled = 0
    for r in runs:
        hours = (now - (r.info.start_time or 0) / 1000) / 3600
        state = _state(r)
        note = ""
        if args.settle:
            if state == "process gone":
                settled += len(tracking.settle_stuck(args.uri, [r]))
                note = " -> KILLED"
            elif state != "process alive" and args.older_than is not None and hours >= args.older_than:
                why = f"still RUNNING {hours:.1f} h after it started; settled by python -m lossbench.runs --older-than {args.older_than:g}"
                tracking.Run(args.uri, r.info.run_id).end("KILLED", {S.TAG_SETTLED: why})
                settled += 1
                note = " -> KILLED"
        owner = r.data.tags.get(S.TAG_OWNER, "?")
        print(f"  {r.info.run_name}  {r.info.run_id}  started {hours:.1f} h ago  owner {owner}: {state}{note}")
    if args.settle:
        print(f"settled {settled} run(s) as KILLED")
    elif any(_state(r) == "process gone" for r in runs):
        print("Settle them with: python -m lossbench.runs --stuck --settle")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""List the registered losses: ``python -m lossbench.losses [--task T] [--trait T] [--json]``.

``--write-configs DIR`` (for maintainers) writes one flat Hydra config per loss, plus one
per alias, so that ``loss=<name> loss.<param>=<value>`` works from the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from ..errors import LossbenchError
from ..registry import LOSSES, TASKS, TRAITS, LossSpec, list_losses, loss_info

# parameters a config file does not carry: training always reduces by the mean, and the
# data supplies what a loss `needs` (a user may still set them with `+loss.<name>=...`)
_NOT_IN_CONFIG = ("reduction",)


def config_for(spec: LossSpec) -> dict:
    cfg: dict = {"name": spec.name}
    for p in spec.params:
        if p.name in _NOT_IN_CONFIG or p.name in spec.needs:
            continue
        cfg[p.name] = spec.example.get(p.name, p.default)
    return cfg


def write_configs(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in LOSSES.specs():
        header = f"# {spec.name}: {spec.description}\n"
        if spec.reference:
            header += f"# Reference: {spec.reference}\n"
        header += "# Generated from the loss registry by `python -m lossbench.losses --write-configs configs/loss`.\n"
        path = out / f"{spec.name}.yaml"
        path.write_text(header + yaml.safe_dump(config_for(spec), sort_keys=False))
        written.append(path)
        for alias in spec.aliases:
            apath = out / f"{alias}.yaml"
            apath.write_text(
                f"# {alias}: an alias of {spec.name}.\n# Generated from the loss registry.\n"
                + yaml.safe_dump({"defaults": [spec.name, "_self_"]}, sort_keys=False)
            )
            written.append(apath)
    return written


def _params_text(spec: LossSpec) -> str:
    parts = []
    for p in spec.params:
        if p.name == "reduction":
            continue
        parts.append(f"{p.name}={p.default!r}" if p.name not in spec.needs else f"{p.name} (from data)")
    return ", ".join(parts) or "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lossbench.losses", description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=TASKS, help="only losses that fit this task")
    ap.add_argument("--trait", choices=TRAITS, help="only losses with this trait")
    ap.add_argument("--json", action="store_true", help="print the full specs as JSON")
    ap.add_argument("--write-configs", metavar="DIR", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        if args.write_configs:
            paths = write_configs(args.write_configs)
            print(f"wrote {len(paths)} loss configs to {args.write_configs}")
            return 0
        names = list_losses(task=args.task, trait=args.trait)
    except LossbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    specs = [loss_info(n) for n in names]
    if args.json:
        print(json.dumps([s.as_dict() for s in specs], indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    wide = console.width >= 140  # the description column only where it fits
    table = Table(title=f"lossbench losses ({len(specs)})", show_lines=False)
    table.add_column("loss", no_wrap=True, style="bold")
    for col in ("tasks", "hyperparameters", "traits") + (("description",) if wide else ()):
        table.add_column(col, overflow="fold")
    for s in specs:
        name = s.name + (f" ({', '.join(s.aliases)})" if s.aliases else "")
        row = [name, ", ".join(s.tasks), _params_text(s), ", ".join(sorted(t.replace("_", " ") for t in s.traits))]
        table.add_row(*row, *([s.description] if wide else []))
    console.print(table)
    if not wide:
        console.print("Descriptions and references: python -m lossbench.losses --json (or a wider terminal).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

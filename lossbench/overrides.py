"""Command-line overrides read with Hydra's own parser, so every syntax Hydra takes works.

``key=value``, ``+key=value``, ``~key``, comma lists, ``choice(...)``, ``range(...)``,
``interval(...)``, ``glob(...)``, ``sort(...)``: :func:`parse` turns each into Hydra's
:class:`~hydra.core.override_parser.types.Override`; :func:`names` lists the config names
one picks from a group. Used by the pre-flight check of ``python -m lossbench`` and by
the search, which reads ``loss=a,b`` itself.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ParameterError, did_you_mean, unknown_name

_SIMPLE = re.compile(r"[\w./:@+-]+", re.ASCII)  # a string that may need no quotes (Hydra's lexer: ASCII)
# config groups a user picks by name on the command line
GROUPS = ("loss", "data", "model", "optimizer", "trainer", "scheduler", "experiment", "tracking")


@functools.cache
def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def value_text(v: Any) -> str:
    """A Python value as Hydra's override grammar writes it, to be read back as the same value:
    ``null``, ``true``, numbers exactly (``repr``), ``[a,b]``, ``{k:v}``, and a string quoted
    unless Hydra reads it bare as that same string (``'10'``, ``'true'``, ``'my data.csv'`` are quoted)."""
    if type(v).__module__ == "numpy" and hasattr(v, "tolist"):  # a numpy scalar or array: its Python value
        v = v.tolist()
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, Path):
        v = str(v)
    if isinstance(v, str):
        if _SIMPLE.fullmatch(v) and _reads_back(v):
            return v
        # in quotes Hydra reads a backslash as itself, except in a run before a quote or the end: double those
        return "'" + re.sub(r"(\\*)('|\Z)", lambda m: 2 * m[1] + "\\" * len(m[2]) + m[2], v) + "'"
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}:{value_text(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ",".join(value_text(x) for x in v) + "]"
    raise ParameterError(f"Cannot write {v!r} ({type(v).__name__}) as an override value; give a string, number, bool, "
                         f"None, list or dict.")


@functools.lru_cache(maxsize=4096)  # a sweep writes the same folder and store into every job
def _reads_back(text: str) -> bool:
    """Whether Hydra reads ``text``, bare, as that same string (not a number, bool or null)."""
    try:
        return parse(f"k={text}").value() == text
    except ParameterError:
        return False


def is_override(arg: str) -> bool:
    """Whether a command-line argument is an override (not a flag like ``-m`` or the ``job`` of ``--cfg job``)."""
    return not arg.startswith("-") and ("=" in arg or arg.startswith("~"))


def parse(arg: str) -> Any:
    """One override as Hydra reads it; a malformed one is a :class:`LossbenchError` naming it."""
    from hydra.errors import OverrideParseException

    try:
        return _parser().parse_overrides([arg])[0]
    except OverrideParseException as exc:
        reason = str(exc).splitlines()[0]
        raise ParameterError(
            f"Cannot read the override {arg!r} ({reason}). Write key=value, and quote a value with "
            "special characters, e.g. key='a value'."
        ) from None


@functools.lru_cache(maxsize=4096)  # Hydra's parser takes a few ms an override
def key(arg: str) -> str:
    """The config key or group an override sets (``loss.gamma`` for ``+loss.gamma=1``); '' for a flag."""
    return parse(arg).key_or_group if is_override(arg) else ""


def names(override: Any, options: Iterable[str]) -> list[str]:
    """The names an override of a group or of a list of names picks: ``a``, ``[a,b]``, ``a,b``,
    ``choice(a,b)``, ``range(...)``, ``glob(...)`` (matched against ``options``)."""
    from hydra.core.override_parser.types import Glob

    value = override.value()
    what = override.input_line or override.key_or_group
    if isinstance(value, Glob):
        found = value.filter(sorted(options))
        if not found:
            raise ParameterError(f"{what} matches none of: {', '.join(sorted(options))}. Widen the pattern.")
        return found
    if override.is_interval_sweep():
        raise ParameterError(f"{what} is a range of numbers; {override.key_or_group} takes names, like a,b or glob(a*).")
    if override.is_discrete_sweep():
        return list(override.sweep_string_iterator())
    values = value if isinstance(value, list) else [value]
    return [str(v) for v in values if v not in (None, "")]


def check_choices(argv: Sequence[str], config_dir: str | Path) -> None:
    """Refuse, before Hydra starts, an unknown name in a group override (``loss=hubr``,
    ``loss=glob(xyz*)``) with a did-you-mean, and an interval that no sweeper here samples."""
    parsed = [parse(arg) for arg in argv if is_override(arg)]
    for o in parsed:
        if o.is_interval_sweep() and not any(p.key_or_group == "hydra/sweeper" for p in parsed):
            raise ParameterError(
                f"{o.input_line}: Hydra's basic sweeper cannot sample an interval. List values instead "
                f"({o.key_or_group}=choice(a,b,c) or range(start,stop,step)), or tune it with python -m lossbench.search."
            )
        if o.key_or_group not in GROUPS or o.is_delete():
            continue
        where = Path(config_dir) / o.key_or_group
        options = sorted(p.stem for p in where.glob("*.yaml"))
        for name in names(o, options):
            if name not in options:
                raise unknown_name(o.key_or_group, name, options, hint=f"The {o.key_or_group} configs live in {where}.")


def _chosen(group: str, parsed: Sequence[Any], config_dir: Path) -> list[str]:
    """The configs a run picks from ``group``: the command line's, else the main config's default."""
    for o in parsed:
        if o.key_or_group == group and not o.is_delete():
            return names(o, sorted(p.stem for p in (config_dir / group).glob("*.yaml")))
    for entry in load_config(config_dir / "train.yaml").get("defaults", []):
        if isinstance(entry, dict) and group in entry and entry[group]:
            return [str(entry[group])]
    return []


@functools.cache
def load_config(path: Path) -> dict[str, Any]:
    """A config file's YAML, read once per process."""
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def _group_config(config_dir: Path, group: str, name: str) -> dict[str, Any]:
    """A group's config with the configs its ``defaults`` list pulls in from the same group."""
    own = dict(load_config(config_dir / group / f"{name}.yaml"))
    merged: dict[str, Any] = {}
    for entry in own.pop("defaults", []) or []:
        if isinstance(entry, str) and entry != "_self_" and (config_dir / group / f"{entry}.yaml").exists():
            merged.update(_group_config(config_dir, group, entry))
    merged.update(own)
    return merged


def check_keys(argv: Sequence[str], config_dir: str | Path) -> None:
    """Refuse a key no config has (``data.n_sampels=300``), naming the key meant, before Hydra
    answers with its own multi-line error. New keys take ``+`` (``+trainer.profiler=simple``)."""
    config_dir = Path(config_dir)
    parsed = [parse(arg) for arg in argv if is_override(arg)]
    if any(o.key_or_group == "experiment" for o in parsed):
        return  # an experiment may pick other configs: Hydra's own check stands
    top = set(load_config(config_dir / "train.yaml")) - {"defaults", "hydra"}
    for o in parsed:
        k = o.key_or_group
        if k == "hydra.launcher.n_jobs" and not o.is_sweep_override():
            n = o.value()
            if isinstance(n, bool) or not isinstance(n, int) or n == 0:
                raise ParameterError(
                    f"hydra.launcher.n_jobs must be a number of workers (1, 2, ...; -1 for one per core). Got {n!r}."
                )
        if o.is_delete() or k.startswith("hydra") or "/" in k:
            continue
        group, _, rest = k.partition(".")
        if (o.is_add() or o.is_force_add()) and rest:
            continue  # a new key inside a config: the loss, data and trainer checks name what they take
        if not rest:
            if k not in top and k not in GROUPS and not (config_dir / k).is_dir():
                known = sorted(top | {g for g in GROUPS if (config_dir / g).is_dir()})
                raise ParameterError(f"Unknown setting '{k}'.{did_you_mean(k, known)} Settings: {', '.join(known)}.")
            continue
        if not (config_dir / group).is_dir():
            continue
        for name in _chosen(group, parsed, config_dir):
            node: Any = _group_config(config_dir, group, name)
            for i, part in enumerate(rest.split(".")):
                if not isinstance(node, dict):
                    break
                if part not in node:
                    where = ".".join([group, *rest.split(".")[:i]])
                    keys = [x for x in node if not x.startswith("_")]
                    raise ParameterError(
                        f"{group} '{name}' has no setting '{where}.{part}'.{did_you_mean(part, keys)} "
                        f"Its settings: {', '.join(keys)}. To add a new one, write +{k}=..."
                    )
                node = node[part]


__all__ = ["GROUPS", "check_choices", "check_keys", "is_override", "key", "load_config", "names", "parse"]

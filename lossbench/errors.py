"""Errors that lossbench raises for a user's mistake.

A :class:`LossbenchError` carries a message that names the problem and the fix. The
command line prints it without a traceback and exits non-zero; ``LOSSBENCH_DEBUG=1``
shows the traceback too. Everything else is a bug or an environment failure and keeps
its traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path


class LossbenchError(ValueError):
    """A user-facing error: bad configuration, bad data, bad input.

    Subclasses ``ValueError`` so that code catching ``ValueError`` around a loss call
    keeps working.
    """


class UnknownNameError(LossbenchError, KeyError):
    """A name (loss, dataset, model, experiment, parameter) that is not registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class ParameterError(LossbenchError):
    """A hyperparameter of the wrong type or outside its valid range."""


class DataError(LossbenchError):
    """Input data that cannot be used as given (missing file, NaN, wrong shape, ...)."""


class TrackingError(LossbenchError):
    """The MLflow tracking store cannot be reached or used."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str], hint: str = "") -> UnknownNameError:
    """Build the one message format for an unknown name of any kind."""
    choices = sorted(choices)
    msg = f"Unknown {kind} '{name}'.{did_you_mean(name, choices)} Available: {', '.join(choices)}."
    if hint:
        msg += f" {hint}"
    return UnknownNameError(msg)


def path_blocker(path: Path, *, file: bool) -> tuple[str, Path] | None:
    """What stops this process making and writing ``path`` (a file where ``file``, else a folder),
    checked before any work: ``("file", p)`` where p, the nearest part of the path that exists, is a
    file, not a folder; ``("read-only", p)`` where the file itself, or that nearest folder, cannot be
    written; None where nothing stands in the way."""
    probe = path.parent if file else path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return "file", probe
    if file and path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return "read-only", path
    return None if os.access(probe, os.W_OK | os.X_OK) else ("read-only", probe)


@contextlib.contextmanager
def command_exits(interrupted: str | None = None) -> Iterator[None]:
    """Around a command's work: a :class:`LossbenchError` prints one line and exits 2
    (``LOSSBENCH_DEBUG=1`` re-raises it); with ``interrupted``, Ctrl-C prints it and exits 130."""
    try:
        yield
    except LossbenchError as exc:
        if os.environ.get("LOSSBENCH_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(f"\nInterrupted: {interrupted}", file=sys.stderr)
        raise SystemExit(130) from None


def refuse_multirun(message: str) -> None:
    """Exit 2 with ``message`` when a command that runs its own sweep is started with -m."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.get().mode == RunMode.MULTIRUN:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)

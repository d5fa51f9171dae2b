"""lossbench from Python (a notebook, a script): ``run``, ``sweep`` and ``choose``, results as DataFrames.

Every function takes the command line's overrides, as strings (``"loss=huber"``,
``"data.outlier_fraction=0.3"``) or as keywords (``loss="huber"``,
``data__outlier_fraction=0.3`` or ``**{"data.outlier_fraction": 0.3}``), and composes the
same Hydra config the command line would. Runs go to MLflow exactly as from the command
line; the functions return them as the DataFrame of :func:`mlflow.search_runs` (one row per
run: ``run_id``, ``status``, ``metrics.*``, ``params.*``, ``tags.*``), restricted to the runs
the call made or found already FINISHED. A user's mistake raises
:class:`~lossbench.errors.LossbenchError` before any run is made.

>>> import lossbench
>>> lossbench.run(loss="huber", data="regression_outliers", trainer__max_epochs=5)   # doctest: +SKIP
>>> lossbench.sweep("loss=mse,l1,huber", seed=range(5))                              # doctest: +SKIP
>>> result = lossbench.choose(df, target="price")                                    # doctest: +SKIP
>>> result.recommended, result.runs, result.profile["outlier_fraction"]              # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LossbenchError
from .overrides import value_text

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ChooseResult", "choose", "run", "sweep"]

# --------------------------------------------------------------------------- overrides
def overrides_from(args: Sequence[Any], kwargs: Mapping[str, Any], *, sweep: bool = False,
                   shortcuts: Iterable[str] = (), prefix: str = "") -> list[str]:
    """Overrides from positional strings (or lists of them) and keywords.

    A keyword's ``__`` stands for ``.``; keywords named in ``shortcuts`` go under ``prefix``
    (``seeds=5`` -> ``choose.seeds=5``). With ``sweep``, a list, tuple or range is a sweep over
    its items (``seed=range(3)`` -> ``seed=0,1,2``); pass a list-valued setting as a string
    (``"model.hidden=[64,64]"``).
    """
    out: list[str] = []
    for a in args:
        if isinstance(a, str):
            out.append(a)
        elif isinstance(a, Iterable):
            out.extend(str(x) for x in a)
        else:
            raise LossbenchError(f"Overrides are strings such as 'loss=huber'; got {a!r}.")
    short = set(shortcuts)
    for k, v in kwargs.items():
        key = f"{prefix}{k}" if k in short else k.replace("__", ".")
        if sweep and isinstance(v, list | tuple | range):
            if not len(v):
                raise LossbenchError(f"{key}: an empty list sweeps over nothing; give at least one value.")
            out.append(f"{key}=" + ",".join(value_text(x) for x in v))
        else:
            out.append(f"{key}={value_text(v)}")
    return out


def _check(overrides: Sequence[str]) -> None:
    """Group names checked before composing, with a did-you-mean (as the command line does)."""
    from .configs import CONFIG_DIR
    from .overrides import check_choices, check_keys

    check_choices(list(overrides), CONFIG_DIR)
    check_keys(list(overrides), CONFIG_DIR)


# --------------------------------------------------------------------------- MLflow -> DataFrame
def runs_frame(tracking_uri: str, run_ids: Sequence[str]) -> pd.DataFrame:
    """``mlflow.search_runs`` as a DataFrame, for exactly these runs (in their order)."""
    import mlflow
    import pandas as pd

    from . import tracking

    ids = list(dict.fromkeys(r for r in run_ids if r))
    if not ids:
        return pd.DataFrame(columns=["run_id", "experiment_id", "status"])
    client = tracking.client(tracking_uri)
    experiments = sorted({client.get_run(r).info.experiment_id for r in ids})
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        frames = []
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            quoted = ",".join(f"'{r}'" for r in chunk)
            frames.append(mlflow.search_runs(experiment_ids=experiments, filter_string=f"attributes.run_id IN ({quoted})",
                                             output_format="pandas", max_results=len(chunk)))
    finally:
        mlflow.set_tracking_uri(previous)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    order = {r: i for i, r in enumerate(ids)}
    return df.sort_values("run_id", key=lambda s: s.map(order)).reset_index(drop=True)


# --------------------------------------------------------------------------- run and sweep
def _compose_train(overrides: Sequence[str]) -> Any:
    from .choose.flow import compose

    _check(overrides)
    return compose(overrides, config_name="train")


def run(*overrides: str | Sequence[str], **kw: Any) -> pd.DataFrame:
    """One run, as ``python -m lossbench <overrides>``; returns its row of ``mlflow.search_runs``.

    A run already FINISHED with the same config is not run again (``tracking.skip_finished``);
    its row is returned. A run that diverges or fails is recorded and returned with its status.
    """
    from . import pipeline
    from .engine import engine_settings, run_jobs

    ov = overrides_from(overrides, kw)
    cfg = _compose_train(ov)
    engine, max_group = engine_settings(cfg)
    text = " ".join(ov)
    if engine == "batched":
        (result,) = run_jobs([(0, cfg, text)], multirun=False, engine=engine, max_group=max_group).values()
    else:
        result = pipeline.run(cfg, overrides=text)
    return runs_frame(result.tracking_uri, [result.run_id])


def sweep(*overrides: str | Sequence[str], **kw: Any) -> pd.DataFrame:
    """Every combination of the overrides' values, as ``python -m lossbench -m <overrides>``.

    ``sweep("loss=mse,l1", seed=range(5))`` trains 10 runs, compatible ones together as stacked
    groups (``engine``); returns one row per run, in job order. Jobs whose config is invalid
    are recorded FAILED, as in a command-line sweep, and have no row.
    """
    import pandas as pd
    from hydra import compose as hydra_compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra

    from .choose.flow import hydra_context
    from .engine import engine_settings, run_jobs
    from .engine.compose import JobComposer
    from .overrides import parse
    from .pipeline import silence_lightning

    ov = overrides_from(overrides, kw, sweep=True)
    _check(ov)
    # the sweep's jobs as Hydra's basic sweeper expands them, composed as lossbench's sweeper composes them
    jobs_overrides = [job for batch in BasicSweeper.split_arguments([parse(o) for o in ov], None) for job in batch]
    try:
        with hydra_context():
            master = hydra_compose("train", overrides=[], return_hydra_config=True)
            composer = JobComposer(GlobalHydra.instance().config_loader(), master)
            jobs = [(i, composer(list(o)), " ".join(o)) for i, o in enumerate(jobs_overrides)]
    except LossbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - Hydra's composition errors, in one line
        raise LossbenchError(f"Cannot compose the sweep's configs: {exc}") from None
    silence_lightning()
    engine, max_group = engine_settings(jobs[0][1])
    sweep_id = f"api_{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(2)}"  # two sweeps in one second differ
    results = run_jobs(jobs, sweep_id=sweep_id, multirun=True, engine=engine, max_group=max_group)
    done = [results[i] for i in sorted(results) if results[i] is not None]
    if not done:
        return pd.DataFrame(columns=["run_id", "experiment_id", "status"])
    return runs_frame(done[0].tracking_uri, [r.run_id for r in done])


# --------------------------------------------------------------------------- choose
@dataclass
class ChooseResult:
    """What :func:`choose` found: the profile, the shortlist, the runs, and the report's conclusions."""

    profile: dict[str, Any]
    shortlist: pd.DataFrame  # loss, answers, reasons, params
    runs: pd.DataFrame  # one row per run of the sweep (empty with profile_only)
    summary: dict[str, Any] | None  # the report's summary.json
    out_dir: Path
    report_html: Path | None
    report_md: Path | None
    profile_json: Path

    @property
    def recommended(self) -> str | None:
        """The recommended loss (its label, with the setting chosen on validation) of the first scenario."""
        for s in (self.summary or {}).get("scenarios", []):
            rec = s.get("recommended") or {}
            return rec.get("label") or rec.get("loss")
        return None

    @property
    def ranking(self) -> pd.DataFrame:
        """The report's ranking of the first scenario: rank, loss, mean and CI, Holm-adjusted p-value."""
        import pandas as pd

        for s in (self.summary or {}).get("scenarios", []):
            return pd.DataFrame(s.get("ranking") or [])
        return pd.DataFrame()

    def __repr__(self) -> str:
        rec = self.recommended
        return (f"ChooseResult(task={self.profile.get('task')!r}, shortlist={list(self.shortlist['loss'])}, "
                f"runs={len(self.runs)}, recommended={rec!r}, out_dir='{self.out_dir}')")


def _table_digest(df: pd.DataFrame) -> str:
    import pandas as pd

    h = hashlib.sha256()
    h.update("\x1f".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:12]


def choose(df: pd.DataFrame, target: str = "y", *overrides: str | Sequence[str], **kw: Any) -> ChooseResult:
    """``python -m lossbench.choose`` on a DataFrame: profile, shortlist, fair sweep, report.

    The table is written once to ``<report.out_dir>/table-<digest>.csv`` (the same data gives
    the same file, so calling again resumes: finished runs are not repeated) and read back as
    ``data=csv``. Keywords that name a ``choose`` option (``seeds``, ``budget``, ``variants``,
    ``profile_only``...) go to it; the others are overrides as in :func:`run`.
    """
    import pandas as pd

    from .choose.flow import compose, run_choose

    if not isinstance(df, pd.DataFrame):
        raise LossbenchError(f"lossbench.choose takes a pandas DataFrame; got {type(df).__name__}. "
                             f"Wrap your data with pandas.DataFrame(...).")
    if target not in df.columns:
        from .errors import did_you_mean

        raise LossbenchError(f"target={target!r} is not a column of the DataFrame.{did_you_mean(target, map(str, df.columns))} "
                             f"Columns: {', '.join(map(str, df.columns))}.")
    from .choose.plan import DEFAULTS

    ov = overrides_from(overrides, kw, shortcuts=set(DEFAULTS), prefix="choose.")
    taken = [o for o in ov if o.lstrip("+").startswith(("data=", "data.path=", "data.target="))]
    if taken:
        raise LossbenchError(f"lossbench.choose reads the DataFrame as its data; drop {taken[0]!r} (name the column to "
                             f"predict with target=...).")
    ov += ["data=csv", f"data.target={value_text(str(target))}"]
    from .choose.flow import check_overrides

    check_overrides(ov)
    out_dir = Path(str(compose([*ov, "data.path=pending.csv"]).report.out_dir))
    path = out_dir / f"table-{_table_digest(df)}.csv"
    if not path.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
    outcome = run_choose([*ov, f"data.path={value_text(str(path.resolve()))}"])
    shortlist = pd.DataFrame([c.as_dict() for c in outcome.shortlist.candidates])
    runs = runs_frame(outcome.tracking_uri, outcome.run_ids) if outcome.results else pd.DataFrame(
        columns=["run_id", "experiment_id", "status"])
    paths = outcome.report
    return ChooseResult(
        profile=outcome.profile, shortlist=shortlist, runs=runs, summary=outcome.summary, out_dir=outcome.out_dir,
        report_html=getattr(paths, "html", None), report_md=getattr(paths, "markdown", None),
        profile_json=outcome.profile_json,
    )

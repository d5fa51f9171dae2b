"""``run_choose``: profile -> shortlist -> fair sweep -> report, from command-line overrides.

Used by ``python -m lossbench.choose`` and by :func:`lossbench.choose` (the Python API). The
sweep goes through the same engine as ``python -m lossbench -m ...``
(:func:`lossbench.engine.run_jobs`: compatible runs train as one stacked group), and every run
is an ordinary lossbench run in MLflow; re-running the same command skips the runs that
already FINISHED.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from .. import schema
from ..errors import LossbenchError
from .plan import DEFAULTS, Plan, check_options, make_plan
from .shortlist import Shortlist, default_objective, shortlist

log = logging.getLogger("lossbench")

PROFILE_JSON = "profile.json"
PROFILE_MD = "profile.md"
_OWN_NODES = ("choose", "report", "hydra")


@dataclass
class ChooseOutcome:
    profile: dict[str, Any]
    shortlist: Shortlist
    out_dir: Path
    profile_json: Path
    tracking_uri: str = ""
    experiment_name: str = ""
    plan: Plan | None = None
    sweep_id: str | None = None
    results: dict[int, Any] = field(default_factory=dict)  # job number -> RunResult (None: invalid)
    report: Any = None  # lossbench.report.ReportPaths
    profile_in_report: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.results.values() if r is not None and r.run_id]

    @property
    def summary(self) -> dict[str, Any] | None:
        path = getattr(self.report, "summary", None)
        return json.loads(Path(path).read_text(encoding="utf-8")) if path and Path(path).is_file() else None


def hydra_context() -> contextlib.AbstractContextManager[Any]:
    """Hydra's config search over lossbench's configs: the running app's, or one opened for the call."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ..configs import CONFIG_DIR

    if GlobalHydra.instance().is_initialized():
        return contextlib.nullcontext()
    return initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR))


def compose(overrides: Sequence[str], config_name: str = "choose") -> DictConfig:
    """The config composed with ``overrides``, inside a running Hydra app or on its own."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with hydra_context():
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise LossbenchError(f"Cannot compose the config: {exc}") from None


def check_overrides(overrides: Sequence[str]) -> None:
    """What the command line checks before Hydra starts (group names, setting names, with a
    did-you-mean), plus choose's own: its options' names, no loss, no sweep."""
    from ..configs import CONFIG_DIR
    from ..errors import ParameterError, did_you_mean
    from ..overrides import check_choices, check_keys, is_override

    overrides = [o for o in overrides if is_override(o)]
    check_choices(list(overrides), CONFIG_DIR)
    check_keys(list(overrides), CONFIG_DIR)
    known = list(DEFAULTS)
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key.startswith("choose.") and key.split(".")[1] not in known:
            name = key.split(".")[1]
            raise ParameterError(f"Unknown choose option '{name}'.{did_you_mean(name, known)} Options: {', '.join(known)}.")
        if key == "loss" or key.startswith("loss."):
            raise LossbenchError(
                f"python -m lossbench.choose picks the losses itself; drop {o!r} (add a loss to the shortlist with "
                f"choose.extra_losses=[name])."
            )
        if "," in o.split("=", 1)[-1] and not o.split("=", 1)[-1].lstrip().startswith(("[", "{")):
            raise LossbenchError(
                f"{o!r} is a sweep; python -m lossbench.choose runs its own sweep over one data set. Give one value."
            )


def job_config(base: DictConfig) -> DictConfig:
    """A run's config: the composed choose config less the nodes only choose reads."""
    cfg = base.copy()
    with open_dict(cfg):
        for k in _OWN_NODES:
            if k in cfg:
                del cfg[k]
    return cfg


def write_profile(out_dir: Path, profile: Mapping[str, Any], sl: Shortlist, plan: Plan | None) -> Path:
    """``profile.json``: the profile's headline numbers at the top, every measure under ``traits``."""
    task = profile["task"]
    data: dict[str, Any] = {"task": task, "data": profile.get("data"), "n_samples": profile["n_samples"]}
    if task == "regression":
        data["outlier_fraction"] = profile["outlier_fraction"]["value"]
    else:
        data["imbalance_ratio"] = profile["imbalance_ratio"]
        if profile.get("clean_imbalance_ratio"):  # estimated for the true labels (label noise moves rows)
            data["clean_imbalance_ratio"] = profile["clean_imbalance_ratio"]["value"]
        data["label_noise"] = profile["label_noise"]["value"]
    data["objective"], data["objective_reason"] = sl.objective, sl.objective_reason
    data["shortlist"] = [c.as_dict() for c in sl.candidates]
    data["notes"] = list(profile.get("notes") or []) + list(sl.notes)
    if plan is not None:
        data["sweep"] = {"runs": plan.n_runs, "variants_per_loss": plan.variants, "seeds": list(plan.seeds),
                         "budget": plan.budget, "settings": [
                             {"loss": s.loss, "variant": s.index, "params": dict(s.params), "lr": s.lr}
                             for s in plan.settings]}
    data["traits"] = {k: v for k, v in profile.items() if k not in ("notes",)}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PROFILE_JSON
    path.write_text(json.dumps(_plain(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _plain(x: Any) -> Any:
    if isinstance(x, float):
        return None if not math.isfinite(x) else x
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if hasattr(x, "item"):  # numpy scalars
        return _plain(x.item())
    return x


def run_choose(
    overrides: Sequence[str] = (),
    *,
    printer: Callable[[str], None] = print,
    profile_only: bool | None = None,
) -> ChooseOutcome:
    """Profile, shortlist, sweep and report for the data that ``overrides`` choose.

    Raises :class:`LossbenchError` for a user's mistake, before any run is made.
    """
    from .profile import profile_config
    from .render import terminal

    overrides = list(overrides)
    check_overrides(overrides)
    tic = time.monotonic()
    base = compose(overrides)
    opts = check_options(OmegaConf.to_container(base.choose, resolve=True))  # type: ignore[arg-type]
    if profile_only is not None:
        opts["profile_only"] = bool(profile_only)
    c = OmegaConf.to_container(job_config(base), resolve=True)
    from ..pipeline import _SEED

    assert isinstance(c, dict)
    c["seed"] = _SEED.check("seed", c.get("seed", 0))
    report_opts = OmegaConf.to_container(base.report, resolve=True)
    assert isinstance(c, dict) and isinstance(report_opts, dict)
    out_dir = Path(str(report_opts["out_dir"]))
    uri, exp_name = str(c["tracking"]["uri"]), str(c["tracking"]["experiment_name"])

    profile = profile_config(c, max_rows=opts["profile_rows"])
    sl = shortlist(profile, max_per_trait=opts["max_per_trait"], extra=opts["extra_losses"])
    sl.objective, sl.objective_reason = default_objective(profile, c["data"])
    sl.notes.insert(0, f"Objective: {sl.objective_reason}")
    higher = schema.HIGHER_IS_BETTER.get(sl.objective, False)
    profile["objective"] = {"metric": sl.objective, "mode": "max" if higher else "min"}
    seconds = {"profile": round(time.monotonic() - tic, 2)}
    printer(terminal(profile, sl))
    outcome = ChooseOutcome(profile, sl, out_dir, out_dir / PROFILE_JSON, uri, exp_name, seconds=seconds)
    if opts["profile_only"]:
        outcome.profile_json = write_profile(out_dir, profile, sl, None)
        printer(f"Profile written to {outcome.profile_json} (choose.profile_only=true: no runs).")
        return outcome

    plan = make_plan(sl.candidates, opts, first_seed=int(c.get("seed", 0)))
    outcome.plan = plan
    outcome.profile_json = write_profile(out_dir, profile, sl, plan)
    if not c["data"].get("objective"):  # the objective the profile chose; the user's own is in the overrides
        overrides = [*overrides, f"data.objective={sl.objective}"]
    jobs = build_jobs(overrides, plan)
    printer(f"Sweep: {plan.describe()}; MLflow experiment '{exp_name}' at {uri}.")
    tic = time.monotonic()
    outcome.sweep_id = f"choose_{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(2)}"
    outcome.results = sweep(jobs, c, outcome.sweep_id, printer)
    outcome.seconds["sweep"] = round(time.monotonic() - tic, 2)
    tic = time.monotonic()
    outcome.report, outcome.profile_in_report = report(outcome, report_opts)
    outcome.seconds["report"] = round(time.monotonic() - tic, 2)
    return outcome


def build_jobs(overrides: Sequence[str], plan: Plan) -> list[tuple[int, DictConfig, str]]:
    """Every (setting, seed) as a composed run config; one composition per loss."""
    bases: dict[str, DictConfig] = {}
    jobs = []
    num = 0
    for s in plan.settings:
        if s.loss not in bases:
            bases[s.loss] = job_config(compose([*overrides, f"loss={s.loss}"]))
        for seed in plan.seeds:
            cfg = bases[s.loss].copy()
            with open_dict(cfg):
                cfg.seed = seed
                for k, v in s.params.items():
                    cfg.loss[k] = v
                if s.lr is not None:
                    cfg.optimizer.lr = s.lr
            text = " ".join([*overrides, *s.overrides(), f"seed={seed}"])
            jobs.append((num, cfg, text))
            num += 1
    return jobs


def sweep(jobs: list[tuple[int, DictConfig, str]], c: Mapping[str, Any], sweep_id: str,
          printer: Callable[[str], None]) -> dict[int, Any]:
    """Train the jobs with the project's engines (stacked groups where they fit)."""
    from ..engine import engine_settings, run_jobs
    from ..pipeline import silence_lightning

    silence_lightning()
    engine, max_group = engine_settings(c)
    done = [0]

    def emit(num: int, result: Any, overrides: str) -> None:
        done[0] += 1
        if result is None:
            return
        key = f"test_{result.objective}"
        shown = f" {key}={result.metrics[key]:.4g}" if key in result.metrics else ""
        status = result.failure or result.status.lower()
        printer(f"[{done[0]}/{len(jobs)}] {status:9s} {result.run_name}{shown}")

    results = run_jobs(jobs, sweep_id=sweep_id, multirun=True, engine=engine, max_group=max_group, emit=emit)
    bad = [n for n, r in results.items() if r is None or (r.status == "FAILED" and r.failure != "diverged")]
    if bad:
        printer(f"{len(bad)} run(s) failed with an error; the report counts them against their loss.")
    return results


def report(outcome: ChooseOutcome, opts: Mapping[str, Any]) -> tuple[Any, bool]:
    """The experiment's report, with the profile as its first section, and profile.md beside it."""
    from ..report import build_report
    from .render import html_section, insert_into_report, markdown

    formats = opts.get("formats") or ["html", "md"]
    paths = build_report(
        outcome.experiment_name, outcome.tracking_uri, outcome.out_dir, alpha=float(opts.get("alpha", 0.05)),
        formats=list(formats) if isinstance(formats, list | tuple) else [formats],
        max_curve_runs=int(opts.get("max_curve_runs", 200)), appendix=bool(opts.get("appendix", True)),
    )
    plan_text = outcome.plan.describe() if outcome.plan else None
    md = markdown(outcome.profile, outcome.shortlist, plan_text)
    (outcome.out_dir / PROFILE_MD).write_text(md, encoding="utf-8")
    inserted = insert_into_report(paths.markdown, paths.html, md, html_section(outcome.profile, outcome.shortlist, plan_text))
    return paths, inserted

"""The report on a large MLflow experiment: ``build_report`` over N runs (default 1000).

A temporary SQLite store is filled with N synthetic runs written the way the training side
writes them (:mod:`lossbench.schema`): the run name, the tags (loss, data, model, task,
seed, scenario, objective, config hash, loss params ...), the flattened resolved config
composed by Hydra from the shipped configs plus ``data_info.*`` as params, per-epoch
``train_loss`` / ``val_loss`` / ``val_<metric>`` histories, and the final ``test_<metric>``
(per-class recall included) and ``best_val_objective``; a few runs end FAILED (diverged)
part-way. Six scenarios (three imbalanced classification, three regression with outliers),
every loss that fits each, two hyperparameter variants where a loss has a search space,
and as many seeds as it takes to reach N. The runs are written with
``MlflowClient.log_batch`` before any timing; ``--store DIR`` keeps them for the next call.

Timed: ``build_report`` (HTML + Markdown + figures) after one warm-up build, and, alternately
in the same rounds, the collect step alone (``report.runs.run_table``: ``mlflow.search_runs``
turned into the run table), so the split "collect" vs "everything else" (metric histories
for the curves, statistics, figures, rendering) is measured. One more build runs under a
sampling profiler for a breakdown by the report's own modules, whatever they are named
(``--no-profile`` skips it). Goal: 1000 runs in under 10 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import ELSEWHERE, console, describe_machine, machine_info, median, pairwise_ratio, profile_modules, write_json

GOAL_S = 10.0  # for 1000 runs

# (data config, its settings changed from the shipped config, task, objective, objective mode)
SCENARIOS: tuple[tuple[str, dict[str, Any], str, str, str], ...] = (
    ("imbalanced", {"imbalance_ratio": 100.0}, "multiclass", "balanced_accuracy", "max"),
    ("imbalanced", {"imbalance_ratio": 10.0}, "multiclass", "balanced_accuracy", "max"),
    ("imbalanced", {"imbalance_ratio": 100.0, "label_noise": 0.2}, "multiclass", "balanced_accuracy", "max"),
    ("regression_outliers", {"outlier_fraction": 0.0}, "regression", "rmse", "min"),
    ("regression_outliers", {"outlier_fraction": 0.1}, "regression", "rmse", "min"),
    ("regression_outliers", {"outlier_fraction": 0.3}, "regression", "rmse", "min"),
)
N_CLASSES = 10

# The profiled build is broken down by the report's own modules (whatever they are called):
# time in pandas, matplotlib or MLflow counts for the report module that called it.
PROFILE_PREFIX = "lossbench/report/"


# ----------------------------------------------------------------------------- the synthetic store
def _compose(overrides: Sequence[str]) -> dict[str, Any]:
    """The resolved train config for ``overrides``, composed by Hydra from the shipped configs."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from ..configs import CONFIG_DIR

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=["tracking.uri=sqlite:///mlflow.db", *overrides])
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return out


def _loss_node(loss: str) -> dict[str, Any]:
    """The shipped ``configs/loss/<loss>.yaml`` (read directly: a Hydra compose per loss is slow)."""
    from omegaconf import OmegaConf

    from ..configs import CONFIG_DIR

    node = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "loss" / f"{loss}.yaml"), resolve=True)
    assert isinstance(node, dict)
    return node


def _variants(loss: str) -> list[dict[str, Any]]:
    """The loss's hyperparameters as swept: the defaults, and one other value of its first searchable one."""
    from ..registry import loss_info

    spec = loss_info(loss)
    for p in spec.params:
        s = p.search
        if s is None:
            continue
        other: Any = None
        if s.kind == "categorical":
            other = next((c for c in s.choices or () if c != p.default), None)
        else:
            other = next((v for v in (s.low, s.high) if v is not None and v != p.default), None)
            if other is not None:
                other = int(other) if s.kind == "int" else float(other)
        if other is not None:
            return [{}, {p.name: other}]
    return [{}]


def _plan(n_runs: int) -> list[dict[str, Any]]:
    """N run descriptions: scenario x loss x variant, seed-major, so the last seed may be partial."""
    from ..pipeline import scenario_key
    from ..registry import list_losses

    combos = []
    bases: dict[str, dict[str, Any]] = {}
    for data, settings, task, objective, mode in SCENARIOS:
        if data not in bases:
            bases[data] = _compose([f"data={data}"])
        base = bases[data]
        data_node = {**base["data"], **settings}
        scen = scenario_key(data, {k: v for k, v in data_node.items() if k != "name"})
        for loss in list_losses(task=task):
            if loss == "combo" and task == "regression":
                continue  # its shipped config combines classification losses
            for params in _variants(loss):
                cfg = {**base, "data": data_node, "loss": {**_loss_node(loss), **params}}
                combos.append({"cfg": cfg, "loss": loss, "data": data, "task": task, "scenario": scen,
                               "objective": objective, "mode": mode, "params": params})
    seeds = math.ceil(n_runs / len(combos))
    plan = []
    for seed in range(seeds):
        for c in combos:
            if len(plan) == n_runs:
                return plan
            plan.append({**c, "seed": seed})
    return plan


def _metric_values(task: str, quality: float, rng: Any) -> dict[str, float]:
    """Plausible final metrics for a model of the given quality in [0, 1]."""
    from .. import schema

    q = float(min(max(quality, 0.01), 0.99))
    if task == "regression":
        rmse = 0.3 + 2.0 * (1 - q)
        return {"mse": rmse**2, "rmse": rmse, "mae": 0.8 * rmse, "median_ae": 0.6 * rmse, "r2": q}
    out = {
        "accuracy": min(0.99, q + 0.05),
        "balanced_accuracy": q,
        "macro_f1": 0.95 * q,
        "nll": 2.3 * (1 - q) + 0.1,
        "ece": 0.02 + 0.1 * (1 - q),
        "auroc": 0.5 + 0.5 * q,
        "many_shot_accuracy": min(0.99, q + 0.1),
        "medium_shot_accuracy": q,
        "few_shot_accuracy": max(0.0, q - 0.15),
    }
    assert set(out) == set(schema.CLASSIFICATION_METRICS)
    for k in range(N_CLASSES):
        out[f"recall_class_{k}"] = float(min(1.0, max(0.0, q + 0.2 - 0.04 * k + rng.normal(0, 0.02))))
    return out


def generate_store(uri: str, experiment: str, n_runs: int, epochs: int = 20, seed: int = 0) -> str:
    """Fill ``experiment`` at ``uri`` with ``n_runs`` lossbench-shaped runs; returns the experiment id."""
    import zlib

    import numpy as np
    from mlflow.entities import Metric, Param, RunTag

    from .. import __version__, tracking
    from .. import schema as S

    exp_id = tracking.ensure_experiment(uri, experiment)
    client = tracking.client(uri)
    rng = np.random.default_rng(seed)
    t0 = int(time.time() * 1000) - n_runs * 60_000
    sweep = "bench-sweep"
    for i, r in enumerate(_plan(n_runs)):
        cfg = {**r["cfg"], "seed": r["seed"]}
        cfg["data"] = {**cfg["data"], "seed": r["seed"]}
        key = f"{r['scenario']}|{r['loss']}|{json.dumps(r['params'], sort_keys=True)}"
        base_q = 0.55 + 0.3 * (zlib.crc32(key.encode()) % 1000) / 1000  # a fixed quality per variant
        quality = base_q + rng.normal(0, 0.02)
        diverged = rng.random() < 0.03
        loss_params = {k: v for k, v in cfg["loss"].items() if k not in ("name", "class_counts", "reduction")}
        tags = {
            S.TAG_LOSS: r["loss"],
            S.TAG_DATA: r["data"],
            S.TAG_MODEL: str(cfg["model"]["name"]),
            S.TAG_TASK: r["task"],
            S.TAG_SEED: str(r["seed"]),
            S.TAG_VERSION: __version__,
            S.TAG_SWEEP: sweep,
            S.TAG_CONFIG_HASH: tracking.config_hash(cfg),
            S.TAG_SCENARIO: r["scenario"],
            S.TAG_OBJECTIVE: r["objective"],
            S.TAG_OBJECTIVE_MODE: r["mode"],
            S.TAG_LOSS_PARAMS: json.dumps(loss_params, sort_keys=True, default=str),
            S.TAG_OVERRIDES: f"loss={r['loss']} data={r['data']} seed={r['seed']}",
        }
        params = tracking.flatten(cfg)
        params.update({
            "data_info.task": r["task"],
            "data_info.num_classes": None if r["task"] == "regression" else N_CLASSES,
            "data_info.n_train": 1236 if r["task"] != "regression" else 2000,
            "data_info.imbalance_ratio": cfg["data"].get("imbalance_ratio"),
            "data_info.outlier_fraction": cfg["data"].get("outlier_fraction"),
            "data_info.objective": r["objective"],
            "data_info.objective_mode": r["mode"],
        })
        start = t0 + i * 60_000
        run = client.create_run(exp_id, start_time=start, tags=tags, run_name=f"{r['loss']}-{r['data']}-s{r['seed']}")
        rid = run.info.run_id
        finals = _metric_values(r["task"], quality, rng)
        last_epoch = int(rng.integers(1, epochs)) if diverged else epochs
        metrics = []
        val_keys = ["loss", *(k for k in finals if not k.startswith("recall_class_"))]
        for e in range(last_epoch):
            frac = (e + 1) / epochs
            m = _metric_values(r["task"], quality * (0.6 + 0.4 * frac), rng)
            m["loss"] = 2.0 * (1.1 - frac) * (1.2 - quality)
            ts = start + 1000 * e
            metrics.append(Metric("train_loss", 0.9 * m["loss"], ts, e))
            metrics.extend(Metric(f"val_{k}", float(m[k]), ts, e) for k in val_keys)
        end_tags = []
        if diverged:
            metrics.append(Metric("train_loss", float("nan"), start + 1000 * last_epoch, last_epoch))
            end_tags = [RunTag(S.TAG_FAILURE, S.FAILURE_DIVERGED), RunTag(S.TAG_FAILURE_STEP, str(last_epoch * 10))]
        else:
            ts = start + 1000 * epochs
            finals["loss"] = 2.0 * 0.1 * (1.2 - quality)
            metrics.extend(Metric(f"test_{k}", float(v), ts, epochs - 1) for k, v in finals.items())
            metrics.append(Metric(S.METRIC_BEST_VAL, float(finals[r["objective"]]), ts, epochs - 1))
        items = [Param(k, tracking._param_str(v)) for k, v in params.items()]
        # as few log_batch calls as MLflow's limits allow (100 params, 1000 entities per call)
        while items or metrics or end_tags:
            ps, items = items[:100], items[100:]
            room = 1000 - len(ps) - len(end_tags)
            ms, metrics = metrics[:room], metrics[room:]
            client.log_batch(rid, metrics=ms, params=ps, tags=end_tags)
            end_tags = []
        client.set_terminated(rid, "FAILED" if diverged else "FINISHED", end_time=start + 1000 * (last_epoch + 1))
    return exp_id


def _count_runs(uri: str, experiment: str) -> int | None:
    from mlflow.entities import ViewType

    from .. import tracking

    client = tracking.client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    n, token = 0, None
    while True:
        page = client.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=5000,
                                  page_token=token)
        n += len(page)
        token = page.token
        if not token:
            return n


def _generate_sqlite(path: Path, experiment: str, runs: int, epochs: int) -> None:
    """Write the store in memory-backed storage where there is some (every SQLite commit syncs
    the disk, which dominates writing thousands of small transactions), then copy it to ``path``.
    All its transactions are committed by then, so the copy is a consistent database."""
    import shutil

    shm = Path("/dev/shm")
    fast = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="lossbench-bench-", dir=fast) as tmp:
        tmp_db = Path(tmp) / "mlflow.db"
        generate_store(f"sqlite:///{tmp_db}", experiment, runs, epochs=epochs)
        shutil.copyfile(tmp_db, path)


@contextlib.contextmanager
def _store_dir(store: str | None) -> Iterator[Path]:
    if store:
        p = Path(store)
        p.mkdir(parents=True, exist_ok=True)
        yield p
        return
    with tempfile.TemporaryDirectory(prefix="lossbench-bench-report-") as tmp:
        yield Path(tmp)


# ----------------------------------------------------------------------------- benchmark
def bench_report(
    runs: int = 1000,
    rounds: int = 3,
    epochs: int = 20,
    store: str | None = None,
    tracking_uri: str | None = None,
    profile: bool = True,
    warmup: int = 1,
) -> dict[str, Any]:
    """Time ``build_report`` on ``runs`` runs; see the module docstring."""
    from ..errors import LossbenchError

    if runs < 1 or rounds < 1 or epochs < 1 or warmup < 0:
        raise LossbenchError(
            f"--runs, --rounds and --epochs must be >= 1 and --warmup >= 0, got {runs}, {rounds}, {epochs}, {warmup}."
        )
    try:
        from ..report import build_report
        from ..report import runs as collect
    except ImportError as exc:  # the report is built by another part of lossbench
        raise LossbenchError(f"lossbench.report.build_report is not available ({exc}).") from None
    experiment = f"lossbench-benchmark-report-{runs}r-{epochs}e"
    with _store_dir(store) as where:
        uri = tracking_uri or f"sqlite:///{where / 'mlflow.db'}"
        t0 = time.perf_counter()
        db = where / "mlflow.db"
        # never open a store file before it is written in full: MLflow keeps its connections per URI
        existing = _count_runs(uri, experiment) if tracking_uri or db.exists() else None
        if not existing and tracking_uri:
            generate_store(uri, experiment, runs, epochs=epochs)
        elif existing is None:
            _generate_sqlite(db, experiment, runs, epochs)
        elif existing != runs:
            raise LossbenchError(
                f"The experiment {experiment} at {uri} holds {existing} runs, not {runs}; delete {db} or choose "
                f"another --store."
            )
        setup_s = time.perf_counter() - t0

        def build(i: int) -> float:
            t = time.perf_counter()
            build_report(experiment, uri, where / f"report-{i}")
            return time.perf_counter() - t

        def collect_only() -> float:
            t = time.perf_counter()
            client = collect.open_store(uri)
            table, _ = collect.run_table(client, collect.find_experiment(client, experiment))
            elapsed = time.perf_counter() - t
            if len(table) != runs:
                raise RuntimeError(f"the run table has {len(table)} rows, expected {runs}")
            return elapsed

        import logging
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("matplotlib").setLevel(logging.WARNING)
            for _ in range(warmup):  # imports, fonts, the SQLite file in the page cache
                build(0)
            builds, collects = [], []
            for r in range(rounds):
                if r % 2 == 0:
                    builds.append(build(r + 1))
                    collects.append(collect_only())
                else:
                    collects.append(collect_only())
                    builds.append(build(r + 1))
            prof = None
            if profile:
                sampled = profile_modules(lambda: build(rounds + 1), PROFILE_PREFIX)
                prof = {
                    "total_s": sampled["total_s"],
                    "parts": {**{PROFILE_PREFIX + m: sec for m, sec in sampled["modules"].items()},
                              ELSEWHERE: sampled[ELSEWHERE]},
                }
        out_files = sorted(p.name for p in (where / "report-1").iterdir())
    build_med, collect_med = median(builds), median(collects)
    return {
        "runs": runs,
        "epochs": epochs,
        "rounds": rounds,
        "warmup": warmup,
        "store_setup_s": setup_s,
        "store_reused": bool(existing),
        "build_s": builds,
        "collect_s": collects,
        "median_s": {"build": build_med, "collect": collect_med,
                     "rest": None if build_med is None or collect_med is None else build_med - collect_med},
        "ratio": {"collect/build": pairwise_ratio(collects, builds)},
        "goal_s_for_1000_runs": GOAL_S,
        "outputs": out_files,
        "profile": prof,
    }


# ----------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=1000, help="runs in the experiment (default 1000)")
    p.add_argument("--epochs", type=int, default=20, help="epochs of history per run (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="timed builds after one warm-up (default 3)")
    p.add_argument("--store", metavar="DIR", help="keep the generated store in DIR and reuse it next time")
    p.add_argument("--tracking-uri", default=None, help="write the runs into this MLflow store instead")
    p.add_argument("--warmup", type=int, default=1, help="untimed builds first (default 1)")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip the profiled extra build")
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)  # the report runs on the CPU
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def run(args: argparse.Namespace) -> dict[str, Any]:
    res = bench_report(runs=args.runs, rounds=args.rounds, epochs=args.epochs, store=args.store,
                       tracking_uri=args.tracking_uri, profile=args.profile, warmup=args.warmup)
    machine = machine_info("cpu")
    payload = {"benchmark": "report", "machine": machine, **res}
    from rich.table import Table

    out = console()
    m = res["median_s"]
    table = Table(
        title=f"Report on {res['runs']} runs ({res['epochs']} epochs of history each), "
        f"median of {res['rounds']} builds",
        caption=f"goal: 1000 runs in under {GOAL_S:g} s. Store {'reused' if res['store_reused'] else 'written'} in "
        f"{res['store_setup_s']:.1f} s (not timed).",
    )
    table.add_column("part")
    table.add_column("median s", justify="right")
    table.add_column("share", justify="right")
    table.add_row("build_report (HTML + Markdown + figures)", f"{m['build']:.2f}", "100%")
    share = res["ratio"]["collect/build"]
    table.add_row("  collect: run table (timed alone, alternately)", f"{m['collect']:.2f}", f"{100 * share:.0f}%")
    table.add_row("  everything else (histories, statistics, figures, render)", f"{m['rest']:.2f}",
                  f"{100 * (1 - share):.0f}%")
    out.print(table)
    if res["profile"]:
        prof = Table(title=f"One profiled build ({res['profile']['total_s']:.2f} s, sampled), by report module",
                     caption="a module's calls into pandas, matplotlib, MLflow ... count for it")
        prof.add_column("module")
        prof.add_column("s", justify="right")
        prof.add_column("share", justify="right")
        total = res["profile"]["total_s"] or 1.0
        for label, sec in res["profile"]["parts"].items():
            prof.add_row(label, f"{sec:.2f}", f"{100 * sec / total:.0f}%")
        out.print(prof)
    if res["runs"] >= 1000:
        verdict = "within" if m["build"] <= GOAL_S else "over"
        out.print(f"{res['runs']} runs: {m['build']:.2f} s, {verdict} the {GOAL_S:g} s goal.")
    out.print(f"Machine: {describe_machine(machine)}")
    if args.json:
        write_json(args.json, payload)
    return payload

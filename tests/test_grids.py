"""hydra.sweeper.grids: a sweep that is the union of several grids (experiments/reproduce_small.yaml)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from lossbench import schema as S
from lossbench import tracking
from lossbench.engine.grids import grid_jobs


def test_blocks_expand_one_after_another_and_the_command_line_wins():
    parser = OverridesParser.create()
    jobs = grid_jobs(
        parser,
        {"seed": "range(2)", "optimizer.lr": "0.1"},
        [{"loss": "mse,l1", "data": "regression_outliers"}, {"loss": "cross_entropy", "optimizer.lr": "0.5"}],
        ["optimizer.lr=0.2"],
    )
    assert [sorted(j) for j in jobs] == [
        sorted(["seed=0", "loss=mse", "data=regression_outliers", "optimizer.lr=0.2"]),
        sorted(["seed=0", "loss=l1", "data=regression_outliers", "optimizer.lr=0.2"]),
        sorted(["seed=1", "loss=mse", "data=regression_outliers", "optimizer.lr=0.2"]),
        sorted(["seed=1", "loss=l1", "data=regression_outliers", "optimizer.lr=0.2"]),
        sorted(["seed=0", "loss=cross_entropy", "optimizer.lr=0.2"]),
        sorted(["seed=1", "loss=cross_entropy", "optimizer.lr=0.2"]),
    ]
    # without a command-line value, a block's own value wins over the shared params
    assert {o for j in grid_jobs(parser, {"optimizer.lr": "0.1"}, [{"optimizer.lr": "0.5"}], []) for o in j} == {"optimizer.lr=0.5"}


@pytest.mark.slow
def test_reproduce_small_runs_in_ci_size_as_one_sweep_and_one_report(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    cmd = [sys.executable, "-m", "lossbench", "-m", "experiment=reproduce_small", "seed=0", "trainer.max_epochs=2",
           f"tracking.uri={uri}", "trainer.enable_progress_bar=false"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = tracking.client(uri).search_runs(
        [tracking.client(uri).get_experiment_by_name("reproduce_small").experiment_id], max_results=1000
    )
    jobs = [r for r in runs if S.TAG_KIND not in r.data.tags]
    parents = [r for r in runs if S.TAG_KIND in r.data.tags]
    assert len(jobs) == 12 and {r.info.status for r in jobs} == {"FINISHED"}
    assert len(parents) == 1 and {r.data.tags.get("mlflow.parentRunId") for r in jobs} == {parents[0].info.run_id}
    by_data = {}
    for r in jobs:
        by_data.setdefault(r.data.tags[S.TAG_SCENARIO], set()).add(r.data.tags.get(S.TAG_LOSS_VARIANT) or r.data.tags["loss"])
    assert sorted(len(v) for v in by_data.values()) == [3, 4, 5]
    report = subprocess.run(
        [sys.executable, "-m", "lossbench.report", "tracking.experiment_name=reproduce_small", f"tracking.uri={uri}",
         f"report.out_dir={tmp_path}/report"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    text = "\n".join(p.read_text() for p in (tmp_path / "report").rglob("*.md"))
    for loss in ("sce", "mae_softmax", "ldam_drw", "balanced_softmax", "huber"):
        assert loss in text, loss

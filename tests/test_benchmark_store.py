"""``python -m lossbench.benchmark store``: the same runs written into SQLite, PostgreSQL and the server."""

from __future__ import annotations

import argparse

import pytest

from lossbench import LossbenchError
from lossbench.benchmark import store
from lossbench.servers import postgres_missing


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    store.add_arguments(p)
    return p.parse_args(list(argv))


def test_defaults_are_eight_writers_of_forty_runs_on_all_three_stores():
    a = parse()
    assert (a.workers, a.runs_per_worker, a.sides) == (8, 40, None)  # None: all three where PostgreSQL starts


@pytest.mark.parametrize("kw, words", [
    ({"sides": ["sqlite", "mysql"]}, "--sides takes"),
    ({"sides": []}, "--sides takes"),
    ({"workers": 0}, "--workers"),
])
def test_bad_settings_are_one_line_before_any_store_starts(kw, words):
    with pytest.raises(LossbenchError, match=words):
        store.bench_store(progress=False, **kw)


@pytest.mark.slow
def test_every_store_gets_every_run_once_and_a_rate(capfd):
    if postgres_missing():
        pytest.skip(f"needs a local PostgreSQL: {postgres_missing()}")
    payload = store.run(parse("--workers", "2", "--runs-per-worker", "2", "--epochs", "1"))
    r = payload["results"]
    assert payload["benchmark"] == "store"
    assert r["all_landed_once"], r["readback"]
    assert r["errors"] == {"sqlite": 0, "postgres": 0, "server": 0}
    assert all(v and v > 0 for v in r["runs_per_s"].values()), r["runs_per_s"]
    assert set(r["ratio_vs_sqlite"]) == {"postgres/sqlite", "server/sqlite"}
    out = capfd.readouterr().out  # the writer processes print straight to the file descriptor
    assert "PostgreSQL 15, direct" in out and "mlflow server on PostgreSQL" in out
    assert "View run" not in out  # MLflow's per-run URL line is kept out of the table

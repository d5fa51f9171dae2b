"""``python -m lossbench.benchmark choose``: the tables carry the traits they say, the truth is
taken on the split choose profiles, and the errors, tie-set check and compute ratio are what the
runs give.

No speed is asserted (machines are shared); the end-to-end test checks that the subcommand
measures what it says on the real code paths and writes well-formed results.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lossbench.benchmark.__main__ import _defaults, build_parser, main
from lossbench.benchmark.choose import (
    BY_NAME,
    QUICK,
    TABLES,
    TableSpec,
    compare,
    every_loss,
    goals,
    make_table,
    profile_errors,
    training_rows,
    truth,
)
from lossbench.choose.profile import measure
from lossbench.data.tabular import TabularData
from lossbench.errors import LossbenchError


def test_tables_carry_their_injected_traits_and_the_truth_is_on_the_profiled_split(tmp_path):
    for spec in (BY_NAME["reg-out0.25"], BY_NAME["cls-imb10-noise0.2"]):
        t = make_table(spec, rows=300, n_max=100)
        path = tmp_path / f"{spec.name}.csv"
        t.frame.to_csv(path, index=False)
        # the training split reproduced here is the one data=csv draws with seed 0
        s = TabularData(path=str(path), target="y", seed=0, normalize="none", normalize_target="none").load()
        tr = training_rows(t)
        x = t.frame.drop(columns="y").to_numpy()
        assert np.allclose(s.x_train.numpy(), x[tr], atol=1e-5)
        true = truth(t)
        if spec.task == "regression":
            assert len(t.frame) == 300 and t.injected.sum() == 75  # 25% of the rows, gross errors
            assert list(t.frame.columns) == ["x0", "x1", "x2", "x3", "x4", "y"]
            assert true["outlier_fraction"]["truth"] == pytest.approx(t.injected[tr].mean())
        else:
            assert t.clean_labels is not None
            assert np.bincount(t.clean_labels).tolist() == [100, 56, 31, 17, 10]  # exp profile, ratio 10
            assert t.injected.sum() == round(0.2 * len(t.frame))
            assert (t.frame["y"].to_numpy() != t.clean_labels).sum() == t.injected.sum()  # every flip moves the label
            counts = np.bincount(t.clean_labels[tr])
            assert true["imbalance_ratio"]["truth"] == counts.max() / counts.min()
            assert true["imbalance_ratio"]["observed"] != true["imbalance_ratio"]["truth"]  # flips move class counts
            assert true["label_noise"]["truth"] == pytest.approx(t.injected[tr].mean())
    assert make_table(BY_NAME["cls-clean"], n_max=60).frame.equals(make_table(BY_NAME["cls-clean"], n_max=60).frame)
    # the binary tables: two classes, the second the rare one, flipped both ways
    t = make_table(BY_NAME["bin-imb20-noise0.2"], n_max=200)
    assert np.bincount(t.clean_labels).tolist() == [200, 10] and set(t.frame["y"]) == {0, 1}
    assert t.injected.sum() == round(0.2 * 210) and (t.frame["y"].to_numpy() != t.clean_labels).sum() == t.injected.sum()


def test_profile_errors_are_absolute_for_fractions_and_relative_for_the_ratio():
    spec = TableSpec("t", "classification", imbalance_ratio=10.0, label_noise=0.2)
    true = {"imbalance_ratio": {"truth": 10.0, "observed": 4.0}, "label_noise": {"truth": 0.2}}
    rows = profile_errors(spec, {"imbalance_ratio": 4.0, "label_noise": {"value": 0.24, "ci": [0.2, 0.3]}}, true)
    ratio, noise = rows
    assert ratio["trait"] == "imbalance_ratio" and ratio["error_kind"] == "relative"
    assert ratio["error"] == pytest.approx(-0.6) and not ratio["within"] and ratio["observed"] == 4.0
    assert noise["error_kind"] == "absolute" and noise["error"] == pytest.approx(0.04) and noise["within"]
    assert noise["ci"] == [0.2, 0.3]


def test_the_profile_recovers_a_tiny_regression_table():
    spec = BY_NAME["reg-out0.10"]
    t = make_table(spec, rows=300)
    tr = training_rows(t)
    x, y = t.frame.drop(columns="y").to_numpy()[tr], t.frame["y"].to_numpy()[tr]
    (row,) = profile_errors(spec, measure(x, y, "regression"), truth(t))
    assert row["trait"] == "outlier_fraction" and row["injected"] == 0.1
    assert abs(row["error"]) <= 0.05 and row["within"]


def test_compare_reads_the_tie_set_and_the_gap_from_the_reports():
    def summary(rec, tied, ranking, mode="min"):
        return {"scenarios": [{"objective": "test_median_ae", "mode": mode, "recommended": {"loss": rec, "label": rec},
                               "verdict": "tie", "tied": tied, "ranking": ranking}]}

    full = summary("l1", ["cauchy", "l1", "huber"],
                   [{"loss": "cauchy", "mean": 0.20}, {"loss": "l1", "mean": 0.22}, {"loss": "huber", "mean": 0.23},
                    {"loss": "mse", "mean": 0.80}])
    c = compare(summary("huber", ["huber"], [{"loss": "huber", "mean": 0.23}]), full)
    assert c["in_tie_set"] and c["choose_pick"] == "huber" and c["full_best"] == "cauchy"
    assert c["gap"] == pytest.approx(0.03) and c["gap_relative"] == pytest.approx(0.15)
    assert (c["pick_rank_in_full"], c["full_losses_ranked"]) == (3, 4)
    worse = compare(summary("mse", ["mse"], [{"loss": "mse", "mean": 0.8}]), full)
    assert not worse["in_tie_set"] and worse["gap"] == pytest.approx(0.6)
    acc = compare(summary("a", ["a"], []), summary("b", ["b"], [{"loss": "b", "mean": 0.9}, {"loss": "a", "mean": 0.8}],
                                                    mode="max"))
    assert acc["gap"] == pytest.approx(0.1) and not acc["in_tie_set"]  # higher is better: 0.1 below the best
    with pytest.raises(LossbenchError, match="one scenario"):
        compare({"scenarios": []}, full)


def test_goals_count_each_table_and_the_full_sweep_has_every_loss():
    res = [{"profile": [{"error_kind": "absolute", "error": 0.01, "within": True}],
            "recommendation": {"in_tie_set": True, "full_tied": ["a", "b"]}, "compute_ratio": 0.25},
           {"profile": [{"error_kind": "absolute", "error": -0.08, "within": False},
                        {"error_kind": "relative", "error": 0.5, "within": False}],
            "recommendation": {"in_tie_set": False}, "compute_ratio": 0.4}]
    g = goals(res)
    assert g["fractions_within_0.05"] == {"met": 1, "of": 2, "all_met": False, "max_abs_error": 0.08}
    assert g["imbalance_ratio_within_5pct"]["max_rel_error"] == 0.5
    assert g["recommendation_in_tie_set"]["tie_set_sizes"] == [2, 0]
    assert g["recommendation_in_tie_set"]["met"] == 1 and g["compute_at_most_30pct"]["max_ratio"] == 0.4
    assert "mse" in every_loss("regression") and "combo" not in every_loss("regression")
    assert "cross_entropy" in every_loss("multiclass") and "gce" in every_loss("multiclass")


def test_the_command_line_checks_its_options_and_all_runs_two_tables(capsys):
    assert {t.name for t in TABLES} >= set(QUICK) and len(TABLES) == 12
    sub = _defaults("choose", build_parser().parse_args(["all", "--device", "cpu"]))
    assert sub.tables == ",".join(QUICK) and sub.device == "cpu" and sub.json is None
    with pytest.raises(SystemExit) as exc:
        main(["choose", "--tables", "reg-out0.2"])
    assert exc.value.code == 2
    assert "reg-out0.25" in capsys.readouterr().err  # did you mean
    with pytest.raises(SystemExit):
        main(["choose", "--tables", "reg-clean", "--seeds", "3"])
    assert "--seeds" in capsys.readouterr().err


@pytest.mark.slow
def test_choose_benchmark_end_to_end_on_the_smallest_table(tmp_path, capsys):
    out = tmp_path / "choose.json"
    main(["choose", "--tables", "reg-out0.25", "--rows", "100", "--epochs", "1", "--seeds", "5", "--keep", str(tmp_path / "k"),
          "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["benchmark"] == "choose" and data["settings"]["tables"] == ["reg-out0.25"]
    (r,) = data["results"]
    (p,) = r["profile"]
    assert p["trait"] == "outlier_fraction" and p["truth"] > 0.15 and math.isfinite(p["error"])
    assert p["within"] == (abs(p["error"]) <= 0.05)
    # choose's shortlist is a part of the full sweep, which holds every regression loss
    assert set(r["shortlist"]) < set(r["full_losses"]) and set(every_loss("regression")) <= set(r["full_losses"])
    assert r["runs"] == {"choose": 5 * len(r["shortlist"]), "full": 5 * len(r["full_losses"])}
    assert r["statuses"]["full"].get("FINISHED", 0) + r["statuses"]["full"].get("FAILED", 0) == r["runs"]["full"]
    assert r["compute_ratio"] == pytest.approx(len(r["shortlist"]) / len(r["full_losses"]))
    c = r["recommendation"]
    assert c["objective"] == "test_median_ae"  # the table's gross errors sit in every split
    assert c["choose_pick"] in r["shortlist"] and c["full_best"] == c["full_tied"][0]
    assert c["in_tie_set"] == (c["choose_pick"] in c["full_tied"])
    assert c["gap"] >= 0 and (c["gap"] == 0) == (c["choose_pick"] == c["full_best"])  # the best ranks first
    g = data["goals"]
    assert g["compute_at_most_30pct"]["all_met"] == (r["compute_ratio"] <= 0.30)
    kept = data["settings"]["kept"]
    assert (Path(kept) / "tables" / "reg-out0.25.csv").is_file()
    assert (Path(kept) / "reg-out0.25" / "full" / "summary.json").is_file()
    printed = capsys.readouterr().out
    assert "choose against the full sweep" in printed and "Goal: recommendation within" in printed

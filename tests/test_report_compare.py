"""Where the main metrics disagree on the winner, and the losses ranked across scenarios.

The stores are written as the golden test writes them (``Store``: the training side's tags,
params, histories and final metrics, fixed values, no randomness), then the report is built
from MLflow. Expected numbers are worked by hand here, and the Friedman statistic is checked
against scipy on the same small table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_report_golden import IMB, REG, Store

from lossbench.report import build_report
from lossbench.report.stats import friedman, ranks

JITTER = (0.0, 0.03, -0.02)


class MetricStore(Store):
    """A Store whose runs carry the regression metrics given per loss, not ones derived from the objective."""

    finals: dict[str, float] = {}

    def _finals(self, task: str, v: float, recall: tuple[float, ...]) -> dict[str, float]:  # type: ignore[override]
        if task != "regression":
            return super()._finals(task, v, recall)
        return {"rmse": v, "mse": v * v, **self.finals, "r2": 0.5, "loss": 0.1}


def _build(tmp_path: Path, populate) -> tuple[dict, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    populate(uri)
    out = tmp_path / "report"
    build_report("golden", uri, out, appendix=False, max_curve_runs=0)
    return json.loads((out / "summary.json").read_text(encoding="utf-8")), (out / "report.md").read_text("utf-8")


# --------------------------------------------------------------------------- metrics that disagree
# gross errors in every split: mse fits them and wins RMSE; l1 wins the typical point (issue 10, item 6)
RMSE = {"mse": 3.78, "huber": 3.95, "l1": 4.03}
MEDIAN_AE = {"mse": 1.85, "huber": 0.70, "l1": 0.52}
MAE = {"mse": 2.50, "huber": 2.30, "l1": 2.20}
NOISE = {"mse": (0.0, 0.0, 0.0), "huber": (-0.002, 0.003, -0.001), "l1": (0.004, -0.001, -0.003)}  # sums to 0


def _disagreeing(uri: str) -> None:
    st = MetricStore(uri)
    data = {**REG, "outlier_fraction": 0.2}
    for loss in ("mse", "l1", "huber"):
        for seed in range(3):
            st.finals = {"mae": MAE[loss] + JITTER[seed], "median_ae": MEDIAN_AE[loss] + JITTER[seed] / 10}
            st.run(loss, data, seed, RMSE[loss] + JITTER[seed] + NOISE[loss][seed])


@pytest.mark.slow
def test_metrics_that_disagree_are_ranked_side_by_side(tmp_path: Path) -> None:
    summary, md = _build(tmp_path, _disagreeing)
    (scen,) = summary["scenarios"]
    d = scen["metrics_disagree"]
    assert d["objective"] == "rmse"
    assert d["winners"] == {"rmse": ["mse"], "mae": ["l1"], "median_ae": ["l1"]}
    by_metric = {m["metric"]: {x["loss"]: x for x in m["losses"]} for m in d["metrics"]}
    assert [m["metric"] for m in d["metrics"]] == ["rmse", "mae", "median_ae"]  # the objective first
    # jitter sums to 0.01 over three seeds: means by hand
    assert by_metric["rmse"]["mse"]["mean"] == pytest.approx(3.78 + 0.01 / 3)
    assert by_metric["median_ae"]["l1"]["mean"] == pytest.approx(0.52 + 0.001 / 3)
    assert {k: v["rank"] for k, v in by_metric["rmse"].items()} == {"mse": 1, "huber": 2, "l1": 3}
    assert {k: v["rank"] for k, v in by_metric["median_ae"].items()} == {"l1": 1, "huber": 2, "mse": 3}
    # the recommendation still follows the objective, and the report says what each metric rewards
    assert scen["recommended"]["loss"] == "mse"
    assert "**The metrics disagree.**" in md
    assert md.count("mse by rmse; l1 by mae, median_ae") == 2  # the ranking and the recommendation say it
    assert "| test_rmse (rank) | test_mae (rank) | test_median_ae (rank) |" in md
    assert "| mse | 3.783 (1) | 2.503 (3) | 1.85 (3) |" in md
    assert "the largest errors weigh most" in md and "error of the typical point" in md
    assert "data.objective=<metric>" in md


def _agreeing(uri: str) -> None:
    st = MetricStore(uri)
    for loss, v in (("mse", 1.0), ("l1", 0.8)):
        for seed in range(3):
            st.finals = {"mae": 0.8 * v, "median_ae": 0.6 * v}
            st.run(loss, REG, seed, v + JITTER[seed])


def test_metrics_that_agree_add_nothing(tmp_path: Path) -> None:
    summary, md = _build(tmp_path, _agreeing)
    assert summary["scenarios"][0]["metrics_disagree"] is None
    assert "The metrics disagree" not in md
    assert summary["across_scenarios"] == []  # one scenario: nothing to rank across


# --------------------------------------------------------------------------- ranks across scenarios
def test_ranks_and_friedman_against_scipy_on_a_hand_made_table() -> None:
    # 4 data sets x 3 losses, lower is better; ranks per row worked by hand
    m = np.array([[0.1, 0.2, 0.3], [0.1, 0.3, 0.2], [0.1, 0.2, 0.3], [0.2, 0.1, 0.3]])
    assert [ranks(row, "min") for row in m] == [[1, 2, 3], [1, 3, 2], [1, 2, 3], [2, 1, 3]]
    assert ranks([0.5, 0.5, 0.9], "max") == [2.5, 2.5, 1.0] and ranks([1.0, math.nan], "min") == [1.0, 2.0]
    t = friedman(m, "min")
    # rank sums 5, 8, 11: 12 / (n k (k + 1)) * sum R^2 - 3 n (k + 1) = 12 / 48 * 210 - 48 = 4.5
    assert t.statistic == pytest.approx(4.5)
    ref = stats.friedmanchisquare(*m.T)
    assert t.statistic == pytest.approx(ref.statistic) and t.p == pytest.approx(ref.pvalue)
    assert t.p == pytest.approx(math.exp(-4.5 / 2))  # chi-square with 2 degrees of freedom
    # Demšar 2006, table 5(a): q_0.05 = 2.343 for 3 classifiers; CD = q sqrt(k (k + 1) / (6 N))
    assert t.q == pytest.approx(2.343, abs=1e-3) and t.cd == pytest.approx(2.3437 * math.sqrt(12 / 24), abs=1e-3)
    assert friedman(-m, "max").statistic == pytest.approx(4.5)  # the direction does not change it
    assert friedman(np.ones((3, 3)), "min")[:2] == (0.0, 1.0)  # all tied: no evidence
    with pytest.raises(ValueError, match="at least 3 x 3"):
        friedman(m[:2], "min")


# per scenario (regression outlier fraction), the losses' test RMSE: huber best everywhere, mse worst
SCENARIOS = {0.0: {"mse": 0.50, "l1": 0.52, "huber": 0.49}, 0.1: {"mse": 0.90, "l1": 0.62, "huber": 0.60},
             0.2: {"mse": 1.30, "l1": 0.70, "huber": 0.66}, 0.3: {"mse": 1.70, "l1": 0.78, "huber": 0.80}}


def _across(fractions: tuple[float, ...], extra: bool = False):
    def populate(uri: str) -> None:
        st = MetricStore(uri)
        for frac in fractions:
            data = {**REG, "outlier_fraction": frac}
            for loss, v in SCENARIOS[frac].items():
                for seed in range(3):
                    st.finals = {"mae": 0.8 * v, "median_ae": 0.6 * v}
                    st.run(loss, data, seed, v + JITTER[seed])
            if extra and frac == fractions[0]:  # a loss run in one scenario only
                for seed in range(3):
                    st.finals = {"mae": 0.4, "median_ae": 0.3}
                    st.run("combo", data, seed, 0.5 + JITTER[seed], params={"terms": [
                        {"name": "huber", "weight": 0.5, "params": {"delta": 1.0}}, {"name": "l1", "weight": 0.5}]})
        # classification scenario: another task, never mixed with the regression ranks
        for seed in range(3):
            st.run("cross_entropy", IMB, seed, 0.6 + JITTER[seed], task="multiclass")
    return populate


@pytest.mark.slow
def test_losses_ranked_across_four_scenarios(tmp_path: Path) -> None:
    summary, md = _build(tmp_path, _across((0.0, 0.1, 0.2, 0.3), extra=True))
    (a,) = summary["across_scenarios"]
    assert a["task"] == "regression" and len(a["scenarios"]) == 4
    ranked = {x["loss"]: x for x in a["losses"]}
    # ranks by hand: huber 1,1,1,2; l1 3,2,2,1; mse 2,3,3,3 (rows in scenario order 0.0, 0.1, 0.2, 0.3)
    assert [x["loss"] for x in a["losses"]] == ["huber", "l1", "mse"]
    assert ranked["huber"]["ranks"] == [1, 1, 1, 2] and ranked["huber"]["mean_rank"] == pytest.approx(1.25)
    assert ranked["l1"]["mean_rank"] == pytest.approx(2.0) and ranked["mse"]["mean_rank"] == pytest.approx(2.75)
    m = np.array([[SCENARIOS[f][x] + 0.01 / 3 for x in ("huber", "l1", "mse")] for f in (0.0, 0.1, 0.2, 0.3)])
    ref = stats.friedmanchisquare(*m.T)
    assert a["friedman"]["statistic"] == pytest.approx(ref.statistic) == pytest.approx(4.5)
    assert a["friedman"]["p_value"] == pytest.approx(ref.pvalue) and a["friedman"]["significant"] is False
    assert a["nemenyi"]["different"] == []  # not read: Friedman did not reject
    assert a["left_out_losses"] == ["combo"] and a["left_out_scenarios"] == []
    assert "### Across scenarios: regression losses by mean rank" in md
    assert "| huber | 1.25 | 1 | 1 | 1 | 2 |" in md
    assert "no evidence that the losses rank differently" in md and "Demšar" in md
    assert "did not finish in every compared scenario: combo" in md


@pytest.mark.slow
def test_two_scenarios_show_mean_ranks_and_say_why_untested(tmp_path: Path) -> None:
    summary, md = _build(tmp_path, _across((0.1, 0.2)))
    (a,) = summary["across_scenarios"]
    assert a["friedman"] is None and a["nemenyi"] is None
    assert a["not_tested_because"] == "fewer than 3 scenarios or 3 losses"
    assert {x["loss"]: x["mean_rank"] for x in a["losses"]} == {"huber": 1.0, "l1": 2.0, "mse": 3.0}
    assert "Friedman's test needs at least 3 scenarios and 3 losses; here there are 2 scenario(s)" in md


@pytest.mark.slow
def test_a_significant_friedman_test_names_the_pairs_nemenyi_separates(tmp_path: Path) -> None:
    # six scenarios, huber < l1 < mse in each: rank sums 6, 12, 18; chi-square = 12 / 72 * 504 - 72 = 12
    def populate(uri: str) -> None:
        st = MetricStore(uri)
        for k in range(6):
            data = {**REG, "outlier_fraction": round(0.05 * k, 2)}
            for loss, v in (("huber", 0.5), ("l1", 0.6), ("mse", 0.7 + 0.1 * k)):
                for seed in range(3):
                    st.finals = {"mae": 0.8 * v, "median_ae": 0.6 * v}
                    st.run(loss, data, seed, v + JITTER[seed])

    summary, md = _build(tmp_path, populate)
    (a,) = summary["across_scenarios"]
    assert a["friedman"]["statistic"] == pytest.approx(12.0)
    assert a["friedman"]["p_value"] == pytest.approx(math.exp(-6)) and a["friedman"]["significant"] is True
    cd = 2.3437 * math.sqrt(12 / 36)  # 1.353: of the gaps in mean rank (1, 1 and 2) only huber-mse exceeds it
    assert a["nemenyi"]["critical_difference"] == pytest.approx(cd, abs=1e-3)
    assert a["nemenyi"]["different"] == [["huber", "mse"]]
    assert "huber ranks better than mse (1 against 3)" in md


@pytest.mark.slow
def test_one_loss_common_to_the_scenarios_gets_words_not_a_one_row_table(tmp_path: Path) -> None:
    # reproduce_small's two digits grids share only cross-entropy; here two outlier fractions share only mse
    def populate(uri: str) -> None:
        st = MetricStore(uri)
        for frac, losses in ((0.1, ("mse", "l1")), (0.2, ("mse", "huber"))):
            for loss in losses:
                for seed in range(3):
                    st.finals = {"mae": 0.5, "median_ae": 0.4}
                    st.run(loss, {**REG, "outlier_fraction": frac}, seed, SCENARIOS[frac][loss] + JITTER[seed])

    summary, md = _build(tmp_path, populate)
    (a,) = summary["across_scenarios"]
    assert [x["loss"] for x in a["losses"]] == ["mse"] and sorted(a["left_out_losses"]) == ["huber", "l1"]
    assert "No two losses finished in all 2 scenarios, so there is nothing to rank across them." in md
    assert "| Loss | Mean rank |" not in md

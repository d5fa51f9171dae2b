"""The report's statistics and recommendation rule, on synthetic run tables.

References are independent: scipy.stats for intervals and t-tests, a hand-worked Holm
example, and tables built so that the right answer is known by construction.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lossbench.errors import LossbenchError
from lossbench.report.recommend import analyze
from lossbench.report.ranking import loss_complexity
from lossbench.report.scenarios import data_axes, normalize_groups, scenario_settings
from lossbench.report.stats import holm, mean_ci, paired_test
from lossbench.report.table import combo_terms, variant_label
from lossbench.report.words import evidence, flags, notes


def run(
    loss: str,
    seed: int,
    value: float | None,
    *,
    scenario: str = "s",
    status: str = "FINISHED",
    failure: str | None = None,
    val: float | None = None,
    objective: str = "rmse",
    mode: str = "min",
    params: dict | None = None,
    start: int = 0,
    **extra: object,
) -> dict:
    row = {
        "run_id": f"{loss}-{scenario}-{seed}-{json.dumps(params or {})}-{start}-{status}",
        "status": status,
        "loss": loss,
        "scenario": scenario,
        "seed": str(seed),
        "objective": objective,
        "objective_mode": mode,
        "loss_params": json.dumps(params or {}),
        "failure": failure,
        "start_time": start,
        **extra,
    }
    if value is not None:
        row[f"metrics.test_{objective}"] = value
        row["metrics.best_val_objective"] = value if val is None else val
    return row


def table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def only(analysis):
    assert len(analysis.scenarios) == 1
    return analysis.scenarios[0]


# --------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_mean_ci_matches_scipy_t_interval(n):
    x = np.random.default_rng(n).normal(3.0, 0.7, size=n)
    mean, lo, hi = mean_ci(x)
    ref_lo, ref_hi = stats.t.interval(0.95, df=n - 1, loc=x.mean(), scale=stats.sem(x))
    assert mean == pytest.approx(x.mean(), rel=1e-12)
    assert lo == pytest.approx(ref_lo, rel=1e-10)
    assert hi == pytest.approx(ref_hi, rel=1e-10)


def test_mean_ci_degenerate_inputs():
    m, lo, hi = mean_ci([4.0])
    assert m == 4.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in mean_ci([]))
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)  # zero spread: a zero-width interval
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0  # NaN ignored


def test_holm_hand_worked():
    # p sorted: 0.005, 0.01, 0.03, 0.04 with m = 4
    # 4*0.005 = 0.02; 3*0.01 = 0.03; 2*0.03 = 0.06; 1*0.04 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN is not a test: m = 2
    out = holm([0.01, float("nan"), 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    # capped at 1
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([]) == []


def test_paired_test_matches_scipy_on_common_seeds():
    a = pd.Series([1.0, 1.2, 0.9, 1.1, 5.0], index=["0", "1", "2", "3", "9"])
    b = pd.Series([1.3, 1.1, 1.4, 1.6], index=["3", "1", "2", "0"])  # other order, seed 9 missing
    p, n, diff = paired_test(a, b)
    x = np.array([1.0, 1.2, 0.9, 1.1])
    y = np.array([1.6, 1.1, 1.4, 1.3])
    assert n == 4
    assert p == pytest.approx(stats.ttest_rel(y, x).pvalue, rel=1e-12)
    assert diff == pytest.approx((y - x).mean())


def test_paired_test_edge_cases():
    s = pd.Series([1.0, 2.0, 3.0], index=["0", "1", "2"])
    assert paired_test(s, s)[0] == 1.0  # identical: no evidence of a difference
    assert paired_test(s, s + 0.5)[0] == 0.0  # the same shift on every seed
    p, n, _ = paired_test(s, pd.Series([1.0], index=["0"]))
    assert math.isnan(p) and n == 1
    p, n, _ = paired_test(s, pd.Series([1.0], index=["7"]))
    assert math.isnan(p) and n == 0


# --------------------------------------------------------------------------- ranking and the rule
def test_clear_winner_with_five_seeds():
    rng = np.random.default_rng(0)
    rows = []
    means = {"mse": 1.0, "l1": 0.6, "huber": 0.5}
    values = {loss: mu + rng.normal(0, 0.01, size=5) for loss, mu in means.items()}
    for loss, vals in values.items():
        rows += [run(loss, s, float(v)) for s, v in enumerate(vals)]
    sc = only(analyze(table(rows)))
    assert [r.loss for r in sc.losses] == ["huber", "l1", "mse"]
    assert [r.rank for r in sc.losses] == [1, 2, 3]
    rec = sc.recommendation
    assert rec.verdict == "significant"
    assert rec.loss == "huber" and rec.runner_up == "l1"
    assert "significantly better" in evidence(sc)
    # the p-values are Holm-adjusted scipy paired t-tests against the best
    p_l1 = stats.ttest_rel(values["l1"], values["huber"]).pvalue
    p_mse = stats.ttest_rel(values["mse"], values["huber"]).pvalue
    lo, hi = sorted([p_l1, p_mse])
    adj_lo, adj_hi = min(1, 2 * lo), max(min(1, 2 * lo), hi)
    got = {r.loss: r.p_adjusted for r in sc.losses}
    assert sorted([got["l1"], got["mse"]]) == pytest.approx([adj_lo, adj_hi])
    best = sc.by_loss("huber").chosen
    ref = stats.t.interval(0.95, df=4, loc=values["huber"].mean(), scale=stats.sem(values["huber"]))
    assert best.ci[1:] == pytest.approx(ref)


TIE = {
    "mse": [0.52, 0.47, 0.55, 0.49, 0.51],
    "huber": [0.50, 0.49, 0.52, 0.50, 0.48],  # best mean, but within the noise
    "l1": [0.53, 0.46, 0.50, 0.52, 0.50],
}


def test_tie_recommends_the_simplest_and_says_so():
    rows = [run(loss, s, v, params={"delta": 1.0} if loss == "huber" else {}) for loss, vals in TIE.items() for s, v in enumerate(vals)]
    sc = only(analyze(table(rows)))
    assert sc.losses[0].loss == "huber"  # best by mean...
    rec = sc.recommendation
    assert rec.verdict == "tie"
    assert rec.loss == "mse"  # ...but mse is the simplest of the tied losses
    assert "No significant difference" in evidence(sc)
    assert set(rec.tied) == {"mse", "huber", "l1"}
    assert {r.comparison for r in sc.losses[1:]} == {"tied"}


def test_tie_prefers_a_loss_that_never_failed():
    rows = [run(loss, s, v) for loss, vals in TIE.items() for s, v in enumerate(vals)]
    rows.append(run("mse", 5, None, status="FAILED", failure="diverged"))
    sc = only(analyze(table(rows)))
    assert sc.recommendation.verdict == "tie"
    assert sc.recommendation.loss == "l1"  # mse is simpler but diverged once
    mse = sc.by_loss("mse")
    assert "diverged in 1 of 6 seeds" in flags(mse)
    assert not mse.reliable


def test_one_seed_is_too_few_and_claims_no_winner():
    rows = [run("huber", 0, 0.4, params={"delta": 1.0}), run("l1", 0, 0.5), run("mse", 0, 0.9)]
    sc = only(analyze(table(rows)))
    rec = sc.recommendation
    assert rec.verdict == "too_few_seeds"
    assert "Too few seeds" in evidence(sc) and "seed=0,1,2" in evidence(sc)
    assert "no winner is claimed" in evidence(sc)
    assert rec.loss == "mse"  # the simplest, as a default, not a winner
    assert [r.loss for r in sc.losses] == ["huber", "l1", "mse"]  # the ranking is still listed
    assert all(math.isnan(r.chosen.ci[1]) for r in sc.losses)


def test_failed_and_diverged_runs_are_counted_and_flagged():
    rows = [run("huber", s, 0.5 + 0.001 * s) for s in range(3)]
    rows += [run("huber", 3, None, status="FAILED", failure="diverged"), run("huber", 4, None, status="FAILED", failure="diverged")]
    rows += [run("huber", 5, None, status="FAILED", failure="error"), run("huber", 6, None, status="KILLED")]
    rows += [run("mse", s, 1.0 + 0.01 * s) for s in range(7)]
    # a seed that failed once and finished in a re-run counts as finished, and is still reported
    rows += [run("mse", 7, None, status="FAILED", failure="diverged", start=1), run("mse", 7, 1.02, start=2)]
    sc = only(analyze(table(rows)))
    huber = sc.by_loss("huber")
    assert huber.chosen.outcomes == {"finished": 3, "diverged": 2, "error": 1, "killed": 1, "incomplete": 0}
    assert huber.failed_runs["diverged"] == 2 and huber.failed_runs["error"] == 1 and huber.failed_runs["killed"] == 1
    assert "diverged in 2 of 7 seeds" in flags(huber)
    assert "failed with an error in 1 of 7 seeds" in flags(huber)
    assert "killed in 1 of 7 seeds" in flags(huber)
    assert sc.recommendation.loss == "huber" and sc.recommendation.verdict == "significant"
    assert any("Caution" in n and "diverged" in n for n in notes(sc))
    mse = sc.by_loss("mse")
    assert mse.chosen.n_finished == 8 and mse.chosen.outcomes["diverged"] == 0
    assert mse.failed_runs["diverged"] == 1
    assert any("re-run" in f for f in flags(mse))


def test_a_loss_whose_runs_all_failed_ranks_last():
    rows = [run("mse", s, 1.0 + 0.01 * s) for s in range(3)] + [run("l1", s, 0.8 + 0.01 * s) for s in range(3)]
    rows += [run("huber", s, None, status="FAILED", failure="diverged") for s in range(3)]
    sc = only(analyze(table(rows)))
    assert [r.loss for r in sc.losses] == ["l1", "mse", "huber"]
    last = sc.losses[-1]
    assert last.all_failed and last.comparison == "all failed" and flags(last) == ("all runs failed",)
    assert last.rank == 3
    assert any("All runs failed for: huber" in n for n in notes(sc))


def test_every_run_failed_gives_no_recommendation():
    rows = [run(loss, s, None, status="FAILED", failure="error") for loss in ("mse", "l1") for s in range(2)]
    sc = only(analyze(table(rows)))
    assert sc.recommendation.verdict == "all_failed"
    assert sc.recommendation.loss is None


@pytest.mark.parametrize(("mode", "winner"), [("max", "focal"), ("min", "cross_entropy")])
def test_direction_of_the_objective(mode, winner):
    rows = [
        run("focal", s, 0.90 + 0.001 * s, objective="balanced_accuracy", mode=mode, params={"gamma": 2.0})
        for s in range(4)
    ]
    rows += [run("cross_entropy", s, 0.70 + 0.002 * s, objective="balanced_accuracy", mode=mode) for s in range(4)]
    sc = only(analyze(table(rows)))
    assert sc.mode == mode and sc.metric == "test_balanced_accuracy"
    assert sc.losses[0].loss == winner
    assert sc.recommendation.loss == winner and sc.recommendation.verdict == "significant"
    assert ("highest" if mode == "max" else "lowest") in evidence(sc)


def test_direction_falls_back_on_the_metric_when_untagged():
    rows = [run("focal", s, 0.9, objective="accuracy", mode=None) for s in range(2)]
    rows += [run("cross_entropy", s, 0.7, objective="accuracy", mode=None) for s in range(2)]
    assert only(analyze(table(rows))).mode == "max"


def test_variant_is_chosen_on_validation_never_on_test():
    rows = []
    for s in range(3):
        # delta=0.5: better validation, worse test; delta=2: the reverse
        rows.append(run("huber", s, 0.70 + 0.01 * s, val=0.40, params={"delta": 0.5}))
        rows.append(run("huber", s, 0.50 + 0.01 * s, val=0.60, params={"delta": 2.0}))
        rows.append(run("mse", s, 0.65 + 0.01 * s))
    sc = only(analyze(table(rows)))
    huber = sc.by_loss("huber")
    assert huber.chosen.params == {"delta": 0.5}
    assert len(huber.variants) == 2
    assert huber.chosen.mean == pytest.approx(0.71)  # ranked by the chosen variant's test metric
    assert sc.losses[0].loss == "mse"


def test_exact_ties_have_a_deterministic_order():
    vals = [0.5, 0.6, 0.7]
    rows = [run(loss, s, v) for loss in ("huber", "l1", "mse") for s, v in enumerate(vals)]
    first = only(analyze(table(rows)))
    again = only(analyze(table(rows[::-1])))
    assert [r.loss for r in first.losses] == [r.loss for r in again.losses] == ["mse", "l1", "huber"]
    assert [r.rank for r in first.losses] == [1, 1, 1]
    assert first.recommendation.loss == "mse" and first.recommendation.verdict == "tie"


def test_scenarios_are_ranked_separately():
    rows = [run("mse", s, 1.0 + 0.01 * s, scenario="a") for s in range(3)]
    rows += [run("l1", s, 2.0 + 0.02 * s, scenario="a") for s in range(3)]
    rows += [run("mse", s, 2.0 + 0.01 * s, scenario="b") for s in range(3)]
    rows += [run("l1", s, 1.0 + 0.03 * s, scenario="b") for s in range(3)]
    a, b = analyze(table(rows)).scenarios
    assert (a.scenario, a.losses[0].loss) == ("a", "mse")
    assert (b.scenario, b.losses[0].loss) == ("b", "l1")


def test_untestable_loss_is_kept_in_the_tied_group():
    rows = [run("huber", s, 0.5 + 0.001 * s) for s in range(4)] + [run("mse", s, 0.9 + 0.002 * s) for s in range(4)]
    rows += [run("l1", 0, 0.51)] + [run("l1", s, None, status="FAILED", failure="diverged") for s in range(1, 4)]
    sc = only(analyze(table(rows)))
    l1 = sc.by_loss("l1")
    assert l1.comparison == "not compared"
    assert sc.recommendation.verdict == "tie" and "l1" in sc.recommendation.tied
    assert sc.recommendation.loss == "huber"  # l1 is simpler but unreliable (diverged in 3 of 4)


def test_bad_tables_are_user_errors():
    with pytest.raises(LossbenchError, match="lacks the column"):
        analyze(pd.DataFrame([{"status": "FINISHED", "loss": "mse"}]))
    with pytest.raises(LossbenchError, match="empty"):
        analyze(pd.DataFrame(columns=["status", "loss", "scenario", "seed"]))
    with pytest.raises(LossbenchError, match="alpha"):
        analyze(table([run("mse", 0, 1.0)]), alpha=1.5)


# --------------------------------------------------------------------------- helpers
def test_simplicity_order():
    assert loss_complexity("mse") < loss_complexity("l1") < loss_complexity("huber")
    # tunable params count (label_smoothing), settings do not (ignore_index, per-class weight)
    assert loss_complexity("cross_entropy")[0] == 1
    assert loss_complexity("cross_entropy") < loss_complexity("focal")
    # what a loss needs from the data counts too: balanced_softmax has no knob but uses class counts
    assert loss_complexity("cross_entropy") < loss_complexity("balanced_softmax")
    assert loss_complexity("not_a_registered_loss", {"a": 1, "b": 2, "reduction": "mean"})[0] == 2
    combo = loss_complexity("combo", {"terms": [{"name": "mse", "weight": 0.5}, {"name": "huber", "weight": 0.5}]})
    assert combo[0] == 1 + 0 + 1 + 1  # two weights, plus huber's delta


def test_combo_terms_and_labels():
    listed = {"terms": [{"name": "mse", "weight": 0.5}, {"name": "huber", "weight": 1.0, "params": {"delta": 2.0}}]}
    assert combo_terms(listed) == [("mse", 0.5, {}), ("huber", 1.0, {"delta": 2.0})]
    mapped = {"terms": {"cross_entropy": 1.0, "focal": {"weight": 0.5, "gamma": 2}}}
    assert combo_terms(mapped) == [("cross_entropy", 1.0, {}), ("focal", 0.5, {"gamma": 2})]
    assert variant_label("combo", json.dumps(listed)) == "combo(0.5·mse + 1·huber(delta=2))"
    assert variant_label("huber", '{"delta": 0.5}', '{"optimizer.lr": "0.01"}') == "huber(delta=0.5) [optimizer.lr=0.01]"


def test_combo_labels_read_the_terms_as_combo_does():
    # a term's own params given both inline and under "params" are all used by combo
    # (losses.combo.normalise_terms); the report's former copy of that parser dropped the inline ones
    mixed = {"terms": [{"name": "focal", "weight": 0.5, "gamma": 3.0, "params": {"alpha": 0.25}}, {"name": "l1"}]}
    assert combo_terms(mixed) == [("focal", 0.5, {"gamma": 3.0, "alpha": 0.25}), ("l1", 1.0, {})]
    assert variant_label("combo", json.dumps(mixed)) == "combo(0.5·focal(gamma=3, alpha=0.25) + 1·l1)"
    assert combo_terms({"terms": "not terms"}) == [] and variant_label("combo", '{"terms": 5}') == "combo(terms=5)"


def test_a_named_loss_config_is_labelled_with_its_registered_loss():
    # label_smoothing is cross_entropy with smoothing: its label hides cross_entropy's untuned defaults
    params = {"label_smoothing": 0.1, "ignore_index": -100, "weight": None}
    rows = [run("label_smoothing", s, 0.5, params=params, base_loss="cross_entropy") for s in range(2)]
    rows += [run("cross_entropy", s, 0.6, params={**params, "label_smoothing": 0.0}) for s in range(2)]
    sc = only(analyze(table(rows)))
    assert sc.by_loss("label_smoothing").chosen.label == "label_smoothing(label_smoothing=0.1)"
    assert sc.by_loss("label_smoothing").base == "cross_entropy"
    # the same table without the registered name: nothing is remembered from the analysis before
    rows = [{k: v for k, v in r.items() if k != "base_loss"} for r in rows]
    label = only(analyze(table(rows))).by_loss("label_smoothing").chosen.label
    assert label == "label_smoothing(ignore_index=-100, label_smoothing=0.1)"


def test_swept_optimizer_setting_makes_separate_variants():
    rows = []
    for s in range(2):
        rows.append(run("mse", s, 1.0, val=0.9, **{"params.optimizer.lr": "0.1"}))
        rows.append(run("mse", s, 0.8, val=0.5, **{"params.optimizer.lr": "0.01"}))
    sc = only(analyze(table(rows)))
    mse = sc.by_loss("mse")
    assert len(mse.variants) == 2
    assert mse.chosen.extras == {"optimizer.lr": "0.01"}


def test_settings_that_differ_only_between_scenarios_set_no_variant_apart():
    """A grid per scenario (reproduce_small: an mlp on digits, a linear model on regression) labels
    no variant with its model; model.head, decided by the loss (LDAM's normed head), neither."""
    rows = []
    for s in range(2):
        for loss, head in (("cross_entropy", "linear"), ("ldam", "normed")):
            rows.append(run(loss, s, 0.9, scenario="digits", mode="max", objective="balanced_accuracy",
                            model="mlp", **{"params.model.hidden": "[128]", "params.model.head": head,
                                            "params.optimizer.lr": "0.003"}))
        rows.append(run("mse", s, 0.3, scenario="reg", model="linear",
                        **{"params.model.head": "linear", "params.optimizer.lr": "0.01"}))
        # a head swept on purpose for one loss is a variant of it
        rows.append(run("mse", s, 0.4, scenario="reg", model="linear",
                        **{"params.model.head": "normed", "params.optimizer.lr": "0.01"}))
    a = analyze(table(rows))
    extras = {(r.loss, json.dumps(v.extras, sort_keys=True)) for sc in a.scenarios for r in sc.losses for v in r.variants}
    assert extras == {("cross_entropy", "{}"), ("ldam", "{}"),
                      ("mse", '{"model.head": "linear"}'), ("mse", '{"model.head": "normed"}')}


def test_data_axes_and_normalize_groups():
    rows = []
    for of in ("0.0", "0.1", "0.2"):
        for norm in ("standard", "none"):
            scen = f"reg(of={of},norm={norm})"
            rows.append(
                run("mse", 0, 1.0, scenario=scen, **{"params.data.name": "reg", "params.data.outlier_fraction": of,
                                                   "params.data.normalize": norm, "params.data.seed": "3"})
            )
    prepared = analyze(table(rows)).table
    settings = scenario_settings(prepared)
    assert "data.seed" not in settings.columns
    assert data_axes(settings) == {"reg": ["data.outlier_fraction"]}
    groups = normalize_groups(settings)
    assert len(groups) == 3 and all(len(g) == 2 for g in groups)


def test_a_single_loss_is_not_called_a_winner():
    sc = only(analyze(table([run("huber", s, 0.5 + 0.01 * s) for s in range(3)])))
    rec = sc.recommendation
    assert rec.verdict == "only_one" and rec.loss == "huber"
    assert "nothing was compared" in evidence(sc)
    # the others ran but every run failed: it is the only candidate, and that is said
    rows = [run("huber", s, 0.5) for s in range(3)] + [run("mse", s, None, status="FAILED", failure="error") for s in range(3)]
    sc = only(analyze(table(rows)))
    assert sc.recommendation.verdict == "only_one" and "the others all failed" in evidence(sc)


def test_runs_without_the_test_metric_are_not_called_failures():
    rows = [run("mse", s, None) for s in range(2)] + [run("l1", s, None, status="RUNNING") for s in range(2)]
    sc = only(analyze(table(rows)))
    assert sc.recommendation.verdict == "all_failed" and sc.recommendation.loss is None
    assert "No run has a finished test rmse" in evidence(sc)
    assert sc.by_loss("mse").chosen.outcomes["incomplete"] == 2


# --------------------------------------------------------------------------- normalisation sweep (section 2)
def test_normalisation_sweep_is_tabulated():
    from lossbench.report.scenarios import short_labels
    from lossbench.report.sections import section_normalisation

    rows = []
    for norm, shift in (("standard", 0.0), ("none", 0.3)):
        scen = f"reg(normalize={norm})"
        extra = {"params.data.name": "reg", "params.data.normalize": norm, "params.data.outlier_fraction": "0.1"}
        rows += [run(loss, s, base + shift + 0.01 * s, scenario=scen, **extra) for loss, base in (("mse", 1.0), ("l1", 0.8)) for s in range(3)]
    analysis = analyze(table(rows))
    settings = scenario_settings(analysis.table)
    names = short_labels(settings, [s.scenario for s in analysis.scenarios], with_name=True)
    assert names == {"reg(normalize=none)": "reg(normalize=none)", "reg(normalize=standard)": "reg(normalize=standard)"}
    out = section_normalisation(analysis, settings, names)
    assert out["note"] == ""  # it was swept
    (sweep,) = out["sweeps"]
    assert sweep["table"].headers == ("Loss", "features=none", "features=standard")
    cells = {row[0]: row[1:] for row in sweep["table"].rows}
    assert cells["mse"][0].startswith("1.31") and cells["mse"][1].startswith("1.01")
    assert "mse: best with features=standard" in sweep["remark"]


# --------------------------------------------------------------------------- appendix curves
def test_appendix_curves_match_the_formulas():
    from lossbench.report.appendix import PROBABILITIES, RESIDUALS, compute

    data = compute(
        {
            "mse": ("mse", {}),
            "l1": ("l1", {}),
            "huber(delta=0.5)": ("huber", {"delta": 0.5}),
            "cross_entropy": ("cross_entropy", {}),
            "focal(gamma=2)": ("focal", {"gamma": 2.0}),
            "kl_div": ("kl_div", {}),
            "plugin": ("not_installed_here", {}),
        }
    )
    r = RESIDUALS
    loss, grad = data.regression.curves["mse"]
    np.testing.assert_allclose(loss, r**2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, 2 * r, rtol=1e-5, atol=1e-6)  # grows with the residual
    loss, grad = data.regression.curves["l1"]
    np.testing.assert_allclose(np.abs(grad[r != 0]), 1.0)  # constant size
    _, grad = data.regression.curves["huber(delta=0.5)"]
    np.testing.assert_allclose(grad, np.clip(r, -0.5, 0.5), rtol=1e-5, atol=1e-6)  # capped at delta
    p = PROBABILITIES
    loss, grad = data.classification.curves["cross_entropy"]
    np.testing.assert_allclose(loss, -np.log(p), rtol=1e-4)
    np.testing.assert_allclose(grad, p - 1, rtol=1e-4, atol=1e-6)  # d(-log sigmoid(s))/ds
    loss, grad = data.classification.curves["focal(gamma=2)"]
    np.testing.assert_allclose(loss, -((1 - p) ** 2) * np.log(p), rtol=1e-4, atol=1e-7)
    easy = p > 0.9
    assert np.all(np.abs(grad[easy]) < 0.1 * np.abs(p[easy] - 1))  # easy examples down-weighted
    assert "kl_div" in data.skipped and "distribution" in data.skipped["kl_div"]
    assert "not registered" in data.skipped["plugin"]


def test_a_tie_where_the_best_wins_every_seed_says_to_add_seeds():
    # balanced_softmax beats cross_entropy on each of 3 seeds (as on the H100 sweep), but with
    # 3 seeds and Holm over 3 comparisons that is not significant: recommend the simpler loss,
    # and say what would settle it
    vals = {
        "balanced_softmax": [0.806, 0.778, 0.787],
        "ldam": [0.753, 0.769, 0.752],
        "cross_entropy": [0.731, 0.735, 0.733],
        "focal": [0.731, 0.741, 0.720],
    }
    rows = [
        run(loss, s, v, objective="balanced_accuracy", mode="max")
        for loss, vs in vals.items()
        for s, v in enumerate(vs)
    ]
    sc = only(analyze(table(rows)))
    assert sc.recommendation.verdict == "tie" and sc.recommendation.loss == "cross_entropy"
    assert "balanced_softmax scored better than cross_entropy on every one of the 3 shared seeds" in evidence(sc)
    assert "seed=0,1,2,3,4,5,6,7,8,9" in evidence(sc)


def test_no_add_seeds_hint_when_the_seeds_disagree():
    rows = [run(loss, s, v, params={"delta": 1.0} if loss == "huber" else {}) for loss, vals in TIE.items() for s, v in enumerate(vals)]
    sc = only(analyze(table(rows)))
    assert sc.recommendation.verdict == "tie" and "on every one of" not in evidence(sc)


def test_the_run_table_leaves_out_parent_runs_and_counts_foreign_ones(tmp_path):
    from lossbench import schema as S
    from lossbench import tracking
    from lossbench.report import runs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.ensure_experiment(uri, "mixed")
    parent = tracking.parent_run(uri, exp, "sweep", "s1", "sweep-s1", create=True)
    child = tracking.Run.start(uri, exp, "mse-x-s0", {S.TAG_LOSS: "mse", S.TAG_SWEEP: "s1", S.TAG_PARENT: parent}, {"seed": 0})
    child.end("FINISHED", metrics=tracking.metrics_at([(1, {"test_rmse": 1.0})]))
    tracking.Run.start(uri, exp, "someone-else", {}, {}).end("FINISHED")
    client = runs.open_store(uri)
    table, ignored = runs.run_table(client, runs.find_experiment(client, "mixed"))
    assert list(table["run_id"]) == [child.run_id] and ignored == 1

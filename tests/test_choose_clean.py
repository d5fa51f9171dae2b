"""The class counts and imbalance ratio of the *true* labels that ``lossbench.choose`` estimates
from confident learning's joint: a case worked by hand, long-tailed Gaussian blobs with injected
symmetric label noise, and what the shortlist, the rendered profile and the benchmark make of it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossbench.benchmark.choose import TableSpec, profile_errors
from lossbench.choose.profile import clean_counts, clean_ratio, confident_joint, measure
from lossbench.choose.render import terminal
from lossbench.choose.shortlist import IMBALANCE_RATIO, default_objective, imbalance_basis, shortlist


def test_confident_joint_and_clean_counts_worked_by_hand():
    # ten rows, three classes; rows 3 and 7 carry a wrong label (true 1 and 0)
    probs = np.array([
        [0.90, 0.05, 0.05],  # given 0, true 0
        [0.80, 0.10, 0.10],  # given 0, true 0
        [0.70, 0.20, 0.10],  # given 0, true 0
        [0.10, 0.80, 0.10],  # given 0, true 1: confidently 1
        [0.65, 0.20, 0.15],  # given 0, true 0
        [0.10, 0.80, 0.10],  # given 1, true 1
        [0.20, 0.70, 0.10],  # given 1, true 1
        [0.90, 0.05, 0.05],  # given 1, true 0: confidently 0
        [0.50, 0.10, 0.40],  # given 2, true 2: most probable class 0 misses its threshold, so not counted
        [0.45, 0.15, 0.40],  # given 2, true 2: likewise
    ])
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    # thresholds: t0 = (0.9 + 0.8 + 0.7 + 0.1 + 0.65) / 5 = 0.63, t1 = (0.8 + 0.7 + 0.05) / 3, t2 = 0.4
    # counted (given, argmax): (0,0) x4, (0,1), (1,1) x2, (1,0); class 2 has no counted row and keeps
    # one count on its diagonal; rows rescaled to the given counts 5, 3, 2, all divided by n = 10
    q = confident_joint(probs, labels)
    np.testing.assert_allclose(q * 10, [[4, 1, 0], [1, 2, 0], [0, 0, 2]], atol=1e-12)
    assert 1 - np.trace(q) == pytest.approx(0.2)  # two wrong labels in ten
    counts = clean_counts(q, 10)
    np.testing.assert_allclose(counts, [5, 3, 2], atol=1e-12)  # the true labels' counts exactly
    assert clean_ratio(counts, np.array([True, True, True])) == pytest.approx(2.5)
    # a stratified subsample is undone by weights: given class 0 stands for 3 rows per profiled row here
    np.testing.assert_allclose(clean_counts(q, 10, np.array([3.0, 1.0, 1.0])), [4 * 3 + 1, 3 * 1 + 2, 2], atol=1e-12)
    # a class whose estimated count falls to nothing still counts as one row in the ratio
    assert clean_ratio(np.array([50.0, 0.2]), np.array([True, True])) == 50.0


def test_a_tail_threshold_at_the_noise_floor_does_not_pull_head_rows_into_the_tail():
    # three of class 1's four given rows are head rows moved there by noise, so its threshold sits
    # near the noise floor: t1 = (0.1 * 3 + 0.8) / 4 = 0.275, t0 = (0.9 * 3 + 0.6) / 4 = 0.825
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.6, 0.4],
                      [0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.2, 0.8]])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    q = confident_joint(probs, labels)
    # row 3 misses t0 but reaches t1: the paper's rule (the most probable class among those that reach
    # their thresholds) would count it as a wrong label of true class 1 and read true counts 6 and 2;
    # it is not counted, as its most probable class is 0
    assert q[0, 1] == 0.0
    np.testing.assert_allclose(clean_counts(q, 8), [7, 1], atol=1e-12)  # the truth: rows 4-6 are class 0
    assert 1 - np.trace(q) == pytest.approx(3 / 8)


def blobs(counts: list[int], noise: float, seed: int = 0, sep: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian blobs at ``sep`` times the unit vectors (one per class), ``counts`` rows each; a share
    ``noise`` of labels moved to another class uniformly (symmetric noise). Returns x, true and given labels."""
    rng = np.random.default_rng(seed)
    k = len(counts)
    y = np.repeat(np.arange(k), counts)
    x = sep * np.eye(k)[y] + rng.standard_normal((len(y), k))
    flip = rng.random(len(y)) < noise
    given = y.copy()
    given[flip] = (y[flip] + rng.integers(1, k, int(flip.sum()))) % k
    return x, y, given


def test_the_clean_ratio_lands_much_closer_to_the_truth_than_the_given_labels_ratio():
    counts = [480, 240, 120, 60, 30]  # true ratio 16
    x, y, given = blobs(counts, 0.3)
    p = measure(x, given, "multiclass")
    truth = 16.0
    observed = p["imbalance_ratio"]
    est = p["clean_imbalance_ratio"]
    assert observed < 6  # symmetric noise flattens the given counts
    assert abs(math.log(est["value"] / truth)) < 0.3  # within about 30% of the truth
    assert abs(math.log(observed / truth)) > 1.0  # off by a factor of e or more
    assert est["ci"][0] <= truth <= est["ci"][1]
    np.testing.assert_allclose(p["clean_class_counts"], counts, rtol=0.1, atol=5)
    assert abs(p["label_noise"]["value"] - float(np.mean(given != y))) <= 0.05
    # the shortlist decides on the estimate and says so; the terminal shows both ratios
    s = shortlist(p)
    imb = [c for c in s.candidates if "imbalance" in c.answers]
    assert [c.loss for c in imb] == ["weighted_ce"]
    reason = imb[0].reasons[0]
    assert f"{est['value']:.3g} as estimated for the true labels" in reason
    assert f"against {observed:.3g} for the given labels" in reason and "lower end of its interval" in reason
    text = terminal(p, s)
    assert "class counts, true labels (estimated)" in text
    assert f"{observed:.3g} given; {est['value']:.3g} [" in text
    # without noise the estimate equals the given ratio, and the given (exact) ratio decides
    clean = measure(*blobs(counts, 0.0)[::2], "multiclass")
    assert clean["imbalance_ratio"] == 16.0 and clean["clean_imbalance_ratio"]["value"] == pytest.approx(16.0, rel=0.05)
    assert imbalance_basis(clean)[3] is False
    assert "the largest training class is 16 times" in shortlist(clean).candidates[1].reasons[0]


def _noisy_profile(given: float, clean: float, ci: list[float], noise_ci: list[float]) -> dict:
    return {"task": "multiclass", "imbalance_ratio": given, "shape": "exponential", "head_share": 0.4,
            "head_classes": 1, "clean_imbalance_ratio": {"value": clean, "ci": ci},
            "label_noise": {"value": sum(noise_ci) / 2, "ci": noise_ci}, "quick_model": {"out_of_sample_accuracy": 0.7}}


def test_the_shortlist_decides_imbalance_on_the_clean_ratio_only_under_material_noise():
    # given labels flattened to 2.5 by 30% noise, the estimate 12 (7 to 20): imbalance losses, and why
    s = shortlist(_noisy_profile(2.5, 12.0, [7.0, 20.0], [0.25, 0.35]))
    answers = {c.loss: c.answers for c in s.candidates}
    assert answers["weighted_ce"] == ["imbalance"] and "combo" in answers
    reason = s.candidates[1].reasons[0]
    assert "12 as estimated for the true labels (95% CI 7 to 20), against 2.5 for the given labels" in reason
    assert "finds 30.0% of the labels wrong" in reason and "symmetric noise flattens the counts" in reason
    metric, why = default_objective(_noisy_profile(2.5, 12.0, [7.0, 20.0], [0.25, 0.35]), {"objective": None})
    assert metric == "balanced_accuracy" and "12 as estimated for the true labels, 2.5 for the given ones" in why
    # the estimate decides by the lower end of its interval, as every estimated trait does
    wide = shortlist(_noisy_profile(2.5, 12.0, [2.0, 40.0], [0.25, 0.35]))
    assert "weighted_ce" not in wide.losses
    assert any(n.startswith("Imbalance: largest / smallest class 12 as estimated") and
               f"lower end is below {IMBALANCE_RATIO:g}" in n for n in wide.notes)
    # noise that is not material (interval starts below 5%): the given labels' exact ratio decides
    quiet = shortlist(_noisy_profile(2.5, 12.0, [7.0, 20.0], [0.02, 0.06]))
    assert "weighted_ce" not in quiet.losses and any(n.startswith("Mild imbalance (largest / smallest class 2.5)")
                                                        for n in quiet.notes)
    # and a profile from before the estimate existed still works
    old = {k: v for k, v in _noisy_profile(4.0, 12.0, [7.0, 20.0], [0.25, 0.35]).items() if k != "clean_imbalance_ratio"}
    assert "the largest training class is 4 times" in shortlist(old).candidates[1].reasons[0]


def test_the_benchmark_scores_the_clean_estimate_and_keeps_the_observed_ratio_beside_it():
    spec = TableSpec("t", "classification", imbalance_ratio=50.0, label_noise=0.4)
    true = {"imbalance_ratio": {"truth": 40.0, "observed": 4.0}, "label_noise": {"truth": 0.4}}
    p = _noisy_profile(4.0, 30.0, [20.0, 60.0], [0.35, 0.45])
    ratio, noise = profile_errors(spec, p, true)
    assert ratio["basis"] == "true labels, estimated" and ratio["decides"] == "estimate"
    assert ratio["estimate"] == 30.0 and ratio["ci"] == [20.0, 60.0] and ratio["error"] == pytest.approx(-0.25)
    assert ratio["observed"] == 4.0 and ratio["observed_error"] == pytest.approx(-0.9)
    assert noise["error"] == pytest.approx(0.0)
    # a table without label noise scores the given labels' exact ratio
    (plain,) = [r for r in profile_errors(TableSpec("c", "classification", imbalance_ratio=50.0),
                                          {**p, "imbalance_ratio": 40.0}, {**true, "imbalance_ratio": {"truth": 40.0}})
                if r["trait"] == "imbalance_ratio"]
    assert plain["basis"] == "given labels" and plain["estimate"] == 40.0 and plain["error"] == 0.0

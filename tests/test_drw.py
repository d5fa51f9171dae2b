"""Deferred re-weighting (loss.drw_epoch; Cao et al., NeurIPS 2019) on the losses that take class weights.

The weights are checked against Cui et al.'s formula worked out by hand from the counts; the
switch is checked epoch by epoch on real loss modules; and a short real training run shows
both engines (Lightning alone, and a stacked group) switching at the same epoch.
"""

from __future__ import annotations

import math

import pytest
import torch

from lossbench import create_loss, loss_info, pipeline, tracking
from lossbench.engine import run_jobs
from lossbench.errors import ParameterError
from lossbench.losses.classification import set_loss_epoch

from test_engine import assert_same_metrics, history, jobs_of

COUNTS = [400, 120, 30, 6]


def hand_cb_weights(counts: list[int], beta: float) -> list[float]:
    """Cui et al. (CVPR 2019): w_c = (1 - beta) / (1 - beta^n_c), scaled to sum to C."""
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    return [w * len(counts) / sum(raw) for w in raw]


def batch(seed: int = 0, n: int = 64, c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64) * 2, torch.randint(0, c, (n,), generator=g)


def test_hand_computed_weights_favour_the_rare_classes():
    w = hand_cb_weights(COUNTS, 0.9999)
    assert w[0] < w[1] < w[2] < w[3] and math.isclose(sum(w), 4)
    # beta = 0.9999 is close to inverse frequency at these counts: n_c w_c is nearly constant
    assert max(n * x for n, x in zip(COUNTS, w)) / min(n * x for n, x in zip(COUNTS, w)) < 1.05


# loss, its own weighting parameter, the loss with that weighting given by hand
CASES = [
    ("cross_entropy", "weight", {}),
    ("cross_entropy", "weight", {"label_smoothing": 0.1}),
    ("focal", "alpha", {"gamma": 2.0}),
    ("ldam", "weight", {"class_counts": COUNTS, "s": 10.0}),
]


@pytest.mark.parametrize("beta", [0.9999, 0.99])
@pytest.mark.parametrize(("name", "weight_name", "params"), CASES, ids=lambda c: str(c))
def test_the_weights_switch_on_exactly_at_drw_epoch(name, weight_name, params, beta):
    drw = create_loss(name, drw_epoch=3, drw_beta=beta, **{**params, "class_counts": COUNTS})
    plain = create_loss(name, **params)
    weighted = create_loss(name, **{weight_name: hand_cb_weights(COUNTS, beta)}, **params)
    fn = loss_info(name).function
    x, y = batch()
    for epoch in range(6):
        set_loss_epoch(drw, epoch)
        expected = (weighted if epoch >= 3 else plain)(x, y)
        got = drw(x, y)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
        # the pure function at that epoch is the same loss (the module keeps its weights in float32)
        full = {"class_counts": COUNTS, **params, "drw_epoch": 3, "drw_beta": beta}
        torch.testing.assert_close(fn(x, y, epoch=epoch, **full), got, rtol=1e-6, atol=0)
    assert not torch.equal(plain(x, y), weighted(x, y))  # the switch is visible at all
    # and back: an epoch counter that starts again (a new fit) turns the weights off
    set_loss_epoch(drw, 0)
    torch.testing.assert_close(drw(x, y), plain(x, y), rtol=1e-6, atol=0)


def test_drw_from_epoch_zero_and_off_by_default():
    x, y = batch(1)
    zero = create_loss("cross_entropy", drw_epoch=0, class_counts=COUNTS)
    torch.testing.assert_close(zero(x, y), create_loss("cross_entropy", weight=hand_cb_weights(COUNTS, 0.9999))(x, y))
    off = create_loss("cross_entropy", class_counts=COUNTS)  # counts alone change nothing
    set_loss_epoch(off, 50)
    torch.testing.assert_close(off(x, y), create_loss("cross_entropy")(x, y), rtol=0, atol=0)


def test_a_combo_term_with_drw_switches_with_the_combo():
    x, y = batch(2)
    combo = create_loss(
        "combo", class_counts=COUNTS, terms=[{"name": "cross_entropy", "drw_epoch": 1}, {"name": "focal", "weight": 0.5}]
    )
    before = combo(x, y)
    set_loss_epoch(combo, 1)
    assert not torch.equal(before, combo(x, y))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"drw_epoch": -1}, r"The 'drw_epoch' parameter of cross_entropy must be an integer >= 0\. Got -1 instead\."),
        ({"drw_epoch": 2.5}, r"drw_epoch.*int"),
        ({"drw_epoch": 2, "drw_beta": 1.0}, r"The 'drw_beta' parameter of cross_entropy must be a float in \[0, 1\)"),
        ({"drw_epoch": 2}, r"'drw_epoch' parameter of cross_entropy needs class_counts.*class_counts=\[n_0"),
        ({"drw_epoch": 2, "class_counts": COUNTS, "weight": [1, 1, 1, 1]},
         r"'weight' and 'drw_epoch' parameters of cross_entropy both set class weights; give one of them"),
    ],
)
def test_bad_drw_settings_are_one_line_errors(params, message):
    with pytest.raises(ParameterError, match=message) as err:
        create_loss("cross_entropy", **params)
    assert "\n" not in str(err.value)


def test_focal_with_both_alpha_and_drw_is_refused():
    with pytest.raises(ParameterError, match=r"'alpha' and 'drw_epoch' parameters of focal"):
        create_loss("focal", alpha=0.25, drw_epoch=1, class_counts=COUNTS)


DRW_DATA = ["data=imbalanced", "data.n_max=120", "model=mlp", "model.hidden=[32,32]", "trainer.max_epochs=5"]


@pytest.mark.slow
def test_both_engines_switch_at_the_same_epoch_in_real_training(compose, mlflow_uri):
    jobs = jobs_of(
        compose,
        ["loss=ldam", "loss.drw_epoch=2", "loss.s=10", "seed=0"],
        ["loss=cross_entropy", "loss.drw_epoch=3", "seed=1"],
        ["loss=focal", "loss.drw_epoch=2", "loss.drw_beta=0.99", "seed=2", "data.label_noise=0.2"],
        ["loss=cross_entropy", "seed=1"],  # the same run without DRW, to see the switch
        common=DRW_DATA,
    )
    grouped = run_jobs(jobs, engine="batched", multirun=True)
    alone = {num: pipeline.run(cfg, overrides=ov, multirun=True) for num, cfg, ov in jobs}
    c = tracking.client(mlflow_uri)
    for num, _, ov in jobs:
        g, a = grouped[num], alone[num]
        assert g.status == a.status == "FINISHED", (ov, g.message, a.message)
        assert_same_metrics(g.metrics, a.metrics, where=ov)
        assert c.get_run(g.run_id).data.params == c.get_run(a.run_id).data.params
        for key in ("train_loss", "val_loss"):
            hg, ha = history(mlflow_uri, g.run_id, key), history(mlflow_uri, a.run_id, key)
            assert [s for s, _ in hg] == [s for s, _ in ha] == list(range(5))
            for (_, vg), (_, va) in zip(hg, ha, strict=True):
                assert math.isclose(vg, va, rel_tol=1e-4, abs_tol=1e-7), (ov, key, vg, va)
    # cross-entropy with drw_epoch=3 is plain cross-entropy for epochs 0-2, then it is not
    drw, plain = (history(mlflow_uri, alone[i].run_id, "train_loss") for i in (1, 3))
    for epoch in range(3):
        assert math.isclose(drw[epoch][1], plain[epoch][1], rel_tol=1e-6), epoch
    assert not math.isclose(drw[3][1], plain[3][1], rel_tol=1e-3)
    params = c.get_run(alone[1].run_id).data.params
    assert params["loss.drw_epoch"] == "3" and params["loss.drw_beta"] == "0.9999"

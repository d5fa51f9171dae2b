"""A loss declares the last layer it needs (registry.LossSpec.head) and every run gets it.

LDAM (Cao et al., NeurIPS 2019) scales its logits by s=30 and so assumes a cosine classifier;
on a plain linear head it saturates and collapses (issue 11 saw 0.10 balanced accuracy on
CIFAR-10-LT). These tests train the real thing: a mixed sweep on digits as images with the cnn.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lossbench
from lossbench import pipeline
from lossbench.models.networks import NormedLinear
from lossbench.models.outputs import evaluate
from lossbench.registry import loss_info

IMAGES = {
    "data": "digits_lt", "data__as_image": True, "data__imbalance_ratio": 10.0, "model": "cnn",
"model__hidden": 32, "trainer__max_epochs": 30, "optimizer": "adam",
    "optimizer__lr": 0.01, "scheduler": "none",
}


def test_only_ldam_asks_for_a_normed_head():
    from lossbench.registry import list_losses

    wanting = sorted(name for name in list_losses() if loss_info(name).head != "linear")
    assert wanting == ["ldam"]
    assert loss_info("ldam").as_dict()["head"] == "normed"


def test_the_pipeline_gives_ldam_its_head_and_records_it(compose):
    p = pipeline.prepare(compose("loss=ldam", "data=digits_lt", "data.as_image=true", "model=cnn"))
    assert isinstance(p.net.head[-1], NormedLinear) and p.cfg["model"]["head"] == "normed"
    q = pipeline.prepare(compose("loss=ldam", "data=digits_lt", "model=mlp", "model.head=linear"))
    assert not any(isinstance(m, NormedLinear) for m in q.net.modules()) and q.cfg["model"]["head"] == "linear"
    r = pipeline.prepare(compose("loss=focal", "data=digits_lt", "model=mlp"))
    assert r.cfg["model"]["head"] == "linear"
    with pytest.raises(lossbench.LossbenchError, match="loss 'focal' does not scale"):
        pipeline.prepare(compose("loss=focal", "data=digits_lt", "model=mlp", "model.head=normed"))


def test_probabilities_of_a_scaling_loss_are_its_own_softmax(compose):
    """NLL and calibration of an LDAM run use softmax(s * cosines), the distribution it trains."""
    p = pipeline.prepare(compose("loss=ldam", "data=digits_lt", "model=mlp"))
    torch.manual_seed(0)
    out = torch.rand(40, 10) * 2 - 1
    y = torch.randint(0, 10, (40,))
    metrics, _ = evaluate(p.kind, p.info, p.loss, out, y)
    probs = torch.softmax(30.0 * out.double(), dim=1)
    nll = float(-probs[torch.arange(40), y].clamp_min(np.finfo(np.float64).eps).log().mean())
    assert metrics["nll"] == pytest.approx(nll, rel=1e-5)


@pytest.mark.slow
def test_ldam_trains_sensibly_in_a_mixed_sweep_on_images(mlflow_uri):
    """The batched engine; tests/test_engine.py checks an LDAM member equals its run trained alone."""
    engine = "batched"
    df = lossbench.sweep("loss=cross_entropy,ldam", "model.channels=[8,16]", seed=range(2), engine=engine,
                         tracking__uri=mlflow_uri, tracking__experiment_name="needs", **IMAGES)
    assert len(df) == 4 and set(df["status"]) == {"FINISHED"}
    heads = dict(zip(df["tags.loss"], df["params.model.head"], strict=False))
    assert heads == {"cross_entropy": "linear", "ldam": "normed"}
    # different heads cannot share a stacked model: one group per head
    assert df.groupby("tags.loss")["tags.engine_group"].nunique().eq(1).all()
    assert df["tags.engine_group"].nunique() == 2
    bacc = df.groupby("tags.loss")["metrics.test_balanced_accuracy"].mean()
    assert bacc["ldam"] > 0.75, bacc  # chance is 0.1; on a linear head it stays near 0.5 at 12 epochs
    assert bacc["ldam"] > bacc["cross_entropy"] - 0.1, bacc

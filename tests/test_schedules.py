"""The warm-up-then-step schedule of the CIFAR-LT recipe, and the configs that name it."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lossbench.configs import CONFIG_DIR
from lossbench.errors import ParameterError
from lossbench.models.schedules import WarmupStep


def cao_lr(epoch0: int, lr: float = 0.1) -> float:
    """Cao et al.'s adjust_learning_rate, restated from the paper's recipe: 1-based epoch e."""
    e = epoch0 + 1
    if e <= 5:
        return lr * e / 5
    if e > 180:
        return lr * 0.0001
    if e > 160:
        return lr * 0.01
    return lr


def lrs(scheduler, opt, epochs=200):
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


def test_warmup_step_is_caos_schedule_and_torchs_composition():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    ours = lrs(WarmupStep(opt, warmup_epochs=5, milestones=[160, 180], gamma=0.01), opt)
    assert ours == pytest.approx([cao_lr(e) for e in range(200)], rel=1e-12)
    # an independent composition from torch's own schedulers
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    warm = torch.optim.lr_scheduler.LambdaLR(opt2, lambda e: (e + 1) / 5)
    steps = torch.optim.lr_scheduler.MultiStepLR(opt2, milestones=[155, 175], gamma=0.01)
    theirs = lrs(torch.optim.lr_scheduler.SequentialLR(opt2, [warm, steps], milestones=[5]), opt2)
    assert ours == pytest.approx(theirs, rel=1e-9)
    assert ours[0] == pytest.approx(0.02) and ours[4] == pytest.approx(0.1) and ours[199] == pytest.approx(1e-5)


def test_warmup_step_refuses_bad_settings_with_the_fix():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ParameterError, match=r"milestones.*increasing epochs, like \[160, 180\]"):
        WarmupStep(opt, milestones=[180, 160])
    with pytest.raises(ParameterError, match="gamma"):
        WarmupStep(opt, gamma=0.0)
    with pytest.raises(ParameterError, match="warmup_epochs"):
        WarmupStep(opt, warmup_epochs=-1)
    assert WarmupStep(opt, warmup_epochs=0, milestones=[]).factor(0) == 1.0


def _compose(*overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return OmegaConf.to_container(compose("train", overrides=list(overrides)), resolve=True)


def test_the_paper_suite_is_the_papers_recipe():
    c = _compose("experiment=cifar10_lt_paper", "loss=ldam_drw")
    assert c["model"]["name"] == "resnet32" and c["data"]["augment"] == "crop_flip"
    assert c["data"]["imbalance_ratio"] == 100.0 and c["data"]["batch_size"] == 128
    assert (c["optimizer"]["lr"], c["optimizer"]["momentum"], c["optimizer"]["weight_decay"]) == (0.1, 0.9, 0.0002)
    assert c["scheduler"]["name"] == "warmup_step" and c["trainer"]["max_epochs"] == 200
    assert c["loss"]["drw_epoch"] == 160 and c["loss"]["drw_beta"] == 0.9999 and c["loss"]["variant"] == "ldam_drw"
    cb = _compose("experiment=cifar10_lt_paper", "loss=cb_focal")["loss"]
    assert (cb["name"], cb["base"], cb["beta"]) == ("class_balanced", "focal", 0.9999)


def test_ldam_drw_switches_80_percent_into_any_run():
    assert _compose("loss=ldam_drw", "trainer.max_epochs=30")["loss"]["drw_epoch"] == 24


def test_a_bad_schedule_is_refused_before_any_run(compose, mlflow_uri):
    from lossbench import pipeline, tracking

    with pytest.raises(ParameterError, match="milestones"):
        pipeline.run(compose("scheduler=warmup_step", "scheduler.milestones=[9,3]", experiment_name="bad-schedule"))
    assert tracking.client(mlflow_uri).get_experiment_by_name("bad-schedule") is None

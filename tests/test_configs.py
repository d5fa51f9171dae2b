"""Configs and registry agree both ways; every config and suite composes; configs ship in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lossbench import create_loss, list_losses, loss_info
from lossbench.configs import CONFIG_DIR
from lossbench.losses.__main__ import config_for

LOSS_DIR = Path(CONFIG_DIR) / "loss"
EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def _compose(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def _variants() -> dict[str, str]:
    """Config files that name a variant of a registered loss (variant: <stem>)."""
    out = {}
    for p in LOSS_DIR.glob("*.yaml"):
        cfg = _compose(f"loss={p.stem}").loss
        if cfg.get("variant") is not None:
            out[p.stem] = cfg.name
    return out


@pytest.mark.slow
def test_loss_config_files_and_registry_match_both_ways():
    stems = {p.stem for p in LOSS_DIR.glob("*.yaml")}
    names = set(list_losses())
    aliases = {a for n in names for a in loss_info(n).aliases}
    variants = _variants()
    assert names <= stems, f"losses without a config: {names - stems}"
    assert stems <= names | aliases | set(variants), f"configs without a loss: {stems - names - aliases - set(variants)}"
    for stem, base in variants.items():
        assert _compose(f"loss={stem}").loss.variant == stem and base in names


def test_label_smoothing_variant_is_cross_entropy_with_smoothing():
    cfg = _compose("loss=label_smoothing").loss
    assert cfg.name == "cross_entropy" and cfg.label_smoothing == 0.1


@pytest.mark.parametrize("name", list_losses())
def test_each_loss_config_composes_and_builds(name):
    cfg = OmegaConf.to_container(_compose(f"loss={name}").loss, resolve=True)
    assert cfg == config_for(loss_info(name)), "config file is stale: regenerate with --write-configs"
    params = {k: v for k, v in cfg.items() if k != "name"}
    if "class_counts" in {p.name for p in loss_info(name).params}:
        params["class_counts"] = [30, 10, 5]
    assert create_loss(cfg["name"], **params).loss_name == name


@pytest.mark.parametrize("alias,target", [("l2", "rmse"), ("mae", "l1")])
def test_alias_configs_select_their_loss(alias, target):
    assert _compose(f"loss={alias}").loss.name == target


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.slow
def test_each_experiment_composes_with_a_sweep(name):
    cfg = _compose(f"experiment={name}")
    assert cfg.tracking.experiment_name == name
    params = cfg.hydra.sweeper.params
    assert params, f"experiment {name} declares no sweep"
    # a suite of several grids (hydra.sweeper.grids): each block with the shared params
    blocks = [{**params, **block} for block in (cfg.hydra.sweeper.get("grids") or [{}])]
    for block in blocks:
        for group in ("loss", "data", "model"):
            if group in block:
                for choice in str(block[group]).split(","):
                    assert (Path(CONFIG_DIR) / group / f"{choice.strip()}.yaml").exists(), (name, group, choice)
        for choice in str(block.get("loss", cfg.loss.name)).split(","):
            fixed = [f"{k}={v}" for k, v in block.items() if k != "loss" and "," not in str(v) and "(" not in str(v)]
            composed = _compose(f"experiment={name}", f"loss={choice.strip()}", *fixed)
            assert composed.loss.name in list_losses()
            assert composed.tracking.experiment_name == name


@pytest.mark.slow
def test_configs_and_experiments_ship_inside_the_wheel(tmp_path, repo_root):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(repo_root)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("lossbench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "lossbench/configs/train.yaml" in names
    assert {f"lossbench/configs/loss/{n}.yaml" for n in list_losses()} <= names
    assert {f"lossbench/configs/experiment/{e}.yaml" for e in EXPERIMENTS} <= names
    assert "lossbench/configs/data/imbalanced.yaml" in names and "lossbench/configs/report.yaml" in names
    assert "lossbench/configs/search.yaml" in names
    assert {"lossbench/configs/engine/auto.yaml", "lossbench/configs/hydra/sweeper/lossbench.yaml"} <= names
    # every package of the source tree ships (a package missing from pyproject's list would not)
    packages = {p.relative_to(repo_root).as_posix() for p in (repo_root / "lossbench").rglob("__init__.py")}
    assert packages <= names, packages - names
    # the installed package works outside the checkout: compose a suite from the wheel alone
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True)
    out = subprocess.run(
        [sys.executable, "-c", "import lossbench, sys; print(lossbench.__file__)"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert str(site) in out.stdout, out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "lossbench", "experiment=quick", "--cfg", "job"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "experiment_name: quick" in out.stdout

"""Third-party losses through the `lossbench.losses` entry-point group.

Each test pip-installs a real tiny distribution into a temp dir and runs a fresh Python
process with it on the path, so the registry's lazy loading is exercised as users meet it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GOOD = '''
import torch
from lossbench import Param, Search, register_loss

@register_loss(
    "toy_abs",
    tasks=("regression",),
    params=[Param("scale", 1.0, "float", low=0.0, closed="neither", search=Search.float(0.1, 10.0, log=True))],
    traits=("convex", "robust_to_outliers"),
    description="Scaled absolute error (a plugin test loss).",
    reference="lossbench test suite",
)
def toy_abs(pred, target, *, scale=1.0, reduction="mean"):
    out = scale * (pred - target).abs()
    return out if reduction == "none" else (out.sum() if reduction == "sum" else out.mean())
'''

CLASH = '''
from lossbench import register_loss

@register_loss("huber", tasks=("regression",), description="an impostor", reference="none")
def huber(pred, target, *, reduction="mean"):
    return (pred - target).abs().mean()
'''

BROKEN = '''
raise ImportError("this plugin needs a package that is not installed")
'''


def install_plugin(tmp_path: Path, dist: str, module: str, source: str) -> Path:
    src = tmp_path / f"src_{dist}"
    (src / module).mkdir(parents=True)
    (src / module / "__init__.py").write_text(textwrap.dedent(source))
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "{dist}"
            version = "0.1"
            [project.entry-points."lossbench.losses"]
            {module} = "{module}"
            [tool.setuptools]
            packages = ["{module}"]
            """
        )
    )
    site = tmp_path / f"site_{dist}"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    return site


def run_python(code: str, *sites: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(s) for s in sites))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def good_site(tmp_path_factory):
    return install_plugin(tmp_path_factory.mktemp("good"), "lossbench-toy", "lossbench_toy", GOOD)


@pytest.mark.slow
def test_plugin_loss_is_registered_lazily_and_usable(good_site):
    r = run_python(
        """
        import sys, torch
        import lossbench
        assert "lossbench_toy" not in sys.modules, "plugins must not load at import lossbench"
        from lossbench import create_loss, list_losses, loss_info
        assert "toy_abs" in list_losses(task="regression")
        assert "lossbench_toy" in sys.modules
        spec = loss_info("toy_abs")
        print(spec.source)
        loss = create_loss("toy_abs", scale=2.0)
        print(float(loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0]))))
        try:
            create_loss("toy_abs", scale=-1)
        except ValueError as e:
            print(e)
        """,
        good_site,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "lossbench-toy" in lines[0]
    assert float(lines[1]) == pytest.approx(4.0)  # 2 * mean(|1|, |3|)
    assert lines[2] == "The 'scale' parameter of toy_abs must be a float in (0, inf). Got -1 instead."


@pytest.mark.slow
def test_plugin_losses_pass_the_contract_tests(good_site):
    env = dict(os.environ, PYTHONPATH=str(good_site))
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__).with_name("test_loss_contract.py")), "-k", "toy_abs"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stdout[-3000:]
    passed = re.search(r"(\d+) passed", r.stdout)
    # shapes x 3 reductions, reductions, independence, extremes x 2, gradcheck, module==function,
    # perfect prediction, half precision x 2: at least 12 checks ran on the plugin's loss
    assert passed and int(passed.group(1)) >= 12, r.stdout[-2000:]


@pytest.mark.slow
def test_broken_plugin_is_warned_about_and_skipped(tmp_path, good_site):
    broken = install_plugin(tmp_path, "lossbench-broken", "lossbench_broken", BROKEN)
    r = run_python(
        """
        import warnings
        warnings.simplefilter("always")
        from lossbench import list_losses
        names = list_losses()
        print("huber" in names, "toy_abs" in names)
        """,
        broken,
        good_site,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True True"
    assert "Skipping lossbench plugin" in r.stderr and "lossbench-broken" in r.stderr
    assert "needs a package that is not installed" in r.stderr


@pytest.mark.slow
def test_name_clash_is_an_error_naming_both_sources(tmp_path):
    clash = install_plugin(tmp_path, "lossbench-clash", "lossbench_clash", CLASH)
    r = run_python(
        """
        from lossbench import create_loss
        try:
            create_loss("huber")
        except ValueError as e:
            print(e)
        """,
        clash,
    )
    assert r.returncode == 0, r.stderr
    msg = r.stdout.strip()
    assert "'huber' is registered twice" in msg
    assert "lossbench (built-in)" in msg and "lossbench-clash" in msg

"""The catalogue of bad inputs: one case per line, each met by a clear message.

Every command-line case runs the real entry point (`lossbench.__main__.main`, in this
process to keep the suite fast; one case also runs as a real subprocess) and checks:
the message names the problem and the fix, the exit status is non-zero, no traceback
is printed, and the run already in the store is still there, unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lossbench import create_loss
from lossbench import tracking
from lossbench.errors import LossbenchError


def _csv(rows: dict, name: str = "t.csv", sep: str = ","):
    def write(d: Path) -> str:
        path = d / name
        pd.DataFrame(rows).to_csv(path, index=False, sep=sep)
        return str(path)

    return write


_rng = np.random.default_rng(0)
_X = _rng.normal(size=60)
_CSV_NAN = {"a": [*_X[:59], np.nan], "y": _X}
_CSV_INF = {"a": _X, "y": [*_X[:59], np.inf]}
_CSV_TEXT_TARGET = {"a": _X, "y": ["low", "high"] * 30}
_CSV_ONE_CLASS = {"a": _X, "y": [1] * 60}
_CSV_EMPTY_COLUMN = {"a": _X, "e": [np.nan] * 60, "y": _X}
_CSV_TOO_LARGE = {"a": [*_X[:59], 1e308], "y": _X}
_CSV_RATINGS = {"a": _X, "y": [1, 2, 3, 4, 5] * 12}
_CSV_STRAY_WORD = {"a": [*(f"{v:.6f}" for v in _X[:17]), "?", *(f"{v:.6f}" for v in _X[18:])], "y": _X}

REG = ["data=regression_outliers", "data.n_samples=200"]
# id | command-line arguments ({tmp} is the working dir) or a file writer | what the message must say
CATALOGUE = [
    ("unknown-loss", ["loss=hubr"], "Did you mean 'huber'?"),
    ("unknown-data", ["data=imbalancd"], "Did you mean 'imbalanced'?"),
    ("unknown-model", ["model=mpl"], "Did you mean 'mlp'?"),
    ("unknown-experiment", ["experiment=quik"], "Did you mean 'quick'?"),
    ("loss-task-mismatch", ["loss=mse", "data=imbalanced"], "Losses that fit multiclass data: "),
    ("param-wrong-type", ["loss=huber", "loss.delta=abc", *REG], "The 'delta' parameter of huber must be a float in (0, inf). Got 'abc' instead."),
    ("param-out-of-range", ["loss=focal", "loss.gamma=-1"], "The 'gamma' parameter of focal must be a float in [0, inf). Got -1"),
    ("param-alpha-range", ["loss=balanced_bce", "loss.alpha=1.5", "data=breast_cancer"], "The 'alpha' parameter of balanced_bce must be a float in [0, 1]. Got 1.5"),
    ("param-unknown", ["loss=huber", "+loss.dleta=1", *REG], "Did you mean 'delta'?"),
    ("data-param-bad-value", ["loss=huber", *REG, "data.outlier_type=sideways"], "outlier_type"),
    ("data-param-unknown", ["loss=huber", *REG, "+data.n_sampels=5"], "Did you mean 'n_samples'?"),
    ("data-key-mistyped", ["loss=huber", *REG, "data.n_sampels=5"], "data 'regression_outliers' has no setting 'data.n_sampels'. Did you mean 'n_samples'?"),
    ("loss-key-mistyped", ["loss=huber", *REG, "loss.dleta=2"], "Did you mean 'delta'?"),
    ("setting-mistyped", ["sede=1"], "Unknown setting 'sede'. Did you mean 'seed'?"),
    ("model-does-not-fit-data", ["model=cnn", "data=imbalanced"], "cnn"),
    ("seed-negative", ["seed=-1"], "seed must be an int in [0, 4294967295]. Got -1"),
    ("seed-too-large", ["seed=4294967296"], "seed must be an int in [0, 4294967295]"),
    ("lr-not-positive", ["optimizer.lr=-0.1"], "optimizer.lr must be a float in (0, inf). Got -0.1"),
    ("max-epochs-zero", ["trainer.max_epochs=0"], "trainer.max_epochs must be an integer >= 1. Got 0"),
    ("max-epochs-forever", ["trainer.max_epochs=-1"], "trainer.max_epochs must be an integer >= 1. Got -1"),
    ("trainer-precision-bogus", ["trainer.precision=bogus"], "trainer.precision must be one of '64', '32'"),
    ("trainer-accelerator-tpu", ["trainer.accelerator=tpu"], "trainer.accelerator must be one of 'auto', 'cpu'"),
    ("trainer-unknown-arg", ["+trainer.max_epoch=3"], "trainer.max_epoch is not an argument of Lightning's Trainer. Did you mean 'max_epochs'?"),
    ("tracking-uri-empty", ["tracking.uri="], "tracking.uri is empty. Drop it to use the embedded store"),
    ("database-not-listening", ["tracking.uri=postgresql://u:p@127.0.0.1:1/db"], "The postgresql database at 127.0.0.1:1 does not answer"),
    ("unknown-setting-added", ["+foo=1"], "Unknown setting 'foo'."),
    ("joblib-no-workers", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "seed=0,1"], "hydra.launcher.n_jobs must be a number of workers"),
    ("weight-decay-negative", ["optimizer.weight_decay=-0.01"], "optimizer.weight_decay must be a float in [0, inf). Got -0.01"),
    *([("trainer-gpu-without-one", ["trainer=gpu"], "torch sees no GPU on this machine. Use trainer=cpu")]
      if not torch.cuda.is_available() else []),
    ("csv-missing", ["data=csv", "data.path={tmp}/nope.csv", "data.target=y", "loss=mse"], "nope.csv"),
    ("csv-empty", ["data=csv", "data.path={empty_csv}", "data.target=y", "loss=mse"], "empty"),
    ("csv-no-target-column", ["data=csv", "data.path={csv_ok}", "data.target=why", "loss=mse"], "why"),
    ("csv-nan", ["data=csv", "data.path={csv_nan}", "data.target=y", "loss=mse"], "missing value"),
    ("csv-inf", ["data=csv", "data.path={csv_inf}", "data.target=y", "loss=mse"], "inf"),
    ("csv-text-regression-target", ["data=csv", "data.path={csv_text}", "data.target=y", "data.task=regression", "loss=mse"], "numeric"),
    ("csv-single-class", ["data=csv", "data.path={csv_one}", "data.target=y", "data.task=multiclass", "loss=cross_entropy"], "class"),
    ("csv-empty-column", ["data=csv", "data.path={csv_empty_column}", "data.target=y", "loss=mse"],
     "column 'e' is empty: none of the 60 rows has a value; drop it from the file, or leave it out with data.features=[a]"),
    ("csv-too-large-for-float32", ["data=csv", "data.path={csv_too_large}", "data.target=y", "loss=mse"],
     "column 'a' has 1 value(s) too large for float32, the precision lossbench trains in (1e+308 in rows 59"),
    ("csv-semicolon-separated", ["data=csv", "data.path={csv_semicolon}", "data.target=y", "loss=mse"],
     "semi.csv looks separated by ';', not ',' (it reads as one column, 'a;y'): set data.sep=semicolon"),
    ("csv-ratings-with-a-regression-loss", ["data=csv", "data.path={csv_ratings}", "data.target=y", "loss=mse"],
     "Or, to predict 'y' as a number, set data.task=regression (data.task=auto read its 5 whole-number values as classes)"),
    ("csv-stray-word-in-numbers", ["data=csv", "data.path={csv_stray_word}", "data.target=y", "loss=mse"],
     "column 'a' holds numbers except 1 value(s) that are not numbers ('?'; rows 17); fix those values or drop their rows"),
    ("image-set-not-on-disk", ["data=mnist_lt", "data.download=false", "data.data_dir={tmp}/no_data", "model=cnn"], "data.download=true"),
    ("cifar-planted-pickle", ["data=cifar10_lt", "data.download=false", "data.verify_md5=false", "data.data_dir={evil}", "model=cnn"], "refusing to load"),
    ("tracking-server-down", ["loss=huber", *REG, "tracking.uri=http://127.0.0.1:9"], "does not answer"),
    ("store-under-a-file", ["loss=huber", *REG, "tracking.uri=sqlite:///{csv_ok}/mlflow.db"],
     "ok.csv is a file, not a folder. Point tracking.uri at a store you can write"),
    ("store-is-a-folder", ["loss=huber", *REG, "tracking.uri=sqlite:///{tmp}"], "is a folder, not a file"),
]

FILES = {
    "empty_csv": lambda d: (d / "empty.csv").write_text("") or str(d / "empty.csv"),
    "csv_ok": _csv({"a": _X, "y": _X}, "ok.csv"),
    "csv_nan": _csv(_CSV_NAN, "nan.csv"),
    "csv_inf": _csv(_CSV_INF, "inf.csv"),
    "csv_text": _csv(_CSV_TEXT_TARGET, "text.csv"),
    "csv_one": _csv(_CSV_ONE_CLASS, "one.csv"),
    "csv_empty_column": _csv(_CSV_EMPTY_COLUMN, "empty_column.csv"),
    "csv_too_large": _csv(_CSV_TOO_LARGE, "too_large.csv"),
    "csv_semicolon": _csv({"a": _X, "y": _X}, "semi.csv", sep=";"),
    "csv_ratings": _csv(_CSV_RATINGS, "ratings.csv"),
    "csv_stray_word": _csv(_CSV_STRAY_WORD, "stray.csv"),
}


def _plant_evil_cifar(d: Path) -> str:
    """A CIFAR folder whose batch, if unpickled naively, would run a command."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {d / 'PWNED'}",))

    root = d / "evil"
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({"data": Evil()}))
    return str(root)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working dir whose store already holds one finished run (that must never be lost)."""
    d = tmp_path_factory.mktemp("bad_input")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    exp = tracking.ensure_experiment(uri, "lossbench")
    run = tracking.Run.start(uri, exp, "precious", {"loss": "mse"}, {"seed": 0})
    run_id = run.run_id
    tracking.client(uri).log_metric(run_id, "test_rmse", 0.5)
    run.end("FINISHED")
    return d, uri, run_id


def _store_snapshot(uri: str):
    c = tracking.client(uri)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    return sorted((r.info.run_id, r.info.status, tuple(sorted(r.data.metrics.items()))) for r in runs)


def run_main(argv: list[str], cwd: Path, capsys) -> tuple[int, str]:
    from lossbench.__main__ import main

    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = ["lossbench", "trainer.max_epochs=1", "hydra.run.dir=" + str(cwd / "outputs"), *argv]  # argv wins
    os.chdir(cwd)
    env_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
        if env_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_uri
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("case,argv,expected", CATALOGUE, ids=[c[0] for c in CATALOGUE])
@pytest.mark.slow
def test_bad_command_line_input(case, argv, expected, workdir, capsys):
    d, uri, _ = workdir
    before = _store_snapshot(uri)
    values = {"tmp": str(d), **{k: f(d) for k, f in FILES.items() if any("{" + k + "}" in a for a in argv)}}
    if any("{evil}" in a for a in argv):
        values["evil"] = _plant_evil_cifar(d)
    args = [a.format(**values) for a in argv]
    code, output = run_main(args, d, capsys)
    assert code != 0, f"{case}: exit status 0\n{output[-2000:]}"
    assert expected in output, f"{case}: message lacks {expected!r}:\n{output[-2000:]}"
    assert "Traceback" not in output, f"{case}: a traceback was printed:\n{output[-3000:]}"
    assert _store_snapshot(uri) == before, f"{case}: the store changed"
    assert not (d / "PWNED").exists(), "a planted pickle ran code"


def test_a_stray_word_in_a_column_of_numbers_is_not_taken_for_categories(workdir, capsys):
    """300 numbers and one '?': the advice used to be to raise data.max_categories, and
    following it one-hot encoded 300 values into a run recorded FINISHED."""
    d, uri, _ = workdir
    x = np.random.default_rng(1).normal(size=300)
    a = [f"{v:.6f}" for v in x]
    a[123] = "?"
    pd.DataFrame({"a": a, "y": x}).to_csv(d / "stray300.csv", index=False)
    before = _store_snapshot(uri)
    for extra in ([], ["data.max_categories=1000"]):
        args = ["data=csv", f"data.path={d / 'stray300.csv'}", "data.target=y", "loss=mse", *extra]
        code, output = run_main(args, d, capsys)
        assert code == 2, output[-2000:]
        assert "('?'; rows 123)" in output and "max_categories" not in output, output[-2000:]
    assert _store_snapshot(uri) == before


def test_the_separator_the_message_names_reads_the_file(workdir, capsys):
    d, uri, _ = workdir
    path = _csv({"a": _X, "y": 2 * _X}, "semi_ok.csv", sep=";")(d)
    for sep in ("semicolon", ";"):  # by name, as a shell takes it, and as the character itself
        code, output = run_main(
            ["data=csv", f"data.path={path}", "data.target=y", "loss=mse", "model=linear", f"data.sep={sep!r}",
             "tracking.experiment_name=separator", "tracking.skip_finished=false"], d, capsys,
        )
        assert code == 0, output[-2000:]
    c = tracking.client(uri)
    runs = c.search_runs([c.get_experiment_by_name("separator").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert all(r.data.params["data.sep"] in ("semicolon", ";") for r in runs)


@pytest.mark.slow
def test_the_debug_switch_shows_the_traceback_and_the_real_process_exits_2(tmp_path):
    args = [sys.executable, "-m", "lossbench", "loss=mse", "data=imbalanced"]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    plain = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert plain.returncode == 2
    assert plain.stderr.startswith("error: The loss 'mse' is for regression tasks")
    assert "Traceback" not in plain.stderr
    debug = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env={**env, "LOSSBENCH_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "LossbenchError" in debug.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing was created for a refused run


# ------------------------------------------------------------------ the Python API
API_CASES = [
    ("missing-class-counts", lambda: create_loss("ldam"), "needs class_counts"),
    ("kl-target-not-summing-to-1", lambda: create_loss("kl_div")(torch.zeros(2, 3), torch.full((2, 3), 0.5)), "sum to 1"),
    ("js-target-negative", lambda: create_loss("js_div")(torch.zeros(2, 2), torch.tensor([[1.5, -0.5], [0.5, 0.5]])), "negative"),
    ("kl-target-nan", lambda: create_loss("kl_div")(torch.zeros(1, 2), torch.tensor([[float("nan"), 1.0]])), "NaN"),
    ("shapes-differ", lambda: create_loss("mse")(torch.zeros(4, 1), torch.zeros(4)), "same shape"),
    ("labels-out-of-range", lambda: create_loss("cross_entropy")(torch.zeros(4, 3), torch.tensor([0, 1, 2, 5])), "labels must lie in [0, 2]"),
    ("one-hot-instead-of-labels", lambda: create_loss("focal")(torch.zeros(4, 3), torch.eye(3)[[0, 1, 2, 0]]), "class indices"),
    ("unknown-loss-api", lambda: create_loss("focall"), "Did you mean 'focal'?"),
    ("bad-reduction", lambda: create_loss("l1", reduction="avg"), "must be one of 'mean', 'sum', 'none'"),
    ("class-counts-negative", lambda: create_loss("ldam", class_counts=[10, -1]), "class_counts"),
]


@pytest.mark.parametrize("case,call,expected", API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_api_input(case, call, expected):
    with pytest.raises(LossbenchError) as err:
        call()
    assert expected in str(err.value)


def _report_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
    return subprocess.run([sys.executable, "-m", "lossbench.report", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=120)


def _truncated_store(d: Path) -> Path:
    """A real store with a run, cut to half its size (as a full disk or a killed copy leaves it)."""
    db = d / "cut.db"
    uri = f"sqlite:///{db}"
    run = tracking.Run.start(uri, tracking.ensure_experiment(uri, "lossbench"), "r", {"loss": "mse"}, {"seed": 0})
    run.end("FINISHED")
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.truncate(size // 2)
    return db


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["not-a-database", "truncated"])
def test_the_report_on_a_damaged_store_is_one_line_and_exit_2(tmp_path, damage):
    if damage == "not-a-database":
        db = tmp_path / "notes.db"
        db.write_text("these are my notes, not an MLflow store\n" * 50)
    else:
        db = _truncated_store(tmp_path)
    res = _report_cli(f"tracking.uri=sqlite:///{db}", "tracking.experiment_name=lossbench", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "sqlalchemy" not in res.stderr.lower()
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert str(db) in lines[0] and "is damaged or not an SQLite database" in lines[0]
    assert "Restore it from a backup" in lines[0]
    assert not (tmp_path / "reports").exists()


@pytest.mark.slow
def test_a_report_folder_under_a_file_is_one_line_and_exit_2_before_reading_the_store(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder\n")
    # the store does not exist either: the folder is checked first, before any work
    res = _report_cli(f"tracking.uri=sqlite:///{tmp_path / 'none.db'}", "tracking.experiment_name=lossbench",
                      f"report.out_dir={tmp_path / 'taken' / 'report'}", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip() == (f"error: report.out_dir={tmp_path / 'taken' / 'report'} cannot be made: "
                                  f"{tmp_path / 'taken'} is a file, not a folder. Pick another report.out_dir.")


def test_path_blocker_names_the_part_of_a_path_that_stops_it(tmp_path):
    from lossbench.errors import path_blocker

    (tmp_path / "taken").write_text("a file\n")
    assert path_blocker(tmp_path / "new" / "deeper" / "store.db", file=True) is None
    assert path_blocker(tmp_path / "new" / "report", file=False) is None
    assert path_blocker(tmp_path / "taken" / "a" / "store.db", file=True) == ("file", tmp_path / "taken")
    assert path_blocker(tmp_path / "taken", file=False) == ("file", tmp_path / "taken")
    assert path_blocker(tmp_path / "taken", file=True) is None  # an existing file may be written
    if os.geteuid() == 0:  # root writes through file modes
        return
    (tmp_path / "taken").chmod(0o444)
    (tmp_path / "locked").mkdir(mode=0o555)
    assert path_blocker(tmp_path / "taken", file=True) == ("read-only", tmp_path / "taken")
    assert path_blocker(tmp_path / "locked" / "new" / "report", file=False) == ("read-only", tmp_path / "locked")
    assert path_blocker(tmp_path / "locked" / "store.db", file=True) == ("read-only", tmp_path / "locked")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes through file modes: a read-only store cannot be made for root")
@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_store_is_one_line_and_exit_2_before_any_run(tmp_path, what):
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    tracking.Run.start(uri, tracking.ensure_experiment(uri, "lossbench"), "r", {"loss": "mse"}, {}).end("FINISHED")
    before = _store_snapshot(uri)
    locked = db if what == "file" else db.parent
    mode = locked.stat().st_mode
    locked.chmod(0o444 if what == "file" else 0o555)
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "LOSSBENCH_DEBUG")}
        res = subprocess.run([sys.executable, "-m", "lossbench", "loss=huber", *REG, "trainer.max_epochs=1",
                              f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'outputs'}"],
                             cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    finally:
        locked.chmod(mode)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    expected = "is read-only for this user" if what == "file" else f"its folder {db.parent} is read-only"
    assert expected in res.stderr and "Nothing was trained." in res.stderr
    assert _store_snapshot(uri) == before

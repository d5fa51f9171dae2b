"""The shipped benchmark, ``python -m lossbench.benchmark``: every subcommand on tiny settings.

No speed is asserted (machines are shared); these check that each subcommand measures what
it says, on the real code paths, and writes well-formed results.
"""

from __future__ import annotations

import json
import math

import pytest

from lossbench.benchmark.__main__ import main
from lossbench.errors import LossbenchError
from lossbench.registry import list_losses, loss_info


def _read(path) -> dict:
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------ losses
def test_losses_times_every_loss_against_a_reference_that_agrees(tmp_path, capsys):
    out = tmp_path / "losses.json"
    main(["losses", "--n", "64", "--elements", "1280", "--rounds", "2", "--min-run-time", "0.001",
          "--json", str(out)])
    data = _read(out)
    rows: dict[str, list[dict]] = {}
    for r in data["results"]:
        rows.setdefault(r["name"], []).append(r)
    assert set(rows) == set(list_losses())
    for name, sizes in rows.items():
        # both sizes, in one run: N = 64 rows, then 1280 elements (1280 residuals or 128 rows of 10 logits)
        assert [r["n"] for r in sizes] == ([64, 1280] if sizes[0]["task"] == "regression" else [64, 128]), name
        assert sizes[1]["elements"] == 1280, name
        for r in sizes:
            assert r["ours_us"] > 0 and r["reference_us"] > 0, name
            assert r["ratio"] == pytest.approx(r["ours_us"] / r["reference_us"]), name  # fastest / fastest
            assert math.isfinite(r["ratio_median"]) and r["ratio_median"] > 0, name
            assert r["task"] in loss_info(name).tasks or name == "combo", name
            if r["equivalent"]:
                # the benchmark computed both values and found them equal before timing
                assert r["max_rel_diff"] is not None and r["max_rel_diff"] < 1e-4, name
                assert isinstance(r["within_goal"], bool)
                assert r["within_goal"] == (r["ratio"] <= 1.25)
            else:
                assert r["max_rel_diff"] is None and r["within_goal"] is None
                assert r["reference"].startswith(("F.mse_loss", "F.cross_entropy", "F.binary_cross_entropy"))
    # the losses torch or torchvision implement are paired with them, not with a baseline
    for name in ("mse", "l1", "smooth_l1", "huber", "cross_entropy", "bce", "kl_div", "binary_focal", "weighted_ce"):
        assert rows[name][0]["equivalent"], name
    assert "torchvision" in rows["binary_focal"][0]["reference"]
    settings = data["settings"]
    assert (settings["n"], settings["elements"], settings["goal"]) == (64, 1280, 1.25)
    assert settings["threads"] == 1 and settings["clock"] == "thread CPU time"
    assert data["machine"]["device"] == "cpu" and data["machine"]["torch_threads"] == 1
    printed = capsys.readouterr().out
    assert "binary_focal" in printed and "1,280 elements" in printed  # the table, both sizes side by side


def test_losses_elements_zero_times_one_size_and_restores_torch_threads():
    import torch

    from lossbench.benchmark.losses import bench_losses, sizes_of

    assert sizes_of("regression", 4096, 2**20, 10) == [4096, 2**20]
    assert sizes_of("multiclass", 4096, 2**20, 10) == [4096, 104858]
    assert sizes_of("multiclass", 64, 640, 10) == [64]  # the same batch is not timed twice
    assert sizes_of("binary", 4096, 0, 10) == [4096]
    before = torch.get_num_threads()
    res = bench_losses(names=["mse", "focal"], n=32, elements=0, rounds=1, min_run_time=0.0)
    assert [(r.name, r.n) for r in res] == [("mse", 32), ("focal", 32)]
    assert torch.get_num_threads() == before


def test_losses_unknown_name_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["losses", "--loss", "hubr", "--rounds", "1"])
    assert exc.value.code == 2
    assert "huber" in capsys.readouterr().err  # did-you-mean
    with pytest.raises(SystemExit):
        main(["losses", "--elements", "-1", "--loss", "mse"])
    assert "--elements must be >= 0 (0 skips the large size), got -1." in capsys.readouterr().err


def test_losses_rejects_cuda_without_a_gpu():
    import torch

    from lossbench.benchmark.losses import bench_losses

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(LossbenchError, match="--device cpu"):
        bench_losses(device="cuda", names=["mse"], rounds=1)


# ------------------------------------------------------------------------------------ train
@pytest.mark.slow
def test_train_times_the_real_pipeline_and_the_hand_loop(tmp_path, mlflow_uri):
    from lossbench import tracking
    from lossbench.benchmark.train import EXPERIMENT

    # artifacts under tmp_path, not ./mlruns
    tracking.client(mlflow_uri).create_experiment(EXPERIMENT, artifact_location=(tmp_path / "art").as_uri())
    out = tmp_path / "train.json"
    main([
        "train", "--epochs", "1", "--rounds", "1", "--threads", "1", "--override", "data.n_max=100",
        "--tracking-uri", mlflow_uri, "--json", str(out),
    ])
    data = _read(out)
    r = data["rounds"]
    assert all(len(r[k]) == 1 for k in ("run_s", "fit_s", "validation_s", "train_s", "hand_s"))
    assert r["hand_s"][0] > 0 and r["validation_s"][0] > 0
    # fit is part of the run, validation part of fit
    assert 0 < r["fit_s"][0] < r["run_s"][0]
    assert 0 < r["train_s"][0] < r["fit_s"][0]
    assert all(v > 0 for v in data["ratio"].values())
    settings = data["settings"]
    assert settings["steps_per_epoch"] == math.ceil(settings["n_train"] / settings["batch_size"])
    prof = data["profile"]["parts"]
    assert prof["trainer.fit"] > 0 and prof["  training_step (forward, loss, finite check)"] > 0
    # every public entry point the profile names ran (a renamed one fails on import, never reads 0)
    calls = data["profile"]["calls"]
    assert all(n > 0 for n in calls.values()), calls
    assert calls["  training_step (forward, loss, finite check)"] == calls["  backward"] == settings["steps_per_epoch"]
    assert all(v > 0 for v in data["profile"]["libraries"].values())  # MLflow and matplotlib ran inside the run
    # the lossbench side went through pipeline.run: warm-up, one round and the profiled run are in MLflow
    c = tracking.client(mlflow_uri)
    exp = c.get_experiment_by_name(EXPERIMENT)
    runs = c.search_runs([exp.experiment_id])
    assert len(runs) == 3 and {x.info.status for x in runs} == {"FINISHED"}


def test_train_unknown_data_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", "imbalancd", "--rounds", "1"])
    assert exc.value.code == 2
    assert "Did you mean 'imbalanced'" in capsys.readouterr().err


@pytest.mark.slow
def test_hand_loop_trains_exactly_what_lossbench_trains(compose, mlflow_uri, tmp_path):
    """Same network, initial weights, data, batches, optimizer and loss: on the CPU the weights
    come out equal, so the hand-trained network's test loss is the one lossbench logged."""
    import torch

    from lossbench import pipeline
    from lossbench.benchmark.train import hand_setup, hand_train

    from lossbench import tracking

    tracking.client(mlflow_uri).create_experiment("hand-loop", artifact_location=(tmp_path / "art").as_uri())
    # one epoch: lossbench's best validation epoch (whose weights it tests) is then the last
    cfg = compose("loss=focal", "data=imbalanced", "data.n_max=300", "trainer.max_epochs=1",
                  "tracking.skip_finished=false", experiment_name="hand-loop")
    result = pipeline.run(cfg, quiet=True)
    assert result.status == "FINISHED"
    h = hand_setup(cfg)
    assert h.x.shape[0] > 3 * h.batch_size  # several steps, in shuffled order
    seconds, net = hand_train(h, epochs=1, device="cpu")
    assert seconds > 0
    x, y = pipeline.prepare(cfg).datamodule.tensors("test")
    with torch.no_grad():
        trained = float(h.loss(net.eval()(x), y))
        untrained = float(h.loss(h.net(x), y))
    assert trained == pytest.approx(result.metrics["test_loss"], rel=1e-5)
    assert untrained != pytest.approx(trained, rel=1e-3)  # and it did train


# ------------------------------------------------------------------------------------ profiles
def test_profile_breakdown_names_entry_points_as_objects():
    import torch

    from lossbench.benchmark import profile_breakdown
    from lossbench.losses import regression

    def work():
        x = torch.randn(64, requires_grad=True)
        for _ in range(20):
            regression.huber_loss(x, torch.zeros(64)).backward()

    parts = {"huber": [regression.huber_loss], "backward": [torch.Tensor.backward], "never": [regression.tukey_loss]}
    prof = profile_breakdown(work, parts, {"torch": "/torch/"})
    assert prof["calls"] == {"huber": 20, "backward": 20, "never": 0}
    assert prof["parts"]["huber"] > 0 and prof["parts"]["backward"] > 0 and prof["parts"]["never"] == 0
    assert 0 < prof["libraries"]["torch"] <= prof["total_s"]
    with pytest.raises(TypeError, match="not a Python function"):
        profile_breakdown(work, {"a builtin": [len]})


def test_profile_modules_charges_time_to_the_innermost_module_under_the_prefix():
    """No function is named: whatever modules run under the prefix become the rows, and time in
    torch called from classification.py counts for classification.py."""
    import time

    from lossbench.benchmark import ELSEWHERE, profile_modules
    from lossbench.losses import classification

    def work():
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.3:
            classification.class_balanced_weights([50, 5, 1], 0.99)
        time.sleep(0.2)  # in this file: elsewhere

    prof = profile_modules(work, "lossbench/losses/")
    modules = prof["modules"]
    assert max(modules, key=modules.get) == "classification.py" and modules["classification.py"] > 0.15
    assert prof[ELSEWHERE] > 0.1
    assert sum(modules.values()) + prof[ELSEWHERE] == pytest.approx(prof["total_s"], rel=0.05)


# ------------------------------------------------------------------------------------ startup
@pytest.mark.slow
def test_startup_times_a_command_against_import_torch(tmp_path):
    from lossbench.benchmark.startup import commands

    assert set(commands()) == {"import torch", "import lossbench", "lossbench --help", "lossbench --cfg job"}
    out = tmp_path / "startup.json"
    main(["startup", "--runs", "1", "--command", "lossbench --help", "--json", str(out)])
    res = _read(out)["results"]
    assert set(res) == {"import torch", "lossbench --help"}  # the floor is always timed
    for name, r in res.items():
        assert len(r["runs_s"]) == 1 and r["median_s"] > 0, name
        assert r["ratio_to_import_torch"] > 0, name
    assert res["import torch"]["ratio_to_import_torch"] == pytest.approx(1.0)
    assert res["lossbench --help"]["command"] == "python -m lossbench --help"


def test_startup_unknown_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["startup", "--runs", "1", "--command", "lossbench --version"])
    assert exc.value.code == 2
    assert "lossbench --help" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ report
@pytest.mark.slow
def test_report_on_generated_runs(tmp_path, mlflow_uri):
    from lossbench import schema as S
    from lossbench import tracking

    out = tmp_path / "report.json"
    n = 16
    main([
        "report", "--runs", str(n), "--rounds", "1", "--warmup", "0", "--epochs", "3", "--no-profile",
        "--tracking-uri", mlflow_uri, "--json", str(out),
    ])
    data = _read(out)
    assert len(data["build_s"]) == 1 and data["build_s"][0] > 0 and data["collect_s"][0] > 0
    assert data["median_s"]["collect"] < data["median_s"]["build"]  # collect is one step of the build
    assert {"report.html", "report.md"} <= set(data["outputs"])
    # the runs look like the training side's: schema tags, flattened config, histories, test metrics
    c = tracking.client(mlflow_uri)
    exp = c.get_experiment_by_name(f"lossbench-benchmark-report-{n}r-3e")
    runs = c.search_runs([exp.experiment_id], max_results=100)
    assert len(runs) == n
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert finished
    for r in finished:
        tags, params, metrics = r.data.tags, r.data.params, r.data.metrics
        for tag in (S.TAG_LOSS, S.TAG_DATA, S.TAG_TASK, S.TAG_SEED, S.TAG_SCENARIO, S.TAG_OBJECTIVE,
                    S.TAG_OBJECTIVE_MODE, S.TAG_CONFIG_HASH, S.TAG_LOSS_PARAMS):
            assert tag in tags, tag
        assert params["loss.name"] == tags[S.TAG_LOSS] and params["data.name"] == tags[S.TAG_DATA]
        objective = tags[S.TAG_OBJECTIVE]
        assert f"test_{objective}" in metrics and S.METRIC_BEST_VAL in metrics
        history = c.get_metric_history(r.info.run_id, f"val_{objective}")
        assert sorted(m.step for m in history) == [0, 1, 2]
    assert data["store_reused"] is False


# ------------------------------------------------------------------------------------ all
def test_all_passes_its_options_on_to_each_benchmark():
    from lossbench.benchmark.__main__ import _defaults, build_parser

    args = build_parser().parse_args(["all", "--device", "cuda", "--threads", "1", "--store", "/tmp/s"])
    train = _defaults("train", args)
    assert (train.device, train.threads, train.json) == ("cuda", 1, None)
    assert _defaults("losses", args).device == "cuda"
    assert _defaults("report", args).store == "/tmp/s"
    assert _defaults("startup", args).runs == 5  # its own default
    store = _defaults("store", args)  # reached from the command line too, with its own defaults
    assert (store.workers, store.sides, store.json) == (8, None, None)


# ------------------------------------------------------------------------------------ sweep
@pytest.mark.slow
def test_sweep_times_both_engines_and_they_agree(tmp_path, capsys):
    """The whole sweep command, once per engine; the two stores hold the same runs, metrics equal."""
    out = tmp_path / "sweep.json"
    main(["sweep", "--runs", "4", "--epochs", "1", "--json", str(out)])  # 4 losses x 1 seed
    data = _read(out)
    assert data["benchmark"] == "sweep" and data["machine"]["device"] == "cpu"
    settings, res = data["settings"], data["results"]
    assert settings["seeds_per_loss"] == 1 and settings["epochs"] == 1
    assert "engine=sequential" in settings["commands"]["sequential"]
    assert "engine=" not in settings["commands"]["batched"]  # the default engine, auto
    assert "seed=range(1)" in settings["commands"]["batched"]
    assert res["runs"] == 4
    for engine in ("sequential", "batched"):
        assert len(res["rounds_s"][engine]) == 1 and res["median_s"][engine] > 0, engine
    assert res["speedup"] > 0 and res["goal"] is None and res["goal_met"] is None  # no goal at 4 runs
    c = res["comparison"]
    assert c["runs"] == {"sequential": 4, "batched": 4} and c["matched"] == 4
    assert c["only_sequential"] == [] and c["only_batched"] == []
    assert c["status"] == {"sequential": {"FINISHED": 4}, "batched": {"FINISHED": 4}}
    assert c["status_mismatch"] == []
    assert c["engine_tag"] == {"sequential": {"sequential": 4}, "batched": {"batched": 4}}
    assert "best_val_objective" in c["metrics"] and "test_balanced_accuracy" in c["metrics"]
    for key, m in c["metrics"].items():
        assert m["n"] == 4 and m["only_sequential"] == m["only_batched"] == 0, key
        assert m["max_rel_diff"] < 1e-4, (key, m)
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "test_balanced_accuracy" in printed


def test_sweep_rejects_a_run_count_not_a_multiple_of_the_losses(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--runs", "6"])
    assert exc.value.code == 2
    assert "multiple of 4" in capsys.readouterr().err


def test_sweep_command_and_goals():
    from pathlib import Path

    from lossbench.benchmark.__main__ import _defaults, build_parser
    from lossbench.benchmark.sweep import command, goal_for

    argv = command("sequential", seeds=8, epochs=10, device="cpu", workdir=Path("/tmp/w"), experiment="e")
    assert argv[1:4] == ["-m", "lossbench", "-m"]
    assert argv[4:] == [
        "loss=cross_entropy,focal,logit_adjusted,balanced_softmax", "seed=range(8)", "model=mlp", "data=imbalanced",
        "trainer.max_epochs=10", "tracking.experiment_name=e", "tracking.uri=sqlite:////tmp/w/mlflow.db",
        "trainer.accelerator=cpu", "hydra.sweep.dir=/tmp/w/multirun", "engine=sequential",
    ]
    batched = command("batched", seeds=8, epochs=10, device="cuda", workdir=Path("/tmp/w"), experiment="e")
    assert "trainer.accelerator=gpu" in batched and not any(a.startswith("engine=") for a in batched)
    assert (goal_for("cpu", 32), goal_for("cpu", 256), goal_for("cuda", 256), goal_for("cpu", 4)) == (4, 10, 30, None)
    sweep = _defaults("sweep", build_parser().parse_args(["all", "--device", "cuda"]))
    assert (sweep.device, sweep.runs, sweep.rounds, sweep.epochs, sweep.json) == ("cuda", 32, 1, 10, None)

"""``caenet`` end to end: the pipeline on real MNIST at smoke scale, MLflow runs, caching."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from suite.commands import catalog

REPO = Path(__file__).resolve().parents[1]
# configs/mnist_lenet.yaml: one target per class, and the class-cluster CAE beside it for the
# paper's reconstruction comparison; CAE-Net without KD, and the from-scratch ablation
STAGES = {"baseline", "entropy", "features", "clustering", "targets", "autoencoder", "autoencoder_clustered",
          "caenet", "caenet_no_transfer", "evaluate"}


def caenet(args, cwd, data_root, timeout=900, env=None):
    env = {**os.environ, "CAENET_DATA": str(data_root), "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, "-m", "suite.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_help_on_every_subcommand(tmp_path, data_root, cli):
    """Every command's --help, through the CLI's own main (in this process: a fresh process per
    command would pay the torch / Ray imports each time); then the top-level help as a process,
    which reads the command list without importing the commands, and --version."""
    for args in (["run", "--help"], ["data", "--help"], ["data", "check", "--help"], ["models", "--help"],
                 ["methods", "--help"], ["sweep", "--help"], ["export", "--help"], ["edge", "--help"],
                 ["edge", "bench", "--help"], ["report", "--help"], ["compare", "--help"], ["runs", "--help"],
                 ["cache", "--help"], ["cache", "clean", "--help"]):
        done = cli(args)
        out = " ".join(done.stdout.split())  # argparse wraps lines anywhere
        assert done.returncode == 0 and f"usage: caenet {' '.join(args[:-1])}" in out, args
        if args[0] in ("run", "compare", "export", "report", "edge", "sweep") and args[-2] != "edge":
            assert "--profile NAME" in out and "--set KEY=VALUE" in out, args  # one override grammar for every command
        if args[0] not in ("data", "edge") or len(args) == 3:
            assert "Example: caenet" in out or args[0] in ("models", "methods"), args  # help shows a command that runs
    top = caenet(["--help"], tmp_path, data_root, timeout=60)
    assert top.returncode == 0 and all(f"    {c} " in top.stdout for c in ("run", "sweep", "compare", "export", "edge",
                                                                        "report", "data", "models", "methods"))
    version = caenet(["--version"], tmp_path, data_root, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("caenet ")


def test_bad_config_is_one_line_error(tmp_path, data_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {dataset: mnist}\nbaseline: {train: {epochs: -1}}\n")
    out = caenet(["run", str(bad)], tmp_path, data_root, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "baseline.train.epochs" in out.stderr


def test_missing_dataset_stops_before_any_work(tmp_path, data_root):
    out = caenet(["run", str(REPO / "configs" / "mnist_lenet.yaml"), "--set", f"data.root={tmp_path / 'nowhere'}",
                  "--set", "data.download=false"], tmp_path, data_root, timeout=120)
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith("caenet: error: mnist: not found under") and "data.root or CAENET_DATA" in err
    assert not (tmp_path / "artifacts").exists()


def test_data_check(tmp_path, data_root, cli):
    ok = caenet(["data", "check", "mnist", "cifar10"], tmp_path, data_root, timeout=120)
    assert ok.returncode == 0 and re.search(r"ok   mnist: [1-9]\d* train / [1-9]\d* test images of shape \[1, 28, 28\]", ok.stdout)
    assert re.search(r"ok   cifar10: [1-9]\d* train / [1-9]\d* test images of shape \[3, 32, 32\]", ok.stdout), ok.stdout
    missing = cli(["data", "check", "cifar100", "--root", str(tmp_path)])  # the rest in this process
    assert missing.returncode == 1 and "FAIL cifar100" in missing.stdout and str(tmp_path) in missing.stdout
    every = cli(["data", "check", "--root", str(tmp_path)])  # none asked for: reported, not an error
    assert every.returncode == 0 and "n/a  cifar100" in every.stdout and "n/a  mnist" in every.stdout


@pytest.mark.slow
def test_pipeline_end_to_end_then_cached(smoke_run, data_root):
    tmp_path = smoke_run["cwd"]
    # A run whose feature extractor cannot load (VGG16's ImageNet weights: TORCH_HOME is empty,
    # no internet) stops in one line before it trains anything, and before Ray starts.
    stopped = smoke_run["stopped"]
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    assert "vgg16-imagenet" in stopped.stderr and "features.extractor" in stopped.stderr
    assert "Traceback" not in stopped.stderr and "Ray: worker logs" not in stopped.stdout
    assert smoke_run["done_when_stopped"] == set()

    out = smoke_run["first"]
    summary = json.loads(smoke_run["summary"].read_text())
    for model in ("baseline", "caenet"):
        assert 0 <= summary[model]["test_acc"] <= 1 and summary[model]["latency_p50_ms"] > 0
        assert summary[model]["parameters"] >= summary[model]["nonzero_parameters"] > 0
    assert summary["speedup_p50"] > 0
    # like for like on the boards' runtime too (issue 42): both ONNX on onnxruntime, with the interval
    assert summary["baseline"]["onnxruntime_latency_p50_ms"] > 0 and summary["caenet"]["onnxruntime_latency_p50_ms"] > 0
    assert summary["speedup_p50_onnxruntime_lo"] <= summary["speedup_p50_onnxruntime"] <= summary["speedup_p50_onnxruntime_hi"]
    assert re.search(r"PyTorch [0-9.]+x \[[0-9.]+, [0-9.]+\], onnxruntime [0-9.]+x \[[0-9.]+, [0-9.]+\]", out.stdout), out.stdout[-2000:]
    assert summary["reconstruction_mse"]["clustered"] > 0 and summary["reconstruction_mse"]["unclustered"] > 0
    assert set(summary["accuracy_transfer"]) == {"with_transfer_kd", "no_kd", "no_transfer"}
    assert "speed-up (p50, fp32, 1 thread(s) on this CPU): PyTorch " in out.stdout  # the printed table
    # Issue 30: one epoch on 400 images leaves the baseline near chance; every place says so
    assert "near chance" in summary["not_converged"]["baseline"] and summary["baseline"]["converged"] is False
    assert "baseline (did not converge)" in out.stdout and "WARNING: baseline did not converge: val acc" in out.stdout

    table = pq.read_table(next((tmp_path / "artifacts" / "mnist").glob("targets-*/images.parquet")))
    assert {"index", "label", "split", "entropy", "cluster", "target_index"} <= set(table.column_names)
    assert table.num_rows == 400

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("caenet")
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["data.dataset"] == "mnist"
    assert parent.data.metrics["speedup_p50_onnxruntime"] == summary["speedup_p50_onnxruntime"]
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {r.info.run_name for r in children} == STAGES
    runs = {r.info.run_name: r.info for r in children}
    # The two CAEs train side by side. (The CAE-Nets do too, but at smoke scale one finishes in
    # ~0.1 s, before the other's run opens, so their overlap is not observable here.)
    pair = ("autoencoder", "autoencoder_clustered")
    assert max(runs[p].start_time for p in pair) < min(runs[p].end_time for p in pair), f"{pair} ran one after another"
    # The console: the driver's own lines for each training (progress inside epochs as lines, not
    # bars, off a terminal), Ray's log folder once; none of Ray's worker output ("(task pid=...)"
    # prefixes, core_worker.cc lines) and no progress bars drawn into a log
    assert "[autoencoder] epoch 1/1: 1/" in out.stdout and "batches (" in out.stdout
    assert "[autoencoder] epoch 1/1  train_loss=" in out.stdout
    assert out.stdout.count("Ray: worker logs in") == 1
    console = out.stdout + out.stderr
    for noise in ("pid=", "core_worker", "\x1b[", "\r", "it/s]"):
        assert noise not in console, (noise, console[-3000:])
    base = next(r for r in children if r.info.run_name == "baseline")
    assert len(client.get_metric_history(base.info.run_id, "train_loss")) == 1  # one point per epoch
    assert base.data.tags["converged"] == "false" and "near chance" in base.data.tags["convergence"]
    arts = {a.path for a in client.list_artifacts(next(r for r in children if r.info.run_name == "clustering").info.run_id)}
    assert {"elbow.png", "clusters.parquet"} <= arts

    ray_tmp = Path(tempfile.mkdtemp(prefix="ce", dir="/tmp"))  # Ray's folder for the re-run alone (short: socket paths)
    again = caenet(["run", str(REPO / "configs" / "mnist_lenet.yaml"), "--smoke", "--strict", "--summary", str(tmp_path / "s2.json")],
                   tmp_path, data_root, env={"RAY_TMPDIR": str(ray_tmp)})
    started = list(ray_tmp.rglob("session_2*"))
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert again.returncode == 1, again.stderr[-3000:]  # --strict: the baseline did not converge (the cache knows)
    assert "--strict: " in again.stderr and "baseline" in again.stderr.strip().splitlines()[-1]
    assert not started, started  # every stage cached: no Ray was started (its start and shutdown cost ~7 s)
    rerun = json.loads((tmp_path / "s2.json").read_text())
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{rerun['mlflow_run_id']}'")
    assert {r.data.tags["cache_hit"] for r in children} == {"true"}
    assert rerun["caenet"]["test_acc"] == summary["caenet"]["test_acc"]
    assert "(already registered for this stage)" in again.stdout  # the same CAE-Net: no second registry version
    plan = caenet(["run", str(REPO / "configs" / "mnist_lenet.yaml"), "--smoke", "--dry-run"], tmp_path, data_root)
    assert plan.returncode == 0 and "would run" not in plan.stdout and f"{len(STAGES)} cached, 0 to run" in plan.stdout

    # A model label the run does not have: one line listing the ones it has (issue 14).
    bad = caenet(["report", str(REPO / "configs" / "mnist_lenet.yaml"), "--set", "smoke=true", "--models", "nosuch"],
                 tmp_path, data_root)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert "--models: 'nosuch' is not a model of this run; its models: baseline, caenet" in bad.stderr.strip().splitlines()[-1]


def _examples(text: str, prefix: str) -> list[list[str]]:
    """The argv after ``prefix`` (``python jobs/sweep.py``, ``caenet``) on every line of ``text`` that has it."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        if prefix in line:
            found.append(shlex.split(line.split(prefix, 1)[1].split(". ")[0], comments=True))
    return found


def test_every_entry_point_help_example_is_runnable(tmp_path, monkeypatch, capsys, cli):
    """Each job script's --help (run as ``ray job submit`` runs it: its __main__, here in this
    process) and the example its docstring shows: the example parses with that entry point's
    own arguments, its config and --set keys load, and a pipeline example plans (--dry-run).
    Every command's ``Example: caenet ...`` parses the same way (issue 15, item 10)."""
    import runpy

    from suite.cli import build_parser
    from tests.conftest import load_job_line

    for job, expect in (("pipeline.py", "usage: caenet run"), ("sweep.py", "usage: caenet sweep"),
                        ("study.py", "usage: caenet study"), ("scaling.py", "--workers")):
        monkeypatch.setattr(sys, "argv", [str(REPO / "jobs" / job), "--help"])
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(REPO / "jobs" / job), run_name="__main__")
        out = capsys.readouterr().out
        assert done.value.code == 0 and expect in out, (job, out[-1000:])
        examples = _examples((REPO / "jobs" / job).read_text() + out, f"python jobs/{job}")
        assert examples, job
        for argv in examples:
            command, args = load_job_line(job, argv)
            if command == "run":
                planned = cli(["run", str(REPO / args.config), *argv[1:], "--dry-run"])
                assert planned.returncode == 0, (argv, planned.stderr)
    for name in catalog():
        with pytest.raises(SystemExit):
            build_parser([name, "--help"]).parse_args([name, "--help"])
        description = [" ".join(para.split()) for para in capsys.readouterr().out.split("\n\n") if "Example: caenet" in para]
        for argv in _examples("\n".join(description), "Example: caenet "):
            build_parser(argv).parse_args(argv)  # argparse exits 2 on an example it does not take
            for word in argv:
                if word.startswith("configs/"):
                    assert (REPO / word).exists(), (name, word)

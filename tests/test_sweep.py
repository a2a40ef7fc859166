"""Sweeps: the sweep file is validated up front, the SLO pick and Pareto front are right, and a
real Tune sweep on MNIST nests its trials under one MLflow run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from suite.config import ConfigError
from suite.sweep.config import SLOConfig, load_sweep
from suite.sweep.slo import TrialRow, choose, mark, pareto_front

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "sweeps" / "mnist_smoke.yaml"


def test_shipped_sweeps_load():
    paths = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
    assert len(paths) >= 2
    for path in paths:
        sweep, base = load_sweep(path)
        assert sweep.space and base.caenet.ablations == []


@pytest.mark.parametrize("override, message", [
    ("space={clustering.kk: [1, 2]}", "clustering.kk: unknown key"),
    ("space={clustering.k: [1, 0]}", "clustering.k: Input should be greater than or equal to 1"),
    ("space={autoencoder.prune.weight_ratio: {uniform: [0.0]}}", "uniform takes [low, high]"),
    ("space={clustering.k: 3}", "expected a list (grid) or a distribution"),
    ("slo={speedup: 2, latency_ms: 3}", "not both"),
    ("max_concurrent_trials=0", "max_concurrent_trials"),
])
def test_bad_sweeps_fail_in_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        load_sweep(SMOKE, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def _row(name, acc, ms):
    return TrialRow(trial=name, params={}, val_acc=acc, test_acc=acc, nonzero_parameters=1, size_bytes=1, p50_ms=ms)


def test_slo_pick_and_pareto_front():
    rows = [_row("fast-poor", 0.50, 1.0), _row("mid", 0.70, 2.0), _row("slow-best", 0.80, 5.0), _row("dominated", 0.60, 3.0)]
    mark(rows, SLOConfig(speedup=4.0), baseline_ms=10.0)  # SLO: p50 <= 2.5 ms
    assert [r.trial for r in pareto_front(rows)] == ["fast-poor", "mid", "slow-best"]
    assert [r.meets_slo for r in rows] == [True, True, False, False]
    assert choose(rows).trial == "mid"  # the most accurate that meets the SLO, not the most accurate
    mark(rows, SLOConfig(latency_ms=0.5), baseline_ms=10.0)
    assert choose(rows) is None
    assert rows[0].speedup == pytest.approx(10.0)


@pytest.mark.slow
def test_sweep_end_to_end_on_mnist(tmp_path, data_root, smoke_run):
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "CAENET_DATA": str(data_root), "RAY_AUTH_MODE": "disabled"}
    cache = smoke_run["cwd"] / "artifacts"  # the session's smoke run: the trials share its baseline, entropy and features
    out = subprocess.run([sys.executable, "-m", "suite.cli", "sweep", str(SMOKE), "--smoke",
                          "--set", f"runtime.cache_dir={cache}",  # an experiment key: for every trial (item 9)
                          # one trial is enough here: test_two_nodes runs a two-trial sweep, test_sweep_* above the
                          # ranking and the SLO choice over several rows
                          "--set", "space={clustering.k: [2], autoencoder.prune.weight_ratio: [0.8]}",
                          # ASHA stops every trial at its last epoch (max_t): the driver must still get its result
                          "--set", "scheduler={type: asha, grace_period: 1}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "chosen: run_trial_" in out.stdout
    assert "[baseline] cached" in out.stdout  # found in the shared cache, not trained again
    summary = json.loads(next((cache / "mnist" / "sweeps").glob("*-mnist-smoke/sweep_summary.json")).read_text())
    assert len(summary["trials"]) == 1 and summary["chosen"] is not None and not summary["failed"]
    assert summary["trials"][0]["params"]["clustering.k"] == 2
    assert all(t["nonzero_parameters"] < 0.6 * 95682 for t in summary["trials"])  # the CAE's 80% pruned encoder

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("caenet").experiment_id])
    by_id = {r.info.run_id: r for r in runs}
    sweep_run = by_id[summary["mlflow_run_id"]]
    assert sweep_run.data.tags["kind"] == "sweep" and sweep_run.info.status == "FINISHED"
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(trials) == 1 and all(t.data.tags["mlflow.parentRunId"] == sweep_run.info.run_id for t in trials)
    for t in trials:  # side by side in the UI: the swept keys as params, accuracy and latency as metrics
        assert t.data.params["clustering.k"] == "2" and "latency_p50_ms" in t.data.metrics
        stages = {r.data.tags["mlflow.runName"] for r in runs if r.data.tags.get("mlflow.parentRunId") == t.info.run_id}
        assert {"clustering", "targets", "autoencoder", "caenet"} <= stages
    assert "pareto.png" in {a.path for a in client.list_artifacts(sweep_run.info.run_id)}
    # The SLO pick is in the Model Registry, its tags saying what it was picked on (item 2).
    name, version = sweep_run.data.tags["registered_model"].split("/")
    assert name == "mnist-smoke-slo-caenet"
    picked = client.get_model_version(name, version)
    assert picked.tags["trial"] == summary["chosen"]["trial"] and picked.tags["param.clustering.k"] == "2"


def test_one_set_grammar_for_sweeps(tmp_path):
    """``--set`` takes experiment keys (for every trial) and sweep-file keys alike (issue 15, item 9)."""
    sweep, base = load_sweep(SMOKE, [f"runtime.cache_dir={tmp_path}", "clustering.k_max=4", "slo.speedup=4",
                                     "max_concurrent_trials=2", "name=renamed"])
    assert base.runtime.cache_dir == str(tmp_path) and base.clustering.k_max == 4
    assert sweep.slo.speedup == 4 and sweep.max_concurrent_trials == 2 and sweep.name == "renamed"
    assert sweep.set[-2:] == [f"runtime.cache_dir={tmp_path}", "clustering.k_max=4"]  # after the file's own
    with pytest.raises(ConfigError, match="runtime"):
        load_sweep(SMOKE, ["runtime.nosuch=1"])

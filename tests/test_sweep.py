"""Sweeps: the sweep file is validated up front, the SLO pick and Pareto front are right, and a
real Tune sweep on MNIST nests its trials under one MLflow run."""

from pathlib import Path

import pytest

from suite.config import ConfigError
from suite.sweep.sweep_file import SLOConfig, load_sweep
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
    lost = _row("board-lost", 0.99, float("nan"))  # a board that failed: N/A, on no front, meets nothing
    mark(rows + [lost], SLOConfig(), baseline_ms=10.0)
    assert not lost.meets_slo and not lost.pareto and choose(rows + [lost]).trial == "slow-best"


def test_one_set_grammar_for_sweeps(tmp_path):
    """``--set`` takes experiment keys (for every trial) and sweep-file keys alike (issue 15, item 9)."""
    sweep, base = load_sweep(SMOKE, [f"runtime.cache_dir={tmp_path}", "clustering.k_max=4", "slo.speedup=4",
                                     "max_concurrent_trials=2", "name=renamed"])
    assert base.runtime.cache_dir == str(tmp_path) and base.clustering.k_max == 4
    assert sweep.slo.speedup == 4 and sweep.max_concurrent_trials == 2 and sweep.name == "renamed"
    assert sweep.set[-2:] == [f"runtime.cache_dir={tmp_path}", "clustering.k_max=4"]  # after the file's own
    with pytest.raises(ConfigError, match="runtime"):
        load_sweep(SMOKE, ["runtime.nosuch=1"])


def test_an_axis_that_changes_nothing_is_an_error(tmp_path):
    """Issue 34: with one target per class, clustering.k trains the same CAE-Net at every value;
    planning the stages before anything runs says so, with the fix."""
    sweep = tmp_path / "k.yaml"
    sweep.write_text(f"experiment: {REPO / 'configs' / 'mnist_lenet.yaml'}\nspace: {{clustering.k: [1, 2], caenet.train.lr: [0.001, 0.003]}}\n")
    with pytest.raises(ConfigError) as err:
        load_sweep(sweep)
    assert "clustering.k=1 and clustering.k=2 train the same CAE-Net" in str(err.value)
    assert "autoencoder.targets=cluster" in str(err.value) and "--allow-identical" in str(err.value)
    load_sweep(sweep, allow_identical=True)
    load_sweep(sweep, ["autoencoder.targets=cluster"])  # the clusters now make the targets: k is an axis


def test_two_study_variants_that_are_one_experiment_are_an_error(tmp_path):
    from suite.study.study_file import load_study

    study = tmp_path / "s.yaml"
    study.write_text(f"experiment: {REPO / 'configs' / 'mnist_lenet.yaml'}\nseeds: [0]\nvariants:\n"
                     "  - {name: a}\n  - {name: b, set: [caenet.kd.alpha=0.0]}\n  - {name: c, set: [caenet.kd.alpha=0.5]}\n")
    with pytest.raises(ConfigError, match=r"variants 'a' and 'b' run the same experiment"):  # the config's alpha is 0.0
        load_study(study)
    assert len(load_study(study, allow_identical=True)[1]) == 3

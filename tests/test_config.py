from pathlib import Path

import pytest

from suite import experiment
from suite.config import ConfigError, parse_override

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml") if p.name != "boards.example.yaml"))
def test_shipped_configs_load(name):
    cfg = experiment.load(REPO / "configs" / name)
    assert cfg.data.dataset in ("cifar10", "cifar100", "mnist")
    assert cfg.baseline.train.epochs >= 1


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"baseline\.train\.epoch: unknown key"):
        experiment.from_tree({"baseline": {"train": {"epoch": 3}}})


def test_a_renamed_key_names_its_replacement():
    with pytest.raises(ConfigError, match=r"evaluate\.latency\.rounds: renamed: use evaluate\.latency\.windows"):
        experiment.from_tree({"evaluate": {"latency": {"rounds": 3}}})
    with pytest.raises(ConfigError, match=r"evaluate\.latency\.runs: renamed: use evaluate\.latency\.window_queries \(calls per"):
        experiment.from_tree({}, ["evaluate.latency.runs=300"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"baseline\.train\.epochs: .*'three'"):
        experiment.from_tree({"baseline": {"train": {"epochs": "three"}}})


@pytest.mark.parametrize("tree, key", [
    ({"baseline": {"train": {"epochs": 0}}}, "baseline.train.epochs"),
    ({"clustering": {"k_min": 5, "k_max": 2}}, "clustering: k_max (2) must be >= k_min (5)"),
    ({"data": {"dataset": "imagenet"}}, "data.dataset"),
    ({"data": {"val_fraction": 0.9}}, "data.val_fraction"),
])
def test_impossible_values_are_named(tree, key):
    with pytest.raises(ConfigError) as err:
        experiment.from_tree(tree)
    msg = str(err.value)
    assert key in msg and "\n" not in msg


def test_malformed_yaml_gives_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  dataset: [cifar10\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line"):
        experiment.load(bad)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such config file"):
        experiment.load("does/not/exist.yaml")


def test_overrides_are_typed_and_validated():
    cfg = experiment.load(REPO / "configs" / "mnist_lenet.yaml", ["baseline.train.epochs=2", "caenet.ablations=[no_kd]"])
    assert cfg.baseline.train.epochs == 2 and cfg.caenet.ablations == ["no_kd"]
    with pytest.raises(ConfigError, match="runtime.workers"):
        experiment.load(REPO / "configs" / "mnist_lenet.yaml", ["runtime.workers=-1"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_override("no-equals-sign")


def test_smoke_shrinks_the_same_experiment():
    cfg = experiment.load(REPO / "configs" / "cifar10_alexnet.yaml", ["smoke=true"]).effective()
    assert cfg.data.train_limit == 400 and cfg.baseline.train.epochs == 1 and cfg.caenet.train.epochs == 1
    assert cfg.baseline.model == "alexnet"  # same experiment, smaller
    full = experiment.load(REPO / "configs" / "cifar10_alexnet.yaml").effective()
    ada = {m.name: m for m in cfg.compare.methods}["AdaDeep"]
    assert (ada.trials, ada.search_steps) == (4, 20) and {m.name: m for m in full.compare.methods}["AdaDeep"].trials == 10
    assert [m.name for m in cfg.compare.methods] == [m.name for m in full.compare.methods]


def test_compare_methods_are_checked_on_load():

    config = REPO / "configs" / "mnist_lenet.yaml"
    with pytest.raises(ConfigError, match="'of: Nope' names no earlier method"):
        experiment.load(config, ["compare.methods=[{name: X, kind: weight_cluster, of: Nope}]"])
    with pytest.raises(ConfigError, match=r"compare.methods\['X'\].ratio: Field required"):
        experiment.load(config, ["compare.methods=[{name: X, kind: weight_prune}]"])
    with pytest.raises(ConfigError, match="needs a latency budget"):
        experiment.load(config, ["compare.slo_ms=null"])  # SubFlow in that config has no budget of its own
    slo = experiment.load(config, ["compare.slo_ms=null", "compare.methods=[{name: S, kind: slo_prune, of: caenet, speedup: 2}]"])
    assert slo.compare.methods[0].speedup == 2
    # each kind takes its own keys: a SubFlow key on a weight-pruning row is a mistake, named as one
    with pytest.raises(ConfigError, match=r"compare.methods\['X'\].ratios: unknown key"):
        experiment.load(config, ["compare.methods=[{name: X, kind: weight_prune, ratio: 0.5, ratios: [0.5]}]"])
    with pytest.raises(ConfigError, match=r"\['X'\]: unknown kind 'wieght_prune'; known: adadeep, branchy, channel_prune"):
        experiment.load(config, ["compare.methods=[{name: X, kind: wieght_prune, ratio: 0.5}]"])
    with pytest.raises(ConfigError, match="slo_prune ratios remove that share of channels"):
        experiment.load(config, ["compare.methods=[{name: S, kind: slo_prune, of: caenet, speedup: 2, ratios: [0.5, 1.0]}]"])


def test_profiles_overlay_a_config_before_set():

    config = REPO / "configs" / "cifar10_alexnet.yaml"
    plain = experiment.load(config)
    gpu = experiment.load(config, ["baseline.train.epochs=5"], profiles=["gpu"])
    assert gpu.runtime.use_gpu == "yes" and gpu.autoencoder.train.epochs == 40 and gpu.runtime.cpus_per_worker == 4
    assert gpu.baseline.train.epochs == 5  # --set wins over the profile
    assert gpu.baseline.train.optimizer == plain.baseline.train.optimizer  # sections merge, keys the profile leaves keep the config's
    assert gpu.compare.methods == plain.compare.methods
    cluster = experiment.load(config, profiles=["cluster"])
    assert cluster.runtime.workers == 4 and cluster.clustering.backend == "ray"
    with pytest.raises(ConfigError, match=r"no such profile \(known profiles: cluster, cpu, gpu; or give a YAML file\)"):
        experiment.load(config, profiles=["gpux"])


def test_a_config_extends_another(tmp_path):
    """``extends:`` starts from another file's keys (the *_paper.yaml configs): sections merge,
    values and lists replace, and a cycle or a missing parent is one line."""
    (tmp_path / "base.yaml").write_text("name: base\ndata: {dataset: mnist, val_fraction: 0.2}\n"
                                         "caenet: {classifier_hidden: 64, ablations: [no_kd]}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\ncaenet: {head: conv, ablations: []}\n")
    cfg = experiment.load(tmp_path / "child.yaml", ["caenet.head_filters=8"])
    assert (cfg.name, cfg.data.dataset, cfg.data.val_fraction) == ("child", "mnist", 0.2)
    assert (cfg.caenet.head, cfg.caenet.head_filters, cfg.caenet.classifier_hidden, cfg.caenet.ablations) == ("conv", 8, 64, [])
    (tmp_path / "base.yaml").write_text("extends: child.yaml\n")
    with pytest.raises(ConfigError, match="a cycle"):
        experiment.load(tmp_path / "child.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml: no such config file"):
        experiment.load(tmp_path / "orphan.yaml")

"""cluster.yaml is checked against the schema that ships with the installed Ray."""

from pathlib import Path

import pytest
import yaml

from suite.distributed.cluster import ClusterConfigError, validate_cluster_config

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_yaml_is_valid_for_ray():
    config = validate_cluster_config(ROOT / "cluster.yaml")
    assert config["head_node_type"] == "head.cpu"
    assert config["available_node_types"]["worker.gpu"]["min_workers"] == 0  # autoscaling
    assert any("pip install -e ~/caenet-suite" in c for c in config["setup_commands"])
    assert "~/data" in config["file_mounts"]


def test_misspelled_key_is_rejected_in_one_line(tmp_path):
    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    raw["available_node_types"]["worker.gpu"]["min_wrkers"] = 1
    bad = tmp_path / "cluster.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ClusterConfigError, match="min_wrkers") as err:
        validate_cluster_config(bad)
    assert "\n" not in str(err.value)


def test_head_type_must_exist(tmp_path):
    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    raw["head_node_type"] = "head.missing"
    bad = tmp_path / "cluster.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ClusterConfigError, match="head_node_type"):
        validate_cluster_config(bad)

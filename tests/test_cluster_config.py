"""cluster.yaml is checked against the schema that ships with the installed Ray.

Ray checks a cluster config only when ``ray up`` runs, against a cloud account. Here the same
check runs offline: Ray's own defaults are merged in (``prepare_config``) and the result is
validated against ``ray-schema.json`` from the installed wheel (``validate_config``); both are
private Ray APIs, hence the pinned Ray version in pyproject.toml.
"""

import logging
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


class ClusterConfigError(ValueError):
    """A cluster config Ray would reject."""


def validate_cluster_config(path: Path) -> dict:
    """The config with Ray's defaults filled in, or ClusterConfigError in one line."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    quiet = logging.getLogger("ray.autoscaler._private.util")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # prepare_config logs INFO lines about head max_workers
    try:
        config = prepare_config(yaml.safe_load(Path(path).read_text()))
        validate_config(config)
    except Exception as exc:  # jsonschema.ValidationError, ValueError, KeyError from Ray
        where = "/".join(str(p) for p in getattr(exc, "absolute_path", []) or [])
        message = getattr(exc, "message", None) or str(exc).splitlines()[0]
        raise ClusterConfigError(f"{path}: {where + ': ' if where else ''}{message}") from None
    finally:
        quiet.setLevel(level)
    return config


def test_cluster_yaml_is_valid_for_ray():
    config = validate_cluster_config(ROOT / "cluster.yaml")
    assert config["head_node_type"] == "head.cpu"
    assert config["available_node_types"]["worker.gpu"]["min_workers"] == 0  # autoscaling
    assert any("pip install -e ~/caenet-suite" in c for c in config["setup_commands"])
    assert "~/data" in config["file_mounts"]
    _shares_storage_and_tracking(config, "s3://")


def test_onprem_cluster_yaml_is_valid_for_ray():
    config = validate_cluster_config(ROOT / "cluster-onprem.yaml")
    assert config["provider"]["type"] == "local" and config["provider"]["worker_ips"]
    _shares_storage_and_tracking(config, "CAENET_STORAGE=/mnt/")


def _shares_storage_and_tracking(config: dict, storage: str) -> None:
    """Every node: the storage variable (one line to edit) and the tracking server, before `ray start`."""
    storage_lines = [c for c in config["setup_commands"] if "CAENET_STORAGE=" in c]
    assert len(storage_lines) == 1 and storage in storage_lines[0]
    head = " ".join(config["head_start_ray_commands"])
    assert "mlflow server" in head and "--backend-store-uri sqlite:" in head and "$CAENET_STORAGE" in head
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in " ".join(config["worker_start_ray_commands"])
    for start in (config["head_start_ray_commands"][-1], config["worker_start_ray_commands"][-1]):
        assert start.startswith(". ~/.caenet_env") and "ray start" in start  # jobs inherit the variables


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


def test_the_nodes_run_the_suites_own_environment():
    """Ray's default AMI (Ubuntu 18.04, CUDA 11.2) cannot install a Python 3.11 suite: the nodes
    run Ray's image for the pinned Ray and the suite's Python, on an AMI with a CUDA 13 driver."""
    import re
    import tomllib

    import ray
    import torch
    from packaging.specifiers import SpecifierSet

    config = validate_cluster_config(ROOT / "cluster.yaml")
    image = config["docker"]["image"]
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3(\d+)-cu(\d+)", image)
    assert match, image
    ray_version, python_minor, cuda = match.groups()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"3.{python_minor}" in SpecifierSet(project["requires-python"])  # the image's Python
    pinned_ray = next(d for d in project["dependencies"] if d.startswith("ray["))
    assert ray_version in SpecifierSet(pinned_ray.split("]", 1)[1]) and ray_version == ray.__version__
    if torch.version.cuda:  # the image's CUDA major is the torch wheel's
        assert cuda[:2] == torch.version.cuda.split(".")[0]
    for node in config["available_node_types"].values():
        assert node["node_config"]["ImageId"].startswith("resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver")
    assert any("580" in c and "nvidia-smi" in c for c in config["initialization_commands"])  # the driver CUDA 13.0 needs


def test_every_aws_node_reaches_the_bucket_and_the_head_can_launch_them():
    """Without an instance profile a GPU worker's first checkpoint to S3 fails with an access
    error; the head needs EC2 and iam:PassRole on the workers' role to launch them with theirs,
    and its MLflow server needs boto3 to write artifacts to S3 (it logged ModuleNotFoundError)."""
    import json
    import tomllib

    config = validate_cluster_config(ROOT / "cluster.yaml")
    profiles = {name: node["node_config"].get("IamInstanceProfile", {}).get("Name")
                for name, node in config["available_node_types"].items()}
    assert profiles == {"head.cpu": "caenet-head", "worker.gpu": "caenet-worker"}, profiles
    bucket = next(c for c in config["setup_commands"] if "CAENET_STORAGE=" in c).split("s3://")[1].split("/")[0]

    def allowed(policy: str) -> dict[str, set[str]]:
        statements = json.loads((ROOT / "deploy" / "aws" / policy).read_text())["Statement"]
        out: dict[str, set[str]] = {}
        for st in statements:
            for action in [st["Action"]] if isinstance(st["Action"], str) else st["Action"]:
                out.setdefault(action, set()).update([st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"])
        return out

    for policy in ("worker-policy.json", "head-policy.json"):  # the bucket cluster.yaml names, read and written
        rights = allowed(policy)
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            assert f"arn:aws:s3:::{bucket}/*" in rights[action], (policy, action)
        assert f"arn:aws:s3:::{bucket}" in rights["s3:ListBucket"], policy
    head = allowed("head-policy.json")
    assert head["iam:PassRole"] == {"arn:aws:iam::*:role/caenet-worker"}
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags"} <= set(head)
    assert any("[s3]" in c and "pip install" in c for c in config["head_setup_commands"])
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("boto3") for d in extras["s3"])

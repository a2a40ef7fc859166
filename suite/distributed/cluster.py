"""Offline validation of a Ray cluster-launcher config (``cluster.yaml``).

Ray checks a cluster config only when ``ray up`` runs, against a cloud account. Here the
same check runs offline: Ray's own defaults are merged in (``prepare_config``) and the result
is validated against ``ray-schema.json`` from the installed wheel (``validate_config``).
Both are private Ray APIs, hence the pinned Ray version in pyproject.toml.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ray.autoscaler._private.util import prepare_config, validate_config

from suite.config import ConfigError, read_yaml
from suite.errors import UserError


class ClusterConfigError(UserError, ValueError):
    """A cluster config Ray would reject; the message is one line."""


def validate_cluster_config(path: str | Path) -> dict:
    """Return the config with Ray's defaults filled in, or raise ClusterConfigError."""
    path = Path(path)
    try:
        raw = read_yaml(path, "cluster config", "see cluster.yaml in the repository root")
    except ConfigError as exc:
        raise ClusterConfigError(str(exc)) from None
    quiet = logging.getLogger("ray.autoscaler._private.util")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # prepare_config logs INFO lines about head max_workers
    try:
        config = prepare_config(raw)
        validate_config(config)
    except Exception as exc:  # jsonschema.ValidationError, ValueError, KeyError from Ray
        where = "/".join(str(p) for p in getattr(exc, "absolute_path", []) or [])
        message = getattr(exc, "message", None) or str(exc).splitlines()[0]
        raise ClusterConfigError(f"{path}: {where + ': ' if where else ''}{message}") from None
    finally:
        quiet.setLevel(level)
    return config

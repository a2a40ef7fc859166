"""The config a finished ``caenet run`` ran, read back from its MLflow run (the ``config.yaml``
artifact); ``suite.experiment.resolve`` takes a config file or such a run id."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from suite import tracking_store
from suite.config import ConfigError


def run_config_tree(run_id: str) -> dict:
    """The config tree MLflow run ``run_id`` (a pipeline run in the configured store) recorded."""
    uri, _ = tracking_store.resolve_uri(None)
    client = tracking_store.client(uri)  # mlflow is imported here: only run ids need it
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml", tmp)).read_text())
    except Exception as exc:
        raise ConfigError(f"{run_id}: neither a config file nor a pipeline run in {uri} "
                          f"({str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__})") from None

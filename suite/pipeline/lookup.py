"""Name a finished run by its config file or by the MLflow run id of ``caenet run`` (whose
``config.yaml`` artifact holds the config it ran); ``suite.stages.graph.trained_models`` then
finds its models in the cache."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from suite.config import ConfigError, ExperimentConfig, RuntimeConfig, from_dict, load_config
from suite.pipeline.tracking import resolve_tracking_uri


def resolve_config(config_or_run: str, overrides: list[str] | None = None, profiles: list[str] | None = None) -> ExperimentConfig:
    """A YAML path, or an MLflow run id of a pipeline run (in the configured tracking store)."""
    path = Path(config_or_run)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_config(path, overrides, profiles)
    from mlflow.tracking import MlflowClient  # deferred: mlflow takes ~1.5 s to import; only run ids need it

    uri, _ = resolve_tracking_uri(RuntimeConfig())
    client = MlflowClient(uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            names = {a.path for a in client.list_artifacts(config_or_run)}
            name = "config.yaml" if "config.yaml" in names or "config.json" not in names else "config.json"  # json: older runs
            local = client.download_artifacts(config_or_run, name, tmp)
            tree = yaml.safe_load(Path(local).read_text())  # JSON is YAML too
    except Exception as exc:
        raise ConfigError(f"{config_or_run}: neither a config file nor a pipeline run in {uri} "
                          f"({str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__})") from None
    return from_dict(tree, overrides, source=f"MLflow run {config_or_run}", profiles=profiles)

"""Find the trained models of a finished run without training anything.

``trained_models(cfg)`` walks the same stage graph as ``caenet run`` in lookup-only mode:
every stage must already sit finished in the cache (else ``StageMissing`` names it). A run
may be named by its config file or by the MLflow run id of ``caenet run`` (whose
``config.json`` artifact holds the config it ran).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from suite.config import ConfigError, ExperimentConfig, from_dict, load_config


def resolve_config(config_or_run: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """A YAML path, or an MLflow run id of a pipeline run (in the configured tracking store)."""
    path = Path(config_or_run)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_config(path, overrides)
    from suite.config import RuntimeConfig
    from suite.pipeline.tracking import resolve_tracking_uri

    from mlflow.tracking import MlflowClient

    uri, _ = resolve_tracking_uri(RuntimeConfig())
    client = MlflowClient(uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(config_or_run, "config.json", tmp)
            tree = json.loads(Path(local).read_text())
    except Exception as exc:
        raise ConfigError(f"{config_or_run}: neither a config file nor a pipeline run in {uri} "
                          f"({str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__})") from None
    return from_dict(tree, overrides, source=f"MLflow run {config_or_run}")


def trained_models(cfg: ExperimentConfig) -> dict:
    """label -> (model name, kwargs, stage result with model.pt), for every model of the run."""
    from suite.pipeline.context import Context
    from suite.pipeline.run import train_stages
    from suite.pipeline.stage import StageRunner

    cfg = cfg.effective()
    cache_root = Path(cfg.runtime.cache_dir).resolve() / cfg.data.dataset
    runner = StageRunner(cache_root, tracker=None, log=lambda _: None, require_cached=True)
    return train_stages(Context(cfg, runner, None))

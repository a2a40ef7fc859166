"""The experiment config a command runs: the file read and validated (``suite.config``), then
the names that plug-in registries own checked against them, in one pass above them: the
dataset, every architecture, and each ``compare.methods`` entry parsed as its kind's class.

A typo in any of these fails here, in one line, before Ray starts or anything trains.
"""

from __future__ import annotations

from pathlib import Path

from suite.config import ConfigError, ExperimentConfig, from_dict, load_config
from suite.data.catalog import names as dataset_names
from suite.methods import parse_methods
from suite.models import list_models
from suite.pipeline.lookup import run_config_tree


def check(cfg: ExperimentConfig, source: str = "config") -> ExperimentConfig:
    """``cfg`` with its names checked and its methods parsed (in place); ConfigError in one line."""
    datasets = dataset_names()
    if cfg.data.dataset not in datasets:
        raise ConfigError(f"{source}: data.dataset: unknown dataset {cfg.data.dataset!r}; known: {', '.join(datasets)}")
    try:
        cfg.compare.methods = parse_methods(cfg.compare)
    except ValueError as exc:  # a method's own errors start with its entry, e.g. "['X'].ratio: Field required"
        message = str(exc)
        raise ConfigError(f"{source}: compare.methods{message}" if message.startswith("[") else f"{source}: compare: {message}") from None
    known = set(list_models())
    named = [("baseline.model", cfg.baseline.model), ("autoencoder.model", cfg.autoencoder.model)]
    named += [(f"compare.methods[{m.name!r}].model", m.model) for m in cfg.compare.methods if getattr(m, "model", None)]
    named += [(f"compare.size_and_latency[{m.name!r}].model", m.model) for m in cfg.compare.size_and_latency]
    for key, name in named:
        if name not in known:
            raise ConfigError(f"{source}: {key}: unknown model {name!r}; registered: {', '.join(sorted(known))}")
    return cfg


def load(path: str | Path, overrides: list[str] | None = None, profiles: list[str] | None = None) -> ExperimentConfig:
    """A YAML config with ``profiles`` and ``--set`` ``overrides`` applied, checked."""
    return check(load_config(path, overrides, profiles), str(path))


def from_tree(tree: dict | None, overrides: list[str] | None = None, source: str = "config",
              profiles: list[str] | None = None) -> ExperimentConfig:
    """A config tree (``profiles`` and ``overrides`` applied), checked."""
    return check(from_dict(tree, overrides, source, profiles), source)


def resolve(config_or_run: str, overrides: list[str] | None = None, profiles: list[str] | None = None) -> ExperimentConfig:
    """A YAML path, or the MLflow run id of a ``caenet run`` (its recorded config), checked."""
    path = Path(config_or_run)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load(path, overrides, profiles)
    return from_tree(run_config_tree(config_or_run), overrides, f"MLflow run {config_or_run}", profiles)

"""Typed experiment configs, validated on load.

``schema``: every key of an experiment config, with its type, default and bounds.
``loader``: YAML files (``extends:``), profiles, ``--set`` overrides, sweep / study wrappers,
and ``one_line``, the one formatter of validation errors.

Names owned by plug-in registries (datasets, models, method kinds) are checked above the
registries, by ``suite.experiment``: what commands load a config through.
"""

from suite.config.loader import (from_dict, load_config, load_wrapper, one_line, overlay, parse_override, profile, read_yaml,
                                 set_dotted, split_overrides, to_yaml)
from suite.config.schema import (AutoencoderConfig, BaselineConfig, CAENetConfig, ClusteringConfig, CompareConfig,
                                 DataConfig, EvaluateConfig, ExperimentConfig, FeaturesConfig, KDConfig, LatencyConfig,
                                 MethodEntry, PruneConfig, RuntimeConfig, TrainConfig)
from suite.errors import ConfigError

__all__ = ["AutoencoderConfig", "BaselineConfig", "CAENetConfig", "ClusteringConfig", "CompareConfig", "ConfigError",
           "DataConfig", "EvaluateConfig", "ExperimentConfig", "FeaturesConfig", "KDConfig", "LatencyConfig", "MethodEntry",
           "PruneConfig", "RuntimeConfig", "TrainConfig", "from_dict", "load_config", "load_wrapper", "one_line", "overlay",
           "parse_override", "profile", "read_yaml", "set_dotted", "split_overrides", "to_yaml"]

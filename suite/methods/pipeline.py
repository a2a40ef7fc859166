"""``kind: pipeline``: CAE-Net as this pipeline builds it under other settings, e.g. the paper's
choices (``configs/*_paper.yaml``), as one more row of the same table, at the same seeds."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from suite.config import ConfigError, ExperimentConfig, from_dict, overlay, read_yaml
from suite.methods import register
from suite.methods.base import MethodParams
from suite.methods.job import MethodJob

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@register
class Pipeline(MethodParams):
    """CAE-Net of this pipeline under other settings, e.g. the paper's (configs/*_paper.yaml).

    The keys that ``config`` itself states (a YAML of configs/; its ``extends`` is not followed)
    are laid over this config, then ``set``. Its stages are the pipeline's own, cached like
    ``caenet run``'s; only its CAE-Net is a row (its ablations are not trained)."""

    kind: Literal["pipeline"]
    config: str | None = None  # a path, or a file name of configs/
    set: list[str] = []  # dotted overrides after it, e.g. features.extractor=baseline (no ImageNet weights)
    fresh: ClassVar[bool] = True  # 'of' unused
    trains: ClassVar[bool] = False  # its schedules are the pipeline's, in its stages' own keys
    pipeline: ClassVar[bool] = True  # trained through the stage graph by `caenet compare`, not as a stage

    def settings(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """``cfg`` (effective, at its seed) with this row's settings: the config its stages run."""
        tree = cfg.model_dump(exclude={"compare"})
        if self.config:
            path = Path(self.config) if Path(self.config).exists() else CONFIGS / self.config
            own = read_yaml(path, "config", f"compare.methods[{self.name!r}].config: a YAML path or a file of {CONFIGS}")
            tree = overlay(tree, {k: v for k, v in own.items() if k not in ("extends", "name")})
        return from_dict(tree, [*self.set, "caenet.ablations=[]", "autoencoder.compare_unclustered=false"],
                         source=f"compare.methods[{self.name!r}]")

    def run(self, job: MethodJob) -> dict:
        raise ConfigError(f"compare.methods[{self.name!r}]: a pipeline row is trained by `caenet compare` through "
                          "the stage graph, not as a stage of its own")

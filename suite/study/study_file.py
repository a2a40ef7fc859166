"""Study files: a base experiment, named variants (dotted overrides each) and seeds.

    name: mnist-ablation
    experiment: ../mnist_lenet.yaml              # relative to the study file
    set: [caenet.ablations=[]]                   # overrides for every variant
    seeds: [0, 1, 2]                             # each sets seed_key (data.seed: split, k-means, init, order)
    variants:
      - {name: method}                           # the base as it is
      - {name: "targets: self", set: [autoencoder.targets=self], changes_cae: true}

Every variant x seed is validated against the experiment config when the file loads, so a
typo'd key fails in one line that names the variant before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from suite import experiment
from suite.config import ConfigError, ExperimentConfig, load_wrapper
from suite.stages.graph import same_outcome


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Variant(_Strict):
    name: str = Field(min_length=1)
    set: list[str] = []  # dotted overrides, as `caenet run --set`
    note: str = ""  # one line for the table: what the variant tests


class StudyConfig(_Strict):
    name: str = "study"
    experiment: str  # the base experiment config (path relative to the study file)
    set: list[str] = []  # overrides applied to every variant, before the variant's own
    seeds: list[int] = Field(default=[0, 1, 2], min_length=1)
    seed_key: str = "data.seed"  # the experiment key each seed sets
    variants: list[Variant] = Field(min_length=1)
    baseline_variant: str | None = None  # the row others are compared with; null: the first
    max_concurrent: int | None = Field(default=None, ge=1)  # cells trained side by side; null: as the cluster has room
    # shared: cells reuse every stage another cell (or run) finished, an ablation's way.
    # fresh: a timing study: each cell trains every stage itself, in a folder of its own (a
    # scaling cell must never be a cache hit), one cell at a time unless max_concurrent says
    # otherwise; the table then shows each stage's wall time, images/s, the resources held,
    # and time, speed-up and parallel efficiency against the reference variant.
    timing: Literal["shared", "fresh"] = "shared"
    note: str = ""  # a line under the table (e.g. "CIFAR: CAE 8 epochs instead of 20")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {seeds}")
        return seeds

    @model_validator(mode="after")
    def _names(self) -> "StudyConfig":
        names = [v.name for v in self.variants]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"variant names used twice: {', '.join(twice)}")
        if self.baseline_variant is not None and self.baseline_variant not in names:
            raise ValueError(f"baseline_variant {self.baseline_variant!r} names no variant (have {', '.join(names)})")
        return self

    @property
    def reference(self) -> str:
        return self.baseline_variant or self.variants[0].name


@dataclass(frozen=True, eq=False)  # hashed by identity: cells key the run's dicts
class Cell:
    """One variant at one seed: the experiment config it runs."""

    variant: str
    seed: int
    cfg: ExperimentConfig

    @property
    def label(self) -> str:
        return f"{self.variant} / seed {self.seed}"


def load_study(path: str | Path, overrides: list[str] | None = None, profiles: list[str] | None = None,
               allow_identical: bool = False) -> tuple[StudyConfig, list[Cell]]:
    """(study, every cell's config, variant-major); raises ConfigError in one line. ``--set``
    keys of the experiment config apply to every variant, others are study keys (``seeds=[0,1]``).
    Two variants that plan the same stages (one experiment under two names) are an error unless
    ``allow_identical``."""
    study, base = load_wrapper(path, StudyConfig, "study file", "see configs/studies/", overrides, profiles)
    base = base.model_dump(mode="json")
    cells = []
    for variant in study.variants:
        for seed in study.seeds:
            cfg = experiment.from_tree(base, [*variant.set, f"{study.seed_key}={seed}"], source=f"{path}: variant {variant.name!r}")
            cells.append(Cell(variant.name, seed, cfg))
    if not allow_identical and study.timing == "shared":  # a timing study may repeat one experiment (cells per hour)
        same = same_outcome({repr(c.variant): c.cfg for c in cells if c.seed == study.seeds[0]}, "evaluate")
        if same:
            raise ConfigError(f"{path}: variants {' and '.join(same[0])} run the same experiment (every stage the same); "
                              "make their set: differ, or pass --allow-identical")
    return study, cells

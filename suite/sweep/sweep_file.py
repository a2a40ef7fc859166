"""Sweep configs: a base experiment, a search space over dotted keys, a scheduler and an SLO.

    experiment: ../cifar10_alexnet.yaml         # relative to the sweep file
    set: [caenet.ablations=[], autoencoder.train.epochs=6]   # fixed overrides for every trial
    space:
      clustering.k: [1, 2, 3, 4, 5]             # a list is a grid (every value is tried)
      autoencoder.prune.weight_ratio: [0.0, 0.5, 0.8]
      caenet.train.lr: {loguniform: [1.0e-4, 1.0e-2]}   # or uniform, randint, choice
    num_samples: 1                              # repeats of the grid (random draws of the rest)
    scheduler: {type: asha, grace_period: 2, reduction_factor: 3}
    max_concurrent_trials: 1
    slo: {speedup: 3.0}                         # or {latency_ms: 5.0}; board: NAME decides it on a board of --boards

Every value of every grid and the bounds of every distribution are validated against the
experiment config before Ray starts, so a typo fails in one line, not in trial 7.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from suite import experiment
from suite.config import ConfigError, ExperimentConfig, load_wrapper, one_line, set_dotted
from suite.stages.graph import same_outcome

DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
THIS_MACHINE = "this machine"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SchedulerConfig(_Strict):
    # asha: stop trials whose CAE-Net validation accuracy trails at each rung (per epoch)
    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(default=2, ge=1)  # epochs every trial gets before it can be stopped
    reduction_factor: float = Field(default=3, gt=1)


class SLOConfig(_Strict):
    """A batch-1 latency target, met on a board of ``--boards FILE`` (``board: NAME``) or, with
    no board, on this machine after the sweep (``evaluate.latency``: 1 thread by default)."""

    board: str | None = None  # the board the SLO is decided on (its name in the boards file)
    latency_ms: float | None = Field(default=None, gt=0)  # absolute, on that board (or this machine)
    speedup: float | None = Field(default=None, gt=0)  # or: baseline latency / CAE-Net latency >= this, same board

    @model_validator(mode="after")
    def _one(self) -> "SLOConfig":
        if self.latency_ms is not None and self.speedup is not None:
            raise ValueError("give latency_ms or speedup, not both")
        return self

    def met(self, latency_ms: float, baseline_ms: float) -> bool:
        if self.latency_ms is not None:
            return latency_ms <= self.latency_ms
        if self.speedup is not None:
            return baseline_ms / latency_ms >= self.speedup
        return True

    @property
    def where(self) -> str:
        return f"board {self.board}" if self.board else THIS_MACHINE

    def describe(self) -> str:
        if self.latency_ms is not None:
            return f"p50 <= {self.latency_ms:g} ms on {self.where}"
        if self.speedup is not None:
            return f"speed-up >= {self.speedup:g}x over the baseline on {self.where}"
        return "no SLO"


class SweepConfig(_Strict):
    name: str = "sweep"
    experiment: str  # the base experiment config (path relative to the sweep file)
    set: list[str] = []  # overrides applied to every trial
    space: dict[str, Any]
    num_samples: int = Field(default=1, ge=1)
    metric: Literal["val_acc"] = "val_acc"  # CAE-Net accuracy on held-out training images
    scheduler: SchedulerConfig = SchedulerConfig()
    max_concurrent_trials: int = Field(default=1, ge=1)
    trial_cpus: float = Field(default=1, ge=0)  # the trial's own process (stages that are not Ray Train)
    slo: SLOConfig = SLOConfig()

    @field_validator("space")
    @classmethod
    def _space(cls, space: dict) -> dict:
        if not space:
            raise ValueError("the search space is empty")
        for key, spec in space.items():
            if isinstance(spec, list):
                if not spec:
                    raise ValueError(f"{key}: empty grid")
            elif isinstance(spec, dict):
                if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
                    raise ValueError(f"{key}: expected a list (grid) or one of {{{', '.join(DISTRIBUTIONS)}: ...}}")
                kind, args = next(iter(spec.items()))
                if not isinstance(args, list) or (kind != "choice" and len(args) != 2) or not args:
                    raise ValueError(f"{key}: {kind} takes {'a list of values' if kind == 'choice' else '[low, high]'}")
                if kind != "choice":
                    low, high = args
                    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in args):
                        raise ValueError(f"{key}: {kind} bounds must be numbers, got {args!r}")
                    if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
                        raise ValueError(f"{key}: randint bounds must be integers, got {args!r}")
                    if high <= low:  # randint's high is exclusive: [5, 1] and [3, 3] draw nothing
                        raise ValueError(f"{key}: {kind} range [{low}, {high}] is empty; the high bound must exceed the low")
                    if kind == "loguniform" and low <= 0:
                        raise ValueError(f"{key}: loguniform needs a positive low bound, got {low}")
            else:
                raise ValueError(f"{key}: expected a list (grid) or a distribution mapping, got {spec!r}")
        return space


def candidate_values(spec) -> list:
    """The values a space entry can take that are worth validating up front."""
    if isinstance(spec, list):
        return spec
    kind, args = next(iter(spec.items()))
    return args


def load_sweep(path: str | Path, overrides: list[str] | None = None, profiles: list[str] | None = None,
               allow_identical: bool = False) -> tuple[SweepConfig, ExperimentConfig]:
    """(sweep, base experiment) with every trial's settings validated; raises ConfigError.
    ``overrides``: ``--set`` values (``suite.config.split_overrides``); ``profiles`` overlay the base.
    A grid axis whose values plan the same CAE-Net stage is an error unless ``allow_identical``."""
    sweep, base = load_wrapper(path, SweepConfig, "sweep file", "see configs/sweeps/", overrides, profiles)
    experiment.check(base, str(path))
    tree = base.model_dump(mode="json")
    for key, spec in sweep.space.items():  # each value (or bound) alone, against the base
        for value in candidate_values(spec):
            trial_config(tree, {key: value}, source=f"{path}: space")
    grids = {k: v for k, v in sweep.space.items() if isinstance(v, list)}
    for combo in itertools.product(*grids.values()):  # grid combinations too (e.g. k_min/k_max)
        trial_config(tree, dict(zip(grids, combo)), source=f"{path}: space")
    if not allow_identical:
        for key, values in grids.items():  # an axis whose values train the same CAE-Net sweeps nothing
            same = same_outcome({f"{key}={v}": trial_config(tree, {key: v}) for v in values}, "caenet")
            if same:
                hint = (" (clustering.* changes nothing while autoencoder.targets is class: add autoencoder.targets=cluster "
                        "to the sweep's set)") if key.startswith("clustering.") and base.autoencoder.targets != "cluster" else ""
                raise ConfigError(f"{path}: space: {' and '.join(same[0])} train the same CAE-Net{hint}; change the axis, "
                                  "or pass --allow-identical")
    return sweep, base


def trial_config(base_tree: dict, params: dict, source: str = "trial") -> ExperimentConfig:
    """The experiment one trial runs: the base config with the trial's dotted values set."""
    tree = copy.deepcopy(base_tree)
    for key, value in params.items():
        set_dotted(tree, key, value)
    try:
        cfg = ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {one_line(exc)}") from None
    return experiment.check(cfg, source)

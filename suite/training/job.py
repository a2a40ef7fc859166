"""``TrainJob``: one training, described as typed, picklable data (it travels to Ray workers
as is), and the weight hooks a job may ask for (built around the model on the worker)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from suite.compression import prunable_weights
from suite.compression.sharing import cluster_weights
from suite.config import DataConfig, KDConfig, TrainConfig
from suite.errors import UserError
from suite.training.loop import FixedMasks, Hook, MagnitudePruning, WeightSharing


class TrainingError(UserError, RuntimeError):
    """A training that failed after its retries; the message is one line."""


@dataclass(frozen=True)
class PruneWeights:
    """Magnitude pruning while training: ``ratio`` of the conv / linear weights (of the
    submodules ``prefixes``, None: all) set to zero, reached by a cubic ramp."""

    ratio: float
    prefixes: tuple[str, ...] | None = None

    def hook(self, model: nn.Module, epochs: int) -> Hook:
        return MagnitudePruning(prunable_weights(model, list(self.prefixes) if self.prefixes else None), self.ratio, epochs)


@dataclass(frozen=True)
class KeepZeros:
    """Train on without undoing pruning: the zeros the conv / linear weights of the submodules
    ``prefixes`` start with (a weight-pruned CAE's encoder, loaded) stay zero."""

    prefixes: tuple[str, ...]

    def hook(self, model: nn.Module, epochs: int) -> Hook:
        return FixedMasks(prunable_weights(model, list(self.prefixes)))


@dataclass(frozen=True)
class ShareWeights:
    """Weight sharing while fine-tuning (Deep Compression): ``clusters`` values per conv /
    linear layer. A resumed training finds its weights already shared."""

    clusters: int

    def hook(self, model: nn.Module, epochs: int) -> Hook:
        return WeightSharing(prunable_weights(model), cluster_weights(model, self.clusters))


@dataclass
class TrainJob:
    name: str
    model: str
    model_kwargs: dict
    data: DataConfig  # a dict is taken and validated
    train: TrainConfig  # a dict is taken and validated
    objective: str = "classify"  # classify | kd | reconstruct | branchy (suite.training.objectives)
    # Files on the driver's disk (the stage cache). The driver reads them and hands workers
    # their contents through Ray's object store: a worker opens no path of the driver's.
    targets_path: str | None = None  # .npy of target indices (reconstruct)
    teacher_logits_path: str | None = None  # .npy of teacher logits over the training images (kd)
    kd: KDConfig = field(default_factory=KDConfig)
    init_from: dict = field(default_factory=dict)  # {"encoder": "/path/model.pt"}: load those weights ("" = whole model)
    freeze: list = field(default_factory=list)  # submodule names kept fixed (and in eval mode)
    lr_scale: dict = field(default_factory=dict)  # {"encoder": 0.1}: that submodule learns at 0.1 x the rate
    hooks: list = field(default_factory=list)  # PruneWeights / ShareWeights: built around the model on the worker
    storage_path: str = ""  # where this job's checkpoints live: a folder or a runtime.storage URI
    mlflow_uri: str | None = None  # the driver logs each epoch's metrics to this run
    mlflow_run_id: str | None = None
    progress: bool = True
    console_prefix: str = ""  # before the name in the driver's console (a study's cell: "(method / seed 0) ")
    progress_every_s: float = 20.0  # a progress line inside an epoch at most this often (runtime.progress_every_s)
    epochs_key: str = "train.epochs"  # the config key of this training's length, named when it did not converge

    def __post_init__(self):
        self.data = DataConfig.model_validate(self.data)
        self.train = TrainConfig.model_validate(self.train)
        self.kd = KDConfig.model_validate(self.kd)

    @property
    def label(self) -> str:
        """What the driver's console (and its progress bars) call this training."""
        return f"{self.console_prefix}[{self.name}]"

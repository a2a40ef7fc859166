"""``TrainJob``: one training, described as plain data (it travels to Ray workers as is)."""

from __future__ import annotations

from dataclasses import dataclass, field

from suite.config import KDConfig
from suite.errors import UserError


class TrainingError(UserError, RuntimeError):
    """A training that failed after its retries; the message is one line."""


@dataclass
class TrainJob:
    name: str
    model: str
    model_kwargs: dict
    data: dict  # DataConfig as a dict
    train: dict  # TrainConfig as a dict
    objective: str = "classify"  # classify | kd | reconstruct | branchy (suite.training.objectives)
    # Files on the driver's disk (the stage cache). The driver reads them and hands workers
    # their contents through Ray's object store: a worker opens no path of the driver's.
    targets_path: str | None = None  # .npy of target indices (reconstruct)
    teacher_logits_path: str | None = None  # .npy of teacher logits over the training images (kd)
    kd: dict = field(default_factory=lambda: KDConfig().model_dump())
    init_from: dict = field(default_factory=dict)  # {"encoder": "/path/model.pt"}: load those weights ("" = whole model)
    freeze: list = field(default_factory=list)  # submodule names kept fixed (and in eval mode)
    lr_scale: dict = field(default_factory=dict)  # {"encoder": 0.1}: that submodule learns at 0.1 x the rate
    # Magnitude pruning while training: {"ratio": final sparsity, "prefixes": [submodules] or None}
    prune: dict = field(default_factory=dict)
    # Weight sharing while fine-tuning (Deep Compression): {"clusters": k} per conv/linear layer
    share: dict = field(default_factory=dict)
    storage_path: str = ""  # where Ray Train keeps this job's checkpoints: a folder or a runtime.storage URI
    mlflow_uri: str | None = None  # the driver logs each epoch's metrics to this run
    mlflow_run_id: str | None = None
    progress: bool = True
    console_prefix: str = ""  # before the name in the driver's console (a study's cell: "(method / seed 0) ")
    progress_every_s: float = 20.0  # a progress line inside an epoch at most this often (runtime.progress_every_s)

    @property
    def label(self) -> str:
        """What the driver's console (and its progress bars) call this training."""
        return f"{self.console_prefix}[{self.name}]"

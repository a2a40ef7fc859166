"""Training, independent of Ray: objectives, the epoch loop with its hooks, checkpoints and
the job description. ``suite.distributed.launch`` runs it on Ray Train."""

from suite.training.job import TrainingError, TrainJob
from suite.training.loop import EpochLoop, Hook, evaluate, make_optimizer
from suite.training.objectives import make_objective

__all__ = ["EpochLoop", "Hook", "TrainJob", "TrainingError", "evaluate", "make_objective", "make_optimizer"]

"""What every stage needs: the effective config, the stage runner and the dataset's shape."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from suite import storage
from suite.config import ExperimentConfig
from suite.data import INFO, DatasetInfo, load_split
from suite.pipeline.stage import StageRunner
from suite.pipeline.tracking import Tracker


def cache_root(cfg: ExperimentConfig) -> Path:
    """Where a config's stages live: ``<runtime.cache_dir>/<dataset>``, absolute (Ray workers and
    jobs run in other folders)."""
    return Path(cfg.runtime.cache_dir).resolve() / cfg.data.dataset


@dataclass
class Context:
    cfg: ExperimentConfig
    runner: StageRunner
    tracker: Tracker | None
    # The stage whose per-epoch reports also go to Ray Tune (set inside a sweep trial).
    tune_stage: str | None = None
    console_prefix: str = ""  # before each training's name on the console (a study's cell)
    # Board name -> timer(models, architectures, images) -> label -> latency stats, each model
    # timed beside models["baseline"] on that board: set by a command given --boards (the
    # board pool lives in a higher layer, suite.edge.pool).
    board_timers: dict[str, Callable] = field(default_factory=dict)

    @functools.cached_property
    def example_input(self) -> np.ndarray:
        """One real test image, float32 (1, C, H, W) in [0, 1]: the input example of every MLflow
        model the run logs (read once per run, not once per model)."""
        return load_split(self.cfg.data, "test").floats(slice(0, 1)).numpy()

    @property
    def info(self) -> DatasetInfo:
        return INFO[self.cfg.data.dataset]

    def data_params(self) -> dict:
        """The data settings that change results (where the files live does not)."""
        return self.cfg.data.model_dump(exclude={"root", "download"})

    def storage_for(self, work: Path) -> str:
        """Checkpoint storage of a training that works in ``work`` (``runtime.storage``)."""
        return storage.job_storage(self.runner.storage, self.runner.cache_root, work)

    def job_defaults(self, work: Path, run_id: str | None) -> dict:
        return {
            "data": self.cfg.data.model_dump(),
            "storage_path": self.storage_for(work),
            "mlflow_uri": self.tracker.uri if self.tracker else None,
            "mlflow_run_id": run_id,
            "progress": self.cfg.runtime.progress,
            "progress_every_s": self.cfg.runtime.progress_every_s,
            "console_prefix": self.console_prefix,
        }

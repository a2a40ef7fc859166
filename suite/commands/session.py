"""One way in and out of every command.

``open_session(cfg, run_name)`` applies ``smoke`` (the effective config), finds the stage
cache, checks the data when asked (before anything starts), opens the command's MLflow parent
run, and on the way out ends it FINISHED, FAILED on an error or KILLED on Ctrl-C, with every
stage run still open. Ray is opened inside it with ``session.ray()`` around the part that
trains, so that timings taken after it run without Ray's daemons.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from suite.config import ExperimentConfig
from suite.data import load_split
from suite.distributed import storage
from suite.distributed.session import ray_session
from suite.pipeline.context import Context, cache_root
from suite.pipeline.stage import StageRunner
from suite.pipeline.tracking import Tracker


@dataclass
class Session:
    cfg: ExperimentConfig  # effective: smoke applied
    cache_root: Path  # <runtime.cache_dir>/<dataset>, absolute
    tracker: Tracker | None  # None: the command records nothing in MLflow
    run_id: str | None  # the command's parent run
    log: Callable[[str], None] = print
    status: str = "FINISHED"  # how the parent run ends when the command returns (edge bench: FAILED when no board answered)

    def context(self) -> Context:
        """The stage context: stages run (or are found cached) under the session's MLflow run."""
        runner = StageRunner(self.cache_root, self.tracker, self.log, storage=storage.configured(self.cfg.runtime))
        return Context(self.cfg, runner, self.tracker)

    def ray(self):
        """A Ray session (joined, or a local Ray started on first use) for the block."""
        return ray_session(self.cfg.runtime, self.cache_root)

    def folder(self, kind: str, out: str | Path | None = None, name: str | None = None) -> Path:
        """``out`` if given, else ``<cache>/<dataset>/<kind>[/<name>]``: the default places of outputs."""
        if out:
            return Path(out)
        return self.cache_root / kind / name if name else self.cache_root / kind


@contextlib.contextmanager
def open_session(cfg: ExperimentConfig, run_name: str | None = None, params: dict | None = None, tags: dict | None = None,
                 check_data: bool = False, log: Callable[[str], None] = print) -> Iterator[Session]:
    """Enter a command: see the module's docstring. ``run_name`` None: no MLflow run."""
    cfg = cfg.effective()
    if check_data:  # fail fast, before Ray or MLflow start, on data that is missing or corrupt
        for split in ("train", "test"):
            load_split(cfg.data, split)
    if run_name is None:
        yield Session(cfg, cache_root(cfg), None, None, log)
        return
    tracker = Tracker(cfg.runtime)
    run_id = tracker.start_parent(run_name, cfg.model_dump(mode="json") if params is None else params,
                                  {"dataset": cfg.data.dataset, "smoke": str(cfg.smoke), **(tags or {})})
    session = Session(cfg, cache_root(cfg), tracker, run_id, log)
    log(f"MLflow run {run_id} in {tracker.uri}")
    with tracker.closing(run_id, outcome=lambda: session.status):
        yield session

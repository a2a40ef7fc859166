"""One way in and out of every command, study and sweep trial.

``open_session(cfg, run_name)`` applies ``smoke`` (the effective config), finds the stage
cache, checks the data when asked (before anything starts), opens the command's MLflow parent
run, and on the way out ends it FINISHED, FAILED on an error or KILLED on Ctrl-C, with every
stage run still open. Ray is opened inside it with ``session.ray()`` around the part that
trains, so that timings taken after it run without Ray's daemons. ``stage_context`` is the one
place a stage context (config, stage runner, MLflow tracker) is built: for a command, for each
cell of a study and for each sweep trial.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from suite import storage
from suite.config import ExperimentConfig, to_yaml
from suite.data import load_split
from suite.distributed import gpus
from suite.distributed.ray_runtime import ray_session
from suite.pipeline import preflight, run_info
from suite.pipeline.context import Context, cache_root
from suite.pipeline.stage import StageRunner
from suite.pipeline.tracking import Tolerant, Tracker, resolve_tracking_uri


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
        return stage_context(self.cfg, self.tracker, self.log)

    def ray(self, tune: bool = False):
        """A Ray session (joined, or a local Ray started on first use) for the block; ``tune``:
        the block runs Ray Tune."""
        return ray_session(self.cfg.runtime, self.cache_root, tune=tune)

    def folder(self, kind: str, out: str | Path | None = None, name: str | None = None) -> Path:
        """``out`` if given, else ``<cache>/<dataset>/<kind>[/<name>]``: the default places of outputs."""
        if out:
            return Path(out)
        return self.cache_root / kind / name if name else self.cache_root / kind


def stage_context(cfg: ExperimentConfig, tracker: Tracker | None, log: Callable[[str], None] = print,
                  tune_stage: str | None = None, console_prefix: str = "") -> Context:
    """The context stages of the effective config ``cfg`` run in: its cache, its checkpoint
    storage, stage runs nested under ``tracker``'s parent run (None: nothing recorded)."""
    tracker = Tolerant(tracker, log) if tracker is not None else None  # a store that stops answering fails no stage
    runner = StageRunner(cache_root(cfg), tracker, log, storage=storage.configured(cfg.runtime))
    return Context(cfg, runner, tracker, tune_stage=tune_stage, console_prefix=console_prefix)


def _end_orphaned_runs(tracker: Tracker, log) -> None:
    """Runs left RUNNING by a driver that died without ending them (SIGKILL, a lost node), with
    every run under them, are ended KILLED: the store then shows no run as running that is not.
    Only drivers of this host are checked (another host's process cannot be seen from here)."""
    try:
        running = {r.info.run_id: r for r in tracker.client.search_runs(
            [tracker.experiment_id], "attributes.status = 'RUNNING'", max_results=5000)}
    except Exception:  # the store's trouble shows where the run needs it, not here
        return
    orphans = {rid for rid, r in running.items() if r.data.tags.get("driver") and run_info.driver_gone(r.data.tags["driver"])}
    grown = True
    while grown:  # their stage runs, and the stages of a study's cells, at any depth
        more = {rid for rid, r in running.items() if r.data.tags.get("mlflow.parentRunId") in orphans} - orphans
        orphans |= more
        grown = bool(more)
    for rid in orphans:
        tracker.client.set_terminated(rid, "KILLED")
    drivers = sorted({running[rid].data.tags["driver"] for rid in orphans if "driver" in running[rid].data.tags})
    if orphans:
        log(f"[mlflow] ended {len(orphans)} run(s) KILLED that a driver which died left RUNNING ({', '.join(drivers)})")


def _dataset_input(cfg: ExperimentConfig, split: str, data):
    """One split as an MLflow dataset input: name, digest of the arrays, where it was read, sizes."""
    from mlflow.entities import (  # deferred: mlflow takes ~1 s to import
        Dataset,
        DatasetInput,
        InputTag,
    )

    schema = {"images": {"dtype": "uint8", "shape": list(data.images.shape[1:])}, "labels": {"dtype": "int64"}}
    profile = {"images": len(data), "classes": data.info.num_classes,
               "limit": cfg.data.train_limit if split == "train" else cfg.data.test_limit}
    dataset = Dataset(name=f"{cfg.data.dataset}-{split}", digest=run_info.dataset_digest(data.images, data.labels),
                      source_type="local", source=json.dumps({"uri": str(data.source)}),
                      schema=json.dumps(schema), profile=json.dumps(profile))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training" if split == "train" else "evaluation")])


@contextlib.contextmanager
def open_session(cfg: ExperimentConfig, run_name: str | None = None, params: dict | None = None, tags: dict | None = None,
                 check_data: bool = False, log: Callable[[str], None] = print) -> Iterator[Session]:
    """Enter a command: see the module's docstring. ``run_name`` None: no MLflow run."""
    cfg = cfg.effective()
    # fail fast, before Ray or MLflow start, on data that is missing or corrupt
    splits = {split: load_split(cfg.data, split) for split in ("train", "test")} if check_data else {}
    gpus.preflight(cfg.runtime)  # `use_gpu: yes` on a machine without a GPU: one line, before MLflow and Ray
    # the tracking store, the Ray head, the storage and the cache disk answer, in seconds
    preflight.bound_mlflow_retries()
    preflight.check(cfg, cache_root(cfg), None if run_name is None else resolve_tracking_uri(cfg.runtime)[0])
    if run_name is None:
        yield Session(cfg, cache_root(cfg), None, None, log)
        return
    tracker = Tracker(cfg.runtime)
    _end_orphaned_runs(tracker, log)
    run_id = tracker.start_parent(run_name, run_info.changed_params(cfg) if params is None else params,
                                  {"dataset": cfg.data.dataset, "smoke": str(cfg.smoke), **run_info.source_tags(), **(tags or {})})
    tracker.log_text(run_id, to_yaml(cfg), "config.yaml")  # the whole resolved config; params hold what differs
    if splits:
        tracker.log_datasets(run_id, [_dataset_input(cfg, split, images) for split, images in splits.items()])
    session = Session(cfg, cache_root(cfg), tracker, run_id, log)
    log(f"MLflow run {run_id} in {tracker.uri}")
    with tracker.closing(run_id, outcome=lambda: session.status):
        yield session

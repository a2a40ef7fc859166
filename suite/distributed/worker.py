"""The two engines a training runs on (``suite.training.fit.run`` is the recipe itself).

- **Ray Train** (``train_loop_per_worker``): data-parallel workers that Ray Train starts for
  this training, with its checkpoint registry and restarts. Used for more than one worker.
- **A Ray task on a warm worker process** (``train_task``): one worker, no controller, no
  worker group. Ray keeps idle worker processes (with torch already imported) for the next
  task, so a training starts in milliseconds instead of Ray Train's ~15 s of controller,
  worker-group and health-check start-up on 2 cores. The task writes the same epoch
  checkpoints to the same storage, and ``suite.distributed.launch`` gives it the same
  retries: resume from the last checkpoint after a crash.

Both read their inputs from Ray's object store and yield each epoch's metrics once its
checkpoint is persisted; nothing here opens a file of the driver's.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Iterator

import ray

from suite import storage as store
from suite.distributed import gpus
from suite.training import checkpoints, fit
from suite.training.job import TrainJob
from suite.training.reports import PROGRESS

KEEP_CHECKPOINTS = 2  # per attempt: the newest, and one more in case the newest is cut off mid-write


def fetch_inputs(inputs: dict) -> dict:
    """The worker's inputs (object refs, ``worker_config``) as arrays and tensors."""
    return {"split": ray.get(inputs["split"]), "extra": {k: ray.get(v) for k, v in inputs["extra"].items()},
            "init": {prefix: ray.get(ref) for prefix, ref in inputs["init"].items()}}


def run_job(config: dict, engine: fit.Engine) -> Iterator[dict]:
    """``fit.run`` of the job in ``worker_config`` (``suite.distributed.launch``), its inputs
    fetched from the object store."""
    yield from fit.run(config["job"], fetch_inputs(config["inputs"]), engine, threads=int(config.get("threads", 1)),
                       channels_last=bool(config.get("channels_last")), bf16=config.get("precision") == "bf16")


# ---------------------------------------------------------------------------- Ray Train


class RayTrainEngine:
    """A Ray Train worker: DDP, the distributed sampler, and Ray Train's checkpoint registry."""

    def __init__(self, epoch_relay=None):
        # deferred here and below: ray.train takes 1.2 s to import, and a one-worker training
        # (a warm Ray task, TaskEngine) never needs it
        import ray.train
        import ray.train.torch  # deferred: ray.train takes 1.2 s to import

        gpus.check_reserved()  # a reserved GPU where CUDA does not work: one line, not a silent CPU run
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.prepare_model = ray.train.torch.prepare_model
        self.relay = epoch_relay

    def resume(self, job: TrainJob) -> tuple[dict | None, dict | None, bool]:
        """The newest checkpoint (tensors, meta) and whether its report went unseen.

        The one the controller registered (after a worker restart), or a newer one in storage:
        from an earlier, interrupted attempt (driver crash, Ctrl-C), or one this attempt
        persisted just before its worker died, whose report the controller never saw. Ray V2
        deprecates resume_from_checkpoint, so the loop looks for itself."""
        import ray.train  # deferred: ray.train takes 1.2 s to import

        state = meta = None
        registered = ray.train.get_checkpoint()
        if registered:
            with registered.as_directory() as d:
                state, meta = checkpoints.read(d)
        folder, epoch = checkpoints.latest(job.storage_path)
        if folder is not None and epoch > (meta["epoch"] if meta else -1):
            this_attempt = f"/{ray.train.get_context().get_experiment_name()}/" in folder.replace("\\", "/")
            return *checkpoints.read(folder), this_attempt
        return state, meta, False

    def replay(self, metrics: dict) -> None:
        """A checkpoint this attempt persisted but the controller never saw reported (its
        worker died right after): its epoch goes to MLflow from here."""
        if self.relay is not None:
            self.relay.send(metrics)

    def report(self, metrics: dict, write_checkpoint) -> None:
        import ray.train  # deferred: ray.train takes 1.2 s to import

        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if self.rank == 0:
                write_checkpoint(Path(tmp))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


def _quiet_report_lines() -> None:
    """Ray Train 2.60 logs every report at INFO ("Reporting training result ...") on a logger
    named by its file path, which ``LoggingConfig`` does not reach; the epoch lines say it better."""
    try:
        from ray.train.v2._internal.execution import context as train_context  # deferred: ray.train takes 1.2 s to import

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:  # a later Ray moved it: the lines come back, nothing breaks
        pass


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train worker function (Ray Train's callback relays each reported epoch; rank 0
    relays its progress records the same way)."""
    _quiet_report_lines()
    engine = RayTrainEngine(config.get("relay"))
    for item in run_job(config, engine):
        if PROGRESS in item and engine.relay is not None:
            engine.relay.send(item)


# ---------------------------------------------------------------------------- one worker, a Ray task


class TaskEngine:
    """A single worker in a plain Ray task: no DDP, checkpoints written straight to storage."""

    rank, world = 0, 1

    def __init__(self, attempt: str):
        self.attempt = attempt  # this run's folder under the job's storage, as Ray Train names its runs
        gpus.check_reserved()  # a reserved GPU where CUDA does not work: one line, not a silent CPU run
        self.device = gpus.device()

    def prepare_model(self, model):
        return model.to(self.device)

    def resume(self, job: TrainJob) -> tuple[dict | None, dict | None, bool]:
        """The newest checkpoint of any attempt; its metrics go to the driver again (it keeps
        the epochs it has logged, so a repeat is dropped there, a miss is made up)."""
        folder, _ = checkpoints.latest(job.storage_path)
        if folder is None:
            return None, None, False
        return *checkpoints.read(folder), True

    def replay(self, metrics: dict) -> None:
        pass  # yielded to the driver, which logs it if it has not yet

    def report(self, metrics: dict, write_checkpoint) -> None:
        checkpoints.persist(write_checkpoint, self.attempt, int(metrics["epoch"]) - 1, keep=KEEP_CHECKPOINTS)


def train_task(config: dict) -> Iterator[dict]:
    """The Ray task (a streaming generator): each epoch's metrics, as soon as it is checkpointed."""
    yield from run_job(config, TaskEngine(store.join(config["job"].storage_path, config["attempt"])))


"""The worker side of a training: one function, ``run_job``, for both ways a training runs.

- **Ray Train** (``train_loop_per_worker``): data-parallel workers that Ray Train starts for
  this training, with its checkpoint registry and restarts. Used for more than one worker.
- **A Ray task on a warm worker process** (``train_task``): one worker, no controller, no
  worker group. Ray keeps idle worker processes (with torch already imported) for the next
  task, so a training starts in milliseconds instead of Ray Train's ~15 s of controller,
  worker-group and health-check start-up on 2 cores. The task writes the same epoch
  checkpoints to the same storage, and ``suite.distributed.training`` gives it the same
  retries: resume from the last checkpoint after a crash.

Both read their inputs from Ray's object store and yield each epoch's metrics once its
checkpoint is persisted; nothing here opens a file of the driver's.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import ray
import torch

from suite.compression import prunable_weights
from suite.compression.sharing import cluster_weights
from suite.config import DataConfig, TrainConfig
from suite.data import INFO, split_train_val
from suite.distributed import gpus
from suite.distributed import storage as store
from suite.distributed.progress import PROGRESS, epoch_line
from suite.models import create_model
from suite.training import checkpoints
from suite.training.batches import TensorBatches
from suite.training.job import TrainingError, TrainJob
from suite.training.loop import EpochLoop, MagnitudePruning, ProgressLines, WeightSharing, evaluate, make_optimizer
from suite.training.objectives import make_objective

KEEP_CHECKPOINTS = 2  # per attempt: the newest, and one more in case the newest is cut off mid-write


def _load_init(model: torch.nn.Module, init: dict) -> None:
    for prefix, state in init.items():
        if prefix == "":  # the whole model; buffers it adds to its base (SubFlow's ranking) start fresh
            missing, unexpected = model.load_state_dict(state, strict=False)
            params = dict(model.named_parameters())
            if unexpected or any(k in params for k in missing):
                raise TrainingError(f"initial weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
            continue
        sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        if not sub:
            raise TrainingError(f"the initial weights hold no '{prefix}.*' weights to initialise from")
        getattr(model, prefix).load_state_dict(sub)


def _param_groups(model: torch.nn.Module, lr_scale: dict, lr: float) -> list[dict]:
    """The trainable parameters as optimizer groups: one per submodule of ``lr_scale`` (at its
    scaled rate), one for the rest."""
    scaled = {id(p) for prefix in lr_scale for p in getattr(model, prefix).parameters()}
    groups = [{"params": [p for p in getattr(model, prefix).parameters() if p.requires_grad], "lr": lr * scale}
              for prefix, scale in lr_scale.items()]
    groups.append({"params": [p for p in model.parameters() if p.requires_grad and id(p) not in scaled], "lr": lr})
    return [g for g in groups if g["params"]]


def _with_progress(steps, pending: list[dict]):
    """Run one epoch's ``steps`` (``EpochLoop.epoch_steps``); between batches, yield the progress
    records its hook collected, for the driver (``suite.distributed.progress``). Returns the
    epoch's numbers."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        while pending:
            yield {PROGRESS: pending.pop(0)}


@dataclass
class Training:
    """A training set up and ready for its first (or resumed) epoch."""

    job: TrainJob
    model: torch.nn.Module  # what the loop calls (DDP-wrapped under Ray Train)
    core: torch.nn.Module  # the model itself
    optimizer: torch.optim.Optimizer
    scheduler: object
    loop: EpochLoop
    loader: TensorBatches
    x_val: torch.Tensor
    y_val: torch.Tensor
    start_epoch: int  # 0, or the epoch after the checkpoint it resumed from
    resumed_meta: dict | None  # that checkpoint's epoch and metrics
    unreported: bool  # the driver may never have seen that checkpoint's metrics
    pending: list  # progress records made inside an epoch, sent between its batches


def fetch_inputs(inputs: dict) -> dict:
    """The worker's inputs (object refs, ``worker_config``) as arrays and tensors."""
    return {"split": ray.get(inputs["split"]), "extra": {k: ray.get(v) for k, v in inputs["extra"].items()},
            "init": {prefix: ray.get(ref) for prefix, ref in inputs["init"].items()}}


def setup(job: TrainJob, arrays: dict, session, channels_last: bool = False, bf16: bool = False) -> Training:
    """Build the model, optimizer, hooks and batches of ``job`` on ``session.device``, resumed
    from the session's newest checkpoint.

    The order is what makes a GPU resume work: the model reaches its device
    (``session.prepare_model``) *before* the optimizer is built and its saved state loaded,
    because ``Optimizer.load_state_dict`` puts momentum and Adam moments on the parameters'
    device at load time. Loaded into a CPU model, they would stay on the CPU, and the first
    step on the GPU would fail, at every retry (tests/test_gpu_placement.py)."""
    cfg, data = TrainConfig(**job.train), DataConfig(**job.data)
    rank, world, device = session.rank, session.world, session.device
    objective = make_objective(job.objective, job.kd)

    images, labels = (torch.from_numpy(np.array(a)) for a in arrays["split"])
    y = objective.targets(images, labels, arrays["extra"])
    val = torch.from_numpy(split_train_val(len(images), data.val_fraction, data.seed))
    x_tr, y_tr, x_val, y_val = images[~val], y[~val], images[val], y[val]

    model = create_model(job.model, **job.model_kwargs)
    _load_init(model, arrays["init"])
    for name in job.freeze:
        for p in getattr(model, name).parameters():
            p.requires_grad_(False)
    loader = TensorBatches(x_tr, y_tr, cfg.batch_size // world, drop_last=len(x_tr) > cfg.batch_size,
                           rank=rank, world=world, seed=data.seed, device=device)
    channels_last = channels_last and any(p.dim() == 4 for p in model.parameters())
    if channels_last:  # 17-33% faster conv training on CPU (benchmarks/overhead.py)
        model = model.to(memory_format=torch.channels_last)
    state, meta, unreported = session.resume(job)
    if state is not None:
        model.load_state_dict(state["model"])
    model = session.prepare_model(model)  # on its device (and DDP-wrapped) before the optimizer exists
    core = model.module if hasattr(model, "module") else model
    opt, sched = make_optimizer(_param_groups(core, job.lr_scale, cfg.lr), cfg, cfg.epochs * len(loader))
    if state is not None:  # now the saved moments land on the parameters' device
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])

    hooks = []
    if float(job.prune.get("ratio", 0.0)) > 0:
        hooks.append(MagnitudePruning(prunable_weights(core, job.prune.get("prefixes")), float(job.prune["ratio"]), cfg.epochs))
    if job.share:  # snap to k shared values per layer; a resumed run finds them already shared
        assignments = cluster_weights(core, int(job.share["clusters"]))
        hooks.append(WeightSharing(prunable_weights(core), assignments))
    pending: list[dict] = []
    if job.progress and rank == 0:
        hooks.append(ProgressLines(cfg.epochs, job.progress_every_s, pending.append))
    loop = EpochLoop(model, objective, cfg, opt, sched, device, flip=INFO[data.dataset].channels == 3, frozen=list(job.freeze),
                     hooks=hooks, world=world, channels_last=channels_last, bf16=bf16)
    return Training(job, model, core, opt, sched, loop, loader, x_val, y_val,
                    meta["epoch"] + 1 if state is not None else 0, meta, unreported, pending)


def run_job(config: dict, session) -> Iterator[dict]:
    """Train one ``TrainJob``, resumable from its newest checkpoint; yields each epoch's
    metrics after its checkpoint is persisted (and, first, the metrics of a checkpoint it
    resumed from that may never have reached the driver), and between batches, progress
    records (``{PROGRESS: ...}``) for the driver's bars."""
    started = time.time()
    job = TrainJob(**config["job"])
    cfg, data = TrainConfig(**job.train), DataConfig(**job.data)
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    torch.manual_seed(data.seed)
    t = setup(job, fetch_inputs(config["inputs"]), session, channels_last=bool(config.get("channels_last")),
              bf16=config.get("precision") == "bf16")
    if t.unreported and session.rank == 0:
        session.replay(t.resumed_meta["metrics"])
        yield t.resumed_meta["metrics"]
    objective, device = t.loop.objective, session.device

    # Where a training's time goes outside its epochs (benchmarks/overhead.py reads these;
    # keys starting with "_" are timestamps, not logged to MLflow).
    timing = {"_started_at": started, "setup_seconds": time.time() - started, "report_seconds": 0.0}
    for epoch in range(t.start_epoch, cfg.epochs):
        t.loader.set_epoch(epoch)
        metrics = yield from _with_progress(t.loop.epoch_steps(t.loader, epoch), t.pending)
        metrics["started_at_epoch"] = t.start_epoch  # >0 when this worker (group) resumed from a checkpoint
        t_eval = time.perf_counter()
        metrics.update(evaluate(objective, t.core, t.x_val, t.y_val, device, channels_last=t.loop.channels_last))
        metrics.update(timing, eval_seconds=time.perf_counter() - t_eval, _epoch_done_at=time.time())
        if session.rank == 0:  # to the worker's log file (the driver prints its own line; `caenet -v` shows this one)
            # Not print(): Ray Train patches it to also log, which shows every line twice.
            sys.stdout.write(epoch_line(job.label, cfg.epochs, metrics) + "\n")
            sys.stdout.flush()
        t_report = time.perf_counter()
        session.report(metrics, lambda folder: checkpoints.write(folder, t.core.state_dict(), t.optimizer.state_dict(),
                                                                  t.scheduler.state_dict(), epoch, metrics))
        timing["report_seconds"] += time.perf_counter() - t_report  # this one is in the next epoch's numbers
        yield metrics


# ---------------------------------------------------------------------------- Ray Train


class RayTrainSession:
    """A Ray Train worker: DDP, the distributed sampler, and Ray Train's checkpoint registry."""

    def __init__(self, epoch_relay=None):
        # deferred here and below: ray.train takes 1.2 s to import, and a one-worker training
        # (a warm Ray task, TaskSession) never needs it
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
    session = RayTrainSession(config.get("relay"))
    for item in run_job(config, session):
        if PROGRESS in item and session.relay is not None:
            session.relay.send(item)


# ---------------------------------------------------------------------------- one worker, a Ray task


class TaskSession:
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
    yield from run_job(config, TaskSession(store.join(config["job"]["storage_path"], config["attempt"])))


"""Every training of the suite runs through Ray Train (``TorchTrainer``); this is the thin wrapper.

``fit(job)`` runs a ``TrainJob`` on a ``ScalingConfig`` built from the runtime config (CPU
workers here, GPU workers where the cluster has them), data-parallel with a distributed
sampler, a checkpoint every epoch and ``FailureConfig`` restarts that resume from the last
checkpoint. A driver that crashed mid-training resumes too: the loop starts from the newest
checkpoint any attempt left in the job's storage (``runtime.storage``).

The driver owns all state: it reads the training split, the targets, the teacher's logits
and the initial weights, and hands them to the workers through Ray's object store; the
workers hand back weights through the checkpoints in storage, and the driver alone writes
the stage cache and MLflow (``suite.distributed.relay``). So a worker on a node that sees
none of the driver's files trains the same as one beside it.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import threading
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from suite.config import DataConfig, RuntimeConfig, TrainConfig
from suite.distributed import relay
from suite.distributed import storage as store
from suite.training import checkpoints
from suite.training.job import TrainingError, TrainJob
from suite.training.loop import EpochLoop, MagnitudePruning, ProgressLines, WeightSharing, evaluate, make_optimizer
from suite.training.objectives import make_objective

__all__ = ["NeedsTraining", "TrainJob", "TrainingError", "finish_only", "fit", "scaling_config", "worker_config"]


# ---------------------------------------------------------------------------- driver: inputs


_split_refs: dict[tuple, object] = {}  # (Ray session, data config) -> object ref of the training split
_split_lock = threading.Lock()


def _split_ref(data: dict):
    """The training split as (uint8 images, labels) numpy arrays in the object store, put once
    per Ray session and shared by every training that reads the same data."""
    import ray

    from suite.data import load_split
    from suite.distributed.session import session_key

    key = (session_key(), json.dumps({k: v for k, v in data.items() if k not in ("root", "download")}, sort_keys=True))
    with _split_lock:
        if key not in _split_refs:
            ds = load_split(DataConfig(**data), "train")
            _split_refs[key] = ray.put((ds.images.numpy(), ds.labels.numpy()))
        return _split_refs[key]


def forget_inputs() -> None:
    """Drop the object refs of the Ray session that is ending."""
    with _split_lock:
        _split_refs.clear()


def _inputs(job: TrainJob) -> dict:
    """Everything a worker reads, as object refs: nothing names a file on the driver's disk."""
    import ray

    inputs = {"split": _split_ref(job.data), "extra": {}, "init": {}}
    if job.targets_path:
        inputs["extra"]["targets"] = ray.put(np.load(job.targets_path))
    if job.teacher_logits_path:
        inputs["extra"]["teacher_logits"] = ray.put(np.load(job.teacher_logits_path))
    for prefix, path in job.init_from.items():
        inputs["init"][prefix] = ray.put(store.load_tensors(str(path)))
    return inputs


# ---------------------------------------------------------------------------- worker side


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


def _quiet_report_lines() -> None:
    """Ray Train 2.60 logs every report at INFO ("Reporting training result ...") on a logger
    named by its file path, which ``LoggingConfig`` does not reach; the epoch lines say it better."""
    import logging

    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:  # a later Ray moved it: the lines come back, nothing breaks
        pass


def _resume_state(job: TrainJob) -> tuple[dict | None, dict | None, bool]:
    """The newest checkpoint (tensors, meta) and whether its report went unseen.

    The one the controller registered (after a worker restart), or a newer one in storage:
    from an earlier, interrupted attempt (driver crash, Ctrl-C), or one this attempt
    persisted just before its worker died, whose report the controller never saw. Ray V2
    deprecates resume_from_checkpoint, so the loop looks for itself."""
    import ray.train

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


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train worker function: one TrainJob, resumable from the last checkpoint."""
    import ray
    import ray.train
    import ray.train.torch
    from torch.utils.data import DataLoader, TensorDataset

    from suite.compression import prunable_weights
    from suite.compression.sharing import cluster_weights
    from suite.data import INFO, split_train_val
    from suite.models import create_model

    _quiet_report_lines()
    job, inputs = TrainJob(**config["job"]), config["inputs"]
    cfg, data = TrainConfig(**job.train), DataConfig(**job.data)
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    torch.manual_seed(data.seed)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    objective = make_objective(job.objective, job.kd)

    images, labels = (torch.from_numpy(np.array(a)) for a in ray.get(inputs["split"]))
    y = objective.targets(images, labels, {k: ray.get(v) for k, v in inputs["extra"].items()})
    val = torch.from_numpy(split_train_val(len(images), data.val_fraction, data.seed))
    x_tr, y_tr, x_val, y_val = images[~val], y[~val], images[val], y[val]

    model = create_model(job.model, **job.model_kwargs)
    _load_init(model, {prefix: ray.get(ref) for prefix, ref in inputs["init"].items()})
    for name in job.freeze:
        for p in getattr(model, name).parameters():
            p.requires_grad_(False)
    loader = DataLoader(TensorDataset(x_tr, y_tr), batch_size=max(1, cfg.batch_size // world), shuffle=True,
                        drop_last=len(x_tr) > cfg.batch_size)
    loader = ray.train.torch.prepare_data_loader(loader)
    opt, sched = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, cfg.epochs * len(loader))
    state, meta, unreported = _resume_state(job)
    start_epoch = 0
    if unreported and rank == 0 and config.get("relay") is not None:
        config["relay"].send(meta["metrics"])
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch = meta["epoch"] + 1
    model = ray.train.torch.prepare_model(model)
    core = model.module if hasattr(model, "module") else model

    hooks = []
    if float(job.prune.get("ratio", 0.0)) > 0:
        hooks.append(MagnitudePruning(prunable_weights(core, job.prune.get("prefixes")), float(job.prune["ratio"]), cfg.epochs))
    if job.share:  # snap to k shared values per layer; a resumed run finds them already shared
        assignments = cluster_weights(core, int(job.share["clusters"]))
        hooks.append(WeightSharing(prunable_weights(core), assignments))
    if job.progress and rank == 0:
        hooks.append(ProgressLines(job.name, cfg.epochs, job.progress_every_s))
    loop = EpochLoop(model, objective, cfg, opt, sched, device, flip=INFO[data.dataset].channels == 3, frozen=list(job.freeze),
                     hooks=hooks, world=world)

    for epoch in range(start_epoch, cfg.epochs):
        if world > 1 and hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        metrics = loop.run_epoch(loader, epoch)
        metrics["started_at_epoch"] = start_epoch  # >0 when this worker group resumed from a checkpoint
        metrics.update(evaluate(objective, core, x_val, y_val, device))
        if rank == 0:
            shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("epoch", "epoch_seconds", "started_at_epoch"))
            # Not print(): Ray Train patches it to also log, which shows every line twice.
            sys.stdout.write(f"[{job.name}] epoch {epoch + 1}/{cfg.epochs}  {shown}  ({metrics['epoch_seconds']:.1f}s)\n")
            sys.stdout.flush()
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                checkpoints.write(Path(tmp), core.state_dict(), opt.state_dict(), sched.state_dict(), epoch, metrics)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


# ---------------------------------------------------------------------------- driver side


def scaling_config(runtime: RuntimeConfig):
    import ray
    from ray.train import ScalingConfig

    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    # auto: on GPUs when the cluster has enough for every worker (an autoscaling cluster
    # with none up yet needs use_gpu: yes to ask for them), else on CPUs.
    use_gpu = runtime.use_gpu == "yes" or (runtime.use_gpu == "auto" and gpus >= runtime.workers * runtime.gpus_per_worker)
    resources = {"CPU": runtime.cpus_per_worker, **({"GPU": runtime.gpus_per_worker} if use_gpu else {})}
    return ScalingConfig(num_workers=runtime.workers, use_gpu=use_gpu, resources_per_worker=resources)


def worker_config(job: TrainJob, runtime: RuntimeConfig, epoch_relay=None) -> dict:
    """What the workers get: the job without any of the driver's paths (the storage aside,
    which every node reaches), its inputs as object refs, and the relay for resumed epochs."""
    for_workers = replace(job, targets_path=None, teacher_logits_path=None, init_from={}, mlflow_uri=None,
                          data={**job.data, "root": None})
    return {"job": asdict(for_workers), "inputs": _inputs(job), "threads": runtime.threads(), "relay": epoch_relay}


def _attempts(storage: str) -> int:
    import pyarrow.fs as pafs

    fs, path = store.open_fs(storage)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    return sum(1 for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("attempt-"))


def fit(job: TrainJob, runtime: RuntimeConfig, output: Path, callbacks: list | None = None) -> dict:
    """Train ``job`` through Ray Train; save the final weights to ``output``; return last metrics.

    ``callbacks``: Ray Train callbacks, e.g. Tune's ``TuneReportCallback`` inside a sweep trial.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    storage = job.storage_path if store.is_uri(job.storage_path) else str(Path(job.storage_path).resolve())
    job = TrainJob(**{**asdict(job), "storage_path": storage})
    latest, resume_epoch = checkpoints.latest(storage)  # the loop resumes from it; reported below
    epochs = TrainConfig(**job.train).epochs
    if latest is not None and resume_epoch + 1 >= epochs:
        # Every epoch is already checkpointed (the process died, or Tune stopped the trial,
        # after the last report): finish from the checkpoint without starting workers.
        return _finish(latest, output, resume_epoch)
    if _FINISH_ONLY.is_set():
        raise NeedsTraining(f"training '{job.name}' stopped at epoch {resume_epoch + 1} of {epochs}")
    logging_to = [relay.callback(job.mlflow_uri, job.mlflow_run_id)] if job.mlflow_uri and job.mlflow_run_id else []
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=worker_config(job, runtime, logging_to[0] if logging_to else None),
        scaling_config=scaling_config(runtime),
        run_config=RunConfig(
            name=f"attempt-{_attempts(storage)}",
            storage_path=storage,
            failure_config=FailureConfig(max_failures=runtime.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level="WARNING"),  # the epoch lines say what matters
            callbacks=[*logging_to, *(callbacks or [])] or None,
        ),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        cause = exc.__cause__ or exc
        lines = [l for l in str(cause).splitlines() if l.strip()]
        raise TrainingError(f"training '{job.name}' failed after {runtime.max_failures} retries: {lines[-1] if lines else cause!r}") from None
    if result.checkpoint is None:
        raise TrainingError(f"training '{job.name}' reported no checkpoint")
    with result.checkpoint.as_directory() as d:
        metrics = _finish(d, output, resume_epoch)
    if logging_to:
        relay.wait_for(job.mlflow_run_id, int(metrics.get("epoch", 0)))
    return metrics


def _finish(checkpoint: str, output: Path, resume_epoch: int) -> dict:
    """Save a checkpoint's weights as the training's output; return its metrics."""
    state, meta = checkpoints.read(str(checkpoint))
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state["model"], output)
    metrics = dict(meta["metrics"])
    metrics["resumed_at_epoch"] = resume_epoch + 1  # 0: trained from scratch
    return metrics


class NeedsTraining(TrainingError):
    """Raised under ``finish_only()`` by a training that has epochs left to run."""

    nothing_done = True  # the stage runner drops the run it opened for it


# A process-wide switch, not a ContextVar: the pipeline runs stages in a thread pool, and
# pool threads do not inherit context variables.
_FINISH_ONLY = threading.Event()


@contextlib.contextmanager
def finish_only():
    """Within this block ``fit`` only completes trainings whose every epoch is checkpointed
    and raises ``NeedsTraining`` for the rest (the sweep driver recovering trials that Tune
    stopped right after their last epoch)."""
    _FINISH_ONLY.set()
    try:
        yield
    finally:
        _FINISH_ONLY.clear()


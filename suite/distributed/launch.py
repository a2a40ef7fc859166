"""Every training of the suite runs on Ray through ``fit(job)``; this is the driver side.

``fit`` runs a ``TrainJob`` on the resources the runtime config names (CPU workers here, GPU
workers where the cluster has them), with a checkpoint every epoch and restarts that resume
from the last one. A driver that crashed mid-training resumes too: the worker starts from the
newest checkpoint any attempt left in the job's storage (``runtime.storage``).

Two engines run the same worker code (``suite.distributed.worker``):

- more than one worker (or ``runtime.trainer: ray-train``): Ray Train's ``TorchTrainer``,
  data-parallel with a distributed sampler, ``FailureConfig`` restarts;
- one worker (the default): a Ray task on a warm worker process, retried here up to
  ``runtime.max_failures`` times from the last checkpoint. It skips Ray Train's ~15 s of
  start-up and tear-down per training (``benchmarks/overhead.py``) and keeps what matters:
  the same checkpoints in the same storage, the same resume, every epoch in MLflow once.

The driver owns all state: it reads the training split, the targets, the teacher's logits
and the initial weights, and hands them to the workers through Ray's object store; the
workers hand back weights through the checkpoints in storage, and the driver alone writes
the stage cache and MLflow (``suite.distributed.relay``). So a worker on a node that sees
none of the driver's files trains the same as one beside it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import ray
import torch
from ray.exceptions import RayError, RayTaskError

from suite import storage as store
from suite.config import DataConfig, RuntimeConfig
from suite.data import load_split, split_train_val
from suite.distributed import progress, relay
from suite.distributed.ray_runtime import ensure_ray, on_close, session_key, use_gpu
from suite.distributed.worker import train_loop_per_worker, train_task
from suite.errors import INTERRUPTED, UserError, last_line, no_space, storage_gone
from suite.training import checkpoints
from suite.training import fit as recipe
from suite.training.job import TrainingError, TrainJob
from suite.training.reports import PROGRESS

__all__ = ["NeedsTraining", "finish_only", "fit", "scaling_config", "task_options", "train_task_remote", "use_gpu",
           "worker_config"]


# ---------------------------------------------------------------------------- driver: inputs


_split_refs: dict[tuple, object] = {}  # (Ray session, data config) -> object ref of the training split
_split_lock = threading.Lock()


def _split_ref(data: DataConfig):
    """The training split as (uint8 images, labels) numpy arrays in the object store, put once
    per Ray session and shared by every training that reads the same data."""
    key = (session_key(), json.dumps(data.model_dump(exclude={"root", "download"}), sort_keys=True))
    with _split_lock:
        if key not in _split_refs:
            ds = load_split(data, "train")
            _split_refs[key] = ray.put((ds.images.numpy(), ds.labels.numpy()))
        return _split_refs[key]


def forget_inputs() -> None:
    """Drop the object refs of the Ray session that is ending."""
    with _split_lock:
        _split_refs.clear()


on_close(forget_inputs)


def _inputs(job: TrainJob) -> dict:
    """Everything a worker reads, as object refs: nothing names a file on the driver's disk."""
    inputs = {"split": _split_ref(job.data), "extra": {}, "init": {}}
    if job.targets_path:
        inputs["extra"]["targets"] = ray.put(np.load(job.targets_path))
    if job.teacher_logits_path:
        inputs["extra"]["teacher_logits"] = ray.put(np.load(job.teacher_logits_path))
    for prefix, path in job.init_from.items():
        inputs["init"][prefix] = ray.put(store.load_tensors(str(path)))
    return inputs


# ---------------------------------------------------------------------------- driver side


def scaling_config(runtime: RuntimeConfig, gpu: bool):
    """Ray Train's ScalingConfig for ``runtime``: CPU workers, or (``gpu``) one GPU share per worker."""
    from ray.train import ScalingConfig  # deferred (here and below): ray.train takes 1.2 s to import

    per_worker = {"CPU": runtime.cpus_per_worker, **({"GPU": runtime.gpus_per_worker} if gpu else {})}
    return ScalingConfig(num_workers=runtime.workers, use_gpu=gpu, resources_per_worker=per_worker)


def task_options(job: TrainJob, runtime: RuntimeConfig, gpu: bool) -> dict:
    """The Ray options of a one-worker training's task (``train_task_remote(gpu)`` runs it)."""
    return {"name": f"train:{job.name}", "num_cpus": runtime.cpus_per_worker, "num_gpus": runtime.gpus_per_worker if gpu else 0,
            "num_returns": "streaming", "max_retries": 0,  # retried by _fit_task, from the newest checkpoint
            "scheduling_strategy": "DEFAULT"}  # inside a Tune trial: not the trial's placement group


def worker_config(job: TrainJob, runtime: RuntimeConfig, epoch_relay=None) -> dict:
    """What the workers get: the job without any of the driver's paths (the storage aside,
    which every node reaches), its inputs as object refs, and the relay for resumed epochs."""
    for_workers = replace(job, targets_path=None, teacher_logits_path=None, init_from={}, mlflow_uri=None,
                          data=job.data.model_copy(update={"root": None}))
    return {"job": for_workers, "inputs": _inputs(job), "threads": runtime.threads(),
            "channels_last": runtime.channels_last, "precision": runtime.precision, "relay": epoch_relay}


def _attempts(storage: str) -> int:
    fs, path = store.open_fs(storage)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    return sum(1 for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("attempt-"))


def uses_ray_train(runtime: RuntimeConfig) -> bool:
    """Ray Train for data-parallel trainings (or when asked); a warm Ray task for one worker."""
    return runtime.workers > 1 or runtime.trainer == "ray-train"


def fit(job: TrainJob, runtime: RuntimeConfig, output: Path, report_to_tune: bool = False) -> dict:
    """Train ``job``; save the final weights to ``output``; return the last epoch's metrics.

    ``report_to_tune``: inside a Ray Tune trial, each epoch's metrics also go to Tune (so a
    scheduler such as ASHA can stop a trial that trails).
    """
    storage = job.storage_path if store.is_uri(job.storage_path) else str(Path(job.storage_path).resolve())
    job = replace(job, storage_path=storage, progress_every_s=progress.every_s(job.progress_every_s))
    if job.train.min_steps:  # a length in optimizer steps: the epochs it takes on this data, for every worker
        n = len(load_split(job.data, "train"))
        n_train = n - int(split_train_val(n, job.data.val_fraction, job.data.seed).sum())
        job = replace(job, train=job.train.model_copy(update={"epochs": recipe.epochs_for(job.train, n_train)}))
    latest, resume_epoch = checkpoints.latest(storage)  # the worker resumes from it; reported below
    epochs = job.train.epochs
    if latest is not None and (resume_epoch + 1 >= epochs or checkpoints.read_meta(latest)["metrics"].get("stopped_early")):
        # Every epoch is already checkpointed (the process died, or Tune stopped the trial,
        # after the last report), or early stopping ended it: finish from the checkpoint
        # without starting workers.
        return _finish(checkpoints.read(latest), output, resume_epoch)
    if _FINISH_ONLY.is_set():
        raise NeedsTraining(f"training '{job.name}' stopped at epoch {resume_epoch + 1} of {epochs}")
    ensure_ray()
    try:
        if uses_ray_train(runtime):
            last = _fit_ray_train(job, runtime, storage, report_to_tune)
        else:
            last = _fit_task(job, runtime, storage, report_to_tune)
        metrics = _finish(last, output, resume_epoch)
        if uses_ray_train(runtime):
            relay.wait_for(job.label, job.mlflow_run_id, int(metrics.get("epoch", 0)))
    finally:
        progress.display.done(job.label)
    return metrics


def _fit_ray_train(job: TrainJob, runtime: RuntimeConfig, storage: str, report_to_tune: bool) -> tuple[dict, dict]:
    """Run ``job`` on Ray Train; its last checkpoint (tensors, meta)."""
    from ray.train import (  # deferred: ray.train takes 1.2 s to import
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        TrainingFailedError,
    )
    from ray.train.torch import TorchTrainer  # deferred: ray.train takes 1.2 s to import

    epoch_relay = relay.callback(job.mlflow_uri, job.mlflow_run_id, job.label, job.train.epochs)
    callbacks = [epoch_relay]
    if report_to_tune:
        from ray.tune.integration.ray_train import TuneReportCallback  # deferred: sweep trials only

        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=worker_config(job, runtime, epoch_relay),
        scaling_config=scaling_config(runtime, use_gpu(runtime)),
        run_config=RunConfig(
            name=f"attempt-{_attempts(storage)}",
            storage_path=storage,
            failure_config=FailureConfig(max_failures=runtime.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level="WARNING"),  # the epoch lines say what matters
            callbacks=callbacks or None,
        ),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        raise TrainingError(f"training '{job.name}' failed after {runtime.max_failures} retries: "
                            f"{last_line(exc.__cause__ or exc)}") from None
    if result.checkpoint is None:
        raise TrainingError(f"training '{job.name}' reported no checkpoint")
    with result.checkpoint.as_directory() as folder:
        return checkpoints.read(folder)


@functools.cache
def train_task_remote(gpu: bool):
    """``train_task`` as a Ray remote function, made once (each ``ray.remote`` exports anew).

    On a GPU, ``max_calls=1``: one training, one process. Ray's one-call default for GPU tasks
    holds only for ``ray.remote(num_gpus=...)``, not for GPUs given in ``.options()`` (which
    cannot set ``max_calls``), so a warm process would keep its CUDA context (memory on a GPU
    Ray counts as free) and, on a node with several GPUs, stay on the GPU it first saw when Ray
    hands it another. CPU trainings keep their warm processes (torch imported, ~2 s saved)."""
    return ray.remote(max_calls=1)(train_task) if gpu else ray.remote(train_task)


def _imported() -> int:
    """A task that only makes its worker process import what a training needs: this module,
    and with it torch, the models and the epoch loop."""
    return 1


def warm_workers(runtime: RuntimeConfig) -> int:
    """Start the processes one-worker CPU trainings run in (as many as fit side by side) before
    anything is timed, so that a timing study's first cell does not pay their start-up (Ray
    keeps idle workers for later tasks); returns how many. Ray Train and GPU trainings start
    fresh processes per training, which is part of their cost: nothing to warm."""
    if uses_ray_train(runtime) or use_gpu(runtime):
        return 0
    ensure_ray()
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // runtime.cpus_per_worker))
    return sum(ray.get([ray.remote(num_cpus=runtime.cpus_per_worker)(_imported).remote() for _ in range(min(slots, 16))]))


def _fit_task(job: TrainJob, runtime: RuntimeConfig, storage: str, report_to_tune: bool) -> tuple[dict, dict]:
    """Run ``job`` as one Ray task on a warm worker process; retry up to ``max_failures``
    times, each retry resuming from the newest checkpoint. Each epoch's metrics stream back
    as the task yields them and are logged here, each epoch once (a retry repeats the epoch
    it resumed from; one the driver already logged is dropped)."""
    gpu = use_gpu(runtime)
    task = train_task_remote(gpu).options(**task_options(job, runtime, gpu))
    config = {**worker_config(job, runtime), "attempt": f"attempt-{_attempts(storage)}"}
    log = relay.EpochLogger(job.mlflow_uri, job.mlflow_run_id) if job.mlflow_uri and job.mlflow_run_id else None
    epochs = job.train.epochs
    if report_to_tune:
        from ray import tune  # deferred: ~0.8 s to import, and only sweep trials report to Tune
    logged, failures = 0, 0
    while True:
        stream = task.remote(config)
        try:
            for ref in stream:
                metrics = ray.get(ref)
                if PROGRESS in metrics:  # inside an epoch: a bar (or a line) here
                    progress.display.progress(job.label, metrics[PROGRESS])
                    continue
                epoch = int(metrics.get("epoch", 0))
                if epoch <= logged:
                    continue
                progress.display.epoch(job.label, epochs, metrics)
                if log is not None:
                    log(metrics)
                if report_to_tune:
                    tune.report(metrics)
                logged = epoch
            break
        except RayTaskError as exc:
            if isinstance(exc.cause, UserError):  # a mistake a retry cannot fix (e.g. weights that do not fit)
                raise TrainingError(f"training '{job.name}' failed: {exc.cause}") from None
            if line := no_space(exc) or storage_gone(exc, storage, runtime.storage):  # a full disk, a storage gone: no retry helps
                raise TrainingError(f"training '{job.name}' failed: {line}") from None
            failure = last_line(exc.cause or exc)
        except RayError as exc:  # the worker process or its node died
            failure = last_line(exc)
        if INTERRUPTED.is_set():  # Ctrl-C or `ray job stop`: Ray is going down, nothing to retry on
            raise TrainingError(f"training '{job.name}' interrupted; its last checkpoint is kept")
        failures += 1
        if failures > runtime.max_failures:
            raise TrainingError(f"training '{job.name}' failed after {runtime.max_failures} retries: {failure}")
        print(f"[{job.name}] worker lost ({failure[:160]}); retry {failures}/{runtime.max_failures} from the last checkpoint")
    if log is not None and not log.flush():  # epochs the store missed while down: one last try
        print(f"[{job.name}] MLflow still does not answer: the epoch curves of this training are incomplete there")
    folder, _ = checkpoints.latest(storage)
    if folder is None:
        raise TrainingError(f"training '{job.name}' reported no checkpoint")
    return checkpoints.read(folder)


def _finish(checkpoint: tuple[dict, dict], output: Path, resume_epoch: int) -> dict:
    """Save a checkpoint's weights as the training's output; return its metrics."""
    state, meta = checkpoint
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state["model"], output)
    metrics = {k: v for k, v in meta["metrics"].items() if not k.startswith("_")}  # "_": timestamps for benchmarks
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


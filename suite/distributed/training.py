"""Every training of the suite runs through Ray Train (``TorchTrainer``).

A ``TrainJob`` describes one training (model, data, objective, schedule); ``fit(job)`` runs it
on a ``ScalingConfig`` built from the runtime config (CPU workers here, GPU workers where the
cluster has them), data-parallel with a distributed sampler, a checkpoint every epoch and
``FailureConfig`` restarts that resume from the last checkpoint. A driver that crashed
mid-training resumes too: the loop starts from the newest checkpoint any attempt left in the
job's storage folder.

Objectives:
  classify     cross-entropy on labels
  kd           Hinton knowledge distillation on the teacher's precomputed logits
  reconstruct  MSE between the model's output and each image's target image
  branchy      the sum of every exit's cross-entropy (BranchyNet's joint training)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.config import DataConfig, KDConfig, RuntimeConfig, TrainConfig


class TrainingError(RuntimeError):
    """A training that failed after its retries; the message is one line."""


@dataclass
class TrainJob:
    name: str
    model: str
    model_kwargs: dict
    data: dict  # DataConfig as a dict (plain data travels to workers cleanly)
    train: dict  # TrainConfig as a dict
    objective: str = "classify"  # classify | kd | reconstruct | branchy
    targets_path: str | None = None  # .npy of target indices (reconstruct)
    teacher_logits_path: str | None = None  # .npy of teacher logits over the training images (kd)
    kd: dict = field(default_factory=lambda: KDConfig().model_dump())
    init_from: dict = field(default_factory=dict)  # {"encoder": "/path/model.pt"}: load those weights ("" = whole model)
    freeze: list = field(default_factory=list)  # submodule names kept fixed (and in eval mode)
    # Magnitude pruning while training: {"ratio": final sparsity, "prefixes": [submodules] or None}
    prune: dict = field(default_factory=dict)
    # Weight sharing while fine-tuning (Deep Compression): {"clusters": k} per conv/linear layer
    share: dict = field(default_factory=dict)
    storage_path: str = ""  # where Ray Train keeps this job's checkpoints
    mlflow_uri: str | None = None
    mlflow_run_id: str | None = None
    progress: bool = True
    progress_every_s: float = 20.0  # a progress line inside an epoch at most this often (runtime.progress_every_s)


# ---------------------------------------------------------------------------- worker side


def _split_tensors(job: TrainJob):
    """(train x, train y, val x, val y) as uint8 images / label or target tensors."""
    from suite.data import load_split, split_train_val

    cfg = DataConfig(**job.data)
    ds = load_split(cfg, "train")
    val_mask = torch.from_numpy(split_train_val(len(ds), cfg.val_fraction, cfg.seed))
    if job.objective == "reconstruct":
        targets = torch.from_numpy(np.load(job.targets_path)).long()
        y = ds.images[targets]
    elif job.objective == "kd":
        logits = torch.from_numpy(np.load(job.teacher_logits_path)).float()
        y = torch.cat([ds.labels[:, None].float(), logits], 1)  # column 0: hard label
    else:
        y = ds.labels
    return ds.images[~val_mask], y[~val_mask], ds.images[val_mask], y[val_mask], ds.info


def _loss(job: TrainJob, out: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    if job.objective == "reconstruct":
        return F.mse_loss(out, y.float() / 255.0)
    if job.objective == "branchy":  # out: [exits, batch, classes] in training, [batch, classes] in eval
        outs = out if out.dim() == 3 else out[None]
        return sum(F.cross_entropy(o, y, label_smoothing=smoothing) for o in outs)
    if job.objective == "kd":
        labels, teacher = y[:, 0].long(), y[:, 1:]
        t, alpha = job.kd["temperature"], job.kd["alpha"]
        soft = F.kl_div(F.log_softmax(out / t, 1), F.softmax(teacher / t, 1), reduction="batchmean") * t * t
        return alpha * soft + (1 - alpha) * F.cross_entropy(out, labels, label_smoothing=smoothing)
    return F.cross_entropy(out, y, label_smoothing=smoothing)


def _load_init(model: nn.Module, init_from: dict) -> None:
    for prefix, path in init_from.items():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if prefix == "":  # the whole model; buffers it adds to its base (SubFlow's ranking) start fresh
            missing, unexpected = model.load_state_dict(state, strict=False)
            params = dict(model.named_parameters())
            if unexpected or any(k in params for k in missing):
                raise TrainingError(f"{path}: does not fit model (missing {missing[:3]}, unexpected {unexpected[:3]})")
            continue
        sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
        if not sub:
            raise TrainingError(f"{path}: holds no '{prefix}.*' weights to initialise from")
        getattr(model, prefix).load_state_dict(sub)


def _optimizer(params, cfg: TrainConfig, steps: int):
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1), pct_start=0.25)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


def _evaluate(job: TrainJob, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device, batch: int = 512) -> dict:
    if len(x) == 0:
        return {}
    model.eval()
    total, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb, yb = x[i : i + batch].to(device).float() / 255.0, y[i : i + batch].to(device)
            out = model(xb)
            total += float(_loss(job, out, yb, 0.0)) * len(xb)
            if job.objective != "reconstruct":
                labels = yb[:, 0].long() if job.objective == "kd" else yb
                correct += int((out.argmax(1) == labels).sum())
            n += len(xb)
    metrics = {"val_loss": total / n}
    if job.objective != "reconstruct":
        metrics["val_acc"] = correct / n
    return metrics


def _mlflow_logger(job: TrainJob):
    if not (job.mlflow_uri and job.mlflow_run_id):
        return lambda metrics, step: None
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(job.mlflow_uri)

    def log(metrics: dict, step: int) -> None:
        now = int(time.time() * 1000)
        client.log_batch(job.mlflow_run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    return log


def _quiet_report_lines() -> None:
    """Ray Train 2.60 logs every report at INFO ("Reporting training result ...") on a logger
    named by its file path, which ``LoggingConfig`` does not reach; the epoch lines say it better."""
    import logging

    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:  # a later Ray moved it: the lines come back, nothing breaks
        pass


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train worker function: one TrainJob, resumable from the last checkpoint."""
    import ray.train
    import ray.train.torch
    from torch.utils.data import DataLoader, TensorDataset

    from suite.compression import apply_masks, magnitude_masks, prunable_weights, sparsity, sparsity_at
    from suite.compression.sharing import cluster_weights, share
    from suite.data import augment_batch
    from suite.models import create_model

    _quiet_report_lines()
    job = TrainJob(**config["job"])
    cfg = TrainConfig(**job.train)
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    torch.manual_seed(DataConfig(**job.data).seed)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()

    x_tr, y_tr, x_val, y_val, info = _split_tensors(job)
    model = create_model(job.model, **job.model_kwargs)
    _load_init(model, job.init_from)
    for name in job.freeze:
        for p in getattr(model, name).parameters():
            p.requires_grad_(False)
    loader = DataLoader(TensorDataset(x_tr, y_tr), batch_size=max(1, cfg.batch_size // world), shuffle=True, drop_last=len(x_tr) > cfg.batch_size)
    loader = ray.train.torch.prepare_data_loader(loader)
    steps_per_epoch = len(loader)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt, sched = _optimizer(trainable, cfg, cfg.epochs * steps_per_epoch)
    start_epoch, state = 0, None
    checkpoint = ray.train.get_checkpoint()  # the last one the controller registered, after a restart
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=False)
    # A newer checkpoint may sit in storage: one from an earlier, interrupted attempt (driver
    # crash, Ctrl-C), or one this attempt persisted just before its worker was killed and
    # before the controller saw the report. Ray V2 deprecates resume_from_checkpoint, so the
    # loop looks for itself.
    on_disk, disk_epoch = _latest_checkpoint(Path(job.storage_path))
    if on_disk is not None and disk_epoch > (state["epoch"] if state else -1):
        state = torch.load(on_disk / "state.pt", map_location="cpu", weights_only=False)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"] + 1
    resumed_epoch = start_epoch
    model = ray.train.torch.prepare_model(model)
    core = model.module if hasattr(model, "module") else model
    log = _mlflow_logger(job) if rank == 0 else (lambda metrics, step: None)
    prune_ratio = float(job.prune.get("ratio", 0.0))
    pruned = prunable_weights(core, job.prune.get("prefixes")) if prune_ratio > 0 else {}
    masks: dict = {}
    shared, assignments = {}, {}
    if job.share:  # snap to k shared values per layer; a resumed run finds them already shared
        assignments = cluster_weights(core, int(job.share["clusters"]))
        shared = prunable_weights(core)
    flip = info.channels == 3

    for epoch in range(start_epoch, cfg.epochs):
        if world > 1 and hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        if pruned:  # this epoch's sparsity; the masks hold through every step of the epoch
            masks = magnitude_masks(pruned, sparsity_at(epoch, cfg.epochs, prune_ratio))
            apply_masks(pruned, masks)
        model.train()
        for name in job.freeze:
            getattr(core, name).eval()
        t0, total, seen = time.perf_counter(), 0.0, 0
        # Progress inside long epochs: a line every progress_every_s from rank 0. (Ray's
        # tqdm_ray bars outlive workers that Ray Train tears down and get redrawn forever.)
        shown_at = t0
        for step, (xb, yb) in enumerate(loader, 1):
            xb = xb.float() / 255.0
            if cfg.augment:
                xb = augment_batch(xb, flip=flip)
            out = model(xb)
            loss = _loss(job, out, yb, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if masks:
                apply_masks(pruned, masks)
            if assignments:
                share(shared, assignments)
            sched.step()
            total += float(loss.detach()) * len(xb)
            seen += len(xb)
            if job.progress and rank == 0 and time.perf_counter() - shown_at >= job.progress_every_s and step < steps_per_epoch:
                shown_at = time.perf_counter()
                rate = seen * world / (shown_at - t0)
                eta = (steps_per_epoch - step) * (shown_at - t0) / step
                sys.stdout.write(f"[{job.name}] epoch {epoch + 1}/{cfg.epochs}: {step}/{steps_per_epoch} batches "
                                 f"({100 * step // steps_per_epoch}%), loss {total / seen:.4g}, {rate:.0f} img/s, "
                                 f"~{eta:.0f}s left in the epoch\n")
                sys.stdout.flush()
        metrics = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "epoch_seconds": time.perf_counter() - t0,
                   "images_per_second": seen * world / max(time.perf_counter() - t0, 1e-9),
                   # >0 when this worker group was restarted (or the driver resumed) from a checkpoint
                   "started_at_epoch": resumed_epoch}
        if pruned:
            metrics["weight_sparsity"] = sparsity(pruned)
        metrics.update(_evaluate(job, core, x_val, y_val, device))
        log({k: v for k, v in metrics.items() if k not in ("epoch", "started_at_epoch")}, epoch + 1)
        if rank == 0:
            shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("epoch", "epoch_seconds", "started_at_epoch"))
            # Not print(): Ray Train patches it to also log, which shows every line twice.
            sys.stdout.write(f"[{job.name}] epoch {epoch + 1}/{cfg.epochs}  {shown}  ({metrics['epoch_seconds']:.1f}s)\n")
            sys.stdout.flush()
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                torch.save({"model": core.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                            "epoch": epoch, "metrics": metrics}, Path(tmp) / "state.pt")
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


# ---------------------------------------------------------------------------- driver side


def _latest_checkpoint(storage: Path) -> tuple[Path | None, int]:
    """The newest epoch checkpoint that any earlier attempt of this job left behind, and its epoch."""
    best, best_epoch = None, -1
    for state in storage.glob("attempt-*/checkpoint_*/state.pt"):
        try:
            epoch = torch.load(state, map_location="cpu", weights_only=False)["epoch"]
        except Exception:
            continue  # a checkpoint cut off mid-write: skip it
        if epoch > best_epoch:
            best, best_epoch = state.parent, epoch
    return best, best_epoch


def scaling_config(runtime: RuntimeConfig):
    import ray
    from ray.train import ScalingConfig

    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    # auto: on GPUs when the cluster has enough for every worker (an autoscaling cluster
    # with none up yet needs use_gpu: yes to ask for them), else on CPUs.
    use_gpu = runtime.use_gpu == "yes" or (runtime.use_gpu == "auto" and gpus >= runtime.workers * runtime.gpus_per_worker)
    resources = {"CPU": runtime.cpus_per_worker, **({"GPU": runtime.gpus_per_worker} if use_gpu else {})}
    return ScalingConfig(num_workers=runtime.workers, use_gpu=use_gpu, resources_per_worker=resources)


def fit(job: TrainJob, runtime: RuntimeConfig, output: Path, callbacks: list | None = None) -> dict:
    """Train ``job`` through Ray Train; save the final weights to ``output``; return last metrics.

    ``callbacks``: Ray Train callbacks, e.g. Tune's ``TuneReportCallback`` inside a sweep trial.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    storage = Path(job.storage_path).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    attempt = len(list(storage.glob("attempt-*")))
    latest, resume_epoch = _latest_checkpoint(storage)  # the loop resumes from it; reported below
    epochs = TrainConfig(**job.train).epochs
    if latest is not None and resume_epoch + 1 >= epochs:
        # Every epoch is already checkpointed (the process died, or Tune stopped the trial,
        # after the last report): finish from the checkpoint without starting workers.
        return _finish(latest, output, resume_epoch)
    if _FINISH_ONLY.is_set():
        raise NeedsTraining(f"training '{job.name}' stopped at epoch {resume_epoch + 1} of {epochs}")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": asdict(job), "threads": runtime.threads()},
        scaling_config=scaling_config(runtime),
        run_config=RunConfig(
            name=f"attempt-{attempt}",
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=runtime.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level="WARNING"),  # the epoch lines say what matters
            callbacks=callbacks or None,
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
        return _finish(Path(d), output, resume_epoch)


def _finish(checkpoint: Path, output: Path, resume_epoch: int) -> dict:
    """Save a checkpoint's weights as the training's output; return its metrics."""
    state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state["model"], output)
    metrics = dict(state["metrics"])
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


def clean_storage(storage: str | os.PathLike) -> None:
    """Drop a finished job's checkpoints (the stage keeps its final weights)."""
    shutil.rmtree(storage, ignore_errors=True)

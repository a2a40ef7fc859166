"""The training recipe: one function, ``run``, trains one ``TrainJob`` on any engine.

It builds the model (initial weights, frozen parts, channels-last), the optimizer and
schedule, the job's hooks, the batches of this rank; resumes from the newest checkpoint;
runs the epochs (``EpochLoop``), evaluates on the held-out split after each, and has the
engine persist a checkpoint and report the epoch. An ``Engine`` is where that runs:
``suite.distributed.worker`` has two, a Ray Train worker (data-parallel, DDP) and a plain Ray
task (one worker); tests use a stand-in. Nothing here imports Ray.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np
import torch

from suite.data import INFO, split_train_val
from suite.models import create_model
from suite.training import checkpoints, convergence
from suite.training.batches import TensorBatches
from suite.training.job import TrainingError, TrainJob
from suite.training.loop import EpochLoop, ProgressLines, evaluate, make_optimizer
from suite.training.objectives import make_objective
from suite.training.reports import PROGRESS, epoch_line


class Engine(Protocol):
    """Where a training runs: its rank among ``world`` workers, its device, and how it resumes,
    places the model, and persists and reports an epoch."""

    rank: int
    world: int
    device: torch.device

    def resume(self, job: TrainJob) -> tuple[dict | None, dict | None, bool]:
        """The newest checkpoint's (tensors, meta), or (None, None), and whether the driver may
        not have seen its metrics."""

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on this engine's device (wrapped for data-parallel training where needed)."""

    def replay(self, metrics: dict) -> None:
        """Send a resumed checkpoint's metrics that the driver may have missed."""

    def report(self, metrics: dict, write_checkpoint: Callable) -> None:
        """Persist the epoch's checkpoint (``write_checkpoint(folder)``) and report ``metrics``."""


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
    resumed_rng: dict | None  # its random generators (None: none saved, or not resumed)
    resumed_best: dict | None  # its best epoch's weights so far (early stopping)
    unreported: bool  # the driver may never have seen that checkpoint's metrics
    pending: list  # progress records made inside an epoch, sent between its batches


def setup(job: TrainJob, arrays: dict, engine: Engine, channels_last: bool = False, bf16: bool = False) -> Training:
    """Build the model, optimizer, hooks and batches of ``job`` on ``engine.device``, resumed
    from the engine's newest checkpoint. ``arrays``: the training split (images, labels), the
    objective's extra arrays and initial weights by submodule (``suite.distributed.worker``).

    The order is what makes a GPU resume work: the model reaches its device
    (``engine.prepare_model``) *before* the optimizer is built and its saved state loaded,
    because ``Optimizer.load_state_dict`` puts momentum and Adam moments on the parameters'
    device at load time. Loaded into a CPU model, they would stay on the CPU, and the first
    step on the GPU would fail, at every retry (tests/test_gpu_placement.py)."""
    cfg, data = job.train, job.data
    rank, world, device = engine.rank, engine.world, engine.device
    objective = make_objective(job.objective, job.kd.model_dump())

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
    state, meta, unreported = engine.resume(job)
    if state is not None:
        model.load_state_dict(state["model"])
    model = engine.prepare_model(model)  # on its device (and DDP-wrapped) before the optimizer exists
    core = model.module if hasattr(model, "module") else model
    opt, sched = make_optimizer(_param_groups(core, job.lr_scale, cfg.lr), cfg, cfg.epochs * len(loader))
    if state is not None:  # now the saved moments land on the parameters' device
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])

    hooks = [spec.hook(core, cfg.epochs) for spec in job.hooks]
    pending: list[dict] = []
    if job.progress and rank == 0:
        hooks.append(ProgressLines(cfg.epochs, job.progress_every_s, pending.append))
    loop = EpochLoop(model, objective, cfg, opt, sched, device, flip=INFO[data.dataset].channels == 3, frozen=list(job.freeze),
                     hooks=hooks, world=world, channels_last=channels_last, bf16=bf16)
    return Training(job, model, core, opt, sched, loop, loader, x_val, y_val,
                    meta["epoch"] + 1 if state is not None else 0, meta, state.get("rng") if state is not None else None,
                    state.get("best_model") if state is not None else None, unreported, pending)


def run(job: TrainJob, arrays: dict, engine: Engine, threads: int = 1, channels_last: bool = False,
        bf16: bool = False) -> Iterator[dict]:
    """Train one ``TrainJob``, resumable from its newest checkpoint; yields each epoch's
    metrics after its checkpoint is persisted (and, first, the metrics of a checkpoint it
    resumed from that may never have reached the driver), and between batches, progress
    records (``{PROGRESS: ...}``) for the driver's bars."""
    started = time.time()
    cfg = job.train
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(job.data.seed)
    t = setup(job, arrays, engine, channels_last=channels_last, bf16=bf16)
    if t.unreported and engine.rank == 0:
        engine.replay(t.resumed_meta["metrics"])
        yield t.resumed_meta["metrics"]
    objective, device = t.loop.objective, engine.device
    if t.resumed_rng is not None:  # the generators where the checkpoint left them, not where setup left them
        checkpoints.restore_random_state(t.resumed_rng, engine.rank)

    # Where a training's time goes outside its epochs (benchmarks/overhead.py reads these;
    # keys starting with "_" are timestamps, not logged to MLflow).
    timing = {"_started_at": started, "setup_seconds": time.time() - started, "report_seconds": 0.0}
    # every epoch's headline numbers, through resumes (the checkpoint's metrics carry them): the convergence check's input
    history = list((t.resumed_meta or {}).get("metrics", {}).get("history", []))
    best = EarlyStop(cfg.patience, history, t.resumed_best, INFO[job.data.dataset].num_classes)
    for epoch in range(t.start_epoch, cfg.epochs):
        t.loader.set_epoch(epoch)
        metrics = yield from _with_progress(t.loop.epoch_steps(t.loader, epoch), t.pending)
        metrics["started_at_epoch"] = t.start_epoch  # >0 when this worker (group) resumed from a checkpoint
        if t.start_epoch:  # the stage's MLflow run and the run's summary say so
            metrics["resumed_from_epoch"] = t.start_epoch
        t_eval = time.perf_counter()
        metrics.update(evaluate(objective, t.core, t.x_val, t.y_val, device, channels_last=t.loop.channels_last))
        metrics.update(timing, eval_seconds=time.perf_counter() - t_eval, _epoch_done_at=time.time())
        history.append({k: metrics[k] for k in ("train_loss", "val_acc", "val_loss") if k in metrics})
        metrics["history"] = list(history)
        stop = best.update(epoch, metrics, t.core)
        last = stop or epoch == cfg.epochs - 1
        weights = t.core.state_dict()
        if last and best.state is not None:  # the result is the best epoch's weights
            weights = best.finish(metrics, stop)
        if last:  # did it learn? (suite.training.convergence)
            judged = history[: best.epoch + 1] if best.state is not None else history  # the kept epoch's
            found = convergence.problems(judged, INFO[job.data.dataset].num_classes, job.epochs_key, stopped_early=stop)
            metrics["converged"] = 0.0 if found else 1.0
            if found:
                metrics["convergence"] = "; ".join(found)
        if engine.rank == 0:  # to the worker's log file (the driver prints its own line; `caenet -v` shows this one)
            # Not print(): Ray Train patches it to also log, which shows every line twice.
            sys.stdout.write(epoch_line(job.label, cfg.epochs, metrics) + "\n")
            sys.stdout.flush()
        t_report = time.perf_counter()
        rng = _every_rank(checkpoints.random_state(), engine.world)  # before anything else draws: the next epoch starts here
        engine.report(metrics, lambda folder: checkpoints.write(folder, weights, t.optimizer.state_dict(),
                                                                  t.scheduler.state_dict(), epoch, metrics, rng,
                                                                  best=None if last else best.state))
        timing["report_seconds"] += time.perf_counter() - t_report  # this one is in the next epoch's numbers
        yield metrics
        if stop:
            return


def _every_rank(rng: dict, world: int) -> dict:
    """Each worker's generators, gathered for the checkpoint rank 0 writes (``{"ranks": [...]}``):
    the workers of a data-parallel training draw their own augmentations and dropout masks,
    and each resumes its own stream."""
    if world < 2 or not torch.distributed.is_initialized():
        return rng
    ranks: list = [None] * world
    torch.distributed.all_gather_object(ranks, rng)
    return {"ranks": ranks}


class EarlyStop:
    """``train.patience``: the best validation score so far (accuracy; for a reconstruction, the
    negated loss) and its weights; ``update`` says when ``patience`` epochs have passed without a
    better one, once an accuracy is clear of chance (a one-cycle schedule's warm-up can hold a
    model near chance for several epochs before it learns: stopping there would keep a model
    that never learned). Off (``patience`` None): never."""

    def __init__(self, patience: int | None, history: list[dict], resumed: dict | None, num_classes: int):
        self.patience, self.state, self.num_classes = patience, resumed, num_classes
        scores = [self.score_of(h) for h in history]
        self.epoch = max(range(len(scores)), key=scores.__getitem__) if scores and patience else -1
        self.score = scores[self.epoch] if self.epoch >= 0 else float("-inf")

    @staticmethod
    def score_of(metrics: dict) -> float:
        if "val_acc" in metrics:
            return metrics["val_acc"]
        return -metrics["val_loss"] if "val_loss" in metrics else float("-inf")

    def update(self, epoch: int, metrics: dict, model: torch.nn.Module) -> bool:
        if not self.patience:
            return False
        if self.score_of(metrics) > self.score:
            self.epoch, self.score = epoch, self.score_of(metrics)
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        learned = "val_acc" not in metrics or not convergence.near_chance(self.score, self.num_classes)
        return epoch - self.epoch >= self.patience and learned

    def finish(self, metrics: dict, stopped: bool) -> dict:
        """The weights to keep; ``metrics`` say which epoch they are and what it scored."""
        metrics["best_epoch"] = self.epoch + 1
        if "val_acc" in metrics:
            metrics["last_val_acc"] = metrics["val_acc"]
            metrics["val_acc"] = self.score
        else:
            metrics["last_val_loss"] = metrics.get("val_loss")
            metrics["val_loss"] = -self.score
        if stopped:
            metrics["stopped_early"] = 1.0
        return self.state


def epochs_for(train, n_train: int) -> int:
    """The epochs a training of ``n_train`` images runs: ``train.epochs``, raised to reach
    ``train.min_steps`` optimizer steps (an epoch is n_train // batch_size steps)."""
    if not train.min_steps:
        return train.epochs
    per_epoch = max(1, n_train // train.batch_size) if n_train > train.batch_size else 1
    return max(train.epochs, math.ceil(train.min_steps / per_epoch))

"""One plain epoch loop, with hooks; Ray Train, the benchmarks and tests all run this loop.

``EpochLoop.run_epoch`` trains one pass over a loader and returns the epoch's numbers;
behaviour that only some trainings need (magnitude pruning, weight sharing, progress lines)
is a hook with ``epoch_start`` / ``step_end`` / ``epoch_end`` methods, not a branch in the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from suite.compression import apply_masks, magnitude_masks, sparsity, sparsity_at
from suite.compression.sharing import share
from suite.config import TrainConfig
from suite.data import augment_batch
from suite.training.objectives import Objective


def make_optimizer(params, cfg: TrainConfig, steps: int):
    """(optimizer, per-step LR scheduler) from a ``TrainConfig``; ``steps`` is the whole training's.
    ``params``: parameters, or optimizer groups whose "lr" may differ from ``cfg.lr``."""
    params = list(params)
    max_lr = [g.get("lr", cfg.lr) for g in params] if params and isinstance(params[0], dict) else cfg.lr
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=max(steps, 1), pct_start=0.25)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched


@torch.no_grad()
def evaluate(objective: Objective, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device, batch: int = 512,
             channels_last: bool = False) -> dict:
    """``val_loss`` (and ``val_acc`` where the objective has labels) over uint8 images."""
    if len(x) == 0:
        return {}
    model.eval()
    total, correct, n = 0.0, 0, 0
    for i in range(0, len(x), batch):
        xb, yb = _inputs(x[i : i + batch], device, channels_last), y[i : i + batch].to(device)
        out = model(xb)
        total += float(objective.loss(out, yb)) * len(xb)
        if objective.has_accuracy:
            correct += int((out.argmax(1) == objective.labels(yb)).sum())
        n += len(xb)
    metrics = {"val_loss": total / n}
    if objective.has_accuracy:
        metrics["val_acc"] = correct / n
    return metrics


def _inputs(xb: torch.Tensor, device, channels_last: bool) -> torch.Tensor:
    """uint8 images -> floats in [0, 1] on ``device`` (channels-last when the model is)."""
    xb = xb.to(device, non_blocking=True).float() / 255.0
    return xb.contiguous(memory_format=torch.channels_last) if channels_last and xb.dim() == 4 else xb


class Hook:
    """Override what you need; ``loop`` is the ``EpochLoop`` running."""

    def epoch_start(self, loop: "EpochLoop", epoch: int) -> None: ...

    def step_end(self, loop: "EpochLoop", step: int, steps: int) -> None: ...

    def epoch_end(self, loop: "EpochLoop", epoch: int, metrics: dict) -> None: ...


@dataclass
class EpochLoop:
    model: nn.Module  # what is called (a DDP wrapper under Ray Train)
    objective: Objective
    cfg: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: object
    device: torch.device = torch.device("cpu")
    flip: bool = False  # horizontal flips in augmentation (colour images)
    frozen: list = field(default_factory=list)  # submodules kept in eval mode (frozen BN statistics)
    hooks: list = field(default_factory=list)
    world: int = 1  # data-parallel workers: images/s counts all of them
    channels_last: bool = False  # the model is in channels-last memory format: so are its inputs
    bf16: bool = False  # forward (and so backward) under bfloat16 autocast; weights, optimizer and loss stay float32
    # running numbers of the epoch in progress, for hooks
    seen: int = 0
    total_loss: float | torch.Tensor = 0.0  # a tensor on the device once a step ran
    started: float = 0.0

    def core(self) -> nn.Module:
        return self.model.module if hasattr(self.model, "module") else self.model

    def run_epoch(self, loader, epoch: int) -> dict:
        """Train one pass over ``loader``; the epoch's numbers."""
        steps = self.epoch_steps(loader, epoch)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def epoch_steps(self, loader, epoch: int):
        """``run_epoch`` as a generator that yields after every batch (so its caller can send
        what hooks collected between batches) and returns the epoch's numbers."""
        for hook in self.hooks:
            hook.epoch_start(self, epoch)
        self.model.train()
        for name in self.frozen:
            getattr(self.core(), name).eval()
        self.started, self.total_loss, self.seen = time.perf_counter(), 0.0, 0
        steps = len(loader)
        for step, (xb, yb) in enumerate(loader, 1):
            xb = _inputs(xb, self.device, False)
            yb = yb.to(self.device, non_blocking=True)
            if self.cfg.augment:
                xb = augment_batch(xb, flip=self.flip)
            if self.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.model(xb)
            loss = self.objective.loss(out.float(), yb, self.cfg.label_smoothing)  # the loss in float32
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            # On the device, in float64 (as Python's float): no GPU sync per step; read at the epoch's end
            self.total_loss = self.total_loss + loss.detach().double() * len(xb)
            self.seen += len(xb)
            for hook in self.hooks:
                hook.step_end(self, step, steps)
            yield step
        seconds = time.perf_counter() - self.started
        metrics = {"epoch": epoch + 1, "train_loss": float(self.total_loss) / max(self.seen, 1), "epoch_seconds": seconds,
                   "images_per_second": self.seen * self.world / max(seconds, 1e-9)}
        for hook in self.hooks:
            hook.epoch_end(self, epoch, metrics)
        return metrics


class MagnitudePruning(Hook):
    """Prune to this epoch's sparsity at the epoch's start; keep the zeros through every step."""

    def __init__(self, weights: dict, ratio: float, epochs: int):
        self.weights, self.ratio, self.epochs, self.masks = weights, ratio, epochs, {}

    def epoch_start(self, loop, epoch):
        self.masks = magnitude_masks(self.weights, sparsity_at(epoch, self.epochs, self.ratio))
        apply_masks(self.weights, self.masks)

    def step_end(self, loop, step, steps):
        apply_masks(self.weights, self.masks)

    def epoch_end(self, loop, epoch, metrics):
        metrics["weight_sparsity"] = sparsity(self.weights)


class FixedMasks(Hook):
    """Keep the exact zeros the weights had when the training began: after every step the
    pruned weights go back to zero, so a weight-pruned encoder trained on stays as sparse. A
    resumed training begins from its checkpoint, which holds the same zeros."""

    def __init__(self, weights: dict):
        self.weights = weights
        with torch.no_grad():
            self.masks = {name: w != 0 for name, w in weights.items()}

    def step_end(self, loop, step, steps):
        apply_masks(self.weights, self.masks)

    def epoch_end(self, loop, epoch, metrics):
        metrics["weight_sparsity"] = sparsity(self.weights)


class WeightSharing(Hook):
    """After every step, snap each layer back to its shared values (Deep Compression)."""

    def __init__(self, weights: dict, assignments: dict):
        self.weights, self.assignments = weights, assignments

    def step_end(self, loop, step, steps):
        share(self.weights, self.assignments)


class ProgressLines(Hook):
    """A progress record every ``every_s`` inside long epochs, handed to ``emit`` (the worker
    sends it to the driver, which draws a bar or prints a line: ``suite.distributed.progress``)."""

    def __init__(self, epochs: int, every_s: float, emit):
        self.epochs, self.every_s, self.emit, self.shown_at = epochs, every_s, emit, 0.0

    def epoch_start(self, loop, epoch):
        self.epoch, self.shown_at = epoch, time.perf_counter()

    def step_end(self, loop, step, steps):
        now = time.perf_counter()
        if now - self.shown_at < self.every_s or step >= steps:
            return
        self.shown_at = now
        elapsed = now - loop.started
        self.emit({"epoch": self.epoch + 1, "epochs": self.epochs, "step": step, "steps": steps,
                   "loss": float(loop.total_loss) / loop.seen, "images_per_second": loop.seen * loop.world / elapsed,
                   "left_s": (steps - step) * elapsed / step})

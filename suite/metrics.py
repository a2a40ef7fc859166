"""Model measurements, and the one set of names they go by.

Every table, MLflow run, summary and board result names a measurement with the constants
below (``latency_p50_ms`` on this machine and on a board alike), so a column means one thing
wherever it appears.
"""

from __future__ import annotations

import copy
import io
import time

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

TEST_ACC, VAL_ACC = "test_acc", "val_acc"
PARAMETERS, NONZERO_PARAMETERS, SIZE_BYTES = "parameters", "nonzero_parameters", "size_bytes"
P50, P90, P99, MEAN = "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms"  # batch-1, ms
ENERGY_MJ = "energy_mj"  # per inference, on a board with a power source; None (N/A) otherwise
SPEEDUP = "speedup"  # the baseline's p50 over this model's, on the same machine

def latency_stats(ms: np.ndarray) -> dict:
    """p50 / p90 / p99 / mean of batch-1 call times in ms: every latency the suite reports."""
    ms = np.asarray(ms, dtype=float)
    return {P50: float(np.percentile(ms, 50)), P90: float(np.percentile(ms, 90)),
            P99: float(np.percentile(ms, 99)), MEAN: float(ms.mean())}


def count_parameters(model: nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return {PARAMETERS: total, NONZERO_PARAMETERS: nonzero}


def serialized_bytes(model: nn.Module) -> int:
    """Size of the state dict as ``torch.save`` writes it (what a board would load)."""
    return saved_bytes(model.state_dict())


def saved_bytes(obj) -> int:
    """Bytes ``torch.save`` writes for ``obj`` (a state dict, or a compressed form of one)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer().nbytes


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy with every Conv/ConvTranspose + BatchNorm pair folded, as exporters do for inference."""
    if isinstance(model, torch.jit.ScriptModule):  # already compiled (int8): nothing to fold
        return model
    model = copy.deepcopy(model).eval()

    def visit(module: nn.Module) -> None:
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
        for child in module._modules.values():
            if child is not None:
                visit(child)

    visit(model)
    return model


def _time_calls(model: nn.Module, xs: torch.Tensor, warmup: int, runs: int, start: int = 0) -> np.ndarray:
    """Time ``runs`` batch-1 calls, cycling through the images of ``xs`` from ``start``."""
    with torch.inference_mode():
        for i in range(warmup):
            model(xs[i % len(xs)][None])
        times = np.empty(runs)
        for i in range(runs):
            x = xs[(start + i) % len(xs)][None]
            t0 = time.perf_counter()
            model(x)
            times[i] = time.perf_counter() - t0
    return times * 1e3


def batch1_latency(models: dict[str, nn.Module], example: torch.Tensor, threads: int = 1, warmup: int = 20,
                   runs: int = 200, rounds: int = 5, varied: set[str] | frozenset = frozenset()) -> dict[str, dict]:
    """Batch-1 CPU latency in ms of several models, p50/p90/p99/mean over ``runs`` timed calls each.

    The calls are split into ``rounds`` that alternate between the models, so that a burst of
    load from elsewhere on the machine slows every model alike and the ratios stay honest.
    Every model sees ``example[0]``, except those in ``varied`` (early-exit models whose
    time depends on the image), which cycle through all images of ``example``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    example = example.cpu()
    models = {k: m.cpu().eval() for k, m in models.items()}
    rounds = max(1, min(rounds, runs))
    per_round = runs // rounds
    times: dict[str, list] = {k: [] for k in models}
    try:
        for r in range(rounds):
            for label, model in models.items():
                xs = example if label in varied else example[:1]
                times[label].append(_time_calls(model, xs, warmup if r == 0 else max(1, warmup // rounds), per_round, r * per_round))
    finally:
        torch.set_num_threads(previous)
    return {label: latency_stats(np.concatenate(t)) for label, t in times.items()}


def time_models(models: dict[str, nn.Module], example: torch.Tensor, latency) -> dict[str, dict]:
    """``batch1_latency`` as ``evaluate.latency`` (a LatencyConfig) asks: BN folded first when
    set, its threads, warm-up, runs and rounds."""
    if latency.fold_batchnorm:
        models = {k: fold_batchnorm(m) for k, m in models.items()}
    return batch1_latency(models, example, latency.threads, latency.warmup, latency.runs, latency.rounds)


def describe(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> dict:
    """Test accuracy, parameters (all and non-zero) and serialized size: a model's row in every table."""
    return {TEST_ACC: accuracy(model, images, labels, batch), **count_parameters(model), SIZE_BYTES: serialized_bytes(model)}


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    # An int8 TorchScript model has no parameters (and runs on the CPU); next() would raise
    # StopIteration, which Ray Tune's function runner takes for the trial's end.
    dev = next(model.parameters(), torch.empty(0)).device
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        out = model(images[i : i + batch].to(dev).float() / 255.0)
        correct += int((out.argmax(1).cpu() == labels[i : i + batch]).sum())
    return correct / max(len(labels), 1)

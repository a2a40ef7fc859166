"""The models, the training recipe and compression steps on a CUDA device (skipped where there
is none, as on CI; the recipe tests also run on the CPU there, so their code is exercised).

No dataset and no MLflow are needed: random images stand in. ``tests/test_gpu_placement.py``
catches device mix-ups without a GPU; this file runs the real kernels (autograd, bf16
autocast, channels-last convolutions) that a CPU stand-in cannot.

    .venv/bin/python -m pytest -q tests/test_cuda.py      # on a machine with a GPU
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from suite.config import DataConfig, TrainConfig
from suite.models import create_model
from suite.training import checkpoints
from suite.training.job import TrainJob

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEV = torch.device("cuda", 0)
# The recipe tests run where a GPU is, and on the CPU everywhere (the same code, cheaply).
DEVICES = [pytest.param(torch.device("cpu"), id="cpu"), pytest.param(DEV, id="cuda", marks=needs_cuda)]


def _step(model, x, y, loss_fn=None):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(x)
    loss = loss_fn(out, y) if loss_fn else F.cross_entropy(out, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)


@needs_cuda
@pytest.mark.parametrize("name", ["lenet", "lenet_kd", "alexnet", "alexnet_kd", "caenet", "resnet18", "resnet32",
                                  "resnet50", "vgg16", "mobilenetv2"])
def test_every_classifier_trains_on_cuda(name):
    geometry = {"in_channels": 1, "image_size": 28} if name.startswith("lenet") else {}
    model = create_model(name, **geometry).to(DEV).train()
    c, s = geometry.get("in_channels", 3), geometry.get("image_size", 32)
    x, y = torch.rand(16, c, s, s, device=DEV), torch.randint(0, 10, (16,), device=DEV)
    assert torch.isfinite(torch.tensor(_step(model, x, y)))


@needs_cuda
def test_branchynet_trains_and_exits_on_cuda():
    model = create_model("branchy_alexnet").to(DEV)
    x, y = torch.rand(32, 3, 32, 32, device=DEV), torch.randint(0, 10, (32,), device=DEV)
    _step(model.train(), x, y, lambda outs, yb: sum(F.cross_entropy(o, yb) for o in outs))
    model.eval()
    model.thresholds.copy_(torch.tensor([10.0, -1.0]))  # everything leaves at the first exit
    with torch.no_grad():
        out = model(x)
    assert out.device.type == "cuda" and bool((model.exit_index == 0).all())


@needs_cuda
def test_weight_pruning_and_sharing_hold_on_cuda():
    from suite.compression.pruning import apply_masks, magnitude_masks, prunable_weights, sparsity
    from suite.compression.sharing import cluster_weights, share
    from tests.test_competitors import distinct_values

    model = create_model("alexnet").to(DEV)
    weights = prunable_weights(model)
    masks = magnitude_masks(weights, 0.6)
    apply_masks(weights, masks)
    assignments = cluster_weights(model, 16)
    x, y = torch.rand(16, 3, 32, 32, device=DEV), torch.randint(0, 10, (16,), device=DEV)
    _step(model.train(), x, y)
    apply_masks(weights, masks)
    share(weights, assignments)
    assert sparsity(weights) == pytest.approx(0.6, abs=0.01)
    assert max(distinct_values(model).values()) <= 16


@needs_cuda
def test_subflow_trains_on_cuda_and_its_subnetwork_runs_on_cpu():
    from suite.models.subflow import extract

    geometry = {"in_channels": 3, "image_size": 32, "num_classes": 10}
    model = create_model("subflow", base="alexnet", base_kwargs={}, ratios=[0.25, 1.0], **geometry).to(DEV)
    x, y = torch.rand(16, 3, 32, 32, device=DEV), torch.randint(0, 10, (16,), device=DEV)
    _step(model.train(), x, y)
    model.eval().subflow_ratio = 0.25
    with torch.no_grad():
        masked = model(x).cpu()
    alone, _ = extract(model, "alexnet", {}, geometry, 0.25, x.cpu(), recalibrate=False)
    assert torch.allclose(alone(x.cpu()), masked, atol=1e-3)


@needs_cuda
def test_compressing_a_cuda_model_lands_on_the_cpu():
    from suite.compression.quantize import quantize_int8
    from suite.compression.structured import prune_channels

    model = create_model("alexnet").to(DEV).eval()
    x = torch.rand(8, 3, 32, 32)
    q = quantize_int8(model, x)  # int8 kernels are CPU kernels
    assert q(x).shape == (8, 10)
    pruned = prune_channels(model.cpu(), 0.4, x[:1]).to(DEV)
    assert pruned(x.to(DEV)).shape == (8, 10)


# ---------------------------------------------------------------------------- the worker's recipe


class _Session:
    """The engine side of a training (what the Ray task or Ray Train worker provides)."""

    rank, world = 0, 1

    def __init__(self, device, state=None, meta=None):
        self.device, self.state, self.meta = device, state, meta

    def prepare_model(self, model):
        return model.to(self.device)

    def resume(self, job):
        return self.state, self.meta, False


def _random_split(n: int = 128, channels: int = 1, size: int = 28):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g).numpy()
    return images, torch.randint(0, 10, (n,), generator=g).numpy()


RECIPES = {  # objective: (model, extra inputs of the worker); MNIST geometry
    "classify": ("lenet", lambda n: {}),
    "kd": ("lenet_kd", lambda n: {"teacher_logits": np.random.default_rng(0).normal(size=(n, 10)).astype(np.float32)}),
    "reconstruct": ("cae", lambda n: {"targets": np.arange(n)[::-1].copy()}),
}


def _recipe_job(objective: str) -> TrainJob:
    train = TrainConfig(epochs=2, batch_size=32, lr=0.01, augment=True)
    return TrainJob(name=objective, model=RECIPES[objective][0], model_kwargs={"in_channels": 1, "image_size": 28},
                    data=DataConfig(dataset="mnist", val_fraction=0.25).model_dump(), train=train.model_dump(),
                    objective=objective, progress=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("objective", sorted(RECIPES))
def test_the_training_recipe_runs_on(device, objective):
    """The worker's own setup and epoch loop: augmentation, channels-last, bf16 autocast, the
    classification, KD and autoencoder losses, and evaluation, all on ``device``."""
    from suite.training.fit import setup
    from suite.training.loop import evaluate

    images, labels = _random_split()
    torch.manual_seed(0)
    t = setup(_recipe_job(objective), {"split": (images, labels), "extra": RECIPES[objective][1](len(images)), "init": {}},
              _Session(device), channels_last=True, bf16=True)
    assert {p.device.type for p in t.core.parameters()} == {device.type}
    metrics = t.loop.run_epoch(t.loader, 0)
    metrics.update(evaluate(t.loop.objective, t.core, t.x_val, t.y_val, device, channels_last=t.loop.channels_last))
    assert np.isfinite(metrics["train_loss"]) and np.isfinite(metrics["val_loss"])
    assert ("val_acc" in metrics) == (objective != "reconstruct")


@pytest.mark.parametrize("device", DEVICES)
def test_a_checkpoint_round_trip_resumes_on(device, tmp_path):
    """Epoch 1, a checkpoint written and read back (on the CPU, as storage gives it), then a new
    worker resumes it on ``device``: weights as saved, optimizer moments beside the weights,
    and epoch 2 trains."""
    from suite.training.fit import setup

    images, labels = _random_split()
    arrays = {"split": (images, labels), "extra": {}, "init": {}}
    job = _recipe_job("classify")
    torch.manual_seed(0)
    first = setup(job, arrays, _Session(device), channels_last=True)
    metrics = first.loop.run_epoch(first.loader, 0)
    checkpoints.write(tmp_path, first.core.state_dict(), first.optimizer.state_dict(), first.scheduler.state_dict(), 0, metrics)
    state, meta = checkpoints.read(str(tmp_path))
    resumed = setup(job, arrays, _Session(device, state, meta), channels_last=True)
    assert resumed.start_epoch == 1
    for name, value in resumed.core.state_dict().items():
        assert torch.equal(value.cpu(), first.core.state_dict()[name].cpu()), name
    moments = {v.device.type for s in resumed.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0}
    assert moments == {device.type}
    assert np.isfinite(resumed.loop.run_epoch(resumed.loader, 1)["train_loss"])

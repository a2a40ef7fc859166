"""What a first GPU run would hit, caught without a GPU: device placement on a fake CUDA device
(tests/fake_cuda.py: CPU-backed, fails on a device mismatch as CUDA does) and the run's GPU
decision against fake cluster descriptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from suite.config import DataConfig, RuntimeConfig, TrainConfig
from suite.data import load_split
from suite.distributed import gpus
from suite.distributed.gpus import GpuCluster, GpuError, autoscaler_gpus, decide
from suite.training.fit import setup
from suite.models import create_model
from suite.training.job import ShareWeights, TrainJob
from suite.training.loop import make_optimizer
from tests.fake_cuda import DeviceMismatch, fake_cuda
from tests.test_cuda import _Session  # the engine side of a training (device, resume)


@pytest.fixture(scope="module")
def mnist_split():
    data = DataConfig(dataset="mnist", train_limit=256)
    ds = load_split(data, "train")
    return data, (ds.images.numpy(), ds.labels.numpy())


def test_the_fake_device_fails_where_cuda_would():
    """The harness itself: a CPU tensor beside a CUDA one fails; scalars, indices and copies do not."""
    with fake_cuda() as cuda:
        x = torch.arange(6.0).to(cuda)
        assert x.device == cuda and float(x.sum()) == 15.0
        assert (x * torch.tensor(2.0)).device == cuda  # a CPU scalar is fine
        assert x[torch.tensor([0, 2])].device == cuda  # so is a CPU index
        with pytest.raises(DeviceMismatch):
            x + torch.ones(6)
        with pytest.raises(DeviceMismatch):
            torch.bucketize(x, torch.tensor([1.0, 3.0]))
        assert torch.equal(x.cpu(), torch.arange(6.0)) and x.cpu().device.type == "cpu"


def _job(data: DataConfig, optimizer: str, **extra) -> TrainJob:
    train = TrainConfig(epochs=2, batch_size=64, lr=0.01, optimizer=optimizer, momentum=0.9)
    return TrainJob(name="baseline", model="lenet", model_kwargs={"in_channels": 1, "image_size": 28},
                    data=data.model_dump(), train=train.model_dump(), progress=False, **extra)


def _cpu_checkpoint(job: TrainJob) -> dict:
    """A checkpoint as a CPU worker (or torch.load with map_location="cpu") leaves it: momentum buffers and all."""
    cfg = job.train
    model = create_model(job.model, **job.model_kwargs)
    opt, sched = make_optimizer(model.parameters(), cfg, 10)
    model(torch.rand(4, 1, 28, 28)).sum().backward()
    opt.step()
    sched.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_resumed_training_keeps_its_optimizer_state_on_the_gpu(mnist_split, optimizer):
    """Optimizer state loaded before the model reached the GPU stayed on the CPU, and the first
    step failed at every retry. The worker's setup now places the model first."""
    data, split = mnist_split
    job = _job(data, optimizer)
    state = _cpu_checkpoint(job)
    with fake_cuda() as cuda:
        t = setup(job, {"split": split, "extra": {}, "init": {}}, _Session(cuda, state, {"epoch": 0, "metrics": {"epoch": 1}}))
        assert t.start_epoch == 1
        params = {p.device for p in t.core.parameters()}
        moments = {v.device for s in t.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0}
        assert params == {cuda} and moments == {cuda}
        for p in t.core.parameters():  # a step as after backward(): it runs on the device, no mismatch
            p.grad = torch.ones_like(p)
        t.optimizer.step()
        xb, yb = next(iter(t.loader))
        assert xb.device == cuda and yb.device == cuda  # the split was moved to the GPU once, batches gathered there


def test_loading_optimizer_state_before_placing_the_model_is_caught(mnist_split):
    """The order the worker used to have fails here as it would on a GPU (so the test above can fail)."""
    data, _ = mnist_split
    job = _job(data, "sgd")
    state = _cpu_checkpoint(job)
    with fake_cuda() as cuda:
        model = create_model(job.model, **job.model_kwargs)
        opt, _ = make_optimizer(model.parameters(), job.train, 10)
        opt.load_state_dict(state["optimizer"])
        model.to(cuda)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        with pytest.raises(DeviceMismatch):
            opt.step()


def test_weight_sharing_runs_on_the_gpu(mnist_split):
    """Its k-means built centroids and boundaries on the CPU and bucketized CUDA weights with them."""
    from suite.compression.pruning import apply_masks, magnitude_masks, prunable_weights
    from suite.compression.sharing import cluster_weights, share

    data, split = mnist_split
    with fake_cuda() as cuda:
        t = setup(_job(data, "sgd", hooks=[ShareWeights(8)]), {"split": split, "extra": {}, "init": {}}, _Session(cuda))
        weights = prunable_weights(t.core)
        assert {w.device for w in weights.values()} == {cuda}
        masks = magnitude_masks(weights, 0.5)  # WC after WP, as Deep Compression chains them
        apply_masks(weights, masks)
        assignments = cluster_weights(t.core, 8)
        with torch.no_grad():
            for w in weights.values():
                w.add_(0.01)  # an optimizer step moved them
        share(weights, assignments)
        for name, w in weights.items():
            assert assignments[name].device == cuda
            w = w.detach().cpu()  # (detached: autograd on the fake device aborts, see tests/fake_cuda.py)
            assert len(torch.unique(w)) <= 8 and bool((w[~masks[name].cpu()] == 0).all())


def test_evaluation_runs_on_the_gpu(mnist_split):
    from suite.training.loop import evaluate

    data, split = mnist_split
    with fake_cuda() as cuda:
        t = setup(_job(data, "sgd"), {"split": split, "extra": {}, "init": {}}, _Session(cuda))
        metrics = evaluate(t.loop.objective, t.core, t.x_val, t.y_val, cuda, channels_last=True)
    assert 0.0 <= metrics["val_acc"] <= 1.0 and np.isfinite(metrics["val_loss"])


def test_subflow_draws_the_same_width_on_every_worker_and_after_a_resume():
    """Python's unseeded random gave each data-parallel worker its own width in the same step."""
    def widths(model, steps):
        model.train()
        drawn = []
        for _ in range(steps):
            model(torch.rand(2, 1, 28, 28))
            drawn.append(model._subflow_step_ratio)
        return drawn

    geometry = {"in_channels": 1, "image_size": 28, "num_classes": 10}
    a, b = (create_model("subflow", base="lenet", base_kwargs={}, ratios=[0.25, 0.5, 0.75, 1.0], **geometry) for _ in range(2))
    assert widths(a, 30) == widths(b, 30) and len(set(widths(a, 30))) > 1  # two workers: same draws, and they vary
    resumed = create_model("subflow", base="lenet", base_kwargs={}, ratios=[0.25, 0.5, 0.75, 1.0], **geometry)
    resumed.load_state_dict(a.state_dict())  # its step count travels in the checkpoint
    assert widths(resumed, 10) == widths(a, 10)


# ---------------------------------------------------------------------------- the GPU decision


def test_auto_takes_the_gpus_an_autoscaler_can_add():
    """cluster.yaml starts with 0 GPU workers: counting only the GPUs up now trained on CPUs."""
    autoscaling = GpuCluster(up=0, can_add=8)
    assert decide(RuntimeConfig(use_gpu="auto"), autoscaling)
    assert decide(RuntimeConfig(use_gpu="auto", workers=4), autoscaling)
    assert not decide(RuntimeConfig(use_gpu="auto", workers=16), autoscaling)  # can never fit one training
    assert not decide(RuntimeConfig(use_gpu="auto"), GpuCluster(up=0, can_add=0))  # a CPU cluster
    assert not decide(RuntimeConfig(use_gpu="no"), GpuCluster(up=4, can_add=0))
    assert not decide(RuntimeConfig(use_gpu="auto"), GpuCluster(up=1, can_add=0, cuda="driver too old"))


def test_yes_without_a_usable_gpu_stops_in_one_line():
    assert decide(RuntimeConfig(use_gpu="yes"), GpuCluster(up=0, can_add=2))
    with pytest.raises(GpuError, match=r"has 0 GPU\(s\) and its autoscaler can add 2, and a training needs 4") as err:
        decide(RuntimeConfig(use_gpu="yes", workers=4), GpuCluster(up=0, can_add=2, where="this Ray cluster"))
    assert "\n" not in str(err.value) and "runtime.use_gpu" in str(err.value)
    with pytest.raises(GpuError, match=r"CUDA does not work on node gpu-1: CUDA driver version is insufficient"):
        decide(RuntimeConfig(use_gpu="yes"),
               GpuCluster(up=1, can_add=0, cuda="CUDA driver version is insufficient for CUDA runtime version", where="node gpu-1"))


def test_autoscaler_gpus_from_the_node_types():
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "cluster.yaml").read_text())
    assert autoscaler_gpus(config) == 8  # worker.gpu: 1 GPU x max_workers 8; the head adds none
    assert autoscaler_gpus({"head_node_type": "h", "available_node_types": {"h": {"resources": {"GPU": 4}}}}) == 0
    assert autoscaler_gpus({}) == 0


def test_the_local_decision_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert gpus.describe(RuntimeConfig(), joined=False) == GpuCluster(0.0, 0.0, None)
    with pytest.raises(GpuError, match="this machine has 0 GPU"):
        decide(RuntimeConfig(use_gpu="yes"), gpus.describe(RuntimeConfig(use_gpu="yes"), joined=False))

"""The models and compression steps on a CUDA device (skipped where there is none, as on CI).

Ray, MLflow and the datasets are not needed: a GPU machine without them (the lent device
machine) runs this file alone with random images.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from suite.models import create_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEV = torch.device("cuda")


def _step(model, x, y, loss_fn=None):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(x)
    loss = loss_fn(out, y) if loss_fn else F.cross_entropy(out, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)


@pytest.mark.parametrize("name", ["lenet", "lenet_kd", "alexnet", "alexnet_kd", "caenet", "resnet18", "resnet32",
                                  "resnet50", "vgg16", "mobilenetv2"])
def test_every_classifier_trains_on_cuda(name):
    geometry = {"in_channels": 1, "image_size": 28} if name.startswith("lenet") else {}
    model = create_model(name, **geometry).to(DEV).train()
    c, s = geometry.get("in_channels", 3), geometry.get("image_size", 32)
    x, y = torch.rand(16, c, s, s, device=DEV), torch.randint(0, 10, (16,), device=DEV)
    assert torch.isfinite(torch.tensor(_step(model, x, y)))


def test_branchynet_trains_and_exits_on_cuda():
    model = create_model("branchy_alexnet").to(DEV)
    x, y = torch.rand(32, 3, 32, 32, device=DEV), torch.randint(0, 10, (32,), device=DEV)
    _step(model.train(), x, y, lambda outs, yb: sum(F.cross_entropy(o, yb) for o in outs))
    model.eval()
    model.thresholds.copy_(torch.tensor([10.0, -1.0]))  # everything leaves at the first exit
    with torch.no_grad():
        out = model(x)
    assert out.device.type == "cuda" and bool((model.exit_index == 0).all())


def test_weight_pruning_and_sharing_hold_on_cuda():
    from suite.compression.pruning import apply_masks, magnitude_masks, prunable_weights, sparsity
    from suite.compression.sharing import cluster_weights, distinct_values, share

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


def test_compressing_a_cuda_model_lands_on_the_cpu():
    from suite.compression.quantize import quantize_int8
    from suite.compression.structured import prune_channels

    model = create_model("alexnet").to(DEV).eval()
    x = torch.rand(8, 3, 32, 32)
    q = quantize_int8(model, x)  # int8 kernels are CPU kernels
    assert q(x).shape == (8, 10)
    pruned = prune_channels(model.cpu(), 0.4, x[:1]).to(DEV)
    assert pruned(x.to(DEV)).shape == (8, 10)

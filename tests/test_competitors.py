"""The mechanics of every competitor of Tables I / II, on real MNIST / CIFAR images at tiny scale."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from suite.config import DataConfig
from suite.data import load_split
from suite.models import create_model


@pytest.fixture(scope="module")
def mnist(data_root):
    ds = load_split(DataConfig(dataset="mnist", root=str(data_root), train_limit=400), "train")
    return ds.images.float() / 255.0, ds.labels


@pytest.fixture(scope="module")
def cifar(data_root):
    ds = load_split(DataConfig(dataset="cifar10", root=str(data_root), train_limit=200), "train")
    return ds.images.float() / 255.0, ds.labels


def _train(model, x, y, steps=30, lr=3e-3, after_step=None, loss_fn=None):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for i in range(steps):
        idx = torch.arange(i * 64, (i + 1) * 64) % len(x)
        out = model(x[idx])
        loss = loss_fn(out, y[idx]) if loss_fn else F.cross_entropy(out, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if after_step:
            after_step()
    return model.eval()


# ------------------------------------------------------------------------ architectures


@pytest.mark.parametrize("name,params", [("lenet_kd", 12_458), ("alexnet_kd", 578_602), ("resnet32", 466_906),
                                         ("mobilenetv2", 2_236_682), ("resnet18", 11_173_962), ("vgg16", 14_724_042)])
def test_architectures_are_sized_like_the_papers(name, params):
    geometry = {"in_channels": 1, "image_size": 28} if name == "lenet_kd" else {}
    model = create_model(name, **geometry)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("name", ["resnet18", "resnet32", "resnet50", "vgg16", "mobilenetv2"])
def test_cifar_forms_take_32x32_and_28x28(name):
    for c, s in ((3, 32), (1, 28)):
        model = create_model(name, in_channels=c, image_size=s, width=0.25).eval()
        assert model(torch.zeros(2, c, s, s)).shape == (2, 10)


# ------------------------------------------------------------------------ KD


def test_kd_loss_uses_the_teacher(mnist):
    from suite.training.objectives import make_objective

    x, y = mnist
    student = create_model("lenet_kd", in_channels=1, image_size=28)
    with torch.no_grad():
        out = student(x[:64])
    kd = make_objective("kd", {"temperature": 4.0, "alpha": 0.7})
    teacher_a = torch.randn(64, 10) * 5
    teacher_b = F.one_hot(y[:64], 10).float() * 8
    y_a = kd.targets(x[:64], y[:64], {"teacher_logits": teacher_a.numpy()})
    y_b = kd.targets(x[:64], y[:64], {"teacher_logits": teacher_b.numpy()})
    assert torch.equal(y_a[:, 0].long(), y[:64]) and torch.equal(y_a[:, 1:], teacher_a)
    assert float(kd.loss(out, y_a)) != pytest.approx(float(kd.loss(out, y_b)), rel=1e-3)
    labels_only = make_objective("kd", {"temperature": 4.0, "alpha": 0.0})  # no soft term: the teacher no longer matters
    assert float(labels_only.loss(out, y_a)) == pytest.approx(float(labels_only.loss(out, y_b)))


# ------------------------------------------------------------------------ WP


def test_weight_pruning_reaches_sparsity_and_keeps_it_through_finetuning(mnist):
    from suite.compression.pruning import apply_masks, magnitude_masks, prunable_weights, sparse_bytes, sparsity, sparsity_at
    from suite.metrics import serialized_bytes

    x, y = mnist
    model = _train(create_model("lenet", in_channels=1, image_size=28), x, y, steps=20)
    weights = prunable_weights(model)
    for epoch in range(3):  # the iterative schedule: prune, fine-tune, prune more
        masks = magnitude_masks(weights, sparsity_at(epoch, 3, 0.7))
        apply_masks(weights, masks)
        _train(model, x, y, steps=10, after_step=lambda: apply_masks(weights, masks))
    assert sparsity(weights) == pytest.approx(0.7, abs=0.005)
    assert sparse_bytes(model) < 0.45 * serialized_bytes(model)  # bitmap + 30% of the values
    acc = float((model(x).argmax(1) == y).float().mean())
    assert acc > 0.5  # still a classifier


# ------------------------------------------------------------------------ WC


def distinct_values(model) -> dict[str, int]:
    """Number of distinct values in each conv / linear weight."""
    from suite.compression.pruning import prunable_weights

    return {name: int(torch.unique(w.detach()).numel()) for name, w in prunable_weights(model).items()}


def test_weight_clustering_leaves_at_most_k_values_per_layer_through_finetuning(mnist):
    from suite.compression.pruning import apply_masks, magnitude_masks, prunable_weights, sparsity
    from suite.compression.sharing import cluster_weights, packed_bytes, share
    from suite.metrics import serialized_bytes

    x, y = mnist
    model = _train(create_model("lenet", in_channels=1, image_size=28), x, y, steps=20)
    weights = prunable_weights(model)
    apply_masks(weights, magnitude_masks(weights, 0.5))  # WC after WP, as Deep Compression does
    assignments = cluster_weights(model, 16)
    before = {k: w.clone() for k, w in weights.items()}
    _train(model, x, y, steps=15, after_step=lambda: share(weights, assignments))
    counts = distinct_values(model)
    assert all(2 < n <= 16 for n in counts.values()), counts
    assert sparsity(weights) == pytest.approx(0.5, abs=0.005)  # pruned weights stay at 0
    assert any(not torch.equal(before[k], w) for k, w in weights.items())  # the centroids did move
    assert packed_bytes(model, 16) < 0.25 * serialized_bytes(model)  # 4-bit indices + codebooks


def test_packed_size_refuses_more_values_than_k():
    from suite.compression.sharing import packed_bytes

    with pytest.raises(ValueError, match="do not fit"):
        packed_bytes(create_model("lenet", in_channels=1, image_size=28), 16)  # unclustered: thousands of values


# ------------------------------------------------------------------------ structured pruning


def _flops(model, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ["alexnet", "resnet50", "vgg16", "mobilenetv2", "caenet"])
def test_channel_pruning_removes_channels_and_rebuilds_by_name(name, cifar):
    from suite.compression.structured import prune_channels
    from suite.models.resized import resized_spec

    x, _ = cifar
    kwargs = {} if name in ("alexnet", "caenet") else {"width": 0.5}
    model = create_model(name, **kwargs).eval()
    before = sum(p.numel() for p in model.parameters()), _flops(model, x[:1])
    reference = model(x[:8])
    prune_channels(model, 0.4, x[:1], prefixes=["encoder"] if name == "caenet" else None)
    after = sum(p.numel() for p in model.parameters()), _flops(model, x[:1])
    assert after[0] < 0.6 * before[0] and after[1] < 0.6 * before[1]  # fewer weights and fewer FLOPs: real removal
    spec_name, spec = resized_spec(name, kwargs, model)
    rebuilt = create_model(spec_name, **spec)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.allclose(rebuilt.eval()(x[:8]), model(x[:8]))
    assert model(x[:8]).shape == reference.shape


# ------------------------------------------------------------------------ int8


def test_int8_quantization_keeps_accuracy(mnist):
    from suite.compression.quantize import quantize_int8, scripted_bytes
    from suite.metrics import accuracy, serialized_bytes

    x, y = mnist
    model = _train(create_model("lenet", in_channels=1, image_size=28), x, y, steps=40)
    q = quantize_int8(model, x[:128])
    acc_f = float((model(x).argmax(1) == y).float().mean())
    acc_q = float((q(x).argmax(1) == y).float().mean())
    assert acc_f > 0.6 and acc_q == pytest.approx(acc_f, abs=0.03)  # a trained model (10% is chance), kept by int8
    assert accuracy(q, (x * 255).round().to(torch.uint8), y) == pytest.approx(acc_q, abs=0.01)  # no parameters to ask
    assert scripted_bytes(q) < 0.5 * serialized_bytes(model)


# ------------------------------------------------------------------------ BranchyNet


def test_branchynet_exits_early_on_confident_inputs(mnist):
    from suite.models.branchy import choose_thresholds, entropy, simulate

    x, y = mnist
    model = create_model("branchy_lenet")
    loss = lambda outs, yb: sum(F.cross_entropy(o, yb) for o in outs)  # noqa: E731
    _train(model, x, y, steps=40, loss_fn=loss)
    with torch.no_grad():
        model.return_all = True
        exits = list(model(x))
        model.return_all = False
        first = entropy(exits[0])
        t = float(first.median())
        model.thresholds.copy_(torch.tensor([t]))
        out = model(x)
    confident = first < t
    assert torch.equal(model.exit_index == 0, confident)  # exactly the confident images left early
    assert torch.allclose(out[confident], exits[0][confident], atol=1e-5)
    assert torch.allclose(out[~confident], exits[1][~confident], atol=1e-5)
    with torch.no_grad():  # batch 1: a confident image never reaches the last stage
        calls = []
        hook = model.stages[-1].register_forward_hook(lambda *a: calls.append(1))
        model(x[int(torch.nonzero(confident)[0])][None])
        hook.remove()
    assert calls == []
    acc, shares = simulate(exits, y, [t])
    assert shares[0] == pytest.approx(float(confident.float().mean()))
    costs = {"stage0": 1.0, "branch0": 0.1, "stage1": 3.0, "final": 0.5}
    choice = choose_thresholds(exits, y, costs, tolerance=0.02)
    assert choice["val_acc"] >= choice["final_exit_val_acc"] - 0.02
    strict = choose_thresholds(exits, y, costs, tolerance=0.0)
    assert strict["expected_latency_ms"] >= choice["expected_latency_ms"]


# ------------------------------------------------------------------------ SubFlow


def test_subflow_subnetworks_run_alone(cifar):
    from suite.models.subflow import extract

    x, y = cifar
    geometry = {"in_channels": 3, "image_size": 32, "num_classes": 10}
    model = create_model("subflow", base="alexnet", base_kwargs={"hidden": 256}, ratios=[0.25, 0.5, 1.0], **geometry)
    _train(model, x, y, steps=6)  # random ratio per step; ranks channels on the first one
    assert bool(model.subflow_ranked)
    sizes = []
    for ratio in (0.25, 0.5, 1.0):
        model.subflow_ratio = ratio
        masked = model.eval()(x[:16])
        alone, (name, spec) = extract(model, "alexnet", {"hidden": 256}, geometry, ratio, x[:64], recalibrate=False)
        # the cut-out subnetwork is a plain, smaller model that computes what the masked net did
        assert not alone._forward_hooks and name == "resized"
        assert torch.allclose(alone(x[:16]), masked, atol=1e-4)
        rebuilt = create_model(name, **spec)
        rebuilt.load_state_dict(alone.state_dict())
        assert torch.allclose(rebuilt.eval()(x[:16]), masked, atol=1e-4)
        sizes.append(sum(p.numel() for p in alone.parameters()))
    assert sizes[0] < sizes[1] < sizes[2]
    assert sizes[0] < 0.15 * sizes[2]  # a quarter of the channels: about 1/16 of the weights


# ------------------------------------------------------------------------ AdaDeep


def test_factorizations_are_exact_at_full_rank_and_for_separable_kernels():
    import torch.nn as nn

    from suite.compression.factorize import depthwise, lowrank

    torch.manual_seed(0)
    conv, x = nn.Conv2d(16, 32, 3, padding=1), torch.randn(2, 16, 8, 8)
    assert torch.allclose(lowrank(conv, 1.0)(x), conv(x), atol=1e-4)
    half = lowrank(conv, 0.5)
    assert half[0].out_channels == 16 and float((half(x) - conv(x)).abs().mean()) > 1e-3  # truncated: an approximation
    conv.weight.data = (torch.randn(32, 16, 1) * torch.randn(1, 16, 9)).view(32, 16, 3, 3)  # rank 1 per input channel
    assert torch.allclose(depthwise(conv)(x), conv(x), atol=1e-3)
    linear = nn.Linear(64, 20)
    assert torch.allclose(lowrank(linear, 1.0)(torch.ones(3, 64)), linear(torch.ones(3, 64)), atol=1e-4)


def test_adadeep_plan_compresses_and_rebuilds_by_name(cifar):
    from suite.methods.adadeep import as_plan, choices_for, compress, layer_names

    x, _ = cifar
    model = create_model("alexnet").eval()
    modules = dict(model.named_modules())
    assert layer_names(model) == ["body.0", "body.4", "body.8", "body.11", "body.14", "neck.1", "neck.4"]
    assert "depthwise" not in choices_for(modules["neck.1"])  # linear layers have no depthwise form
    plan = as_plan({"body.0": "depthwise", "body.4": "prune:0.5", "body.8": "none", "body.11": "lowrank:0.25",
                    "body.14": "prune:0.25", "neck.1": "lowrank:0.25", "neck.4": "none"})
    before = sum(p.numel() for p in model.parameters())
    compressed, shapes = compress(model, plan, x[:1])
    assert sum(p.numel() for p in compressed.parameters()) < 0.5 * before
    rebuilt = create_model("adadeep", base="alexnet", base_kwargs={}, shapes=shapes, plan=plan, in_channels=3,
                           image_size=32, num_classes=10)
    rebuilt.load_state_dict(compressed.state_dict())
    assert torch.allclose(rebuilt.eval()(x[:8]), compressed(x[:8]), atol=1e-5)


def test_adadeep_reward_ranks_constraint_breakers_below_every_kept_plan():
    from suite.methods.adadeep import AdaDeep, reward

    method = AdaDeep(name="AdaDeep", kind="adadeep", max_accuracy_drop=0.05, size_budget_kb=100)
    ref = {"val_acc": 0.9, "latency_p50_ms": 1.0, "size_bytes": 400 * 1024}
    kept_worst = reward({"val_acc": 0.85, "latency_p50_ms": 1.0, "size_bytes": 100 * 1024}, ref, method, budget_ms=1.0)
    kept_best = reward({"val_acc": 0.9, "latency_p50_ms": 0.2, "size_bytes": 10 * 1024}, ref, method, budget_ms=1.0)
    too_slow = reward({"val_acc": 0.95, "latency_p50_ms": 1.1, "size_bytes": 10 * 1024}, ref, method, budget_ms=1.0)
    too_big = reward({"val_acc": 0.95, "latency_p50_ms": 0.1, "size_bytes": 101 * 1024}, ref, method, budget_ms=1.0)
    too_wrong = reward({"val_acc": 0.84, "latency_p50_ms": 0.1, "size_bytes": 10 * 1024}, ref, method, budget_ms=1.0)
    assert kept_best > kept_worst > -1 > max(too_slow, too_big, too_wrong)
    assert too_slow > reward({"val_acc": 0.95, "latency_p50_ms": 2.0, "size_bytes": 10 * 1024}, ref, method, budget_ms=1.0)

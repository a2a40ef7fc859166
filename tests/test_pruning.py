"""Magnitude pruning: the schedule, the masks, and sparsity held through training."""

import pytest
import torch

from suite.compression import apply_masks, magnitude_masks, prunable_weights, sparsity, sparsity_at
from suite.models import create_model


def test_schedule_ramps_to_final_and_stays():
    values = [sparsity_at(e, 10, 0.8) for e in range(10)]
    assert values == sorted(values) and values[0] > 0
    assert values[5:] == [pytest.approx(0.8)] * 5  # ramp over the first 60%, then hold
    assert sparsity_at(0, 1, 0.5) == pytest.approx(0.5)  # one epoch: prune at once
    assert sparsity_at(3, 10, 0.0) == 0.0


def test_masks_prune_smallest_magnitudes_per_layer():
    model = create_model("cae", in_channels=1, image_size=28)
    weights = prunable_weights(model)
    assert len(weights) == 10  # 5 conv + 5 deconv; BatchNorm is never pruned
    before = {k: w.clone() for k, w in weights.items()}
    masks = magnitude_masks(weights, 0.5)
    apply_masks(weights, masks)
    assert sparsity(weights) == pytest.approx(0.5, abs=0.01)
    for name, w in weights.items():
        kept = before[name][w != 0].abs()
        dropped = before[name][w == 0].abs()
        assert kept.min() >= dropped.max()  # no kept weight is smaller than a pruned one
    assert set(prunable_weights(model, ["encoder"])) == {f"encoder.blocks.{i}.0" for i in range(5)}


@pytest.mark.slow
def test_pruned_cae_training_keeps_sparsity(ray_local, data_root, tmp_path):
    import numpy as np

    from suite.config import DataConfig, RuntimeConfig, TrainConfig
    from suite.distributed.launch import TrainJob, fit
    from suite.training.job import PruneWeights

    np.save(tmp_path / "targets.npy", np.arange(300))  # identity targets: enough for the mechanics
    job = TrainJob(name="prune", model="cae", model_kwargs={"in_channels": 1, "image_size": 28},
                   data=DataConfig(dataset="mnist", root=str(data_root), train_limit=300).model_dump(),
                   train=TrainConfig(epochs=2, batch_size=64, optimizer="adam", lr=1e-3).model_dump(),
                   objective="reconstruct", targets_path=str(tmp_path / "targets.npy"), hooks=[PruneWeights(0.8)],
                   storage_path=str(tmp_path / "ray"), progress=False)
    metrics = fit(job, RuntimeConfig(workers=1, cpus_per_worker=1, max_failures=0), tmp_path / "cae.pt")
    model = create_model("cae", in_channels=1, image_size=28)
    model.load_state_dict(torch.load(tmp_path / "cae.pt", weights_only=True))
    # Adam would regrow pruned weights within one step if the masks were not re-applied.
    assert sparsity(prunable_weights(model)) == pytest.approx(0.8, abs=0.01)
    assert metrics["weight_sparsity"] == pytest.approx(0.8, abs=0.01)


def test_a_pruned_encoder_trained_on_keeps_its_zeros(data_root):
    """A weight-pruned CAE's encoder fine-tuned inside CAE-Net (`caenet.encoder: finetune` with
    `autoencoder.prune.weight_ratio` > 0; the CIFAR clusters x pruning sweep): without the
    KeepZeros hook one epoch trains every pruned weight back and CAE-Net is dense again; with
    it the zeros stay zero while the other weights still learn (real MNIST images, one epoch)."""
    from suite.config import DataConfig, TrainConfig
    from suite.data import load_split
    from suite.training.job import KeepZeros
    from suite.training.loop import EpochLoop, make_optimizer
    from suite.training.objectives import make_objective

    train = load_split(DataConfig(dataset="mnist", root=str(data_root), train_limit=256), "train")
    x, y = train.floats(slice(0, 256)), torch.as_tensor(train.labels[:256])
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    cfg = TrainConfig(epochs=1, batch_size=32, optimizer="adam", lr=1e-2)
    sparsities = {}
    for keep in (False, True):
        torch.manual_seed(0)
        model = create_model("caenet", in_channels=1, image_size=28)
        encoder = prunable_weights(model, ["encoder"])
        apply_masks(encoder, magnitude_masks(encoder, 0.5))  # as the pruned CAE hands it over
        before = {n: w.detach().clone() for n, w in encoder.items()}
        opt, sched = make_optimizer(model.parameters(), cfg, len(batches))
        hooks = [KeepZeros(("encoder",)).hook(model, 1)] if keep else []
        metrics = EpochLoop(model, make_objective("classify"), cfg, opt, sched, hooks=hooks).run_epoch(batches, 0)
        sparsities[keep] = sparsity(encoder)
        assert all(not torch.equal(before[n], w) for n, w in encoder.items())  # the encoder learnt either way
    assert sparsities[False] < 0.01 and sparsities[True] == pytest.approx(0.5, abs=0.01)
    assert metrics["weight_sparsity"] == sparsities[True]
    zeros = {n: w == 0 for n, w in before.items()}
    assert all(bool((w[zeros[n]] == 0).all()) for n, w in encoder.items())  # the very weights that were pruned

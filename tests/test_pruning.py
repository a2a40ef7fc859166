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
    from suite.distributed.training import TrainJob, fit
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

"""``TensorBatches`` gives the batches a ``DataLoader`` would (so trainings stay bit-identical),
and shards like ``DistributedSampler`` on several workers."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from suite.training.batches import TensorBatches


@pytest.mark.parametrize("drop_last", [True, False])
def test_same_batches_and_rng_as_a_shuffled_dataloader(drop_last):
    x, y = torch.arange(1000).view(1000, 1), torch.arange(1000)
    torch.manual_seed(3)
    expected = [(xb, yb) for _ in range(2) for xb, yb in DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, drop_last=drop_last)]
    after_expected = torch.rand(3)
    torch.manual_seed(3)
    batches = TensorBatches(x, y, 64, drop_last=drop_last)
    got = [(xb, yb) for _ in range(2) for xb, yb in batches]
    assert len(batches) == len(expected) // 2 and len(got) == len(expected)
    for (ex, ey), (gx, gy) in zip(expected, got):
        assert torch.equal(ex, gx) and torch.equal(ey, gy)
    assert torch.equal(torch.rand(3), after_expected)  # the global RNG moved exactly as the DataLoader moves it


def test_shards_like_distributed_sampler():
    x, y = torch.arange(103).view(103, 1), torch.arange(103)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(TensorDataset(x, y), num_replicas=2, rank=rank, shuffle=True, seed=5)
        sampler.set_epoch(1)
        shard = TensorBatches(x, y, 10, rank=rank, world=2, seed=5)
        shard.set_epoch(1)
        got = torch.cat([yb for _, yb in shard]).tolist()
        assert got == list(sampler) and len(shard) == 6
        seen += got
    assert set(seen) == set(range(103))  # every image, the tail padded by repeating


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="3 inputs but 2 targets"):
        TensorBatches(torch.zeros(3, 1), torch.zeros(2), 2)

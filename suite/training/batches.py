"""Shuffled mini-batches straight from in-memory tensors.

``DataLoader(TensorDataset(x, y), shuffle=True)`` fetches every sample with its own Python
call and stacks them again: 0.2-0.35 s of a LeNet epoch on 17k MNIST images (10-15%, 2 cores;
``benchmarks/overhead.py``). ``TensorBatches`` indexes the tensors once per batch instead.

On one worker it draws its order from the global torch RNG exactly as the DataLoader does (two
draws per epoch: the iterator's base seed, then the sampler's seed), so a training gives
bit-identical batches, and consumes the RNG identically (augmentation draws stay the same).
On ``world`` > 1 workers it shards like ``DistributedSampler`` (``seed + epoch``, the tail padded
by repeating, every ``world``-th index), with ``set_epoch`` as there.

On a GPU (``device``) the whole split moves there once (the suite's splits are at most a few
hundred MB), so a batch is gathered on the GPU instead of from pageable host memory; a split
over ``ON_DEVICE_BYTES`` stays on the host in pinned memory, copied per batch without a sync.
"""

from __future__ import annotations

import math

import torch

ON_DEVICE_BYTES = 2 << 30  # a split up to this size is kept on the GPU whole


def on_device(x: torch.Tensor, y: torch.Tensor, device: torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` where batches are best gathered for ``device``: unchanged for the CPU."""
    if device is None or torch.device(device).type != "cuda":
        return x, y
    if x.nbytes + y.nbytes <= ON_DEVICE_BYTES:
        return x.to(device), y.to(device)
    return x.pin_memory(), y.pin_memory()


class TensorBatches:
    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True, drop_last: bool = False,
                 rank: int = 0, world: int = 1, seed: int = 0, device: torch.device | None = None):
        if len(x) != len(y):
            raise ValueError(f"{len(x)} inputs but {len(y)} targets")
        x, y = on_device(x, y, device)
        self.x, self.y, self.batch_size = x, y, max(1, batch_size)
        self.shuffle, self.drop_last, self.rank, self.world, self.seed = shuffle, drop_last, rank, world, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _count(self) -> int:  # samples this worker sees per epoch
        return math.ceil(len(self.x) / self.world) if self.world > 1 else len(self.x)

    def __len__(self) -> int:
        n = self._count()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self) -> torch.Tensor:
        n = len(self.x)
        if self.world == 1:
            if not self.shuffle:
                return torch.arange(n)
            torch.empty((), dtype=torch.int64).random_()  # DataLoader: the iterator's base seed
            generator = torch.Generator()
            generator.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))  # RandomSampler's seed
            return torch.randperm(n, generator=generator)
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        total = self._count() * self.world
        order = order.repeat(math.ceil(total / n))[:total]  # the tail padded by repeating the start
        return order[self.rank : total : self.world]

    def __iter__(self):
        order = self._order().to(self.x.device)  # drawn on the CPU (the RNG stream), used where the data is
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.x[index], self.y[index]

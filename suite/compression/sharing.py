"""Weight clustering / sharing (Deep Compression, Han et al. 2016, Sec. 3).

Each conv / linear weight tensor is clustered into ``k`` shared values with 1-D k-means
(linear initialisation over [min, max], which the paper found best because it keeps the
rare large weights). Every weight then holds an index into its layer's codebook. During
fine-tuning the assignments stay fixed and each centroid moves by the mean of its members'
updates: after every optimizer step the layer's weights are replaced by the mean of their
cluster (``share``). For plain SGD that is exactly the paper's centroid update with the
averaged gradient; it works for any optimizer. Weights already pruned to 0 keep a cluster
of their own pinned at 0, so WC can follow WP as in Deep Compression's pipeline.

Size is measured on the packed form: ceil(log2 k) bits per weight + a fp32 codebook per
layer (+ everything else, biases and BatchNorm, in fp32).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from suite.compression.pruning import prunable_weights
from suite.metrics import saved_bytes


@torch.no_grad()
def kmeans_1d(values: torch.Tensor, k: int, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted centroids [k'], assignment per value), linear initialisation; k' <= k.

    A centroid left empty (pruned weights leave a gap around 0 that linear init seeds
    into) is moved to the value farthest from its own centroid, so all k get used."""
    v = values.flatten().double()
    lo, hi = float(v.min()), float(v.max())
    k = min(k, int(torch.unique(v).numel()))
    # Everything on the weights' device: bucketize refuses boundaries on another one
    centroids = torch.linspace(lo, hi, k, dtype=torch.float64, device=v.device)

    def nearest(c):
        return torch.bucketize(v, (c[1:] + c[:-1]) / 2)  # c sorted

    for _ in range(iters):
        assign = nearest(centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, v)
        counts = torch.zeros_like(centroids).index_add_(0, assign, torch.ones_like(v))
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        error = (v - new[assign]).abs()
        for empty in torch.nonzero(counts == 0).flatten().tolist():
            far = int(error.argmax())
            new[empty] = v[far]
            error[far] = 0
        new = torch.sort(new).values
        if torch.equal(new, centroids):
            break
        centroids = new
    assign = nearest(centroids)
    used = torch.unique(assign)
    remap = torch.full((len(centroids),), -1, dtype=torch.long, device=v.device)
    remap[used] = torch.arange(len(used), device=v.device)
    return centroids[used].float(), remap[assign].view(values.shape)


@torch.no_grad()
def cluster_weights(model: nn.Module, k: int, prefixes: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Snap every conv/linear weight to at most ``k`` shared values; return the per-layer
    assignments. Index 0 is reserved for exact zeros (pruned weights), pinned at 0 by ``share``."""
    assignments = {}
    for name, w in prunable_weights(model, prefixes).items():
        nonzero = w != 0
        if not bool(nonzero.any()):
            continue
        centroids, assign = kmeans_1d(w[nonzero], k - 1 if bool((~nonzero).any()) else k)
        full = torch.zeros(w.shape, dtype=torch.long, device=w.device)  # cluster 0: the zeros
        full[nonzero] = assign + 1  # kmeans_1d works on the weights' device
        w.zero_()
        w[nonzero] = centroids.to(w.dtype)[assign]
        assignments[name] = full
    return assignments


@torch.no_grad()
def share(weights: dict[str, torch.Tensor], assignments: dict[str, torch.Tensor]) -> None:
    """Replace each weight by its cluster's mean; cluster 0 (the pruned weights) stays at 0."""
    for name, assign in assignments.items():
        w = weights[name]
        # reshape, not view: a channels-last weight is not one flat block (copy_ writes it back)
        flat, idx = w.reshape(-1), assign.reshape(-1)
        n = int(idx.max()) + 1
        sums = torch.zeros(n, dtype=torch.float64, device=w.device).index_add_(0, idx, flat.double())
        counts = torch.zeros(n, dtype=torch.float64, device=w.device).index_add_(0, idx, torch.ones_like(flat, dtype=torch.float64))
        means = (sums / counts.clamp(min=1)).to(w.dtype)
        means[0] = 0
        w.copy_(means[assign])


def packed_bytes(model: nn.Module, k: int) -> int:
    """Serialized size with every conv/linear weight as packed ceil(log2 k)-bit indices + codebook."""
    bits = max(1, math.ceil(math.log2(k)))
    shared = prunable_weights(model)
    shared_names = {f"{name}.weight" for name in shared}
    packed = {}
    for name, t in model.state_dict().items():
        if name not in shared_names:
            packed[name] = t
            continue
        codebook, idx = torch.unique(t.detach().cpu().flatten(), return_inverse=True)
        if len(codebook) > 2 ** bits:
            raise ValueError(f"{name}: {len(codebook)} distinct values do not fit {bits}-bit indices (k={k})")
        shifts = torch.arange(bits - 1, -1, -1)
        as_bits = ((idx[:, None] >> shifts) & 1).to(torch.uint8).numpy()  # bits per index, MSB first
        packed[name] = (tuple(t.shape), codebook.float(), torch.from_numpy(np.packbits(as_bits.flatten())))
    return saved_bytes(packed)

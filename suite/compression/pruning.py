"""Magnitude weight pruning during training (Han et al. 2015; gradual schedule of Zhu & Gupta 2017).

At the start of each epoch every conv / deconv / linear weight tensor is pruned, layer by
layer, to the sparsity the schedule asks for: the smallest-magnitude weights are set to 0
and kept there by re-applying the mask after every optimizer step. The sparsity ramps up as
``final * (1 - (1 - t)^3)`` over the first ``ramp`` share of the epochs, so the network has
the remaining epochs to recover at the final sparsity. No mask state needs checkpointing:
pruned weights are exactly 0, the smallest magnitudes, so the masks are rebuilt from the
weights after a resume.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from suite.metrics import saved_bytes

PRUNABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def prunable_weights(model: nn.Module, prefixes: list[str] | None = None) -> dict[str, torch.Tensor]:
    """``name -> weight`` of every conv/deconv/linear layer (under ``prefixes`` when given)."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE) and (not prefixes or any(name == p or name.startswith(p + ".") for p in prefixes)):
            found[name] = module.weight
    return found


def sparsity_at(epoch: int, epochs: int, final: float, ramp: float = 0.6) -> float:
    """Target sparsity for 0-based ``epoch``: cubic ramp to ``final`` over ``ramp`` of the epochs."""
    if final <= 0:
        return 0.0
    ramp_epochs = max(1, math.ceil(ramp * epochs))
    t = min(1.0, (epoch + 1) / ramp_epochs)
    return final * (1.0 - (1.0 - t) ** 3)


@torch.no_grad()
def magnitude_masks(weights: dict[str, torch.Tensor], target: float) -> dict[str, torch.Tensor]:
    """Per-layer masks keeping the ``1 - target`` share of weights with the largest magnitude."""
    masks = {}
    for name, w in weights.items():
        n_prune = int(round(target * w.numel()))
        if n_prune <= 0:
            masks[name] = torch.ones_like(w, dtype=torch.bool)
            continue
        threshold = w.detach().abs().flatten().kthvalue(n_prune).values
        # Ties at the threshold go too: exact zeros pruned at an earlier epoch stay pruned;
        # ties among non-zero float weights are vanishingly rare.
        masks[name] = w.detach().abs() > threshold
    return masks


@torch.no_grad()
def apply_masks(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    for name, mask in masks.items():
        weights[name].mul_(mask)


def sparsity(weights: dict[str, torch.Tensor]) -> float:
    """Share of exact zeros over the given weights."""
    total = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / max(total, 1)


def sparse_bytes(model: nn.Module) -> int:
    """Serialized size of the model in a sparse form: every tensor as a bit mask of its
    non-zeros plus the non-zero values (fp32). Dense tensors cost 1/32 more than dense; a
    layer at 90% sparsity costs about 13.6% of dense. Real bytes, written with ``torch.save``.
    """
    packed = {}
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            packed[name] = t
            continue
        flat = t.detach().cpu().flatten()
        mask = flat != 0
        bits = torch.from_numpy(np.packbits(mask.numpy()))
        packed[name] = (tuple(t.shape), bits, flat[mask].float().clone())
    return saved_bytes(packed)

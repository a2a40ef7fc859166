"""Layer factorizations for AdaDeep's per-layer choices: low-rank and depthwise-separable.

``lowrank``    a conv k x k (C -> O) becomes conv k x k (C -> r) + conv 1x1 (r -> O); a linear
               layer (C -> O) becomes linear (C -> r) + linear (r -> O). Initialised from the
               truncated SVD of the weight (the best rank-r approximation).
``depthwise``  a conv k x k (C -> O) becomes depthwise k x k (C -> C, groups C) + pointwise
               1x1 (C -> O) (MobileNet's block). Initialised from the best rank-1 separable
               approximation of each input channel's slice W[:, c] = p_c (outer) d_c.

``factorize(model, plan)`` replaces the layers in place (with weights);
``factorize(model, plan, init=False)`` builds the same structure with fresh weights, which is
how ``create_model("adadeep", ...)`` rebuilds a stored model before loading its state dict.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def rank_of(layer: nn.Module, fraction: float) -> int:
    full = min(layer.out_channels, layer.in_channels * math.prod(layer.kernel_size)) if isinstance(layer, nn.Conv2d) \
        else min(layer.out_features, layer.in_features)
    return max(1, int(round(fraction * full)))


@torch.no_grad()
def lowrank(layer: nn.Module, fraction: float, init: bool = True) -> nn.Sequential:
    r = rank_of(layer, fraction)
    bias = layer.bias is not None
    if isinstance(layer, nn.Conv2d):
        first = nn.Conv2d(layer.in_channels, r, layer.kernel_size, layer.stride, layer.padding, layer.dilation, bias=False)
        second = nn.Conv2d(r, layer.out_channels, 1, bias=bias)
    else:
        first, second = nn.Linear(layer.in_features, r, bias=False), nn.Linear(r, layer.out_features, bias=bias)
    if init:
        w = layer.weight.detach().flatten(1).double()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        root = s[:r].sqrt()
        first.weight.copy_((root[:, None] * vh[:r]).view_as(first.weight).to(first.weight.dtype))
        second.weight.copy_((u[:, :r] * root).view_as(second.weight).to(second.weight.dtype))
        if bias:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


@torch.no_grad()
def depthwise(layer: nn.Conv2d, init: bool = True) -> nn.Sequential:
    cin, cout = layer.in_channels, layer.out_channels
    dw = nn.Conv2d(cin, cin, layer.kernel_size, layer.stride, layer.padding, layer.dilation, groups=cin, bias=False)
    pw = nn.Conv2d(cin, cout, 1, bias=layer.bias is not None)
    if init:
        for c in range(cin):
            u, s, vh = torch.linalg.svd(layer.weight[:, c].flatten(1).double(), full_matrices=False)  # [O, k*k]
            root = s[0].sqrt()
            dw.weight[c, 0].copy_((root * vh[0]).view(layer.kernel_size).to(dw.weight.dtype))
            pw.weight[:, c, 0, 0].copy_((root * u[:, 0]).to(pw.weight.dtype))
        if layer.bias is not None:
            pw.bias.copy_(layer.bias)
    return nn.Sequential(dw, pw)


def can_apply(layer: nn.Module, technique: str) -> bool:
    if technique in ("none", "prune"):
        return True
    if technique == "lowrank":
        return isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1)
    if technique == "depthwise":
        return isinstance(layer, nn.Conv2d) and layer.groups == 1 and max(layer.kernel_size) > 1
    raise ValueError(f"unknown technique {technique!r}")


def factorize(model: nn.Module, plan: dict[str, dict], init: bool = True) -> nn.Module:
    """Replace every layer whose plan says lowrank / depthwise; other entries are left alone."""
    modules = dict(model.named_modules())
    for name, step in plan.items():
        technique = step["technique"]
        if technique not in ("lowrank", "depthwise"):
            continue
        layer = modules[name]
        if not can_apply(layer, technique):
            raise ValueError(f"{name}: {technique} does not apply to {type(layer).__name__}")
        new = lowrank(layer, step["amount"], init) if technique == "lowrank" else depthwise(layer, init)
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, new)
    return model

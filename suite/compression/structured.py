"""Structured (channel) pruning that really removes channels, so latency drops.

Torch-Pruning's dependency graph (Fang et al., CVPR 2023) finds every layer coupled to a
pruned channel (the next conv's input, the BatchNorm, a residual sum, a depthwise group,
the first linear layer after a flatten) and shrinks them together. Importance is the L1
norm of each channel group's weights (Li et al., "Pruning Filters for Efficient ConvNets").

A pruned network is no longer what its factory builds: ``suite.models.resized`` stores it
as its factory call plus the shape of every layer and rebuilds it by name, which keeps
loading, export and evaluation the same for pruned and unpruned models.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp


def _under(name: str, prefixes: list[str] | None) -> bool:
    return not prefixes or any(name == p or name.startswith(p + ".") for p in prefixes)


def prune_channels(model: nn.Module, ratio: float | dict[str, float], example: torch.Tensor,
                   prefixes: list[str] | None = None, keep_outputs: tuple[str, ...] = ("head",)) -> nn.Module:
    """Remove ``ratio`` of the channels of every prunable layer (under ``prefixes`` when
    given), in place; or, with ``ratio`` a {layer name: ratio} map, of just those layers.
    The output layers named in ``keep_outputs`` keep their width."""
    per_layer = ratio if isinstance(ratio, dict) else None
    for r in (per_layer or {"": ratio}).values():
        if not 0 < r < 1:
            raise ValueError(f"channel pruning ratio must be in (0, 1), got {r}")

    def pruned(name: str) -> bool:
        if name in keep_outputs or name.split(".")[-1] in keep_outputs:
            return False
        return name in per_layer if per_layer is not None else _under(name, prefixes)

    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d))}
    ignored = [m for n, m in layers.items() if not pruned(n)]
    model.eval()
    pruner = tp.pruner.MagnitudePruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=1), ignored_layers=ignored,
        pruning_ratio=0.0 if per_layer is not None else ratio,
        pruning_ratio_dict={layers[n]: r for n, r in per_layer.items()} if per_layer is not None else None)
    pruner.step()
    return model


def keep_channels(model: nn.Module, example: torch.Tensor, keep: dict[str, list[int]]) -> nn.Module:
    """Keep only the listed output channels of the named layers (and everything coupled to them), in place."""
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    modules = dict(model.named_modules())
    for name, kept in keep.items():
        layer = modules[name]
        width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        drop = sorted(set(range(width)) - set(kept))
        if not drop:
            continue
        fn = tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d) else tp.prune_linear_out_channels
        group = graph.get_pruning_group(layer, fn, idxs=drop)
        if graph.check_pruning_group(group):
            group.prune()
    return model

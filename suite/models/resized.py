"""A model whose layers were changed after it was built (structured pruning, SubFlow subnetworks, AdaDeep).

It is stored as its factory call plus the shape of every conv / BN / linear layer
(``architecture``); ``create_model("resized", base=..., base_kwargs=..., shapes=...)``
builds the base model and swaps each listed layer for a fresh one of that shape, ready for
``load_state_dict`` of the pruned weights.
"""

from __future__ import annotations

import torch.nn as nn

from suite.compression.factorize import factorize
from suite.models.registry import create_model, register

_SHAPED = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


def architecture(model: nn.Module) -> dict[str, list[int]]:
    """The shape of every conv / BN / linear layer: conv [in, out, groups], BN [features], linear [in, out]."""
    shapes = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            shapes[name] = [m.in_channels, m.out_channels, m.groups]
        elif isinstance(m, nn.BatchNorm2d):
            shapes[name] = [m.num_features]
        elif isinstance(m, nn.Linear):
            shapes[name] = [m.in_features, m.out_features]
    return shapes


def _resized_layer(old: nn.Module, shape: list[int]) -> nn.Module:
    if isinstance(old, nn.Conv2d):
        cin, cout, groups = shape
        return nn.Conv2d(cin, cout, old.kernel_size, old.stride, old.padding, old.dilation, groups,
                         old.bias is not None, old.padding_mode)
    if isinstance(old, nn.BatchNorm2d):
        return nn.BatchNorm2d(shape[0], old.eps, old.momentum, old.affine, old.track_running_stats)
    return nn.Linear(shape[0], shape[1], old.bias is not None)


@register("resized")
def resized(base: str, base_kwargs: dict, shapes: dict[str, list[int]], **geometry) -> nn.Module:
    """``base`` built with ``base_kwargs``, then every layer in ``shapes`` swapped for one of that shape."""
    model = create_model(base, **{**geometry, **base_kwargs})
    modules = dict(model.named_modules())
    for name, shape in shapes.items():
        if name not in modules or not isinstance(modules[name], _SHAPED):
            raise ValueError(f"resized {base}: no conv/BN/linear layer named {name!r}")
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        setattr(parent, child, _resized_layer(modules[name], shape))
    return model


def resized_spec(base: str, base_kwargs: dict, model: nn.Module) -> tuple[str, dict]:
    """(name, kwargs) that ``create_model`` rebuilds ``model``'s (pruned) architecture from."""
    return "resized", {"base": base, "base_kwargs": base_kwargs, "shapes": architecture(model)}


@register("adadeep")
def adadeep(base: str, base_kwargs: dict, shapes: dict[str, list[int]], plan: dict[str, dict], **geometry) -> nn.Module:
    """An AdaDeep-compressed model: ``base`` resized to ``shapes`` (its channel pruning), then
    the plan's low-rank / depthwise-separable replacements (``suite.compression.factorize``)."""
    return factorize(resized(base, base_kwargs, shapes, **geometry), plan, init=False)

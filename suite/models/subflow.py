"""SubFlow (Lee & Nirjon, RTAS 2020): one network whose induced subnetworks run on their own.

Every conv / hidden linear layer ranks its output channels once by importance (L1 norm of
the trained weights, computed from the network SubFlow starts from). At a utilization
ratio ``r`` a layer keeps its ``ceil(r * C)`` most important channels and zeroes the rest
(after BatchNorm, so a dropped channel is exactly 0 downstream). Training samples a ratio
from ``ratios`` at every step, so all subnetworks learn together. ``extract`` then cuts the
subnetwork at a ratio out for real (Torch-Pruning removes the dropped channels and the
next layers' inputs) and re-estimates BatchNorm statistics for it; the stage picks the
largest ratio whose batch-1 latency meets the budget.

``create_model("subflow", base=..., base_kwargs=..., ratios=[...])`` builds the base model
with the ranking buffers and masking hooks attached; its weights keep the base's names.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn as nn

from suite.compression.structured import keep_channels
from suite.models.registry import create_model, register
from suite.models.resized import resized_spec


def maskable_layers(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """(name, layer, the module whose output is masked) for every conv / hidden linear layer:
    the BatchNorm right after a conv when there is one, else the layer itself. The output
    layer (``head``) keeps all its units."""
    found = []
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for i, (child_name, child) in enumerate(children):
            if not isinstance(child, (nn.Conv2d, nn.Linear)) or child_name == "head":
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            after = children[i + 1][1] if i + 1 < len(children) else None
            found.append((name, child, after if isinstance(after, nn.BatchNorm2d) else child))
    return found


def kept(order: torch.Tensor, ratio: float) -> torch.Tensor:
    return order[: max(1, math.ceil(ratio * len(order)))]


@torch.no_grad()
def rank(model: nn.Module) -> None:
    """Fix each layer's channel order from its current weights (most important first)."""
    for i, (_, layer, _) in enumerate(maskable_layers(model)):
        importance = layer.weight.detach().abs().flatten(1).sum(1)
        getattr(model, f"subflow_order_{i}").copy_(torch.argsort(importance, descending=True))
    model.subflow_ranked.fill_(True)


@register("subflow")
def subflow(base: str, base_kwargs: dict, ratios: list[float], **geometry) -> nn.Module:
    model = create_model(base, **{**geometry, **base_kwargs})
    layers = maskable_layers(model)
    for i, (_, layer, _) in enumerate(layers):
        width = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        model.register_buffer(f"subflow_order_{i}", torch.arange(width))
    model.register_buffer("subflow_ranked", torch.tensor(False))
    model.subflow_ratios = sorted(ratios)
    model.subflow_ratio = 1.0  # used in eval mode
    model._subflow_step_ratio = 1.0
    # Training forward passes so far: a buffer, so that a resumed training draws what it would have
    model.register_buffer("subflow_steps", torch.tensor(0))

    def pick_ratio(module, args):
        if module.training:
            if not bool(module.subflow_ranked):  # first step after loading the starting weights
                rank(module)
            # A draw that depends on the step alone: every data-parallel worker trains the same
            # width in the same step (an unseeded draw gave each its own), run after run.
            # (One int() per step: SubFlow's only sync, beside its per-layer masks.)
            module._subflow_step_ratio = random.Random(int(module.subflow_steps)).choice(module.subflow_ratios)
            module.subflow_steps += 1

    def mask_hook(i):
        def hook(module, args, out):
            ratio = model._subflow_step_ratio if model.training else model.subflow_ratio
            if ratio >= 1.0:
                return out
            mask = torch.zeros(out.shape[1], device=out.device, dtype=out.dtype)
            mask[kept(getattr(model, f"subflow_order_{i}"), ratio)] = 1
            return out * mask.view(1, -1, *([1] * (out.dim() - 2)))
        return hook

    model.register_forward_pre_hook(pick_ratio)
    for i, (_, _, point) in enumerate(layers):
        point.register_forward_hook(mask_hook(i))
    return model


def extract(model: nn.Module, base: str, base_kwargs: dict, geometry: dict, ratio: float,
            calibration: torch.Tensor, recalibrate: bool = True) -> tuple[nn.Module, tuple[str, dict]]:
    """The subnetwork at ``ratio`` as a plain, smaller model (no hooks), its BatchNorm
    statistics re-estimated on ``calibration`` images (unless ``recalibrate`` is off);
    returns it and its (name, kwargs)."""
    plain = create_model(base, **{**geometry, **base_kwargs})
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("subflow_")})
    plain = plain.cpu().eval()
    if ratio < 1.0:
        keep = {name: kept(getattr(model, f"subflow_order_{i}").cpu(), ratio).tolist()
                for i, (name, _, _) in enumerate(maskable_layers(plain))}
        example = calibration[:1].cpu()
        keep_channels(plain, example, keep)
    if recalibrate:
        recalibrate_batchnorm(plain, calibration)
    return plain.eval(), resized_spec(base, {**base_kwargs}, plain)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch: int = 128) -> None:
    """Running BatchNorm statistics recomputed from scratch (cumulative average) on ``images``."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i in range(0, len(images), batch):
        model(images[i : i + batch])
    for m, momentum in saved:
        m.momentum = momentum
    model.eval()

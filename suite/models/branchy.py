"""BranchyNet (Teerapittayanon et al., ICPR 2016): B-LeNet and B-AlexNet with side exits.

The baseline's convolutional body is cut after its early pooling layers; each cut gets a
small side branch (conv 3x3 + ReLU + 4x4 average pool + linear) ending in its own
classifier. All exits train jointly (the sum of their cross-entropies). At inference an
image leaves at the first exit whose softmax entropy is below that exit's threshold
(``thresholds``, a buffer chosen on validation data after training; a negative threshold
never exits), else at the final exit.

``forward`` returns all exits stacked ``[exits, batch, classes]`` in training mode or when
``return_all`` is set, and the early-exit prediction otherwise; ``exit_index`` of the last
call tells which exit each image took. The early exit is data-dependent Python control
flow, so B-nets are measured here in PyTorch and are not exported to ONNX / TorchScript.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.models.classic import alexnet, lenet
from suite.models.registry import register


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)


class BranchyNet(nn.Module):
    def __init__(self, backbone: nn.Module, cuts: tuple[int, ...], example: torch.Tensor, num_classes: int,
                 branch_channels: int):
        super().__init__()
        layers = list(backbone.body)
        bounds = (0, *cuts, len(layers))
        self.stages = nn.ModuleList(nn.Sequential(*layers[a:b]) for a, b in zip(bounds, bounds[1:]))
        branches = []
        x = example
        for stage in self.stages[:-1]:
            x = stage(x)
            branches.append(nn.Sequential(
                nn.Conv2d(x.shape[1], branch_channels, 3, padding=1), nn.ReLU(inplace=True),
                nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(branch_channels * 16, num_classes)))
        self.branches = nn.ModuleList(branches)
        self.neck, self.head = backbone.neck, backbone.head
        self.register_buffer("thresholds", torch.full((len(branches),), -1.0))
        self.return_all = False
        self.exit_index = torch.empty(0, dtype=torch.long)

    @property
    def num_exits(self) -> int:
        return len(self.stages)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(torch.flatten(x, 1)))

    def forward_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage, branch in zip(self.stages[:-1], self.branches):
            x = stage(x)
            outs.append(branch(x))
        outs.append(self._final(self.stages[-1](x)))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.return_all:
            return torch.stack(self.forward_exits(x))
        return self.early_exit(x)

    def early_exit(self, x: torch.Tensor) -> torch.Tensor:
        """Each image's logits from the first exit confident enough; later stages run only
        on the images still undecided (at batch 1: only as far as the image needs)."""
        n = x.shape[0]
        out = torch.empty(0, device=x.device)
        taken = torch.full((n,), self.num_exits - 1, dtype=torch.long, device=x.device)
        alive = torch.arange(n, device=x.device)
        for i, (stage, branch) in enumerate(zip(self.stages[:-1], self.branches)):
            x = stage(x)
            threshold = float(self.thresholds[i])
            if threshold < 0:
                continue
            logits = branch(x)
            if out.numel() == 0:
                out = logits.new_empty((n, logits.shape[1]))
            done = entropy(logits) < threshold
            if bool(done.any()):
                out[alive[done]] = logits[done]
                taken[alive[done]] = i
                keep = ~done
                x, alive = x[keep], alive[keep]
                if alive.numel() == 0:
                    self.exit_index = taken
                    return out
        final = self._final(self.stages[-1](x))
        if out.numel() == 0:
            out = final.new_empty((n, final.shape[1]))
        out[alive] = final
        self.exit_index = taken
        return out


@register("branchy_lenet")
def branchy_lenet(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> BranchyNet:
    """B-LeNet: one side exit after LeNet's first conv + pool."""
    example = torch.zeros(1, in_channels, image_size, image_size)
    return BranchyNet(lenet(in_channels, image_size, num_classes), (3,), example, num_classes, branch_channels=8)


@register("branchy_alexnet")
def branchy_alexnet(in_channels: int = 3, image_size: int = 32, num_classes: int = 10) -> BranchyNet:
    """B-AlexNet: side exits after AlexNet's first and second conv + pool."""
    example = torch.zeros(1, in_channels, image_size, image_size)
    return BranchyNet(alexnet(in_channels, image_size, num_classes), (4, 8), example, num_classes, branch_channels=32)


@torch.no_grad()
def component_inputs(model: BranchyNet, example: torch.Tensor) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Every piece of the net with the input it sees at batch 1, for timing each alone:
    ``stage{i}``, ``branch{i}`` and ``final`` (the dense layers after the last stage)."""
    parts, x = {}, example[:1]
    for i, stage in enumerate(model.stages):
        parts[f"stage{i}"] = (stage, x)
        x = stage(x)
        if i < len(model.branches):
            parts[f"branch{i}"] = (model.branches[i], x)
    parts["final"] = (nn.Sequential(nn.Flatten(), model.neck, model.head), x)
    return parts


def exit_costs(costs: dict[str, float], thresholds: list[float]) -> list[float]:
    """Batch-1 time to leave at each exit: the stages up to it plus every active branch on the way."""
    out, total = [], 0.0
    for i in range(len(thresholds) + 1):
        total += costs[f"stage{i}"]
        if i < len(thresholds):
            if thresholds[i] >= 0:
                total += costs[f"branch{i}"]
            out.append(total)
        else:
            out.append(total + costs["final"])
    return out


def simulate(exit_logits: list[torch.Tensor], labels: torch.Tensor, thresholds: list[float]) -> tuple[float, list[float]]:
    """(accuracy, share of images per exit) of early exit with ``thresholds`` on precomputed logits."""
    n = len(labels)
    taken = torch.full((n,), len(exit_logits) - 1, dtype=torch.long)
    undecided = torch.ones(n, dtype=torch.bool)
    for i, t in enumerate(thresholds):
        if t < 0:
            continue
        leave = undecided & (entropy(exit_logits[i]) < t)
        taken[leave] = i
        undecided &= ~leave
    preds = torch.stack([l.argmax(1) for l in exit_logits])[taken, torch.arange(n)]
    shares = torch.bincount(taken, minlength=len(exit_logits)).float() / max(n, 1)
    return float((preds == labels).float().mean()), shares.tolist()


def choose_thresholds(exit_logits: list[torch.Tensor], labels: torch.Tensor, costs: dict[str, float],
                      tolerance: float, grid: int = 20) -> dict:
    """The thresholds with the lowest expected batch-1 latency whose validation accuracy stays
    within ``tolerance`` of the final exit's; candidates per exit: "never" and ``grid``
    quantiles of that exit's entropies."""
    final_acc = float((exit_logits[-1].argmax(1) == labels).float().mean())
    candidates = []
    for logits in exit_logits[:-1]:
        ent = entropy(logits)
        qs = torch.quantile(ent.double(), torch.linspace(0, 1, grid + 1, dtype=torch.float64)).tolist()
        candidates.append([-1.0] + sorted({float(q) + 1e-9 for q in qs}))
    best = None
    for thresholds in itertools.product(*candidates):
        acc, shares = simulate(exit_logits, labels, list(thresholds))
        if acc < final_acc - tolerance:
            continue
        expected = sum(s * c for s, c in zip(shares, exit_costs(costs, list(thresholds))))
        if best is None or expected < best["expected_latency_ms"] - 1e-12:
            best = {"thresholds": list(thresholds), "val_acc": acc, "exit_shares": shares, "expected_latency_ms": expected}
    best["final_exit_val_acc"] = final_acc
    return best

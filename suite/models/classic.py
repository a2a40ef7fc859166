"""The paper's baselines: LeNet (MNIST) and AlexNet (CIFAR-10), in 28x28 / 32x32 forms.

Each splits into ``forward_features`` (up to the penultimate layer, used by the
``baseline`` clustering features) and ``head`` (the last linear layer).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from suite.models.registry import register


class Classifier(nn.Module):
    """features -> flatten -> penultimate -> head."""

    def __init__(self, body: nn.Module, neck: nn.Module, head: nn.Linear):
        super().__init__()
        self.body, self.neck, self.head = body, neck, head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(torch.flatten(self.body(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@register("lenet")
def lenet(in_channels: int = 1, image_size: int = 28, num_classes: int = 10, hidden: int = 180) -> Classifier:
    """LeNet-5 with a 180-unit first dense layer: 90.9K parameters on 28x28 (paper: 89.6K)."""
    body = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
    )
    side = (image_size // 2 - 4) // 2
    neck = nn.Sequential(
        nn.Linear(16 * side * side, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, 84), nn.ReLU(inplace=True),
    )
    return Classifier(body, neck, nn.Linear(84, num_classes))


def _conv_bn(cin: int, cout: int, k: int) -> tuple[nn.Module, ...]:
    # BatchNorm lets this 8-layer net train from scratch on [0, 1] inputs in a few epochs
    # (without it the loss sat at ln(10) for two epochs here); it folds away for inference.
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)


@register("alexnet")
def alexnet(in_channels: int = 3, image_size: int = 32, num_classes: int = 10, hidden: int = 1280,
            dropout: float = 0.5) -> Classifier:
    """AlexNet for 32x32 inputs: 5 convolutions (with BatchNorm), 3 dense layers, 9.35M parameters (paper: 9.3M)."""
    body = nn.Sequential(
        *_conv_bn(in_channels, 64, 5), nn.MaxPool2d(2),
        *_conv_bn(64, 192, 5), nn.MaxPool2d(2),
        *_conv_bn(192, 384, 3),
        *_conv_bn(384, 256, 3),
        *_conv_bn(256, 256, 3), nn.MaxPool2d(2),
    )
    side = image_size // 8
    neck = nn.Sequential(
        nn.Dropout(dropout), nn.Linear(256 * side * side, hidden), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
    )
    return Classifier(body, neck, nn.Linear(hidden, num_classes))

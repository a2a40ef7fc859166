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
def lenet(in_channels: int = 1, image_size: int = 28, num_classes: int = 10, hidden: int = 180,
          channels: tuple[int, int] = (6, 16), hidden2: int = 84) -> Classifier:
    """LeNet-5 with a 180-unit first dense layer: 90.9K parameters on 28x28 (paper: 89.6K)."""
    c1, c2 = channels
    body = nn.Sequential(
        nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
    )
    side = (image_size // 2 - 4) // 2
    neck = nn.Sequential(
        nn.Linear(c2 * side * side, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden2), nn.ReLU(inplace=True),
    )
    return Classifier(body, neck, nn.Linear(hidden2, num_classes))


@register("lenet_kd")
def lenet_kd(in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> Classifier:
    """The KD student of Table II: LeNet's layout at 4/8 channels and 48/32 units, 12.5K parameters (paper: 12.6K)."""
    return lenet(in_channels, image_size, num_classes, hidden=48, channels=(4, 8), hidden2=32)


def _conv_bn(cin: int, cout: int, k: int) -> tuple[nn.Module, ...]:
    # BatchNorm lets this 8-layer net train from scratch on [0, 1] inputs in a few epochs
    # (without it the loss sat at ln(10) for two epochs here); it folds away for inference.
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)


@register("alexnet")
def alexnet(in_channels: int = 3, image_size: int = 32, num_classes: int = 10, hidden: int = 1280,
            dropout: float = 0.5, channels: tuple[int, ...] = (64, 192, 384, 256, 256)) -> Classifier:
    """AlexNet for 32x32 inputs: 5 convolutions (with BatchNorm), 3 dense layers, 9.35M parameters (paper: 9.3M)."""
    c = channels
    body = nn.Sequential(
        *_conv_bn(in_channels, c[0], 5), nn.MaxPool2d(2),
        *_conv_bn(c[0], c[1], 5), nn.MaxPool2d(2),
        *_conv_bn(c[1], c[2], 3),
        *_conv_bn(c[2], c[3], 3),
        *_conv_bn(c[3], c[4], 3), nn.MaxPool2d(2),
    )
    side = image_size // 8
    neck = nn.Sequential(
        nn.Dropout(dropout), nn.Linear(c[4] * side * side, hidden), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
    )
    return Classifier(body, neck, nn.Linear(hidden, num_classes))


@register("alexnet_kd")
def alexnet_kd(in_channels: int = 3, image_size: int = 32, num_classes: int = 10) -> Classifier:
    """The KD student of Table I: AlexNet's layout at 32-96 channels and 256 units, 0.58M parameters (paper: 0.55M)."""
    return alexnet(in_channels, image_size, num_classes, hidden=256, channels=(32, 64, 96, 96, 64))

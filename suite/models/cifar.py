"""The larger competitors of Table I in their CIFAR (32x32) forms: ResNet18/32/50, VGG16, MobileNetV2.

ImageNet stems (7x7 stride 2 + max-pool) would shrink a 32x32 image to 8x8 before the first
block, so every model here starts with a 3x3 stride-1 convolution and ends in a global
average pool; they take any ``in_channels`` / ``image_size`` (28x28 MNIST too). Blocks
come from torchvision; ``width`` scales every channel count (tests use small widths).

Parameter counts at width 1, 10 classes (paper's column in brackets; the paper does not
give its CIFAR heads): ResNet18 11.2M (11), ResNet32 0.46M (He et al.'s CIFAR ResNet-32;
the paper's 16M is not that network), ResNet50 23.5M (25.4), VGG16 14.7M with one linear
head (37.9 with ImageNet-sized dense layers), MobileNetV2 2.2M (2.2).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from suite.models.registry import register

# torchvision's blocks are imported inside the builders, on purpose: ``torchvision.models``
# takes 1.7 s to import (it pulls in torch._dynamo), which every CLI call and every fresh Ray
# worker would pay for models most runs never build.


def _scale(c: int, width: float, multiple: int = 4) -> int:
    return max(multiple, int(round(c * width / multiple)) * multiple)


class GlobalPoolClassifier(nn.Module):
    """stem -> stages -> global average pool -> linear head; ``forward_features`` is the pooled vector."""

    def __init__(self, body: nn.Module, features: int, num_classes: int):
        super().__init__()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.body(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _stem(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _resnet(block, stage_blocks: tuple[int, ...], stage_planes: tuple[int, ...], in_channels: int, num_classes: int,
            width: float, stem_planes: int) -> GlobalPoolClassifier:
    inplanes = _scale(stem_planes, width)
    layers: list[nn.Module] = _stem(in_channels, inplanes)
    for i, (n, planes) in enumerate(zip(stage_blocks, stage_planes)):
        planes = _scale(planes, width)
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            down = None
            if stride != 1 or inplanes != planes * block.expansion:
                down = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                     nn.BatchNorm2d(planes * block.expansion))
            layers.append(block(inplanes, planes, stride, down))
            inplanes = planes * block.expansion
    return GlobalPoolClassifier(nn.Sequential(*layers), inplanes, num_classes)


@register("resnet18")
def resnet18(in_channels: int = 3, image_size: int = 32, num_classes: int = 10, width: float = 1.0) -> GlobalPoolClassifier:
    from torchvision.models.resnet import BasicBlock  # deferred: see the note above

    return _resnet(BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), in_channels, num_classes, width, 64)


@register("resnet32")
def resnet32(in_channels: int = 3, image_size: int = 32, num_classes: int = 10, width: float = 1.0) -> GlobalPoolClassifier:
    """He et al.'s CIFAR ResNet: 3 stages of 5 basic blocks at 16/32/64 channels (6n+2 = 32 layers)."""
    from torchvision.models.resnet import BasicBlock  # deferred: see the note above

    return _resnet(BasicBlock, (5, 5, 5), (16, 32, 64), in_channels, num_classes, width, 16)


@register("resnet50")
def resnet50(in_channels: int = 3, image_size: int = 32, num_classes: int = 10, width: float = 1.0) -> GlobalPoolClassifier:
    from torchvision.models.resnet import Bottleneck  # deferred: see the note above

    return _resnet(Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), in_channels, num_classes, width, 64)


VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


@register("vgg16")
def vgg16(in_channels: int = 3, image_size: int = 32, num_classes: int = 10, width: float = 1.0) -> GlobalPoolClassifier:
    """VGG16 with BatchNorm; a max-pool that would shrink the map below 1x1 (28x28 inputs) is left out."""
    layers: list[nn.Module] = []
    cin, side = in_channels, image_size
    for item in VGG16_LAYOUT:
        if item == "M":
            if side >= 2:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            continue
        cout = _scale(item, width)
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        cin = cout
    return GlobalPoolClassifier(nn.Sequential(*layers), cin, num_classes)


# (expansion t, channels c, repeats n, stride s) of Sandler et al.; the CIFAR form keeps the
# first two downsamplings at stride 1 so a 32x32 input ends at 4x4, not 1x1.
MOBILENETV2_LAYOUT = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


@register("mobilenetv2")
def mobilenetv2(in_channels: int = 3, image_size: int = 32, num_classes: int = 10, width: float = 1.0) -> GlobalPoolClassifier:
    from torchvision.models.mobilenetv2 import InvertedResidual  # deferred: see the note above

    cin = _scale(32, width, 8)
    layers: list[nn.Module] = _stem(in_channels, cin)
    for t, c, n, s in MOBILENETV2_LAYOUT:
        cout = _scale(c, width, 8)
        for j in range(n):
            layers.append(InvertedResidual(cin, cout, s if j == 0 else 1, t))
            cin = cout
    last = _scale(1280, max(width, 1.0), 8)
    layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)]
    return GlobalPoolClassifier(nn.Sequential(*layers), last, num_classes)

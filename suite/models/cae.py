"""The converting autoencoder (CAE) and CAE-Net.

The CAE is UNet-derived with 5 conv and 5 deconv layers (paper, Section III-A). For 32x32x3
the encoder is Conv3x3+BN+ReLU blocks of 32, 64, 128, 256 channels at stride 2 and 256 at
stride 1, a 2x2x256 code; the decoder mirrors it with transposed convolutions (stride 1,
then 2, 2, 2, 2), each followed by a concatenation of the matching encoder block, and ends
in a sigmoid so that outputs live in the [0, 1] image space of the targets. The 28x28x1
variant keeps the layout with channels 8, 16, 32, 64, 64 (28 -> 14 -> 7 -> 4 -> 2 -> 2),
sized to LeNet as the paper's MNIST CAE-Net (110K parameters) is.

CAE-Net is the CAE's encoder followed by a thin classifier shaped like the baseline's dense
head (Linear-ReLU-Dropout-Linear), or the authors' head (one 3x3 conv of 6 filters, then a
dense layer to the classes); only the classifier trains when the encoder is frozen.

``skips=False`` drops the UNet concatenations (a plain conv autoencoder): with them the
decoder can copy detail through the skips, so the encoder's code may learn less (issue 12's
ablation).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from suite.models.registry import register

BASE_CHANNELS = {3: (32, 64, 128, 256, 256), 1: (8, 16, 32, 64, 64)}


def _channels(in_channels: int, width: float) -> tuple[int, ...]:
    base = BASE_CHANNELS.get(in_channels, BASE_CHANNELS[3])
    return tuple(max(4, int(round(c * width))) for c in base)


def _conv_block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    """Five Conv3x3+BN+ReLU blocks: four at stride 2, the last at stride 1."""

    def __init__(self, in_channels: int, channels: tuple[int, ...]):
        super().__init__()
        strides = (2, 2, 2, 2, 1)
        cins = (in_channels,) + channels[:-1]
        self.blocks = nn.ModuleList(_conv_block(ci, co, s) for ci, co, s in zip(cins, channels, strides))

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class ConvertingAutoencoder(nn.Module):
    def __init__(self, in_channels: int = 3, image_size: int = 32, width: float = 1.0, skips: bool = True, **_ignored):
        super().__init__()
        ch = _channels(in_channels, width)
        self.skips = skips
        self.encoder = Encoder(in_channels, ch)
        # deconv i takes the previous decoder output, concatenated with encoder block i's output
        # when skips are on
        joined = 2 if skips else 1
        self.up5 = nn.ConvTranspose2d(ch[4], ch[3], 3, stride=1, padding=1)
        self.up4 = nn.ConvTranspose2d(joined * ch[3], ch[2], 3, stride=2, padding=1)
        self.up3 = nn.ConvTranspose2d(joined * ch[2], ch[1], 3, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(joined * ch[1], ch[0], 3, stride=2, padding=1)
        self.up1 = nn.ConvTranspose2d(joined * ch[0], in_channels, 3, stride=2, padding=1)
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in (ch[3], ch[2], ch[1], ch[0]))

    def _join(self, d: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return torch.cat([d, e], 1) if self.skips else d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1, e2, e3, e4, e5 = self.encoder.forward_all(x)
        d = F.relu(self.norms[0](self.up5(e5)))
        d = F.relu(self.norms[1](self.up4(self._join(d, e4), output_size=e3.shape[-2:])))
        d = F.relu(self.norms[2](self.up3(self._join(d, e3), output_size=e2.shape[-2:])))
        d = F.relu(self.norms[3](self.up2(self._join(d, e2), output_size=e1.shape[-2:])))
        return torch.sigmoid(self.up1(self._join(d, e1), output_size=x.shape[-2:]))


HEADS = ("dense", "conv")


class CAENet(nn.Module):
    """The CAE's encoder, then a thin classifier on its code: ``dense`` (Linear-ReLU-Dropout-
    Linear, ``hidden`` units) or ``conv`` (the authors' shape: a 3x3 conv of ``filters``
    channels, ReLU, then one Linear to the classes)."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 10, width: float = 1.0,
                 hidden: int = 256, dropout: float = 0.3, head: str = "dense", filters: int = 6):
        super().__init__()
        ch = _channels(in_channels, width)
        self.encoder = Encoder(in_channels, ch)
        side = image_size
        for _ in range(4):
            side = (side + 1) // 2
        if head == "dense":
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(ch[4] * side * side, hidden), nn.ReLU(inplace=True),
                nn.Dropout(dropout), nn.Linear(hidden, num_classes),
            )
        elif head == "conv":
            self.classifier = nn.Sequential(
                nn.Conv2d(ch[4], filters, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(),
                nn.Linear(filters * side * side, num_classes),
            )
        else:
            raise ValueError(f"unknown CAE-Net head {head!r}; known: {', '.join(HEADS)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier[:-1](self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))


@register("cae")
def cae(in_channels: int = 3, image_size: int = 32, width: float = 1.0, skips: bool = True, **_ignored) -> ConvertingAutoencoder:
    return ConvertingAutoencoder(in_channels, image_size, width, skips)


@register("caenet")
def caenet(in_channels: int = 3, image_size: int = 32, num_classes: int = 10, width: float = 1.0,
           hidden: int = 256, head: str = "dense", filters: int = 6) -> CAENet:
    return CAENet(in_channels, image_size, num_classes, width, hidden, head=head, filters=filters)

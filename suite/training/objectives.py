"""What a training minimises: one small object per objective.

Each objective turns the training split into per-image targets (``targets``), scores a
batch (``loss``) and says whether accuracy means anything for it. The epoch loop, the
evaluation and the Ray wrapper take any of them alike.

  classify     cross-entropy on labels
  kd           Hinton knowledge distillation on the teacher's precomputed logits
  reconstruct  MSE between the model's output and each image's target image
  branchy      the sum of every exit's cross-entropy (BranchyNet's joint training)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Classify:
    name = "classify"
    has_accuracy = True

    def targets(self, images: torch.Tensor, labels: torch.Tensor, extra: dict) -> torch.Tensor:
        return labels

    def loss(self, out: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(out, y, label_smoothing=smoothing)

    def labels(self, y: torch.Tensor) -> torch.Tensor:
        return y


@dataclass(frozen=True)
class Branchy(Classify):
    name = "branchy"

    def loss(self, out: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        outs = out if out.dim() == 3 else out[None]  # [exits, batch, classes] in training, [batch, classes] in eval
        return sum(F.cross_entropy(o, y, label_smoothing=smoothing) for o in outs)


@dataclass(frozen=True)
class Distill:
    """``alpha`` of the loss on the teacher's softened outputs, the rest on the labels."""

    temperature: float
    alpha: float
    name = "kd"
    has_accuracy = True

    def targets(self, images: torch.Tensor, labels: torch.Tensor, extra: dict) -> torch.Tensor:
        logits = torch.tensor(np.asarray(extra["teacher_logits"]), dtype=torch.float32)  # a copy: object-store arrays are read-only
        if len(logits) != len(labels):
            raise ValueError(f"teacher logits for {len(logits)} images, training split has {len(labels)}")
        return torch.cat([labels[:, None].float(), logits], 1)  # column 0: the hard label

    def loss(self, out: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        labels, teacher, t = y[:, 0].long(), y[:, 1:], self.temperature
        soft = F.kl_div(F.log_softmax(out / t, 1), F.softmax(teacher / t, 1), reduction="batchmean") * t * t
        return self.alpha * soft + (1 - self.alpha) * F.cross_entropy(out, labels, label_smoothing=smoothing)

    def labels(self, y: torch.Tensor) -> torch.Tensor:
        return y[:, 0].long()


@dataclass(frozen=True)
class Reconstruct:
    """Each image's target is another training image (its class-cluster's easiest)."""

    name = "reconstruct"
    has_accuracy = False

    def targets(self, images: torch.Tensor, labels: torch.Tensor, extra: dict) -> torch.Tensor:
        index = torch.tensor(np.asarray(extra["targets"]), dtype=torch.long)
        if len(index) != len(images):
            raise ValueError(f"targets for {len(index)} images, training split has {len(images)}")
        return images[index]

    def loss(self, out: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
        return F.mse_loss(out, y.float() / 255.0)

    def labels(self, y: torch.Tensor) -> torch.Tensor:
        raise TypeError("reconstruction has no labels")


Objective = Classify | Branchy | Distill | Reconstruct
NAMES = ("classify", "kd", "reconstruct", "branchy")


def make_objective(name: str, kd: dict | None = None) -> Objective:
    if name == "classify":
        return Classify()
    if name == "branchy":
        return Branchy()
    if name == "reconstruct":
        return Reconstruct()
    if name == "kd":
        kd = kd or {}
        return Distill(temperature=float(kd.get("temperature", 4.0)), alpha=float(kd.get("alpha", 0.7)))
    raise ValueError(f"unknown objective {name!r}; known: {', '.join(NAMES)}")

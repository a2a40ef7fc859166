"""Helpers shared by the stages: loading trained models, batched inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from suite.distributed import storage
from suite.models import create_model


def load_model(name: str, kwargs: dict, weights: Path) -> nn.Module:
    """A trained model from its weights file, read without running code (a crafted file is
    refused in one line that names it)."""
    model = create_model(name, **kwargs)
    model.load_state_dict(storage.load_tensors(str(weights)))
    return model.to(device()).eval()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def batched(fn, images: torch.Tensor, batch: int = 256, progress: bool = False, desc: str = "") -> torch.Tensor:
    """``fn`` over uint8 images in batches (scaled to [0, 1]), concatenated on the CPU."""
    from tqdm import tqdm

    dev = device()
    outs = []
    for i in tqdm(range(0, len(images), batch), desc=desc, disable=not progress, leave=False):
        outs.append(fn(images[i : i + batch].to(dev).float() / 255.0).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def softmax_entropy(logits: torch.Tensor) -> np.ndarray:
    """Shannon entropy (nats) of each row's softmax: low = the baseline is sure = easy image."""
    logp = torch.log_softmax(logits.double(), 1)
    return (-(logp.exp() * logp).sum(1)).numpy()

"""Stage 3: image features for intraclass clustering, through a pluggable extractor.

Extractors (``features.extractor``):
  vgg16-imagenet  the paper's: torchvision VGG16 with ImageNet weights, conv part only, a
                  1x1x512 map for a 32x32 input. Weights load from the torch hub cache or
                  download; on a machine with neither the stage stops with a clear error.
  baseline        the trained baseline's penultimate layer (needs no download)
  pixels          raw pixels (reduced by PCA below)
New extractors register with ``@extractor("name")``: a function (images uint8, ctx, baseline)
-> N x D float array.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from suite.data import load_split
from suite.errors import UserError
from suite.pipeline.context import Context
from suite.pipeline.stage import StageResult
from suite.stages import baseline as baseline_stage
from suite.stages.trained import batched, device, load_model

VERSION = 1

EXTRACTORS: dict[str, Callable] = {}


class FeatureError(UserError, RuntimeError):
    pass


def extractor(name: str):
    def deco(fn):
        EXTRACTORS[name] = fn
        return fn

    return deco


@extractor("pixels")
def pixel_features(images: torch.Tensor, ctx: Context, baseline: StageResult) -> np.ndarray:
    return images.reshape(len(images), -1).float().div(255.0).numpy()


@extractor("baseline")
def baseline_features(images: torch.Tensor, ctx: Context, baseline: StageResult) -> np.ndarray:
    name, kwargs = baseline_stage.model_spec(ctx)
    model = load_model(name, kwargs, baseline.file("model.pt"))
    return batched(model.forward_features, images, progress=ctx.cfg.runtime.bars(), desc="features").numpy()


def load_vgg16_imagenet() -> torch.nn.Module:
    import torchvision  # deferred: torchvision.models takes 1.7 s to import; only this extractor needs it

    try:
        weights = torchvision.models.VGG16_Weights.IMAGENET1K_V1
        return torchvision.models.vgg16(weights=weights).features.eval()
    except Exception as exc:
        reason = str(exc).splitlines()[0][:100] if str(exc) else exc.__class__.__name__
        raise FeatureError(
            f"vgg16-imagenet: ImageNet weights are not in {torch.hub.get_dir()}/checkpoints and cannot be downloaded "
            f"({reason}); copy vgg16-397923af.pth there or set features.extractor to 'baseline' or 'pixels'"
        ) from None


@extractor("vgg16-imagenet")
def vgg16_features(images: torch.Tensor, ctx: Context, baseline: StageResult) -> np.ndarray:
    net = load_vgg16_imagenet().to(device())
    mean = torch.tensor([0.485, 0.456, 0.406], device=device()).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device()).view(1, 3, 1, 1)

    def fn(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:  # grey digits: repeat to three channels, pad 28 -> 32
            x = torch.nn.functional.pad(x.repeat(1, 3, 1, 1), (2, 2, 2, 2))
        return torch.flatten(net((x - mean) / std), 1)

    return batched(fn, images, progress=ctx.cfg.runtime.bars(), desc="vgg16 features").numpy()


def reduce(features: np.ndarray, dim: int | None, seed: int) -> np.ndarray:
    """PCA to ``dim`` components (fitted on all training images), float32."""
    features = features.astype(np.float32)
    if dim is None or features.shape[1] <= dim or len(features) <= dim:
        return features
    from sklearn.decomposition import PCA  # deferred: scikit-learn takes ~1 s to import; only PCA needs it

    return PCA(n_components=dim, random_state=seed).fit_transform(features).astype(np.float32)


def _params(ctx: Context) -> dict:
    return {"data": ctx.data_params(), **ctx.cfg.features.model_dump()}


def preflight(ctx: Context) -> None:
    """Fail before any training when the stage would need ImageNet weights it cannot get (the
    paper's VGG16 offline): one line, instead of an error after the baseline has trained.
    Extractors that need the baseline's weights have nothing to check ahead."""
    if ctx.cfg.features.extractor != "vgg16-imagenet" or ctx.runner.plan or ctx.runner.require_cached:
        return
    if ctx.runner.finished("features", VERSION, _params(ctx), []):
        return
    with _PREFLIGHT:  # a study's cells check at once: one downloads, the others then find the file
        _have_vgg16_weights()


_PREFLIGHT = threading.Lock()


def _have_vgg16_weights() -> None:
    """VGG16's ImageNet weights in the torch hub cache, downloaded if missing; FeatureError if they cannot be."""
    import torchvision  # deferred: torchvision.models takes 1.7 s to import; only this extractor needs it

    url = torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    if not (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file():
        load_vgg16_imagenet()  # downloads the weights now (it would later), or fails in one line


def run(ctx: Context, baseline: StageResult) -> StageResult:
    fcfg = ctx.cfg.features
    params = _params(ctx)
    inputs = [baseline] if fcfg.extractor == "baseline" else []

    def body(work, run_id):
        ds = load_split(ctx.cfg.data, "train")
        raw = EXTRACTORS[fcfg.extractor](ds.images, ctx, baseline)
        feats = reduce(raw, fcfg.pca_dim, ctx.cfg.data.seed)
        np.save(work / "features.npy", feats)
        return {"raw_dim": int(raw.shape[1]), "dim": int(feats.shape[1]), "images": len(feats)}

    return ctx.runner.run("features", VERSION, params, inputs, body)

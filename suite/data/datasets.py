"""Image datasets read from their standard on-disk layouts.

Each dataset is a ``DatasetSource`` in ``suite/data/sources/`` (its layout is in that module's
docstring); ``suite.data.catalog`` finds them, so this module names none.

The root comes from the config (``data.root``), else ``$CAENET_DATA`` (several folders may
be joined with ``:``), else the offline copies a machine of this project ships
(``../shared/data`` beside the checkout). Missing files fall back to torchvision's download;
when that fails too, the error names where it looked and how to fix it. The files are read
directly (not through torchvision's classes) so that reduced offline copies with honest
headers load, while truncated or corrupt files are caught and named.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from suite.config import DataConfig
from suite.data import catalog
from suite.data.formats import DataError
from suite.data.catalog import DatasetInfo

REPO_ROOT = Path(__file__).resolve().parents[2]

# name -> DatasetInfo of every registered dataset (read-only; a new source appears here by itself)
INFO: Mapping[str, DatasetInfo] = catalog.InfoView()


@dataclass
class ImageSet:
    """Images as uint8 N x C x H x W and int64 labels, in the file's order."""

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo
    source: Path

    def __len__(self) -> int:
        return len(self.labels)

    def floats(self, idx=None) -> torch.Tensor:
        """Images scaled to [0, 1] (the input space of every model and of the CAE's targets)."""
        x = self.images if idx is None else self.images[idx]
        return x.float().div_(255.0)


# ---------------------------------------------------------------------------- locating


def candidate_roots(root: str | None) -> list[Path]:
    if root:
        return [Path(root).expanduser()]
    env = os.environ.get("CAENET_DATA")
    if env:
        return [Path(p).expanduser() for p in env.split(":") if p]
    return [REPO_ROOT.parent / "shared" / "data", Path.cwd() / "data", Path.home() / ".cache" / "caenet" / "data"]


def resolve(name: str, cfg_root: str | None, download: bool) -> Path:
    source = catalog.get(name)  # DataError naming the known datasets
    roots = candidate_roots(cfg_root)
    found = source.locate(roots)
    if found is not None:
        return found
    looked = ", ".join(str(r) for r in roots)
    fix = f"set data.root or CAENET_DATA to a folder holding {source.expected}"
    if not download:
        raise DataError(f"{name}: not found under {looked}; {fix}")
    target = roots[0]
    try:
        source.download(target)
    except Exception as exc:  # no internet, read-only folder, ...
        reason = str(exc).splitlines()[0][:120] if str(exc) else exc.__class__.__name__
        raise DataError(f"{name}: not found under {looked} and download to {target} failed ({reason}); {fix}") from None
    found = source.locate([target])
    if found is None:
        raise DataError(f"{name}: downloaded to {target} but the layout is not there; {fix}")
    return found


# ---------------------------------------------------------------------------- loading


def load_split(cfg: DataConfig, split: str) -> ImageSet:
    """The train or test images of ``cfg.dataset``, limited to the first N when configured (and
    to the first ``fraction`` of those for training)."""
    limit = cfg.train_limit if split == "train" else cfg.test_limit
    images = _read_split(cfg.dataset, cfg.root, cfg.download, split, limit)
    if split == "train" and cfg.fraction < 1.0:
        keep = max(1, round(cfg.fraction * len(images.labels)))
        images = dataclasses.replace(images, images=images.images[:keep], labels=images.labels[:keep])
    return images


def _read_split(name: str, root: str | None, download: bool, split: str, limit: int | None) -> ImageSet:
    """``load_split`` without a DataConfig, so ``check`` reads any registered name."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    source = catalog.get(name)
    folder = resolve(name, root, download)
    images, labels = source.read(folder, split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    info = dataclasses.replace(source.info, classes=source.class_names(folder))
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise DataError(f"{folder}: labels outside 0..{info.num_classes - 1}; the files are corrupt, re-download them")
    images = images if images.flags.writeable else images.copy()
    return ImageSet(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64)), info, folder)


def split_train_val(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """A boolean mask, True for the held-out validation images (fixed by the seed)."""
    mask = np.zeros(n, dtype=bool)
    n_val = int(round(n * val_fraction))
    if n_val:
        mask[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return mask


def fit_and_val(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fit images, fit labels, val images, val labels): the training split read once and cut
    by ``split_train_val``, as the trainings cut it (uint8 images)."""
    train = load_split(cfg, "train")
    val = torch.from_numpy(split_train_val(len(train), cfg.val_fraction, cfg.seed))
    return train.images[~val], train.labels[~val], train.images[val], train.labels[val]


def check(name: str, root: str | None = None, download: bool = False) -> dict:
    """Read both splits in full and summarise them (``caenet data check``)."""
    summary: dict = {"dataset": name}
    for split in ("train", "test"):
        ds = _read_split(name, root, download, split, None)
        counts = torch.bincount(ds.labels, minlength=ds.info.num_classes)
        summary["path"] = str(ds.source)
        summary[split] = {
            "images": len(ds),
            "shape": list(ds.images.shape[1:]),
            "per_class_min": int(counts.min()),
            "per_class_max": int(counts.max()),
        }
    return summary

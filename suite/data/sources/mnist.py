"""MNIST and Fashion-MNIST: IDX files, plain or gzipped.

  mnist          MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]   (torchvision)
  fashion-mnist  FashionMNIST/raw/... (torchvision), fashion-mnist/..., the root itself, or the
                 flat files of Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)

``IdxSource`` serves any other dataset shipped in this layout: subclass it and name the folders.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import numpy as np

from suite.data.formats import DataError, read_idx
from suite.data.catalog import DatasetInfo, DatasetSource, register

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def idx_stems(split: str) -> tuple[str, str]:
    """The image and label file names of a split, without ``.gz``."""
    stem = "train" if split == "train" else "t10k"
    return f"{stem}-images-idx3-ubyte", f"{stem}-labels-idx1-ubyte"


def find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def read_idx_pair(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split's images (N x 1 x H x W) and labels, each checked against its header and each other."""
    img_stem, lbl_stem = idx_stems(split)
    img_path, lbl_path = find_idx(folder, img_stem), find_idx(folder, lbl_stem)
    if img_path is None or lbl_path is None:
        missing = img_stem if img_path is None else lbl_stem
        raise DataError(f"{folder / missing}(.gz): missing; restore the file or re-download the dataset")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{folder}: {img_path.name} and {lbl_path.name} disagree ({images.shape} vs {labels.shape})")
    return images[:, None], labels


class IdxSource(DatasetSource):
    """A dataset of ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` files in one folder."""

    @abstractmethod
    def folders(self, root: Path) -> list[Path]:
        """Where under ``root`` the files may lie, most likely first."""

    def locate(self, roots: list[Path]) -> Path | None:
        for root in roots:
            for folder in self.folders(root):
                if find_idx(folder, idx_stems("train")[0]) and find_idx(folder, idx_stems("test")[0]):
                    return folder
        return None

    def read(self, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        return read_idx_pair(folder, split)


@register
class Mnist(IdxSource):
    info = DatasetInfo("mnist", 1, 28, 10, tuple(str(i) for i in range(10)))
    expected = "MNIST/raw/train-images-idx3-ubyte.gz ..."
    torchvision = "MNIST"
    order = 0

    def folders(self, root: Path) -> list[Path]:
        return [root / "MNIST" / "raw"]


@register
class FashionMnist(IdxSource):
    info = DatasetInfo("fashion-mnist", 1, 28, 10, ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"))
    expected = "FashionMNIST/raw/train-images-idx3-ubyte.gz ... (or apt-get install dataset-fashion-mnist)"
    torchvision = "FashionMNIST"
    order = 1

    def folders(self, root: Path) -> list[Path]:
        return [root / "FashionMNIST" / "raw", root / "fashion-mnist", root, DEBIAN_FASHION]

    def locate(self, roots: list[Path]) -> Path | None:
        found = super().locate(roots)
        if found is None and find_idx(DEBIAN_FASHION, idx_stems("train")[0]):
            return DEBIAN_FASHION  # the package's files, even without a test split (read() then names it)
        return found

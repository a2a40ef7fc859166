"""CIFAR-10 and CIFAR-100: the "python version" pickles, built by the arrays-only unpickler.

  cifar10   cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}
  cifar100  cifar-100-python/{train,test,meta}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from suite.data.formats import DataError, unpickle_arrays
from suite.data.catalog import DatasetInfo, DatasetSource, register


def cifar_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images N x 3 x 32 x 32 and the labels under ``label_key``."""
    batch = unpickle_arrays(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except KeyError as exc:
        raise DataError(f"{path}: no {exc} entry; not a CIFAR batch, delete it and re-download") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path}: expected N x 3072 images with N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


class _CifarSource(DatasetSource):
    dirname: str  # the folder torchvision's download unpacks

    def locate(self, roots: list[Path]) -> Path | None:
        for root in roots:
            if (root / self.dirname).is_dir():
                return root / self.dirname
        return None


@register
class Cifar10(_CifarSource):
    info = DatasetInfo("cifar10", 3, 32, 10, ("airplane", "automobile", "bird", "cat", "deer",
                                              "dog", "frog", "horse", "ship", "truck"))
    expected = "cifar-10-batches-py/data_batch_1 ..."
    torchvision = "CIFAR10"
    dirname = "cifar-10-batches-py"
    order = 2

    def read(self, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        parts = [cifar_arrays(folder / f, "labels") for f in files]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@register
class Cifar100(_CifarSource):
    info = DatasetInfo("cifar100", 3, 32, 100, tuple(f"class_{i}" for i in range(100)))
    expected = "cifar-100-python/train ..."
    torchvision = "CIFAR100"
    dirname = "cifar-100-python"
    order = 3

    def read(self, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        return cifar_arrays(folder / split, "fine_labels")

    def class_names(self, folder: Path) -> tuple[str, ...]:
        if (folder / "meta").is_file():
            return tuple(unpickle_arrays(folder / "meta").get("fine_label_names", self.info.classes))
        return self.info.classes

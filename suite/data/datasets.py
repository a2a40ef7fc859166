"""Image datasets read from their standard on-disk layouts.

Layouts (under a data root):
  mnist          MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]   (torchvision)
  fashion-mnist  FashionMNIST/raw/... (torchvision), fashion-mnist/..., or the flat IDX
                 files of Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
  cifar10        cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}
  cifar100       cifar-100-python/{train,test,meta}

The root comes from the config (``data.root``), else ``$CAENET_DATA`` (several folders may
be joined with ``:``), else the offline copies a machine of this project ships
(``../shared/data`` beside the checkout). Missing files fall back to torchvision's download;
when that fails too, the error names where it looked and how to fix it. The files are read
directly (not through torchvision's classes) so that reduced offline copies with honest
headers load, while truncated or corrupt files are caught and named.
"""

from __future__ import annotations

from suite.errors import UserError

import gzip
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from suite.config import DataConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


class DataError(UserError, RuntimeError):
    """A dataset that cannot be read; the message names the path and the fix."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    size: int  # height == width
    num_classes: int
    classes: tuple[str, ...]


_DIGITS = tuple(str(i) for i in range(10))
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

INFO = {
    "mnist": DatasetInfo("mnist", 1, 28, 10, _DIGITS),
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 28, 10, _FASHION),
    "cifar10": DatasetInfo("cifar10", 3, 32, 10, _CIFAR10),
    "cifar100": DatasetInfo("cifar100", 3, 32, 100, tuple(f"class_{i}" for i in range(100))),
}


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


def _idx_dirs(name: str, root: Path) -> list[Path]:
    if name == "mnist":
        return [root / "MNIST" / "raw"]
    return [root / "FashionMNIST" / "raw", root / "fashion-mnist", root]


def _idx_files(split: str) -> tuple[str, str]:
    stem = "train" if split == "train" else "t10k"
    return f"{stem}-images-idx3-ubyte", f"{stem}-labels-idx1-ubyte"


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _locate(name: str, roots: list[Path]) -> Path | None:
    """The folder holding the dataset's files under one of the roots, or None."""
    for root in roots:
        if name in ("mnist", "fashion-mnist"):
            dirs = _idx_dirs(name, root)
            if name == "fashion-mnist":
                dirs.append(DEBIAN_FASHION)
            for folder in dirs:
                if _find_idx(folder, _idx_files("train")[0]) and _find_idx(folder, _idx_files("test")[0]):
                    return folder
        else:
            folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
            if folder.is_dir():
                return folder
    if name == "fashion-mnist" and _find_idx(DEBIAN_FASHION, _idx_files("train")[0]):
        return DEBIAN_FASHION
    return None


def _expected(name: str) -> str:
    return {
        "mnist": "MNIST/raw/train-images-idx3-ubyte.gz ...",
        "fashion-mnist": "FashionMNIST/raw/train-images-idx3-ubyte.gz ... (or apt-get install dataset-fashion-mnist)",
        "cifar10": "cifar-10-batches-py/data_batch_1 ...",
        "cifar100": "cifar-100-python/train ...",
    }[name]


def _download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    root.mkdir(parents=True, exist_ok=True)
    cls(str(root), train=True, download=True)
    cls(str(root), train=False, download=True)


def resolve(name: str, cfg_root: str | None, download: bool) -> Path:
    if name not in INFO:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(INFO)}")
    roots = candidate_roots(cfg_root)
    found = _locate(name, roots)
    if found is not None:
        return found
    looked = ", ".join(str(r) for r in roots)
    fix = f"set data.root or CAENET_DATA to a folder holding {_expected(name)}"
    if not download:
        raise DataError(f"{name}: not found under {looked}; {fix}")
    target = roots[0]
    try:
        _download(name, target)
    except Exception as exc:  # no internet, read-only folder, ...
        reason = str(exc).splitlines()[0][:120] if str(exc) else exc.__class__.__name__
        raise DataError(f"{name}: not found under {looked} and download to {target} failed ({reason}); {fix}") from None
    found = _locate(name, [target])
    if found is None:
        raise DataError(f"{name}: downloaded to {target} but the layout is not there; {fix}")
    return found


# ---------------------------------------------------------------------------- readers


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: unreadable or truncated ({exc.__class__.__name__}: {exc}); delete it and re-download") from None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (ubyte), checked against its own header."""
    raw = _read_bytes(path)
    if len(raw) < 8:
        raise DataError(f"{path}: too short for an IDX header; delete it and re-download")
    zero, dtype, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or dtype != 0x08 or ndim not in (1, 3):
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic); delete it and re-download")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DataError(
            f"{path}: header says {expected} bytes of data for shape {dims}, file has {len(raw) - offset}; "
            "the file is truncated or corrupt: delete it and re-download"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _read_idx_pair(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    img_stem, lbl_stem = _idx_files(split)
    img_path, lbl_path = _find_idx(folder, img_stem), _find_idx(folder, lbl_stem)
    if img_path is None or lbl_path is None:
        missing = img_stem if img_path is None else lbl_stem
        raise DataError(f"{folder / missing}(.gz): missing; restore the file or re-download the dataset")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{folder}: {img_path.name} and {lbl_path.name} disagree ({images.shape} vs {labels.shape})")
    return images[:, None], labels


class _Refused(pickle.UnpicklingError):
    pass


class _ArraysOnly(pickle.Unpickler):
    """CIFAR's python batches are pickles of dicts, lists, bytes and numpy arrays: anything else
    a file asks to build (``os.system``, say) is refused, so a crafted data file runs no code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"refused to load {module}.{name}")


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: missing; restore the file or re-download the dataset")
    try:
        with open(path, "rb") as fh:
            return _ArraysOnly(fh, encoding="latin1").load()
    except _Refused as exc:
        raise DataError(f"{path}: not a CIFAR batch ({exc}); delete it and re-download") from None
    except Exception as exc:
        raise DataError(f"{path}: corrupt pickle ({exc.__class__.__name__}); delete it and re-download") from None


def _cifar_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except KeyError as exc:
        raise DataError(f"{path}: no {exc} entry; not a CIFAR batch, delete it and re-download") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path}: expected N x 3072 images with N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar(name: str, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        parts = [_cifar_arrays(folder / f, "labels") for f in files]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return _cifar_arrays(folder / split, "fine_labels")


def _class_names(name: str, folder: Path) -> tuple[str, ...]:
    if name == "cifar100" and (folder / "meta").is_file():
        return tuple(_unpickle(folder / "meta").get("fine_label_names", INFO[name].classes))
    return INFO[name].classes


def load_split(cfg: DataConfig, split: str) -> ImageSet:
    """The train or test images of ``cfg.dataset``, limited to the first N when configured."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    folder = resolve(cfg.dataset, cfg.root, cfg.download)
    if cfg.dataset in ("mnist", "fashion-mnist"):
        images, labels = _read_idx_pair(folder, split)
    else:
        images, labels = _read_cifar(cfg.dataset, folder, split)
    limit = cfg.train_limit if split == "train" else cfg.test_limit
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    base = INFO[cfg.dataset]
    info = DatasetInfo(base.name, base.channels, base.size, base.num_classes, _class_names(cfg.dataset, folder))
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
        ds = load_split(DataConfig(dataset=name, root=root, download=download), split)
        counts = torch.bincount(ds.labels, minlength=ds.info.num_classes)
        summary["path"] = str(ds.source)
        summary[split] = {
            "images": len(ds),
            "shape": list(ds.images.shape[1:]),
            "per_class_min": int(counts.min()),
            "per_class_max": int(counts.max()),
        }
    return summary

"""The dataset registry: one ``DatasetSource`` per dataset, found by scanning ``suite/data/sources``.

Adding a dataset is one new module in ``suite/data/sources/`` with a ``@register``-ed class:
the first lookup imports every module of that package, so no other file lists the datasets
(``INFO``, ``caenet data check`` and the error messages all read ``names()``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from suite import plugins
from suite.data import sources  # the plug-in folder: its modules are imported on first lookup
from suite.data.formats import DataError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    size: int  # height == width
    num_classes: int
    classes: tuple[str, ...]


class DatasetSource(ABC):
    """How one dataset is found on disk, read and downloaded.

    A subclass sets ``info`` and ``expected`` and implements ``locate`` and ``read``; the
    loader does the rest (roots, download fallback, limits, label range check, tensors).
    """

    info: DatasetInfo
    expected: str  # the layout in words, for "set data.root or CAENET_DATA to a folder holding <expected>"
    torchvision: str | None = None  # the torchvision.datasets class that download() uses; None: no download
    order: int = 100  # position in listings (`caenet data check`, error messages); ties sort by name

    @abstractmethod
    def locate(self, roots: list[Path]) -> Path | None:
        """The folder holding the dataset's files under one of ``roots`` (in order), or None."""

    @abstractmethod
    def read(self, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Split "train" or "test" of ``folder``: uint8 images N x C x H x W and integer labels in
        the files' order; a missing, truncated or corrupt file raises DataError in one line."""

    def class_names(self, folder: Path) -> tuple[str, ...]:
        """``info.classes``, unless the files carry their own names (CIFAR-100's meta)."""
        return self.info.classes

    def download(self, root: Path) -> None:
        """Both splits into ``root``, in the layout ``locate`` finds (torchvision's)."""
        if self.torchvision is None:
            raise LookupError(f"no download is known for {self.info.name}")
        import torchvision.datasets as tvd  # deferred: 1.7 s to import, and only a download needs it

        cls = getattr(tvd, self.torchvision)
        root.mkdir(parents=True, exist_ok=True)
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)


_SOURCES: dict[str, DatasetSource] = {}


def register(cls: type[DatasetSource]) -> type[DatasetSource]:
    """Class decorator: one instance of ``cls`` serves the dataset ``cls.info.name``."""
    source = cls()  # an abstract method left out fails here, at discovery, naming it
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not isinstance(getattr(source, "info", None), DatasetInfo) or not getattr(source, "expected", None):
        raise TypeError(f"{where}: a dataset source sets info (a DatasetInfo) and expected (its layout, in words)")
    other = _SOURCES.get(source.info.name)
    if other is not None and f"{type(other).__module__}.{type(other).__qualname__}" != where:
        raise TypeError(f"dataset {source.info.name!r} is registered twice: {type(other).__module__} and {cls.__module__}")
    _SOURCES[source.info.name] = source
    return cls


def _registered() -> dict[str, DatasetSource]:
    """Every source, after importing each module of ``suite.data.sources`` once."""
    plugins.discover(sources.__name__)
    return _SOURCES


def names() -> list[str]:
    """The registered datasets, built-ins first in their usual order, then new ones by name."""
    return [s.info.name for s in sorted(_registered().values(), key=lambda s: (s.order, s.info.name))]


def get(name: str) -> DatasetSource:
    try:
        return _registered()[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(names())}") from None


class InfoView(Mapping):
    """Read-only ``name -> DatasetInfo`` over the registry (the old ``INFO`` dict, kept current)."""

    def __getitem__(self, name: str) -> DatasetInfo:
        return _registered()[name].info  # KeyError for an unknown name, as a dict

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __len__(self) -> int:
        return len(_registered())

    def __repr__(self) -> str:
        return f"INFO({', '.join(self)})"

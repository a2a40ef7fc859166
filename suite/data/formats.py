"""Low-level readers shared by the dataset sources: gzip/plain bytes, IDX, CIFAR's pickles.

Each one checks what it reads (a header's sizes, a pickle's classes) and raises ``DataError``
with one line naming the file and the fix, so a truncated or crafted file fails here rather
than as a shape error deep in a training.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

from suite.errors import UserError


class DataError(UserError, RuntimeError):
    """A dataset that cannot be read; the message names the path and the fix."""


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it ends in ``.gz``; a truncated gzip is a DataError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: unreadable or truncated ({exc.__class__.__name__}: {exc}); delete it and re-download") from None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (ubyte), checked against its own header."""
    raw = read_bytes(path)
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


def unpickle_arrays(path: Path) -> dict:
    """A CIFAR-style pickle, built by ``_ArraysOnly`` (never the plain, code-running unpickler)."""
    if not path.is_file():
        raise DataError(f"{path}: missing; restore the file or re-download the dataset")
    try:
        with open(path, "rb") as fh:
            return _ArraysOnly(fh, encoding="latin1").load()
    except _Refused as exc:
        raise DataError(f"{path}: not a CIFAR batch ({exc}); delete it and re-download") from None
    except Exception as exc:
        raise DataError(f"{path}: corrupt pickle ({exc.__class__.__name__}); delete it and re-download") from None

"""Epoch checkpoints: tensors in ``state.pt`` (read back with ``weights_only``, so a crafted
file cannot run code) and the epoch and metrics in ``meta.json``.

A checkpoint folder is Ray Train's ``<storage>/attempt-N/checkpoint_*/``; ``storage`` is a
local folder or a ``runtime.storage`` URI (``suite.storage``).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import torch

from suite import storage as store

STATE, META = "state.pt", "meta.json"
_CHECKPOINT = re.compile(r"attempt-\d+/checkpoint_[^/]+/" + re.escape(META) + "$")


def write(folder: Path, model_state: dict, optimizer: dict, scheduler: dict, epoch: int, metrics: dict) -> None:
    torch.save({"model": model_state, "optimizer": optimizer, "scheduler": scheduler}, Path(folder) / STATE)
    (Path(folder) / META).write_text(json.dumps({"epoch": epoch, "metrics": metrics}))


def read(location: str) -> tuple[dict, dict]:
    """(tensors: model / optimizer / scheduler state, meta: epoch and metrics) of a checkpoint folder."""
    return store.load_tensors(store.join(location, STATE)), store.load_json(store.join(location, META))


def latest(storage: str) -> tuple[str | None, int]:
    """The newest epoch checkpoint any attempt left under ``storage``, and its epoch (-1: none)."""
    best, best_epoch = None, -1
    files = store.files_under(storage)
    names = set(files)
    for meta in files:
        if not _CHECKPOINT.search(meta.replace("\\", "/")):
            continue
        folder = meta[: -len(META) - 1]
        if store.join(folder, STATE) not in names:
            continue  # cut off mid-write: skip it
        try:
            epoch = int(store.load_json(meta)["epoch"])
        except (ValueError, KeyError, TypeError):
            continue
        if epoch > best_epoch:
            best, best_epoch = folder, epoch
    return best, best_epoch


def persist(write, attempt: str, epoch: int, keep: int = 2) -> str:
    """Write a checkpoint (``write(folder)`` fills a local folder) into ``attempt`` under
    storage as ``checkpoint_epoch-NNNN``, then drop all but the newest ``keep`` there.

    Written so that a reader never takes a half-written one: a local folder appears by
    rename; on an object store ``meta.json`` goes up last (``latest`` wants both files)."""
    name = f"checkpoint_epoch-{epoch:04d}"
    target = store.join(attempt, name)
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        if store.is_uri(attempt):
            for part in (STATE, META):
                store.write_bytes(store.join(target, part), (Path(tmp) / part).read_bytes())
        else:
            staged = Path(attempt) / f".{name}.tmp"
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(tmp, staged)
            shutil.rmtree(target, ignore_errors=True)
            staged.rename(target)
    old = sorted({f.rsplit(META, 1)[0].rstrip("/\\") for f in store.files_under(attempt) if f.endswith(META)})
    for folder in old[:-keep] if keep > 0 else []:
        store.delete(folder)
    return target

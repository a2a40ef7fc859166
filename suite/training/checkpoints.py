"""Epoch checkpoints: tensors in ``state.pt`` (read back with ``weights_only``, so a crafted
file cannot run code) and the epoch and metrics in ``meta.json``. ``state.pt`` also holds every
random generator the rest of the training reads (``random_state``), so that a resumed training
draws what an uninterrupted one would have: the same batches, augmentations and dropout masks,
and so the same weights, bit for bit on a CPU.

A checkpoint folder is Ray Train's ``<storage>/attempt-N/checkpoint_*/``; ``storage`` is a
local folder or a ``runtime.storage`` URI (``suite.storage``).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from suite import storage as store

STATE, META = "state.pt", "meta.json"
_CHECKPOINT = re.compile(r"attempt-\d+/checkpoint_[^/]+/" + re.escape(META) + "$")


def write(folder: Path, model_state: dict, optimizer: dict, scheduler: dict, epoch: int, metrics: dict,
          rng: dict | None = None, best: dict | None = None) -> None:
    """``best``: the best epoch's weights so far (early stopping), carried through resumes."""
    state = {"model": model_state, "optimizer": optimizer, "scheduler": scheduler}
    if rng is not None:
        state["rng"] = rng
    if best is not None:
        state["best_model"] = best
    torch.save(state, Path(folder) / STATE)
    (Path(folder) / META).write_text(json.dumps({"epoch": epoch, "metrics": metrics}))


def random_state() -> dict:
    """Every generator a training draws from, as tensors and numbers (what ``weights_only``
    reads back): torch's CPU generator and each CUDA device's, numpy's and Python's global ones.
    The batch order needs nothing more: one worker draws it from torch's generator, several
    from ``seed + epoch``."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "python": {"version": version, "state": list(mt), "gauss": gauss}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict, rank: int = 0) -> None:
    """Put back what ``random_state`` captured (CUDA's where this worker has the same devices);
    of a data-parallel training's per-worker states (``{"ranks": [...]}``), this ``rank``'s."""
    if "ranks" in state:
        ranks = state["ranks"]
        state = ranks[rank] if rank < len(ranks) else ranks[0]  # a different world size: rank 0's
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def read(location: str) -> tuple[dict, dict]:
    """(tensors: model / optimizer / scheduler state, meta: epoch and metrics) of a checkpoint folder."""
    return store.load_tensors(store.join(location, STATE)), store.load_json(store.join(location, META))


def read_meta(location: str) -> dict:
    """A checkpoint folder's epoch and metrics, without its tensors."""
    return store.load_json(store.join(location, META))


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
            staged.mkdir(parents=True)
            for part in (STATE, META):  # file by file: a full disk raises its own OSError (ENOSPC), not copytree's list
                try:
                    shutil.copyfile(Path(tmp) / part, staged / part)
                except OSError:
                    shutil.rmtree(staged, ignore_errors=True)
                    raise
            shutil.rmtree(target, ignore_errors=True)
            staged.rename(target)
    old = sorted({f.rsplit(META, 1)[0].rstrip("/\\") for f in store.files_under(attempt) if f.endswith(META)})
    for folder in old[:-keep] if keep > 0 else []:
        store.delete(folder)
    return target

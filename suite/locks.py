"""One exclusive file lock (``flock``) for everything the suite serialises across processes:
a stage's cache folder, the local Ray of a machine, the creation of a SQLite MLflow store.

The kernel drops an ``flock`` when its holder dies, so a killed run leaves no stale lock: its
lock file is simply taken by the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import IO, Callable


@contextlib.contextmanager
def file_lock(path: Path, waiting: Callable[[IO[str]], None] | None = None):
    """Hold an exclusive lock on ``path`` (created if missing) for the block; yields the open
    file. ``waiting(file)`` is called once, before blocking, when another holder has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting(handle)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def try_lock(path: Path, create: bool = True):
    """``file_lock`` without waiting: yields True while holding the lock, False when another
    process holds it. Without ``create`` a missing file counts as free and is not created."""
    if not create and not path.exists():
        yield True
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

"""The one family of mistakes a user can fix.

Every error the suite raises for bad input (a config, a dataset, a board, a path, a stage
that has not run, a training that failed after its retries) derives from ``UserError``
and carries a one-line message that names the key, path or board and the fix. The CLI
prints that line and exits 2, for every command alike; anything else is a bug and shows
its traceback. ``caenet --debug`` (or ``CAENET_DEBUG=1``) shows the traceback of user
errors too.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import signal
import tempfile
import threading
from pathlib import Path

# The one Ctrl-C flag: set when a Ray session (suite.distributed.ray_runtime) or the CLI sees
# Ctrl-C. The KeyboardInterrupt reaches the main thread only; a stage in a pool thread fails
# afterwards, when Ray's shutdown breaks its calls, and is KILLED all the same; no stage thread
# starts Ray again. Here, at the bottom, so that every layer reads the same flag.
INTERRUPTED = threading.Event()
# Called (in order) when the process is told to stop (SIGTERM: `ray job stop` SIGKILLs its
# entrypoint 3 s later): the MLflow runs are ended KILLED before anything slower, such as Ray's
# shutdown. The tracker of each session adds itself (suite.pipeline.tracking).
ON_STOP: list = []


@contextlib.contextmanager
def signal_handlers(handlers: dict):
    """``handlers`` (signal -> handler) for the block, in the main thread; the previous ones
    back after it (one installed outside Python, which ``signal`` reports as None: the default).
    Yields the previous handlers."""
    saved = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield saved
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def uninterrupted():
    """Ctrl-C (and SIGTERM) wait until the block ends, then interrupt as usual: for work that an
    interrupt would leave broken for every later run, such as MLflow's creation of a SQLite
    store (a Ctrl-C between two of its migrations left a table without its schema version, and
    every later run failed with "table skills already exists"). Only the main thread receives
    signals; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # Python runs signal handlers in the main thread, whichever thread the kernel handed the
    # signal to (so a signal mask, which is per thread, would not hold it): a handler that
    # only notes the signal stands in for the block, and the real one runs after it.
    came: list = []
    note = lambda signum, frame: came.append((signum, frame))  # noqa: E731
    with signal_handlers({signal.SIGINT: note, signal.SIGTERM: note}) as saved:
        yield
    for signum, frame in came[:1]:
        handler = saved[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler in (signal.SIG_DFL, None) and signum == signal.SIGTERM:
            raise SystemExit(128 + signum)


class UserError(Exception):
    """A mistake in what the user gave; ``str(exc)`` is one line naming what to fix."""


class ConfigError(UserError, ValueError):
    """A config (or option) that cannot be used; the message is one line and names the key."""


def last_line(exc: BaseException) -> str:
    """An exception that is not ours as one line: the last non-blank line of its message (where
    Ray's and MLflow's multi-line errors say what went wrong), or its repr when it has none."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else repr(exc)


NO_SPACE = (28, 122)  # ENOSPC, EDQUOT
NEARLY_FULL = 4 * 2**20  # bytes: a write that failed on a disk with less free than this failed for room


class DiskFull(UserError, OSError):
    """A disk filled mid-run; no retry helps. The message names the settings to change."""


def no_space_line(where: str = "") -> str:
    return (f"no space left on device{where}: free space, or point runtime.cache_dir / runtime.storage at a larger "
            "disk; finished stages are kept, run the same command again to resume")


def _os_error(exc: BaseException, codes, under: str = "") -> OSError | None:
    """The first ``OSError`` with an errno of ``codes`` (and ``under`` in its file name) along
    a Ray task error's ``cause`` (the worker's exception) and ``__cause__`` chains; else None."""
    cause = exc
    while cause is not None and not (isinstance(cause, OSError) and cause.errno in codes
                                     and under in str(cause.filename or cause)):
        cause = getattr(cause, "cause", None) or cause.__cause__
    return cause


def no_space(exc: BaseException) -> str | None:
    """One line for a full disk met mid-run, naming the settings; else None."""
    cause = _os_error(exc, NO_SPACE)
    if cause is None:
        return None
    return no_space_line(f" writing {cause.filename}" if cause.filename else "")


GONE = {errno.ENOTDIR, errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS}


def storage_gone(exc: BaseException, under: str, storage: str | None) -> str | None:
    """One line when ``exc`` (or the worker's exception behind it) is the configured checkpoint
    storage ``storage`` failing under a training that keeps its checkpoints ``under`` it (the
    folder removed, turned into a file, unmounted, read-only): no retry helps, the setting is
    named; else None (and always None without a ``runtime.storage``)."""
    cause = _os_error(exc, GONE, under) if storage else None
    if cause is None:
        return None
    return (f"runtime.storage {storage} can no longer hold checkpoints ([Errno {cause.errno}] {cause.strerror}); point "
            "runtime.storage at writable storage every node reaches; finished stages are kept, run the same command again")


def disk_full(folder: str | Path) -> bool:
    """Whether ``folder``'s disk is (nearly) full: libraries that write through C++ streams
    (torch.save) report a full disk as a bare RuntimeError, so the disk is asked instead."""
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL
    except OSError:
        return False


def probe_folder(folder: str | Path) -> None:
    """Make ``folder`` and write and remove a file in it: OSError when it cannot take one (the
    one check of a writable folder, before any work starts)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
        pass


def writable_file(path: str | Path, flag: str) -> Path:
    """``path`` once its folder exists and takes a file, checked before any work starts."""
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a folder")
        probe_folder(path.parent)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot be written there ({exc.strerror or exc}); give a path in a writable folder") from None
    return path

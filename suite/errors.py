"""The one family of mistakes a user can fix.

Every error the suite raises for bad input (a config, a dataset, a board, a path, a stage
that has not run, a training that failed after its retries) derives from ``UserError``
and carries a one-line message that names the key, path or board and the fix. The CLI
prints that line and exits 2, for every command alike; anything else is a bug and shows
its traceback. ``caenet --debug`` (or ``CAENET_DEBUG=1``) shows the traceback of user
errors too.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

# The one Ctrl-C flag: set when a Ray session (suite.distributed.ray_runtime) or the CLI sees
# Ctrl-C. The KeyboardInterrupt reaches the main thread only; a stage in a pool thread fails
# afterwards, when Ray's shutdown breaks its calls, and is KILLED all the same; no stage thread
# starts Ray again. Here, at the bottom, so that every layer reads the same flag.
INTERRUPTED = threading.Event()


class UserError(Exception):
    """A mistake in what the user gave; ``str(exc)`` is one line naming what to fix."""


class ConfigError(UserError, ValueError):
    """A config (or option) that cannot be used; the message is one line and names the key."""


def last_line(exc: BaseException) -> str:
    """An exception that is not ours as one line: the last non-blank line of its message (where
    Ray's and MLflow's multi-line errors say what went wrong), or its repr when it has none."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else repr(exc)


def writable_file(path: str | Path, flag: str) -> Path:
    """``path`` once its folder exists and takes a file, checked before any work starts."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "is a folder")
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot be written there ({exc.strerror or exc}); give a path in a writable folder") from None
    return path

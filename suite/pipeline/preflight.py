"""Before any stage, in seconds: does what the command leans on answer? Each failure is one line
naming the setting, what was found and the fix, instead of minutes of retries and tracebacks.

- the tracking store (``runtime.tracking_uri`` / ``$MLFLOW_TRACKING_URI``, else ``./mlruns``):
  a server answers its ``/health``; a SQLite file is a database, writable;
- the Ray head of ``$RAY_ADDRESS``, when one is named: something listens there;
- ``runtime.storage`` (``$CAENET_STORAGE``), when set: a folder (or URI) that takes a file;
- ``runtime.cache_dir``: writable, with ``runtime.min_free_mb`` free.

It also bounds MLflow's HTTP client (retries, back-off, timeout; each settable by its own
variable) so that a tracking server that dies mid-run costs seconds, not minutes.
"""

from __future__ import annotations

import os
import shutil
import socket
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlparse

from suite import storage
from suite.config import ExperimentConfig
from suite.errors import UserError, probe_folder

TIMEOUT_S = 5.0  # each probe
# MLflow's own defaults retry a dead server for minutes (7 retries, back-off 2, 120 s timeout).
MLFLOW_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
SQLITE_HEADER = b"SQLite format 3\x00"


class PreflightError(UserError, RuntimeError):
    """Something the command needs does not answer; the message names the setting and the fix."""


def bound_mlflow_retries() -> None:
    for key, value in MLFLOW_HTTP.items():
        os.environ.setdefault(key, value)


def check(cfg: ExperimentConfig, cache_root: Path, tracking_uri: str | None) -> None:
    """Every check above; ``tracking_uri`` None: the command records nothing in MLflow."""
    if tracking_uri is not None:
        tracking(tracking_uri, _tracking_setting(cfg))
    ray_head(os.environ.get("RAY_ADDRESS"))
    checkpoint_storage(storage.configured(cfg.runtime), "runtime.storage" if cfg.runtime.storage else f"${storage.ENV}")
    cache(cache_root, cfg.runtime.min_free_mb)


def _tracking_setting(cfg: ExperimentConfig) -> str:
    if cfg.runtime.tracking_uri:
        return "runtime.tracking_uri"
    return "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "the default tracking store"


def tracking(uri: str, setting: str) -> None:
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=TIMEOUT_S).close()
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise PreflightError(f"{setting} {uri}: the tracking server answers HTTP {exc.code}; check its log "
                                     "(is its backend store up?)") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PreflightError(f"{setting} {uri}: no MLflow server answered within {TIMEOUT_S:g}s ({reason}); start it "
                                 f"(mlflow server --host 0.0.0.0 --port {urlparse(uri).port or 5000}) or unset "
                                 f"{setting} to record in ./mlruns") from None
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if db.is_file():
            with open(db, "rb") as f:
                head = f.read(len(SQLITE_HEADER))
            if head and head != SQLITE_HEADER:
                raise PreflightError(f"{setting} {uri}: {db} is not an SQLite database; move it away (MLflow creates a "
                                     "new one) or point the setting at the right file")
            if not os.access(db, os.W_OK):
                raise PreflightError(f"{setting} {uri}: {db} is read-only; make it writable or use another store")
        else:
            _writable(db.parent, f"{setting} {uri}: its folder")


def ray_head(address: str | None) -> None:
    """``$RAY_ADDRESS`` (``host:port``, ``ray://host:port``): something listens there. ``auto``
    and ``local`` are Ray's own words and are left to it."""
    if not address or address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"gcs://{address}")
    if not parsed.hostname or not parsed.port:
        raise PreflightError(f"RAY_ADDRESS {address!r}: expected host:port (the head's GCS port, 6379 by default); "
                             "fix it or unset RAY_ADDRESS to run a local Ray")
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=TIMEOUT_S).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc)).lower()
        raise PreflightError(f"RAY_ADDRESS {address}: no Ray head answers there ({reason}); start it "
                             "(ray start --head) or unset RAY_ADDRESS to run a local Ray") from None


def checkpoint_storage(location: str | None, setting: str) -> None:
    if not location:
        return
    if not storage.is_uri(location) and Path(location).exists() and not Path(location).is_dir():
        raise PreflightError(f"{setting} {location} is a file, not a folder; point it at a folder (or {storage.EXAMPLE})")
    probe = storage.join(location, ".caenet-probe", uuid.uuid4().hex)
    try:
        storage.write_bytes(probe, b"ok")
        fs, path = storage.open_fs(probe)
        fs.delete_file(path)
    except OSError as exc:
        raise PreflightError(f"{setting} {location} does not take a file ({_reason(exc)}); point it at writable storage, "
                             f"e.g. {storage.EXAMPLE}") from None


def cache(root: Path, min_free_mb: float) -> None:
    _writable(root, "runtime.cache_dir")
    free_mb = shutil.disk_usage(root).free / 2**20
    if free_mb < min_free_mb:
        raise PreflightError(f"runtime.cache_dir {root.parent}: {free_mb:.0f} MiB free, under runtime.min_free_mb "
                             f"({min_free_mb:g}); free space or point runtime.cache_dir at a larger disk")


def _writable(folder: Path, what: str) -> None:
    try:
        probe_folder(folder)
    except OSError as exc:
        raise PreflightError(f"{what} {folder} is not writable ({_reason(exc)}); fix its permissions or choose "
                             "another folder") from None


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc).splitlines()[0] if str(exc) else type(exc).__name__).lower()


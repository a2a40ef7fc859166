"""The one place that knows the MLflow tracking store: its URI as a run resolves it, one
``MlflowClient`` per URI, and the breaker that stops asking a store that did not answer.

Everything that talks to MLflow goes through here: the pipeline's ``Tracker``, the driver's
epoch relay, ``caenet runs`` and the lookup of a finished run's config. mlflow is imported
when a client is first asked for (it takes about a second, and Ray workers import this module).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

RETRY_DOWN_S = 30.0  # a store that did not answer is tried again this long after, not at every call
DEFAULT_STORE = "mlruns"  # the default store: ./mlruns/mlflow.db (SQLite), artifacts beside it

_clients: dict[str, object] = {}
_lock = threading.Lock()


def resolve_uri(tracking_uri: str | None, create: bool = True) -> tuple[str, str | None]:
    """(tracking URI, artifact root for new experiments or None to let the server decide) of
    ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the default store in the working
    directory (made on disk unless ``create`` is False: a listing should not make one)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
        if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the working directory
            return uri, (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
        return uri, None
    store = Path(DEFAULT_STORE).resolve()
    if create:
        store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()


def client(uri: str):
    """The ``MlflowClient`` of ``uri``, made once per process (thread-safe)."""
    with _lock:
        if uri not in _clients:
            from mlflow.tracking import MlflowClient  # deferred: mlflow takes ~1 s to import

            _clients[uri] = MlflowClient(uri)
        return _clients[uri]


class Breaker:
    """Whether a store is worth asking: after a call that found it down, not again for
    ``RETRY_DOWN_S`` (each try costs seconds of retries). ``failed`` and ``answered`` say when the
    state changed, so that the caller prints one line for each change, not one per call."""

    def __init__(self):
        self._down_since: dict[str, float] = {}

    def closed(self, uri: str) -> bool:
        """True while ``uri`` is known to be down and not due for another try."""
        since = self._down_since.get(uri)
        return since is not None and time.monotonic() - since < RETRY_DOWN_S

    def failed(self, uri: str) -> bool:
        """Record that a call found ``uri`` down; True if it was up until now."""
        first = uri not in self._down_since
        self._down_since[uri] = time.monotonic()
        return first

    def answered(self, uri: str) -> bool:
        """Record that ``uri`` answered; True if it had been down."""
        return self._down_since.pop(uri, None) is not None

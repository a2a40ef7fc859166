"""MLflow tracking: one parent run per pipeline, one child run per stage.

The store defaults to ``./mlruns`` (SQLite ``mlruns/mlflow.db`` with artifacts in
``mlruns/artifacts``), never MLflow 3's implicit ``./mlflow.db``; ``runtime.tracking_uri``
or ``$MLFLOW_TRACKING_URI`` point it elsewhere (a tracking server on a cluster). URIs are
made absolute because Ray workers and jobs run in other directories.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from pathlib import Path

from suite.config import RuntimeConfig
from suite.locks import file_lock


def resolve_tracking_uri(runtime: RuntimeConfig) -> tuple[str, str | None]:
    """(tracking URI, artifact root for new experiments or None to let the server decide)."""
    uri = runtime.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
        return uri, None
    store = Path("mlruns").resolve()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()


def _store_lock(uri: str):
    """An exclusive lock beside a local SQLite store (nothing for a tracking server)."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    db = Path(uri[len("sqlite:///"):])
    return file_lock(db.with_name(db.name + ".lock"))


class Tracker:
    """Thin wrapper over ``MlflowClient`` so that no global MLflow state leaks between runs."""

    def __init__(self, runtime: RuntimeConfig):
        # deferred here and below: mlflow takes ~1 s to import, and Ray workers import this module
        from mlflow.tracking import MlflowClient

        self.uri, artifact_root = resolve_tracking_uri(runtime)
        # Created once here, before any worker logs (parallel first touches race on SQLite),
        # and under a file lock: two runs that start together would both create the SQLite
        # schema (MLflow's migrations then fail) or both create the experiment.
        with _store_lock(self.uri):
            self.client = MlflowClient(self.uri)
            exp = self.client.get_experiment_by_name(runtime.experiment)
            self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(runtime.experiment, artifact_location=artifact_root)
        self.parent_id: str | None = None
        # Child runs started and not yet ended: Ctrl-C ends them KILLED with their parent,
        # even while their stage's thread is still stuck in a Ray call.
        self.open_children: set[str] = set()
        self.ended: set[str] = set()
        self._lock = threading.Lock()

    def start_parent(self, name: str, params: dict, tags: dict | None = None) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags or {})
        self.parent_id = run.info.run_id
        self.log_params(self.parent_id, params)
        return self.parent_id

    def start_child(self, name: str, params: dict, tags: dict | None = None) -> str:
        all_tags = {"mlflow.parentRunId": self.parent_id, "stage": name, **(tags or {})}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        with self._lock:
            self.open_children.add(run.info.run_id)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param  # deferred: mlflow (see __init__)

        flat = _flatten(params)
        items = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict, step: int | None = None) -> None:
        from mlflow.entities import Metric  # deferred: mlflow (see __init__)

        now = int(time.time() * 1000)
        items = [Metric(metric_name(k), float(v), now, step or 0) for k, v in _flatten(metrics).items() if _is_number(v)]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        if Path(path).is_dir():
            self.client.log_artifacts(run_id, str(path), folder)
        else:
            self.client.log_artifact(run_id, str(path), folder)

    def log_dict(self, run_id: str, data: dict, name: str) -> None:
        self.client.log_text(run_id, json.dumps(data, indent=2, default=str), name)

    def log_figure(self, run_id: str, figure, name: str) -> None:
        self.client.log_figure(run_id, figure, name)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def delete(self, run_id: str) -> None:
        """Drop a run that recorded nothing (a lookup that found nothing to finish)."""
        with self._lock:
            self.ended.add(run_id)
            self.open_children.discard(run_id)
        self.client.delete_run(run_id)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        with self._lock:
            if run_id in self.ended:  # already ended (KILLED with its parent): keep that status
                return
            self.ended.add(run_id)
            self.open_children.discard(run_id)
        self.client.set_terminated(run_id, status)

    @contextlib.contextmanager
    def closing(self, run_id: str, outcome=lambda: "FINISHED"):
        """End ``run_id`` when the block ends: ``outcome()`` (FINISHED by default), KILLED on
        Ctrl-C, FAILED on an error; runs of its stages still open end the same way."""
        status = "FAILED"
        try:
            yield
            status = outcome()
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            if status != "FINISHED":
                with self._lock:
                    children = sorted(self.open_children)
                for child in children:
                    self.end(child, status)
            self.end(run_id, status)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def metric_name(key: str) -> str:
    """``key`` with the characters MLflow rejects in metric names (anything but letters, digits,
    ``_ - . / `` and spaces, e.g. the brackets of "VGG16-pruned (0.4)") replaced by ``_``."""
    return re.sub(r"[^\w\-. /]", "_", key)

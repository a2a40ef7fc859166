"""MLflow tracking: one parent run per pipeline, one child run per stage.

The store defaults to ``./mlruns`` (SQLite ``mlruns/mlflow.db`` with artifacts in
``mlruns/artifacts``), never MLflow 3's implicit ``./mlflow.db``; ``runtime.tracking_uri``
or ``$MLFLOW_TRACKING_URI`` point it elsewhere (a tracking server on a cluster). URIs are
made absolute because Ray workers and jobs run in other directories. An experiment the suite
creates on a SQLite store keeps its artifacts beside the database: MLflow's default,
``./mlruns`` of the working directory, is a temporary copy inside ``ray job submit``.

Trained models are logged as MLflow models (TorchScript, so loading one needs torch but not
this suite), with a signature and a real input example; ``register`` puts one in the Model
Registry.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from suite.config import RuntimeConfig
from suite.errors import ConfigError
from suite.locks import file_lock

# Opens on the runs table of "machine learning" rather than MLflow 3's GenAI overview.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def resolve_tracking_uri(runtime: RuntimeConfig) -> tuple[str, str | None]:
    """(tracking URI, artifact root for new experiments or None to let the server decide)."""
    uri = runtime.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
        if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the working directory
            return uri, (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
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
        from mlflow.exceptions import MlflowException  # deferred: mlflow (as above)

        with _store_lock(self.uri):
            try:
                self.client = MlflowClient(self.uri)
                exp = self.client.get_experiment_by_name(runtime.experiment)
            except MlflowException as exc:
                if "MLFLOW_ALLOW_FILE_STORE" not in str(exc):
                    raise
                raise ConfigError(f"runtime.tracking_uri {self.uri}: MLflow 3 keeps its file store read-mostly; use a "
                                  "database (sqlite:///<abs path>/mlflow.db, the default ./mlruns) or set "
                                  "MLFLOW_ALLOW_FILE_STORE=true") from None
            if exp is None:
                self.experiment_id = self.client.create_experiment(runtime.experiment, artifact_location=artifact_root,
                                                                   tags=EXPERIMENT_KIND)
            else:
                self.experiment_id = exp.experiment_id
                if not exp.tags.get("mlflow.experimentKind"):  # made by an older suite or by hand
                    for k, v in EXPERIMENT_KIND.items():
                        self.client.set_experiment_tag(self.experiment_id, k, v)
        self.parent_id: str | None = None
        # Child runs started and not yet ended: Ctrl-C ends them KILLED with their parent,
        # even while their stage's thread is still stuck in a Ray call.
        self.open_children: set[str] = set()
        self.ended: set[str] = set()
        self._lock = threading.Lock()
        # The session's data (``DatasetInput``s), recorded on the parent and on every stage run.
        self.datasets: list = []

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
        if self.datasets:
            self.client.log_inputs(run.info.run_id, datasets=self.datasets)
        return run.info.run_id

    def under(self, run_id: str) -> "Tracker":
        """This tracker with its stage runs nested under ``run_id`` (a study's cell, under the
        study's run): the same store, datasets and set of open runs, so the command's Ctrl-C
        or failure still ends every one of them."""
        nested = copy.copy(self)
        nested.parent_id = run_id
        return nested

    def log_datasets(self, run_id: str, datasets: list) -> None:
        """Record ``datasets`` (``DatasetInput``s) on ``run_id`` and on every stage run opened after."""
        self.datasets = list(datasets)
        self.client.log_inputs(run_id, datasets=self.datasets)

    def log_model(self, run_id: str, model, example: np.ndarray, path: str = "model") -> str:
        """Log ``model`` (an ``nn.Module``, or TorchScript already) as an MLflow PyTorch model at
        ``path`` of the run, with its signature and ``example`` (one real input); returns its
        ``runs:/`` URI, which ``mlflow.pytorch.load_model`` and ``mlflow.pyfunc.load_model`` take."""
        import mlflow.pytorch  # deferred: mlflow (see __init__)
        from mlflow.models import infer_signature  # deferred: mlflow (see __init__)

        model = model.cpu().eval()
        x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch 2.14 deprecates TorchScript; MLflow's pytorch flavour takes it
            scripted = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.trace(model, x, check_trace=False)
            out = model(x)
        with tempfile.TemporaryDirectory() as tmp, _quiet("mlflow.pytorch", "mlflow.utils.requirements_utils", "mlflow.models"):
            folder = Path(tmp) / path.rsplit("/", 1)[-1]
            mlflow.pytorch.save_model(scripted, str(folder), signature=infer_signature(x.numpy(), out.numpy()),
                                      input_example=x.numpy(), serialization_format="pickle",  # TorchScript: torch.jit.save
                                      pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
            self.client.log_artifacts(run_id, str(folder), path)
        return f"runs:/{run_id}/{path}"

    def log_onnx_model(self, run_id: str, onnx_file: Path, example: np.ndarray, path: str) -> str:
        """Log an exported ONNX file as an MLflow ONNX model (``mlflow.onnx.load_model`` /
        ``mlflow.pyfunc.load_model`` take its URI), its signature read off ``example``."""
        import mlflow.onnx  # deferred: mlflow (see __init__)
        import onnx  # deferred: only ONNX exports need it

        with tempfile.TemporaryDirectory() as tmp, _quiet("mlflow.onnx", "mlflow.utils.requirements_utils", "mlflow.models"):
            folder = Path(tmp) / "model"
            mlflow.onnx.save_model(onnx.load(str(onnx_file)), str(folder), input_example=np.ascontiguousarray(example, dtype=np.float32),
                                   pip_requirements=["onnx", "onnxruntime"], save_as_external_data=False)
            self.client.log_artifacts(run_id, str(folder), path)
        return f"runs:/{run_id}/{path}"

    def register(self, name: str, source: str, run_id: str, tags: dict, key: str) -> tuple[int, bool]:
        """A version of registered model ``name`` from ``source`` (a ``runs:/`` model URI) with
        ``tags``; a version already registered for stage ``key`` is reused (a cached re-run
        adds none). Returns (version, created)."""
        from mlflow.exceptions import MlflowException  # deferred: mlflow (see __init__)

        with _store_lock(self.uri):
            try:
                self.client.create_registered_model(name, description="CAE-Net from the caenet-suite pipeline")
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            for version in self.client.search_model_versions(f"name = '{name}'"):
                if version.tags.get("stage_key") == key:
                    return int(version.version), False
            version = self.client.create_model_version(name, source, run_id=run_id,
                                                       tags={**{k: str(v) for k, v in tags.items()}, "stage_key": key})
        return int(version.version), True

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param  # deferred: mlflow (see __init__)

        flat = flatten(params)
        items = [Param(metric_name(k), str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict, step: int | None = None) -> None:
        from mlflow.entities import Metric  # deferred: mlflow (see __init__)

        now = int(time.time() * 1000)
        items = [Metric(metric_name(k), float(v), now, step or 0) for k, v in flatten(metrics).items() if _is_number(v)]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def log_final_metrics(self, run_id: str, metrics: dict, step: int) -> None:
        """A stage's final ``metrics`` at ``step`` (its last epoch), except those the run already
        holds with that value: the epoch relay logged the last epoch's numbers at that step, and
        a second identical point per curve would only clutter the history."""
        have = self.client.get_run(run_id).data.metrics
        fresh = {k: v for k, v in flatten(metrics).items()
                 if _is_number(v) and not (metric_name(k) in have and have[metric_name(k)] == float(v))}
        self.log_metrics(run_id, fresh, step)

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        if Path(path).is_dir():
            self.client.log_artifacts(run_id, str(path), folder)
        else:
            self.client.log_artifact(run_id, str(path), folder)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

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


@contextlib.contextmanager
def _quiet(*loggers: str):
    """MLflow's warnings about pickle (TorchScript is saved with ``torch.jit.save``) and about
    torch's local version tag (``+cu130``) say nothing to act on."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in loggers]
    for log, _ in saved:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in saved:
            log.setLevel(level)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dicts -> {dotted key: value}. Lists of named dicts (``compare.methods``) flatten by
    name, ``compare.methods.KD.alpha``, so one changed key is one param, not a 5 KB list."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list) and v and all(isinstance(e, dict) and "name" in e for e in v):
            out.update(flatten({e["name"]: {n: x for n, x in e.items() if n != "name"} for e in v}, key + "."))
        else:
            out[key] = v
    return out


def metric_name(key: str) -> str:
    """``key`` with the characters MLflow rejects in metric and param names (anything but letters,
    digits, ``_ - . / `` and spaces, e.g. the brackets of "VGG16-pruned (0.4)") replaced by ``_``."""
    return re.sub(r"[^\w\-. /]", "_", key)

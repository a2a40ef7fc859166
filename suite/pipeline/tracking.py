"""MLflow tracking: one parent run per pipeline, one child run per stage.

The store defaults to ``./mlruns`` (SQLite ``mlruns/mlflow.db`` with artifacts in
``mlruns/artifacts``), never MLflow 3's implicit ``./mlflow.db``; ``runtime.tracking_uri``
or ``$MLFLOW_TRACKING_URI`` point it elsewhere (a tracking server on a cluster). URIs are
made absolute because Ray workers and jobs run in other directories. An experiment the suite
creates on a SQLite store keeps its artifacts beside the database: MLflow's default,
``./mlruns`` of the working directory, is a temporary copy inside ``ray job submit``.

Trained models are logged as MLflow LoggedModels (TorchScript, so loading one needs torch but
not this suite), with a signature and a real input example: the experiment's Models tab lists
them, each linked to the run that logged it and, for a stage's own model, to its metrics.
``register`` puts one in the Model Registry.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import re
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from suite import tracking_store
from suite.config import RuntimeConfig
from suite.errors import ON_STOP, ConfigError, last_line, uninterrupted
from suite.locks import file_lock

# Opens on the runs table of "machine learning" rather than MLflow 3's GenAI overview.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def resolve_tracking_uri(runtime: RuntimeConfig) -> tuple[str, str | None]:
    """(tracking URI, artifact root for new experiments or None to let the server decide) of
    ``runtime.tracking_uri`` (``suite.tracking_store.resolve_uri``)."""
    return tracking_store.resolve_uri(runtime.tracking_uri)


def _store_lock(uri: str):
    """An exclusive lock beside a local SQLite store (nothing for a tracking server)."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    db = Path(uri[len("sqlite:///"):])
    return file_lock(db.with_name(db.name + ".lock"))


class Tracker:
    """Thin wrapper over ``MlflowClient`` so that no global MLflow state leaks between runs."""

    def __init__(self, runtime: RuntimeConfig):
        self.uri, artifact_root = resolve_tracking_uri(runtime)
        # Created once here, before any worker logs (parallel first touches race on SQLite),
        # and under a file lock: two runs that start together would both create the SQLite
        # schema (MLflow's migrations then fail) or both create the experiment.
        from mlflow.exceptions import MlflowException  # deferred: mlflow (as above)

        with _store_lock(self.uri), uninterrupted():  # a store half-created by Ctrl-C is broken for good
            try:
                self.client = tracking_store.client(self.uri)
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
        # run id -> id of the LoggedModel that is that run's model (see ``log_model``): the
        # metrics logged to the run from then on are linked to it
        self.run_models: dict[str, str] = {}

    def start_parent(self, name: str, params: dict, tags: dict | None = None) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags or {})
        self.parent_id = run.info.run_id
        ON_STOP.append(self.end_open)  # told to stop: this run and its open stages end KILLED first
        self.log_params(self.parent_id, params)
        return self.parent_id

    def end_open(self, status: str = "KILLED") -> None:
        """End every run this tracker opened and has not ended (stages first, then the parent)."""
        self._end_children(status)
        if self.parent_id:
            self.end(self.parent_id, status)

    def _end_children(self, status: str) -> None:
        with self._lock:
            children = sorted(self.open_children)
        for child in children:
            self.end(child, status)

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
        """Log ``model`` (an ``nn.Module``, or TorchScript already) as an MLflow PyTorch
        LoggedModel of the run, with its signature and ``example`` (one real input); returns its
        ``models:/<model id>`` URI, which ``mlflow.pytorch.load_model``, ``mlflow.pyfunc.load_model``
        and ``register`` take. The default ``path`` makes it the run's model: it takes the run's
        name (the stage) and the run's metrics link to it (see ``_log_logged_model``); another
        ``path`` (``onnx/<name>``, ``models/<label>``) names it."""
        import mlflow.pytorch  # deferred: mlflow (see __init__)
        from mlflow.models import infer_signature  # deferred: mlflow (see __init__)

        model = model.cpu().eval()
        x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch 2.14 deprecates TorchScript; MLflow's pytorch flavour takes it
            scripted = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.trace(model, x, check_trace=False)
            out = model(x)

        def save(folder: str, mlflow_model) -> None:
            mlflow.pytorch.save_model(scripted, folder, mlflow_model=mlflow_model,
                                      signature=infer_signature(x.numpy(), out.numpy()), input_example=x.numpy(),
                                      serialization_format="pickle",  # TorchScript: torch.jit.save, not MLflow 3's pt2
                                      pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])

        with _quiet("mlflow.pytorch", "mlflow.utils.requirements_utils", "mlflow.models"):
            return self._log_logged_model(run_id, path, save)

    def log_onnx_model(self, run_id: str, onnx_file: Path, example: np.ndarray, path: str) -> str:
        """Log an exported ONNX file as an MLflow ONNX LoggedModel of the run, named after
        ``path``, its signature read off ``example``; returns its ``models:/<model id>`` URI
        (``mlflow.onnx.load_model`` / ``mlflow.pyfunc.load_model`` take it)."""
        import mlflow.onnx  # deferred: mlflow (see __init__)
        import onnx  # deferred: only ONNX exports need it

        def save(folder: str, mlflow_model) -> None:
            mlflow.onnx.save_model(onnx.load(str(onnx_file)), folder, mlflow_model=mlflow_model,
                                   input_example=np.ascontiguousarray(example, dtype=np.float32),
                                   pip_requirements=["onnx", "onnxruntime"], save_as_external_data=False)

        with _quiet("mlflow.onnx", "mlflow.utils.requirements_utils", "mlflow.models"):
            return self._log_logged_model(run_id, path, save)

    def _log_logged_model(self, run_id: str, path: str, save) -> str:
        """What ``mlflow.<flavour>.log_model(name=...)`` (``Model.log``) does, through this
        tracker's client: ``Model.log`` logs to the process's global tracking URI and, with no
        ``run_id``, to the thread's active run, while stages log to their own runs from threads.
        Creates a LoggedModel with ``source_run_id`` = ``run_id`` and the run's params, has
        ``save(folder, mlflow_model)`` write the flavour's files, uploads them as the model's
        artifacts, records the model as an output of the run, and marks it READY (FAILED on an
        error). A run's model (``path`` "model") also gets the run's metrics: their latest values
        now, and every one ``log_metrics`` logs to the run from now on."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus  # deferred: mlflow (see __init__)
        from mlflow.models import Model  # deferred: mlflow (see __init__)

        run = self.client.get_run(run_id)
        runs_model = path == "model"
        name = _model_name(run.info.run_name if runs_model and run.info.run_name else path)
        logged = self.client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id,
                                                 params=dict(run.data.params))
        try:
            mlflow_model = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
                                 model_id=logged.model_id)
            with tempfile.TemporaryDirectory() as tmp:
                folder = str(Path(tmp) / "model")
                save(folder, mlflow_model)
                self.client.log_model_artifacts(logged.model_id, folder)
            step = self._link_metrics(run, logged.model_id) if runs_model else 0
            self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=step)])
        except BaseException:
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        logged = self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        if runs_model:
            with self._lock:
                self.run_models[run_id] = logged.model_id
        return mlflow_model.get_model_info(logged).model_uri

    def _link_metrics(self, run, model_id: str) -> int:
        """Link the latest point of each of ``run``'s metrics to LoggedModel ``model_id`` (logged
        again with the model's id, as ``Model.log`` does for its step: a SQL store keeps one point
        in the run's history); returns the last step, the step the model was logged at."""
        from mlflow.entities import Metric  # deferred: mlflow (see __init__)

        latest = []
        for key in run.data.metrics:
            history = self.client.get_metric_history(run.info.run_id, key)
            if history:
                m = max(history, key=lambda m: (m.step, m.timestamp))
                latest.append(Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id))
        for i in range(0, len(latest), 1000):
            self.client.log_batch(run.info.run_id, metrics=latest[i : i + 1000])
        return max((m.step for m in latest), default=0)

    def register(self, name: str, source: str, run_id: str, tags: dict, key: str) -> tuple[int, bool]:
        """A version of registered model ``name`` from ``source`` (the ``models:/<model id>`` URI
        ``log_model`` returns, or an older stage's ``runs:/`` model URI) with ``tags``; a version
        already registered for stage ``key`` is reused (a cached re-run adds none). The LoggedModel
        lists its versions (tag ``mlflow.modelVersions``, as ``mlflow.register_model`` sets it).
        Returns (version, created)."""
        from mlflow.exceptions import MlflowException  # deferred: mlflow (see __init__)

        model_id = _logged_model_id(source)
        with _store_lock(self.uri):
            try:
                self.client.create_registered_model(name, description="CAE-Net from the caenet-suite pipeline")
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            for version in self.client.search_model_versions(f"name = '{name}'"):
                if version.tags.get("stage_key") == key:
                    return int(version.version), False
            with _default_tracking_uri(self.uri) if model_id else contextlib.nullcontext():
                version = self.client.create_model_version(name, source, run_id=run_id, model_id=model_id,
                                                           tags={**{k: str(v) for k, v in tags.items()}, "stage_key": key})
            if model_id:
                self._list_version(model_id, version.name, version.version)
        return int(version.version), True

    def _list_version(self, model_id: str, name: str, version) -> None:
        """Add ``name`` ``version`` to LoggedModel ``model_id``'s ``mlflow.modelVersions`` (a
        tracking server adds it itself; a local store leaves it to the client)."""
        entry = {"name": name, "version": str(version)}
        have = json.loads(self.client.get_logged_model(model_id).tags.get("mlflow.modelVersions") or "[]")
        if entry not in have:
            self.client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps(have + [entry])})

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param  # deferred: mlflow (see __init__)

        flat = flatten(params)
        items = [Param(metric_name(k), str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict, step: int | None = None) -> None:
        from mlflow.entities import Metric  # deferred: mlflow (see __init__)

        now = int(time.time() * 1000)
        model_id = self.run_models.get(run_id)  # the run's model, once logged: the Models tab shows these
        items = [Metric(metric_name(k), float(v), now, step or 0, model_id=model_id)
                 for k, v in flatten(metrics).items() if _is_number(v)]
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
            if self.end_open in ON_STOP:
                ON_STOP.remove(self.end_open)
            try:
                if status != "FINISHED":
                    self._end_children(status)
                self.end(run_id, status)
            except _store_errors() as exc:  # the work is done and cached; only its record is short
                print(f"[mlflow] could not record the end ({status}) of run {run_id}: {self.uri} did not answer "
                      f"({last_line(exc)[:160]}); the run's stages are cached, a re-run records them", file=sys.stderr)


class Tolerant:
    """A ``Tracker`` whose calls never fail a stage: a tracking store that stops answering
    mid-run (a server killed, a network gone) is one warning line, and the stage's own work goes
    on and is cached; the MLflow record then lacks what was sent while it was down (a re-run
    records the cached stages again). A call that fails returns None (``start_child``: no run
    id, so the stage records nothing more). Bugs of the suite's own (any other exception) and
    bad input (``UserError``) still raise."""

    def __init__(self, tracker: Tracker, log: Callable[[str], None] = print):
        self._tracker, self._log = tracker, log
        self._breaker = tracking_store.Breaker()

    def __getattr__(self, name: str):
        attr = getattr(self._tracker, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            uri = self._tracker.uri
            if self._breaker.closed(uri):
                return None  # known to be down: not asked again for a while (each try costs seconds of retries)
            try:
                out = attr(*args, **kwargs)
            except _store_errors() as exc:
                if self._breaker.failed(uri):
                    self._log(f"[mlflow] WARNING: {uri} did not answer ({last_line(exc)[:160]}); the run goes "
                              "on and its stages are cached, but their MLflow record is incomplete")
                return None
            if self._breaker.answered(uri):
                self._log(f"[mlflow] {uri} answers again")
            return out

        return call


@functools.cache
def _store_errors() -> tuple[type[BaseException], ...]:
    """What a tracking store that is down raises: MLflow's own error (its HTTP client wraps
    connection failures), a connection error, a database error of a SQLite store."""
    from mlflow.exceptions import MlflowException  # deferred: mlflow takes ~1 s to import
    from requests.exceptions import RequestException  # deferred: comes with mlflow

    errors: list[type[BaseException]] = [MlflowException, RequestException, ConnectionError, TimeoutError]
    try:
        from sqlalchemy.exc import OperationalError  # deferred: comes with mlflow's SQL store

        errors.append(OperationalError)
    except ImportError:
        pass
    return tuple(errors)


# Model names MLflow refuses: "/", ":", ".", "%" and quotes.
_BAD_MODEL_NAME = re.compile(r"""[/:.%"']""")


def _model_name(text: str) -> str:
    """A LoggedModel name from a run name or a path (``onnx/caenet.encoder`` -> ``onnx-caenet-encoder``)."""
    return _BAD_MODEL_NAME.sub("-", text) or "model"


def _logged_model_id(uri: str) -> str | None:
    """The model id of a ``models:/<model id>`` URI (None for ``models:/<name>/<version>``, ``runs:/``)."""
    m = re.fullmatch(r"models:/([^/@]+)", uri)
    return m.group(1) if m else None


_DEFAULT_URI_LOCK = threading.Lock()


@contextlib.contextmanager
def _default_tracking_uri(uri: str):
    """MLflow's local registry stores (SQL and file) look the LoggedModel of a ``models:/<model
    id>`` source up through the process's default tracking URI, not the calling client's (a TODO
    in their ``create_model_version``): point that default at ``uri`` for the call, one thread at
    a time, and put it back. The module variable is set, not ``mlflow.set_tracking_uri``, which
    would also set and then unset ``$MLFLOW_TRACKING_URI`` (``resolve_tracking_uri`` reads it)."""
    from mlflow.tracking._tracking_service import utils  # deferred: mlflow (see Tracker.__init__)

    with _DEFAULT_URI_LOCK:
        saved = utils._tracking_uri
        utils._tracking_uri = uri
        try:
            yield
        finally:
            utils._tracking_uri = saved


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

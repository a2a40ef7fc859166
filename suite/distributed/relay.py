"""Per-epoch metrics to MLflow (and to the console), written by the driver alone.

Workers never talk to MLflow (on a cluster its store is the driver's). A one-worker training
(a warm Ray task) streams its epochs back to the driver, which logs them (``EpochLogger``).
For Ray Train, the controller calls
``EpochRelay.after_report`` in its controller once every worker has reported an epoch (and its
checkpoint is persisted); the callback hands the metrics to a small queue actor, and a
thread in the driver drains the queue into MLflow and the console while the training runs
(rank 0's progress records come through the same queue). So the curves are live, and an
epoch whose checkpoint never registered (a worker killed mid-report) is not logged twice.
"""

from __future__ import annotations

import functools
import threading
import time
from queue import Empty

import ray
from ray.util.queue import Queue
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from suite import tracking_store
from suite.distributed.progress import display
from suite.distributed.ray_runtime import on_close, session_key
from suite.training.reports import PROGRESS

_SKIP = ("epoch", "started_at_epoch")


_pending: dict[tuple[str, str], list] = {}  # (uri, run) -> metrics not logged yet: the store did not answer
_breaker = tracking_store.Breaker()  # a store that did not answer is tried again later, not at every epoch


def log_epoch(uri: str, run_id: str, metrics: dict) -> int:
    """Log one epoch's numbers to ``run_id`` at step = the epoch (1-based); returns the step.

    MLflow down: one line, and the training goes on; the epochs it could not log are kept and
    sent with the first epoch after the store answers again (``flush`` at the training's end)."""
    # deferred: mlflow takes ~1 s to import, and only the driver's relay thread logs
    from mlflow.entities import Metric

    step = int(metrics.get("epoch", 0))
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if k not in _SKIP and not k.startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool)]
    _pending.setdefault((uri, run_id), []).extend(items)
    if not _breaker.closed(uri):
        flush(uri, run_id)
    return step


def flush(uri: str, run_id: str) -> bool:
    """Send what ``log_epoch`` kept for ``run_id``; whether nothing is left."""
    items = _pending.get((uri, run_id), [])
    try:
        for i in range(0, len(items), 1000):  # MLflow's batch limit
            tracking_store.client(uri).log_batch(run_id, metrics=items[i : i + 1000])
    except Exception as exc:
        if _breaker.failed(uri):
            print(f"[mlflow] could not log the epochs of run {run_id} ({str(exc).splitlines()[0][:160]}); "
                  f"the training goes on, they are kept and sent when {uri} answers")
        return False
    _pending.pop((uri, run_id), None)
    if _breaker.answered(uri):
        print(f"[mlflow] {uri} answers again: the kept epochs of run {run_id} are logged")
    return True


class EpochLogger:
    """The same record without Ray Train: the driver logs each epoch as its task yields it."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id

    def __call__(self, metrics: dict) -> None:
        log_epoch(self.uri, self.run_id, metrics)

    def flush(self) -> bool:
        return flush(self.uri, self.run_id)


class _Drain:
    """One queue and one draining thread per driver process and Ray session."""

    def __init__(self, key):
        self.key = key
        # On the driver's node: a worker node that dies must not take the queue with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self.last_step: dict[str, int] = {}
        self.changed = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name="mlflow-relay", daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopped and ray.is_initialized():
            try:
                (uri, run, name, epochs), metrics = self.queue.get(timeout=0.5)
            except Empty:
                continue
            except BaseException:  # Ray shut down under us (its get raises SystemExit then)
                return
            try:  # the console must not stop the MLflow record
                if PROGRESS in metrics:
                    display.progress(name, metrics[PROGRESS])
                    continue
                display.epoch(name, epochs, metrics)
            except Exception:
                pass
            step = log_epoch(uri, run, metrics) if uri and run else int(metrics.get("epoch", 0))
            with self.changed:
                self.last_step[(name, run)] = max(step, self.last_step.get((name, run), 0))
                self.changed.notify_all()

    def wait_for(self, key: tuple, step: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while self.last_step.get(key, 0) < step and time.monotonic() < deadline:
                self.changed.wait(timeout=max(0.0, deadline - time.monotonic()))

    def close(self):
        self.stopped = True
        self.thread.join(timeout=2)


_lock = threading.Lock()
_drain: _Drain | None = None


def callback(uri: str | None, run_id: str | None, name: str, epochs: int):
    """A Ray Train callback that sends each epoch's metrics of training ``name`` to the console
    and to ``run_id`` in the store at ``uri`` (None: no MLflow record)."""
    global _drain
    with _lock:
        key = session_key()
        if _drain is not None and _drain.key != key:  # a queue of a Ray session that has ended
            _drain.close()
            _drain = None
        if _drain is None:
            _drain = _Drain(key)
        return _epoch_relay_class()(_drain.queue.actor, (uri, run_id, name, epochs))


@functools.cache
def _epoch_relay_class():
    """The Ray Train callback class, made on first use: its base lives in ``ray.train``, which
    takes ~2.6 s to import, and only data-parallel trainings need it. (Defined here, Ray pickles
    the class with its instances: controller and workers need no import of it.)"""
    try:
        from ray.train import UserCallback  # deferred: ray.train takes ~2.6 s to import
    except ImportError:  # older Ray: the callback base moved
        from ray.train.v2.api.callback import UserCallback  # deferred, as above

    class EpochRelay(UserCallback):
        def __init__(self, queue_actor, target: tuple):
            self.queue_actor, self.target = queue_actor, target  # (tracking URI, run id, training name, epochs)

        def after_report(self, run_context, metrics, checkpoint):
            if metrics and metrics[0]:
                self.send(metrics[0])

        def send(self, metrics: dict) -> None:
            """Also called by a worker that resumed from a checkpoint the controller never saw
            reported (its worker died right after persisting it): that epoch is logged too."""
            # Fire and forget: the controller's event loop must not block on the queue.
            self.queue_actor.put_nowait.remote((self.target, metrics))

    return EpochRelay


def wait_for(name: str, run_id: str | None, step: int, timeout_s: float = 15.0) -> None:
    """Block until the driver has shown (and logged to ``run_id``) ``step`` of training ``name``
    (the relay is asynchronous)."""
    if _drain is not None:
        _drain.wait_for((name, run_id), step, timeout_s)


def close() -> None:
    """Stop the relay (before Ray shuts down); the next training starts a new one."""
    global _drain
    with _lock:
        if _drain is not None:
            _drain.close()
            _drain = None


on_close(close)

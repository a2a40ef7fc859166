"""One Ray session per pipeline run, started when the first stage needs it.

``ray.init`` of a local cluster costs about 5 s on 2 cores and its shutdown about 1.5 s; a run
whose stages are all cached (a re-run, ``caenet report``-style lookups, a sweep trial that
reuses everything) needs no Ray at all. So ``ray_session`` only opens a session, and the
first call of ``ensure_ray()`` (a training, a Tune search) starts it. Joining a running
cluster (``$RAY_ADDRESS``: ``ray job submit``, a cluster) happens at once instead, so that the
storage check stops a misconfigured cluster run before any stage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray
import torch

from suite import storage
from suite.config import RuntimeConfig
from suite.distributed import gpus
from suite.errors import INTERRUPTED
from suite.locks import file_lock

_lock = threading.RLock()
_pending: tuple[RuntimeConfig, Path | None, bool] | None = None  # the open session (runtime, cache root, dashboard)
_started_here = False  # this process started (or joined) Ray for the open session: it shuts it down
_on_close: list = []  # called before Ray shuts down (the epoch relay, the cached data refs)
_gpu: bool | None = None  # the open session's GPU decision (suite.distributed.gpus), made once as it opens


def on_close(hook) -> None:
    """Call ``hook()`` when a session this process started ends, before Ray shuts down; the
    modules that hold session state (``relay``, ``training``) register themselves."""
    if hook not in _on_close:
        _on_close.append(hook)


def session_key() -> tuple[str, str]:
    """Names the Ray session this process is connected to (object refs and actors of an
    earlier session are useless in a later one)."""
    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ctx.get_job_id()


def use_gpu(runtime: RuntimeConfig) -> bool:
    """Whether this run's trainings take GPUs: the decision made when its session opened (one
    run never mixes CPU and GPU trainings as nodes come and go); outside a session, made now."""
    with _lock:
        if _gpu is not None:
            return _gpu
    return gpus.decide(runtime, gpus.describe(runtime, joined=ray.is_initialized(), probe=False))


def _decide_gpu(runtime: RuntimeConfig, joined: bool, probe: bool) -> None:
    global _gpu
    decision = gpus.decide(runtime, gpus.describe(runtime, joined=joined, probe=probe))
    with _lock:
        _gpu = decision


def ensure_ray() -> None:
    """Start the open session's Ray now, if it is not up yet (thread-safe)."""
    global _started_here
    with _lock:
        if INTERRUPTED.is_set():  # a stage thread still running after Ctrl-C: no new work
            raise RuntimeError("the run was interrupted")
        if ray.is_initialized():
            return
        if _pending is None:
            # After the session closed (Ctrl-C, an error) a stage thread still running must
            # not start a fresh local Ray (issue 14).
            raise RuntimeError("Ray is needed but no Ray session is open (suite.distributed.ray_runtime.ray_session)")
        runtime, cache_root, dashboard = _pending
        _lifecycle().submit(_init, runtime, dashboard).result()
        _started_here = True
        if INTERRUPTED.is_set():  # Ctrl-C came while Ray was starting
            raise RuntimeError("the run was interrupted")
        if cache_root is not None:
            storage.check_shared(runtime, cache_root)


_thread: ThreadPoolExecutor | None = None


def _lifecycle() -> ThreadPoolExecutor:
    """The one thread that starts and stops Ray. Stage threads start it on demand, and Ray
    2.60's ``ray.shutdown`` from another thread than ``ray.init``'s takes 15 s instead of 1."""
    global _thread
    if _thread is None:
        _thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-lifecycle")
    return _thread


class _NotMainThread(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # the session sets that SIGTERM handler itself
        return "SIGTERM handler is not set" not in record.getMessage()


_NOT_MAIN_THREAD = _NotMainThread()  # one instance: adding it again is a no-op


def _init(runtime: RuntimeConfig, dashboard: bool) -> None:
    logging.getLogger("ray._private.worker").addFilter(_NOT_MAIN_THREAD)
    address = os.environ.get("RAY_ADDRESS")
    kwargs = {"address": address} if address else {"num_cpus": runtime.num_cpus, "include_dashboard": dashboard}
    # Workers' output (and Ray's daemons' warnings) go to Ray's log folder, not the console: the
    # driver shows each training's progress itself (suite.distributed.progress). -v shows them.
    verbose = verbose_ray()
    ray.init(log_to_driver=verbose, configure_logging=True, logging_level="INFO" if verbose else "WARNING", **kwargs)
    if not verbose and not INTERRUPTED.is_set():  # after Ctrl-C the resume line is the last one
        print(f"Ray: worker logs in {logs_folder()}{' (on each node)' if address else ''}; `caenet -v` shows them here",
              flush=True)


def verbose_ray() -> bool:
    """``caenet -v`` (or CAENET_VERBOSE=1): Ray's worker output on this console too."""
    return os.environ.get("CAENET_VERBOSE") == "1"


def logs_folder() -> str:
    """The folder of this Ray session's logs on this node (Ray exposes no public call for it)."""
    try:
        return ray._private.worker._global_node.get_logs_dir_path()
    except AttributeError:  # a later Ray moved it
        return "<Ray's temp dir>/session_latest/logs"


def resources(total: bool = False) -> dict:
    """Free (or ``total``) Ray resources; before a local session's Ray has started, what it will
    have (``runtime.num_cpus`` or every core, every CUDA device); outside a session, nothing."""
    if ray.is_initialized():
        return ray.cluster_resources() if total else ray.available_resources()
    with _lock:
        if _pending is None or os.environ.get("RAY_ADDRESS"):
            return {}

        return {"CPU": float(_pending[0].num_cpus or os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def needs_dashboard(runtime: RuntimeConfig, tune: bool) -> bool:
    """Whether a local Ray needs its dashboard: Ray Train's placement-group cleaner and Tune's
    trial clean-up query the State API it serves (without it they warn every few seconds).
    One-worker trainings (warm Ray tasks) and Ray tasks do not; leaving it out saves ~1.3 s of
    start-up and the CPU its processes take all run long (2 cores here)."""
    return tune or runtime.workers > 1 or runtime.trainer == "ray-train"


@contextlib.contextmanager
def ray_session(runtime: RuntimeConfig, cache_root: Path | None = None, tune: bool = False):
    """Open a Ray session: ``$RAY_ADDRESS`` (a cluster, or ``ray job submit``), joined now, or a
    local Ray, started by the first ``ensure_ray()``.

    A Ray started here is shut down on exit; one that was already up is left alone. On a
    cluster of more than one node, every node must see the checkpoint storage
    (``runtime.storage``, or the cache ``cache_root`` when it is unset): checked as Ray starts
    (``storage.check_shared``). ``tune``: the block runs Ray Tune (a local Ray then starts with
    its dashboard, ``needs_dashboard``).
    """
    global _pending, _started_here, _gpu
    # Auth must be explicit: since Ray 2.59 an implicit token file can turn auth on for a
    # later head (PITFALLS.md). Users with token auth set RAY_AUTH_MODE themselves.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    # Ray Train's controller polls its workers on this interval (default 2 s): every training
    # pays it at start, at each failure and at the end. 0.2 s: an empty fit 12.3 -> 7.8 s
    # (PITFALLS.md). Read by the processes a local Ray starts from here; a cluster sets its own.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    if ray.is_initialized():  # inside a Tune trial, or a caller's own session
        if cache_root is not None:
            storage.check_shared(runtime, cache_root)
        # No GPU probe here: a trial's GPUs may all be held by trials (the driver probed).
        _decide_gpu(runtime, joined=True, probe=False)
        try:
            yield
        finally:
            _gpu = None
        return
    INTERRUPTED.clear()  # a new session: an earlier one's Ctrl-C is over
    with contextlib.ExitStack() as stack:
        if not os.environ.get("RAY_ADDRESS"):
            stack.enter_context(local_ray_lock())
        with _lock:
            _pending, _started_here = (runtime, cache_root, needs_dashboard(runtime, tune)), False
        # as ray.init would (it runs in another thread), unless the CLI has its own handler
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        interrupted = False
        try:
            if os.environ.get("RAY_ADDRESS"):
                ensure_ray()
            _decide_gpu(runtime, joined=ray.is_initialized(), probe=True)  # before any stage: `yes` without a GPU stops here
            yield
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            if interrupted:
                # Ctrl-C: leave at once, without the lock a Ray still starting holds for ~5 s.
                # The shutdown is queued, not awaited: Ray's reaper ends a local Ray with this
                # process, and the stage threads may no longer start one (_pending is gone).
                _pending, _started_here, _gpu = None, False, None
                INTERRUPTED.set()  # no stage thread may use Ray any more
                _lifecycle().submit(ray.shutdown)
            else:
                with _lock:
                    started, _pending, _started_here, _gpu = _started_here, None, False, None
                if started:
                    for hook in _on_close:
                        hook()
                    _lifecycle().submit(ray.shutdown).result()


LOCAL_RAY_LOCK = Path(tempfile.gettempdir()) / "caenet-local-ray.lock"


@contextlib.contextmanager
def local_ray_lock(path: Path = LOCAL_RAY_LOCK):
    """One local Ray per machine: a second ``caenet`` run that would start its own waits here,
    with one line naming the run it waits for, until that run's session ends.

    Taken when the session opens, before any stage: a run that took a stage's lock and then
    waited for Ray could otherwise deadlock with the run that holds Ray and waits for that
    stage. The kernel drops the lock when its holder dies: a killed run blocks nobody."""

    def waiting(handle) -> None:
        handle.seek(0)
        holder = handle.read().strip() or "another caenet run"
        print(f"caenet: waiting for {holder} to finish: it runs this machine's local Ray (one per machine; "
              f"Ctrl-C stops this run, or point both at one cluster with RAY_ADDRESS)", flush=True)

    with file_lock(path, waiting) as handle:
        _name_holder(handle, f"caenet run pid {os.getpid()} (started {time.strftime('%H:%M:%S')}: {' '.join(sys.argv[1:3])})")
        try:
            yield
        finally:
            _name_holder(handle, "")


def _name_holder(handle, text: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()

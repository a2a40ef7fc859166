"""One Ray session per pipeline run (``ray.init`` costs about 15 s on 2 cores)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from suite.config import RuntimeConfig


def session_key() -> tuple[str, str]:
    """Names the Ray session this process is connected to (object refs and actors of an
    earlier session are useless in a later one)."""
    import ray

    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ctx.get_job_id()


@contextlib.contextmanager
def ray_session(runtime: RuntimeConfig, cache_root: Path | None = None):
    """Connect to ``$RAY_ADDRESS`` (a cluster, or ``ray job submit``) or start a local Ray.

    A session started here is shut down on exit; one that was already up is left alone. On a
    cluster of more than one node, every node must see the checkpoint storage
    (``runtime.storage``, or the cache ``cache_root`` when it is unset): checked before
    anything runs (``storage.check_shared``).
    """
    import ray

    from suite.distributed import relay, storage
    from suite.distributed.training import forget_inputs

    # Auth must be explicit: since Ray 2.59 an implicit token file can turn auth on for a
    # later head (PITFALLS.md). Users with token auth set RAY_AUTH_MODE themselves.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    if ray.is_initialized():
        if cache_root is not None:
            storage.check_shared(runtime, cache_root)
        yield
        return
    address = os.environ.get("RAY_ADDRESS")
    # The dashboard stays on: Ray Train's placement-group cleaner (and Tune's trial clean-up)
    # query the State API it serves; without it they log a warning every few seconds.
    kwargs = {"address": address} if address else {"num_cpus": runtime.num_cpus, "include_dashboard": True}
    ray.init(log_to_driver=True, configure_logging=True, logging_level="WARNING", **kwargs)
    try:
        if cache_root is not None:
            storage.check_shared(runtime, cache_root)
        yield
    finally:
        relay.close()
        forget_inputs()
        ray.shutdown()

"""The Ray Train callback of ``suite.distributed.relay``: each reported epoch to the driver's queue."""

from __future__ import annotations

try:
    from ray.train import UserCallback
except ImportError:  # older Ray: the callback base moved
    from ray.train.v2.api.callback import UserCallback


class EpochRelay(UserCallback):
    def __init__(self, queue_actor, target: tuple[str, str]):
        self.queue_actor, self.target = queue_actor, target  # target: (tracking URI, run id, training name, epochs)

    def after_report(self, run_context, metrics, checkpoint):
        if metrics and metrics[0]:
            self.send(metrics[0])

    def send(self, metrics: dict) -> None:
        """Also called by a worker that resumed from a checkpoint the controller never saw
        reported (its worker died right after persisting it): that epoch is logged too."""
        # Fire and forget: the controller's event loop must not block on the queue.
        self.queue_actor.put_nowait.remote((self.target, metrics))

"""``kind: channel_prune``: ``ratio`` of ``of``'s channels removed (Torch-Pruning dependency
graph, L1 importance), then fine-tuned; latency drops with the parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from suite.methods import register
from suite.methods.base import MethodParams
from suite.methods.job import MethodJob, prune_structure
from suite.stages.trained import write_spec


@register
class ChannelPrune(MethodParams):
    """Structural pruning: a share of the channels removed, then fine-tuned."""

    kind: Literal["channel_prune"]
    ratio: float = Field(gt=0, lt=1)  # the share of channels removed

    def run(self, job: MethodJob) -> dict:
        init = job.work / "pruned_init.pt"
        name, kwargs = prune_structure(job, self.ratio, init)
        metrics = job.fit(job.work / "model.pt", model=name, model_kwargs=kwargs, init_from={"": str(init)})
        write_spec(job.work, name, kwargs)
        return metrics

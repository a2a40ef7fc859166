"""``kind: weight_prune``: ``of``'s weights magnitude-pruned to ``ratio`` sparsity step by step
while fine-tuning (Han et al. 2015); its size is measured on a sparse serialization."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from suite.compression.pruning import sparse_bytes
from suite.methods import register
from suite.methods.base import MethodParams
from suite.methods.job import MethodJob
from suite.stages.trained import load_model, write_spec
from suite.training.job import PruneWeights


@register
class WeightPrune(MethodParams):
    """Magnitude pruning of the weights to a sparsity while fine-tuning (Han et al. 2015)."""

    kind: Literal["weight_prune"]
    ratio: float = Field(gt=0, lt=1)  # the final share of zero weights

    def run(self, job: MethodJob) -> dict:
        name, kwargs = job.source.model, job.source.kwargs
        out = job.work / "model.pt"
        metrics = job.fit(out, model=name, model_kwargs=kwargs, init_from={"": str(job.source.stage.file("model.pt"))},
                          hooks=[PruneWeights(self.ratio)])
        size = sparse_bytes(load_model(name, kwargs, out))
        write_spec(job.work, name, kwargs, size)
        return {**metrics, "compressed_size_bytes": size}

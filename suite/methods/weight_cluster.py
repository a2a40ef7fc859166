"""``kind: weight_cluster``: ``of``'s conv / linear weights shared among ``clusters`` values per
layer, with centroid fine-tuning (Deep Compression); its size is measured on the packed form."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from suite.compression.sharing import packed_bytes
from suite.methods import register
from suite.methods.base import MethodParams
from suite.methods.job import MethodJob
from suite.stages.trained import load_model, write_spec
from suite.training.job import ShareWeights


@register
class WeightCluster(MethodParams):
    """Weight sharing: each layer's weights clustered to a few values, centroids fine-tuned."""

    kind: Literal["weight_cluster"]
    clusters: int = Field(default=32, ge=2, le=256)  # shared values per layer

    def run(self, job: MethodJob) -> dict:
        name, kwargs = job.source.model, job.source.kwargs
        out = job.work / "model.pt"
        metrics = job.fit(out, model=name, model_kwargs=kwargs, init_from={"": str(job.source.stage.file("model.pt"))},
                          hooks=[ShareWeights(self.clusters)])
        size = packed_bytes(load_model(name, kwargs, out).cpu(), self.clusters)
        write_spec(job.work, name, kwargs, size)
        return {**metrics, "compressed_size_bytes": size}

"""``kind: kd``: a small student trained on the baseline's soft targets (Hinton et al. 2015),
with the temperature and weight of ``caenet.kd``."""

from __future__ import annotations

from typing import ClassVar, Literal

from suite.methods import register
from suite.methods.job import FromScratch, MethodJob
from suite.stages.trained import write_spec


@register
class KnowledgeDistillation(FromScratch):
    """A student architecture trained on the baseline's soft targets (Hinton et al.)."""

    kind: Literal["kd"]
    teacher: ClassVar[bool] = True

    def run(self, job: MethodJob) -> dict:
        name, kwargs = self.architecture(job)
        metrics = job.fit(job.work / "model.pt", model=name, model_kwargs=kwargs, **job.teacher())
        write_spec(job.work, name, kwargs)
        return metrics

"""``kind: train``: an architecture trained from scratch on labels (VGG16, ResNet18/32/50, MobileNetV2)."""

from __future__ import annotations

from typing import Literal

from suite.methods import register
from suite.methods.job import FromScratch, MethodJob
from suite.stages.trained import write_spec


@register
class Train(FromScratch):
    """An architecture trained from scratch on the labels (VGG16, ResNets, MobileNetV2)."""

    kind: Literal["train"]

    def run(self, job: MethodJob) -> dict:
        name, kwargs = self.architecture(job)
        metrics = job.fit(job.work / "model.pt", model=name, model_kwargs=kwargs, objective="classify")
        write_spec(job.work, name, kwargs)
        return metrics

"""What the method modules share: the job a method runs in, and the steps several methods take
(structural pruning, int8 export, the teacher's soft targets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn
from pydantic import Field

from suite.compression.quantize import onnx_int8, quantize_int8, quiet_jit, scripted_bytes
from suite.compression.structured import prune_channels
from suite.data import fit_and_val
from suite.distributed.launch import fit
from suite.training.job import TrainJob
from suite.methods.base import MethodParams
from suite.metrics import count_parameters
from suite.models import geometry
from suite.models.resized import resized_spec
from suite.pipeline.context import Context
from suite.pipeline.stage import StageResult
from suite.stages.trained import INT8_ONNX, Trained, write_spec


@dataclass
class MethodJob:
    """Everything ``run`` of a method gets: the pipeline context, the model it starts from,
    the rows before it, the baseline's logits (the KD teacher), and the stage's work folder."""

    ctx: Context
    method: MethodParams
    source: Trained | None  # the row 'of' names; None for methods trained from scratch
    rows: dict[str, Trained]  # baseline, caenet and every earlier method
    entropy: StageResult  # logits.npy: the baseline's logits on the training images
    work: Path
    job: dict = field(default_factory=dict)  # TrainJob keywords of this stage (name, train, storage, MLflow)

    @property
    def geometry(self) -> dict:
        return geometry(self.ctx.info)

    def fit(self, out: Path, **kwargs) -> dict:
        """One training through Ray Train (or a warm Ray task); the weights land in ``out``."""
        return fit(TrainJob(**{**self.job, **kwargs}), self.ctx.cfg.runtime, out)

    def teacher(self) -> dict:
        """TrainJob keywords of knowledge transfer from the baseline's soft targets."""
        return {"objective": "kd", "teacher_logits_path": str(self.entropy.file("logits.npy")),
                "kd": self.ctx.cfg.caenet.kd.model_dump()}

    def split(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fit images, fit labels, val images, val labels), uint8 images as stored."""
        return fit_and_val(self.ctx.cfg.data)

    def example(self) -> torch.Tensor:
        """One zero image of the dataset's shape (for tracing channel dependencies)."""
        info = self.ctx.info
        return torch.zeros(1, info.channels, info.size, info.size)

    def log(self, text: str) -> None:
        self.ctx.runner.log(text)


def base_kwargs(job: MethodJob, kwargs: dict) -> dict:
    """A model's keywords without the dataset geometry (what wrappers such as SubFlow keep)."""
    return {k: v for k, v in kwargs.items() if k not in job.geometry}


def prune_structure(job: MethodJob, ratio: float, out: Path) -> tuple[str, dict]:
    """Remove ``ratio`` of the source's channels (the encoder's only for CAE-Net, Sec. III-A);
    save the pruned weights to ``out``; return the pruned model's (registry name, kwargs)."""
    source = job.source
    model = source.load().cpu()
    base, kwargs = (source.kwargs["base"], source.kwargs["base_kwargs"]) if source.model == "resized" else (source.model, source.kwargs)
    prune_channels(model, ratio, job.example(), prefixes=["encoder"] if base == "caenet" else None)
    torch.save(model.state_dict(), out)
    return resized_spec(base, kwargs, model)


def calibration(job: MethodJob, fit_images: torch.Tensor) -> torch.Tensor:
    """The first ``compare.calibration_images`` training images (float, [0, 1]) that fix int8 ranges."""
    return fit_images[: job.ctx.cfg.compare.calibration_images].float() / 255.0


def save_int8(float_model: nn.Module, calibration_images: torch.Tensor, work: Path) -> int:
    """Quantize to int8 once per runtime from the same calibration images: PyTorch's
    (``model.ts``) and onnxruntime's (``INT8_ONNX``, what an onnxruntime board runs); save the
    spec; return the PyTorch model's size in bytes."""
    scripted = quantize_int8(float_model, calibration_images)
    with quiet_jit():
        torch.jit.save(scripted, str(work / "model.ts"))
    (work / INT8_ONNX).write_bytes(onnx_int8(float_model, calibration_images))
    size = scripted_bytes(scripted)
    write_spec(work, None, {}, size, count_parameters(float_model))  # int8 keeps the count, at 1 byte each
    return size


class FromScratch(MethodParams):
    """Methods that train an architecture of the model registry on the data ('of' unused)."""

    model: str = Field(min_length=1)  # an architecture of the model registry (suite.models)
    model_kwargs: dict = {}  # extra keywords for the architecture (e.g. width)
    fresh: ClassVar[bool] = True

    def architecture(self, job: MethodJob) -> tuple[str, dict]:
        return self.model, {**job.geometry, **self.model_kwargs}


class TimesItself(MethodParams):
    """Methods that time candidates on this machine and keep one within a latency budget."""

    budget_ms: float | None = Field(default=None, gt=0)  # null: compare.slo_ms
    times_itself: ClassVar[bool] = True

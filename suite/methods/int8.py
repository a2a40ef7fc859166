"""``kind: int8``: ``of`` quantized to int8 after training (no fine-tuning), activation ranges
calibrated on the first ``compare.calibration_images`` training images, by PyTorch's and by
onnxruntime's quantization tooling (one model per runtime; ``methods.common.save_int8``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from suite.methods import register
from suite.methods.base import MethodParams
from suite.methods.job import MethodJob, calibration, save_int8


@register
class Int8(MethodParams):
    """Post-training int8 quantization (TorchScript), calibrated on training images."""

    kind: Literal["int8"]
    trains: ClassVar[bool] = False

    def key(self, cfg) -> dict:
        # onnxruntime: the stage makes onnxruntime's own int8 too (stages made before it lack the file)
        return {**super().key(cfg), "calibration_images": cfg.compare.calibration_images, "onnxruntime": "qdq-minmax"}

    def run(self, job: MethodJob) -> dict:
        images = calibration(job, job.split()[0])
        return {"compressed_size_bytes": save_int8(job.source.load(), images, job.work), "calibration_images": len(images)}

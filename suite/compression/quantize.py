"""INT8 post-training quantization (static, per-channel weights) of any model in the suite,
once per runtime, each by that runtime's own tooling:

- PyTorch (``quantize_int8``): FX graph-mode quantization traces the float model, inserts
  observers, runs ``calibration`` images through it to fix activation ranges, and converts
  every conv / linear (with its BatchNorm and ReLU fused) to an int8 kernel. The result is
  stored as TorchScript (a quantized model has no factory to rebuild it from), which is also
  what a ``runtime: torch`` board loads. Quantized kernels run on the CPU only (fbgemm/x86 on
  x86, qnnpack on ARM).
- onnxruntime (``onnx_int8``): ``onnxruntime.quantization.quantize_static`` on the float ONNX
  export, calibrated on the same images (QDQ, per-channel int8 weights, uint8 activations):
  what a ``runtime: onnxruntime`` board runs. A TorchScript int8 model does not export to
  ONNX, so without this the int8 rows had no onnxruntime column.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import platform
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from suite.metrics import fold_batchnorm, to_onnx


def engine() -> str:
    engines = torch.backends.quantized.supported_engines
    preferred = ["qnnpack"] if platform.machine().lower() in ("aarch64", "arm64", "armv7l") else ["x86", "fbgemm"]
    for name in preferred + ["qnnpack"]:
        if name in engines:
            return name
    raise RuntimeError(f"no int8 CPU backend in this torch build (has {engines}); use a float model")


@torch.no_grad()
def quantize_int8(model: nn.Module, calibration: torch.Tensor, batch: int = 64) -> torch.jit.ScriptModule:
    """An int8 TorchScript copy of ``model`` calibrated on ``calibration`` (float images in [0, 1])."""
    backend = engine()
    torch.backends.quantized.engine = backend
    float_model = copy.deepcopy(model).cpu().eval()
    example = calibration[:1].cpu()
    with quiet_jit():
        prepared = prepare_fx(float_model, get_default_qconfig_mapping(backend), (example,))
        for i in range(0, len(calibration), batch):
            prepared(calibration[i : i + batch].cpu())
        quantized = convert_fx(prepared)
        scripted = torch.jit.trace(quantized, example)
        return torch.jit.freeze(scripted.eval())


def onnx_int8(model: nn.Module, calibration: torch.Tensor, batch: int = 64) -> bytes:
    """The int8 ONNX file (bytes) of ``model`` made by onnxruntime's static quantization from its
    float export (BatchNorm folded, as every timed model here), activation ranges calibrated on
    ``calibration`` (float images in [0, 1]) with onnxruntime's default MinMax method."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,  # deferred: only int8 needs it
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration[i : i + batch].cpu().float().numpy() for i in range(0, len(calibration), batch))

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {"input": x}

    float_model = fold_batchnorm(copy.deepcopy(model).cpu().eval())
    with tempfile.TemporaryDirectory(prefix="caenet-int8-") as tmp:
        source, ready, target = Path(tmp) / "float.onnx", Path(tmp) / "ready.onnx", Path(tmp) / "int8.onnx"
        to_onnx(float_model, calibration[:1].cpu().float(), str(source))
        logging.disable(logging.WARNING)  # the tooling's advice, on the root logger, for what it then does anyway
        try:
            quant_pre_process(str(source), str(ready))  # shape inference and graph optimisation, as the tooling asks
            quantize_static(str(ready), str(target), Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        return target.read_bytes()


@contextlib.contextmanager
def quiet_jit():
    """torch.ao and torch.jit print deprecation notes (pointing at torchao / torch.export) on
    every call; both still work in this torch and are what the int8 path needs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))
        yield


def scripted_bytes(module: torch.jit.ScriptModule) -> int:
    buf = io.BytesIO()
    with quiet_jit():
        torch.jit.save(module, buf)
    return buf.getbuffer().nbytes

"""INT8 post-training quantization (static, per-channel weights) of any model in the suite.

PyTorch's FX graph-mode quantization traces the float model, inserts observers, runs
``calibration`` images through it to fix activation ranges, and converts every conv /
linear (with its BatchNorm and ReLU fused) to an int8 kernel. The result is stored as
TorchScript (a quantized model has no factory to rebuild it from), which is also what a
board loads. Quantized kernels run on the CPU only (fbgemm/x86 on x86, qnnpack on ARM).
"""

from __future__ import annotations

import contextlib
import copy
import io
import platform
import warnings

import torch
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx


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

"""Export trained models for the boards: TorchScript or ONNX, checked against PyTorch.

Every model exports whole; CAE-Net also exports its encoder and its classifier on their own
(the per-component latency and energy of the paper's Fig. 5). BatchNorm is folded first, as
for the latency measurements here. Each file is loaded back (``torch.jit.load`` or an
onnxruntime session) and run on real test images; the largest absolute difference from the
PyTorch outputs is recorded, and an export that differs by more than ``atol`` is an error.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from suite.errors import UserError
from suite.metrics import fold_batchnorm, onnx_session, to_onnx

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}


class ExportError(UserError, RuntimeError):
    """An export that failed or does not match PyTorch; the message is one line."""


def components(label: str, model: nn.Module) -> dict[str, nn.Module]:
    """``label`` -> the model, plus ``label.encoder`` / ``label.classifier`` for CAE-Net-like models."""
    parts = {label: model}
    if hasattr(model, "encoder") and hasattr(model, "classifier"):
        parts[f"{label}.encoder"] = model.encoder
        parts[f"{label}.classifier"] = model.classifier
    return parts


def export_one(model: nn.Module, example: torch.Tensor, fmt: str, path: Path) -> Path:
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        # Deprecated in torch 2.14 in favour of torch.export, but TorchScript is what a board's
        # torch (JetPack ships 1.x-2.x wheels) loads without this suite.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
        traced.save(str(path))
    elif fmt == "onnx":
        to_onnx(model, example, str(path))
    else:
        raise ExportError(f"unknown format {fmt!r}; choose {', '.join(FORMATS)}")
    return path


def run_exported(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    if fmt == "torchscript":
        with warnings.catch_warnings():  # 2.14 deprecates TorchScript loading; boards still run it
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(path), map_location="cpu").eval()
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()
    sess = onnx_session(path, threads=1)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def export_model(label: str, model: nn.Module, images: torch.Tensor, fmt: str, folder: Path, atol: float = 1e-4,
                 whole_only: bool = False) -> list[dict]:
    """Export ``model`` (and its components, unless ``whole_only``) to ``folder``; return one
    manifest entry per file.

    ``images``: float test images in [0, 1], shape (N, C, H, W); the check runs them all.
    """
    model = fold_batchnorm(model.cpu().eval())
    entries = []
    x = images.float().cpu()
    feed = {label: x}
    if hasattr(model, "encoder") and not whole_only:
        with torch.no_grad():
            feed[f"{label}.encoder"] = x
            feed[f"{label}.classifier"] = model.encoder(x)
    parts = {label: model} if whole_only else components(label, model)
    for name, part in parts.items():
        inputs = feed[name]
        path = folder / f"{name}{FORMATS[fmt]}"
        try:
            export_one(part, inputs[:1], fmt, path)
            got = run_exported(path, fmt, inputs.numpy())
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"{name} -> {fmt}: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from None
        with torch.no_grad():
            want = part(inputs).numpy()
        diff = float(np.abs(got - want).max())
        if not diff <= atol:
            raise ExportError(f"{name} -> {fmt}: outputs differ from PyTorch by {diff:.3g} (> {atol:g})")
        entries.append(_entry(name, fmt, path, inputs, max_abs_diff=diff))
    return entries


def _entry(name: str, fmt: str, path: Path, inputs: torch.Tensor, **checks) -> dict:
    """The manifest entry of a checked model file, its inputs saved beside it (what the board feeds it)."""
    np.save(path.with_name(f"{name}.inputs.npy"), inputs.numpy().astype(np.float32))
    return {"name": name, "format": fmt, "file": path.name, "inputs": f"{name}.inputs.npy", "input_shape": [1, *inputs.shape[1:]],
            **checks, "bytes": path.stat().st_size, "checked_on": len(inputs)}


MIN_AGREEMENT = 0.9  # top-1 agreement of two runtimes' int8 of one float model, at least


def ready_onnx(label: str, path: Path, reference: nn.Module, images: torch.Tensor, folder: Path) -> dict:
    """A model that is already ONNX (onnxruntime's own int8 of a float model,
    ``compression.quantize.onnx_int8``) as a manifest entry in ``folder``, run on ``images``.
    Two quantizers do not give the same outputs, so the check is its top-1 agreement with
    ``reference`` (PyTorch's int8 of the same float model): under ``MIN_AGREEMENT`` is an error."""
    x = images.float().cpu()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{label}.onnx"
    shutil.copyfile(path, target)
    got = run_exported(target, "onnx", x.numpy())
    with torch.no_grad():
        want = reference(x).numpy()
    agreement = float((got.argmax(1) == want.argmax(1)).mean())
    if agreement < MIN_AGREEMENT:
        raise ExportError(f"{label} -> onnx: onnxruntime's int8 agrees with PyTorch's on {100 * agreement:.0f}% of "
                          f"{len(x)} images (< {100 * MIN_AGREEMENT:.0f}%)")
    return _entry(label, "onnx", target, x, max_abs_diff=float(np.abs(got - want).max()), top1_agreement=agreement)


def write_manifest(folder: Path, entries: list[dict], extra: dict) -> Path:
    path = folder / "manifest.json"
    path.write_text(json.dumps({**extra, "models": entries}, indent=2))
    return path

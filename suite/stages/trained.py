"""Helpers shared by the stages: trained models and their specs, batched inference."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from suite import storage
from suite.compression.quantize import quiet_jit
from suite.models import create_model
from suite.pipeline.stage import StageResult


def load_model(name: str, kwargs: dict, weights: Path) -> nn.Module:
    """A trained model from its weights file, read without running code (a crafted file is
    refused in one line that names it)."""
    model = create_model(name, **kwargs)
    model.load_state_dict(storage.load_tensors(str(weights)))
    return model.to(device()).eval()


INT8_ONNX = "model.int8.onnx"  # an int8 stage's onnxruntime model, beside PyTorch's model.ts


@dataclass
class Trained:
    """A trained model of the comparison: how to load it and what it weighs."""

    label: str
    stage: StageResult
    model: str | None  # registry name (None: an int8 TorchScript file, model.ts)
    kwargs: dict
    size_bytes: int | None = None  # None: the dense state dict's size
    parameters: dict | None = None  # None: counted on the loaded model (int8 TorchScript hides them)

    @property
    def precision(self) -> str:
        """``int8`` (a quantized model, no registry name) or ``fp32``."""
        return "int8" if self.model is None else "fp32"

    def int8_onnx(self) -> Path | None:
        """onnxruntime's int8 of the same float model (``INT8_ONNX`` beside ``model.ts``), if made."""
        path = self.stage.file(INT8_ONNX)
        return path if self.model is None and path.is_file() else None

    def load(self) -> nn.Module:
        if self.model is None:
            with quiet_jit():
                return torch.jit.load(str(self.stage.file("model.ts")), map_location="cpu").eval()
        return load_model(self.model, self.kwargs, self.stage.file("model.pt"))

    @classmethod
    def from_stage(cls, label: str, stage: StageResult) -> "Trained":
        spec = json.loads(stage.file("spec.json").read_text())
        return cls(label, stage, spec["model"], spec["kwargs"], spec.get("size_bytes"), spec.get("parameters"))


def write_spec(work: Path, model: str | None, kwargs: dict, size_bytes: int | None = None, parameters: dict | None = None) -> None:
    """``spec.json`` beside a stage's weights: how to load them (``Trained.from_stage``) and,
    where it differs from a dense ``torch.save``, the size a board downloads."""
    spec = {"model": model, "kwargs": kwargs, "size_bytes": size_bytes, "parameters": parameters}
    (work / "spec.json").write_text(json.dumps(spec, indent=2))


def log_model(ctx, run_id: str | None, work: Path, model: str | None, kwargs: dict) -> None:
    """The stage's trained model (``model.pt``, or the int8 TorchScript ``model.ts`` when
    ``model`` is None) as an MLflow model in the stage's run, with a real test image as its input
    example; ``mlflow_model.json`` in the stage folder says where, for registering it later."""
    if not (ctx.tracker and run_id):
        return
    if model is None:
        with quiet_jit():
            net = torch.jit.load(str(work / "model.ts"), map_location="cpu")
    else:
        net = load_model(model, kwargs, work / "model.pt")
    uri = ctx.tracker.log_model(run_id, net, ctx.example_input)
    if uri is None:  # the store did not answer (pipeline.tracking.Tolerant): registering logs the model anew
        return
    (work / MLFLOW_MODEL).write_text(json.dumps({"tracking_uri": ctx.tracker.uri, "run_id": run_id, "model_uri": uri}, indent=2))


MLFLOW_MODEL = "mlflow_model.json"


def register_model(tracker, name: str, trained: "Trained", run_id: str, example: np.ndarray, tags: dict) -> tuple[int, bool]:
    """Register ``trained`` as a version of ``name`` in the Model Registry with ``tags``, from the
    MLflow model its stage logged; a stage that was trained under another tracking store (or
    before models were logged) is logged again, into ``run_id``. A version already registered
    for the same stage is reused. Returns (version, created)."""
    info_file = trained.stage.file(MLFLOW_MODEL)
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    if info.get("tracking_uri") == tracker.uri:
        source, source_run = info["model_uri"], info["run_id"]
    else:
        source, source_run = tracker.log_model(run_id, trained.load(), example, f"models/{trained.label}"), run_id
    return tracker.register(name, source, source_run, tags, trained.stage.key)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def batched(fn, images: torch.Tensor, batch: int = 256, progress: bool = False, desc: str = "") -> torch.Tensor:
    """``fn`` over uint8 images in batches (scaled to [0, 1]), concatenated on the CPU."""
    dev = device()
    outs = []
    for i in tqdm(range(0, len(images), batch), desc=desc, disable=not progress, leave=False):
        outs.append(fn(images[i : i + batch].to(dev).float() / 255.0).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def softmax_entropy(logits: torch.Tensor) -> np.ndarray:
    """Shannon entropy (nats) of each row's softmax: low = the baseline is sure = easy image."""
    logp = torch.log_softmax(logits.double(), 1)
    return (-(logp.exp() * logp).sum(1)).numpy()

"""Model measurements, and the one set of names they go by.

Every table, MLflow run, summary and board result names a measurement with the constants
below (``latency_p50_ms`` on this machine and on a board alike), so a column means one thing
wherever it appears.
"""

from __future__ import annotations

import copy
import io
import warnings

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from suite.timing import Protocol, measure

TEST_ACC, VAL_ACC = "test_acc", "val_acc"
PARAMETERS, NONZERO_PARAMETERS, SIZE_BYTES = "parameters", "nonzero_parameters", "size_bytes"
ENERGY_MJ = "energy_mj"  # per inference, on a board with a power source; None (N/A) otherwise
SPEEDUP = "speedup"  # the baseline's p50 over this model's, on the same machine
ONNXRUNTIME = "onnxruntime_"  # before a timing name: the same statistic of the model's ONNX export on onnxruntime

def count_parameters(model: nn.Module) -> dict:
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return {PARAMETERS: total, NONZERO_PARAMETERS: nonzero}


def serialized_bytes(model: nn.Module) -> int:
    """Size of the state dict as ``torch.save`` writes it (what a board would load)."""
    return saved_bytes(model.state_dict())


def saved_bytes(obj) -> int:
    """Bytes ``torch.save`` writes for ``obj`` (a state dict, or a compressed form of one)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer().nbytes


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy with every Conv/ConvTranspose + BatchNorm pair folded, as exporters do for inference."""
    if isinstance(model, torch.jit.ScriptModule):  # already compiled (int8): nothing to fold
        return model
    model = copy.deepcopy(model).eval()

    def visit(module: nn.Module) -> None:
        names = list(module._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
        for child in module._modules.values():
            if child is not None:
                visit(child)

    visit(model)
    return model


def batch1_latency(models: dict[str, nn.Module], example: torch.Tensor, threads: int = 1,
                   protocol: Protocol = Protocol(), varied: set[str] | frozenset = frozenset()) -> dict[str, dict]:
    """Batch-1 CPU latency in ms of several models under the timing ``protocol`` (suite.timing):
    p50 / p90 / p99 with 95% intervals, the mean, each window's p50 (for paired speed-ups).

    Every model sees ``example[0]``, except those in ``varied`` (early-exit models whose time
    depends on the image), which cycle through all images of ``example``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    example = example.cpu()
    models = {k: m.cpu().eval() for k, m in models.items()}

    def caller(label: str, model: nn.Module):
        xs = example if label in varied else example[:1]
        return lambda i: model(xs[i % len(xs)][None])

    try:
        with torch.inference_mode():
            return measure({label: caller(label, m) for label, m in models.items()}, protocol)
    finally:
        torch.set_num_threads(previous)


def to_onnx(model: nn.Module, example: torch.Tensor, target) -> None:
    """Export ``model`` to ONNX (opset 17, the batch axis dynamic) into ``target``, a path or a
    binary file object. The TorchScript-based exporter: the dynamo one needs onnxscript, which
    boards lack."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.14 deprecates this exporter; onnxruntime on the boards takes its files
        torch.onnx.export(model.eval(), (example,), target, dynamo=False, input_names=["input"], output_names=["output"],
                          opset_version=17, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


def onnx_session(onnx, threads: int = 1):
    """An onnxruntime CPU session of an ONNX model (bytes or a path) on ``threads`` intra-op
    threads, one inter-op thread: the runtime of the boards, set up as they run it."""
    import onnxruntime as ort  # deferred: only ONNX timing and exports need it

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx if isinstance(onnx, bytes) else str(onnx), options, providers=["CPUExecutionProvider"])


def onnxruntime_latency(models: dict[str, nn.Module], example: torch.Tensor, threads: int = 1,
                        protocol: Protocol = Protocol()) -> dict[str, dict]:
    """``batch1_latency`` of the models' ONNX exports on onnxruntime: the same protocol and
    statistics, so a speed-up pairs models of one runtime. A model that does not export to ONNX
    (int8 TorchScript) is left out."""
    x = example[:1].cpu().float()
    calls = {}
    for label, model in models.items():
        if isinstance(model, torch.jit.ScriptModule):
            continue
        buffer = io.BytesIO()
        to_onnx(model.cpu(), x, buffer)
        session = onnx_session(buffer.getvalue(), threads)
        feed = {session.get_inputs()[0].name: x.numpy()}
        calls[label] = (lambda run, feed: lambda i: run(None, feed))(session.run, feed)
    return measure(calls, protocol) if calls else {}


def time_models(models: dict[str, nn.Module], example: torch.Tensor, latency) -> dict[str, dict]:
    """``batch1_latency`` as ``evaluate.latency`` (a LatencyConfig) asks: BN folded first when
    set, its threads and protocol."""
    if latency.fold_batchnorm:
        models = {k: fold_batchnorm(m) for k, m in models.items()}
    return batch1_latency(models, example, latency.threads, Protocol.of(latency))


def describe(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> dict:
    """Test accuracy, parameters (all and non-zero) and serialized size: a model's row in every table."""
    return {TEST_ACC: accuracy(model, images, labels, batch), **count_parameters(model), SIZE_BYTES: serialized_bytes(model)}


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    # An int8 TorchScript model has no parameters (and runs on the CPU); next() would raise
    # StopIteration, which Ray Tune's function runner takes for the trial's end.
    dev = next(model.parameters(), torch.empty(0)).device
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        out = model(images[i : i + batch].to(dev).float() / 255.0)
        correct += int((out.argmax(1).cpu() == labels[i : i + batch]).sum())
    return correct / max(len(labels), 1)

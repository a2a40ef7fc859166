import io

import pytest
import torch

from suite.metrics import batch1_latency, count_parameters, fold_batchnorm, serialized_bytes
from suite.models import create_model, list_models
from suite.timing import Protocol


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_baseline_sizes_match_the_paper():
    assert 85_000 < n_params(create_model("lenet", in_channels=1, image_size=28)) < 95_000  # paper 89.6K
    assert 9.0e6 < n_params(create_model("alexnet")) < 9.6e6  # paper 9.3M


@pytest.mark.parametrize("geom, code", [
    (dict(in_channels=3, image_size=32), (256, 2, 2)),
    (dict(in_channels=1, image_size=28), (64, 2, 2)),
])
def test_cae_shapes_and_range(geom, code):
    cae = create_model("cae", **geom).eval()
    x = torch.rand(4, geom["in_channels"], geom["image_size"], geom["image_size"])
    out = cae(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert tuple(cae.encoder(x).shape[1:]) == code
    convs = [m for m in cae.modules() if type(m) is torch.nn.Conv2d]
    deconvs = [m for m in cae.modules() if type(m) is torch.nn.ConvTranspose2d]
    assert len(convs) == 5 and len(deconvs) == 5


def test_caenet_is_encoder_plus_thin_classifier():
    net = create_model("caenet", num_classes=10)
    cae = create_model("cae")
    assert net.encoder.state_dict().keys() == cae.encoder.state_dict().keys()  # CAE weights load straight in
    assert n_params(net) < n_params(create_model("alexnet")) / 5
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_model_lists_the_registry():
    with pytest.raises(ValueError, match="unknown model 'resnet999'.*alexnet"):
        create_model("resnet999")
    assert {"lenet", "alexnet", "cae", "caenet"} <= set(list_models())


def test_batchnorm_folding_keeps_outputs():
    net = create_model("caenet").eval()
    for m in net.modules():  # non-trivial running stats
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(3, 3, 32, 32)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)


def test_measurements():
    net = create_model("lenet", in_channels=1, image_size=28)
    with torch.no_grad():
        net.head.weight.zero_()
    counts = count_parameters(net)
    assert counts["nonzero_parameters"] == counts["parameters"] - net.head.weight.numel()
    assert serialized_bytes(net) > 4 * counts["parameters"]
    big = create_model("alexnet", in_channels=1, image_size=28)
    lat = batch1_latency({"lenet": net, "alexnet": big}, torch.rand(1, 1, 28, 28), threads=1,
                         protocol=Protocol(warmup=2, windows=3, window_queries=10, max_windows=3))
    for stats in lat.values():
        assert 0 < stats["latency_p50_ms"] <= stats["latency_p90_ms"] <= stats["latency_p99_ms"]
    assert lat["alexnet"]["latency_p50_ms"] > lat["lenet"]["latency_p50_ms"]  # 300M vs 0.4M multiply-adds


def test_onnxruntime_latency_times_the_onnx_exports_and_skips_what_does_not_export():
    """The same protocol and statistics as PyTorch's, on the models' ONNX exports; the session
    computes what the model does (real MNIST digits through a LeNet, BN folded)."""
    import numpy as np

    from suite.metrics import onnx_session, onnxruntime_latency, to_onnx

    torch.manual_seed(0)
    net, big = create_model("lenet", in_channels=1, image_size=28).eval(), create_model("alexnet", in_channels=1, image_size=28).eval()
    x = torch.rand(4, 1, 28, 28)
    scripted = torch.jit.trace(net, x[:1])  # as an int8 TorchScript row would be: no ONNX export
    protocol = Protocol(warmup=2, windows=3, window_queries=10, max_windows=3)
    lat = onnxruntime_latency({"lenet": fold_batchnorm(net), "alexnet": fold_batchnorm(big), "scripted": scripted}, x, 1, protocol)
    assert set(lat) == {"lenet", "alexnet"}
    for stats in lat.values():
        assert 0 < stats["latency_p50_ms"] <= stats["latency_p99_ms"] and len(stats["window_p50_ms"]) == 3
    assert lat["alexnet"]["latency_p50_ms"] > lat["lenet"]["latency_p50_ms"]
    buffer = io.BytesIO()
    to_onnx(net, x[:1], buffer)
    session = onnx_session(buffer.getvalue())
    got = session.run(None, {"input": x.numpy()})[0]  # the batch axis is dynamic
    np.testing.assert_allclose(got, net(x).detach().numpy(), rtol=1e-4, atol=1e-5)


TINY = '''"""tiny: the smallest classifier, as CONTRIBUTING's "Adding a model architecture" writes one."""

import torch.nn as nn

from suite.models.registry import register


@register("tiny")
def tiny(in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))
'''


def test_a_model_file_dropped_in_is_found_built_listed_and_named_by_configs(tmp_path, monkeypatch, capsys):
    """CONTRIBUTING's "Adding a model architecture", followed to the letter: one file in
    suite/models/ (here a second folder on the package's path) and nothing else edited."""
    import sys

    import suite.models
    from suite import plugins
    from suite.commands.models import main as list_command
    from suite.experiment import from_tree
    from suite.models import registry

    folder = tmp_path / "more_models"
    folder.mkdir()
    (folder / "tiny.py").write_text(TINY)
    monkeypatch.setattr(suite.models, "__path__", [*suite.models.__path__, str(folder)])
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(plugins, "_discovered", plugins._discovered - {"suite.models"})
    try:
        assert "tiny" in list_models()
        model = create_model("tiny", in_channels=3, image_size=32, num_classes=10, width=8)
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        from_tree({"baseline": {"model": "tiny"}})  # a config may name it: validated against the registry
        list_command(None)
        assert "tiny" in capsys.readouterr().out
    finally:
        sys.modules.pop("suite.models.tiny", None)

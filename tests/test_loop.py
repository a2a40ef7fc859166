"""The epoch loop's speed settings keep its results: channels-last memory and bf16 autocast
train LeNet on real MNIST as float32 NCHW does, with float32 weights and loss."""

import pytest
import torch

from suite.config import DataConfig, TrainConfig
from suite.data import load_split
from suite.models import create_model
from suite.training.loop import EpochLoop, evaluate, make_optimizer
from suite.training.objectives import make_objective
from suite.training.batches import TensorBatches


@pytest.mark.parametrize("channels_last, bf16", [(False, False), (True, False), (True, True)])
def test_lenet_learns_in_every_precision_and_layout(data_root, channels_last, bf16):
    torch.manual_seed(0)
    data = load_split(DataConfig(dataset="mnist", root=str(data_root), train_limit=1024), "train")
    cfg = TrainConfig(epochs=3, batch_size=64, optimizer="adam", lr=3e-3, schedule="constant")
    model = create_model("lenet", in_channels=1, image_size=28, num_classes=10)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    objective = make_objective("classify")
    batches = TensorBatches(data.images[:768], data.labels[:768], cfg.batch_size, drop_last=True)
    opt, sched = make_optimizer(model.parameters(), cfg, cfg.epochs * len(batches))
    loop = EpochLoop(model, objective, cfg, opt, sched, channels_last=channels_last, bf16=bf16)
    seen = {}  # what the first conv really got and gave: the loop's settings, not the test's own conversion
    def record(module, inputs, output) -> None:
        seen.setdefault("conv", (inputs[0].is_contiguous(memory_format=torch.channels_last), output.dtype))

    # a conv with several input channels: a 1-channel image is contiguous in both layouts
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    hook = conv.register_forward_hook(record)
    losses = [loop.run_epoch(batches, epoch)["train_loss"] for epoch in range(cfg.epochs)]
    hook.remove()
    assert seen["conv"] == (channels_last, torch.bfloat16 if bf16 else torch.float32)
    held_out = evaluate(objective, model, data.images[768:], data.labels[768:], torch.device("cpu"), channels_last=channels_last)
    assert losses[-1] < 0.5 * losses[0]
    assert held_out["val_acc"] > 0.6  # 10% is chance; 0.76-0.77 in every mode here
    assert all(p.dtype == torch.float32 for p in model.parameters())
    if channels_last:
        assert model.body[0].weight.is_contiguous(memory_format=torch.channels_last)

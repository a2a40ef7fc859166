"""A training whose length fits the data (issue 30): the MNIST config's baseline on 1,500
images (a real MNIST subset written in the registered IDX layout) stays at chance and is
flagged with the keys to set; ``train.min_steps`` makes it learn; ``train.patience`` stops it
once it stops improving, keeps the best epoch's weights, and a re-run finishes from there."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from suite.config import DataConfig, RuntimeConfig, TrainConfig
from suite.data import load_split
from suite.distributed import launch
from suite.training import checkpoints, fit
from suite.training.job import TrainJob
from tests.conftest import DiskEngine

MNIST_BASELINE = {"epochs": 6, "batch_size": 128, "optimizer": "sgd", "lr": 0.05}  # configs/mnist_lenet.yaml


def _write_idx(path: Path, array: np.ndarray) -> None:
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


@pytest.fixture(scope="module")
def small(tmp_path_factory, data_root):
    """1,500 training / 300 test images of real MNIST, on disk as the mnist source reads them."""
    raw = tmp_path_factory.mktemp("small") / "MNIST" / "raw"
    raw.mkdir(parents=True)
    full = DataConfig(dataset="mnist", root=str(data_root), download=False)
    for split, stem, n in (("train", "train", 1500), ("test", "t10k", 300)):
        ds = load_split(full, split)
        _write_idx(raw / f"{stem}-images-idx3-ubyte.gz", ds.images.numpy()[:n, 0].astype(np.uint8))
        _write_idx(raw / f"{stem}-labels-idx1-ubyte.gz", ds.labels.numpy()[:n].astype(np.uint8))
    data = DataConfig(dataset="mnist", root=str(raw.parents[1]), download=False, val_fraction=0.1)
    ds = load_split(data, "train")
    assert len(ds.images) == 1500
    return data, {"split": (ds.images.numpy(), ds.labels.numpy()), "extra": {}, "init": {}}


def _train(small, folder: Path, **train) -> list[dict]:
    data, arrays = small
    cfg = TrainConfig(**{**MNIST_BASELINE, **train})
    cfg = cfg.model_copy(update={"epochs": fit.epochs_for(cfg, 1350)})  # as the driver resolves it (1,350 after the val split)
    job = TrainJob(name="baseline", model="lenet", model_kwargs={"in_channels": 1, "image_size": 28, "num_classes": 10},
                   data=data, train=cfg, progress=False, epochs_key="baseline.train.epochs")
    return list(fit.run(job, arrays, DiskEngine(folder)))


def test_too_short_is_flagged_and_min_steps_makes_it_learn(small, tmp_path):
    short = _train(small, tmp_path / "short")[-1]  # 6 epochs of 10 steps
    assert short["converged"] == 0 and short["val_acc"] < 0.2
    assert "near chance" in short["convergence"] and "baseline.train.min_steps" in short["convergence"]

    steps = _train(small, tmp_path / "steps", min_steps=300)  # the same config, 300 optimizer steps: 30 epochs here
    assert len(steps) == 30 and steps[-1]["converged"] == 1 and steps[-1]["val_acc"] > 0.8
    assert fit.epochs_for(TrainConfig(**MNIST_BASELINE, min_steps=300), 15690) == 6  # full MNIST: the epochs as given


def test_early_stop_keeps_the_best_epoch_and_a_rerun_finishes_there(small, tmp_path):
    out = _train(small, tmp_path / "stop", epochs=40, patience=3)
    last = out[-1]
    accs = [m["history"][-1]["val_acc"] for m in out]
    assert len(out) < 40 and last["stopped_early"] == 1 and last["converged"] == 1
    assert last["best_epoch"] == 1 + int(np.argmax(accs)) and len(out) - last["best_epoch"] == 3
    assert last["val_acc"] == max(accs) and last["last_val_acc"] == accs[-1]
    kept, _ = checkpoints.read(str(DiskEngine(tmp_path / "stop").folders()[-1]))
    mid, _ = checkpoints.read(str(DiskEngine(tmp_path / "stop").folders()[last["best_epoch"] - 1]))
    assert all(torch.equal(kept["model"][k], mid["model"][k]) for k in kept["model"])  # the best epoch's weights

    # The driver, finding that checkpoint (a killed process, a re-run), finishes from it: no worker starts.
    data, _ = small
    job = TrainJob(name="baseline", model="lenet", model_kwargs={}, data=data, storage_path=str(tmp_path / "stop"),
                   train=TrainConfig(**{**MNIST_BASELINE, "epochs": 40, "patience": 3}), progress=False)
    metrics = launch.fit(job, RuntimeConfig(), tmp_path / "model.pt")
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert metrics["best_epoch"] == last["best_epoch"] and all(torch.equal(saved[k], kept["model"][k]) for k in saved)


def test_early_stop_on_a_reconstruction_follows_its_loss():
    """No accuracy (the autoencoder): the best epoch is the lowest validation loss."""
    stop, model = fit.EarlyStop(2, [], None, 10), torch.nn.Linear(2, 2)
    decisions = [stop.update(e, {"val_loss": loss}, model) for e, loss in enumerate([1.0, 0.5, 0.6, 0.7])]
    assert decisions == [False, False, False, True] and stop.epoch == 1
    metrics = {"val_loss": 0.7}
    stop.finish(metrics, True)
    assert metrics == {"val_loss": 0.5, "last_val_loss": 0.7, "best_epoch": 2, "stopped_early": 1.0}
    resumed = fit.EarlyStop(2, [{"val_loss": 1.0}, {"val_loss": 0.5}], {"w": torch.zeros(1)}, 10)  # from a checkpoint's history
    assert resumed.epoch == 1 and resumed.score == -0.5

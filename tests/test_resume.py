"""A resumed training draws what an uninterrupted one draws (issue 32): an epoch checkpoint
holds every random state the rest of the training reads (torch's CPU and CUDA generators,
numpy's, Python's), and resuming restores them, so the final weights agree bit for bit."""

import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from suite.config import DataConfig, TrainConfig
from suite.data import load_split
from suite.training import checkpoints, fit
from suite.training.job import TrainJob
from tests.conftest import DiskEngine


def _job(data_root: Path) -> tuple[TrainJob, dict]:
    data = DataConfig(dataset="mnist", root=str(data_root), download=False, train_limit=320, val_fraction=0.2)
    # dropout (the dense head), augmentation and shuffling all draw random numbers every epoch
    train = TrainConfig(epochs=3, batch_size=32, optimizer="adam", lr=2e-3, augment=True, schedule="cosine")
    job = TrainJob(name="resume", model="caenet", model_kwargs={"in_channels": 1, "image_size": 28, "width": 0.5},
                   data=data, train=train, progress=False)
    ds = load_split(data, "train")
    return job, {"split": (ds.images.numpy(), ds.labels.numpy()), "extra": {}, "init": {}}


def _final_weights(folder: Path) -> dict:
    state, meta = checkpoints.read(str(DiskEngine(folder).folders()[-1]))
    assert meta["epoch"] == 2  # the last of 3 epochs (0-based)
    return state["model"]


def test_a_resumed_training_ends_bit_for_bit_where_an_uninterrupted_one_does(tmp_path, data_root):
    job, arrays = _job(data_root)
    whole = list(fit.run(job, arrays, DiskEngine(tmp_path / "whole")))
    assert [int(m["epoch"]) for m in whole] == [1, 2, 3] and "resumed_from_epoch" not in whole[-1]

    cut = tmp_path / "cut"
    run = fit.run(job, arrays, DiskEngine(cut))
    next(run)  # epoch 1 done and checkpointed ...
    run.close()  # ... then the process dies
    torch.manual_seed(12345), np.random.seed(12345), random.seed(12345)  # a new process draws differently
    rest = list(fit.run(job, arrays, DiskEngine(cut)))
    assert [int(m["epoch"]) for m in rest] == [2, 3] and rest[-1]["resumed_from_epoch"] == 1

    a, b = _final_weights(tmp_path / "whole"), _final_weights(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the resumed run took another path"
    assert rest[-1]["val_loss"] == whole[-1]["val_loss"] and rest[-1]["train_loss"] == whole[-1]["train_loss"]


# A training in a process of its own, as ``caenet run``'s driver runs one: the test SIGKILLs it.
TRAIN = """
import sys
from pathlib import Path
sys.path[:0] = [{repo!r}]
from tests.conftest import DiskEngine
from tests.test_resume import _job
from suite.training import fit
job, arrays = _job(Path({data!r}))
for metrics in fit.run(job, arrays, DiskEngine(Path({folder!r}))):
    print("DONE", int(metrics["epoch"]), flush=True)
"""


def test_a_training_sigkilled_mid_epoch_resumes_bit_for_bit(tmp_path, data_root):
    """The process dies mid-epoch (SIGKILL: no cleanup, no generator closed), a new process
    resumes from the last epoch checkpoint, and the final weights are the uninterrupted run's."""
    repo = str(Path(__file__).resolve().parents[1])
    script = TRAIN.format(repo=repo, data=str(data_root), folder=str(tmp_path / "cut"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    while not proc.stdout.readline().startswith("DONE 1"):  # epoch 1 checkpointed, epoch 2 under way
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = len(DiskEngine(tmp_path / "cut").folders())
    assert done in (1, 2)  # killed before the last epoch (epoch 2 may have finished as the signal flew)
    rest = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    resumed = [line for line in rest.stdout.splitlines() if line.startswith("DONE")]
    assert rest.returncode == 0 and resumed == [f"DONE {e}" for e in range(done + 1, 4)], rest.stderr[-2000:]

    job, arrays = _job(data_root)
    list(fit.run(job, arrays, DiskEngine(tmp_path / "whole")))
    a, b = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed process took another path"


def test_the_checkpoint_carries_every_generator(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    saved = checkpoints.random_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    checkpoints.write(tmp_path, {}, {}, {}, 0, {}, rng=saved)
    state, _ = checkpoints.read(str(tmp_path))  # through the weights-only reader: no pickled objects
    checkpoints.restore_random_state(state["rng"])
    got = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]

"""A training worker killed mid-training is restarted and resumes from the last checkpoint:
the warm Ray task of a one-worker training, and a Ray Train worker group."""

import os
import signal
import threading
import time
from collections import Counter
from dataclasses import replace

import pytest

from suite.config import DataConfig, RuntimeConfig, TrainConfig
from suite.distributed.launch import TrainJob, fit

pytestmark = pytest.mark.slow


def _train_workers(title: bytes) -> list[int]:
    """PIDs of live processes whose title names ``title`` (Ray titles a Ray Train worker
    ``ray::RayTrainWorker...``, a task ``ray::<task name>``)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::" + title):
                    found.append(int(entry.name))
        except OSError:
            continue  # exited meanwhile
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead
    except OSError:
        return False


# The warm task of a one-worker training; Ray Train with two DDP workers, each drawing its own
# augmentations (issue 32: each worker's generators are in the checkpoint rank 0 writes).
@pytest.mark.parametrize("trainer, title, workers", [("auto", b"train:fault", 1), ("ray-train", b"RayTrainWorker", 2)])
def test_killed_worker_resumes_from_last_checkpoint(ray_local, data_root, tmp_path, trainer, title, workers):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("fault")).info.run_id
    epochs = 4
    job = TrainJob(name="fault", model="lenet", model_kwargs={"in_channels": 1, "image_size": 28, "num_classes": 10},
                   data=DataConfig(dataset="mnist", root=str(data_root), train_limit=3000).model_dump(),
                   train=TrainConfig(epochs=epochs, batch_size=64, optimizer="adam", lr=1e-3, schedule="constant",
                                     augment=workers > 1).model_dump(),
                   storage_path=str(tmp_path / "ray"), progress=False, mlflow_uri=uri, mlflow_run_id=run_id)
    killed: list[int] = []

    def kill_after_first_checkpoint():
        deadline = time.time() + 300
        while time.time() < deadline:
            if any((tmp_path / "ray").glob("attempt-0/checkpoint_*/state.pt")):
                time.sleep(0.5)  # well inside epoch 2
                for pid in _train_workers(title):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    runtime = RuntimeConfig(workers=workers, cpus_per_worker=1, max_failures=2, trainer=trainer)
    metrics = fit(job, runtime, tmp_path / "model.pt")
    killer.join(timeout=5)

    assert killed, "no training worker was found to kill"
    assert not any(_alive(pid) for pid in killed)
    assert metrics["epoch"] == epochs
    assert metrics["started_at_epoch"] >= 1  # the restarted worker group began from a checkpoint, not epoch 0
    assert metrics["resumed_from_epoch"] == metrics["started_at_epoch"]  # what the stage's MLflow run and summary show
    per_epoch = Counter(m.step for m in client.get_metric_history(run_id, "train_loss"))
    if trainer == "auto":  # the driver logs what the task streams back: every epoch, each once
        assert per_epoch == Counter(range(1, epochs + 1))
    else:
        # Ray Train relays what its controller saw reported, plus a resumed checkpoint's epoch the
        # controller never saw; the epoch in flight when the worker died can still go missing
        # (seen once in ~5 runs) or twice. The one-worker default above has no such gap.
        assert set(per_epoch) <= set(range(1, epochs + 1)) and len(per_epoch) >= epochs - 1 and epochs in per_epoch
        assert sum(count - 1 for count in per_epoch.values()) <= 1
    assert (tmp_path / "model.pt").stat().st_size > 0
    # issue 32: resumed in a new process (a new worker group), it ends where an uninterrupted run ends, bit for bit
    import torch

    again = fit(replace(job, storage_path=str(tmp_path / "whole"), mlflow_uri=None, mlflow_run_id=None), runtime,
                tmp_path / "whole.pt")
    assert "resumed_from_epoch" not in again and again["train_loss"] == metrics["train_loss"]
    a, b = (torch.load(tmp_path / name, weights_only=True) for name in ("model.pt", "whole.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed training took another path"

"""Training through Ray Train on real images: checkpoints, resume, frozen encoders."""

from dataclasses import replace

import pytest
import torch

from suite.config import DataConfig, RuntimeConfig, TrainConfig
from suite.distributed.launch import TrainJob, fit
from suite.models import create_model

pytestmark = pytest.mark.slow


def _job(data_root, storage, **kw):
    train = TrainConfig(epochs=1, batch_size=64, optimizer="adam", lr=1e-3, schedule="constant").model_dump()
    return TrainJob(name="test", model="lenet", model_kwargs={"in_channels": 1, "image_size": 28, "num_classes": 10},
                    data=DataConfig(dataset="mnist", root=str(data_root), train_limit=300).model_dump(), train=train,
                    storage_path=str(storage), progress=False, **kw)


RUNTIME = RuntimeConfig(workers=1, cpus_per_worker=1, max_failures=0)


def test_fit_saves_weights_and_resumes_from_checkpoint(ray_local, data_root, tmp_path):
    job = _job(data_root, tmp_path / "ray")
    first = fit(job, RUNTIME, tmp_path / "a.pt")
    assert first["epoch"] == 1 and first["resumed_at_epoch"] == 0 and 0 <= first["val_acc"] <= 1
    model = create_model("lenet", in_channels=1, image_size=28)
    model.load_state_dict(torch.load(tmp_path / "a.pt", weights_only=True))

    # The same job asked for a second epoch (as after an interrupted run) trains only that one.
    longer = replace(job, train=job.train.model_copy(update={"epochs": 2}))
    second = fit(longer, RUNTIME, tmp_path / "b.pt")
    assert second["resumed_at_epoch"] == 1 and second["epoch"] == 2

    # Every epoch checkpointed (a process killed after the last report): finish from it, no
    # workers; finish_only() refuses a training with epochs left.
    from suite.distributed.launch import NeedsTraining, finish_only

    with finish_only():
        done = fit(longer, RUNTIME, tmp_path / "c.pt")
        assert done["epoch"] == 2 and done["resumed_at_epoch"] == 2
        with pytest.raises(NeedsTraining):
            fit(replace(job, train=job.train.model_copy(update={"epochs": 3})), RUNTIME, tmp_path / "d.pt")
    for key, value in torch.load(tmp_path / "b.pt", weights_only=True).items():
        torch.testing.assert_close(torch.load(tmp_path / "c.pt", weights_only=True)[key], value)


def test_frozen_encoder_stays_fixed(ray_local, data_root, tmp_path):
    """The frozen encoder comes out as it went in; the classifier of the same run moved away
    from its own starting weights (the whole network starts from one saved file)."""
    kwargs = {"in_channels": 1, "image_size": 28, "num_classes": 10, "hidden": 32}
    start = create_model("caenet", **kwargs)
    start.encoder.load_state_dict(create_model("cae", in_channels=1, image_size=28).encoder.state_dict())
    torch.save(start.state_dict(), tmp_path / "start.pt")
    job = replace(_job(data_root, tmp_path / "ray"), model="caenet", model_kwargs=kwargs,
                  init_from={"": str(tmp_path / "start.pt")}, freeze=["encoder"])
    fit(job, RUNTIME, tmp_path / "net.pt")
    state, initial = torch.load(tmp_path / "net.pt", weights_only=True), start.state_dict()
    for key, value in start.encoder.state_dict().items():
        torch.testing.assert_close(state[f"encoder.{key}"], value)  # weights and BN statistics untouched
    moved = [k for k in initial if k.startswith("classifier.") and initial[k].is_floating_point()
             and not torch.allclose(state[k], initial[k])]
    assert moved and all(state[k].isfinite().all() for k in moved)  # training changed the head, from its own start


def test_workers_get_object_refs_and_no_driver_path(ray_local, data_root, tmp_path):
    """What a training sends its workers names no file of the driver's: the split, targets,
    teacher logits and initial weights travel as object refs (a worker on another node sees
    none of those files; tests/test_two_nodes.py runs that for real)."""

    import numpy as np
    import ray

    from suite.distributed.launch import worker_config

    np.save(tmp_path / "targets.npy", np.arange(300))
    np.save(tmp_path / "logits.npy", np.zeros((300, 10), np.float32))
    torch.save(create_model("cae", in_channels=1, image_size=28).state_dict(), tmp_path / "cae.pt")
    job = replace(_job(data_root, tmp_path / "ray"), targets_path=str(tmp_path / "targets.npy"),
                  teacher_logits_path=str(tmp_path / "logits.npy"), init_from={"encoder": str(tmp_path / "cae.pt")})
    config = worker_config(job, RUNTIME)
    inputs = config["inputs"]
    refs = [inputs["split"], *inputs["extra"].values(), *inputs["init"].values()]
    assert len(refs) == 4 and all(isinstance(r, ray.ObjectRef) for r in refs)
    text = repr(config["job"])  # everything the workers get of the job
    assert str(data_root) not in text and "targets.npy" not in text and "cae.pt" not in text
    assert ray.get(inputs["extra"]["targets"]).tolist() == list(range(300))
    images, labels = ray.get(inputs["split"])
    assert images.shape == (300, 1, 28, 28) and labels.shape == (300,)
    assert set(ray.get(inputs["init"]["encoder"])) == set(create_model("cae", in_channels=1, image_size=28).state_dict())

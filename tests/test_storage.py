"""runtime.storage: where checkpoints live, how the newest is found, and that reading one runs no code."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from suite import storage
from suite.config import ConfigError, RuntimeConfig
from suite.training import checkpoints
from tests.conftest import Payload


def test_storage_comes_from_config_then_environment(monkeypatch):
    monkeypatch.delenv(storage.ENV, raising=False)
    assert storage.configured(RuntimeConfig()) is None
    monkeypatch.setenv(storage.ENV, "s3://bucket/caenet")
    assert storage.configured(RuntimeConfig()) == "s3://bucket/caenet"
    assert storage.configured(RuntimeConfig(storage="/mnt/nfs/x")) == "/mnt/nfs/x"  # the config wins
    with pytest.raises(ValueError):
        RuntimeConfig(storage="")


def test_job_storage_mirrors_the_cache_layout(tmp_path):
    cache_root = tmp_path / "artifacts" / "mnist"
    work = cache_root / "baseline-0123.partial"
    assert storage.job_storage(None, cache_root, work) == str(work / "ray")  # one machine: inside the stage
    assert storage.job_storage("s3://b/c", cache_root, work) == "s3://b/c/checkpoints/mnist/baseline-0123.partial"
    assert storage.job_storage(str(tmp_path / "shared"), cache_root, work / "ratio-0.5") == \
        str(tmp_path / "shared" / "checkpoints" / "mnist" / "baseline-0123.partial" / "ratio-0.5")


def _checkpoint(folder: Path, epoch: int) -> None:
    folder.mkdir(parents=True)
    checkpoints.write(folder, {"w": torch.full((2,), float(epoch))}, {}, {}, epoch, {"epoch": epoch + 1})


@pytest.mark.parametrize("as_uri", [False, True])
def test_latest_checkpoint_across_attempts(tmp_path, as_uri):
    root = tmp_path / "ray"
    _checkpoint(root / "attempt-0" / "checkpoint_000001", 1)
    _checkpoint(root / "attempt-1" / "checkpoint_000000", 2)
    cut = root / "attempt-1" / "checkpoint_000001"  # cut off mid-write: meta but no tensors
    cut.mkdir()
    (cut / "meta.json").write_text(json.dumps({"epoch": 3}))
    location = root.as_uri() if as_uri else str(root)
    folder, epoch = checkpoints.latest(location)
    assert epoch == 2 and folder.endswith("attempt-1/checkpoint_000000")
    state, meta = checkpoints.read(folder)
    assert torch.equal(state["model"]["w"], torch.full((2,), 2.0)) and meta["metrics"]["epoch"] == 3
    assert checkpoints.latest(str(tmp_path / "none")) == (None, -1)


@pytest.mark.parametrize("as_uri", [False, True])
def test_persist_keeps_the_newest_checkpoints_and_never_a_half_written_one(tmp_path, as_uri):
    """What a one-worker training (a warm Ray task) writes after every epoch."""
    attempt = (tmp_path / "ray" / "attempt-0").as_uri() if as_uri else str(tmp_path / "ray" / "attempt-0")
    for epoch in range(4):
        checkpoints.persist(lambda folder, e=epoch: checkpoints.write(folder, {"w": torch.full((2,), float(e))}, {}, {}, e,
                                                                      {"epoch": e + 1}), attempt, epoch, keep=2)
    names = sorted(p.name for p in (tmp_path / "ray" / "attempt-0").iterdir())
    assert names == ["checkpoint_epoch-0002", "checkpoint_epoch-0003"]
    staged = tmp_path / "ray" / "attempt-0" / ".checkpoint_epoch-0004.tmp"  # a write cut off before its rename
    staged.mkdir()
    (staged / "state.pt").write_bytes(b"")
    (staged / "meta.json").write_text(json.dumps({"epoch": 4}))
    folder, epoch = checkpoints.latest(str(tmp_path / "ray"))
    assert epoch == 3 and folder.endswith("checkpoint_epoch-0003")
    assert torch.equal(checkpoints.read(folder)[0]["model"]["w"], torch.full((2,), 3.0))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    """A pickle with a payload where a checkpoint's tensors belong: refused, named, never run."""
    payload = Payload(tmp_path / "ran")
    folder = tmp_path / "ray" / "attempt-0" / "checkpoint_000000"
    _checkpoint(folder, 0)
    with open(folder / "state.pt", "wb") as f:
        pickle.dump({"model": payload}, f)
    with pytest.raises(ConfigError, match="state.pt: not a plain tensor file") as err:
        checkpoints.read(str(folder))
    assert "\n" not in str(err.value)
    assert not payload.flag.exists()


def test_unknown_scheme_is_one_line():
    with pytest.raises(storage.StorageError, match="runtime.storage 'nosuch://x'"):
        storage.open_fs("nosuch://x")

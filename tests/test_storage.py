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


class _TwoNodesOnOneHost:
    """``ray`` as ``check_shared`` sees it on a head and a worker node that share an IP (a worker
    in its own mount namespace, or containers on the host's network): each node's probe answers
    whether it sees the marker; ``ray.nodes()`` lists them in the order given."""

    def __init__(self, order: list[str], sees: dict[str, bool]):
        self.order, self.sees = order, sees

    def is_initialized(self):
        return True

    def nodes(self):
        return [{"NodeID": node_id, "NodeManagerAddress": "192.0.2.2", "Alive": True} for node_id in self.order]

    def remote(self, **_):
        sees = self.sees

        class Probe:
            def options(self, scheduling_strategy):
                return type("Bound", (), {"remote": lambda _, marker: sees[scheduling_strategy.node_id]})()

        return lambda fn: Probe()

    def get(self, answer, timeout=None):
        return answer


@pytest.mark.parametrize("order", [["head", "worker"], ["worker", "head"]])
def test_the_storage_check_counts_nodes_not_hosts(tmp_path, monkeypatch, order):
    """Two nodes on one IP, the worker blind: the check stops the run whichever node Ray lists
    first, naming the blind node by its id and IP (keyed by IP, the head's answer could hide it)."""
    head, worker = "a0" * 28, "b1" * 28  # node ids: 28 hex bytes
    ids = {"head": head, "worker": worker}
    monkeypatch.setattr(storage, "ray", _TwoNodesOnOneHost([ids[n] for n in order], {head: True, worker: False}))
    monkeypatch.delenv(storage.ENV, raising=False)
    with pytest.raises(storage.StorageError) as err:
        storage.check_shared(RuntimeConfig(), tmp_path / "artifacts" / "mnist")
    line = str(err.value)
    assert f"not visible from node(s) {worker[:12]} (192.0.2.2) of this 2-node cluster" in line and head[:12] not in line
    assert "runtime.storage is unset" in line and "\n" not in line
    assert not list((tmp_path / "artifacts" / "mnist" / ".caenet-probe").iterdir())  # the marker is cleaned up
    monkeypatch.setattr(storage, "ray", _TwoNodesOnOneHost([ids[n] for n in order], {head: True, worker: True}))
    storage.check_shared(RuntimeConfig(), tmp_path / "artifacts" / "mnist")  # both see it: the run goes on

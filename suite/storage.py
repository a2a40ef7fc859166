"""``runtime.storage``: the one place that every node of a cluster reaches.

Ray Train keeps each training's epoch checkpoints there; a worker that restarts on another
node (or a driver that resumes after a crash) finds them there. Everything else (the stage
cache, MLflow, the datasets) stays with the driver: workers get their inputs through Ray's
object store and hand results back through the checkpoints.

Values: a local folder (the default: the stage's own ``.partial/ray`` folder in the cache),
a shared mount (NFS, EFS), or a URI that ``pyarrow.fs`` opens (``s3://bucket/prefix``,
``gs://...``). ``$CAENET_STORAGE`` gives a cluster's default, so ``ray job submit`` needs no
flag. ``check_shared`` stops a run on a cluster of more than one node, in seconds and before
any stage, when some node cannot see the storage.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import posixpath
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from suite.config import ConfigError, RuntimeConfig

ENV = "CAENET_STORAGE"
EXAMPLE = "s3://my-bucket/caenet or /mnt/efs/caenet"


class StorageError(ConfigError):
    """``runtime.storage`` is missing, unreachable or not shared across the cluster's nodes."""


def configured(runtime: RuntimeConfig) -> str | None:
    """The storage the user named (``runtime.storage``, else ``$CAENET_STORAGE``), or None."""
    return runtime.storage or os.environ.get(ENV) or None


def is_uri(location: str) -> bool:
    return "://" in location


def open_fs(location: str):
    """(pyarrow filesystem, path inside it) for a local path or a URI."""
    if is_uri(location) and not location.startswith("file://"):
        try:
            return pafs.FileSystem.from_uri(location)
        except Exception as exc:  # unknown scheme, missing credentials, no such bucket
            raise StorageError(f"runtime.storage {location!r} cannot be opened ({str(exc).splitlines()[0]}); "
                               f"use a folder every node mounts or a URI such as {EXAMPLE}") from None
    path = location[len("file://"):] if location.startswith("file://") else location
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def join(location: str, *parts: str) -> str:
    if is_uri(location):
        return posixpath.join(location.rstrip("/"), *parts)
    return str(Path(location, *parts))


def job_storage(root: str | None, cache_root: Path, work: Path) -> str:
    """Where a training whose stage works in ``work`` keeps its checkpoints.

    ``root`` unset: inside the stage's work folder (one machine; the stage drops it when
    done). Set: the same relative place under ``<root>/checkpoints/``, so the stage's key
    names it there too.
    """
    if not root:
        return str(work / "ray")
    try:
        rel = Path(work).resolve().relative_to(Path(cache_root).resolve().parent)
    except ValueError:  # a work folder outside the cache (benchmarks, tests): its own name
        rel = Path(Path(work).name)
    return join(root, "checkpoints", *rel.parts)


def read_bytes(location: str) -> bytes:
    fs, path = open_fs(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(location: str, data: bytes) -> None:
    fs, path = open_fs(location)
    fs.create_dir(posixpath.dirname(path) if is_uri(location) else os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def exists(location: str) -> bool:
    fs, path = open_fs(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def delete(location: str) -> None:
    """Remove a folder and everything in it; a folder that is not there is fine."""
    fs, path = open_fs(location)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def files_under(location: str) -> list[str]:
    """Every file below ``location`` as a location of the same kind (path or URI)."""
    fs, path = open_fs(location)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = posixpath.relpath(info.path, path) if is_uri(location) else os.path.relpath(info.path, path)
        out.append(join(location, *Path(rel).parts))
    return out


def load_json(location: str) -> dict:
    return json.loads(read_bytes(location).decode())


def load_tensors(location: str):
    """A ``torch.save`` file read without running code (``weights_only``); the file is named on refusal."""
    try:
        return torch.load(io.BytesIO(read_bytes(location)), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise StorageError(f"{location}: not a plain tensor file, refused ({str(exc).splitlines()[0][:160]})") from None


# ---------------------------------------------------------------------------- the cluster check


def check_shared(runtime: RuntimeConfig, cache_root: Path, timeout_s: float = 120.0) -> None:
    """On a Ray cluster of more than one node: every node must see the checkpoint storage.

    The driver writes a marker file there and a zero-CPU task on each live node looks for
    it; a node that does not see it stops the run with one line naming ``runtime.storage``.
    A cluster of one node (a laptop, a single GPU box) skips the check.
    """
    if not ray.is_initialized():
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    root = configured(runtime)
    where = root or str(Path(cache_root).resolve())
    marker = join(where, ".caenet-probe", uuid.uuid4().hex)
    try:
        write_bytes(marker, b"ok")
    except OSError as exc:
        raise StorageError(f"runtime.storage {where!r} is not writable ({exc}); set it to storage every node reaches, "
                           f"e.g. {EXAMPLE}") from None
    probe = ray.remote(num_cpus=0, max_retries=0)(exists)
    try:
        # Keyed by node id, not IP: nodes on one host (a worker in its own mount namespace,
        # containers sharing the host's network) share an IP, and a dict by IP kept one answer,
        # whichever ray.nodes() listed last (PITFALLS.md, several Ray nodes on one host).
        refs = {n["NodeID"]: probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(marker) for n in nodes}
        sees = {node_id: bool(ray.get(ref, timeout=timeout_s)) for node_id, ref in refs.items()}
    finally:  # this run's marker only: another run may be checking the same storage now
        fs, path = open_fs(marker)
        fs.delete_file(path)
    blind = sorted(f"{n['NodeID'][:12]} ({n['NodeManagerAddress']})" for n in nodes if not sees[n["NodeID"]])
    if blind:
        what = f"runtime.storage {root!r}" if root else f"runtime.storage is unset, so checkpoints go to the cache {where!r}, which"
        raise StorageError(f"{what} is not visible from node(s) {', '.join(blind)} of this {len(nodes)}-node cluster: "
                           f"set runtime.storage (or ${ENV}) to storage every node reaches, e.g. {EXAMPLE}")

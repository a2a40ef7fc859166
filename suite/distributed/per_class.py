"""Per-class clustering in parallel on Ray (CIFAR-100, ImageNet-sized class counts).

The features go into Ray's object store once; the classes are split into chunks, one Ray
task per chunk, each clustering its classes one after another with FAISS on one thread (so
that tasks do not oversubscribe the cores). Chunks, not one task per class: a task costs a
few milliseconds of scheduling, a small class's elbow search about as much.
Falls back to a plain loop when Ray is not running.
"""

from __future__ import annotations

import faiss
import numpy as np
import ray
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from suite.clusterers import cluster_class
from suite.config import ClusteringConfig
from suite.distributed.ray_runtime import ensure_ray


def _cluster_chunk(features: np.ndarray, labels: np.ndarray, classes: list[int], cfg: dict, seed: int,
                   threads: int | None = None):
    if threads:
        faiss.omp_set_num_threads(threads)
    ccfg = ClusteringConfig(**cfg)
    out = []
    # The warm-start search's matrices are small (1300 x 512 by k): BLAS threads cost more than
    # they give there (ImageNet-sized in one process: 64 s on 2 threads, 28 s on one).
    with threadpool_limits(1 if ccfg.elbow_search == "warm_start" else None, user_api="blas"):
        for c in classes:
            idx = np.flatnonzero(labels == c)
            sub, record = cluster_class(features[idx], ccfg, seed)
            out.append((c, idx, sub, record))
    return out


def cluster_all_classes(features: np.ndarray, labels: np.ndarray, cfg: ClusteringConfig, seed: int = 0,
                        backend: str = "auto", progress: bool = False) -> tuple[np.ndarray, dict]:
    """Cluster every class: (sub-cluster id per image, {class: record of how k was chosen}).

    backend: ``ray`` (tasks on the cluster), ``local`` (a loop in this process, FAISS on all
    cores), or ``auto`` (Ray when a Ray session is up and offers more than one CPU).
    """
    classes = [int(c) for c in np.unique(labels)]
    use_ray = backend == "ray" or (backend == "auto" and ray.is_initialized() and ray.available_resources().get("CPU", 0) > 1)
    clusters = np.zeros(len(labels), dtype=np.int64)
    curves: dict[int, dict] = {}
    if not use_ray:
        for c in tqdm(classes, desc=f"clustering ({cfg.method})", disable=not progress, leave=False):
            for _, idx, sub, record in _cluster_chunk(features, labels, [c], cfg.model_dump(), seed):
                clusters[idx], curves[c] = sub, record
        return clusters, curves
    if not ray.is_initialized():  # backend "ray" asked outside a started session: the session's Ray, as every Ray starts
        ensure_ray()
    cpus = max(1, int(ray.available_resources().get("CPU", 1)))
    n_chunks = min(len(classes), 4 * cpus)  # a few chunks per core evens out uneven classes
    chunks = [list(map(int, part)) for part in np.array_split(np.asarray(classes), n_chunks) if len(part)]
    # GPU FAISS: where this FAISS build has GPU support and the cluster has GPUs, each task
    # takes a share of one (Ray hides GPUs from tasks that do not ask for them).
    gpu_build = hasattr(faiss, "StandardGpuResources")  # the head may have no GPU itself
    gpu_share = 0.25 if gpu_build and ray.cluster_resources().get("GPU", 0) > 0 else 0
    # DEFAULT: not captured by the placement group of a Tune trial that calls this (a trial
    # held by memory on a driver node without CPUs); the tasks go wherever CPUs are free.
    task = ray.remote(num_cpus=1, num_gpus=gpu_share, scheduling_strategy="DEFAULT")(_cluster_chunk)
    feats_ref, labels_ref = ray.put(np.ascontiguousarray(features, dtype=np.float32)), ray.put(labels)
    pending = [task.remote(feats_ref, labels_ref, chunk, cfg.model_dump(), seed, 1) for chunk in chunks]
    bar = tqdm(total=len(classes), desc=f"clustering ({cfg.method}, {len(chunks)} Ray tasks)", disable=not progress, leave=False)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for c, idx, sub, record in ray.get(done[0]):
            clusters[idx], curves[c] = sub, record
            bar.update(1)
    bar.close()
    return clusters, curves

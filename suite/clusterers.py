"""The clustering algorithms of stage 4, on one class's features at a time.

``kmeans`` (FAISS) picks k with the elbow method over [k_min, k_max] unless ``k`` is fixed
(``kmeans_path``: the same search by warm starts, faster at many classes);
``cosine`` merges images whose cosine similarity passes a threshold (average-linkage
agglomeration); ``dbscan`` and ``hdbscan`` are density-based (their noise points join the
nearest cluster). ``suite.distributed.per_class`` runs them over every class (on Ray when it
is up); ``suite.stages.clustering`` is the cached stage around that.
"""

from __future__ import annotations

import faiss
import numpy as np

from suite.config import ClusteringConfig


def faiss_gpus() -> int:
    """GPUs this process's FAISS can use: 0 with ``faiss-cpu`` (the pinned package), or where
    Ray gave the task no GPU (CUDA_VISIBLE_DEVICES is then empty)."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def kmeans(x: np.ndarray, k: int, iters: int = 25, restarts: int = 3, seed: int = 0) -> tuple[np.ndarray, float]:
    """FAISS k-means: (labels, inertia = sum of squared distances to the nearest centroid)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = max(1, min(k, len(x)))
    if k == 1:
        return np.zeros(len(x), dtype=np.int64), float(((x - x.mean(0)) ** 2).sum())
    # FAISS silently trains on at most 256 points per centroid unless told otherwise
    # (PITFALLS.md: 10% worse inertia than scikit-learn at k=10 on 5000 points).
    km = faiss.Kmeans(x.shape[1], k, niter=iters, nredo=restarts, seed=seed, verbose=False,
                      max_points_per_centroid=max(256, len(x)), min_points_per_centroid=1, gpu=faiss_gpus() > 0)
    km.train(x)
    dist, labels = km.index.search(x, 1)
    return labels[:, 0].astype(np.int64), float(dist.sum())


def kmeans_path(x: np.ndarray, ks: list[int], iters: int = 25, restarts: int = 3, seed: int = 0) -> list[tuple[np.ndarray, float]]:
    """k-means at every k of ``ks`` by warm starts: k starts from the k-1 solution's centroids
    plus one k-means++ point (the best of 4 drawn in proportion to squared distance), then Lloyd
    iterations until no assignment changes (at most ``iters``). ``restarts`` such chains with
    different seeds; per k the lowest inertia wins. For the elbow search, where every k is
    needed: the work of each k starts near its answer (2.4x faster than ``kmeans`` at each k on
    1000 x 1300 x 512, the inertia summed over classes within 1% at every k; benchmarks/clustering.py)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, top = len(x), min(max(ks), len(x))
    sq = np.einsum("ij,ij->i", x, x)
    best: dict[int, tuple[np.ndarray, float]] = {}
    for chain in range(restarts):
        rng = np.random.default_rng(seed + chain)
        centroids = x.mean(0, keepdims=True)
        labels = np.zeros(n, dtype=np.int64)
        nearest = np.maximum(sq - 2 * x @ centroids[0] + centroids[0] @ centroids[0], 0)  # squared distance to own centroid
        for k in range(1, top + 1):
            if k > 1:
                weights = nearest / nearest.sum() if nearest.sum() > 0 else None
                drawn = rng.choice(n, size=min(n, 4), p=weights)
                to_drawn = np.maximum(sq[:, None] - 2 * x @ x[drawn].T + sq[drawn][None], 0)
                pick = drawn[int(np.minimum(nearest[:, None], to_drawn).sum(0).argmin())]
                centroids = np.vstack([centroids, x[pick : pick + 1]])
                labels, nearest = _lloyd(x, sq, centroids, iters)
            inertia = float(nearest.sum())
            if k in ks and (k not in best or inertia < best[k][1]):
                best[k] = (labels.copy(), inertia)
    return [best[k] if k in best else best[top] for k in ks]


def _lloyd(x: np.ndarray, sq: np.ndarray, centroids: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations from ``centroids`` (updated in place) until the assignment holds:
    (labels, each point's squared distance to its centroid)."""
    n, k = len(x), len(centroids)
    previous = None
    for _ in range(iters + 1):
        dist = sq[:, None] - 2 * x @ centroids.T + np.einsum("ij,ij->i", centroids, centroids)[None]
        labels = dist.argmin(1)
        if previous is not None and np.array_equal(labels, previous):
            break
        previous = labels
        onehot = np.zeros((n, k), dtype=np.float32)
        onehot[np.arange(n), labels] = 1
        counts = onehot.sum(0)
        filled = counts > 0  # an emptied centroid stays where it was
        centroids[filled] = (onehot.T @ x)[filled] / counts[filled, None]
    return labels, np.maximum(dist[np.arange(n), labels], 0)


def elbow(ks: list[int], inertias: list[float]) -> int:
    """The k farthest below the chord from the first to the last point of the curve (kneedle)."""
    if len(ks) < 3:
        return ks[0]
    x = (np.asarray(ks, float) - ks[0]) / (ks[-1] - ks[0])
    y = np.asarray(inertias, float)
    span = y[0] - y[-1]
    if span <= 1e-12 * max(abs(y[0]), 1.0):
        return ks[0]
    y = (y - y[-1]) / span  # 1 at k_min, 0 at k_max, decreasing
    gap = (1 - x) - y  # distance below the chord
    return int(ks[int(np.argmax(gap))]) if gap.max() > 0 else ks[0]


def _nearest_cluster(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Give density-based noise (-1) to the nearest cluster centroid; all noise -> one cluster."""
    kept = np.unique(labels[labels >= 0])
    if len(kept) == 0:
        return np.zeros(len(x), dtype=np.int64)
    centroids = np.stack([x[labels == c].mean(0) for c in kept])
    out = labels.copy()
    noise = labels < 0
    if noise.any():
        d = ((x[noise, None, :] - centroids[None]) ** 2).sum(-1)
        out[noise] = kept[d.argmin(1)]
    return np.searchsorted(kept, out).astype(np.int64)


def cluster_class(x: np.ndarray, cfg: ClusteringConfig, seed: int) -> tuple[np.ndarray, dict]:
    """Cluster one class's features: (labels 0..k-1, record of how k was chosen)."""
    if cfg.method == "kmeans":
        if cfg.k is not None:
            labels, inertia = kmeans(x, cfg.k, cfg.kmeans_iters, cfg.kmeans_restarts, seed)
            return labels, {"k": int(labels.max()) + 1, "ks": [cfg.k], "inertia": [inertia]}
        ks = [k for k in range(cfg.k_min, cfg.k_max + 1) if k <= len(x)] or [1]
        if cfg.elbow_search == "warm_start":
            runs = kmeans_path(x, ks, cfg.kmeans_iters, cfg.kmeans_restarts, seed)
        else:
            runs = [kmeans(x, k, cfg.kmeans_iters, cfg.kmeans_restarts, seed) for k in ks]
        inertias = [r[1] for r in runs]
        best = elbow(ks, inertias)
        return runs[ks.index(best)][0], {"k": best, "ks": ks, "inertia": inertias}
    if cfg.method == "cosine":
        # deferred: scikit-learn takes ~1 s to import, and only these methods need it
        from sklearn.cluster import AgglomerativeClustering

        if len(x) < 2:
            return np.zeros(len(x), dtype=np.int64), {"k": 1}
        labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                         distance_threshold=1.0 - cfg.cosine_similarity).fit_predict(x)
        return labels.astype(np.int64), {"k": int(labels.max()) + 1}
    if cfg.method == "dbscan":
        from sklearn.cluster import DBSCAN  # deferred: scikit-learn takes ~1 s to import, only these methods need it

        z = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
        labels = _nearest_cluster(z, DBSCAN(eps=cfg.dbscan_eps, min_samples=cfg.dbscan_min_samples).fit_predict(z))
        return labels, {"k": int(labels.max()) + 1}
    from sklearn.cluster import HDBSCAN  # deferred, as above

    if len(x) < cfg.hdbscan_min_cluster_size:
        return np.zeros(len(x), dtype=np.int64), {"k": 1}
    labels = _nearest_cluster(x, HDBSCAN(min_cluster_size=cfg.hdbscan_min_cluster_size).fit_predict(x))
    return labels, {"k": int(labels.max()) + 1}

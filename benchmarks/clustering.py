"""Per-class k-means with the elbow search: FAISS vs scikit-learn, and local vs Ray tasks.

    .venv/bin/python benchmarks/clustering.py                      # all cases
    .venv/bin/python benchmarks/clustering.py --cases cifar10 cifar100
    .venv/bin/python benchmarks/clustering.py --imagenet-classes 100   # a slice of the 1000-class case

Everything is measured side by side in one run and printed as ratios:

1. FAISS vs scikit-learn ``KMeans`` on the same features: the CIFAR-10 subset's real images
   (PCA-64 of the pixels, per class, the elbow search over k = 1..8, same iterations and
   restarts), and one 5000 x 512 matrix at k = 10 and 100.
2. Wall time of the whole per-class elbow search in one process vs as Ray tasks, for both
   searches (``clustering.elbow_search``: FAISS from scratch at each k, or warm starts from
   k-1), with the warm start's inertia against the independent one's: CIFAR-10 (real features, 10 x ~500), CIFAR-100-sized (100 x 500 x 64) and
   ImageNet-sized (1000 x 1300 x 512). The last two use generated features (a Gaussian mixture
   with 1-6 modes per class), as no CIFAR-100 or ImageNet is on this machine; their shapes,
   not their values, set the cost.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from suite.config import ClusteringConfig, DataConfig


def _real_cifar10(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.decomposition import PCA

    from suite.data import load_split

    ds = load_split(DataConfig(dataset="cifar10"), "train")
    x = ds.images.reshape(len(ds), -1).float().numpy() / 255.0
    return PCA(64, random_state=seed).fit_transform(x).astype(np.float32), ds.labels.numpy()


def _generated(classes: int, per_class: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    feats = np.empty((classes * per_class, dim), dtype=np.float32)
    for c in range(classes):
        modes = rng.integers(1, 7)
        centers = rng.normal(0, 4, (modes, dim)).astype(np.float32)
        pick = rng.integers(0, modes, per_class)
        feats[c * per_class:(c + 1) * per_class] = centers[pick] + rng.normal(0, 1, (per_class, dim)).astype(np.float32)
    return feats, np.repeat(np.arange(classes), per_class)


def _sklearn_elbow(x: np.ndarray, cfg: ClusteringConfig, seed: int) -> list[float]:
    from sklearn.cluster import KMeans

    return [KMeans(k, n_init=cfg.kmeans_restarts, max_iter=cfg.kmeans_iters, random_state=seed).fit(x).inertia_
            for k in range(cfg.k_min, cfg.k_max + 1)]


def _faiss_elbow(x: np.ndarray, cfg: ClusteringConfig, seed: int) -> list[float]:
    from suite.clusterers import kmeans

    return [kmeans(x, k, cfg.kmeans_iters, cfg.kmeans_restarts, seed)[1] for k in range(cfg.k_min, cfg.k_max + 1)]


def faiss_vs_sklearn(feats: np.ndarray, labels: np.ndarray, cfg: ClusteringConfig) -> None:
    print("\n1. FAISS vs scikit-learn, same features, same iterations and restarts")
    t0 = time.perf_counter()
    f_inertia = [_faiss_elbow(feats[labels == c], cfg, 0) for c in np.unique(labels)]
    t_faiss = time.perf_counter() - t0
    t0 = time.perf_counter()
    s_inertia = [_sklearn_elbow(feats[labels == c], cfg, 0) for c in np.unique(labels)]
    t_sk = time.perf_counter() - t0
    quality = np.mean([f[-1] / s[-1] for f, s in zip(f_inertia, s_inertia)])
    print(f"   CIFAR-10 per-class elbow (k={cfg.k_min}..{cfg.k_max}, {len(feats)} images x {feats.shape[1]}): "
          f"FAISS {t_faiss:.2f} s, scikit-learn {t_sk:.2f} s -> {t_sk / t_faiss:.1f}x faster; "
          f"inertia at k={cfg.k_max} FAISS/sklearn = {quality:.3f}")
    x, _ = _generated(1, 5000, 512, seed=1)
    from sklearn.cluster import KMeans

    from suite.clusterers import kmeans

    for k in (10, 100):
        t0 = time.perf_counter()
        _, fi = kmeans(x, k, cfg.kmeans_iters, 1, 0)
        tf = time.perf_counter() - t0
        t0 = time.perf_counter()
        si = KMeans(k, n_init=1, max_iter=cfg.kmeans_iters, random_state=0).fit(x).inertia_
        ts = time.perf_counter() - t0
        print(f"   5000 x 512, k={k}: FAISS {tf:.3f} s, scikit-learn {ts:.3f} s -> {ts / tf:.1f}x faster; inertia ratio {fi / si:.3f}")


def elbow_search(name: str, feats: np.ndarray, labels: np.ndarray, cfg: ClusteringConfig, backends: list[str]) -> None:
    """Both elbow searches (``clustering.elbow_search``) on both backends, fastest first, and the
    warm-start search's inertia against the independent one's, per k summed over the classes."""
    from suite.distributed.per_class import cluster_all_classes

    times, totals, ks = {}, {}, {}
    for search in ("warm_start", "independent"):
        for backend in backends:
            t0 = time.perf_counter()
            _, curves = cluster_all_classes(feats, labels, cfg.model_copy(update={"elbow_search": search}), backend=backend)
            times[f"{search} {'on Ray' if backend == 'ray' else 'in one process'}"] = time.perf_counter() - t0
        totals[search] = np.sum([rec["inertia"] for rec in curves.values()], axis=0)
        ks[search] = np.mean([rec["k"] for rec in curves.values()])
    shown = ", ".join(f"{path} {t:.1f} s" for path, t in sorted(times.items(), key=lambda item: item[1]))
    ratio = totals["warm_start"] / totals["independent"]
    worst = int(np.argmax(ratio))
    print(f"   {name}: {len(np.unique(labels))} classes, {len(feats)} x {feats.shape[1]}: {shown}")
    best = {search: min(t for path, t in times.items() if path.startswith(search)) for search in totals}
    print(f"      warm_start {best['independent'] / best['warm_start']:.2f}x faster than independent (best path each); "
          f"inertia per k (sum over classes) {ratio.min():.4f}-{ratio.max():.4f} of independent's (worst at "
          f"k={cfg.k_min + worst}); mean elbow k {ks['warm_start']:.2f} vs {ks['independent']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["compare", "cifar10", "cifar100", "imagenet"],
                        choices=["compare", "cifar10", "cifar100", "imagenet"])
    parser.add_argument("--imagenet-classes", type=int, default=1000, help="classes of the ImageNet-sized case")
    parser.add_argument("--k-max", type=int, default=8)
    parser.add_argument("--no-ray", action="store_true", help="time the local loop only")
    args = parser.parse_args()
    cfg = ClusteringConfig(k_min=1, k_max=args.k_max)
    print(f"{os.cpu_count()} CPUs; k-means: {cfg.kmeans_iters} iterations, {cfg.kmeans_restarts} restarts, k = 1..{cfg.k_max}")
    backends = ["local"] if args.no_ray else ["local", "ray"]
    if not args.no_ray:
        import ray

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        from suite.distributed.per_class import cluster_all_classes

        # Start the workers and import FAISS and the suite in them before anything is timed.
        cluster_all_classes(*_generated(8, 50, 8), cfg, backend="ray")
    if "compare" in args.cases or "cifar10" in args.cases:
        feats, labels = _real_cifar10()
    if "compare" in args.cases:
        faiss_vs_sklearn(feats, labels, cfg)
    print("\n2. The whole per-class elbow search (FAISS), one process vs Ray tasks")
    if "cifar10" in args.cases:
        elbow_search("CIFAR-10 subset (real)", feats, labels, cfg, backends)
    if "cifar100" in args.cases:
        elbow_search("CIFAR-100-sized (generated)", *_generated(100, 500, 64), cfg, backends)
    if "imagenet" in args.cases:
        elbow_search("ImageNet-sized (generated)", *_generated(args.imagenet_classes, 1300, 512), cfg, backends)


if __name__ == "__main__":
    main()

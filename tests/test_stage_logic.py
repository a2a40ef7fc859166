"""The method's steps on real images at tiny scale (no Ray needed)."""

import numpy as np
import pytest
import torch

from suite.clusterers import cluster_class, elbow, kmeans, kmeans_path
from suite.config import ClusteringConfig, DataConfig
from suite.data import augment_batch, load_split
from suite.stages.trained import softmax_entropy
from suite.stages.features import reduce
from suite.stages.targets import assign


@pytest.fixture(scope="module")
def digits(data_root):
    ds = load_split(DataConfig(dataset="mnist", root=str(data_root), train_limit=600), "train")
    feats = reduce(ds.images.reshape(len(ds), -1).float().numpy() / 255.0, 20, 0)
    return ds, feats


def test_entropy_orders_confidence():
    logits = torch.tensor([[10.0, 0, 0], [1.0, 1.0, 1.0], [3.0, 1.0, 0.0]])
    e = softmax_entropy(logits)
    assert e[0] < e[2] < e[1]
    assert np.isclose(e[1], np.log(3))


def test_elbow_finds_the_knee():
    assert elbow([1, 2, 3, 4, 5, 6], [100, 40, 12, 10, 9, 8.5]) == 3
    assert elbow([1, 2], [10, 5]) == 1
    assert elbow([1, 2, 3], [5, 5, 5]) == 1


def test_faiss_kmeans_on_real_digits(digits):
    ds, feats = digits
    x = feats[ds.labels.numpy() == 1]
    inertias = [kmeans(x, k, seed=0)[1] for k in (1, 2, 4)]
    assert inertias[0] > inertias[1] > inertias[2]
    labels, _ = kmeans(x, 4, seed=0)
    assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_warm_start_elbow_search_matches_faiss_at_each_k(data_root):
    """``clustering.elbow_search: warm_start`` on 3,000 real digits (~300 a class): at every k, the
    inertia summed over the classes is within 1% of FAISS from scratch with the same restarts
    (one class at one k may differ more either way; on ~60 a class up to 3%), and each record's
    labels are the nearest-centroid assignment its inertia sums; the option leaves existing
    cache keys alone."""
    ds = load_split(DataConfig(dataset="mnist", root=str(data_root), train_limit=3000), "train")
    feats = reduce(ds.images.reshape(len(ds), -1).float().numpy() / 255.0, 20, 0)
    ks = [1, 2, 3, 4, 5, 6, 7, 8]
    warm_total, faiss_total = np.zeros(len(ks)), np.zeros(len(ks))
    for digit in range(10):
        x = feats[ds.labels.numpy() == digit].astype(np.float32)
        warm = kmeans_path(x, ks, seed=0)
        warm_total += [inertia for _, inertia in warm]
        faiss_total += [kmeans(x, k, seed=0)[1] for k in ks]
        for k, (labels, inertia) in zip(ks, warm):
            centroids = np.stack([x[labels == c].mean(0) for c in np.unique(labels)])
            assert len(centroids) == k
            assert inertia == pytest.approx(((x[:, None] - centroids[None]) ** 2).sum(-1).min(1).sum(), rel=1e-3)
    assert (warm_total <= 1.01 * faiss_total).all(), warm_total / faiss_total
    labels, record = cluster_class(x, ClusteringConfig(k_max=8, elbow_search="warm_start"), seed=0)
    assert record["ks"] == ks and record["inertia"] == sorted(record["inertia"], reverse=True) and record["k"] == labels.max() + 1
    assert "elbow_search" not in ClusteringConfig().model_dump()  # at its default: stage keys as before it existed


@pytest.mark.parametrize("method", ["kmeans", "cosine", "dbscan", "hdbscan"])
def test_every_clustering_method_labels_every_image(digits, method):
    ds, feats = digits
    x = feats[ds.labels.numpy() == 7]
    labels, record = cluster_class(x, ClusteringConfig(method=method, k_max=5, dbscan_eps=0.3), seed=0)
    assert len(labels) == len(x) and labels.min() == 0
    assert record["k"] == labels.max() + 1 and (np.bincount(labels) > 0).all()
    if method == "kmeans":
        assert record["ks"] == [1, 2, 3, 4, 5] and record["inertia"] == sorted(record["inertia"], reverse=True)


def test_targets_are_easiest_train_image_of_own_cluster(digits):
    ds, feats = digits
    labels = ds.labels.numpy()
    rng = np.random.default_rng(0)
    entropy = rng.random(len(labels))
    clusters = np.zeros(len(labels), dtype=np.int64)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        clusters[idx], _ = kmeans(feats[idx], 3, seed=0)
    is_train = rng.random(len(labels)) > 0.2
    targets, per_class = assign(labels, clusters, entropy, is_train)
    for i in range(0, len(labels), 37):
        same = np.flatnonzero((labels == labels[i]) & (clusters == clusters[i]) & is_train)
        assert targets[i] == same[np.argmin(entropy[same])]
        whole = np.flatnonzero((labels == labels[i]) & is_train)
        assert per_class[i] == whole[np.argmin(entropy[whole])]
    assert is_train[targets].all() and (labels[targets] == labels).all()


def test_augmentation_keeps_shape_and_content():
    """Each image comes out as a 32x32 crop of itself padded by 4 (mirrored when flips are on)."""
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    crops = lambda i: [padded[i, :, a:a + 32, b:b + 32] for a in range(9) for b in range(9)]  # noqa: E731
    y = augment_batch(x, flip=True)
    assert y.shape == x.shape and not torch.equal(y, x)
    for i in range(8):
        assert any(torch.equal(y[i], c) or torch.equal(y[i], c.flip(-1)) for c in crops(i)), i
    z = augment_batch(x, flip=False)  # digits: never mirrored
    for i in range(8):
        assert any(torch.equal(z[i], c) for c in crops(i)), i

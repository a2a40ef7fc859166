"""Per-class clustering as Ray tasks gives the same clusters as the local loop."""

import numpy as np
import pytest

from suite.config import ClusteringConfig, DataConfig
from suite.data import load_split
from suite.distributed.per_class import cluster_all_classes


@pytest.mark.slow
def test_ray_tasks_match_local_loop(ray_local, data_root):
    from sklearn.decomposition import PCA

    ds = load_split(DataConfig(dataset="cifar10", root=str(data_root), train_limit=1500), "train")
    feats = PCA(32, random_state=0).fit_transform(ds.images.reshape(len(ds), -1).float().numpy() / 255).astype(np.float32)
    labels = ds.labels.numpy()
    cfg = ClusteringConfig(k_min=1, k_max=5)
    local, local_curves = cluster_all_classes(feats, labels, cfg, backend="local")
    remote, remote_curves = cluster_all_classes(feats, labels, cfg, backend="ray")
    assert sorted(remote_curves) == list(range(10))
    assert [remote_curves[c]["k"] for c in range(10)] == [local_curves[c]["k"] for c in range(10)]
    np.testing.assert_array_equal(remote, local)
    for c in range(10):  # sub-cluster ids stay within each class's k
        assert remote[labels == c].max() + 1 == remote_curves[c]["k"]

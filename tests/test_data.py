import gzip
import pickle
import shutil

import numpy as np
import pytest

from suite.config import DataConfig
from suite.data import DataError, check, load_split, split_train_val
from suite.data.datasets import DEBIAN_FASHION


def test_mnist_reads_real_files(data_root):
    ds = load_split(DataConfig(dataset="mnist", root=str(data_root), train_limit=300), "train")
    assert ds.images.shape == (300, 1, 28, 28) and ds.images.dtype.is_floating_point is False
    assert set(ds.labels.tolist()) == set(range(10))
    assert 20 < ds.images.float().mean() < 60  # real digits: mostly black background


def test_cifar10_subset(data_root):
    s = check("cifar10", str(data_root))
    assert s["train"]["images"] == 5085 and s["test"]["images"] == 1017
    assert s["train"]["shape"] == [3, 32, 32]


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package(tmp_path):
    ds = load_split(DataConfig(dataset="fashion-mnist", root=str(tmp_path), download=False, test_limit=100), "test")
    assert ds.images.shape == (100, 1, 28, 28)


def test_env_var_points_at_data(data_root, monkeypatch):
    monkeypatch.setenv("CAENET_DATA", str(data_root))
    ds = load_split(DataConfig(dataset="mnist", test_limit=50), "test")
    assert len(ds) == 50 and str(data_root) in str(ds.source)


def test_missing_dataset_names_paths_and_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load_split(DataConfig(dataset="cifar100", root=str(tmp_path), download=False), "train")
    msg = str(err.value)
    assert str(tmp_path) in msg and "CAENET_DATA" in msg and "\n" not in msg


def test_truncated_idx_is_caught(data_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_root / "MNIST" / "raw").iterdir():
        shutil.copy(f, raw / f.name)
    data = gzip.decompress((raw / "t10k-images-idx3-ubyte.gz").read_bytes())
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(data[: len(data) // 2]))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: header says .* truncated or corrupt"):
        load_split(DataConfig(dataset="mnist", root=str(tmp_path), download=False), "test")
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes((data_root / "MNIST/raw/t10k-images-idx3-ubyte.gz").read_bytes()[:5000])
    with pytest.raises(DataError, match="unreadable or truncated"):
        load_split(DataConfig(dataset="mnist", root=str(tmp_path), download=False), "test")


def test_corrupt_cifar_pickle_is_caught(data_root, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    shutil.copytree(data_root / "cifar-10-batches-py", folder)
    (folder / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match=r"data_batch_3: corrupt pickle"):
        load_split(DataConfig(dataset="cifar10", root=str(tmp_path), download=False), "train")
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({"data": np.zeros((5, 100), np.uint8), "labels": [0] * 5}, fh)
    with pytest.raises(DataError, match="expected N x 3072"):
        load_split(DataConfig(dataset="cifar10", root=str(tmp_path), download=False), "train")


def test_validation_split_is_fixed_by_seed():
    a, b = split_train_val(1000, 0.1, 0), split_train_val(1000, 0.1, 0)
    assert a.sum() == 100 and (a == b).all() and not (a == split_train_val(1000, 0.1, 1)).all()


def test_cifar100_layout(data_root, tmp_path):
    """No CIFAR-100 copy is offline: build its layout (train/test/meta pickles, fine labels)
    from real CIFAR-10 images and read it back through the same loader."""
    with open(data_root / "cifar-10-batches-py" / "test_batch", "rb") as fh:
        real = pickle.load(fh, encoding="latin1")["data"][:200]
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [i % 100 for i in range(200)]
    for split in ("train", "test"):
        with open(folder / split, "wb") as fh:
            pickle.dump({"data": real, "fine_labels": fine, "coarse_labels": [0] * 200}, fh)
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": [f"name{i}" for i in range(100)]}, fh)
    ds = load_split(DataConfig(dataset="cifar100", root=str(tmp_path), download=False), "train")
    assert ds.images.shape == (200, 3, 32, 32) and ds.labels.max() == 99
    assert ds.info.num_classes == 100 and ds.info.classes[5] == "name5"
    assert np.array_equal(ds.images[0].numpy().reshape(-1), real[0])

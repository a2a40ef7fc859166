import gzip
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch

from suite.config import DataConfig
from suite.data import DataError, check, fit_and_val, load_split, split_train_val
from suite.data.sources.mnist import DEBIAN_FASHION

# Expected sizes and contents come from the files themselves (IDX headers, the pickles read by
# plain pickle), so these hold on the reduced offline copies and on full downloads alike.


def _idx(path) -> np.ndarray:
    """An IDX file read independently of the suite's reader: header dims, then the bytes."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _cifar_batch(path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")  # our own test data: the plain unpickler is fine here


def test_mnist_reads_real_files(data_root):
    ds = load_split(DataConfig(dataset="mnist", root=str(data_root), train_limit=300), "train")
    assert ds.images.shape == (300, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert set(ds.labels.tolist()) == set(range(10))
    assert 20 < ds.images.float().mean() < 60  # real digits: mostly black background


@pytest.mark.parametrize("split,stem", [("train", "train"), ("test", "t10k")])
def test_mnist_matches_its_idx_files(data_root, split, stem):
    raw = data_root / "MNIST" / "raw"
    images, labels = _idx(raw / f"{stem}-images-idx3-ubyte.gz"), _idx(raw / f"{stem}-labels-idx1-ubyte.gz")
    ds = load_split(DataConfig(dataset="mnist", root=str(data_root)), split)
    assert len(ds) == len(images) == len(labels) > 0
    assert np.array_equal(ds.images[:, 0].numpy(), images) and np.array_equal(ds.labels.numpy(), labels)
    assert ds.labels.dtype == torch.int64 and ds.images.is_contiguous()


def test_cifar10_matches_its_pickles(data_root):
    folder = data_root / "cifar-10-batches-py"
    train = [_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    test = _cifar_batch(folder / "test_batch")
    s = check("cifar10", str(data_root))
    assert s["train"]["images"] == sum(len(b["labels"]) for b in train) > 0
    assert s["test"]["images"] == len(test["labels"]) > 0
    assert s["train"]["shape"] == s["test"]["shape"] == [3, 32, 32] and s["path"] == str(folder)
    assert s["train"]["per_class_min"] > 0  # every class present
    ds = load_split(DataConfig(dataset="cifar10", root=str(data_root)), "train")
    assert np.array_equal(ds.labels.numpy(), np.concatenate([b["labels"] for b in train]))  # batch order kept
    assert np.array_equal(ds.images[0].numpy().reshape(-1), train[0]["data"][0])  # R, G, B planes
    assert np.array_equal(ds.images[-1].numpy().reshape(-1), train[-1]["data"][-1])
    assert ds.info.num_classes == 10 and ds.info.classes[0] == "airplane"


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package(tmp_path):
    ds = load_split(DataConfig(dataset="fashion-mnist", root=str(tmp_path), download=False, test_limit=100), "test")
    assert ds.images.shape == (100, 1, 28, 28) and ds.source == DEBIAN_FASHION
    labels = _idx(DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(ds.labels.numpy(), labels[:100])
    s = check("fashion-mnist", str(tmp_path))
    assert s["train"]["images"] == len(_idx(DEBIAN_FASHION / "train-labels-idx1-ubyte.gz")) > 0
    assert s["test"]["images"] == len(labels) and s["test"]["per_class_min"] > 0


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
    (folder / "data_batch_3").chmod(0o644)  # the offline copy is read-only
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


def test_fit_and_val_partition_the_training_split(data_root):
    cfg = DataConfig(dataset="mnist", root=str(data_root), train_limit=500, val_fraction=0.2, seed=3)
    fit_x, fit_y, val_x, val_y = fit_and_val(cfg)
    train = load_split(cfg, "train")
    assert len(fit_x) + len(val_x) == len(train) == 500 and len(val_x) == len(val_y) == 100
    mask = torch.from_numpy(split_train_val(500, 0.2, 3))
    rebuilt = torch.empty_like(train.images)
    rebuilt[~mask], rebuilt[mask] = fit_x, val_x  # each image in exactly one part, in the file's order
    assert torch.equal(rebuilt, train.images) and torch.equal(val_y, train.labels[mask])
    again = fit_and_val(cfg)
    assert all(torch.equal(x, y) for x, y in zip(again, (fit_x, fit_y, val_x, val_y)))


def test_cifar100_layout(data_root, tmp_path):
    """No CIFAR-100 copy is offline: build its layout (train/test/meta pickles, fine labels)
    from real CIFAR-10 images and read it back through the same loader."""
    real = _cifar_batch(data_root / "cifar-10-batches-py" / "test_batch")["data"][:200]
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


def test_cifar100_config_on_a_tiny_set_in_the_real_layout(tmp_path):
    """configs/cifar100_alexnet.yaml (issue 26) against CIFAR-100 pickles written as the real
    download lays them out (cifar-100-python/{train,test,meta}, fine and coarse labels)."""
    from pathlib import Path

    from suite import experiment
    from suite.data import INFO
    from suite.models import create_model, geometry

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("test", 1)):
        fine = np.repeat(np.arange(100), per_class)
        batch = {"data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8), "fine_labels": fine.tolist(),
                 "coarse_labels": (fine // 5).tolist(), "filenames": [f"{i}.png" for i in range(len(fine))], "batch_label": split}
        (folder / split).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"fine_{i}" for i in range(100)],
                                                "coarse_label_names": [f"coarse_{i}" for i in range(20)]}))
    found = check("cifar100", str(tmp_path))  # what `caenet data check cifar100` reports
    assert found["train"]["images"] == 300 and found["test"]["images"] == 100 and found["train"]["per_class_min"] == 3

    repo = Path(__file__).resolve().parents[1]
    cfg = experiment.load(repo / "configs" / "cifar100_alexnet.yaml", [f"data.root={tmp_path}"])
    assert cfg.data.dataset == "cifar100" and cfg.baseline.model == "alexnet" and cfg.caenet.classifier_hidden == 512
    ds = load_split(cfg.data, "train")
    assert ds.images.shape == (300, 3, 32, 32) and int(ds.labels.max()) == 99
    net = create_model(cfg.baseline.model, **geometry(INFO["cifar100"]))
    assert net(ds.floats(slice(0, 2))).shape == (2, 100)

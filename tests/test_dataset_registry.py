"""A dataset is one file in suite/data/sources/: dropped in, it is listed, located, read and
checked by the ordinary loader with no other edit (issue: "adding a dataset must be one new
file plus its test")."""

from __future__ import annotations

import gzip
import importlib
import struct
import sys
import textwrap

import numpy as np
import pytest

from suite import plugins
from suite.config import ConfigError, DataConfig
from suite.data import INFO, DataError, check, load_split, catalog, sources
from suite.data.catalog import DatasetInfo, DatasetSource, register
from suite.experiment import from_tree

BUILTINS = ["mnist", "fashion-mnist", "cifar10", "cifar100"]

NPZ_SOURCE = '''
    """toy: toy/{train,test}.npz, each with images (N x 1 x 8 x 8, uint8) and labels."""
    import zipfile

    import numpy as np

    from suite.data.formats import DataError
    from suite.data.catalog import DatasetInfo, DatasetSource, register


    @register
    class Toy(DatasetSource):
        info = DatasetInfo("toy", 1, 8, 3, ("low", "mid", "high"))
        expected = "toy/train.npz and toy/test.npz"

        def locate(self, roots):
            return next((r / "toy" for r in roots if (r / "toy" / "train.npz").is_file()), None)

        def read(self, folder, split):
            path = folder / f"{split}.npz"
            try:
                with np.load(path) as f:  # allow_pickle stays False: a data file runs no code
                    return f["images"], f["labels"]
            except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
                raise DataError(f"{path}: unreadable ({exc.__class__.__name__}); re-create it") from None
'''

IDX_SOURCE = '''
    """toy-idx: ToyIDX/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz, MNIST's layout."""
    from suite.data.catalog import DatasetInfo, register
    from suite.data.sources.mnist import IdxSource


    @register
    class ToyIdx(IdxSource):
        info = DatasetInfo("toy-idx", 1, 6, 4, ("a", "b", "c", "d"))
        expected = "ToyIDX/train-images-idx3-ubyte.gz ..."

        def folders(self, root):
            return [root / "ToyIDX"]
'''


@pytest.fixture
def drop_in(monkeypatch, tmp_path):
    """``drop_in(module, text)`` puts a module into suite/data/sources (through a temp folder on
    the package's path) and makes the registry scan again, as a new file in the repo would be
    found; the catalog, the package and sys.modules are restored afterwards."""
    folder = tmp_path / "sources"
    folder.mkdir()
    monkeypatch.setattr(sources, "__path__", [*sources.__path__, str(folder)])
    monkeypatch.setattr(catalog, "_SOURCES", dict(catalog._registered()))
    added = []

    def drop(module: str, text: str) -> None:
        (folder / f"{module}.py").write_text(textwrap.dedent(text))
        importlib.invalidate_caches()
        added.append(module)
        monkeypatch.setattr(plugins, "_discovered", plugins._discovered - {sources.__name__})

    yield drop
    for module in added:
        sys.modules.pop(f"{sources.__name__}.{module}", None)
        if hasattr(sources, module):
            delattr(sources, module)


def _toy_files(root, n_train=30, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    (root / "toy").mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8)
        labels = np.arange(n) % 3
        np.savez(root / "toy" / f"{split}.npz", images=images, labels=labels)
        out[split] = images, labels
    return out


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _cfg(name: str, **kw) -> DataConfig:
    return DataConfig(dataset=name, **kw)


def test_builtins_are_registered():
    assert catalog.names()[:4] == BUILTINS and list(INFO)[:4] == BUILTINS
    for name in BUILTINS:
        source = catalog.get(name)
        assert isinstance(source, DatasetSource) and source.info is INFO[name] and source.info.name == name
        assert source.expected and len(source.info.classes) == source.info.num_classes
    assert (INFO["mnist"].channels, INFO["cifar10"].channels, INFO["cifar100"].num_classes) == (1, 3, 100)


def test_info_is_a_read_only_mapping():
    assert "mnist" in INFO and "mnistt" not in INFO and len(INFO) == len(catalog.names())
    assert dict(INFO.items())["cifar10"].size == 32
    with pytest.raises(KeyError):
        INFO["mnistt"]
    with pytest.raises(TypeError):
        INFO["toy"] = INFO["mnist"]


def test_unknown_dataset_is_one_line_listing_the_known(tmp_path):
    expected = f"unknown dataset 'mnistt'; choose one of {', '.join(catalog.names())}"
    for call in (lambda: catalog.get("mnistt"), lambda: check("mnistt", str(tmp_path))):
        with pytest.raises(DataError) as err:
            call()
        assert str(err.value) == expected and "\n" not in str(err.value)
    assert all(name in expected for name in BUILTINS)
    with pytest.raises(ConfigError, match=f"data.dataset: unknown dataset 'mnistt'; known: {', '.join(catalog.names())}$"):
        from_tree({"data": {"dataset": "mnistt", "root": str(tmp_path)}})  # a config naming it fails on load, before load_split


def test_a_dropped_in_npz_source_is_listed_read_and_checked(drop_in, tmp_path):
    root = tmp_path / "data"
    written = _toy_files(root)
    assert "toy" not in INFO
    drop_in("toy", NPZ_SOURCE)
    assert "toy" in INFO and INFO["toy"].num_classes == 3 and catalog.names()[-1] == "toy"
    assert catalog.names()[:4] == BUILTINS  # built-ins keep their place in listings
    for split in ("train", "test"):
        ds = load_split(_cfg("toy", root=str(root), download=False), split)
        images, labels = written[split]
        assert np.array_equal(ds.images.numpy(), images) and np.array_equal(ds.labels.numpy(), labels)
        assert ds.info == INFO["toy"] and ds.source == root / "toy"
    limited = load_split(_cfg("toy", root=str(root), train_limit=10), "train")
    assert len(limited) == 10
    s = check("toy", str(root))
    assert s["train"] == {"images": 30, "shape": [1, 8, 8], "per_class_min": 10, "per_class_max": 10}
    assert s["test"]["images"] == 12 and s["path"] == str(root / "toy")


def test_a_dropped_in_source_gets_the_loaders_errors(drop_in, tmp_path):
    drop_in("toy", NPZ_SOURCE)
    with pytest.raises(DataError, match=r"^toy: not found under .*; set data.root or CAENET_DATA to a folder holding toy/train.npz"):
        check("toy", str(tmp_path))
    with pytest.raises(DataError, match=r"download to .* failed \(no download is known for toy\)"):
        check("toy", str(tmp_path), download=True)
    _toy_files(tmp_path)
    np.savez(tmp_path / "toy" / "test.npz", images=np.zeros((4, 1, 8, 8), np.uint8), labels=np.array([0, 1, 2, 3]))
    with pytest.raises(DataError, match=r"labels outside 0..2"):
        load_split(_cfg("toy", root=str(tmp_path)), "test")
    (tmp_path / "toy" / "train.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"train.npz: unreadable"):
        load_split(_cfg("toy", root=str(tmp_path)), "train")


def test_a_dropped_in_idx_source_reuses_the_mnist_reader(drop_in, tmp_path):
    folder = tmp_path / "ToyIDX"
    folder.mkdir()
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (20, 6, 6), dtype=np.uint8), np.arange(20) % 4
    _write_idx(folder / "train-images-idx3-ubyte.gz", images)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", labels)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", images[:8])
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels[:8])
    drop_in("toy_idx", IDX_SOURCE)
    ds = load_split(_cfg("toy-idx", root=str(tmp_path)), "train")
    assert np.array_equal(ds.images[:, 0].numpy(), images) and np.array_equal(ds.labels.numpy(), labels)
    assert check("toy-idx", str(tmp_path))["test"]["images"] == 8
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 9) + bytes(8)))
    with pytest.raises(DataError, match=r"header says 9 bytes .* truncated or corrupt"):
        check("toy-idx", str(tmp_path))


def test_a_broken_source_fails_at_registration(drop_in):
    drop_in("toy", NPZ_SOURCE)
    INFO["toy"]  # scanned

    class NoRead(DatasetSource):
        info = DatasetInfo("half", 1, 8, 2, ("a", "b"))
        expected = "half/..."

        def locate(self, roots):
            return None

    with pytest.raises(TypeError, match="read"):
        register(NoRead)

    class NoInfo(DatasetSource):
        locate = read = lambda self, *a: None

    with pytest.raises(TypeError, match="sets info"):
        register(NoInfo)

    class Twin(NoRead):
        info = DatasetInfo("toy", 1, 8, 3, ("a", "b", "c"))
        read = lambda self, *a: None

    with pytest.raises(TypeError, match="'toy' is registered twice"):
        register(Twin)
    assert "half" not in INFO and catalog.get("toy").__class__.__name__ == "Toy"


def test_config_accepts_a_new_source(drop_in, tmp_path):
    drop_in("toy", NPZ_SOURCE)
    assert from_tree({"data": {"dataset": "toy"}}).data.dataset == "toy"
    with pytest.raises(ConfigError, match="toy"):  # the config's error lists the registered names
        from_tree({"data": {"dataset": "nope"}})

"""Each architecture is timed once per machine (issue 25, item 4): a later sweep or re-run
reuses its latency, says so, and a changed machine fingerprint measures again."""

import torch
import torch.nn as nn

from suite.config import LatencyConfig
from suite.pipeline import latency_cache
from suite.pipeline.latency_cache import LatencyCache, time_here
from suite.timing import WINDOW_P50, speedup

CALLS = {"n": 0}


class Counted(nn.Module):
    """A model that counts its forward calls (in a global: timing deep-copies models)."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, width), nn.ReLU(), nn.Linear(width, 10))

    def forward(self, x):
        CALLS["n"] += 1
        return self.net(x)


LATENCY = LatencyConfig(warmup=1, windows=3, window_queries=5, max_windows=3)
ARCHS = {"a": ["mlp", {"width": 64}], "b": ["mlp", {"width": 512}]}


def _time(cache):
    models = {"baseline": Counted(256), "a": Counted(64), "b": Counted(512)}
    timed = time_here(models, ARCHS, torch.rand(1, 1, 28, 28), LATENCY, cache)
    return timed.stats, timed.paired, timed.cached


def test_an_architecture_is_timed_once_then_read_back(tmp_path, monkeypatch):
    cache = LatencyCache(tmp_path / "latency")
    CALLS["n"] = 0
    stats, paired, cached = _time(cache)
    assert cached == set() and CALLS["n"] > 0 and len(list((tmp_path / "latency").glob("*.json"))) == 2
    first = stats

    CALLS["n"] = 0
    stats, paired, cached = _time(cache)
    assert cached == {"a", "b"} and CALLS["n"] == 0  # nothing measured again
    assert stats["a"] == first["a"] and stats["baseline"]["latency_p50_ms"] > 0
    ratio, low, high = speedup(paired["b"][WINDOW_P50], stats["b"][WINDOW_P50])  # still a paired speed-up
    assert low <= ratio <= high

    monkeypatch.setattr(latency_cache, "fingerprint", lambda: {"cpu": "another board"})
    CALLS["n"] = 0
    _, _, cached = _time(cache)
    assert cached == set() and CALLS["n"] > 0  # a changed machine measures again


def test_a_cut_off_entry_is_measured_again(tmp_path):
    cache = LatencyCache(tmp_path / "latency")
    _time(cache)
    for f in (tmp_path / "latency").glob("*.json"):
        f.write_text(f.read_text()[:20])
    _, _, cached = _time(cache)
    assert cached == set()


def test_a_failure_keeps_what_was_measured_and_names_what_is_missing(tmp_path):
    """A board lost mid-way (issue 25, item 6): the visits before it are kept in the cache, the
    error and the labels left are returned, and the next run measures only those."""
    cache, runs_as = LatencyCache(tmp_path / "latency"), {"board": {"cpu": "test"}}
    archs = {"a": ["x", {"w": 1}], "b": ["x", {"w": 2}], "c": ["x", {"w": 3}]}
    asked = []

    def measure(labels, fail_on=None):
        asked.append(list(labels))
        if fail_on in labels:
            raise ConnectionError(f"board lost while timing {fail_on}")
        return {k: {"latency_p50_ms": 1.0, WINDOW_P50: [1.0]} for k in ["baseline", *labels]}

    first = latency_cache.time_cached(archs, runs_as, lambda ls: measure(ls, "b"), cache, chunk=1, failure=(ConnectionError,))
    assert first.error == "board lost while timing b" and first.missing == ["b", "c"] and set(first.stats) == {"baseline", "a"}
    asked.clear()
    second = latency_cache.time_cached(archs, runs_as, measure, cache, chunk=1, failure=(ConnectionError,))
    assert asked == [["b"], ["c"]] and second.cached == {"a"} and second.error is None and set(second.stats) == {"baseline", "a", "b", "c"}


def test_labels_of_one_architecture_are_timed_once_and_an_untimeable_one_is_missing(tmp_path):
    """``caenet compare --boards``: WP and WC are LeNet's architecture (dense latency does not
    depend on the weights' values), so one visit times both; a label ``measure`` cannot time
    (an export that failed) is missing, and nothing is cached for it."""
    cache, runs_as = LatencyCache(tmp_path / "latency"), {"board": {"cpu": "test"}}
    archs = {"wp": ["lenet", {}], "wc": ["lenet", {}], "int8": ["int8-torchscript", "stage-1"]}
    asked = []

    def measure(labels):
        asked.append(list(labels))
        return {k: {"latency_p50_ms": 1.0, WINDOW_P50: [1.0]} for k in ["baseline", *labels] if k != "int8"}

    timed = latency_cache.time_cached(archs, runs_as, measure, cache, chunk=1, failure=(ConnectionError,))
    assert asked == [["wp"], ["int8"]] and timed.stats["wc"] is timed.stats["wp"] and timed.missing == ["int8"]
    assert len(list((tmp_path / "latency").glob("*.json"))) == 1

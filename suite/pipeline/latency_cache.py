"""Measured latencies, kept: dense batch-1 latency depends on the architecture, not on the
weights' values (pruned zeros are still multiplied), so an architecture is timed once per
machine and reused by later sweeps and re-runs.

An entry is keyed by the architecture (registry name and keywords), how it runs (format,
threads, BatchNorm folding), the timing protocol and the machine's fingerprint (CPU, kernel,
Python and runtime versions): a different machine, or the same one after an upgrade, misses
and measures again. Each entry keeps the baseline's windows that were timed alongside it, so a
speed-up from the cache is still a paired one (``suite.timing.speedup``).

Files: ``<cache>/<dataset>/latency/<key>.json``, written whole by rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from suite.metrics import time_models
from suite.timing import WINDOW_P50, Protocol, speedup

FOLDER = "latency"


def cpu_model() -> str:
    """The CPU's name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def fingerprint() -> dict:
    """What this machine's latencies depend on, besides the model."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "machine": platform.machine(), "kernel": platform.release(),
            "python": platform.python_version(), "torch": torch.__version__}


def entry_key(architecture: list, runs_as: dict) -> str:
    """The cache key of ``architecture`` ([registry name, kwargs]) timed as ``runs_as`` says
    (format, threads, protocol, fingerprint)."""
    blob = json.dumps({"architecture": architecture, "runs_as": runs_as}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class LatencyCache:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def get(self, key: str) -> dict | None:
        path = self.folder / f"{key}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):  # missing, or cut off: measure again
            return None

    def put(self, key: str, entry: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({**entry, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        tmp.replace(self.folder / f"{key}.json")


@dataclass
class Timed:
    """What ``time_cached`` found or measured on one machine or board."""

    stats: dict  # label -> the protocol's statistics (suite.timing.summarize), the baseline's too
    paired: dict  # label -> the baseline's statistics from the windows that alternated with it
    cached: set  # the labels read from the cache, not timed now
    error: str | None = None  # why measuring stopped; what was measured before it is kept
    missing: list = field(default_factory=list)  # the labels left unmeasured by that error

    def speedup(self, label: str) -> tuple[float, float, float]:
        """``label``'s speed-up over the baseline from the windows that alternated with it, with
        its 95% interval (``suite.timing.speedup``)."""
        return speedup(self.paired[label][WINDOW_P50], self.stats[label][WINDOW_P50])


def time_cached(architectures: dict[str, list], runs_as: dict, measure: Callable[[list[str]], dict],
                cache: LatencyCache | None, baseline: str = "baseline", chunk: int = 0,
                failure: tuple[type[Exception], ...] = ()) -> Timed:
    """Every label of ``architectures`` (label -> [registry name, kwargs]) timed once per
    ``runs_as`` (format, threads, protocol, the machine's or board's fingerprint): those found
    in ``cache`` are not timed again, and labels of one architecture are timed once;
    ``measure(labels)`` times the others beside the baseline (it returns label -> stats for the
    baseline and those of ``labels`` it could time), ``chunk`` at a time (0: all at once), and
    each is kept as soon as it is measured. An exception of a ``failure`` type stops measuring
    and is returned as ``error``, with the labels it left ``missing``."""
    keys = {label: entry_key(arch, runs_as) for label, arch in architectures.items()}
    found = {label: entry for label, k in keys.items() if cache is not None and (entry := cache.get(k))}
    first = {}  # key -> the one label measured for it (labels of one architecture share its value)
    for label, k in keys.items():
        first.setdefault(k, label)
    todo = [label for label in keys if label not in found and first[keys[label]] == label]
    timed = Timed({}, {}, set(found))
    if todo:
        groups = [todo[i : i + chunk] for i in range(0, len(todo), chunk)] if chunk else [todo]
    else:  # nothing to time: the baseline alone, unless a cached entry carries it
        groups = [] if found else [[]]
    for done, group in enumerate(groups):
        try:
            got = measure(group)
        except failure as exc:
            timed.error = str(exc)
            timed.missing = [label for g in groups[done:] for label in g]
            break
        if baseline in got:
            timed.stats.setdefault(baseline, got[baseline])
        for label in group:
            if label not in got:  # ``measure`` could not time it (e.g. no export for that format): no value, none cached
                timed.missing.append(label)
                continue
            timed.stats[label], timed.paired[label] = got[label], got[baseline]
            if cache is not None:
                cache.put(keys[label], {"architecture": architectures[label], "runs_as": runs_as, "stats": got[label],
                                        "baseline": got[baseline]})
    for label, entry in found.items():
        timed.stats[label], timed.paired[label] = entry["stats"], entry["baseline"]
    for label, k in keys.items():  # the same architecture under another label: its twin's value, timed once
        twin = first[k]
        if label not in timed.stats and label not in found and twin in timed.stats:
            timed.stats[label], timed.paired[label] = timed.stats[twin], timed.paired[twin]
        elif twin != label and twin in timed.missing:
            timed.missing.append(label)
    if baseline not in timed.stats and found:  # nothing timed now: the baseline as it was timed beside a cached one
        timed.stats[baseline] = next(iter(found.values()))["baseline"]
    return timed


def time_here(models: dict, architectures: dict[str, list], example: torch.Tensor, latency,
              cache: LatencyCache | None, baseline: str = "baseline") -> Timed:
    """``time_cached`` on this machine: ``models`` (label -> model) timed in one process as
    ``evaluate.latency`` (a LatencyConfig) says."""
    runs_as = {"format": "torch", "threads": latency.threads, "fold_batchnorm": latency.fold_batchnorm,
               "protocol": Protocol.of(latency).to_dict(), "machine": fingerprint()}
    return time_cached(architectures, runs_as,
                       lambda labels: time_models({baseline: models[baseline], **{k: models[k] for k in labels}},
                                                  example, latency), cache, baseline)

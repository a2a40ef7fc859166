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
from pathlib import Path

import torch

from suite.metrics import time_models
from suite.timing import Protocol

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


def time_cached(models: dict, architectures: dict[str, list], example: torch.Tensor, latency,
                cache: LatencyCache | None, baseline: str = "baseline") -> tuple[dict, dict, set]:
    """``time_models`` of ``models`` (label -> model; ``architectures``: label -> [registry name,
    kwargs] for every label but ``baseline``), each architecture timed once per machine: those
    found in ``cache`` are not timed again, the others are timed beside the baseline and kept.

    Returns (label -> stats, label -> the baseline's stats timed beside it, the labels that came
    from the cache)."""
    runs_as = {"format": "torch", "threads": latency.threads, "fold_batchnorm": latency.fold_batchnorm,
               "protocol": Protocol.of(latency).to_dict(), "machine": fingerprint()}
    keys = {label: entry_key(architectures[label], runs_as) for label in models if label != baseline}
    found = {label: entry for label, k in keys.items() if cache is not None and (entry := cache.get(k))}
    missing = [label for label in keys if label not in found]
    stats, paired = {}, {}
    if missing or not found:
        timed = time_models({baseline: models[baseline], **{label: models[label] for label in missing}}, example, latency)
        stats[baseline] = timed[baseline]
        for label in missing:
            stats[label], paired[label] = timed[label], timed[baseline]
            if cache is not None:
                cache.put(keys[label], {"architecture": architectures[label], "runs_as": runs_as, "stats": timed[label],
                                        "baseline": timed[baseline]})
    for label, entry in found.items():
        stats[label], paired[label] = entry["stats"], entry["baseline"]
    if baseline not in stats:  # nothing timed now: the baseline as it was timed beside a cached one
        stats[baseline] = next(iter(found.values()))["baseline"]
    return stats, paired, set(found)

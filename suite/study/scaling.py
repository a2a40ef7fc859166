"""The timing view of a study with ``timing: fresh``: scaling experiments as studies.

Every cell trained all its stages itself (``run.fresh_cells``), so each stage's wall time is
the cell's own. Per cell: each stage's seconds, the trainings' images/s, the resources a
training held (workers x CPUs or GPUs per worker) and the cluster's size. Per variant: the
mean wall time, its speed-up over the reference variant and the parallel efficiency (the
speed-up divided by the ratio of resources held; 1.0 is perfect scaling). Per run: cells per
hour, kept in a history beside the study's folder with the cluster's node count, so that
running one study on clusters of 1, 2, 4, ... nodes draws cells per hour against nodes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import ray

from suite.plots import save, subplots
from suite.study.table import mean_std

TRAININGS = ("baseline", "autoencoder", "caenet")  # the stages whose images/s the table shows


def cluster_size() -> dict:
    """Nodes, CPUs and GPUs of the running Ray cluster (empty when Ray is not up)."""
    if not ray.is_initialized():
        return {}
    total = ray.cluster_resources()
    return {"nodes": sum(1 for n in ray.nodes() if n.get("Alive")), "cpus": float(total.get("CPU", 0)),
            "gpus": float(total.get("GPU", 0))}


def cell_timing(runtime, results: dict, cluster: dict) -> dict:
    """One cell's timing columns from its stage results (``StageRunner.results``)."""
    ran = {name: r.metrics["stage_seconds"] for name, r in results.items() if not r.cached and "stage_seconds" in r.metrics}
    gpus = runtime.use_gpu != "no" and cluster.get("gpus", 0) > 0
    return {"stage_seconds": ran, "wall_s": sum(ran.values()),
            "images_per_second": {name: results[name].metrics["images_per_second"] for name in TRAININGS
                                  if name in results and "images_per_second" in results[name].metrics},
            "workers": runtime.workers, "cpus_per_training": runtime.workers * runtime.cpus_per_worker,
            "gpus_per_training": runtime.workers * runtime.gpus_per_worker if gpus else 0.0,
            "cluster_nodes": cluster.get("nodes"), "cluster_cpus": cluster.get("cpus"), "cluster_gpus": cluster.get("gpus")}


def aggregate(study, rows: list[dict], cluster: dict, train_seconds: float) -> dict:
    """Per variant: wall time (mean ± std over seeds), each stage's mean seconds and the
    trainings' images/s, the resources held, speed-up and parallel efficiency against the
    reference variant; and the run's cells per hour on its cluster."""
    variants = []
    for variant in study.variants:
        done = [r for r in rows if r["variant"] == variant.name and "wall_s" in r]
        if not done:
            variants.append({"name": variant.name, "wall_s_mean": None})
            continue
        wall, wall_std = mean_std([r["wall_s"] for r in done])
        stages = list(dict.fromkeys(s for r in done for s in r["stage_seconds"]))  # in the order they ran
        first = done[0]
        variants.append({
            "name": variant.name, "wall_s_mean": wall, "wall_s_std": wall_std, "seeds": len(done),
            "stage_seconds": {s: mean_std([r["stage_seconds"].get(s) for r in done])[0] for s in stages},
            "images_per_second": {s: mean_std([r["images_per_second"].get(s) for r in done])[0]
                                  for s in TRAININGS if any(s in r["images_per_second"] for r in done)},
            "workers": first["workers"], "cpus_per_training": first["cpus_per_training"],
            "gpus_per_training": first["gpus_per_training"], "units": first["gpus_per_training"] or first["cpus_per_training"]})
    reference = next((v for v in variants if v["name"] == study.reference and v["wall_s_mean"]), None)
    for v in variants:
        if reference and v["wall_s_mean"]:
            v["speedup"] = reference["wall_s_mean"] / v["wall_s_mean"]
            v["efficiency"] = v["speedup"] / (v["units"] / reference["units"])
    cells = sum(1 for r in rows if "wall_s" in r)
    return {"study": study.name, "reference": study.reference, "variants": variants, "cluster": cluster, "cells": cells,
            "train_seconds": train_seconds, "cells_per_hour": 3600 * cells / train_seconds if train_seconds > 0 else None}


def markdown(timing: dict) -> str:
    """The timing table, one row per variant, and the run's cells per hour."""
    stages = [s for s in TRAININGS if any(s in v.get("stage_seconds", {}) for v in timing["variants"])]
    head = ["variant", "per training", "wall s", *(f"{s} s" for s in stages), *(f"{s} img/s" for s in stages),
            "speed-up", "efficiency"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in timing["variants"]:
        if v["wall_s_mean"] is None:
            lines.append("| " + " | ".join([v["name"], *["n/a"] * (len(head) - 1)]) + " |")
            continue
        held = f"{v['workers']} worker(s): " + (f"{v['gpus_per_training']:g} GPU" if v["gpus_per_training"] else
                                                 f"{v['cpus_per_training']:g} CPU")
        wall = f"{v['wall_s_mean']:.1f}" + (f" ± {v['wall_s_std']:.1f}" if v["wall_s_std"] is not None else "")
        cells = [v["name"], held, wall]
        cells += [f"{v['stage_seconds'][s]:.1f}" if v["stage_seconds"].get(s) is not None else "-" for s in stages]
        cells += [f"{v['images_per_second'][s]:.0f}" if v["images_per_second"].get(s) is not None else "-" for s in stages]
        cells += [f"{v['speedup']:.2f}x" if "speedup" in v else "-", f"{v['efficiency']:.2f}" if "efficiency" in v else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    c = timing["cluster"]
    lines += ["", f"Timing: every cell trained all its stages in a folder of its own (timing: fresh). Wall s: the sum of "
              f"the cell's stage times (mean ± std over seeds); speed-up: {timing['reference']}'s wall time over the "
              "variant's; efficiency: the speed-up over the ratio of resources a training held (1.00 = perfect scaling). "
              f"{timing['cells']} cells in {timing['train_seconds']:.0f} s of training: "
              f"{timing['cells_per_hour'] or 0:.1f} cells per hour on {c.get('nodes', '?')} node(s) "
              f"({c.get('cpus', 0):g} CPUs, {c.get('gpus', 0):g} GPUs)."]
    return "\n".join(lines)


def append_history(timing: dict, path: Path) -> list[dict]:
    """Add this run's cells per hour and cluster size to the study's history; return it all."""
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "study": timing["study"], "nodes": timing["cluster"].get("nodes"),
             "cpus": timing["cluster"].get("cpus"), "gpus": timing["cluster"].get("gpus"), "cells": timing["cells"],
             "train_seconds": timing["train_seconds"], "cells_per_hour": timing["cells_per_hour"]}
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
    timing["history"] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return timing["history"]


def plot(timing: dict, path: Path) -> None:
    """Wall time per variant (with its std), speed-up and efficiency against the variants, and
    cells per hour against the cluster's nodes over every run in the history."""
    variants = [v for v in timing["variants"] if v["wall_s_mean"] is not None]
    fig, axes = subplots(1, 3, figsize=(13, 3.8), squeeze=False)
    wall, scale, nodes = axes[0]
    x = np.arange(len(variants))
    names = [v["name"] for v in variants]
    wall.bar(x, [v["wall_s_mean"] for v in variants], yerr=[v["wall_s_std"] or 0 for v in variants], capsize=3)
    wall.set_xticks(x, names, rotation=20, fontsize=8)
    wall.set_ylabel("wall time per cell (s)")
    scale.plot(x, [v.get("speedup", np.nan) for v in variants], "o-", label="speed-up")
    scale.plot(x, [v.get("efficiency", np.nan) for v in variants], "s--", label="parallel efficiency")
    ref = next((v for v in variants if v["name"] == timing["reference"]), None)
    if ref and any(v["units"] != ref["units"] for v in variants):
        scale.plot(x, [v["units"] / ref["units"] for v in variants], ":", c="grey", label="perfect scaling")
    scale.set_xticks(x, names, rotation=20, fontsize=8)
    scale.set_ylabel(f"vs {timing['reference']}")
    scale.legend(fontsize=7)
    history = [h for h in timing.get("history", []) if h.get("nodes") and h.get("cells_per_hour")]
    nodes.plot([h["nodes"] for h in history], [h["cells_per_hour"] for h in history], "o")
    nodes.set_xlabel("nodes in the cluster")
    nodes.set_ylabel("cells per hour")
    nodes.set_title(f"{len(history)} run(s) of this study", fontsize=9)
    for ax in (wall, scale, nodes):
        ax.grid(alpha=0.3)
    fig.suptitle(f"study '{timing['study']}': timing", fontsize=10)
    fig.tight_layout()
    save(fig, path)

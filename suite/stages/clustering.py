"""Stage 4: split each class into sub-clusters of similar images.

The algorithms (``clustering.method``: FAISS k-means with the elbow method, cosine, DBSCAN,
HDBSCAN) are in ``suite.clusterers``; classes are clustered in parallel as Ray tasks when a
Ray session is up (``suite.distributed.per_class``). The elbow curves are recorded and
plotted.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from suite.distributed.per_class import cluster_all_classes
from suite.pipeline.context import Context
from suite.pipeline.stage import StageResult
from suite.plots import save, subplots

VERSION = 1


def plot_elbows(curves: dict, class_names) -> "object":
    fig, ax = subplots(figsize=(7, 4.5))
    for c, rec in curves.items():
        if len(rec.get("ks", [])) < 2:
            continue
        y = np.asarray(rec["inertia"]) / max(rec["inertia"][0], 1e-12)
        line, = ax.plot(rec["ks"], y, marker="o", ms=3, lw=1, label=str(class_names[int(c)])[:12])
        ax.plot([rec["k"]], [y[rec["ks"].index(rec["k"])]], marker="*", ms=11, color=line.get_color())
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("k (clusters in the class)")
    ax.set_ylabel("inertia / inertia at k_min")
    ax.set_title("Elbow curves per class (star: chosen k)")
    if ax.lines:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def run(ctx: Context, features: StageResult, entropy: StageResult) -> StageResult:
    ccfg = ctx.cfg.clustering
    params = {"data": ctx.data_params(), **ccfg.model_dump(exclude={"backend"})}  # where it runs does not change results

    def body(work, run_id):
        feats = np.load(features.file("features.npy"))
        labels = pq.read_table(entropy.file("entropy.parquet"), columns=["label"])["label"].to_numpy()
        clusters, curves = cluster_all_classes(feats, labels, ccfg, ctx.cfg.data.seed, ccfg.backend, ctx.cfg.runtime.bars())
        pq.write_table(pa.table({"index": np.arange(len(labels)), "label": labels, "cluster": clusters}), work / "clusters.parquet")
        (work / "elbow.json").write_text(json.dumps(curves, indent=1))
        fig = plot_elbows(curves, ctx.info.classes)
        save(fig, work / "elbow.png")
        ks = [rec["k"] for rec in curves.values()]
        return {"k_mean": float(np.mean(ks)), "k_min": int(min(ks)), "k_max": int(max(ks)), "clusters_total": int(sum(ks)),
                **{f"k_class_{c}": rec["k"] for c, rec in curves.items()}}

    return ctx.runner.run("clustering", VERSION, params, [features, entropy], body,
                          artifacts=lambda w: [w / "clusters.parquet", w / "elbow.json", w / "elbow.png"])

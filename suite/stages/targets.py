"""Stage 5: every image's target, the lowest-entropy training image of its class-cluster.

Also the "no clustering" targets (the easiest image of the whole class) for the paper's
reconstruction-loss comparison. Targets are drawn from the ``train`` split only, so that the
held-out ``val`` images measure conversion, never copying of themselves. The result is the
per-image table of the run: index, label, split, entropy, cluster, target_index.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from suite.pipeline.context import Context
from suite.pipeline.stage import StageResult

VERSION = 1


def easiest_per_group(groups: np.ndarray, entropy: np.ndarray, candidate: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """For each image, the index of the lowest-entropy candidate sharing its group.

    ``fallback[i]`` is used when image i's group has no candidate.
    """
    target = fallback.copy()
    order = np.lexsort((entropy, ~candidate, groups))  # by group, candidates first, then entropy
    first = np.ones(len(order), dtype=bool)
    first[1:] = groups[order][1:] != groups[order][:-1]
    best = {int(groups[i]): int(i) for i in order[first] if candidate[i]}
    for g, i in best.items():
        target[groups == g] = i
    return target


def assign(labels: np.ndarray, clusters: np.ndarray, entropy: np.ndarray, is_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(clustered targets, one-per-class targets) as image indices."""
    n = len(labels)
    per_class = easiest_per_group(labels, entropy, is_train, np.arange(n))
    group = labels.astype(np.int64) * (int(clusters.max()) + 1 if n else 1) + clusters
    return easiest_per_group(group, entropy, is_train, per_class), per_class


def random_of_class(labels: np.ndarray, is_train: np.ndarray, seed: int) -> np.ndarray:
    """For each image, a random training image of its class (the "random target" ablation)."""
    rng = np.random.default_rng(seed)
    target = np.arange(len(labels))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        pool = members[is_train[members]]
        if len(pool):
            target[members] = rng.choice(pool, size=len(members))
    return target


def for_mode(table: pa.Table, mode: str, seed: int) -> np.ndarray:
    """The CAE's target index per image for ``autoencoder.targets`` = ``mode``. ``cluster`` reads
    this stage's ``images.parquet``; the others need no clusters and are computed from the label,
    split and entropy columns, which the entropy stage's table has too (so that a CAE on them
    depends on the entropy stage alone)."""
    if mode == "cluster":
        return table["target_index"].to_numpy()
    labels, split = table["label"].to_numpy(), table["split"].to_numpy(zero_copy_only=False)
    if mode == "class":
        return easiest_per_group(labels, table["entropy"].to_numpy(), split == "train", np.arange(len(labels)))
    if mode == "self":
        return np.arange(len(labels))
    if mode == "random":
        return random_of_class(labels, split == "train", seed)
    raise ValueError(f"unknown target mode {mode!r}")


def run(ctx: Context, entropy: StageResult, clustering: StageResult) -> StageResult:
    params = {"data": ctx.data_params()}

    def body(work, run_id):
        ent = pq.read_table(entropy.file("entropy.parquet"))
        clu = pq.read_table(clustering.file("clusters.parquet"))
        labels, e = ent["label"].to_numpy(), ent["entropy"].to_numpy()
        split = ent["split"].to_numpy(zero_copy_only=False)
        clusters = clu["cluster"].to_numpy()
        targets, per_class = assign(labels, clusters, e, split == "train")
        np.save(work / "targets.npy", targets)
        np.save(work / "targets_unclustered.npy", per_class)
        table = ent.append_column("cluster", pa.array(clusters)).append_column("target_index", pa.array(targets))
        table = table.append_column("target_index_unclustered", pa.array(per_class))
        pq.write_table(table, work / "images.parquet")
        return {"distinct_targets": int(len(np.unique(targets))), "distinct_targets_unclustered": int(len(np.unique(per_class))),
                "self_targets": int((targets == np.arange(len(targets))).sum())}

    return ctx.runner.run("targets", VERSION, params, [entropy, clustering], body, artifacts=lambda w: [w / "images.parquet"])

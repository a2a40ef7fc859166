"""Stage 2: the softmax entropy of every training image on the baseline (low = easy).

Also keeps the baseline's logits, the soft targets of CAE-Net's knowledge transfer, so
the teacher runs once over the data instead of once per student epoch.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from suite.data import load_split, split_train_val
from suite.pipeline.context import Context
from suite.pipeline.stage import StageResult
from suite.stages import baseline as baseline_stage
from suite.stages.trained import batched, load_model, softmax_entropy

VERSION = 1


def run(ctx: Context, baseline: StageResult) -> StageResult:
    params = {"data": ctx.data_params()}

    def body(work, run_id):
        ds = load_split(ctx.cfg.data, "train")
        name, kwargs = baseline_stage.model_spec(ctx)
        model = load_model(name, kwargs, baseline.file("model.pt"))
        logits = batched(model, ds.images, progress=ctx.cfg.runtime.bars(), desc="entropy")
        entropy = softmax_entropy(logits)
        val = split_train_val(len(ds), ctx.cfg.data.val_fraction, ctx.cfg.data.seed)
        np.save(work / "logits.npy", logits.numpy())
        table = pa.table({
            "index": np.arange(len(ds), dtype=np.int64),
            "label": ds.labels.numpy(),
            "split": np.where(val, "val", "train"),
            "entropy": entropy,
            "baseline_pred": logits.argmax(1).numpy(),
        })
        pq.write_table(table, work / "entropy.parquet")
        correct = logits.argmax(1).numpy() == ds.labels.numpy()
        return {"images": len(ds), "entropy_mean": float(entropy.mean()), "entropy_median": float(np.median(entropy)),
                "train_acc": float(correct[~val].mean()), "val_acc": float(correct[val].mean()) if val.any() else float("nan")}

    return ctx.runner.run("entropy", VERSION, params, [baseline], body, artifacts=lambda w: [w / "entropy.parquet"])

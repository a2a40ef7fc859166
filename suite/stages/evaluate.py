"""Stage 8: evaluate every trained classifier on the test set.

Test accuracy, (non-zero) parameters, serialized size and batch-1 latency on
``evaluate.latency.threads`` CPU threads (warm-up, then p50/p90/p99), all models timed in
alternating rounds after the Ray session has closed, so background load hits them alike.
Each model is timed twice, in eager PyTorch and as its ONNX export on onnxruntime (the boards'
runtime), and each speed-up pairs two models of one runtime at fp32: eager PyTorch's per-op
overhead hides a small network's architecture (the MNIST CAE-Net: 1.21x in PyTorch, 1.47x
on onnxruntime in Table II). The key includes the host and CPU model, so moving to another
machine re-measures latency.
"""

from __future__ import annotations

import json
import platform

from tqdm import tqdm

from suite.data import load_split
from suite.metrics import ONNXRUNTIME, SPEEDUP, batch1_latency, describe, fold_batchnorm, onnxruntime_latency
from suite.timing import HIGH, LOW, WINDOW_P50, Protocol, speedup
from suite.pipeline.context import Context
from suite.pipeline.latency_cache import cpu_model
from suite.pipeline.stage import StageResult
from suite.stages.trained import Trained

VERSION = 4  # 3: the timing protocol of suite/timing.py (intervals, paired speed-ups); 4: onnxruntime beside PyTorch


def run(ctx: Context, models: dict[str, Trained]) -> StageResult:
    lcfg = ctx.cfg.evaluate.latency
    params = {"data": ctx.data_params(), "latency": lcfg.model_dump(), "host": platform.node(), "cpu": cpu_model(),
              "models": {k: [m.model, m.kwargs] for k, m in models.items()}}

    def body(work, run_id):
        test = load_split(ctx.cfg.data, "test")
        results, loaded = {}, {}
        for label, trained in tqdm(models.items(), desc="evaluate", disable=not ctx.cfg.runtime.bars(), leave=False):
            loaded[label] = trained.load()
            results[label] = {"model": trained.model, **describe(loaded[label], test.images, test.labels, ctx.cfg.evaluate.batch_size)}
        example, protocol = test.floats(slice(0, 1)), Protocol.of(lcfg)
        timed = {k: fold_batchnorm(m) for k, m in loaded.items()} if lcfg.fold_batchnorm else loaded  # once, for both runtimes
        for prefix, latency in (("", batch1_latency(timed, example, lcfg.threads, protocol)),
                                (ONNXRUNTIME, onnxruntime_latency(timed, example, lcfg.threads, protocol))):
            for label, stats in latency.items():
                results[label].update({prefix + k: v for k, v in stats.items()})
                if "baseline" in latency:  # paired windows: each model's right after the baseline's
                    ratio = speedup(latency["baseline"][WINDOW_P50], stats[WINDOW_P50])
                    results[label].update(zip((prefix + SPEEDUP, prefix + SPEEDUP + LOW, prefix + SPEEDUP + HIGH), ratio))
        (work / "evaluation.json").write_text(json.dumps(results, indent=2))
        return {f"{label}.{k}": v for label, row in results.items() for k, v in row.items() if k != "model"}

    return ctx.runner.run("evaluate", VERSION, params, [m.stage for m in models.values()], body,
                          artifacts=lambda w: [w / "evaluation.json"])

"""The competitors of Tables I / II, one cached stage each (``caenet compare``).

Every ``compare.methods`` entry is a method of ``suite/methods/`` (one module per ``kind``;
``caenet methods`` lists them). This stage gives each the same frame: the model its ``of``
names, the baseline's logits where it learns from them, a cache key made of the data
settings and the method's ``key``, and MLflow logging. Each stage leaves ``spec.json`` (how
to load its model) beside the weights, and the size a board would download where that
differs from a dense ``torch.save`` (sparse, packed, int8).
"""

from __future__ import annotations

import json
from pathlib import Path

from suite.config import ConfigError
from suite.methods.base import MethodParams
from suite.methods.job import MethodJob
from suite.pipeline.context import Context
from suite.pipeline.stage import StageResult
from suite.stages.trained import Trained, log_model

VERSION = 1


def stage_name(method: MethodParams) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in method.name.lower()).strip("-")
    return f"cmp-{slug}"


def run(ctx: Context, method: MethodParams, done: dict[str, Trained], entropy: StageResult) -> Trained:
    """Train (or reuse) ``method``; ``done`` holds the rows before it (baseline, caenet, earlier methods)."""
    source = None if method.fresh else done.get(method.of)
    if source is not None and source.model is None:
        raise ConfigError(f"compare.methods: {method.name!r} compresses {method.of!r}, an int8 TorchScript model; name a float model in 'of'")
    params = {"data": ctx.data_params(), **method.key(ctx.cfg)}
    inputs = [s for s in (source.stage if source else None, entropy if method.teacher else None) if s]
    name = stage_name(method)

    def body(work: Path, run_id):
        epochs_key = (f"compare.methods['{method.name}'].train.epochs" if method.train else
                      "compare.train.epochs" if method.fresh else "compare.finetune.epochs")
        job = dict(name=name, train=method.train_config(ctx.cfg.compare).model_dump(), epochs_key=epochs_key,
                   **ctx.job_defaults(work, run_id))
        metrics = method.run(MethodJob(ctx, method, source, done, entropy, work, job))
        spec = json.loads((work / "spec.json").read_text())
        log_model(ctx, run_id, work, spec["model"], spec["kwargs"])
        return metrics

    result = ctx.runner.run(name, VERSION, params, inputs, body,
                            artifacts=lambda w: [f for f in (w / "spec.json", *(w / a for a in method.artifacts)) if f.exists()])
    return Trained.from_stage(method.name, result)

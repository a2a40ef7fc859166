"""Stage 1: train the baseline (LeNet for 28x28, AlexNet for CIFAR) through Ray Train."""

from __future__ import annotations

from suite.distributed.launch import fit
from suite.training.job import TrainJob
from suite.models import geometry
from suite.pipeline.context import Context
from suite.pipeline.stage import StageResult
from suite.stages.trained import log_model

VERSION = 1


def model_spec(ctx: Context) -> tuple[str, dict]:
    return ctx.cfg.baseline.model, geometry(ctx.info)


def run(ctx: Context) -> StageResult:
    name, kwargs = model_spec(ctx)
    params = {"data": ctx.data_params(), "model": name, "model_kwargs": kwargs, "train": ctx.cfg.baseline.train.model_dump()}

    def body(work, run_id):
        job = TrainJob(name="baseline", model=name, model_kwargs=kwargs, train=ctx.cfg.baseline.train.model_dump(),
                       epochs_key="baseline.train.epochs",
                       objective="classify", **ctx.job_defaults(work, run_id))
        metrics = fit(job, ctx.cfg.runtime, work / "model.pt")
        log_model(ctx, run_id, work, name, kwargs)
        return metrics

    return ctx.runner.run("baseline", VERSION, params, [], body, artifacts=lambda w: [w / "model.pt"])

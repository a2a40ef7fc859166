"""Stage 6: train the converting autoencoder, image -> its target, with MSE (Ray Train).

``variant="clustered"`` uses the class-cluster targets; ``"unclustered"`` one target per
class, for the paper's comparison of reconstruction losses (0.012 -> 0.0065 on CIFAR-10).
The loss reported is the MSE on the held-out ``val`` images against their own targets.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from suite.data import load_split
from suite.distributed.training import TrainJob, fit
from suite.models import geometry
from suite.pipeline.context import Context
from suite.pipeline.stage import StageResult
from suite.report.plots import conversion_grid, save
from suite.stages.common import load_model, log_model

VERSION = 1


def model_spec(ctx: Context) -> tuple[str, dict]:
    g = geometry(ctx.info)
    return ctx.cfg.autoencoder.model, {"in_channels": g["in_channels"], "image_size": g["image_size"], "width": ctx.cfg.autoencoder.width}


def run(ctx: Context, targets: StageResult, variant: str = "clustered") -> StageResult:
    name, kwargs = model_spec(ctx)
    acfg = ctx.cfg.autoencoder
    target_file = "targets.npy" if variant == "clustered" else "targets_unclustered.npy"
    stage_name = "autoencoder" if variant == "clustered" else "autoencoder_unclustered"
    params = {"data": ctx.data_params(), "model": name, "model_kwargs": kwargs, "variant": variant, "train": acfg.train.model_dump()}
    if acfg.prune.weight_ratio > 0:  # only then: unpruned runs keep their cache keys
        params["prune"] = acfg.prune.model_dump()

    def body(work, run_id):
        job = TrainJob(name=stage_name, model=name, model_kwargs=kwargs, train=acfg.train.model_dump(), objective="reconstruct",
                       targets_path=str(targets.file(target_file)), prune={"ratio": acfg.prune.weight_ratio},
                       **ctx.job_defaults(work, run_id))
        metrics = fit(job, ctx.cfg.runtime, work / "model.pt")
        metrics["reconstruction_mse"] = metrics.pop("val_loss", float("nan"))
        log_model(ctx, run_id, work, name, kwargs)
        table = pq.read_table(targets.file("images.parquet"))
        ds = load_split(ctx.cfg.data, "train")
        model = load_model(name, kwargs, work / "model.pt").cpu()
        fig = conversion_grid(ds.images, table["label"].to_numpy(), table["entropy"].to_numpy(),
                              np.load(targets.file(target_file)), model, ctx.info.classes)
        save(fig, work / "conversions.png", dpi=100)
        return metrics

    return ctx.runner.run(stage_name, VERSION, params, [targets], body, artifacts=lambda w: [w / "model.pt", w / "conversions.png"])

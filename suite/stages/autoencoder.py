"""Stage 6: train the converting autoencoder, image -> its target, with MSE (Ray Train).

``variant="clustered"`` uses the class-cluster targets; ``"unclustered"`` one target per
class, for the paper's comparison of reconstruction losses (0.012 -> 0.0065 on CIFAR-10);
``"self"`` and ``"random"`` are the ablations of ``autoencoder.targets`` (the image itself,
a random image of its class). The loss reported is the MSE on the held-out ``val`` images
against their own targets.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from suite.data import load_split
from suite.distributed.launch import fit
from suite.training.job import TrainJob
from suite.training.job import PruneWeights
from suite.models import geometry
from suite.pipeline.context import Context
from suite.pipeline.stage import StageResult, changed
from suite.plots import conversion_grid, save
from suite.stages import targets as targets_stage
from suite.stages.trained import load_model, log_model

VERSION = 1

# autoencoder.targets -> the variant in the stage's key ("clustered" / "unclustered" predate the option)
VARIANT_OF_TARGETS = {"cluster": "clustered", "class": "unclustered", "self": "self", "random": "random"}
TARGETS_OF_VARIANT = {v: k for k, v in VARIANT_OF_TARGETS.items()}


def comparison_variant(acfg) -> str | None:
    """The CAE trained beside the run's for the paper's reconstruction comparison (class-cluster
    targets vs one per class): the other of the two, or None (no comparison asked for, or the
    run's targets are an ablation)."""
    if not acfg.compare_unclustered:
        return None
    return {"cluster": "unclustered", "class": "clustered"}.get(acfg.targets)


def model_spec(ctx: Context) -> tuple[str, dict]:
    g = geometry(ctx.info)
    acfg = ctx.cfg.autoencoder
    return acfg.model, {"in_channels": g["in_channels"], "image_size": g["image_size"], "width": acfg.width,
                        **changed(acfg, skips="skips")}


def run(ctx: Context, targets: StageResult, entropy: StageResult, variant: str | None = None) -> StageResult:
    """The run's CAE (``variant`` None: the one ``autoencoder.targets`` names; stage
    ``autoencoder``), or the comparison's (``comparison_variant``; stage ``autoencoder_<variant>``).

    Only class-cluster targets read the clusters: the other kinds come from the entropy stage
    alone, so that their CAE's key does not change with ``clustering.*`` (a sweep over k with
    one target per class would otherwise retrain one CAE per k, and call it an axis)."""
    name, kwargs = model_spec(ctx)
    acfg = ctx.cfg.autoencoder
    main = variant is None
    variant = VARIANT_OF_TARGETS[acfg.targets] if main else variant
    stage_name = "autoencoder" if main else f"autoencoder_{variant}"
    params = {"data": ctx.data_params(), "model": name, "model_kwargs": kwargs, "variant": variant,
              "train": acfg.train.model_dump(), **changed(acfg, prune="prune")}

    mode = TARGETS_OF_VARIANT[variant]
    source = targets if mode == "cluster" else entropy

    def body(work, run_id):
        table = pq.read_table(source.file("images.parquet" if mode == "cluster" else "entropy.parquet"))
        target_index = targets_stage.for_mode(table, mode, ctx.cfg.data.seed)
        np.save(work / "targets.npy", target_index)
        job = TrainJob(name=stage_name, model=name, model_kwargs=kwargs, train=acfg.train.model_dump(), objective="reconstruct", epochs_key="autoencoder.train.epochs",
                       targets_path=str(work / "targets.npy"), hooks=[PruneWeights(acfg.prune.weight_ratio)] if acfg.prune.weight_ratio > 0 else [],
                       **ctx.job_defaults(work, run_id))
        metrics = fit(job, ctx.cfg.runtime, work / "model.pt")
        metrics["reconstruction_mse"] = metrics.pop("val_loss", float("nan"))
        log_model(ctx, run_id, work, name, kwargs)
        ds = load_split(ctx.cfg.data, "train")
        model = load_model(name, kwargs, work / "model.pt").cpu()
        fig = conversion_grid(ds.images, table["label"].to_numpy(), table["entropy"].to_numpy(),
                              target_index, model, ctx.info.classes)
        save(fig, work / "conversions.png", dpi=100)
        return metrics

    return ctx.runner.run(stage_name, VERSION, params, [source], body, artifacts=lambda w: [w / "model.pt", w / "conversions.png"])

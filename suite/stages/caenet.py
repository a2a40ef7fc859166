"""Stage 7: CAE-Net = the CAE's frozen encoder + a thin classifier, trained with knowledge
transfer: the encoder's weights come from the converting autoencoder and the classifier
learns from the baseline's soft targets (Hinton KD) as well as the labels.

The run's CAE-Net takes its encoder as ``caenet.encoder`` says (frozen CAE weights: the
method; fine-tuned; frozen random; from scratch) and its head from ``caenet.head``.

Ablations trained beside it (``caenet.ablations``):
  no_kd        the same CAE-Net (its encoder as ``caenet.encoder`` says), labels only
  no_transfer  the same network from scratch: random encoder trained end to end, labels only
               (the paper's "without transfer learning", 62% -> 82.4% on CIFAR-10)
"""

from __future__ import annotations

from suite.distributed.launch import fit
from suite.training.job import TrainJob
from suite.models import geometry
from suite.pipeline.context import Context
from suite.pipeline.stage import StageResult, changed
from suite.stages.trained import log_model
from suite.training.job import KeepZeros

VERSION = 1

# caenet.encoder -> (init the encoder from the CAE, freeze it)
ENCODER = {"frozen": (True, True), "finetune": (True, False), "random": (False, True), "scratch": (False, False)}

VARIANTS = {
    # name: (init encoder from the CAE, freeze it, knowledge distillation); "kd" and "no_kd" follow caenet.encoder
    "kd": (True, True, True),
    "no_kd": (True, True, False),
    "no_transfer": (False, False, False),
}


def model_spec(ctx: Context) -> tuple[str, dict]:
    ccfg = ctx.cfg.caenet
    head = changed(ccfg, head="head")  # the dense head takes no filters
    return "caenet", {**geometry(ctx.info), "width": ctx.cfg.autoencoder.width, "hidden": ccfg.classifier_hidden,
                      **head, **({"filters": ccfg.head_filters} if head else {})}


def stage_name(variant: str) -> str:
    return "caenet" if variant == "kd" else f"caenet_{variant}"


def run(ctx: Context, autoencoder: StageResult | None, entropy: StageResult | None, variant: str = "kd") -> StageResult:
    """``autoencoder`` and ``entropy`` may be None for the variants that do not use them (no_transfer)."""
    init, freeze, kd = VARIANTS[variant]
    name, kwargs = model_spec(ctx)
    ccfg = ctx.cfg.caenet
    params = {"data": ctx.data_params(), "model_kwargs": kwargs, "variant": variant, "train": ccfg.train.model_dump(),
              "kd": ccfg.kd.model_dump() if kd else None}
    lr_scale, hooks = {}, []
    encoder = changed(ccfg, encoder="encoder") if variant != "no_transfer" else {}  # from scratch: no encoder to choose
    if encoder:
        init, freeze = ENCODER[ccfg.encoder]
        params.update(encoder)
        if ccfg.encoder == "finetune":  # the only encoder trained at a scaled rate
            lr_scale = {"encoder": ccfg.finetune_lr_scale}
            params["encoder_lr_scale"] = ccfg.finetune_lr_scale
            if ctx.cfg.autoencoder.prune.weight_ratio > 0:  # trained on, a pruned encoder keeps its zeros
                hooks = [KeepZeros(("encoder",))]
                params["keep_encoder_zeros"] = True  # in the key only here: every other stage keeps its cache
    inputs = ([autoencoder] if init else []) + ([entropy] if kd else [])

    def body(work, run_id):
        job = TrainJob(
            name=stage_name(variant), model=name, model_kwargs=kwargs, train=ccfg.train.model_dump(),
            objective="kd" if kd else "classify", epochs_key="caenet.train.epochs",
            teacher_logits_path=str(entropy.file("logits.npy")) if kd else None, kd=ccfg.kd.model_dump(),
            init_from={"encoder": str(autoencoder.file("model.pt"))} if init else {},
            freeze=["encoder"] if freeze else [], lr_scale=lr_scale, hooks=hooks, **ctx.job_defaults(work, run_id))
        metrics = fit(job, ctx.cfg.runtime, work / "model.pt", report_to_tune=ctx.tune_stage == stage_name(variant))
        log_model(ctx, run_id, work, name, kwargs)
        return metrics

    return ctx.runner.run(stage_name(variant), VERSION, params, inputs, body, artifacts=lambda w: [w / "model.pt"])

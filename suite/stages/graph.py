"""The pipeline's stage graph: which stage feeds which, and which trainings run side by side.

``train_stages(ctx)`` runs (or finds in the cache) every training stage of CAE-Net: the
baseline, entropy, features, clustering, targets, the CAE(s) and the CAE-Nets. Commands call
it inside a Ray session; ``trained_models(cfg)`` walks the same graph in lookup-only mode, to
find a finished run's models without training anything (``StageMissing`` names what is not
there).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from suite.config import ExperimentConfig
from suite.distributed.ray_runtime import resources
from suite.distributed.launch import use_gpu
from suite.pipeline.context import Context, cache_root
from suite.pipeline.stage import StageResult, StageRunner
from suite.stages import autoencoder, baseline, caenet, clustering, entropy, evaluate, features, targets
from suite.stages.trained import Trained


def train_stages(ctx: Context) -> dict[str, Trained]:
    """Every training stage (cached ones are reused); returns the models to evaluate by label.

    Independent trainings run at the same time when the cluster has room for more than one
    (``concurrent_slots``): the CAE-Net trained from scratch needs nothing but the data and
    starts with the baseline; the one-target-per-class CAE trains beside the clustered one;
    the KD and no-KD CAE-Nets train side by side. With room for one, the order is sequential.
    """
    cfg = ctx.cfg
    variants = ["kd", *cfg.caenet.ablations]
    features.preflight(ctx)  # a feature extractor that cannot load fails now, before any training
    pool = ThreadPoolExecutor(max_workers=concurrent_slots(cfg.runtime), thread_name_prefix="stage")
    try:
        base = pool.submit(baseline.run, ctx)
        scratch = pool.submit(caenet.run, ctx, None, None, "no_transfer") if "no_transfer" in variants else None
        base = base.result()
        ent = entropy.run(ctx, base)
        feats = features.run(ctx, base)
        clus = clustering.run(ctx, feats, ent)
        tgt = targets.run(ctx, ent, clus)
        cae = pool.submit(autoencoder.run, ctx, tgt, ent)
        # the paper's reconstruction comparison: the CAE on the other kind of target
        other = autoencoder.comparison_variant(cfg.autoencoder)
        unclustered = pool.submit(autoencoder.run, ctx, tgt, ent, other) if other else None
        cae = cae.result()
        transfer = {v: pool.submit(caenet.run, ctx, cae, ent, v) for v in variants if v != "no_transfer"}
        results = {v: f.result() for v, f in transfer.items()}
        if scratch is not None:
            results["no_transfer"] = scratch.result()
        if unclustered is not None:
            unclustered.result()
    except KeyboardInterrupt:  # return at once; Ray's shutdown stops the trainings, checkpoints stay
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    except BaseException:  # a stage failed: let trainings already running finish (no lost work)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    models = {"baseline": Trained("baseline", base, *baseline.model_spec(ctx))}
    for variant in variants:
        label = caenet.stage_name(variant)
        models[label] = Trained(label, results[variant], *caenet.model_spec(ctx))
    return models


def concurrent_slots(runtime) -> int:
    """How many trainings fit in what the cluster has free now (1 outside a Ray session).

    Free, not total: inside a sweep trial the trial itself holds some of the CPUs. An
    autoscaling cluster grows later, so this under-counts there; that only costs overlap.
    """
    total = resources()
    if not total:
        return 1
    if use_gpu(runtime):
        return max(1, int(total.get("GPU", 0) // (runtime.workers * runtime.gpus_per_worker)))
    return max(1, int(total.get("CPU", 1) // (runtime.workers * runtime.cpus_per_worker)))


def plan(cfg: ExperimentConfig) -> list[StageResult]:
    """Every stage ``caenet run`` would go through for the effective config ``cfg``, in order,
    with its key and folder; ``cached`` says whether it is finished. Nothing runs or trains."""
    runner = StageRunner(cache_root(cfg), tracker=None, log=lambda _: None, plan=True)
    ctx = Context(cfg, runner, None)
    evaluate.run(ctx, train_stages(ctx))
    return runner.planned


def same_outcome(cfgs: dict[str, ExperimentConfig], stage: str) -> list[list[str]]:
    """Groups (two or more) of the labels of ``cfgs`` whose plans give ``stage`` the same key:
    runs that would train and report exactly the same thing (a sweep axis or a study variant
    that changes nothing). Planning runs nothing (``plan``)."""
    by_key: dict[str, list[str]] = {}
    for label, cfg in cfgs.items():
        keys = {s.name: s.key for s in plan(cfg.effective())}
        by_key.setdefault(keys[stage], []).append(label)
    return [labels for labels in by_key.values() if len(labels) > 1]


def trained_models(cfg: ExperimentConfig) -> dict[str, Trained]:
    """Every model of a finished run of the effective config ``cfg``, by label; nothing is trained."""
    runner = StageRunner(cache_root(cfg), tracker=None, log=lambda _: None, require_cached=True)
    return train_stages(Context(cfg, runner, None))

"""The CAE-Net pipeline, stage by stage, in one Ray session and one MLflow parent run."""

from __future__ import annotations

import json
import time
from pathlib import Path

from suite.config import ExperimentConfig, to_yaml
from suite.data import load_split
from suite.distributed import storage
from suite.distributed.session import ray_session, resources
from suite.pipeline.context import Context
from suite.pipeline.stage import StageRunner
from suite.pipeline.tracking import Tracker
from suite.report import summary as summary_mod
from suite.stages import autoencoder, baseline, caenet, clustering, entropy, evaluate, features, targets


def train_stages(ctx: Context) -> dict:
    """Every training stage (cached ones are reused); returns the models to evaluate:
    label -> (model name, kwargs, stage result holding model.pt).

    Independent trainings run at the same time when the cluster has room for more than one
    (``concurrent_slots``): the CAE-Net trained from scratch needs nothing but the data and
    starts with the baseline; the one-target-per-class CAE trains beside the clustered one;
    the KD and no-KD CAE-Nets train side by side. With room for one, the order is sequential.
    """
    from concurrent.futures import ThreadPoolExecutor

    cfg = ctx.cfg
    variants = ["kd", *cfg.caenet.ablations]
    pool = ThreadPoolExecutor(max_workers=concurrent_slots(cfg.runtime), thread_name_prefix="stage")
    try:
        base = pool.submit(baseline.run, ctx)
        scratch = pool.submit(caenet.run, ctx, None, None, "no_transfer") if "no_transfer" in variants else None
        base = base.result()
        ent = entropy.run(ctx, base)
        feats = features.run(ctx, base)
        clus = clustering.run(ctx, feats, ent)
        tgt = targets.run(ctx, ent, clus)
        cae = pool.submit(autoencoder.run, ctx, tgt, "clustered")
        unclustered = pool.submit(autoencoder.run, ctx, tgt, "unclustered") if cfg.autoencoder.compare_unclustered else None
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
    models = {"baseline": (*baseline.model_spec(ctx), base)}
    for variant in variants:
        models[caenet.stage_name(variant)] = (*caenet.model_spec(ctx), results[variant])
    return models


def concurrent_slots(runtime) -> int:
    """How many trainings fit in what the cluster has free now (1 outside a Ray session).

    Free, not total: inside a sweep trial the trial itself holds some of the CPUs. An
    autoscaling cluster grows later, so this under-counts there; that only costs overlap.
    """
    from suite.distributed.training import use_gpu

    total = resources()
    if not total:
        return 1
    if use_gpu(runtime):
        return max(1, int(total.get("GPU", 0) // (runtime.workers * runtime.gpus_per_worker)))
    return max(1, int(total.get("CPU", 1) // (runtime.workers * runtime.cpus_per_worker)))


def run_pipeline(cfg: ExperimentConfig, log=print, summary_path: str | Path | None = None) -> dict:
    """Run (or reuse) every stage; return the summary (also written as ``summary.json``)."""
    cfg = cfg.effective()
    # Fail fast, before Ray starts, on data that is missing or corrupt.
    for split in ("train", "test"):
        load_split(cfg.data, split)
    cache_root = Path(cfg.runtime.cache_dir).resolve() / cfg.data.dataset
    tracker = Tracker(cfg.runtime)
    parent = tracker.start_parent(cfg.name, cfg.model_dump(mode="json"), {"dataset": cfg.data.dataset, "smoke": str(cfg.smoke)})
    tracker.log_dict(parent, cfg.model_dump(mode="json"), "config.json")
    ctx = Context(cfg, StageRunner(cache_root, tracker, log, storage=storage.configured(cfg.runtime)), tracker)
    log(f"MLflow run {parent} in {tracker.uri}")
    with tracker.closing(parent):
        with ray_session(cfg.runtime, cache_root):
            models = train_stages(ctx)
        ev = evaluate.run(ctx, models)  # after Ray has stopped: its daemons would skew the timings
        stages = {name: r.metrics for name, r in ctx.runner.results.items()}
        summary = summary_mod.build(ev.metrics, stages)
        summary["mlflow_run_id"] = parent
        summary["config"] = cfg.name
        summary["dataset"] = cfg.data.dataset
        out = Path(summary_path) if summary_path else cache_root / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}" / "summary.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2))
        if summary_path is None:  # a run folder of its own: keep the effective config beside
            (out.parent / "config.yaml").write_text(to_yaml(cfg))
        tracker.log_artifact(parent, out)
        tracker.log_metrics(parent, summary)  # nested keys flatten to e.g. caenet.test_acc
        for stage, picture in (("clustering", "elbow.png"), ("autoencoder", "conversions.png")):
            tracker.log_artifact(parent, ctx.runner.results[stage].file(picture), "pictures")
        summary["summary_path"] = str(out)
    return summary

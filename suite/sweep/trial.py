"""One sweep trial: the pipeline's training stages for one point of the search space.

Runs inside a Ray Tune trial actor. Shared stages (the baseline, entropy, features, and any
clustering or CAE another trial already trained) come from the stage cache; the CAE-Net
training forwards its per-epoch validation accuracy to Tune, so ASHA can stop a trial that
trails. The trial is an MLflow run nested under the sweep's run, with its stages nested
under it, and leaves ``trial.json`` in its Tune folder for the SLO search.
"""

from __future__ import annotations

import json
from pathlib import Path

TRIAL_FILE = "trial.json"
RUN_ID_FILE = "mlflow_run_id"


def run_trial(params: dict, base_tree: dict, sweep_run_id: str) -> None:
    import ray.tune

    from suite.data import load_split
    from suite.metrics import accuracy, count_parameters, serialized_bytes
    from suite.pipeline.context import Context
    from suite.pipeline.run import train_stages
    from suite.pipeline.stage import StageRunner
    from suite.pipeline.tracking import Tracker
    from suite.stages.common import load_model
    from suite.sweep.config import trial_config

    tune_ctx = ray.tune.get_context()
    trial_dir = Path(tune_ctx.get_trial_dir())
    trial_dir.mkdir(parents=True, exist_ok=True)
    cfg = trial_config(base_tree, params, source=tune_ctx.get_trial_name()).effective()
    tracker = Tracker(cfg.runtime)
    run_id = tracker.start_parent(tune_ctx.get_trial_name(), params,
                                  {"mlflow.parentRunId": sweep_run_id, "kind": "trial", "trial_id": tune_ctx.get_trial_id()})
    (trial_dir / RUN_ID_FILE).write_text(run_id)
    cache_root = Path(cfg.runtime.cache_dir) / cfg.data.dataset
    ctx = Context(cfg, StageRunner(cache_root, tracker), tracker, tune_stage="caenet")
    try:
        models = train_stages(ctx)
        name, kwargs, stage = models["caenet"]
        model = load_model(name, kwargs, stage.file("model.pt"))
        test = load_split(cfg.data, "test")
        row = {"trial": tune_ctx.get_trial_name(), "params": params, "val_acc": stage.metrics["val_acc"],
               "test_acc": accuracy(model, test.images, test.labels, cfg.evaluate.batch_size),
               **count_parameters(model), "size_bytes": serialized_bytes(model), "model": name, "model_kwargs": kwargs,
               "weights": str(stage.file("model.pt")), "mlflow_run_id": run_id,
               "reconstruction_mse": ctx.runner.results["autoencoder"].metrics.get("reconstruction_mse"),
               "k_mean": ctx.runner.results["clustering"].metrics.get("k_mean")}
        tracker.log_metrics(run_id, {k: row[k] for k in ("val_acc", "test_acc", "nonzero_parameters", "size_bytes")})
        (trial_dir / TRIAL_FILE).write_text(json.dumps(row, indent=2, default=str))
        if stage.cached:  # no epochs ran, so nothing reached Tune yet: report the finished result once
            ray.tune.report({"val_acc": row["val_acc"], "epoch": stage.metrics.get("epoch", 0)})
    except BaseException:
        tracker.end(run_id, "FAILED")
        raise
    tracker.end(run_id)

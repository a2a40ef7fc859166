"""One sweep trial: the pipeline's training stages for one point of the search space.

Runs inside a Ray Tune trial actor. Shared stages (the baseline, entropy, features, and any
clustering or CAE another trial already trained) come from the stage cache; the CAE-Net
training forwards its per-epoch validation accuracy to Tune, so ASHA can stop a trial that
trails. The trial is an MLflow run nested under the sweep's run, with its stages nested
under it, and leaves ``trial.json`` in its Tune folder for the SLO search.

Tune stops a trial at its last report too (ASHA at ``max_t``), which can kill the trial
before it writes ``trial.json``; ``finish_trial`` lets the sweep driver complete such a
trial afterwards from its checkpoints, without training anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import ray.tune

from suite.data import load_split
from suite.distributed.launch import NeedsTraining, finish_only
from suite.metrics import describe
from suite.pipeline.session import stage_context
from suite.pipeline.tracking import Tracker
from suite.stages.graph import train_stages
from suite.sweep.sweep_file import trial_config
from suite.training.convergence import unconverged

TRIAL_FILE = "trial.json"
RUN_ID_FILE = "mlflow_run_id"


def _result(params: dict, base_tree: dict, trial_name: str, trial_dir: Path, run_id: str, tune_stage: str | None) -> dict:
    """Run (or reuse) the trial's stages and write its ``trial.json``; returns the row."""
    cfg = trial_config(base_tree, params, source=trial_name).effective()
    tracker = Tracker(cfg.runtime)
    tracker.parent_id = run_id  # the trial's stages nest under the trial's run
    ctx = stage_context(cfg, tracker, print, tune_stage=tune_stage)
    try:
        models = train_stages(ctx)
        trained = models["caenet"]
        name, kwargs, stage = trained.model, trained.kwargs, trained.stage
        model = trained.load()
        test = load_split(cfg.data, "test")
        row = {"trial": trial_name, "params": params, "val_acc": stage.metrics["val_acc"],
               **describe(model, test.images, test.labels, cfg.evaluate.batch_size), "model": name, "model_kwargs": kwargs,
               "weights": str(stage.file("model.pt")), "mlflow_run_id": run_id, "caenet_cached": stage.cached,
               "caenet_epochs": stage.metrics.get("epoch"),
               "reconstruction_mse": ctx.runner.results["autoencoder"].metrics.get("reconstruction_mse"),
               "k_mean": ctx.runner.results["clustering"].metrics.get("k_mean"),
               # trainings of this trial that did not learn (suite.training.convergence): its row is marked
               "not_converged": unconverged({n: r.metrics for n, r in ctx.runner.results.items()})}
        tracker.log_metrics(run_id, {k: row[k] for k in ("val_acc", "test_acc", "nonzero_parameters", "size_bytes")})
        (trial_dir / TRIAL_FILE).write_text(json.dumps(row, indent=2, default=str))
    except BaseException as exc:
        if not getattr(exc, "nothing_done", False):  # finish-only found epochs left: the caller decides
            tracker.end(run_id, "FAILED")
        raise
    tracker.end(run_id)
    return row


def run_trial(params: dict, base_tree: dict, sweep_run_id: str) -> None:
    """The Tune trainable."""
    tune_ctx = ray.tune.get_context()
    trial_dir = Path(tune_ctx.get_trial_dir())
    trial_dir.mkdir(parents=True, exist_ok=True)
    runtime = trial_config(base_tree, params, source=tune_ctx.get_trial_name()).runtime
    tracker = Tracker(runtime)
    run_id = tracker.start_parent(tune_ctx.get_trial_name(), params,
                                  {"mlflow.parentRunId": sweep_run_id, "kind": "trial", "trial_id": tune_ctx.get_trial_id()})
    (trial_dir / RUN_ID_FILE).write_text(run_id)
    (trial_dir / "params.json").write_text(json.dumps(params))
    row = _result(params, base_tree, tune_ctx.get_trial_name(), trial_dir, run_id, tune_stage="caenet")
    # The final result, always: a CAE-Net taken from the cache or finished from its checkpoints
    # sent Tune no epoch reports, and Tune rejects a trial whose results lack the metric.
    ray.tune.report({"val_acc": row["val_acc"], "epoch": row["caenet_epochs"] or 0})


def finish_trial(trial_dir: Path, base_tree: dict) -> dict | None:
    """Complete a trial Tune stopped after its last epoch (every epoch checkpointed); None when
    it really stopped early (epochs left) or never started its run."""
    run_file, params_file = trial_dir / RUN_ID_FILE, trial_dir / "params.json"
    if not (run_file.exists() and params_file.exists()):
        return None
    try:
        with finish_only():
            return _result(json.loads(params_file.read_text()), base_tree, trial_name(trial_dir), trial_dir,
                           run_file.read_text().strip(), tune_stage=None)
    except NeedsTraining:
        return None


def trial_name(trial_dir: Path) -> str:
    """Tune's trial name (``run_trial_<id>_<n>``) from its folder name (which adds params and a date)."""
    parts = trial_dir.name.split("_")
    return "_".join(parts[:4])

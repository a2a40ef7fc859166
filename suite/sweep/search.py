"""``caenet sweep``: a Ray Tune sweep over dotted config keys, then the latency-SLO search.

1. The stages every trial shares (baseline, entropy, features) run once in the driver.
2. Tune runs one trial per point of the space (``suite.sweep.trial``), ASHA on CAE-Net's
   per-epoch validation accuracy, at most ``max_concurrent_trials`` at a time; each trial is
   an MLflow run nested under the sweep's run.
3. With ``--boards``, the baseline and each distinct CAE-Net architecture among the finished
   trials are timed on every board (``suite.edge.pool``: one Ray actor per board, the
   measurement cache per board fingerprint); then Ray stops and they are timed on this machine
   too, in alternating windows. The SLO is decided where ``slo.board`` says; the Pareto front
   (one per board) and the SLO pick are written as Markdown, CSV, JSON and plots, logged to the
   sweep's MLflow run, and each trial's run gets its latencies.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict
from pathlib import Path

import ray
from ray import tune
from ray._raylet import RAY_NODE_ID_KEY
from ray.tune.execution.placement_groups import PlacementGroupFactory
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from suite.config import ConfigError, ExperimentConfig
from suite.data import INFO, load_split
from suite.distributed.ray_runtime import ensure_ray
from suite.edge.boards import Inventory
from suite.edge.pool import BoardPool, BoardTiming
from suite.errors import last_line
from suite.metrics import accuracy
from suite.timing import P50, P90
from suite.models import geometry
from suite.pipeline.context import cache_root
from suite.pipeline.latency_cache import FOLDER as LATENCY_FOLDER
from suite.pipeline.latency_cache import LatencyCache, Timed, time_here
from suite.pipeline.session import open_session
from suite.pipeline.stage import StageResult
from suite.pipeline.tracking import resolve_tracking_uri
from suite.stages import baseline, entropy, features
from suite.stages.trained import Trained, load_model, register_model
from suite.sweep.sweep_file import THIS_MACHINE, SweepConfig
from suite.sweep.slo import TrialRow, choose, markdown, on_board, plot
from suite.sweep.trial import RUN_ID_FILE, TRIAL_FILE, finish_trial, run_trial, trial_name
from suite.timing import HIGH, LOW


def _param_space(space: dict) -> dict:
    out = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            out[key] = tune.grid_search(spec)
        else:
            kind, args = next(iter(spec.items()))
            out[key] = tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
    return out


def _scheduler(sweep: SweepConfig, max_t: int):
    if sweep.scheduler.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=min(sweep.scheduler.grace_period, max_t),
                         reduction_factor=sweep.scheduler.reduction_factor)


def _absolute(base: ExperimentConfig) -> ExperimentConfig:
    """Trials run in other folders (and on other nodes): make the paths they share absolute."""
    base = base.model_copy(deep=True)
    base.runtime.cache_dir = str(Path(base.runtime.cache_dir).resolve())
    base.runtime.tracking_uri = resolve_tracking_uri(base.runtime)[0]
    if base.data.root:
        base.data.root = str(Path(base.data.root).expanduser().resolve())
    return base


def _on_driver_node(cpus: float):
    """Trial resources on the driver's node. A trial runs stages: it reads and writes the stage
    cache and MLflow, which live with the driver; its trainings' Ray Train workers still go
    wherever the cluster has room. A driver node without CPUs (a head started with
    ``--num-cpus=0``) holds the trial by a little memory instead."""
    node = ray.get_runtime_context().get_node_id()
    node_cpus = next((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["NodeID"] == node), 0)
    bundle = {"CPU": min(cpus, node_cpus)} if min(cpus, node_cpus) > 0 else {"memory": 256 * 1024 * 1024}
    return PlacementGroupFactory([bundle], bundle_label_selector=[{RAY_NODE_ID_KEY: node}])


def run_sweep(sweep: SweepConfig, base: ExperimentConfig, log=print, boards: Inventory | None = None) -> dict:
    """The sweep, then the SLO search (on ``boards`` too, when given); returns the summary."""
    names = [b.name for b in boards.boards] if boards else []
    if sweep.slo.board and sweep.slo.board not in names:
        raise ConfigError(f"slo.board: {sweep.slo.board} is not a board of --boards "
                          f"({', '.join(names) if names else 'no --boards FILE given'}); name one of its boards or "
                          "set slo.board=null to decide the SLO on this machine")
    base = _absolute(base)
    trial_base = base.model_copy(deep=True)
    trial_base.runtime.progress = False  # bars from many trials interleave; Tune's table shows progress
    if base.data.val_fraction <= 0:
        raise ConfigError("data.val_fraction must be > 0 for a sweep: trials are ranked on validation accuracy")
    params = {"space": sweep.space, "set": sweep.set, "scheduler": sweep.scheduler.model_dump(),
              "slo": sweep.slo.model_dump(), "experiment": sweep.experiment}
    # The session's Tracker creates the experiment before any trial logs to it.
    with open_session(base, sweep.name, params=params, tags={"kind": "sweep"}, check_data=True, log=log) as session:
        cfg, tracker, parent = session.cfg, session.tracker, session.run_id
        out_dir = session.folder("sweeps", name=f"{time.strftime('%Y%m%d-%H%M%S')}-{sweep.name}")
        with session.ray(tune=True):
            ctx = session.context()
            base_stage = baseline.run(ctx)  # shared by every trial whose space leaves it alone
            entropy.run(ctx, base_stage)
            features.run(ctx, base_stage)
            ensure_ray()  # Tune needs it even when every stage so far was cached
            trainable = tune.with_resources(
                tune.with_parameters(run_trial, base_tree=trial_base.model_dump(mode="json"), sweep_run_id=parent),
                _on_driver_node(sweep.trial_cpus))
            tuner = tune.Tuner(
                trainable, param_space=_param_space(sweep.space),
                tune_config=tune.TuneConfig(metric=sweep.metric, mode="max", scheduler=_scheduler(sweep, cfg.caenet.train.epochs),
                                            num_samples=sweep.num_samples, max_concurrent_trials=sweep.max_concurrent_trials),
                run_config=tune.RunConfig(name=out_dir.name, storage_path=str(out_dir.parent), verbose=1))
            grid = tuner.fit()
            rows, stopped, failed = _collect(grid, tracker, trial_base.model_dump(mode="json"), log)
            models = _models(rows, cfg, base_stage)
            test = load_split(cfg.data, "test")
            on_boards = _time_on_boards(boards, models, test, cfg, log) if boards else {}
        summary = _slo_search(rows, models, test, cfg, sweep, out_dir, tracker, parent, log, on_boards)
        summary.update({"stopped_early": stopped, "failed": failed, "mlflow_run_id": parent, "output": str(out_dir)})
        (out_dir / "sweep_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        tracker.log_artifact(parent, out_dir / "sweep_summary.json")
    return summary


def _collect(grid, tracker, base_tree: dict, log) -> tuple[list[dict], list[str], dict]:
    """Finished trials' rows; names of trials ASHA stopped; failed trials and their last error line.

    A trial that Tune stopped right after its last epoch (ASHA stops at ``max_t`` too) has
    every epoch checkpointed but no ``trial.json``: it is completed here, nothing retrained.
    """
    rows, stopped, failed = [], [], {}
    for result in grid:
        folder = Path(result.path)
        name = trial_name(folder)
        if (folder / TRIAL_FILE).exists():
            rows.append(json.loads((folder / TRIAL_FILE).read_text()))
            continue
        if result.error is None:
            row = finish_trial(folder, base_tree)
            if row is not None:
                log(f"[{name}] completed from its checkpoints (Tune stopped it after its last epoch)")
                rows.append(row)
                continue
        run_file = folder / RUN_ID_FILE
        if result.error is not None:
            failed[name] = last_line(result.error)[:300]
        else:
            stopped.append(name)
        if run_file.exists():  # the trial actor was killed mid-training: close its MLflow runs
            run_id = run_file.read_text().strip()
            for child in tracker.client.search_runs([tracker.experiment_id], f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'"):
                tracker.end(child.info.run_id, "KILLED")
            tracker.end(run_id, "FAILED" if name in failed else "KILLED")
            tracker.set_tag(run_id, "outcome", "failed" if name in failed else "stopped by ASHA")
    return rows, stopped, failed


def _models(rows: list[dict], cfg: ExperimentConfig, base_stage) -> dict:
    """The baseline and one model per distinct CAE-Net architecture of ``rows`` (keyed by its
    JSON: [registry name, kwargs]). Dense batch-1 latency depends on the architecture, not on
    the weights' values (pruned zeros are still multiplied), so only these are timed; timing
    each trial separately would only let noise reorder identical networks."""
    models = {"baseline": load_model(cfg.baseline.model, geometry(INFO[cfg.data.dataset]), base_stage.file("model.pt"))}
    for row in rows:
        key = _arch(row)
        if key not in models:
            models[key] = load_model(row["model"], row["model_kwargs"], Path(row["weights"]))
    return models


def _arch(row: dict) -> str:
    return json.dumps([row["model"], row["model_kwargs"]], sort_keys=True)


def _time_on_boards(boards: Inventory, models: dict, test, cfg: ExperimentConfig, log) -> dict[str, BoardTiming]:
    """Every architecture on every board (Ray up: one actor per board), from the cache where the
    board's fingerprint has it."""
    short = {key: key if key == "baseline" else f"architecture-{i}" for i, key in enumerate(models)}
    cache = LatencyCache(cache_root(cfg) / LATENCY_FOLDER)
    images = test.floats(slice(0, boards.bench.images))
    log(f"timing the baseline and {len(models) - 1} CAE-Net architecture(s) on {len(boards.boards)} board(s): "
        f"{', '.join(b.name for b in boards.boards)}, unless the measurement cache has them for that board")
    pool = BoardPool(boards)
    try:
        timings = pool.time_on_boards({short[k]: m for k, m in models.items()},
                                      {short[k]: json.loads(k) for k in models if k != "baseline"}, images, cache, log=log)
    finally:
        pool.close()
    back = {v: k for k, v in short.items()}
    for t in timings.values():  # keyed by architecture again, as the local timing is
        if t.timed is not None:
            t.timed.stats = {back[k]: v for k, v in t.timed.stats.items()}
            t.timed.paired = {back[k]: v for k, v in t.timed.paired.items()}
            t.timed.cached = {back[k] for k in t.timed.cached}
        if t.error:
            log(f"[{t.board}] FAILED: {t.error} (its rows are N/A; the search goes on with the other boards)")
        elif t.timed is not None and t.timed.cached:
            log(f"[{t.board}] {len(t.timed.cached)} of {len(models) - 1} architecture(s) from the measurement cache: not timed again")
    return timings


def _where_stats(timed: Timed | None, key: str) -> dict:
    """One architecture's latency on one machine or board: p50 / p90 with intervals, the paired
    speed-up with its interval, the baseline's p50, and whether it came from the cache."""
    stats = timed.stats.get(key) if timed is not None else None
    if stats is None:
        return {"p50_ms": float("nan"), "cached": False}
    ratio, low, high = timed.speedup(key)
    return {"p50_ms": stats[P50], "p50_ms_lo": stats[P50 + LOW], "p50_ms_hi": stats[P50 + HIGH],
            "p90_ms": stats[P90], "p90_ms_lo": stats[P90 + LOW], "p90_ms_hi": stats[P90 + HIGH],
            "speedup": ratio, "speedup_lo": low, "speedup_hi": high, "baseline_p50_ms": timed.stats["baseline"][P50],
            "energy_mj": stats.get("energy_mj"), "cached": key in timed.cached}


def _slo_search(rows, models, test, cfg, sweep, out_dir, tracker, parent, log, on_boards: dict[str, BoardTiming]) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    lcfg = cfg.evaluate.latency
    baseline_acc = accuracy(models["baseline"], test.images, test.labels, cfg.evaluate.batch_size)
    # each architecture once per machine: a re-run (or a later sweep) reads it back (suite.pipeline.latency_cache)
    cache = LatencyCache(cache_root(cfg) / LATENCY_FOLDER)
    log(f"timing the baseline and {len(models) - 1} CAE-Net architecture(s) at batch 1 on this machine, "
        f"{lcfg.threads} thread(s), alternating windows, unless the latency cache has them")
    here = time_here(models, {k: json.loads(k) for k in models if k != "baseline"}, test.floats(slice(0, 1)), lcfg, cache)
    if here.cached:
        log(f"{len(here.cached)} of {len(models) - 1} architecture(s) from the latency cache ({cache.folder}): not timed again")
    table = [TrialRow(trial=r["trial"], params=r["params"], val_acc=r["val_acc"], test_acc=r["test_acc"],
                      nonzero_parameters=r["nonzero_parameters"], size_bytes=r["size_bytes"],
                      boards={where: _where_stats(timed, _arch(r)) for where, timed in
                              [(THIS_MACHINE, here), *((b, t.timed) for b, t in on_boards.items())]},
                      extra={"mlflow_run_id": r["mlflow_run_id"], "k_mean": r.get("k_mean"),
                             "not_converged": r.get("not_converged") or {},
                             "reconstruction_mse": r.get("reconstruction_mse")}) for r in rows]
    views = {where: on_board(table, where, sweep.slo) for where in [THIS_MACHINE, *on_boards]}
    for where, view in views.items():  # each place's SLO and Pareto marks, kept with its numbers
        for r, v in zip(table, view):
            r.boards[where].update(meets_slo=v.meets_slo, pareto=v.pareto)
    where = sweep.slo.board or THIS_MACHINE
    table = views[where]  # the SLO's place fills the latency columns
    decided = here if where == THIS_MACHINE else on_boards[where].timed
    baseline_ms = decided.stats["baseline"][P50] if decided is not None and "baseline" in decided.stats else float("nan")
    failed_boards = {b: t.error for b, t in on_boards.items() if t.error}
    chosen = choose(table)
    for r in table:
        run_id = r.extra["mlflow_run_id"]
        metrics = {P50: r.p50_ms, P50 + LOW: r.p50_ms_lo, P50 + HIGH: r.p50_ms_hi, P90: r.p90_ms, "speedup": r.speedup,
                   "speedup_lo": r.speedup_lo, "speedup_hi": r.speedup_hi, "meets_slo": float(r.meets_slo),
                   "pareto": float(r.pareto)}
        for board in on_boards:  # each board's own, the board named in the metric (NaN ones left out)
            b = r.boards[board]
            metrics.update({f"{key}.{board}": b[name] for key, name in ((P50, "p50_ms"), (P90, "p90_ms"), ("speedup", "speedup"))
                            if b.get(name) == b.get(name) and b.get(name) is not None})
        tracker.log_metrics(run_id, {k: v for k, v in metrics.items() if v == v})
        tracker.set_tag(run_id, "slo_decided_on", r.board)
        for t in on_boards.values():
            for key, value in t.tags().items():
                tracker.set_tag(run_id, key, value)
    others = {w: v for w, v in views.items() if w != where}  # every other place's own table and front
    text = markdown(table, baseline_ms, sweep.slo.describe(), chosen, others, failed_boards)
    (out_dir / "pareto.md").write_text(text + "\n")
    with open(out_dir / "trials.csv", "w", newline="") as f:
        writer = csv.writer(f)
        keys = sorted({k for r in table for k in r.params})
        writer.writerow(["trial", *keys, "val_acc", "test_acc", P50, "speedup", "nonzero_parameters", "size_bytes",
                         "meets_slo", "pareto"])
        for r in table:
            writer.writerow([r.trial, *[r.params.get(k) for k in keys], r.val_acc, r.test_acc, r.p50_ms, r.speedup,
                             r.nonzero_parameters, r.size_bytes, r.meets_slo, r.pareto])
    if table:
        plot(table, baseline_ms, baseline_acc, sweep.slo, out_dir / "pareto.png", sweep.slo.where)
        tracker.log_artifact(parent, out_dir / "pareto.png")
        for place, view in others.items():  # one front per board (and this machine's, when a board decides)
            if not failed_boards.get(place):
                base_ms = view[0].boards[place].get("baseline_p50_ms", float("nan"))
                name = f"pareto-{place.replace(' ', '-')}.png"
                plot(view, base_ms, baseline_acc, sweep.slo, out_dir / name, place if place == THIS_MACHINE else f"board {place}")
                tracker.log_artifact(parent, out_dir / name)
    if failed_boards:
        tracker.set_tag(parent, "failed_boards", "; ".join(f"{b}: {e}" for b, e in failed_boards.items())[:4000])
    for f in ("pareto.md", "trials.csv"):
        tracker.log_artifact(parent, out_dir / f)
    tracker.log_metrics(parent, {"baseline_p50_ms": baseline_ms, "baseline_test_acc": baseline_acc,
                                 "trials_finished": len(table), "trials_meeting_slo": sum(r.meets_slo for r in table)})
    if chosen:
        tracker.log_metrics(parent, {"chosen_val_acc": chosen.val_acc, "chosen_test_acc": chosen.test_acc,
                                     "chosen_p50_ms": chosen.p50_ms, "chosen_speedup": chosen.speedup})
        tracker.set_tag(parent, "chosen_trial", chosen.trial)
        tracker.set_tag(chosen.extra["mlflow_run_id"], "slo_choice", "true")
        name = cfg.runtime.model_name(f"{sweep.name}-slo")
        if name:  # the SLO loop's pick, in the Model Registry beside the pipeline's CAE-Net
            row = next(r for r in rows if r["trial"] == chosen.trial)
            folder = Path(row["weights"]).parent
            stage = StageResult("caenet", folder.name.rsplit("-", 1)[1], folder, {}, True)
            tags = {"test_acc": chosen.test_acc, "val_acc": chosen.val_acc, "speedup_p50": chosen.speedup, P50: chosen.p50_ms,
                    "latency_measured_on": chosen.board,
                    "slo": sweep.slo.describe(), "trial": chosen.trial, **{f"param.{k}": v for k, v in chosen.params.items()}}
            version, _ = register_model(tracker, name, Trained("caenet", stage, row["model"], row["model_kwargs"]), parent,
                                        test.floats(slice(0, 1)).numpy(), tags)
            tracker.set_tag(parent, "registered_model", f"{name}/{version}")
            log(f"Model Registry: {name} version {version} (the SLO pick, {chosen.trial})")
    boards = {b: {"error": t.error, "system": t.system, "visits": t.visits, "export_s": t.export_s,
                  "measured": len(t.timed.stats) - len(t.timed.cached) - 1 if t.timed and t.timed.stats else 0,
                  "from_cache": len(t.timed.cached) if t.timed else 0} for b, t in on_boards.items()}
    return {"slo": sweep.slo.describe(), "slo_decided_on": sweep.slo.where, "baseline_p50_ms": baseline_ms,
            "baseline_test_acc": baseline_acc, "trials": [asdict(r) for r in table], "chosen": asdict(chosen) if chosen else None,
            "boards": boards, "failed_boards": failed_boards, "table": text}

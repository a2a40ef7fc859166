"""``caenet run CONFIG``: the CAE-Net pipeline, stage by stage, in one Ray session and one
MLflow parent run; finished stages are reused, so a re-run resumes."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from suite.commands.arguments import add_set, add_smoke, config_of
from suite.commands.edge import bench_run
from suite.config import ExperimentConfig, to_yaml
from suite.edge.boards import load_inventory
from suite.errors import writable_file
from suite.timing import P50
from suite.pipeline.session import open_session
from suite.report import summary as summary_mod
from suite.report.summary import SPEEDUP_ORT, table
from suite.stages import evaluate
from suite.stages.trained import register_model
from suite.stages.graph import plan, train_stages

ORDER = 10
HELP = 'run the CAE-Net pipeline from a YAML config (finished stages are reused)'


def add_parser(sub) -> None:
    run = sub.add_parser("run", help=HELP,
                         description="Train the baseline, score entropy, cluster each class, pick targets, train the "
                         "converting autoencoder and CAE-Net, and evaluate; every stage is cached under "
                         "runtime.cache_dir and logged to MLflow (./mlruns by default). Re-running after an "
                         "interruption resumes where it stopped. Example: caenet run configs/mnist_lenet.yaml --smoke")
    run.add_argument("config", help="YAML config, e.g. configs/cifar10_alexnet.yaml")
    add_set(run)
    add_smoke(run)
    run.add_argument("--summary", metavar="PATH", help="where to write summary.json (default: under the cache folder)")
    run.add_argument("--strict", action="store_true",
                     help="exit 1 when a training did not converge (near-chance accuracy, still rising, or a diverged loss): "
                          "for jobs, whose comparison must not be reported as a result then")
    run.add_argument("--boards", metavar="BOARDS.yaml",
                     help="after the run, time its models on these edge boards over SSH as `caenet edge bench` does "
                          "(latency with intervals, energy where a board has a power source), nested under the run")
    run.add_argument("--dry-run", action="store_true",
                     help="list every stage with its cache key: which are cached and which would run; runs nothing")
    run.set_defaults(func=main)


def main(args) -> int:
    cfg = config_of(args, args.config)
    if args.dry_run:
        return dry_run(cfg)
    if args.summary:  # before any work: a path that cannot be written fails now, not after the run
        writable_file(args.summary, "--summary")
    inventory = load_inventory(args.boards) if args.boards else None  # a bad boards file fails before the run
    summary = run_pipeline(cfg, summary_path=args.summary)
    print()
    print(table(summary))
    print(f"\nsummary: {summary['summary_path']}\nMLflow run: {summary['mlflow_run_id']}")
    if inventory is not None:
        measured = bench_run(cfg, inventory, source_run=summary["mlflow_run_id"])
        if measured["failed"]:
            return 1
    if args.strict and summary["not_converged"]:
        print(f"caenet: --strict: {len(summary['not_converged'])} training(s) did not converge: "
              f"{', '.join(sorted(summary['not_converged']))}", file=sys.stderr)
        return 1
    return 0


def dry_run(cfg: ExperimentConfig) -> int:
    """Print the plan of ``caenet run``: each stage, cached or would run, its key and folder."""
    stages = plan(cfg.effective())
    width = max(len(s.name) for s in stages)
    for stage in stages:
        print(f"{stage.name:<{width}}  {'cached   ' if stage.cached else 'would run'}  {stage.key}  {stage.path}")
    todo = sum(not s.cached for s in stages)
    print(f"\n{len(stages) - todo} cached, {todo} to run (nothing was run)")
    return 0


def run_pipeline(cfg: ExperimentConfig, log=print, summary_path: str | Path | None = None) -> dict:
    """Run (or reuse) every stage; return the summary (also written as ``summary.json``)."""
    with open_session(cfg, cfg.name, tags={"kind": "run"}, check_data=True, log=log) as session:
        cfg, tracker, parent, cache_root = session.cfg, session.tracker, session.run_id, session.cache_root
        ctx = session.context()
        with session.ray():
            models = train_stages(ctx)
        ev = evaluate.run(ctx, models)  # after Ray has stopped: its daemons would skew the timings
        stages = {name: r.metrics for name, r in ctx.runner.results.items()}
        summary = summary_mod.build(ev.metrics, stages, cfg.autoencoder.targets)
        summary["mlflow_run_id"] = parent
        summary["caenet_kd"] = cfg.caenet.kd.model_dump()
        summary["caenet_encoder"] = cfg.caenet.encoder
        summary["config"] = cfg.name
        summary["dataset"] = cfg.data.dataset
        summary["latency_threads"] = cfg.evaluate.latency.threads
        out = Path(summary_path) if summary_path else cache_root / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}" / "summary.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2))
        if summary_path is None:  # a run folder of its own: keep the effective config beside
            (out.parent / "config.yaml").write_text(to_yaml(cfg))
        tracker.log_artifact(parent, out)
        tracker.log_metrics(parent, summary)  # nested keys flatten to e.g. caenet.test_acc
        for stage, picture in (("clustering", "elbow.png"), ("autoencoder", "conversions.png")):
            tracker.log_artifact(parent, ctx.runner.results[stage].file(picture), "pictures")
        name = cfg.runtime.model_name(cfg.name)
        if name:
            tags = {"test_acc": summary["caenet"]["test_acc"], "speedup_p50": summary["speedup_p50"],
                    SPEEDUP_ORT: summary[SPEEDUP_ORT],
                    P50: summary["caenet"][P50], "slo_ms": cfg.compare.slo_ms, "config": cfg.name,
                    "dataset": cfg.data.dataset, "smoke": cfg.smoke, "pipeline_run": parent,
                    "converged": not summary["not_converged"]}  # registered either way, tagged: its page says so
            version, created = register_model(tracker, name, models["caenet"], parent, ctx.example_input, tags)
            tracker.set_tag(parent, "registered_model", f"{name}/{version}")
            log(f"Model Registry: {name} version {version}" + ("" if created else " (already registered for this stage)"))
        summary["summary_path"] = str(out)
    return summary

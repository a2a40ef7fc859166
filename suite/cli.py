"""``caenet``: the command line of the suite.

  caenet run CONFIG [--set key=value ...]   run (or resume) the CAE-Net pipeline
  caenet sweep SWEEP [--set key=value ...]  Ray Tune sweep + latency-SLO search
  caenet data check [DATASET ...]           verify datasets on disk
  caenet models                             list the registered architectures
"""

from __future__ import annotations

import argparse
import json
import sys

from suite.config import ConfigError, load_config


def _cmd_run(args) -> int:
    from suite.pipeline.run import run_pipeline
    from suite.report.summary import table

    overrides = list(args.set or [])
    if args.smoke:
        overrides.append("smoke=true")
    cfg = load_config(args.config, overrides)
    summary = run_pipeline(cfg, summary_path=args.summary)
    print()
    print(table(summary))
    print(f"\nsummary: {summary['summary_path']}\nMLflow run: {summary['mlflow_run_id']}")
    return 0


def _cmd_sweep(args) -> int:
    from suite.sweep.config import load_sweep
    from suite.sweep.run import run_sweep

    overrides = list(args.set or [])
    sweep, base = load_sweep(args.sweep, overrides)
    if args.smoke:
        base = base.model_copy(update={"smoke": True})
    summary = run_sweep(sweep, base)
    print()
    print(summary["table"])
    if summary["stopped_early"]:
        print(f"stopped early by ASHA: {', '.join(summary['stopped_early'])}")
    for trial, error in summary["failed"].items():
        print(f"failed: {trial}: {error}")
    print(f"\nresults: {summary['output']}\nMLflow sweep run: {summary['mlflow_run_id']}")
    return 0


def _cmd_data_check(args) -> int:
    from suite.data import INFO, check

    names = args.datasets or list(INFO)
    failed = 0
    for name in names:
        try:
            s = check(name, args.root, download=args.download)
        except Exception as exc:  # DataError, or unknown dataset
            failed += 1
            print(f"FAIL {name}: {exc}")
            continue
        tr, te = s["train"], s["test"]
        print(f"ok   {name}: {tr['images']} train / {te['images']} test images of shape {tr['shape']} "
              f"({tr['per_class_min']}-{tr['per_class_max']} per class) in {s['path']}")
    return 1 if failed else 0


def _cmd_models(args) -> int:
    from suite.models import list_models

    print("\n".join(list_models()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caenet", description="CAE-Net experiment suite: converting-autoencoder "
                                     "classifiers for edge boards, on Ray with MLflow tracking.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the CAE-Net pipeline from a YAML config (finished stages are reused)",
                         description="Train the baseline, score entropy, cluster each class, pick targets, train the "
                         "converting autoencoder and CAE-Net, and evaluate; every stage is cached under "
                         "runtime.cache_dir and logged to MLflow (./mlruns by default). Re-running after an "
                         "interruption resumes where it stopped.")
    run.add_argument("config", help="YAML config, e.g. configs/cifar10_alexnet.yaml")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config key (dotted path), e.g. --set baseline.train.epochs=3; repeatable")
    run.add_argument("--smoke", action="store_true", help="shrink to a few hundred images and one epoch (same as --set smoke=true)")
    run.add_argument("--summary", metavar="PATH", help="where to write summary.json (default: under the cache folder)")
    run.set_defaults(func=_cmd_run)

    sweep = sub.add_parser("sweep", help="Ray Tune sweep over config keys, then pick the best CAE-Net that meets a latency SLO",
                           description="Runs one trial per point of the sweep file's search space (any dotted key of the "
                           "experiment config: clustering.k, autoencoder.prune.weight_ratio, ...), ASHA on CAE-Net's "
                           "validation accuracy, every trial an MLflow run under the sweep's run. Then times every "
                           "finished CAE-Net against the baseline at batch 1 and reports the Pareto front (accuracy vs "
                           "latency) and the most accurate trial that meets the SLO. Stages are cached, so a re-run "
                           "resumes. Example: caenet sweep configs/sweeps/cifar10_clusters_pruning.yaml")
    sweep.add_argument("sweep", help="sweep YAML (see configs/sweeps/)")
    sweep.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a key of the sweep file, e.g. --set slo.speedup=4 or --set max_concurrent_trials=2")
    sweep.add_argument("--smoke", action="store_true", help="run every trial at smoke scale (a few hundred images, 1 epoch)")
    sweep.set_defaults(func=_cmd_sweep)

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    chk = data_sub.add_parser("check", help="read datasets in full and report counts, or what is wrong and how to fix it",
                              description="Looks under --root, else $CAENET_DATA, else the offline copies beside the checkout.")
    chk.add_argument("datasets", nargs="*", metavar="DATASET", help="mnist, fashion-mnist, cifar10, cifar100 (default: all)")
    chk.add_argument("--root", help="data folder holding the standard layouts")
    chk.add_argument("--download", action="store_true", help="download missing datasets with torchvision")
    chk.set_defaults(func=_cmd_data_check)

    models = sub.add_parser("models", help="list the registered model architectures")
    models.set_defaults(func=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from suite.data import DataError
    from suite.distributed.training import TrainingError
    from suite.stages.features import FeatureError

    try:
        return args.func(args)
    except (ConfigError, DataError, TrainingError, FeatureError) as exc:
        print(f"caenet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("caenet: interrupted; finished stages are kept, run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

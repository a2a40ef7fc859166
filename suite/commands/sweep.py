"""``caenet sweep SWEEP``: a Ray Tune sweep over config keys, then the latency-SLO search."""

from __future__ import annotations

import sys

from suite.commands.arguments import add_publish, add_set, add_smoke, publish
from suite.edge.boards import load_inventory
from suite.sweep.sweep_file import load_sweep
from suite.sweep.search import run_sweep

ORDER = 20
HELP = 'Ray Tune sweep over config keys, then pick the best CAE-Net that meets a latency SLO'


def add_parser(sub) -> None:
    sweep = sub.add_parser("sweep", help=HELP,
                           description="Runs one trial per point of the sweep file's search space (any dotted key of the "
                           "experiment config: clustering.k, autoencoder.prune.weight_ratio, ...), ASHA on CAE-Net's "
                           "validation accuracy, every trial an MLflow run under the sweep's run. Then times every "
                           "finished CAE-Net against the baseline at batch 1 and reports the Pareto front (accuracy vs "
                           "latency) and the most accurate trial that meets the SLO. Stages are cached, so a re-run "
                           "resumes. Example: caenet sweep configs/sweeps/cifar10_clusters_pruning.yaml --smoke")
    sweep.add_argument("sweep", help="sweep YAML (see configs/sweeps/)")
    add_set(sweep, "--set runtime.cache_dir=/abs/cache (a key of the experiment config, for every trial) or "
            "--set slo.speedup=4 (any other key: a key of the sweep file)")
    sweep.add_argument("--boards", metavar="BOARDS.yaml", help="edge boards (configs/boards.example.yaml): every finished "
                       "architecture is timed on each of them too (one Ray actor per board, measured once per board "
                       "fingerprint), one Pareto front per board; with --set slo.board=NAME the SLO is decided there")
    sweep.add_argument("--allow-identical", action="store_true",
                       help="run grid values that train the same CAE-Net anyway (by default an error, found by planning every stage's key before anything runs)")
    add_smoke(sweep, "run every trial at smoke scale (a few hundred images, 1 epoch)")
    add_publish(sweep, "the summary and the Pareto plot, as sweep_<name>.json and sweep_<name>.png,")
    sweep.set_defaults(func=main)


def main(args) -> int:
    sweep, base = load_sweep(args.sweep, list(args.set), args.profile, args.allow_identical)
    boards = load_inventory(args.boards) if args.boards else None
    if args.smoke:
        base = base.model_copy(update={"smoke": True})
    summary = run_sweep(sweep, base, boards=boards)
    print()
    print(summary["table"])
    if summary["stopped_early"]:
        print(f"stopped early by ASHA: {', '.join(summary['stopped_early'])}")
    for trial, error in summary["failed"].items():
        print(f"failed: {trial}: {error}")
    print(f"\nresults: {summary['output']}\nMLflow sweep run: {summary['mlflow_run_id']}")
    if args.publish:
        publish(args.publish, f"sweep_{sweep.name}", args.smoke, summary["output"], {".json": "sweep_summary.json", ".png": "pareto.png"})
    for board, error in summary["failed_boards"].items():  # the rest of the search is kept; the exit says so
        print(f"board {board} failed: {error}; its rows are N/A (a re-run measures only what is missing)", file=sys.stderr)
    return 1 if summary["failed_boards"] else 0

"""``caenet study STUDY``: an ablation study, every variant x seed, one table of mean ± std."""

from __future__ import annotations

import sys

from suite.commands.arguments import add_publish, add_set, add_smoke, publish
from suite.study.study_file import load_study
from suite.study.cells import run_study, smoke_cells

ORDER = 25
HELP = 'ablation study: every variant x seed of a study file, one table of mean ± std (Markdown, Parquet, plot, MLflow)'


def add_parser(sub) -> None:
    study = sub.add_parser("study", help=HELP,
                           description="Runs each variant of the study file (a set of dotted overrides of its base "
                           "experiment) at each seed, reusing every cached stage the variants share and training "
                           "independent cells side by side on Ray. Then evaluates each cell's baseline and CAE-Net "
                           "and writes one row per variant: mean ± std over the seeds of test accuracy, its gap to "
                           "the baseline, the CAE's reconstruction MSE, batch-1 latency and speed-up. The table goes "
                           "to stdout, study.md / study.json / cells.parquet / study.png, and to MLflow (a parent run, "
                           "one nested run per cell). Finished cells are cached, so a re-run resumes. "
                           "Example: caenet study configs/studies/mnist.yaml --smoke")
    study.add_argument("study", help="study YAML (see configs/studies/)")
    add_set(study, "--set caenet.train.epochs=4 (a key of the experiment config, for every variant) or "
            "--set seeds=[0,1] (any other key: a key of the study file)")
    study.add_argument("--allow-identical", action="store_true",
                       help="run variants that run the same experiment anyway (by default an error, found by planning every stage's key before anything runs)")
    add_smoke(study, "run every cell at smoke scale (a few hundred images, 1 epoch)")
    study.add_argument("--out", metavar="DIR",
                       help="where the table goes (default: <cache>/<dataset>/studies/<name>, <name>-smoke with --smoke)")
    add_publish(study, "the table's data and plot, as study_<name>.json and study_<name>.png,")
    study.add_argument("--dry-run", action="store_true", help="list the cells (variant, seed) and exit; runs nothing")
    study.set_defaults(func=main)


def main(args) -> int:
    study, cells = load_study(args.study, list(args.set), args.profile, args.allow_identical)
    if args.smoke:
        cells = smoke_cells(cells)
    if args.dry_run:
        for cell in cells:
            print(cell.label)
        print(f"\n{len(cells)} cells: {len(study.variants)} variants x {len(study.seeds)} seeds (nothing was run)")
        return 0
    summary = run_study(study, cells, out=args.out)
    print()
    print(summary["table"])
    print(f"\nresults: {summary['output']}  (study.md, study.json, cells.parquet, study.png)\n"
          f"MLflow study run: {summary['mlflow_run_id']}")
    if args.publish:
        publish(args.publish, f"study_{study.name}", args.smoke, summary["output"], {".json": "study.json", ".png": "study.png"})
    if summary["failed_cells"]:  # the table stands on the cells that finished; the exit code says some did not
        print(f"caenet: {summary['failed_cells']} of {len(cells)} cells failed (listed under the table); "
              "run the same command again to retry them", file=sys.stderr)
        return 1
    return 0

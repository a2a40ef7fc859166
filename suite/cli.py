"""``caenet``: the command line of the suite.

  caenet run CONFIG [--set key=value ...]   run (or resume) the CAE-Net pipeline
  caenet sweep SWEEP [--set key=value ...]  Ray Tune sweep + latency-SLO search
  caenet compare CONFIG                     CAE-Net vs every competitor of Tables I/II on this machine
  caenet export CONFIG_OR_RUN               TorchScript / ONNX exports, checked against PyTorch
  caenet edge bench CONFIG_OR_RUN --boards  latency and energy on edge boards over SSH
  caenet report CONFIG_OR_RUN               Tables I/II, Fig. 1 and Fig. 5 from the measurements
  caenet data check [DATASET ...]           verify datasets on disk
  caenet models                             list the registered architectures
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback

from suite.config import ConfigError, load_config
from suite.errors import UserError, writable_file


def _cmd_run(args) -> int:
    from suite.pipeline.run import run_pipeline
    from suite.report.summary import table

    overrides = list(args.set or [])
    if args.smoke:
        overrides.append("smoke=true")
    cfg = load_config(args.config, overrides)
    if args.summary:  # before any work: a path that cannot be written fails now, not after the run
        writable_file(args.summary, "--summary")
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


def _cmd_compare(args) -> int:
    from suite.pipeline.compare import run_compare

    overrides = list(args.set or [])
    if args.smoke:
        overrides.append("smoke=true")
    report = run_compare(load_config(args.config, overrides), out=args.out)
    print()
    print(report["markdown"])
    print(f"\nresults: {report['output']}\nMLflow run: {report['mlflow_run_id']}")
    return 0


def _cmd_export(args) -> int:
    from pathlib import Path

    from suite.edge.run import export_run
    from suite.pipeline.lookup import resolve_config

    cfg = resolve_config(args.run, args.set)
    out = Path(args.out or Path(cfg.runtime.cache_dir) / cfg.data.dataset / "exports" / cfg.name)
    for fmt in args.format:
        folder, entries = export_run(cfg, args.models, fmt, out, images=args.images)
        for e in entries:
            print(f"{e['name']:24} {fmt:12} {e['bytes'] / 1024:9.1f} KB  max |diff| vs PyTorch {e['max_abs_diff']:.2e}  {folder / e['file']}")
    return 0


def _cmd_edge_bench(args) -> int:
    from pathlib import Path

    from suite.edge.boards import load_inventory
    from suite.edge.run import edge_bench, table
    from suite.pipeline.lookup import resolve_config

    inventory = load_inventory(args.boards, args.only)
    cfg = resolve_config(args.run, args.set)
    source = None if Path(args.run).exists() else args.run
    out = Path(args.out or Path(cfg.runtime.cache_dir) / cfg.data.dataset / "edge")
    summary = edge_bench(cfg, inventory, args.models, out, source_run=source)
    print()
    print(table(summary))
    print(f"\nresults: {summary['run_dir']}\nMLflow run: {summary['mlflow_run_id']}")
    if summary["failed"]:
        print(f"failed boards: {', '.join(summary['failed'])}", file=sys.stderr)
    return 0 if summary["rows"] else 1


def _cmd_report(args) -> int:
    import json
    from pathlib import Path

    from suite.pipeline.lookup import resolve_config
    from suite.pipeline.tracking import Tracker
    from suite.report import tables

    cfg = resolve_config(args.run, args.set).effective()
    edge_dir = Path(cfg.runtime.cache_dir) / cfg.data.dataset / "edge"
    missing = [p for p in args.edge or [] if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"--edge {missing[0]}: no such file; give an edge_results.json written by `caenet edge bench` "
                          f"(they are under {edge_dir})")
    edge = [json.loads(Path(p).read_text()) for p in args.edge] if args.edge else tables.latest_edge_results(edge_dir)
    rows = tables.model_rows(cfg, args.models)
    report = tables.build(rows, edge, args.slo_ms)
    out = Path(args.out or Path(cfg.runtime.cache_dir) / cfg.data.dataset / "report" / cfg.name)
    out.mkdir(parents=True, exist_ok=True)
    title = tables.TITLES.get(cfg.data.dataset, cfg.data.dataset)
    text = tables.markdown(report, f"{title}: {cfg.name}")
    (out / "table.md").write_text(text + "\n")
    tables.write_csv(report, out / "table.csv")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    tables.figure1(report, out / "figure1.png")
    fig5 = tables.figure5(report, out / "figure5.png")
    tracker = Tracker(cfg.runtime)
    run_id = tracker.start_parent(f"report-{cfg.name}", {"edge_runs": [e.get("mlflow_run_id") for e in edge], "slo_ms": args.slo_ms},
                                  {"kind": "report", "dataset": cfg.data.dataset})
    for f in ("table.md", "table.csv", "report.json", "figure1.png") + (("figure5.png",) if fig5 else ()):
        tracker.log_artifact(run_id, out / f)
    tracker.end(run_id)
    print(text)
    print(f"\nreport: {out}\nMLflow run: {run_id}")
    if not edge:
        print(f"(no board measurements under {edge_dir}: run `caenet edge bench` first for the latency and energy columns)")
    return 0


def _cmd_data_check(args) -> int:
    from suite.data import INFO, check

    unknown = [n for n in args.datasets if n not in INFO]
    if unknown:
        raise ConfigError(f"unknown dataset {unknown[0]!r}; known: {', '.join(INFO)}")
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caenet", description="CAE-Net experiment suite: converting-autoencoder "
                                     "classifiers for edge boards, on Ray with MLflow tracking.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of user errors too (same as CAENET_DEBUG=1)")
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

    compare = sub.add_parser("compare", help="train every competitor of Tables I/II and compare them with CAE-Net here",
                             description="Runs (or reuses) the pipeline's baseline and CAE-Net, then every method under "
                             "compare.methods in the config: KD students, weight pruning, weight clustering, channel "
                             "pruning, int8 quantization, BranchyNet, SubFlow, CAE-Net's prune-until-the-SLO loop and the larger "
                             "CIFAR networks, each a cached stage "
                             "trained through Ray Train. Then measures accuracy, parameters (non-zero), size and batch-1 "
                             "latency of all of them on this machine and writes the table (Markdown, CSV, JSON) and "
                             "Fig. 1 with the SLO line, logged to MLflow. Example: caenet compare configs/cifar10_alexnet.yaml")
    compare.add_argument("config", help="YAML config with a compare: section, e.g. configs/cifar10_alexnet.yaml")
    compare.add_argument("--set", action="append", metavar="KEY=VALUE",
                         help="override a config key, e.g. --set compare.slo_ms=5 or --set compare.finetune.epochs=1")
    compare.add_argument("--smoke", action="store_true", help="a few hundred images and one epoch for every model")
    compare.add_argument("--out", help="output folder (default: <cache>/<dataset>/compare/<name>)")
    compare.set_defaults(func=_cmd_compare)

    export = sub.add_parser("export", help="export a finished run's models to TorchScript / ONNX, checked against PyTorch",
                            description="Finds the run's trained models in the stage cache (nothing is trained) and "
                            "exports each one, BatchNorm folded, plus CAE-Net's encoder and classifier on their own; "
                            "every file is run back on real test images and compared with PyTorch.")
    export.add_argument("run", metavar="CONFIG_OR_RUN", help="the run's YAML config, or the MLflow run id of `caenet run`")
    export.add_argument("--format", nargs="+", choices=["torchscript", "onnx"], default=["torchscript"])
    export.add_argument("--models", nargs="+", metavar="LABEL", help="baseline, caenet, caenet_no_kd, ... (default: all)")
    export.add_argument("--out", help="output folder (default: <cache>/<dataset>/exports/<name>)")
    export.add_argument("--images", type=_positive_int, default=64, help="test images for the equivalence check (at least 1)")
    export.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (must match the run)")
    export.set_defaults(func=_cmd_export)

    edge = sub.add_parser("edge", help="edge boards: deploy and benchmark over SSH")
    edge_sub = edge.add_subparsers(dest="edge_command", required=True, metavar="ACTION")
    bench = edge_sub.add_parser("bench", help="benchmark a run's models on the boards of an inventory file",
                                description="Exports the models each board's runtime needs, then for every board in "
                                "parallel: connects with Fabric (host keys checked), checks Python and the runtime, "
                                "pushes the models and a self-contained runner, times batch-1 inferences in rounds with "
                                "power sampling, fetches the results and cleans up. A failing board is reported alone; "
                                "each board x model is an MLflow run.")
    bench.add_argument("run", metavar="CONFIG_OR_RUN", help="the run's YAML config, or the MLflow run id of `caenet run`")
    bench.add_argument("--boards", required=True, help="boards inventory YAML (see configs/boards.example.yaml)")
    bench.add_argument("--models", nargs="+", metavar="LABEL", help="models to measure (default: all of the run)")
    bench.add_argument("--only", nargs="+", metavar="BOARD", help="only these boards of the inventory")
    bench.add_argument("--out", help="results folder (default: <cache>/<dataset>/edge)")
    bench.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (must match the run)")
    bench.set_defaults(func=_cmd_edge_bench)

    report = sub.add_parser("report", help="the paper's Table I / II, Fig. 1 and Fig. 5 from a run and its board measurements",
                            description="Accuracy, parameters and size of the run's models (measured now on the test set), "
                            "with per-board latency (speed-up over the baseline), energy (ratio, or N/A) and SLO verdicts "
                            "from the newest `caenet edge bench` of the run. Writes Markdown, CSV, JSON and PNGs, and logs "
                            "them to MLflow.")
    report.add_argument("run", metavar="CONFIG_OR_RUN", help="the run's YAML config, or the MLflow run id of `caenet run`")
    report.add_argument("--edge", nargs="+", metavar="EDGE_RESULTS_JSON", help="edge_results.json files (default: the newest)")
    report.add_argument("--models", nargs="+", metavar="LABEL", help="rows (default: every model of the run)")
    report.add_argument("--slo-ms", type=float, help="latency SLO in ms per board (the paper: 20 ms)")
    report.add_argument("--out", help="output folder (default: <cache>/<dataset>/report/<name>)")
    report.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (must match the run)")
    report.set_defaults(func=_cmd_report)

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


def _on_sigint(signum, frame):
    """Ctrl-C: mark the run interrupted (stage threads then end their MLflow runs KILLED, not
    FAILED, when Ray's shutdown breaks their calls), then interrupt as Python would."""
    from suite.pipeline.stage import INTERRUPTED

    INTERRUPTED.set()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        return args.func(args)
    except UserError as exc:  # one handler for every command: a new command gets it for free
        if args.debug or os.environ.get("CAENET_DEBUG") == "1":
            traceback.print_exc()
        print(f"caenet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("caenet: interrupted; finished stages are kept, run the same command again to resume", file=sys.stderr)
        _exit_now(130)
        return 130


def _exit_now(code: int, grace_s: float = 2.0) -> None:
    """Leave promptly after Ctrl-C. The run's MLflow runs are closed (KILLED) by now and Ray's
    shutdown is queued, but a stage thread can be stuck in a Ray call that never returns once
    Ray is gone, and the interpreter would wait for it forever at exit: give the threads a
    moment, then go (Ray's reaper ends a local Ray with this process)."""
    import threading
    import time

    deadline = time.monotonic() + grace_s
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() and not t.daemon and t is not threading.current_thread() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())

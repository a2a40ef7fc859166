"""``caenet report CONFIG_OR_RUN``: the paper's Tables I / II and Figures 1 and 5 from a run's
models (accuracy, parameters and size measured now) and its newest board measurements."""

from __future__ import annotations

import json
from pathlib import Path

from suite.commands.arguments import add_set, config_of
from suite.config import ConfigError
from suite.pipeline.context import cache_root
from suite.pipeline.session import open_session
from suite.report import tables

ORDER = 60
HELP = "the paper's Table I / II, Fig. 1 and Fig. 5 from a run and its board measurements"


def add_parser(sub) -> None:
    report = sub.add_parser("report", help=HELP,
                            description="Accuracy, parameters and size of the run's models (measured now on the test set), "
                            "with per-board latency (speed-up over the baseline), energy (ratio, or N/A) and SLO verdicts "
                            "from the newest `caenet edge bench` of the run. Writes Markdown, CSV, JSON and PNGs, and logs "
                            "them to MLflow. Example: caenet report configs/mnist_lenet.yaml --slo-ms 20")
    report.add_argument("run", metavar="CONFIG_OR_RUN", help="the run's YAML config, or the MLflow run id of `caenet run`")
    report.add_argument("--edge", nargs="+", metavar="EDGE_RESULTS_JSON", help="edge_results.json files (default: the newest)")
    report.add_argument("--models", nargs="+", metavar="LABEL", help="rows (default: every model of the run)")
    report.add_argument("--slo-ms", type=float, help="latency SLO in ms per board (the paper: 20 ms)")
    report.add_argument("--out", help="output folder (default: <cache>/<dataset>/report/<name>)")
    add_set(report, "--set runtime.cache_dir=/abs/cache (must match the run)")
    report.set_defaults(func=main)


def main(args) -> int:
    cfg = config_of(args, args.run)
    edge_dir = cache_root(cfg) / "edge"
    missing = [p for p in args.edge or [] if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"--edge {missing[0]}: no such file; give an edge_results.json written by `caenet edge bench` "
                          f"(they are under {edge_dir})")
    edge = [json.loads(Path(p).read_text()) for p in args.edge] if args.edge else tables.latest_edge_results(edge_dir)
    params = {"edge_runs": [e.get("mlflow_run_id") for e in edge], "slo_ms": args.slo_ms}
    with open_session(cfg, f"report-{cfg.name}", params=params, tags={"kind": "report"}) as session:
        cfg = session.cfg
        report = tables.build(tables.model_rows(cfg, args.models), edge, args.slo_ms)
        out = session.folder("report", args.out, cfg.name)
        out.mkdir(parents=True, exist_ok=True)
        text = tables.markdown(report, f"{tables.TITLES.get(cfg.data.dataset, cfg.data.dataset)}: {cfg.name}")
        (out / "table.md").write_text(text + "\n")
        tables.write_csv(report, out / "table.csv")
        (out / "report.json").write_text(json.dumps(report, indent=2))
        tables.figure1(report, out / "figure1.png")
        fig5 = tables.figure5(report, out / "figure5.png")
        for f in ("table.md", "table.csv", "report.json", "figure1.png") + (("figure5.png",) if fig5 else ()):
            session.tracker.log_artifact(session.run_id, out / f)
    print(text)
    print(f"\nreport: {out}\nMLflow run: {session.run_id}")
    if not edge:
        print(f"(no board measurements under {edge_dir}: run `caenet edge bench` first for the latency and energy columns)")
    return 0

"""``caenet edge bench CONFIG_OR_RUN --boards BOARDS.yaml``: a finished run's models exported,
pushed to the edge boards over SSH (Fabric) and timed there at batch 1, with energy where the
board has a power source; each board x model is an MLflow run."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from suite.commands.arguments import add_set, config_of
from suite.commands.export import export_run
from suite.edge.bench import RUNTIME_FORMAT, bench_boards
from suite.edge.boards import Inventory, load_inventory
from suite.timing import MEAN, P50, P90, P99
from suite.pipeline.session import Session, open_session

ORDER = 50
HELP = 'edge boards: deploy and benchmark a run'"'"'s models over SSH (latency, energy)'


def add_parser(sub) -> None:
    edge = sub.add_parser("edge", help=HELP)
    edge_sub = edge.add_subparsers(dest="edge_command", required=True, metavar="ACTION")
    bench = edge_sub.add_parser("bench", help="benchmark a run's models on the boards of an inventory file",
                                description="Exports the models each board's runtime needs, then for every board in "
                                "parallel: connects with Fabric (host keys checked), checks Python and the runtime, "
                                "pushes the models and a self-contained runner, times batch-1 inferences in rounds with "
                                "power sampling, fetches the results and cleans up. A failing board is reported alone; "
                                "each board x model is an MLflow run. "
                                "Example: caenet edge bench configs/mnist_lenet.yaml --boards configs/boards.example.yaml")
    bench.add_argument("run", metavar="CONFIG_OR_RUN", help="the run's YAML config, or the MLflow run id of `caenet run`")
    bench.add_argument("--boards", required=True, help="boards inventory YAML (see configs/boards.example.yaml)")
    bench.add_argument("--models", nargs="+", metavar="LABEL", help="models to measure (default: all of the run)")
    bench.add_argument("--only", nargs="+", metavar="BOARD", help="only these boards of the inventory")
    bench.add_argument("--out", help="results folder (default: <cache>/<dataset>/edge)")
    add_set(bench, "--set runtime.cache_dir=/abs/cache (must match the run)")
    bench.set_defaults(func=main)


def main(args) -> int:
    inventory = load_inventory(args.boards, args.only)
    cfg = config_of(args, args.run)
    source = None if Path(args.run).exists() else args.run
    summary = bench_run(cfg, inventory, args.models, args.out, source)
    return 0 if summary["rows"] else 1


def bench_run(cfg, inventory: Inventory, labels: list[str] | None = None, out: str | None = None,
              source_run: str | None = None) -> dict:
    """A finished run's models on the boards, as its own MLflow run (nested under ``source_run``);
    prints the table. ``caenet run --boards`` calls it after the pipeline."""
    params = {"boards": [b.name for b in inventory.boards], "bench": inventory.bench.model_dump(), "models": labels or "all"}
    tags = {"kind": "edge-bench", **({"source_run": source_run} if source_run else {})}
    with open_session(cfg, f"edge-{cfg.name}", params=params, tags=tags) as session:
        summary = edge_bench(session, inventory, labels, session.folder("edge", out), source_run=source_run)
    print()
    print(table(summary))
    print(f"\nresults: {summary['run_dir']}\nMLflow run: {summary['mlflow_run_id']}")
    if summary["failed"]:
        print(f"failed boards: {', '.join(summary['failed'])}", file=sys.stderr)
    return summary


def edge_bench(session: Session, inventory: Inventory, labels: list[str] | None, out: Path, source_run: str | None = None) -> dict:
    """Export what the boards need, benchmark every board in parallel, log each board x model to
    MLflow under the session's run (ended FAILED when no board measured anything)."""
    cfg, tracker, parent, log = session.cfg, session.tracker, session.run_id, session.log
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = out / f"{stamp}-{cfg.name}"
    exports = {}
    for fmt in sorted({RUNTIME_FORMAT[b.runtime] for b in inventory.boards}):
        exports[fmt] = export_run(cfg, labels, fmt, run_dir / "exports")
        log(f"exported {len(exports[fmt][1])} model files as {fmt} to {exports[fmt][0]}")
    results = bench_boards(inventory.boards, inventory.bench, exports, run_dir / "boards", log)
    if source_run:
        tracker.set_tag(parent, "mlflow.parentRunId", source_run)  # nested under the training run it measures
    stage_dirs = {e["name"]: e["stage_dir"] for _, entries in exports.values() for e in entries}
    training_runs = _training_runs(tracker, stage_dirs)
    rows, failures = [], {}
    for res in results:
        if not res.ok:
            failures[res.board] = res.error
            continue
        for row in res.rows:
            rows.append(row)
            run_id = tracker.start_child(f"{row['board']}/{row['model']}", {
                "board": row["board"], "board_kind": row["board_kind"], "model": row["model"], "runtime": row["runtime"],
                "runtime_version": row["runtime_version"], "threads": row["threads"], "power_source": row["power_source"]},
                {"board": row["board"], "model": row["model"], "kind": "edge-measurement", "stage_dir": stage_dirs.get(row["model"], "")})
            tracker.log_metrics(run_id, {k: row[k] for k in (P50, P90, P99, MEAN, "inferences",
                                                            "energy_mj", "dynamic_energy_mj", "idle_watts", "mean_watts")
                                         if row[k] is not None})
            if row["energy_note"]:
                tracker.set_tag(run_id, "energy", row["energy_note"])
            for key, value in training_runs.get(row["model"], {}).items():  # link to the training that made it
                tracker.set_tag(run_id, key, value)
            system = res.system
            for key in ("governor", "cpu_khz", "model", "machine", "kernel", "python", "runtime_version"):
                if system.get(key):
                    tracker.set_tag(run_id, f"board.{key}", str(system[key]))
            for zone, celsius in (system.get("temperatures_c") or {}).items():
                tracker.log_metrics(run_id, {f"temperature_c.{zone}": celsius})
            tracker.end(run_id)
    summary = {"run_dir": str(run_dir), "mlflow_run_id": parent, "rows": rows, "failed": failures,
               "systems": {r.board: r.system for r in results if r.ok}, "dataset": cfg.data.dataset, "config": cfg.name}
    (run_dir / "edge_results.json").write_text(json.dumps(summary, indent=2, default=str))
    tracker.log_artifact(parent, run_dir / "edge_results.json")
    session.status = "FINISHED" if rows or not failures else "FAILED"  # FAILED: no board measured anything
    if failures:
        tracker.set_tag(parent, "failed_boards", ", ".join(f"{b}: {e}" for b, e in failures.items())[:4000])
    return summary


def _training_runs(tracker, stage_dirs: dict[str, str]) -> dict[str, dict]:
    """model -> {training_run_id, pipeline_run_id}: the MLflow stage run that trained it (not a cache hit)."""
    links = {}
    for name, stage_dir in stage_dirs.items():
        try:
            found = tracker.client.search_runs([tracker.experiment_id],
                                               f"tags.stage_dir = '{stage_dir}' and tags.cache_hit = 'false'", max_results=1)
        except Exception:  # an older store without these tags: no link, nothing else lost
            found = []
        if found:
            run = found[0]
            links[name] = {"training_run_id": run.info.run_id, "pipeline_run_id": run.data.tags.get("mlflow.parentRunId", "")}
    return links


def table(summary: dict) -> str:
    """Rows per board and model: latency (speed-up vs the baseline on that board) and energy."""
    bw = max([5] + [len(r["board"]) for r in summary["rows"]] + [len(b) for b in summary["failed"]])
    mw = max([5] + [len(r["model"]) for r in summary["rows"]])
    lines = [f"{'board':{bw}} {'model':{mw}} {'p50 ms':>9} {'speed-up':>9} {'p90 ms':>9} {'energy mJ':>10}  note"]
    base = {r["board"]: r[P50] for r in summary["rows"] if r["model"] == "baseline"}
    for r in summary["rows"]:
        speed = f"{base[r['board']] / r[P50]:.2f}x" if r["board"] in base else ""
        energy = f"{r['energy_mj']:.3f}" if r["energy_mj"] is not None else "N/A"
        lines.append(f"{r['board']:{bw}} {r['model']:{mw}} {r[P50]:9.3f} {speed:>9} {r[P90]:9.3f} {energy:>10}  {r['energy_note'] or ''}")
    for board, error in summary["failed"].items():
        lines.append(f"{board:{bw}} FAILED: {error}")
    return "\n".join(lines)

"""Export a finished run's models, and benchmark them on the boards, recording it all in MLflow."""

from __future__ import annotations

import json
import time
from pathlib import Path

from suite.config import ExperimentConfig
from suite.edge.boards import Inventory
from suite.edge.export import FORMATS, export_model, write_manifest


def export_run(cfg: ExperimentConfig, labels: list[str] | None, fmt: str, out: Path, images: int = 64) -> tuple[Path, list[dict]]:
    """Export the run's models (default: all of them) to ``out/<format>/``; returns (folder, entries)."""
    from suite.data import load_split
    from suite.pipeline.lookup import trained_models
    from suite.stages.common import load_model

    cfg = cfg.effective()
    models = trained_models(cfg)
    unknown = sorted(set(labels or []) - set(models))
    if unknown:
        from suite.config import ConfigError

        raise ConfigError(f"--models: unknown {', '.join(unknown)}; this run has {', '.join(models)}")
    test = load_split(cfg.data, "test")
    x = test.floats(slice(0, images))
    folder = out / fmt
    entries = []
    for label in labels or list(models):
        name, kwargs, stage = models[label]
        model = load_model(name, kwargs, stage.file("model.pt")).cpu()
        for e in export_model(label, model, x, fmt, folder):
            e.update({"model": name, "model_kwargs": kwargs, "stage_dir": str(stage.path)})
            entries.append(e)
    write_manifest(folder, entries, {"config": cfg.name, "dataset": cfg.data.dataset, "format": fmt,
                                     "exported": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return folder, entries


def edge_bench(cfg: ExperimentConfig, inventory: Inventory, labels: list[str] | None, out: Path,
               source_run: str | None = None, log=print) -> dict:
    """Export what the boards need, benchmark every board in parallel, log each board x model to MLflow."""
    from suite.edge.bench import RUNTIME_FORMAT, bench_boards
    from suite.pipeline.tracking import Tracker

    cfg = cfg.effective()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = out / f"{stamp}-{cfg.name}"
    exports = {}
    for fmt in sorted({RUNTIME_FORMAT[b.runtime] for b in inventory.boards}):
        exports[fmt] = export_run(cfg, labels, fmt, run_dir / "exports")
        log(f"exported {len(exports[fmt][1])} model files as {fmt} to {exports[fmt][0]}")
    results = bench_boards(inventory.boards, inventory.bench, exports, run_dir / "boards", log)
    tracker = Tracker(cfg.runtime)
    parent = tracker.start_parent(f"edge-{cfg.name}", {"boards": [b.name for b in inventory.boards],
                                                       "bench": inventory.bench.model_dump(), "models": labels or "all"},
                                  {"kind": "edge-bench", "dataset": cfg.data.dataset, **({"source_run": source_run} if source_run else {})})
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
            tracker.log_metrics(run_id, {k: row[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "inferences",
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
    tracker.end(parent, "FINISHED" if rows or not failures else "FAILED")  # FAILED: no board measured anything
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
    base = {r["board"]: r["p50_ms"] for r in summary["rows"] if r["model"] == "baseline"}
    for r in summary["rows"]:
        speed = f"{base[r['board']] / r['p50_ms']:.2f}x" if r["board"] in base else ""
        energy = f"{r['energy_mj']:.3f}" if r["energy_mj"] is not None else "N/A"
        lines.append(f"{r['board']:{bw}} {r['model']:{mw}} {r['p50_ms']:9.3f} {speed:>9} {r['p90_ms']:9.3f} {energy:>10}  {r['energy_note'] or ''}")
    for board, error in summary["failed"].items():
        lines.append(f"{board:{bw}} FAILED: {error}")
    return "\n".join(lines)


__all__ = ["FORMATS", "edge_bench", "export_run", "table"]

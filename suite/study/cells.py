"""``caenet study``: every variant x seed of a study file, then one table of mean ± std.

1. Every cell (a variant at a seed) is an experiment config; all of them were validated when
   the file loaded. Cells train side by side in one Ray session, each through the pipeline's
   stage graph, so a stage two cells share (the baseline of a seed, its clustering, a CAE
   that only the classifier's variants differ on) is trained once: the other cell waits on
   the stage's lock and finds it cached. A cell that fails is reported, the others go on.
2. Ray stops; each cell's baseline and CAE-Net are evaluated (test accuracy, batch-1 latency
   in alternating rounds) by the pipeline's own evaluate stage, cached like any stage.
3. One row per variant: mean ± std over the seeds. Written to stdout, ``study.md``,
   ``study.json``, ``cells.parquet`` and ``study.png`` (bars with error bars), and to MLflow:
   a parent run with one nested run per cell (its stages nested under it).
4. With ``timing: fresh`` (a scaling study), each cell trains all its stages in a folder of its
   own, one at a time after an untimed warm-up, and ``suite.study.scaling`` adds the timing view
   (``timing.png``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from suite import storage
from suite.config import ExperimentConfig
from suite.distributed.launch import warm_workers
from suite.errors import UserError, last_line
from suite.metrics import PARAMETERS, TEST_ACC
from suite.timing import P50
from suite.pipeline import run_info
from suite.pipeline.context import Context
from suite.pipeline.session import open_session, stage_context
from suite.stages import evaluate
from suite.stages.graph import concurrent_slots, train_stages
from suite.study import scaling
from suite.study.study_file import Cell, StudyConfig
from suite.study.table import aggregate, markdown, plot, write_cells
from suite.training.convergence import unconverged

# the stages whose outputs each cell reports, and whether the cell trained them or found them cached
REPORTED_STAGES = ("baseline", "clustering", "autoencoder", "caenet")


def run_study(study: StudyConfig, cells: list[Cell], out: str | Path | None = None, log=print) -> dict:
    """Run (or reuse) every cell, evaluate them, and write the study's table; returns its summary."""
    started = time.perf_counter()
    cells = [Cell(c.variant, c.seed, c.cfg.effective()) for c in cells]
    base = cells[0].cfg
    params = {"experiment": study.experiment, "set": study.set, "seeds": study.seeds, "seed_key": study.seed_key,
              "variants": {v.name: v.set for v in study.variants}, "smoke": base.smoke}
    with open_session(base, f"study-{study.name}", params=params, tags={"kind": "study"}, check_data=True, log=log) as session:
        tracker, parent = session.tracker, session.run_id
        # a smoke run does not overwrite the real table
        out_dir = session.folder("studies", out, name=study.name + ("-smoke" if base.smoke else ""))
        out_dir.mkdir(parents=True, exist_ok=True)
        if study.timing == "fresh":  # every stage trained by its own cell, in a folder of its own
            cells = fresh_cells(cells, out_dir / "fresh" / time.strftime("%Y%m%d-%H%M%S"))
        runs = {c: tracker.start_child(c.label, {**run_info.changed_params(c.cfg), "variant": c.variant, "seed": c.seed},
                                       {"kind": "study-cell", "variant": c.variant, "seed": str(c.seed)}) for c in cells}
        contexts = {c: stage_context(c.cfg, tracker.under(runs[c]), _prefixed(log, c), console_prefix=f"({c.label}) ")
                    for c in cells}
        t0 = time.perf_counter()
        with session.ray():
            if study.timing == "fresh":  # one-time start-up (imports, processes) would land on the first cell
                log("warming up, untimed: the first cell at smoke scale in a folder of its own")
                warm_workers(base.runtime)
                _warm_up(cells[0], out_dir / "warm-up", log)
                t0 = time.perf_counter()
            trained, errors = _train_all(study, cells, contexts, log)
            cluster = scaling.cluster_size()
        train_seconds = time.perf_counter() - t0
        rows = []
        for cell in cells:
            if cell not in errors:
                try:
                    row = _evaluate(cell, contexts[cell], trained[cell])
                except Exception as exc:  # one cell's evaluation: the others' results still make the table
                    errors[cell] = _failure_line(exc)
            if cell in errors:
                rows.append({"variant": cell.variant, "seed": cell.seed, "error": errors[cell]})
                tracker.set_tag(runs[cell], "error", errors[cell][:500])
                tracker.end(runs[cell], "FAILED")
                continue
            row["mlflow_run_id"] = runs[cell]
            if study.timing == "fresh":
                row.update(scaling.cell_timing(cell.cfg.runtime, contexts[cell].runner.results, cluster))
            rows.append(row)
            tracker.log_metrics(runs[cell], {k: v for k, v in row.items() if isinstance(v, (int, float))})
            tracker.end(runs[cell])
        summary = aggregate(study, rows, _same_cae(study, cells, contexts))
        summary["failed_cells"] = len(errors)
        if errors:
            tracker.set_tag(parent, "failed_cells", str(len(errors)))
        summary.update({"name": study.name, "smoke": base.smoke, "seeds": study.seeds, "train_seconds": round(train_seconds, 1),
                        "wall_seconds": round(time.perf_counter() - started, 1), "host": platform.node(),
                        "cpus": os.cpu_count(), "mlflow_run_id": parent, "output": str(out_dir), "dataset": base.data.dataset})
        text = markdown(summary)
        files = ["study.md", "study.json", "cells.parquet", "study.png"]
        if study.timing == "fresh":
            summary["timing"] = scaling.aggregate(study, rows, cluster, train_seconds)
            text += "\n\n" + scaling.markdown(summary["timing"])
            scaling.append_history(summary["timing"], out_dir.parent / f"{out_dir.name}.timing-history.jsonl")
            scaling.plot(summary["timing"], out_dir / "timing.png")
            files.append("timing.png")
        (out_dir / "study.md").write_text(text + "\n")
        (out_dir / "study.json").write_text(json.dumps({**summary, "cells": rows}, indent=2, default=str))
        write_cells(rows, out_dir / "cells.parquet")
        plot(summary, out_dir / "study.png")
        for name in files:
            tracker.log_artifact(parent, out_dir / name)
        for variant in summary["variants"]:
            tracker.log_metrics(parent, {f"{variant['name']}.{k}": v for k, v in variant.items()
                                         if k.endswith(("_mean", "_std")) and v is not None})
        summary["table"] = text
    return summary


def _prefixed(log, cell: Cell):
    return lambda line: log(f"({cell.label}) {line}")


def _train_all(study: StudyConfig, cells: list[Cell], contexts: dict, log) -> tuple[dict, dict]:
    """Every cell's trained models; a cell whose stages failed is an error line instead."""
    # a timing study's cells one at a time unless it says otherwise: side by side they time each other
    slots = study.max_concurrent or (1 if study.timing == "fresh" else max(1, concurrent_slots(cells[0].cfg.runtime)))
    trained, errors = {}, {}
    pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="study-cell")
    try:
        futures = {cell: pool.submit(train_stages, contexts[cell]) for cell in cells}
        for cell, future in futures.items():
            try:
                trained[cell] = future.result()
            except Exception as exc:  # this cell failed (a training past its retries, a store error): the others go on
                errors[cell] = _failure_line(exc)
                log(f"({cell.label}) failed: {errors[cell]}")
    except KeyboardInterrupt:  # leave at once; Ray's shutdown stops the trainings, checkpoints stay
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return trained, errors


def _failure_line(exc: BaseException) -> str:
    """A failure as one line: a UserError's message, or the type and last line of anything else."""
    return str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {last_line(exc)}"


def _evaluate(cell: Cell, ctx: Context, models: dict) -> dict:
    """The cell's row: both models' test accuracy and batch-1 latency, and its stages' numbers."""
    ev = evaluate.run(ctx, {"baseline": models["baseline"], "caenet": models["caenet"]}).metrics
    stages = ctx.runner.results
    row = {"variant": cell.variant, "seed": cell.seed,
           "caenet_test_acc": ev[f"caenet.{TEST_ACC}"], "baseline_test_acc": ev[f"baseline.{TEST_ACC}"],
           "caenet_p50_ms": ev[f"caenet.{P50}"], "baseline_p50_ms": ev[f"baseline.{P50}"],
           "caenet_parameters": ev[f"caenet.{PARAMETERS}"],
           "reconstruction_mse": stages["autoencoder"].metrics.get("reconstruction_mse"),
           "k_mean": stages["clustering"].metrics.get("k_mean")}
    row["delta_acc"] = row["caenet_test_acc"] - row["baseline_test_acc"]
    row["speedup"] = row["baseline_p50_ms"] / row["caenet_p50_ms"]
    row["trained"] = [s for s in REPORTED_STAGES if s in stages and not stages[s].cached]
    row["stage_keys"] = {s: stages[s].key for s in REPORTED_STAGES if s in stages}
    # trainings of this cell that did not learn (suite.training.convergence): the variant's row is marked
    row["not_converged"] = sorted(unconverged({n: r.metrics for n, r in stages.items()}))
    return row


def _same_cae(study: StudyConfig, cells: list[Cell], contexts: dict) -> dict[str, bool]:
    """Per variant: does it train the very CAE the reference variant does (same stage key at
    every seed)? Then its reconstruction MSE says nothing of its own."""
    key = {(c.variant, c.seed): contexts[c].runner.results.get("autoencoder") for c in cells}
    out = {}
    for variant in study.variants:
        pairs = [(key.get((variant.name, s)), key.get((study.reference, s))) for s in study.seeds]
        out[variant.name] = variant.name != study.reference and all(a is not None and b is not None and a.key == b.key
                                                                    for a, b in pairs)
    return out


def _warm_up(cell: Cell, folder: Path, log) -> None:
    """``cell``'s pipeline at smoke scale in ``folder`` (emptied first), recorded nowhere: what
    a process does once (imports, worker processes, Ray Train's first start) is then done."""
    shutil.rmtree(folder, ignore_errors=True)
    cfg = _moved(cell.cfg.model_copy(update={"smoke": True}).effective(), folder, "warm-up")
    try:
        ctx = stage_context(cfg, None, lambda line: None)
        models = train_stages(ctx)
        evaluate.run(ctx, {"baseline": models["baseline"], "caenet": models["caenet"]})
    except Exception as exc:  # the cells will say what is wrong, each in its row
        log(f"warm-up failed: {_failure_line(exc)}")


def fresh_cells(cells: list[Cell], root: Path) -> list[Cell]:
    """Each cell with a cache (and checkpoint storage) of its own under ``root``: it finds nothing
    cached and trains every stage itself, as a timing study needs."""
    out = []
    for cell in cells:
        slug = "".join(ch if ch.isalnum() else "-" for ch in f"{cell.variant}-seed{cell.seed}").strip("-")
        out.append(Cell(cell.variant, cell.seed, _moved(cell.cfg, root / slug, "fresh", root.name, slug)))
    return out


def _moved(cfg: ExperimentConfig, folder: Path, *storage_parts: str) -> ExperimentConfig:
    """A copy of ``cfg`` whose cache is ``folder`` and whose checkpoint storage, when set (a
    cluster's, which every node reaches), is ``storage_parts`` under it: apart from every other run's."""
    cfg = cfg.model_copy(deep=True)
    cfg.runtime.cache_dir = str(folder)
    if cfg.runtime.storage:
        cfg.runtime.storage = storage.join(cfg.runtime.storage, *storage_parts)
    return cfg


def smoke_cells(cells: list[Cell]) -> list[Cell]:
    """``--smoke``: every cell at smoke scale."""
    return [Cell(c.variant, c.seed, c.cfg.model_copy(update={"smoke": True})) for c in cells]


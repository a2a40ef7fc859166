"""``caenet compare``: CAE-Net against every competitor of Tables I / II on one dataset.

The pipeline's stages give the baseline and CAE-Net (cached from ``caenet run``); each
``compare.methods`` entry is then one more cached stage (``suite.methods.stage``),
all in one Ray session. After Ray stops, every model is measured the same way on this
machine: test accuracy, parameters (non-zero), size, and batch-1 latency in alternating
rounds (BranchyNet: over real test images, since where an image exits depends on it).
With ``--boards``, every model is also timed on each board (one Ray actor per board,
``suite.edge.pool``; the measurement cache keeps what a board measured), one more column
group per board, and ``slo_prune`` methods with ``board: NAME`` time their candidates there.
The table (Markdown, CSV, JSON) and Fig. 1 (latency vs accuracy, with the SLO line) are
written under ``<cache>/<dataset>/compare/<name>/`` and logged to MLflow.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch

from suite.commands.common import add_set, add_smoke, config_of
from suite.config import ConfigError, ExperimentConfig
from suite.data import load_split
from suite.distributed.ray_runtime import ensure_ray
from suite.edge.bench import BoardError
from suite.edge.boards import Inventory, load_inventory
from suite.edge.pool import BoardPool, BoardTiming, Exports, time_on_board
from suite.methods import stage as competitors
from suite.metrics import P50, P90, accuracy, batch1_latency, count_parameters, fold_batchnorm, serialized_bytes
from suite.models.branchy import BranchyNet
from suite.pipeline.context import Context, cache_root
from suite.pipeline.latency_cache import FOLDER as LATENCY_FOLDER
from suite.pipeline.latency_cache import LatencyCache
from suite.pipeline.session import open_session
from suite.report import tables
from suite.stages.common import Trained
from suite.stages.graph import train_stages
from suite.timing import Protocol

ORDER = 30
HELP = 'train every competitor of Tables I/II and compare them with CAE-Net here'


def add_parser(sub) -> None:
    compare = sub.add_parser("compare", help=HELP,
                             description="Runs (or reuses) the pipeline's baseline and CAE-Net, then every method under "
                             "compare.methods in the config (`caenet methods` lists the kinds: KD students, weight "
                             "pruning, weight clustering, channel pruning, int8 quantization, BranchyNet, SubFlow, AdaDeep, "
                             "CAE-Net's prune-until-the-SLO loop and the larger CIFAR networks), each a cached stage "
                             "trained through Ray Train. Then measures accuracy, parameters (non-zero), size and batch-1 "
                             "latency of all of them on this machine and writes the table (Markdown, CSV, JSON) and "
                             "Fig. 1 with the SLO line, logged to MLflow. Example: caenet compare configs/cifar10_alexnet.yaml")
    compare.add_argument("config", help="YAML config with a compare: section, e.g. configs/cifar10_alexnet.yaml")
    add_set(compare, "--set compare.slo_ms=5 or --set compare.finetune.epochs=1")
    add_smoke(compare, "a few hundred images and one epoch for every model")
    compare.add_argument("--out", help="output folder (default: <cache>/<dataset>/compare/<name>)")
    compare.add_argument("--boards", metavar="BOARDS.yaml", help="edge boards (configs/boards.example.yaml): every model "
                         "is also timed on each board, beside the baseline, unless the measurement cache has it for "
                         "that board; slo_prune methods with board: NAME time their candidates there")
    compare.add_argument("--only", nargs="+", metavar="BOARD", help="only these boards of --boards")
    compare.set_defaults(func=main)


def main(args) -> int:
    if args.only and not args.boards:
        raise ConfigError("--only names boards of --boards: give --boards BOARDS.yaml too")
    boards = load_inventory(args.boards, args.only) if args.boards else None
    report = run_compare(config_of(args, args.config), out=args.out, boards=boards)
    print()
    print(report["markdown"])
    print(f"\nresults: {report['output']}\nMLflow run: {report['mlflow_run_id']}")
    for board, error in report["failed_boards"].items():  # the rest of the table is kept; the exit says so
        print(f"board {board} failed: {error}; its cells are N/A (a re-run measures only what is missing)", file=sys.stderr)
    return 1 if report["failed_boards"] else 0

BOARD = "this-cpu"  # the column of the table: this machine, as ``caenet report`` has one per board


def train_all(ctx: Context) -> dict[str, Trained]:
    """Baseline, CAE-Net and every configured competitor, trained or found in the cache."""
    models = train_stages(ctx)
    rows = {label: models[label] for label in ("baseline", "caenet")}
    entropy = ctx.runner.results["entropy"]
    for method in ctx.cfg.compare.methods:
        rows[method.name] = competitors.run(ctx, method, rows, entropy)
    return rows


def measure(cfg: ExperimentConfig, rows: dict[str, Trained], test, log=print) -> tuple[dict, list[dict]]:
    """(table rows, latency rows) of every model, measured on this machine (``test``: the test split)."""
    lat = cfg.evaluate.latency
    table, loaded, varied = {}, {}, set()
    for label, trained in rows.items():
        model = trained.load()  # int8 TorchScript loads on the CPU, float models on device()
        row = {"model": trained.model or "int8-torchscript",
               "test_acc": accuracy(model, test.images, test.labels, cfg.evaluate.batch_size)}
        if isinstance(model, BranchyNet):  # exit shares over the test set, in batches
            exits = torch.cat([_exits_of(model, test.images[i : i + 256]) for i in range(0, len(test.images), 256)])
            for i in range(model.num_exits):
                row[f"exit_share_{i}"] = float((exits == i).float().mean())
            varied.add(label)
        row.update(trained.parameters or count_parameters(model), **tables.convergence_of(trained.stage.metrics))
        row["size_bytes"] = trained.size_bytes or serialized_bytes(model)
        table[label] = row
        loaded[label] = (fold_batchnorm(model) if lat.fold_batchnorm else model).cpu().eval()  # TorchScript: as is
    log(f"timing {len(loaded)} models at batch 1 on {lat.threads} thread(s), at least {lat.windows} alternating windows each")
    example = test.floats(slice(0, min(len(test.images), 200)))
    timings = batch1_latency(loaded, example, lat.threads, Protocol.of(lat), varied=varied)
    latency_rows = [{"board": BOARD, "model": label, **t, "energy_mj": None,
                     "energy_note": "not measured by compare (use `caenet edge bench` on a board with a power source)"}
                    for label, t in timings.items()]
    for label, t in timings.items():
        table[label].update(t)
    return table, latency_rows


def time_rows_on_boards(pool: BoardPool, rows: dict[str, Trained], test, cache: LatencyCache,
                        log=print) -> dict[str, BoardTiming]:
    """Every row's model on every board of ``pool``, beside the baseline, unless the cache has its
    architecture for that board. A registry model is identified by [name, kwargs] (dense latency
    does not depend on the weights' values), an int8 TorchScript by its stage; BranchyNet is left
    out (where an image exits depends on the image, and an exported trace runs one path)."""
    models, architectures, skipped = {}, {}, {}
    for label, trained in rows.items():
        model = trained.load()
        if isinstance(model, BranchyNet):
            skipped[label] = "early exits depend on the image; an exported trace runs one exit path"
            continue
        models[label] = model
        if label != "baseline":
            architectures[label] = ([trained.model, trained.kwargs] if trained.model else
                                    ["int8-torchscript", trained.stage.path.name])
    log(f"timing {len(models)} models on {len(pool.actors)} board(s): {', '.join(pool.actors)}, "
        "unless the measurement cache has them for that board")
    timings = pool.time_on_boards(models, architectures, test.floats(slice(0, pool.inventory.bench.images)), cache, log=log)
    for t in timings.values():
        t.not_exported.update(skipped)
        if t.error:
            log(f"[{t.board}] FAILED: {t.error} (its cells are N/A; the other boards go on)")
        elif t.timed is not None and t.timed.cached:
            log(f"[{t.board}] {len(t.timed.cached)} of {len(architectures)} model(s) from the measurement cache: not timed again")
    return timings


def _board_timer(pool: BoardPool, name: str, cache: LatencyCache, log):
    """The ``Context.board_timers`` entry of one board: models timed beside the baseline there
    (a fresh export per call: one label names different models from call to call)."""
    def timer(models: dict, architectures: dict, images) -> dict:
        t = time_on_board(pool.actors[name], models, architectures, images, cache, log=log, exports=Exports(), name=name)
        missing = [label for label in models if t.timed is None or label not in t.timed.stats]
        if t.error or missing:
            why = t.error or "; ".join(f"{label}: {t.not_exported.get(label, 'not measured')}" for label in missing)
            raise BoardError(f"board {name}: {why}")
        return t.timed.stats
    return timer


def _board_rows(on_boards: dict[str, BoardTiming]) -> tuple[list[dict], dict[str, str]]:
    """(latency rows of every board, in ``tables.build``'s form with the paired speed-up; board ->
    why it failed)."""
    rows = []
    for t in on_boards.values():
        if t.timed is None:
            continue
        for label, stats in t.timed.stats.items():
            row = {**stats, "board": t.board, "model": label, "cached": label in t.timed.cached,
                   "energy_mj": stats.get("energy_mj"), "energy_note": stats.get("energy_note")}
            if label != "baseline":
                row["speedup"], row["speedup_lo"], row["speedup_hi"] = t.timed.speedup(label)
            rows.append(row)
    return rows, {b: t.error for b, t in on_boards.items() if t.error}


@torch.no_grad()
def _exits_of(model, images: torch.Tensor) -> torch.Tensor:
    model(images.float().to(next(model.parameters()).device) / 255.0)
    return model.exit_index.cpu()


def run_compare(cfg: ExperimentConfig, log=print, out: str | Path | None = None, boards: Inventory | None = None) -> dict:
    """Train what is missing, measure everything (on ``boards`` too), write the tables and
    Fig. 1; return the report."""
    if not cfg.compare.methods:
        log("compare.methods is empty: the table holds the baseline and CAE-Net only (see configs/ for a full list)")
    names = [b.name for b in boards.boards] if boards else []
    for method in cfg.compare.methods:
        if getattr(method, "board", None) and method.board not in names:
            raise ConfigError(f"compare.methods[{method.name!r}].board: {method.board} is not a board of --boards "
                              f"({', '.join(names) if names else 'no --boards FILE given'}); give the boards file that names it")
    with open_session(cfg, f"compare-{cfg.name}", tags={"kind": "compare"}, check_data=True, log=log) as session:
        cfg, tracker, parent = session.cfg, session.tracker, session.run_id
        ctx = session.context()
        folder = session.folder("compare", out, cfg.name)
        folder.mkdir(parents=True, exist_ok=True)
        cache = LatencyCache(cache_root(cfg) / LATENCY_FOLDER)
        test = load_split(cfg.data, "test")  # read once: the boards and this machine time the same images
        with session.ray(tune=any(m.uses_tune for m in cfg.compare.methods)):
            pool = None
            if boards:
                ensure_ray()  # the board actors need Ray up now (stages start it only when they train)
                pool = BoardPool(boards)
            try:
                if pool:
                    ctx.board_timers = {name: _board_timer(pool, name, cache, log) for name in pool.actors}
                rows = train_all(ctx)
                on_boards = time_rows_on_boards(pool, rows, test, cache, log) if pool else {}
            finally:
                if pool:
                    pool.close()
        table, latency_rows = measure(cfg, rows, test, log)  # after Ray has stopped: its daemons skew timings
        board_rows, failed_boards = _board_rows(on_boards)
        report = tables.build(table, [{"rows": latency_rows + board_rows}], cfg.compare.slo_ms)
        report["host"] = platform.node()
        report["threads"] = cfg.evaluate.latency.threads
        report["failed_boards"] = failed_boards
        report["notes"] = [f"board {b} failed: {e} (its cells are N/A)" for b, e in failed_boards.items()]
        report["notes"] += [f"{t.board}: {label} N/A: {why}" for t in on_boards.values() for label, why in t.not_exported.items()]
        report["boards_system"] = {b: t.system for b, t in on_boards.items()}
        for row in report["rows"]:
            row["stage_dir"] = str(rows[row["method"]].stage.path)
            row["method"] = {"baseline": f"{cfg.baseline.model} (baseline)", "caenet": "CAE-Net"}.get(row["method"], row["method"])
        title = f"{tables.TITLES.get(cfg.data.dataset, cfg.data.dataset)}: {cfg.name}, batch-1 latency on this machine"
        text = tables.markdown(report, title)
        (folder / "table.md").write_text(text + "\n")
        tables.write_csv(report, folder / "table.csv")
        (folder / "report.json").write_text(json.dumps(report, indent=2))
        tables.figure1(report, folder / "figure1.png")
        for name in ("table.md", "table.csv", "report.json", "figure1.png"):
            tracker.log_artifact(parent, folder / name)
        tracker.log_metrics(parent, {f"{label}.{k}": v for label, row in table.items() for k, v in row.items()
                                     if isinstance(v, (int, float))})
        for row in board_rows:  # each board's own, the board named in the metric
            tracker.log_metrics(parent, {f"{row['model']}.{k}.{row['board']}": row[k] for k in (P50, P90, "speedup")
                                         if isinstance(row.get(k), float) and row[k] == row[k]})
        for t in on_boards.values():
            for key, value in t.tags().items():
                tracker.set_tag(parent, key, value)
        if failed_boards:
            tracker.set_tag(parent, "failed_boards", "; ".join(f"{b}: {e}" for b, e in failed_boards.items())[:4000])
    report["markdown"] = text
    report["output"] = str(folder)
    report["mlflow_run_id"] = parent
    return report

"""``caenet compare``: CAE-Net against every competitor of Tables I / II on one dataset, at one
seed or several (``compare.seeds``, ``--seeds``).

The pipeline's stages give the baseline and CAE-Net (cached from ``caenet run``); each
``compare.methods`` entry is then one more cached stage (``suite.methods.comparison_stage``),
all in one Ray session. After Ray stops, every model is measured the same way on this
machine: test accuracy, parameters (non-zero), size, and batch-1 latency in alternating
rounds (BranchyNet: over real test images, since where an image exits depends on it).
With ``--boards``, every model is also timed on each board (one Ray actor per board,
``suite.edge.pool``; the measurement cache keeps what a board measured), one more column
group per board, and ``slo_prune`` methods with ``board: NAME`` time their candidates there.
At several seeds every row is trained at each (one after another, in one Ray session; a seed
already trained is a cache hit): accuracy becomes mean ± std with a paired 95% interval of the
gap to the baseline (``suite.report.intervals``), and each architecture is timed once. The
table (Markdown, CSV, JSON), Fig. 1 (latency vs accuracy, with the SLO line) and the
accuracy-latency front (``front.png``, the headline row marked) are written under
``<cache>/<dataset>/compare/<name>/`` and logged to MLflow.
"""

from __future__ import annotations

import json
import math
import platform
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from suite.commands.arguments import add_publish, add_set, add_smoke, config_of, publish
from suite.config import ConfigError, ExperimentConfig
from suite.data import fit_and_val, load_split
from suite.distributed.ray_runtime import ensure_ray
from suite.edge.bench import BoardError
from suite.edge.boards import Inventory, load_inventory
from suite.edge.pool import BoardPool, BoardTiming, Exports, time_on_board
from suite.methods import comparison_stage as competitors
from suite.compression.structured import prune_channels
from suite.metrics import accuracy, batch1_latency, count_parameters, fold_batchnorm, serialized_bytes
from suite.timing import P50, P90
from suite.models import create_model, geometry
from suite.models.branchy import BranchyNet
from suite.pipeline.context import Context, cache_root
from suite.pipeline.latency_cache import FOLDER as LATENCY_FOLDER
from suite.pipeline.latency_cache import LatencyCache
from suite.pipeline.session import open_session, stage_context
from suite.report import intervals, tables
from suite.stages.trained import Trained
from suite.stages.graph import train_stages
from suite.timing import HIGH, LOW, WINDOW_P50, Protocol, speedup

ORDER = 30
HELP = 'train every competitor of Tables I/II and compare them with CAE-Net here'


def add_parser(sub) -> None:
    compare = sub.add_parser("compare", help=HELP,
                             description="Runs (or reuses) the pipeline's baseline and CAE-Net, then every method under "
                             "compare.methods in the config (`caenet methods` lists the kinds: KD students, weight "
                             "pruning, weight clustering, channel pruning, int8 quantization, BranchyNet, SubFlow, AdaDeep, "
                             "CAE-Net's prune-until-the-SLO loop and the larger CIFAR networks), each a cached stage "
                             "trained on Ray, at each seed of --seeds. Then measures accuracy (mean ± std over the seeds, "
                             "the gap to the baseline with its paired 95%% interval), parameters (non-zero), size and "
                             "batch-1 latency (p50 and speed-up with 95%% intervals) of all of them on this machine and "
                             "writes the table (Markdown, CSV, JSON), Fig. 1 with the SLO line and the accuracy-latency "
                             "front (front.png) with the headline row: the fastest model whose accuracy interval reaches "
                             "the baseline's. All of it is logged to MLflow. "
                             "Example: caenet compare configs/cifar10_alexnet.yaml --seeds 0 1 2")
    compare.add_argument("config", help="YAML config with a compare: section, e.g. configs/cifar10_alexnet.yaml")
    add_set(compare, "--set compare.slo_ms=5 or --set compare.finetune.epochs=1")
    add_smoke(compare, "a few hundred images and one epoch for every model")
    compare.add_argument("--out", help="output folder (default: <cache>/<dataset>/compare/<name>)")
    compare.add_argument("--boards", metavar="BOARDS.yaml", help="edge boards (configs/boards.example.yaml): every model "
                         "is also timed on each board, beside the baseline, unless the measurement cache has it for "
                         "that board; slo_prune methods with board: NAME time their candidates there")
    compare.add_argument("--only", nargs="+", metavar="BOARD", help="only these boards of --boards")
    add_publish(compare, "the report and the front, as compare_<config>.json and compare_<config>_front.png,")
    compare.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                         help="train every row at each data.seed (same as --set compare.seeds=[0,1,2]): accuracy as "
                         "mean ± std, each row's gap to the baseline of the same seed with its paired 95%% interval; "
                         "a seed already trained is found in the cache")
    compare.set_defaults(func=main)


def main(args) -> int:
    if args.only and not args.boards:
        raise ConfigError("--only names boards of --boards: give --boards BOARDS.yaml too")
    boards = load_inventory(args.boards, args.only) if args.boards else None
    if args.seeds:
        args.set = [*args.set, f"compare.seeds={json.dumps(args.seeds)}"]
    report = run_compare(config_of(args, args.config), out=args.out, boards=boards)
    if args.publish:
        publish(args.publish, f"compare_{report['config']}", report["smoke"], report["output"],
                {".json": "report.json", "_front.png": "front.png"})
    print()
    print(report["markdown"])
    print(f"\nresults: {report['output']}\nMLflow run: {report['mlflow_run_id']}")
    for board, error in report["failed_boards"].items():  # the rest of the table is kept; the exit says so
        print(f"board {board} failed: {error}; its cells are N/A (a re-run measures only what is missing)", file=sys.stderr)
    return 1 if report["failed_boards"] else 0

BOARD = "this-cpu"  # the column of the table: this machine, as ``caenet report`` has one per board


def train_all(ctx: Context, tracker) -> dict[str, Trained]:
    """Baseline, CAE-Net and every configured competitor, trained or found in the cache
    (``tracker``: the MLflow runs they go under)."""
    models = train_stages(ctx)
    rows = {label: models[label] for label in ("baseline", "caenet")}
    entropy = ctx.runner.results["entropy"]
    for method in ctx.cfg.compare.methods:
        if method.seeds is not None and ctx.cfg.data.seed not in method.seeds:
            continue  # this row is trained at its own seeds only
        if getattr(method, "pipeline", False):  # CAE-Net under other settings: the pipeline's own stages
            variant = stage_context(method.settings(ctx.cfg), tracker, ctx.runner.log)
            rows[method.name] = replace(train_stages(variant)["caenet"], label=method.name)
        else:
            rows[method.name] = competitors.run(ctx, method, rows, entropy)
    return rows


def int8_forms(cfg: ExperimentConfig) -> dict[str, str]:
    """Float row -> its ``kind: int8`` row (``baseline`` -> e.g. AlexNet-int8): the pairs a
    like-for-like speed-up and the README's headline are made of."""
    return {m.of: m.name for m in cfg.compare.methods if m.kind == "int8"}


def reference_of(trained: Trained, int8_reference: str | None) -> str | None:
    """The row a model's speed-up is against: the baseline at the same precision (an int8 model
    against the baseline's int8, never against the float baseline); None when there is none."""
    return "baseline" if trained.precision == "fp32" else int8_reference


def size_and_latency_models(cfg: ExperimentConfig, test) -> dict[str, tuple[torch.nn.Module, list]]:
    """``compare.size_and_latency``: label -> (the network built from the registry, channel-pruned
    where the entry asks, with random weights: dense latency does not depend on their values;
    its identity for the measurement cache)."""
    out = {}
    for entry in cfg.compare.size_and_latency:
        torch.manual_seed(0)
        model = create_model(entry.model, **{**geometry(test.info), **entry.model_kwargs}).eval()
        if entry.prune:  # which channels go depends on the weights, how many (the latency) does not
            prune_channels(model, entry.prune, test.floats(slice(0, 1)))
        out[entry.name] = (model, [entry.model, entry.model_kwargs, {"prune": entry.prune, "untrained": True}])
    return out


def measure(cfg: ExperimentConfig, by_seed: dict[int, dict[str, Trained]], test, log=print,
            untrained: dict[str, torch.nn.Module] | None = None) -> tuple[dict, list[dict], list[str]]:
    """(table rows, latency rows, notes) of every model at every seed, measured on this machine
    (``test``: the test split). Accuracy is measured per seed (``suite.report.intervals``: mean,
    interval, paired gap to the baseline); parameters and size are the first seed's. Latency:
    a dense model's does not depend on its weights' values, so each architecture is timed once,
    whatever the seeds; a row whose architecture differs between seeds (a pick by a search or
    by the SLO loop) has each seed's timed and reports their envelope. Each speed-up is against
    the baseline at the row's precision (``reference_of``), from windows that alternated.
    ``untrained``: the size-and-latency rows, timed in the same windows (their latency rows are
    returned too; they have no table row)."""
    lat = cfg.evaluate.latency
    seeds = list(by_seed)
    int8_of = int8_forms(cfg)
    quantizes = {q: source for source, q in int8_of.items()}  # int8 row -> the float row it quantizes
    table, accuracy_by, key_of, timed_as, loaded, varied, notes = {}, {}, {}, {}, {}, set(), []
    for seed in seeds:
        for label, trained in by_seed[seed].items():
            model = trained.load()  # int8 TorchScript loads on the CPU, float models on device()
            accuracy_by.setdefault(label, {})[seed] = accuracy(model, test.images, test.labels, cfg.evaluate.batch_size)
            branchy = isinstance(model, BranchyNet)
            if label not in table:  # the first seed the row was trained at
                row = {"model": trained.model or "int8-torchscript", "precision": trained.precision,
                       "quantizes": quantizes.get(label)}
                if branchy:  # exit shares over the test set, in batches
                    exits = torch.cat([_exits_of(model, test.images[i : i + 256]) for i in range(0, len(test.images), 256)])
                    row.update({f"exit_share_{i}": float((exits == i).float().mean()) for i in range(model.num_exits)})
                row.update(trained.parameters or count_parameters(model))
                row["size_bytes"] = trained.size_bytes or serialized_bytes(model)
                table[label] = row
            why = tables.convergence_of(trained.stage.metrics).get("convergence")
            if why is not None:  # no seed's failure to learn goes unmarked
                why = why or "its training did not converge"
                table[label]["convergence"] = "; ".join(filter(None, [table[label].get("convergence"),
                                                                      why + (f" (seed {seed})" if len(seeds) > 1 else "")]))
            # where an image exits depends on the weights: a BranchyNet is timed at every seed
            key = (label, seed if branchy else _architecture(trained))
            key_of[(label, seed)] = key
            if key not in timed_as:
                timed_as[key] = label if label not in loaded else f"{label} (seed {seed})"
                loaded[timed_as[key]] = (fold_batchnorm(model) if lat.fold_batchnorm else model).cpu().eval()  # TorchScript: as is
                if branchy:
                    varied.add(timed_as[key])
    for label, row in table.items():
        row.update(intervals.accuracy_interval(accuracy_by[label], len(test.labels)))
        row.update(intervals.paired_gap(accuracy_by[label], accuracy_by["baseline"]))
        if len(accuracy_by[label]) < len(seeds):
            notes.append(f"{label}: trained at seed {', '.join(map(str, accuracy_by[label]))} only (its `seeds` in "
                         "compare.methods); its interval is over those")
    for label, model in (untrained or {}).items():
        loaded[label] = (fold_batchnorm(model) if lat.fold_batchnorm else model).cpu().eval()
    log(f"timing {len(loaded)} models at batch 1 on {lat.threads} thread(s), at least {lat.windows} alternating windows each")
    example = test.floats(slice(0, min(len(test.images), 200)))
    timings = batch1_latency(loaded, example, lat.threads, Protocol.of(lat), varied=varied)
    latency_rows, int8_reference = [], int8_of.get("baseline")
    for label in table:
        names = list(dict.fromkeys(timed_as[key_of[(label, s)]] for s in seeds if (label, s) in key_of))  # its seeds' models
        reference = reference_of(by_seed[next(s for s in seeds if label in by_seed[s])][label], int8_reference)
        base = timings[timed_as[key_of[(reference, seeds[0])]]] if reference else None
        if len(names) == 1:
            t = {**timings[names[0]], **_paired_speedup(base, timings[names[0]])}
        else:  # the seeds' models differ: their envelope, and the speed-up's spread over the seeds
            t = _envelope([timings[n] for n in names], base)
            notes.append(f"{label}: its model differs between seeds; p50 and speed-up span the seeds' "
                         f"{', '.join(f'{timings[n][P50]:.3f}' for n in names)} ms")
        if reference is None:
            notes.append(f"{label}: int8, and no int8 baseline to compare it with (add {{kind: int8}} to compare.methods): "
                         "no speed-up")
        latency_rows.append({"board": BOARD, "model": label, **t, "reference": reference, "energy_mj": None,
                             "energy_note": "not measured by compare (use `caenet edge bench` on a board with a power source)"})
        table[label].update({k: v for k, v in t.items() if not k.startswith("speedup")})
    baseline = timings[timed_as[key_of[("baseline", seeds[0])]]]
    for label in untrained or {}:
        latency_rows.append({"board": BOARD, "model": label, **timings[label], **_paired_speedup(baseline, timings[label]),
                             "reference": "baseline", "energy_mj": None, "energy_note": None})
    return table, latency_rows, notes


def _paired_speedup(base: dict | None, stats: dict) -> dict:
    """``stats``' speed-up over ``base`` from the windows that alternated with it (None: no reference)."""
    ratio = speedup(base[WINDOW_P50], stats[WINDOW_P50]) if base else (None, None, None)
    return dict(zip(("speedup", "speedup_lo", "speedup_hi"), ratio))


def _architecture(trained: Trained) -> str:
    """What a dense model's latency depends on: its registry name and arguments (an int8
    TorchScript: its row, whose float model's architecture is fixed by the config)."""
    return json.dumps([trained.model, trained.kwargs] if trained.model else ["int8-torchscript", trained.label], sort_keys=True)


def _envelope(stats: list[dict], baseline: dict | None) -> dict:
    """One row's latency when its seeds' models differ (``stats``: each distinct model's): the
    median p50 and the geometric mean of the models' paired speed-ups over ``baseline`` (None:
    no speed-up), each with the envelope of the models' own 95% intervals (the lowest low, the
    highest high), so the interval holds every model the seeds picked."""
    p50 = {P50: float(np.median([s[P50] for s in stats])), P50 + LOW: min(s[P50 + LOW] for s in stats),
           P50 + HIGH: max(s[P50 + HIGH] for s in stats), P90: float(np.median([s[P90] for s in stats]))}
    if baseline is None:
        return {**p50, "speedup": None, "speedup_lo": None, "speedup_hi": None}
    ratios = [speedup(baseline[WINDOW_P50], s[WINDOW_P50]) for s in stats]
    lows, highs = [r[1] for r in ratios if r[1] == r[1]], [r[2] for r in ratios if r[2] == r[2]]
    return {**p50, "speedup": math.exp(float(np.mean(np.log([r[0] for r in ratios])))),
            "speedup_lo": min(lows) if lows else None, "speedup_hi": max(highs) if highs else None}


def time_rows_on_boards(pool: BoardPool, rows: dict[str, Trained], test, cache: LatencyCache, int8_reference: str | None,
                        log=print, untrained: dict[str, tuple] | None = None) -> list[tuple[str, dict[str, BoardTiming]]]:
    """Every row's model on every board of ``pool``, beside the baseline at its precision
    (``reference_of``: float rows beside the baseline, int8 rows beside ``int8_reference``, one
    pass each), unless the cache has its architecture for that board; returns (reference, board
    -> timing) per pass. An int8 row runs on an onnxruntime board as onnxruntime's own int8 of
    its float model (``Trained.int8_onnx``). A registry model is identified by [name, kwargs]
    (dense latency does not depend on the weights' values), an int8 one by its stage;
    BranchyNet is left out (where an image exits depends on the image, and an exported trace
    runs one path). ``untrained``: the size-and-latency rows (``size_and_latency_models``), timed
    beside the baseline with the float rows."""
    models, architectures, skipped = {}, {}, {}
    for label, trained in rows.items():
        model = trained.load()
        if isinstance(model, BranchyNet):
            skipped[label] = "early exits depend on the image; an exported trace runs one exit path"
            continue
        models[label] = model
        architectures[label] = [trained.model, trained.kwargs] if trained.model else ["int8-torchscript", trained.stage.path.name]
        if onnx := trained.int8_onnx():
            pool.exports.ready[label] = onnx
    for label, (model, architecture) in (untrained or {}).items():
        models[label], architectures[label] = model, architecture
    images = test.floats(slice(0, pool.inventory.bench.images))
    passes = []

    def reference_for(label: str) -> str | None:
        return reference_of(rows[label], int8_reference) if label in rows else "baseline"

    for reference in dict.fromkeys(map(reference_for, models)):
        labels = [label for label in models if reference_for(label) == reference]
        if reference is None or reference not in models:
            for t in passes[0][1].values() if passes else []:
                t.not_exported.update({label: "int8, and no int8 baseline to time it beside" for label in labels})
            continue
        log(f"timing {len(labels)} models on {len(pool.actors)} board(s): {', '.join(pool.actors)}, beside {reference}, "
            "unless the measurement cache has them for that board")
        timings = pool.time_on_boards({label: models[label] for label in labels},
                                      {label: architectures[label] for label in labels if label != reference}, images, cache,
                                      baseline=reference, log=log,
                                      beside=None if reference == "baseline" else architectures[reference])
        for t in timings.values():
            if not passes:  # BranchyNet's reason, once per board (not once per pass)
                t.not_exported.update(skipped)
            if t.error:
                log(f"[{t.board}] FAILED: {t.error} (its cells are N/A; the other boards go on)")
            elif t.timed is not None and t.timed.cached:
                log(f"[{t.board}] {len(t.timed.cached)} of {len(labels) - 1} model(s) from the measurement cache: not timed again")
        passes.append((reference, timings))
    return passes


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


def _board_rows(passes: list[tuple[str, dict[str, BoardTiming]]]) -> tuple[list[dict], dict[str, str]]:
    """(latency rows of every board, in ``tables.build``'s form with the paired speed-up over the
    pass's reference; board -> why it failed)."""
    rows, failed = [], {}
    for reference, on_boards in passes:
        for t in on_boards.values():
            if t.error:
                failed[t.board] = "; ".join(filter(None, [failed.get(t.board), t.error]))
            if t.timed is None:
                continue
            for label, stats in t.timed.stats.items():
                row = {**stats, "board": t.board, "model": label, "cached": label in t.timed.cached, "reference": reference,
                       "energy_mj": stats.get("energy_mj"), "energy_note": stats.get("energy_note")}
                if label != reference:
                    row["speedup"], row["speedup_lo"], row["speedup_hi"] = t.timed.speedup(label)
                rows.append(row)
    return rows, failed


@torch.no_grad()
def _exits_of(model, images: torch.Tensor) -> torch.Tensor:
    model(images.float().to(next(model.parameters()).device) / 255.0)
    return model.exit_index.cpu()


def at_seed(cfg: ExperimentConfig, seed: int) -> ExperimentConfig:
    """``cfg`` with ``data.seed`` set (the split, initialisation and order of every training)."""
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"seed": seed})})


def run_compare(cfg: ExperimentConfig, log=print, out: str | Path | None = None, boards: Inventory | None = None) -> dict:
    """Train what is missing at every seed of ``compare.seeds``, measure everything (on
    ``boards`` too), write the tables, Fig. 1 and the accuracy-latency front; return the report."""
    if not cfg.compare.methods:
        log("compare.methods is empty: the table holds the baseline and CAE-Net only (see configs/ for a full list)")
    names = [b.name for b in boards.boards] if boards else []
    for method in cfg.compare.methods:
        if getattr(method, "board", None) and method.board not in names:
            raise ConfigError(f"compare.methods[{method.name!r}].board: {method.board} is not a board of --boards "
                              f"({', '.join(names) if names else 'no --boards FILE given'}); give the boards file that names it")
    seeds = cfg.compare.seeds or [cfg.data.seed]
    with open_session(cfg, f"compare-{cfg.name}", params={"seeds": seeds}, tags={"kind": "compare"}, check_data=True,
                      log=log) as session:
        cfg, tracker, parent = session.cfg, session.tracker, session.run_id
        # one seed: its stage runs under the parent run; several: under one child run per seed
        seed_runs = {s: tracker.start_child(f"seed {s}", {"data.seed": s}, {"kind": "compare-seed", "seed": str(s)})
                     for s in seeds} if len(seeds) > 1 else {}
        trackers = {s: tracker.under(seed_runs[s]) if seed_runs else tracker for s in seeds}
        contexts = {s: stage_context(at_seed(cfg, s), trackers[s], log) for s in seeds}
        folder = session.folder("compare", out, cfg.name)
        folder.mkdir(parents=True, exist_ok=True)
        cache = LatencyCache(cache_root(cfg) / LATENCY_FOLDER)
        test = load_split(cfg.data, "test")  # read once: every seed, the boards and this machine use the same images
        untrained = size_and_latency_models(cfg, test)
        by_seed = {}
        with session.ray(tune=any(m.uses_tune for m in cfg.compare.methods)):
            pool = None
            if boards:
                ensure_ray()  # the board actors need Ray up now (stages start it only when they train)
                pool = BoardPool(boards)
            try:
                for seed in seeds:  # one after another: a seed's rows build on each other, in order
                    if len(seeds) > 1:
                        log(f"--- seed {seed} ({seeds.index(seed) + 1} of {len(seeds)}) ---")
                    if pool:
                        contexts[seed].board_timers = {name: _board_timer(pool, name, cache, log) for name in pool.actors}
                    by_seed[seed] = train_all(contexts[seed], trackers[seed])
                # the boards time architectures, which the seeds share: the first seed's models
                passes = (time_rows_on_boards(pool, by_seed[seeds[0]], test, cache, int8_forms(cfg).get("baseline"), log,
                                              untrained) if pool else [])
            finally:
                if pool:
                    pool.close()
        # after Ray has stopped: its daemons skew timings
        table, latency_rows, notes = measure(cfg, by_seed, test, log, {label: m for label, (m, _) in untrained.items()})
        board_rows, failed_boards = _board_rows(passes)
        on_boards = {b: t for _, timings in reversed(passes) for b, t in timings.items()}  # a board's system: any pass's
        report = tables.build(table, [{"rows": latency_rows + board_rows}], cfg.compare.slo_ms)
        sized = {label: {"model": entry.model, "precision": "fp32", **count_parameters(untrained[label][0]),
                         "size_bytes": serialized_bytes(untrained[label][0])}
                 for label, entry in ((e.name, e) for e in cfg.compare.size_and_latency)}
        report["size_and_latency"] = tables.build(sized, [{"rows": latency_rows + board_rows}], cfg.compare.slo_ms)["rows"]
        fit_images, _, val_images, _ = fit_and_val(cfg.data)
        report.update({"host": platform.node(), "threads": cfg.evaluate.latency.threads, "seeds": seeds,
                       "train_images": len(fit_images), "val_images": len(val_images), "test_images": len(test.labels),
                       "failed_boards": failed_boards, "config": cfg.name, "smoke": cfg.smoke, "dataset": cfg.data.dataset,
                       "runtimes": {BOARD: "pytorch", **({b.name: b.runtime for b in boards.boards} if boards else {})},
                       "boards_system": {b: t.system for b, t in on_boards.items()}})
        report["notes"] = notes + [f"board {b} failed: {e} (its cells are N/A)" for b, e in failed_boards.items()]
        report["notes"] += [f"{t.board}: {label} N/A: {why}" for _, timings in passes for t in timings.values()
                            for label, why in t.not_exported.items()]
        if on_boards and len(seeds) > 1:
            report["notes"].append(f"The boards timed seed {seeds[0]}'s models (latency depends on the architecture, not the seed).")
        baseline_name = f"{cfg.baseline.model} (baseline)"
        names = {"baseline": baseline_name, "caenet": "CAE-Net"}
        for row in report["rows"]:
            row["stage_dir"] = str(by_seed[seeds[0]][row["method"]].stage.path)
            row["method"] = names.get(row["method"], row["method"])
            row["quantizes"] = names.get(row.get("quantizes"), row.get("quantizes"))
            for cell in row["boards"].values():
                cell["reference"] = names.get(cell.get("reference"), cell.get("reference"))
        report["headlines"] = {b: intervals.headline(report["rows"], b) for b in report["boards"]}
        report["headline"] = report["headlines"][BOARD]
        report["pairs"] = intervals.like_for_like(report)
        title = f"{tables.TITLES.get(cfg.data.dataset, cfg.data.dataset)}: {cfg.name}, batch-1 latency on this machine"
        text = tables.markdown(report, title) + "\n\n" + "\n".join(
            [intervals.pair_line(p) for p in report["pairs"]]
            + ["Fastest at parity: " + intervals.headline_line(h, baseline_name, b) for b, h in report["headlines"].items()])
        (folder / "table.md").write_text(text + "\n")
        tables.write_csv(report, folder / "table.csv")
        (folder / "report.json").write_text(json.dumps(report, indent=2))
        tables.figure1(report, folder / "figure1.png")
        intervals.front_plot(report, folder / "front.png",
                             f"{tables.TITLES.get(cfg.data.dataset, cfg.data.dataset)}: accuracy vs batch-1 latency, "
                             f"{len(seeds)} seed(s), {cfg.evaluate.latency.threads} thread(s)")
        for name in ("table.md", "table.csv", "report.json", "figure1.png", "front.png"):
            tracker.log_artifact(parent, folder / name)
        tracker.log_metrics(parent, {f"{label}.{k}": v for label, row in table.items() for k, v in row.items()
                                     if isinstance(v, (int, float)) and v == v})
        for row in board_rows:  # each board's own, the board named in the metric
            tracker.log_metrics(parent, {f"{row['model']}.{k}.{row['board']}": row[k] for k in (P50, P90, "speedup")
                                         if isinstance(row.get(k), float) and row[k] == row[k]})
        for seed, run in seed_runs.items():  # each seed's accuracies on its own run
            tracker.log_metrics(run, {f"{label}.test_acc": row["test_acc_by_seed"][str(seed)] for label, row in table.items()
                                      if str(seed) in row["test_acc_by_seed"]})
            tracker.end(run)
        if report["headline"]:
            h = report["headline"]
            tracker.set_tag(parent, "headline", intervals.headline_line(h, baseline_name)[:4000])
            tracker.log_metrics(parent, {f"headline.{k}": h[k] for k in ("speedup", "speedup_lo", "speedup_hi", "test_acc", "gap")
                                         if isinstance(h.get(k), float) and h[k] == h[k]})
        for pair in report["pairs"]:
            tracker.log_metrics(parent, {f"caenet_vs_baseline.{pair['precision']}.{pair['board']}.{k}": pair[k]
                                         for k in ("speedup", "speedup_lo", "speedup_hi", "gap", "gap_lo", "gap_hi")
                                         if isinstance(pair.get(k), float) and pair[k] == pair[k]})
        for t in on_boards.values():
            for key, value in t.tags().items():
                tracker.set_tag(parent, key, value)
        if failed_boards:
            tracker.set_tag(parent, "failed_boards", "; ".join(f"{b}: {e}" for b, e in failed_boards.items())[:4000])
    report["markdown"] = text
    report["output"] = str(folder)
    report["mlflow_run_id"] = parent
    return report

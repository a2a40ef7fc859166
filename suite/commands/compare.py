"""``caenet compare``: CAE-Net against every competitor of Tables I / II on one dataset.

The pipeline's stages give the baseline and CAE-Net (cached from ``caenet run``); each
``compare.methods`` entry is then one more cached stage (``suite.methods.stage``),
all in one Ray session. After Ray stops, every model is measured the same way on this
machine: test accuracy, parameters (non-zero), size, and batch-1 latency in alternating
rounds (BranchyNet: over real test images, since where an image exits depends on it).
The table (Markdown, CSV, JSON) and Fig. 1 (latency vs accuracy, with the SLO line) are
written under ``<cache>/<dataset>/compare/<name>/`` and logged to MLflow.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from suite.commands.common import add_set, add_smoke, config_of
from suite.config import ExperimentConfig
from suite.data import load_split
from suite.methods import stage as competitors
from suite.metrics import accuracy, batch1_latency, count_parameters, fold_batchnorm, serialized_bytes
from suite.models.branchy import BranchyNet
from suite.pipeline.context import Context
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
    compare.set_defaults(func=main)


def main(args) -> int:
    report = run_compare(config_of(args, args.config), out=args.out)
    print()
    print(report["markdown"])
    print(f"\nresults: {report['output']}\nMLflow run: {report['mlflow_run_id']}")
    return 0

BOARD = "this-cpu"  # the column of the table: this machine, as ``caenet report`` has one per board


def train_all(ctx: Context) -> dict[str, Trained]:
    """Baseline, CAE-Net and every configured competitor, trained or found in the cache."""
    models = train_stages(ctx)
    rows = {label: models[label] for label in ("baseline", "caenet")}
    entropy = ctx.runner.results["entropy"]
    for method in ctx.cfg.compare.methods:
        rows[method.name] = competitors.run(ctx, method, rows, entropy)
    return rows


def measure(cfg: ExperimentConfig, rows: dict[str, Trained], log=print) -> tuple[dict, list[dict]]:
    """(table rows, latency rows) of every model, measured on this machine."""
    test = load_split(cfg.data, "test")
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


@torch.no_grad()
def _exits_of(model, images: torch.Tensor) -> torch.Tensor:
    model(images.float().to(next(model.parameters()).device) / 255.0)
    return model.exit_index.cpu()


def run_compare(cfg: ExperimentConfig, log=print, out: str | Path | None = None) -> dict:
    """Train what is missing, measure everything, write the tables and Fig. 1; return the report."""
    if not cfg.compare.methods:
        log("compare.methods is empty: the table holds the baseline and CAE-Net only (see configs/ for a full list)")
    with open_session(cfg, f"compare-{cfg.name}", tags={"kind": "compare"}, check_data=True, log=log) as session:
        cfg, tracker, parent = session.cfg, session.tracker, session.run_id
        ctx = session.context()
        folder = session.folder("compare", out, cfg.name)
        folder.mkdir(parents=True, exist_ok=True)
        with session.ray(tune=any(m.uses_tune for m in cfg.compare.methods)):
            rows = train_all(ctx)
        table, latency_rows = measure(cfg, rows, log)  # after Ray has stopped: its daemons skew timings
        report = tables.build(table, [{"rows": latency_rows}], cfg.compare.slo_ms)
        report["host"] = platform.node()
        report["threads"] = cfg.evaluate.latency.threads
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
    report["markdown"] = text
    report["output"] = str(folder)
    report["mlflow_run_id"] = parent
    return report

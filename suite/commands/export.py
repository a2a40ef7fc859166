"""``caenet export CONFIG_OR_RUN``: a finished run's models as TorchScript / ONNX files, each run
back on real test images and compared with PyTorch (nothing is trained)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from suite.commands.arguments import add_set, config_of, positive_int
from suite.compression.quantize import quiet_jit
from suite.config import ConfigError, ExperimentConfig
from suite.data import load_split
from suite.edge.model_files import FORMATS, export_model, write_manifest
from suite.pipeline.session import open_session
from suite.stages.graph import trained_models

ORDER = 40
HELP = "export a finished run's models to TorchScript / ONNX, checked against PyTorch"


def add_parser(sub) -> None:
    export = sub.add_parser("export", help=HELP,
                            description="Finds the run's trained models in the stage cache (nothing is trained) and "
                            "exports each one, BatchNorm folded, plus CAE-Net's encoder and classifier on their own; "
                            "every file is run back on real test images and compared with PyTorch. "
                            "Example: caenet export configs/mnist_lenet.yaml --smoke --format torchscript onnx")
    export.add_argument("run", metavar="CONFIG_OR_RUN", help="the run's YAML config, or the MLflow run id of `caenet run`")
    export.add_argument("--format", nargs="+", choices=list(FORMATS), default=["torchscript"])
    export.add_argument("--models", nargs="+", metavar="LABEL", help="baseline, caenet, caenet_no_kd, ... (default: all)")
    export.add_argument("--out", help="output folder (default: <cache>/<dataset>/exports/<name>)")
    export.add_argument("--images", type=positive_int, default=64, help="test images for the equivalence check (at least 1)")
    export.add_argument("--smoke", action="store_true", help="the run was made with --smoke")
    add_set(export, "--set runtime.cache_dir=/abs/cache (must match the run)")
    export.set_defaults(func=main)


def main(args) -> int:
    cfg = config_of(args, args.run)
    params = {"formats": ",".join(args.format), "models": ",".join(args.models or ["all"]), "images": args.images}
    with open_session(cfg, f"export-{cfg.name}", params=params, tags={"kind": "export"}) as session:
        out = session.folder("exports", args.out, session.cfg.name)
        for fmt in args.format:
            folder, entries = export_run(session.cfg, args.models, fmt, out, images=args.images)
            for e in entries:
                print(f"{e['name']:24} {fmt:12} {e['bytes'] / 1024:9.1f} KB  max |diff| vs PyTorch {e['max_abs_diff']:.2e}  {folder / e['file']}")
            log_exports(session, folder, entries, fmt)
        print(f"MLflow models: run {session.run_id} in {session.tracker.uri}")
    return 0


def log_exports(session, folder: Path, entries: list[dict], fmt: str) -> None:
    """Each exported file as an MLflow model (``mlflow.onnx`` / ``mlflow.pytorch``) at
    ``<format>/<name>`` of the export run, with the manifest beside."""
    tracker, run_id = session.tracker, session.run_id
    for e in entries:
        example = np.load(folder / e["inputs"])[:1]
        path = f"{fmt}/{e['name']}"
        if fmt == "onnx":
            tracker.log_onnx_model(run_id, folder / e["file"], example, path)
        else:
            with quiet_jit():
                tracker.log_model(run_id, torch.jit.load(str(folder / e["file"]), map_location="cpu"), example, path)
    tracker.log_artifact(run_id, folder / "manifest.json", fmt)


def export_run(cfg: ExperimentConfig, labels: list[str] | None, fmt: str, out: Path, images: int = 64) -> tuple[Path, list[dict]]:
    """Export the run's models (default: all of them) to ``out/<format>/``; returns (folder, entries).
    ``cfg`` is the effective config of a finished run."""
    models = trained_models(cfg)
    unknown = sorted(set(labels or []) - set(models))
    if unknown:
        raise ConfigError(f"--models: unknown {', '.join(unknown)}; this run has {', '.join(models)}")
    test = load_split(cfg.data, "test")
    x = test.floats(slice(0, images))
    folder = out / fmt
    entries = []
    for label in labels or list(models):
        trained = models[label]
        for e in export_model(label, trained.load().cpu(), x, fmt, folder):
            e.update({"model": trained.model, "model_kwargs": trained.kwargs, "stage_dir": str(trained.stage.path)})
            entries.append(e)
    write_manifest(folder, entries, {"config": cfg.name, "dataset": cfg.data.dataset, "format": fmt,
                                     "exported": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return folder, entries

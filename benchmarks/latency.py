"""Batch-1 latency of the baseline vs CAE-Net, side by side in one process.

    .venv/bin/python benchmarks/latency.py                 # CIFAR-10: AlexNet vs CAE-Net
    .venv/bin/python benchmarks/latency.py --dataset mnist # LeNet vs CAE-Net
    .venv/bin/python benchmarks/latency.py --weights-from artifacts/cifar10   # trained weights

Both models are timed under the suite's one protocol (``suite/timing.py``: alternating windows
on the same thread count, default 1, so that machine noise hits both alike, until each p50 is
known to 2%); the paired windows' ratio is the speed-up, printed with its 95% interval (paper: 4.05x on a Raspberry Pi 4,
5.7x on a Jetson Nano, for CIFAR-10). Dense models take the same time whatever their weights,
so fresh weights are used unless ``--weights-from`` names a cache folder of a finished run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from suite.data import INFO
from suite.metrics import batch1_latency, count_parameters, fold_batchnorm
from suite.models import create_model, geometry
from suite.timing import WINDOW_P50, Protocol, interval, speedup

SPECS = {
    "cifar10": (("alexnet", {}), ("caenet", {"hidden": 256})),
    "mnist": (("lenet", {}), ("caenet", {"hidden": 128})),
}


def _load(name: str, kwargs: dict, folder: Path | None, stage: str) -> torch.nn.Module:
    model = create_model(name, **kwargs)
    if folder is not None:
        weights = sorted(folder.glob(f"{stage}-*/model.pt"))
        if not weights:
            raise SystemExit(f"no finished {stage} stage under {folder}")
        model.load_state_dict(torch.load(weights[-1], map_location="cpu", weights_only=True))
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(SPECS), default="cifar10")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--windows", type=int, default=5, help="timed windows per model, at least")
    p.add_argument("--window-queries", type=int, default=60, help="timed calls per window, at least")
    p.add_argument("--weights-from", type=Path, help="a cache folder (artifacts/<dataset>) of a finished pipeline run")
    args = p.parse_args()

    info = INFO[args.dataset]
    (bname, bkw), (cname, ckw) = SPECS[args.dataset]
    base = _load(bname, {**geometry(info), **bkw}, args.weights_from, "baseline")
    cae = _load(cname, {**geometry(info), **ckw}, args.weights_from, "caenet")
    params = {"baseline": count_parameters(base)["parameters"], "caenet": count_parameters(cae)["parameters"]}
    base, cae = fold_batchnorm(base), fold_batchnorm(cae)
    x = torch.rand(1, info.channels, info.size, info.size)
    protocol = Protocol(warmup=30, windows=args.windows, window_queries=args.window_queries, max_windows=max(20, args.windows))
    stats = batch1_latency({"baseline": base, "caenet": cae}, x, args.threads, protocol)
    b, c = stats["baseline"], stats["caenet"]
    print(f"dataset {args.dataset}, {args.threads} thread(s), {b['windows']} windows x >= {args.window_queries} calls, "
          f"batch 1, BN folded")
    print(f"{bname:>8}: p50 {interval(b)} ms  ({params['baseline']:,} parameters)")
    print(f"{'CAE-Net':>8}: p50 {interval(c)} ms  ({params['caenet']:,} parameters)")
    ratio, low, high = speedup(b[WINDOW_P50], c[WINDOW_P50])
    print(f"speed-up (baseline / CAE-Net): {ratio:.2f}x [{low:.2f}, {high:.2f}]   "
          f"[paper, CIFAR-10: 4.05x Raspberry Pi 4, 5.7x Jetson Nano]")


if __name__ == "__main__":
    main()

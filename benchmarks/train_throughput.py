"""Training throughput: a plain PyTorch loop vs the same training through Ray Train (1 and 2 workers).

    .venv/bin/python benchmarks/train_throughput.py                 # AlexNet on the CIFAR-10 subset
    .venv/bin/python benchmarks/train_throughput.py --model lenet --dataset mnist --images 6000

Measured side by side in one run, on the same images, batch size, optimizer and thread count:

- plain: a bare loop in this process (``torch.set_num_threads(threads)``);
- Ray Train, 1 worker with ``threads`` threads: the suite's ``fit`` (TorchTrainer, sharded
  sampler, a checkpoint and an MLflow-free report every epoch);
- Ray Train, 2 workers with ``threads // 2`` threads each (DDP over gloo on CPU).

Steady-state images/s come from the last epoch (the first pays for warm-up); the wall time
includes Ray Train's worker start-up, reported separately as the fixed cost per ``fit``.
The overhead ratio is plain images/s divided by Ray Train's at 1 worker.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from suite.config import DataConfig, RuntimeConfig, TrainConfig
from suite.data import INFO, augment_batch
from suite.distributed.training import TrainJob, _loss, _optimizer, _split_tensors, fit
from suite.models import create_model, geometry


def plain_loop(job: TrainJob, threads: int) -> tuple[float, float]:
    """(images/s of the last epoch, wall seconds) of a bare PyTorch loop."""
    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = TrainConfig(**job.train)
    x, y, _, _, info = _split_tensors(job)
    model = create_model(job.model, **job.model_kwargs)
    loader = DataLoader(TensorDataset(x, y), batch_size=cfg.batch_size, shuffle=True, drop_last=len(x) > cfg.batch_size)
    opt, sched = _optimizer(model.parameters(), cfg, cfg.epochs * len(loader))
    rate = 0.0
    for _ in range(cfg.epochs):
        model.train()
        t0, seen = time.perf_counter(), 0
        for xb, yb in loader:
            xb = xb.float() / 255.0
            if cfg.augment:
                xb = augment_batch(xb, flip=info.channels == 3)
            loss = _loss(job, model(xb), yb, 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(xb)
        rate = seen / (time.perf_counter() - t0)
    return rate, time.perf_counter() - t_start


def ray_train(job: TrainJob, workers: int, threads: int, storage: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    runtime = RuntimeConfig(workers=workers, cpus_per_worker=max(threads // workers, 1) if workers > 1 else threads,
                            threads_per_worker=max(threads // workers, 1), max_failures=0, use_gpu="no")
    job.storage_path = str(storage / f"w{workers}")
    metrics = fit(job, runtime, storage / f"w{workers}.pt")
    return metrics["images_per_second"], time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--images", type=int, default=2000, help="training images (the first N)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in total")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    job = TrainJob(name="throughput", model=args.model, model_kwargs=geometry(INFO[args.dataset]),
                   data=DataConfig(dataset=args.dataset, train_limit=args.images, val_fraction=0.0).model_dump(),
                   train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, augment=True).model_dump(), progress=False)
    print(f"{args.model} on {args.images} {args.dataset} images, batch {args.batch_size}, {args.epochs} epochs, {args.threads} threads")
    plain_rate, plain_wall = plain_loop(job, args.threads)
    ray.init(num_cpus=args.threads, include_dashboard=True, logging_level="ERROR", log_to_driver=False)
    rows = [("plain PyTorch loop", plain_rate, plain_wall)]
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            rate, wall = ray_train(job, workers, args.threads, Path(tmp))
            rows.append((f"Ray Train, {workers} worker{'s' if workers > 1 else ''}", rate, wall))
    ray.shutdown()
    print(f"\n{'':24} {'images/s':>9} {'wall s':>8} {'vs plain':>9}")
    for name, rate, wall in rows:
        print(f"{name:24} {rate:9.1f} {wall:8.1f} {rate / plain_rate:8.2f}x")
    epoch_s = args.images / plain_rate
    fixed = rows[1][2] - args.epochs * args.images / rows[1][1]
    print(f"\nRay Train overhead at 1 worker: plain/Ray throughput = {plain_rate / rows[1][1]:.3f}; "
          f"fixed start-up cost per fit about {fixed:.1f} s (= {fixed / epoch_s:.1f} plain epochs of {args.images} images)")


if __name__ == "__main__":
    main()

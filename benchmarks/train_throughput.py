"""Training throughput: a plain PyTorch loop vs the same training through the suite's ``fit`` (1, 2, ... workers).

    .venv/bin/python benchmarks/train_throughput.py                       # AlexNet, CIFAR-10 subset
    .venv/bin/python benchmarks/train_throughput.py --config configs/mnist_lenet.yaml --images 6000
    ray job submit --working-dir . -- python jobs/scaling.py --config configs/cifar10_alexnet.yaml --workers 1 2 4 8

The baseline of the config (model, dataset, batch size, optimizer) trains side by side in one
run on the same images:

- plain: a bare loop (DataLoader, no ``fit``) as one Ray task on what a one-worker training
  gets: ``--threads`` CPU threads, or a GPU where the run trains on GPUs;
- ``fit`` with N workers (``--workers``): one worker runs as a warm Ray task, more on Ray
  Train (TorchTrainer, sharded batches, DDP); a checkpoint and a report every epoch,
  ``--threads // N`` threads per worker on CPU, or one GPU per worker where the cluster has
  them (``runtime.use_gpu: auto``).

Steady-state images/s come from the last epoch (the first pays for warm-up); the wall time
includes the workers' start-up, reported separately as the fixed cost per ``fit``
(``benchmarks/overhead.py`` splits it into parts). The overhead ratio is plain images/s
divided by ``fit``'s at 1 worker.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from suite.config import RuntimeConfig
from suite.data import INFO, load_split
from suite.distributed import gpus
from suite.distributed.ray_runtime import ensure_ray, use_gpu
from suite.distributed.launch import TrainJob, fit
from suite.models import create_model, geometry
from suite.training.loop import EpochLoop, make_optimizer
from suite.training.objectives import make_objective


def plain_loop(job: TrainJob, threads: int, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(images/s of the last epoch, wall seconds) of the suite's epoch loop with a DataLoader, no
    ``fit``: on this process's GPU where Ray reserved one for it, else on ``threads`` CPU threads."""
    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = gpus.device()
    cfg = job.train
    model = create_model(job.model, **job.model_kwargs).to(device)
    loader = DataLoader(TensorDataset(images, labels), batch_size=cfg.batch_size, shuffle=True,
                        drop_last=len(images) > cfg.batch_size, pin_memory=device.type == "cuda")
    opt, sched = make_optimizer(model.parameters(), cfg, cfg.epochs * len(loader))
    loop = EpochLoop(model, make_objective(job.objective), cfg, opt, sched, device=device,
                     flip=INFO[job.data.dataset].channels == 3)
    rate = 0.0
    for epoch in range(cfg.epochs):
        rate = loop.run_epoch(loader, epoch)["images_per_second"]
    return rate, time.perf_counter() - t_start


def plain_on_ray(job: TrainJob, runtime: RuntimeConfig, threads: int) -> tuple[float, float]:
    """``plain_loop`` as a Ray task on what a one-worker training gets (a GPU where the run trains
    on GPUs): the reference is timed on the same kind of device as the ``fit`` runs, not on the
    driver's CPU. Its images come through the object store, as a training's do."""
    import ray  # deferred: --help needs no Ray
    import ray.cloudpickle

    if __name__ != "__main__":  # imported (jobs/scaling.py): the workers cannot import this file, so ship it
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ds = load_split(job.data, "train")
    gpu = use_gpu(runtime)
    task = ray.remote(num_cpus=threads, num_gpus=1 if gpu else 0, max_retries=0)(plain_loop)
    return ray.get(task.remote(job, threads, ds.images, ds.labels))


def ray_train(job: TrainJob, runtime: RuntimeConfig, workers: int, threads: int, storage: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    per_worker = max(threads // workers, 1)
    runtime = runtime.model_copy(update={"workers": workers, "cpus_per_worker": per_worker, "threads_per_worker": per_worker,
                                         "max_failures": 0})
    job = replace(job, storage_path=str(storage / f"w{workers}"))
    metrics = fit(job, runtime, storage / f"w{workers}.pt")
    return metrics["images_per_second"], time.perf_counter() - t0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "cifar10_alexnet.yaml"),
                        help="experiment config whose baseline is trained (default: configs/cifar10_alexnet.yaml)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key; repeatable")
    parser.add_argument("--images", type=int, default=2000, help="training images (the first N)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time (1: a warm Ray task; more: Ray Train)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in total (plain loop and all workers)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from suite.distributed.ray_runtime import ray_session
    from suite.experiment import load as load_config

    cfg = load_config(args.config, args.set)
    train = cfg.baseline.train.model_copy(update={"epochs": args.epochs})
    data = cfg.data.model_copy(update={"train_limit": args.images, "val_fraction": 0.0})
    job = TrainJob(name="throughput", model=cfg.baseline.model, model_kwargs=geometry(INFO[data.dataset]),
                   data=data.model_dump(), train=train.model_dump(), progress=False)
    print(f"{cfg.baseline.model} on {args.images} {data.dataset} images, batch {train.batch_size}, {args.epochs} epochs, "
          f"{args.threads} threads")
    runtime = cfg.runtime.model_copy(update={"num_cpus": args.threads, "progress": False})
    with ray_session(runtime), tempfile.TemporaryDirectory() as tmp:
        ensure_ray()
        plain_rate, plain_wall = plain_on_ray(job, runtime, args.threads)
        rows = [(f"plain PyTorch loop ({'GPU' if use_gpu(runtime) else 'CPU'})", plain_rate, plain_wall)]
        for workers in args.workers:
            rate, wall = ray_train(job, runtime, workers, args.threads, Path(tmp))
            rows.append(("warm task, 1 worker" if workers == 1 else f"Ray Train, {workers} workers", rate, wall))
    print(f"\n{'':24} {'images/s':>9} {'wall s':>8} {'vs plain':>9}")
    for name, rate, wall in rows:
        print(f"{name:24} {rate:9.1f} {wall:8.1f} {rate / plain_rate:8.2f}x")
    if args.workers and args.workers[0] == 1:
        one = rows[1]
        fixed = one[2] - args.epochs * args.images / one[1]
        print(f"\nfit overhead at 1 worker: plain/fit throughput = {plain_rate / one[1]:.3f}; fixed start-up cost "
              f"per fit about {fixed:.1f} s (= {fixed * plain_rate / args.images:.1f} plain epochs of {args.images} images)")


if __name__ == "__main__":
    main()

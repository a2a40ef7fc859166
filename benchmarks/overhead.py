"""What one training pays outside its epochs: a plain PyTorch loop vs the suite's ``fit``.

    .venv/bin/python benchmarks/overhead.py                            # the MNIST baseline of configs/mnist_lenet.yaml
    .venv/bin/python benchmarks/overhead.py --epochs 2 --images 4000   # quicker
    .venv/bin/python benchmarks/overhead.py --config configs/cifar10_alexnet.yaml

Side by side in one run, on the same images, model, optimizer and threads:

- **plain**: the suite's epoch loop (``EpochLoop`` + validation each epoch) in this process,
  as the worker runs it (tensor batches, channels-last) and as it ran before (a
  ``DataLoader``, NCHW);
- **suite, warm task** (``runtime.trainer: auto``, one worker): ``fit`` as the pipeline calls
  it, with an MLflow run, checkpoints every epoch and the final weights saved; timed twice,
  as the first training of a Ray session (a fresh worker process imports torch) and as a
  later one (the process is reused);
- **suite, Ray Train** (``runtime.trainer: ray-train``, what every training used before).

The difference to the plain loop (run again once Ray is up, so that both share the machine
with Ray's daemons) is split into the parts the worker and the driver time themselves (``setup_seconds``, ``eval_seconds``, ``report_seconds`` and two timestamps in
each epoch's metrics): they add up to the whole difference. ``ray.init`` is paid once per
pipeline and shown on its own line.

``--pipeline`` times the main job instead: ``caenet run CONFIG`` from a fresh process and an
empty cache (what a user waits for), each stage's own wall time from its ``metrics.json``,
beside a plain loop doing each training stage's training (its model, schedule and images,
``lean`` as above) in this process; the main job's total over the plain loops' sum is the
figure to report:

    .venv/bin/python benchmarks/overhead.py --pipeline                 # configs/mnist_lenet.yaml
    .venv/bin/python benchmarks/overhead.py --pipeline --set smoke=true
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from suite.config import load_config
from suite.data import INFO, load_split, split_train_val
from suite.distributed.launch import TrainJob, fit
from suite.models import create_model, geometry
from suite.stages.graph import plan
from suite.training import checkpoints
from suite.training.loop import EpochLoop, make_optimizer
from suite.training.objectives import make_objective
from suite.training.batches import TensorBatches
from suite.training.loop import evaluate

PARTS = [
    ("trainer start", "fit() called until the worker's code runs (controller, worker processes, inputs put)"),
    ("data + model set-up", "the worker gets the images, builds the model and optimizer, looks for a checkpoint"),
    ("first epoch extra", "epoch 1 minus the plain loop's epoch 1"),
    ("later epochs extra", "epochs 2.. minus the plain loop's (throughput)"),
    ("validation extra", "per-epoch validation minus the plain loop's"),
    ("checkpoints, reports", "checkpoint written and reported after epochs 1..n-1"),
    ("finish", "last checkpoint and report, MLflow flush, weights saved, workers torn down"),
]


def plain(job: TrainJob, threads: int, lean: bool, bf16: bool = False, frozen: list[str] | None = None) -> dict:
    """The loop alone, timed like the worker times itself. ``lean``: tensor batches and
    channels-last (and ``bf16`` autocast when the config asks), as the worker runs it; else a
    DataLoader, NCHW and float32, as it ran before."""
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    cfg, data = job.train, job.data
    torch.manual_seed(data.seed)
    ds = load_split(data, "train")
    val = torch.from_numpy(split_train_val(len(ds), data.val_fraction, data.seed))
    objective = make_objective(job.objective)
    model = create_model(job.model, **job.model_kwargs)
    for prefix in frozen or []:  # as the worker freezes a transferred encoder
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(not name.startswith(prefix + "."))
    x, y, drop = ds.images[~val], ds.labels[~val], int((~val).sum()) > cfg.batch_size
    if job.objective == "reconstruct":  # to the images themselves: a CAE's compute, without its targets
        y = x
    if lean:
        loader = TensorBatches(x, y, cfg.batch_size, drop_last=drop)
        model = model.to(memory_format=torch.channels_last)
    else:
        loader = DataLoader(TensorDataset(x, y), batch_size=cfg.batch_size, shuffle=True, drop_last=drop)
    opt, sched = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, cfg.epochs * len(loader))
    loop = EpochLoop(model, objective, cfg, opt, sched, flip=ds.info.channels == 3, channels_last=lean, bf16=lean and bf16)
    setup = time.perf_counter() - t0
    epochs, evals = [], []
    for epoch in range(cfg.epochs):
        epochs.append(loop.run_epoch(loader, epoch)["epoch_seconds"])
        t = time.perf_counter()
        evaluate(objective, model, ds.images[val], ds.images[val] if job.objective == "reconstruct" else ds.labels[val],
                 torch.device("cpu"), channels_last=lean)
        evals.append(time.perf_counter() - t)
    return {"wall": time.perf_counter() - t0, "setup": setup, "epochs": epochs, "evals": evals}


def through_fit(job: TrainJob, runtime, folder: Path, tracking_uri: str) -> dict:
    """One ``fit`` as a stage calls it (an MLflow run, checkpoints, final weights), timed in parts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("overhead") or client.get_experiment(client.create_experiment("overhead"))
    run_id = client.create_run(experiment.experiment_id, run_name=folder.name).info.run_id
    job = replace(job, storage_path=str(folder / "ray"), mlflow_uri=tracking_uri, mlflow_run_id=run_id)
    t0 = time.time()
    fit(job, runtime, folder / "model.pt")
    t_end = time.time()
    client.set_terminated(run_id)
    _, meta_last = checkpoints.read(checkpoints.latest(job.storage_path)[0])
    last = meta_last["metrics"]
    epochs = [m.value for m in sorted(client.get_metric_history(run_id, "epoch_seconds"), key=lambda m: m.step)]
    evals = [m.value for m in sorted(client.get_metric_history(run_id, "eval_seconds"), key=lambda m: m.step)]
    return {"wall": t_end - t0, "start": last["_started_at"] - t0, "setup": last["setup_seconds"], "epochs": epochs,
            "evals": evals, "reports": last["report_seconds"], "finish": t_end - last["_epoch_done_at"]}


def parts(run: dict, base: dict) -> list[float]:
    first = run["epochs"][0] - base["epochs"][0]
    later = sum(run["epochs"][1:]) - sum(base["epochs"][1:])
    return [run["start"], run["setup"] - base["setup"], first, later, sum(run["evals"]) - sum(base["evals"]),
            run["reports"], run["finish"]]


TRAININGS = ("baseline", "autoencoder", "caenet")  # the stage names (and prefixes) that train


def plain_for_stage(folder: Path, data, threads: int, bf16: bool) -> dict:
    """The plain loop of a finished training stage: its model, schedule and images from its
    ``params.json``; a CAE's reconstruction (to the images themselves: the same compute), a
    classifier's labels; a frozen encoder stays frozen."""
    params = json.loads((folder / "params.json").read_text())
    name = folder.name.rsplit("-", 1)[0]
    model = params.get("model", "caenet")
    frozen = name.startswith("caenet") and params.get("variant") != "no_transfer" and params.get("encoder", "frozen") == "frozen"
    train = params["train"]
    job = TrainJob(name=name, model=model, model_kwargs=params["model_kwargs"], data=data.model_dump(), train=train,
                   objective="reconstruct" if name.startswith("autoencoder") else "classify", progress=False)
    return plain(job, threads, lean=True, bf16=bf16, frozen=["encoder"] if frozen else [])


def pipeline(args) -> None:
    """``--pipeline``: the main job's stages beside plain loops (see the module's docstring)."""
    with tempfile.TemporaryDirectory(prefix="overhead") as tmp:
        overrides = [*(args.set or []), f"runtime.cache_dir={tmp}/artifacts", f"runtime.tracking_uri=sqlite:///{tmp}/mlflow.db",
                     "runtime.progress=false"]
        command = [str(Path(sys.executable).with_name("caenet")), "run", args.config, *(w for o in overrides for w in ("--set", o))]
        t0 = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        total = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"overhead: the main job failed:\n{done.stderr[-3000:]}")
        cfg = load_config(args.config, overrides).effective()
        stages = plan(cfg)
        bf16 = cfg.runtime.precision == "bf16"
        rows, plain_total = [], 0.0
        for stage in stages:
            seconds = json.loads((stage.path / "metrics.json").read_text()).get("stage_seconds", 0.0)
            reference = None
            if stage.name.startswith(TRAININGS):
                reference = plain_for_stage(stage.path, cfg.data, args.threads, bf16)["wall"]
                plain_total += reference
            rows.append((stage.name, seconds, reference))
    print(f"the main job: caenet run {Path(args.config).name} {' '.join(args.set or [])} (a fresh process, an empty cache), "
          f"{args.threads} threads for the plain loops\n")
    print(f"{'stage':26}{'suite (s)':>10}{'plain loop (s)':>16}{'ratio':>8}")
    for name, seconds, reference in rows:
        ref = f"{reference:16.2f}{seconds / reference:7.1f}x" if reference else f"{'-':>16}{'':8}"
        print(f"{name:26}{seconds:10.2f}{ref}")
    staged = sum(s for _, s, _ in rows)
    print(f"{'(sum of the stages)':26}{staged:10.2f}   trainings side by side overlap; the rest is start-up, "
          "MLflow, Ray and the summary")
    print(f"{'= the main job, wall':26}{total:10.2f}{plain_total:16.2f}{total / plain_total:7.1f}x   "
          "(the plain loops' sum: the trainings alone, one after another)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--config", default=str(root / "configs" / "mnist_lenet.yaml"),
                        help="experiment config whose baseline is trained (default: configs/mnist_lenet.yaml)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key; repeatable")
    parser.add_argument("--images", type=int, default=None, help="training images (default: the config's)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the config's baseline epochs)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (plain loop and the worker)")
    parser.add_argument("--engines", nargs="+", default=["auto", "ray-train"], choices=["auto", "ray-train"],
                        help="runtime.trainer values to time")
    parser.add_argument("--pipeline", action="store_true",
                        help="time the main job stage by stage beside plain loops of its trainings instead")
    args = parser.parse_args(argv)
    if args.pipeline:
        return pipeline(args)
    from suite.distributed.ray_runtime import ensure_ray, ray_session

    cfg = load_config(args.config, args.set)
    train = cfg.baseline.train.model_copy(update={"epochs": args.epochs or cfg.baseline.train.epochs})
    data = cfg.data.model_copy(update={"train_limit": args.images or cfg.data.train_limit})
    job = TrainJob(name="overhead", model=cfg.baseline.model, model_kwargs=geometry(INFO[data.dataset]),
                   data=data.model_dump(), train=train.model_dump(), progress=False)
    before = plain(job, args.threads, lean=False)
    base = plain(job, args.threads, lean=True, bf16=cfg.runtime.precision == "bf16")
    n = len(load_split(data, "train"))
    rate = lambda run: statistics.median(run["epochs"][1:] or run["epochs"])  # noqa: E731
    print(f"{cfg.baseline.model} on {n} {data.dataset} images, batch {train.batch_size}, {train.epochs} epochs, "
          f"{args.threads} threads")
    print(f"plain loop, {'DataLoader + NCHW (as before):':35} {before['wall']:6.1f} s, {sum(before['epochs']):5.1f} s in epochs")
    lean = "tensor batches + channels-last" + (" + bf16" if cfg.runtime.precision == "bf16" else "")
    print(f"plain loop, {lean + ':':35} {base['wall']:6.1f} s, {sum(base['epochs']):5.1f} s in epochs "
          f"(epoch time {rate(base) / rate(before):.2f}x)")

    runtime = cfg.runtime.model_copy(update={"num_cpus": args.threads, "cpus_per_worker": args.threads,
                                             "threads_per_worker": args.threads, "max_failures": 0, "progress": False})
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with ray_session(runtime):
            ensure_ray()
            ray_start = time.perf_counter() - t
            # The reference, again with Ray's daemons up beside it as they are beside the trainings.
            base = plain(job, args.threads, lean=True, bf16=cfg.runtime.precision == "bf16")
            for engine in args.engines:
                for attempt in ("first", "next"):
                    label = f"{'warm task' if engine == 'auto' else 'Ray Train'}, {attempt}"
                    runs[label] = through_fit(job, runtime.model_copy(update={"trainer": engine}),
                                              Path(tmp) / f"{engine}-{attempt}", f"sqlite:///{tmp}/mlflow.db")
    labels = list(runs)
    width = max(12, *(len(label) for label in labels))
    print(f"\nseconds per training, suite minus the plain loop (run again with Ray up: {base['wall']:.1f} s, "
          f"{sum(base['epochs']):.1f} s in epochs); Ray start, once per pipeline: {ray_start:.1f} s\n")
    print(f"{'part':22}" + "".join(f"{label:>{width + 2}}" for label in labels))
    table = {label: parts(run, base) for label, run in runs.items()}
    for i, (name, _) in enumerate(PARTS):
        print(f"{name:22}" + "".join(f"{table[label][i]:>{width + 2}.2f}" for label in labels))
    print(f"{'= difference':22}" + "".join(f"{runs[label]['wall'] - base['wall']:>{width + 2}.2f}" for label in labels))
    print(f"{'  (sum of the parts)':22}" + "".join(f"{sum(table[label]):>{width + 2}.2f}" for label in labels))
    print(f"{'wall, suite':22}" + "".join(f"{runs[label]['wall']:>{width + 2}.2f}" for label in labels))
    print(f"{'epoch time vs plain':22}" + "".join(f"{rate(runs[label]) / rate(base):>{width + 1}.3f}x" for label in labels))
    print("\n" + "\n".join(f"  {name}: {what}" for name, what in PARTS))


if __name__ == "__main__":
    main()

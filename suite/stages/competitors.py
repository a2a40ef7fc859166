"""The competitors of Tables I / II, one cached stage each (``caenet compare``).

Every method is a ``compare.methods`` entry with a ``kind``:

  train           an architecture trained from scratch on labels (VGG16, ResNet18/32/50, MobileNetV2)
  kd              a small student trained on the baseline's soft targets (Hinton et al.)
  weight_prune    ``of``'s weights magnitude-pruned to ``ratio`` sparsity step by step while
                  fine-tuning (Han et al. 2015); size measured on a sparse serialization
  weight_cluster  ``of``'s conv / linear weights shared among ``clusters`` values per layer
                  with centroid fine-tuning (Deep Compression); size on the packed form
  channel_prune   ``ratio`` of ``of``'s channels removed (Torch-Pruning dependency graph,
                  L1 importance), then fine-tuned; latency drops with the parameters
  int8            ``of`` quantized to int8 after training (calibration on training images)
  branchy         BranchyNet: side exits trained jointly, an entropy threshold per exit
                  chosen on validation data (``compare.branchy_tolerance``)
  subflow         SubFlow: ``of`` fine-tuned with random utilization ratios, then the
                  subnetwork of the largest ratio that meets ``budget_ms`` cut out for real
  adadeep         AdaDeep: a Ray Tune search over per-layer techniques (channel pruning,
                  low-rank, depthwise-separable) and int8 under accuracy / latency / size
                  constraints (``suite.stages.adadeep``), the best plan then fine-tuned
  slo_prune       the SLO loop of Sec. III-A (``of: caenet``): time the model; while it misses
                  ``budget_ms``, remove the next share of ``ratios`` of its encoder's channels
                  (of all channels for other models) and retrain it with knowledge transfer;
                  stop at the first that meets the budget or when no ratio is left

Each stage leaves ``spec.json`` (how to load its model) beside the weights, and the size a
board would download where that differs from a dense ``torch.save`` (sparse, packed, int8).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from suite.config import ConfigError, MethodConfig
from suite.distributed.training import TrainJob, fit
from suite.models import geometry
from suite.pipeline.context import Context
from suite.pipeline.stage import StageResult
from suite.stages.common import load_model

VERSION = 1


@dataclass
class Trained:
    """A trained model of the comparison: how to load it and what it weighs."""

    label: str
    stage: StageResult
    model: str | None  # registry name (None: a TorchScript file)
    kwargs: dict
    size_bytes: int | None = None  # None: the dense state dict's size
    parameters: dict | None = None  # None: counted on the loaded model (int8 TorchScript hides them)

    def load(self) -> nn.Module:
        if self.model is None:
            from suite.compression.quantize import quiet_jit

            with quiet_jit():
                return torch.jit.load(str(self.stage.file("model.ts")), map_location="cpu").eval()
        return load_model(self.model, self.kwargs, self.stage.file("model.pt"))

    @classmethod
    def from_stage(cls, label: str, stage: StageResult) -> "Trained":
        spec = json.loads(stage.file("spec.json").read_text())
        return cls(label, stage, spec["model"], spec["kwargs"], spec.get("size_bytes"), spec.get("parameters"))


def stage_name(method: MethodConfig) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in method.name.lower()).strip("-")
    return f"cmp-{slug}"


def _write_spec(work: Path, model: str | None, kwargs: dict, size_bytes: int | None = None, parameters: dict | None = None) -> None:
    spec = {"model": model, "kwargs": kwargs, "size_bytes": size_bytes, "parameters": parameters}
    (work / "spec.json").write_text(json.dumps(spec, indent=2))


def run(ctx: Context, method: MethodConfig, done: dict[str, Trained], entropy: StageResult) -> Trained:
    """Train (or reuse) ``method``; ``done`` holds the rows before it (baseline, caenet, earlier methods)."""
    cmp = ctx.cfg.compare
    fresh = method.kind in ("train", "kd", "branchy")  # trained from scratch; the others compress ``of``
    source = None if fresh else done.get(method.of)
    train = (method.train or (cmp.train if fresh else cmp.finetune)).model_dump()
    # Defaults left out: a new option (with its default) does not invalidate finished stages.
    params = {"data": ctx.data_params(), "method": method.model_dump(exclude={"name", "train"}, exclude_defaults=True),
              "train": train}
    if source is not None and source.model is None:
        raise ConfigError(f"compare.methods: {method.name!r} compresses {method.of!r}, an int8 TorchScript model; name a float model in 'of'")
    inputs = [s for s in (source.stage if source else None, entropy if method.kind in ("kd", "slo_prune") else None) if s]
    if method.kind == "int8":
        params.pop("train")
        params["calibration_images"] = cmp.calibration_images
    if method.kind == "branchy":
        params["tolerance"] = cmp.branchy_tolerance
    if method.kind in ("branchy", "subflow", "slo_prune", "adadeep"):  # they time themselves to choose
        params["latency"] = ctx.cfg.evaluate.latency.model_dump()
        params["budget_ms"] = method.budget_ms or cmp.slo_ms

    def body(work: Path, run_id):
        kind = method.kind
        job = dict(name=stage_name(method), train=train, **ctx.job_defaults(work, run_id))
        if fresh:
            name, kwargs = method.model, {**geometry(ctx.info), **method.model_kwargs}
            objective = {"train": "classify", "kd": "kd", "branchy": "branchy"}[kind]
            extra = {"teacher_logits_path": str(entropy.file("logits.npy")), "kd": ctx.cfg.caenet.kd.model_dump()} if kind == "kd" else {}
            metrics = fit(TrainJob(model=name, model_kwargs=kwargs, objective=objective, **extra, **job),
                          ctx.cfg.runtime, work / "model.pt")
            size = None
            if kind == "branchy":
                metrics.update(_choose_exits(ctx, name, kwargs, work / "model.pt"))
        elif kind == "int8":
            return _int8(ctx, source, work)
        elif kind == "subflow":
            return _subflow(ctx, method, source, job, work)
        elif kind == "slo_prune":
            return _slo_prune(ctx, method, source, done["baseline"], entropy, job, work)
        elif kind == "adadeep":
            return _adadeep(ctx, method, source, job, work)
        elif kind == "channel_prune":
            name, kwargs = _prune_structure(ctx, source, method.ratio, work / "pruned_init.pt")
            metrics = fit(TrainJob(model=name, model_kwargs=kwargs, init_from={"": str(work / "pruned_init.pt")}, **job),
                          ctx.cfg.runtime, work / "model.pt")
            size = None
        else:  # weight_prune, weight_cluster: the same architecture, fine-tuned under a constraint
            name, kwargs = source.model, source.kwargs
            constraint = {"prune": {"ratio": method.ratio}} if kind == "weight_prune" else {"share": {"clusters": method.clusters}}
            metrics = fit(TrainJob(model=name, model_kwargs=kwargs, init_from={"": str(source.stage.file("model.pt"))},
                                   **constraint, **job), ctx.cfg.runtime, work / "model.pt")
            size = _compressed_size(kind, load_model(name, kwargs, work / "model.pt"), method)
            metrics["compressed_size_bytes"] = size
        _write_spec(work, name, kwargs, size)
        return metrics

    result = ctx.runner.run(stage_name(method), VERSION, params, inputs, body,
                            artifacts=lambda w: [f for f in (w / "spec.json", w / "subflow_ratios.json", w / "slo_loop.md",
                                                            w / "adadeep_search.md")
                                                 if f.exists()])
    return Trained.from_stage(method.name, result)


def _compressed_size(kind: str, model: nn.Module, method: MethodConfig) -> int:
    from suite.compression.pruning import sparse_bytes
    from suite.compression.sharing import packed_bytes

    return sparse_bytes(model) if kind == "weight_prune" else packed_bytes(model.cpu(), method.clusters)


def _prune_structure(ctx: Context, source: Trained, ratio: float, out: Path) -> tuple[str, dict]:
    """Remove ``ratio`` of the source's channels; save the pruned weights; return its (name, kwargs)."""
    from suite.compression.structured import prune_channels
    from suite.models.resized import resized_spec

    model = source.load().cpu()
    info = ctx.info
    example = torch.zeros(1, info.channels, info.size, info.size)
    base, base_kwargs = (source.kwargs["base"], source.kwargs["base_kwargs"]) if source.model == "resized" else (source.model, source.kwargs)
    prefixes = ["encoder"] if base == "caenet" else None  # CAE-Net: the encoder only (Sec. III-A)
    prune_channels(model, ratio, example, prefixes=prefixes)
    torch.save(model.state_dict(), out)
    return resized_spec(base, base_kwargs, model)


def _int8(ctx: Context, source: Trained, work: Path) -> dict:
    from suite.data import fit_and_val

    calibration = _calibration(ctx, fit_and_val(ctx.cfg.data)[0])
    return {"compressed_size_bytes": _save_int8(source.load(), calibration, work), "calibration_images": len(calibration)}


def _calibration(ctx: Context, fit_images: torch.Tensor) -> torch.Tensor:
    """The first ``compare.calibration_images`` training images (float, [0, 1]) that fix int8 ranges."""
    return fit_images[: ctx.cfg.compare.calibration_images].float() / 255.0


def _save_int8(float_model: nn.Module, calibration: torch.Tensor, work: Path) -> int:
    """Quantize to int8, save ``model.ts`` and its spec; return its size in bytes."""
    from suite.compression.quantize import quantize_int8, quiet_jit, scripted_bytes
    from suite.metrics import count_parameters

    scripted = quantize_int8(float_model, calibration)
    with quiet_jit():
        torch.jit.save(scripted, str(work / "model.ts"))
    size = scripted_bytes(scripted)
    _write_spec(work, None, {}, size, count_parameters(float_model))  # int8 keeps the count, at 1 byte each
    return size


def _choose_exits(ctx: Context, name: str, kwargs: dict, weights: Path) -> dict:
    """Pick BranchyNet's entropy thresholds on the validation images and store them in the weights."""
    from suite.metrics import batch1_latency
    from suite.models.branchy import choose_thresholds, component_inputs
    from suite.stages.common import batched

    from suite.data import fit_and_val

    model = load_model(name, kwargs, weights)
    _, _, images, labels = fit_and_val(ctx.cfg.data)
    model.return_all = True
    exits = batched(lambda x: model(x).transpose(0, 1), images)  # [n, exits, classes]
    model.return_all = False
    lat = ctx.cfg.evaluate.latency
    model = model.cpu()
    example = images[:1].float() / 255.0
    costs = {part: batch1_latency({part: module}, x, lat.threads, lat.warmup, lat.runs // 2, 1)[part]["latency_p50_ms"]
             for part, (module, x) in component_inputs(model, example).items()}
    choice = choose_thresholds(list(exits.transpose(0, 1)), labels, costs, ctx.cfg.compare.branchy_tolerance)
    model.thresholds.copy_(torch.tensor(choice["thresholds"]))
    torch.save(model.state_dict(), weights)
    out = {"branchy_val_acc": choice["val_acc"], "branchy_final_exit_val_acc": choice["final_exit_val_acc"],
           "branchy_expected_latency_ms": choice["expected_latency_ms"]}
    out.update({f"branchy_threshold_{i}": t for i, t in enumerate(choice["thresholds"])})
    out.update({f"branchy_val_exit_share_{i}": s for i, s in enumerate(choice["exit_shares"])})
    return out


def _subflow(ctx: Context, method: MethodConfig, source: Trained, job: dict, work: Path) -> dict:
    """Fine-tune ``source`` as a SubFlow net, cut out each ratio's subnetwork, time them all,
    keep the largest ratio within the budget (the smallest when none is)."""
    from suite.data import fit_and_val
    from suite.metrics import accuracy, time_models
    from suite.models.subflow import extract

    if source.model == "resized":
        raise ConfigError(f"compare.methods: {method.name!r}: SubFlow starts from an unpruned model; set 'of' to one")
    base, base_kwargs = source.model, {k: v for k, v in source.kwargs.items() if k not in geometry(ctx.info)}
    kwargs = {**geometry(ctx.info), "base": base, "base_kwargs": base_kwargs, "ratios": method.ratios}
    metrics = fit(TrainJob(model="subflow", model_kwargs=kwargs, init_from={"": str(source.stage.file("model.pt"))}, **job),
                  ctx.cfg.runtime, work / "subflow.pt")
    trained = load_model("subflow", kwargs, work / "subflow.pt").cpu()
    fit_x, _, val_x, val_y = fit_and_val(ctx.cfg.data)
    calibration = fit_x[:512].float() / 255.0
    subnets, specs = {}, {}
    for ratio in method.ratios:
        subnets[ratio], specs[ratio] = extract(trained, base, base_kwargs, geometry(ctx.info), ratio, calibration)
    timings = time_models({str(r): m for r, m in subnets.items()}, calibration[:1], ctx.cfg.evaluate.latency)
    budget = method.budget_ms or ctx.cfg.compare.slo_ms
    tried = []
    for ratio in method.ratios:
        p50 = timings[str(ratio)]["latency_p50_ms"]
        tried.append({"ratio": ratio, "val_acc": accuracy(subnets[ratio], val_x, val_y), "p50_ms": p50,
                      "parameters": sum(p.numel() for p in subnets[ratio].parameters()),
                      "meets_budget": budget is None or p50 <= budget})
    fitting = [t for t in tried if t["meets_budget"]]
    chosen = max(fitting, key=lambda t: t["ratio"]) if fitting else min(tried, key=lambda t: t["ratio"])
    (work / "subflow_ratios.json").write_text(json.dumps({"budget_ms": budget, "tried": tried, "chosen": chosen["ratio"]}, indent=2))
    torch.save(subnets[chosen["ratio"]].state_dict(), work / "model.pt")
    name, spec = specs[chosen["ratio"]]
    _write_spec(work, name, spec)
    metrics.update({"subflow_ratio": chosen["ratio"], "subflow_meets_budget": float(chosen["meets_budget"])})
    metrics.update({f"subflow_val_acc_r{t['ratio']}": t["val_acc"] for t in tried})
    metrics.update({f"subflow_p50_ms_r{t['ratio']}": t["p50_ms"] for t in tried})
    return metrics


def _slo_prune(ctx: Context, method: MethodConfig, source: Trained, baseline: Trained, entropy: StageResult, job: dict,
               work: Path) -> dict:
    """Prune structurally, retrain, time; repeat with the next ratio until the budget is met.

    The budget is ``budget_ms`` (else ``compare.slo_ms``) on this machine, or with ``speedup``
    the baseline's batch-1 p50 here divided by it (timed beside the unpruned model)."""
    from suite.data import fit_and_val
    from suite.metrics import accuracy, time_models

    _, _, val_x, val_y = fit_and_val(ctx.cfg.data)
    example = val_x[:1].float() / 255.0
    lat = ctx.cfg.evaluate.latency

    def candidate(ratio: float, model: nn.Module, p50_ms: float) -> dict:
        return {"ratio": ratio, "p50_ms": p50_ms, "val_acc": accuracy(model, val_x, val_y),
                "parameters": sum(p.numel() for p in model.parameters()), "meets_budget": p50_ms <= budget}

    model = source.load()
    timed = time_models({"m": model, "baseline": baseline.load()}, example, lat)
    budget = timed["baseline"]["latency_p50_ms"] / method.speedup if method.speedup else (method.budget_ms or ctx.cfg.compare.slo_ms)
    tried = [candidate(0.0, model, timed["m"]["latency_p50_ms"])]
    chosen = {"name": source.model, "kwargs": source.kwargs, "weights": source.stage.file("model.pt"), **tried[0]}
    ctx.runner.log(f"[{stage_name(method)}] unpruned: {tried[0]['p50_ms']:.3f} ms vs budget {budget:g} ms")
    metrics: dict = {}
    for ratio in sorted(method.ratios):
        if chosen["meets_budget"]:
            break
        folder = work / f"ratio-{ratio:g}"
        folder.mkdir(exist_ok=True)
        name, kwargs = _prune_structure(ctx, source, ratio, folder / "pruned_init.pt")
        kd = source.model == "caenet" or (source.model == "resized" and source.kwargs.get("base") == "caenet")
        extra = {"objective": "kd", "teacher_logits_path": str(entropy.file("logits.npy")),
                 "kd": ctx.cfg.caenet.kd.model_dump()} if kd else {}
        metrics = fit(TrainJob(model=name, model_kwargs=kwargs, init_from={"": str(folder / "pruned_init.pt")},
                               **{**job, "storage_path": ctx.storage_for(folder), "name": f"{job['name']}-r{ratio:g}"}, **extra),
                      ctx.cfg.runtime, folder / "model.pt")
        model = load_model(name, kwargs, folder / "model.pt")
        row = candidate(ratio, model, time_models({"m": model}, example, lat)["m"]["latency_p50_ms"])
        tried.append(row)
        chosen = {"name": name, "kwargs": kwargs, "weights": folder / "model.pt", **row}
        ctx.runner.log(f"[{stage_name(method)}] channels -{100 * ratio:.0f}%: {row['p50_ms']:.3f} ms, "
                       f"val acc {100 * row['val_acc']:.2f}% ({'meets' if row['meets_budget'] else 'misses'} the budget)")
    torch.save(torch.load(chosen["weights"], map_location="cpu", weights_only=True), work / "model.pt")
    _write_spec(work, chosen["name"], chosen["kwargs"])
    verdict = "met" if chosen["meets_budget"] else "not met: no ratio left (add larger ratios or relax the budget)"
    target = f"{method.speedup:g}x the baseline's speed = " if method.speedup else ""
    lines = [f"SLO loop for {method.of}: budget {target}{budget:.3g} ms batch-1 p50 on this machine; {verdict}", "",
             "| channels removed | p50 ms | val acc | parameters | meets |", "|---|---|---|---|---|"]
    lines += [f"| {100 * t['ratio']:.0f}% | {t['p50_ms']:.3f} | {100 * t['val_acc']:.2f}% | {t['parameters']:,} | "
              f"{'yes' if t['meets_budget'] else 'no'} |" for t in tried]
    (work / "slo_loop.md").write_text("\n".join(lines) + "\n")
    (work / "slo_loop.json").write_text(json.dumps({"budget_ms": budget, "tried": tried, "chosen": chosen["ratio"]}, indent=2))
    ctx.runner.log("\n".join(lines))
    return {**{k: v for k, v in metrics.items() if isinstance(v, (int, float))}, "slo_ratio": chosen["ratio"],
            "slo_met": float(chosen["meets_budget"]), "slo_candidates_tried": len(tried)}


def _adadeep(ctx: Context, method: MethodConfig, source: Trained, job: dict, work: Path) -> dict:
    """Search per-layer plans with Tune, then apply the best one and fine-tune it through Ray Train."""
    from suite.data import fit_and_val
    from suite.stages import adadeep

    if source.model in ("resized", "adadeep", None):
        raise ConfigError(f"compare.methods: {method.name!r}: AdaDeep starts from an uncompressed model, not {method.of!r}; set 'of'")
    result = adadeep.search(ctx, method, source, work)
    adadeep.save(result, work)
    ctx.runner.log(adadeep.report_markdown(result))
    best = result["best"]["config"]
    plan = adadeep.as_plan({k: v for k, v in best.items() if k != "int8"})
    fit_x = fit_and_val(ctx.cfg.data)[0]
    model, shapes = adadeep.compress(source.load().cpu(), plan, fit_x[:1].float() / 255.0)
    torch.save(model.state_dict(), work / "compressed_init.pt")
    base_kwargs = {k: v for k, v in source.kwargs.items() if k not in geometry(ctx.info)}
    name, kwargs = "adadeep", {**geometry(ctx.info), "base": source.model, "base_kwargs": base_kwargs, "shapes": shapes, "plan": plan}
    metrics = fit(TrainJob(model=name, model_kwargs=kwargs, init_from={"": str(work / "compressed_init.pt")}, **job),
                  ctx.cfg.runtime, work / "model.pt")
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    metrics.update({"adadeep_trials": len(result["trials"]), "adadeep_met_constraints": float(result["met"]),
                    "adadeep_search_reward": result["best"]["reward"], "adadeep_int8": float(bool(best["int8"]))})
    if best["int8"]:
        _save_int8(load_model(name, kwargs, work / "model.pt"), _calibration(ctx, fit_x), work)
    else:
        _write_spec(work, name, kwargs)
    return metrics

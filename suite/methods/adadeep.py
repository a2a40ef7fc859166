"""AdaDeep (Liu et al., MobiSys 2018): usage-driven choice of per-layer compression.

AdaDeep picks, for every layer, one compression technique, so that the whole model meets
the user's accuracy, latency and size constraints with the best trade-off. The paper
searches with deep reinforcement learning. Here the search is a Ray Tune random search
(``kind: adadeep`` in ``compare.methods``), not RL: every trial draws one technique per
conv / hidden linear layer from

  none | prune:0.25 | prune:0.5 (channels removed, Torch-Pruning) | lowrank:0.5 | lowrank:0.25
  (SVD factorization at that rank fraction) | depthwise (depthwise-separable replacement)

plus an int8 switch for the whole model, applies them to the trained ``of`` model, fine-tunes
for ``search_steps`` batches, and scores it with AdaDeep's kind of reward:

  reward = val_acc + latency_weight * (1 - T / T0) + size_weight * (1 - S / S0)

where T, S are batch-1 latency and size and T0, S0 the uncompressed model's. A plan that
breaks a constraint (accuracy more than ``max_accuracy_drop`` below the source's, latency
over ``budget_ms``, size over ``size_budget_kb``) scores below every plan that keeps them.
The best plan is then applied again and fine-tuned through Ray Train like every other
competitor; ``adadeep_search.md`` lists every plan tried.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from suite.compression.factorize import can_apply, factorize
from suite.compression.quantize import quantize_int8, scripted_bytes
from suite.compression.structured import prune_channels
from suite.config import ConfigError, LatencyConfig, TrainConfig
from suite.distributed.ray_runtime import ensure_ray
from suite.methods import register
from suite.methods.job import MethodJob, TimesItself, base_kwargs, calibration, save_int8
from suite.metrics import accuracy, serialized_bytes, time_models
from suite.timing import P50
from suite.models import create_model
from suite.models.resized import architecture
from suite.stages.trained import load_model, write_spec
from suite.training.job import TrainingError
from suite.training.loop import EpochLoop, make_optimizer
from suite.training.objectives import make_objective

CHOICES = ("none", "prune:0.25", "prune:0.5", "lowrank:0.5", "lowrank:0.25", "depthwise")


@register
class AdaDeep(TimesItself):
    """AdaDeep: a Ray Tune search over per-layer compression techniques and int8 under constraints."""

    kind: Literal["adadeep"]
    trials: int = Field(default=12, ge=1)  # Tune trials: random per-layer plans
    search_steps: int = Field(default=50, ge=0)  # fine-tuning batches per trial
    max_accuracy_drop: float = Field(default=0.05, ge=0, le=1)  # constraint: val accuracy below the source's
    size_budget_kb: float | None = Field(default=None, gt=0)  # constraint: serialized size
    latency_weight: float = Field(default=0.5, ge=0)  # reward weights
    size_weight: float = Field(default=0.2, ge=0)
    artifacts = ("adadeep_search.md",)
    uses_tune = True

    def smoke(self) -> "AdaDeep":
        return self.model_copy(update={"trials": min(self.trials, 4), "search_steps": min(self.search_steps, 20)})

    def run(self, job: MethodJob) -> dict:
        """Search per-layer plans with Tune, then apply the best one and fine-tune it through Ray Train."""
        source = job.source
        if source.model in ("resized", "adadeep", None):
            raise ConfigError(f"compare.methods: {self.name!r}: AdaDeep starts from an uncompressed model, not {self.of!r}; set 'of'")
        result = search(job, self)
        save(result, job.work)
        job.log(report_markdown(result))
        best = result["best"]["config"]
        plan = as_plan({k: v for k, v in best.items() if k != "int8"})
        fit_x = job.split()[0]
        model, shapes = compress(source.load().cpu(), plan, fit_x[:1].float() / 255.0)
        torch.save(model.state_dict(), job.work / "compressed_init.pt")
        name = "adadeep"
        kwargs = {**job.geometry, "base": source.model, "base_kwargs": base_kwargs(job, source.kwargs), "shapes": shapes, "plan": plan}
        metrics = job.fit(job.work / "model.pt", model=name, model_kwargs=kwargs,
                          init_from={"": str(job.work / "compressed_init.pt")})
        metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        metrics.update({"adadeep_trials": len(result["trials"]), "adadeep_met_constraints": float(result["met"]),
                        "adadeep_search_reward": result["best"]["reward"], "adadeep_int8": float(bool(best["int8"]))})
        if best["int8"]:
            save_int8(load_model(name, kwargs, job.work / "model.pt"), calibration(job, fit_x), job.work)
        else:
            write_spec(job.work, name, kwargs)
        return metrics


def layer_names(model: nn.Module) -> list[str]:
    """The layers AdaDeep chooses for: every conv and linear layer but the output layer."""
    return [n for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and n.split(".")[-1] != "head"]


def choices_for(layer: nn.Module) -> list[str]:
    return [c for c in CHOICES if can_apply(layer, c.split(":")[0])]


def as_plan(draw: dict[str, str]) -> dict[str, dict]:
    plan = {}
    for name, choice in draw.items():
        technique, _, amount = choice.partition(":")
        plan[name] = {"technique": technique, "amount": float(amount) if amount else None}
    return plan


def compress(model: nn.Module, plan: dict[str, dict], example: torch.Tensor) -> tuple[nn.Module, dict]:
    """Apply ``plan`` to ``model`` in place (pruning first, then factorizations); return it and
    the shapes after pruning, which ``create_model("adadeep", ...)`` needs to rebuild it."""
    ratios = {n: s["amount"] for n, s in plan.items() if s["technique"] == "prune"}
    if ratios:
        prune_channels(model, ratios, example)
    shapes = architecture(model)
    factorize(model, plan)
    return model, shapes


def reward(row: dict, ref: dict, method: "AdaDeep", budget_ms: float | None) -> float:
    """AdaDeep-style reward; a plan that breaks a constraint gets -1 minus how far it breaks them."""
    violation = max(0.0, (ref["val_acc"] - method.max_accuracy_drop) - row["val_acc"])
    if budget_ms is not None:
        violation += max(0.0, row[P50] / budget_ms - 1)
    if method.size_budget_kb is not None:
        violation += max(0.0, row["size_bytes"] / 1024 / method.size_budget_kb - 1)
    if violation > 0:
        return -1.0 - violation
    return (row["val_acc"] + method.latency_weight * (1 - row[P50] / ref[P50])
            + method.size_weight * (1 - row["size_bytes"] / ref["size_bytes"]))


def measure(model: nn.Module, int8: bool, val_x: torch.Tensor, val_y: torch.Tensor, calibration: torch.Tensor,
            latency) -> dict:
    """Validation accuracy, serialized size and batch-1 p50 of a (compressed) model."""
    model = model.cpu().eval()
    if int8:
        model = quantize_int8(model, calibration)
        size = scripted_bytes(model)
    else:
        size = serialized_bytes(model)
    p50 = time_models({"m": model}, calibration[:1], latency)["m"]["latency_p50_ms"]
    return {"val_acc": accuracy(model, val_x, val_y), "size_bytes": size, P50: p50}


def _trial(config: dict, source: dict, state: dict, split: tuple, method: dict, ref: dict, budget_ms, latency: dict,
           threads: int, steps: int, batch_size: int, lr: float) -> None:
    """One Tune trial: compress, fine-tune ``steps`` batches, measure, report the reward.

    The source weights and the images come as Tune parameters (Ray's object store), not as
    paths: a trial may run on a node that sees none of the driver's files."""
    import ray.tune  # deferred on purpose (here and in search): ray.tune takes ~0.8 s to import, only AdaDeep needs it
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    fit_x, fit_y, val_x, val_y = split
    model = create_model(source["model"], **source["kwargs"])
    model.load_state_dict(state)
    model.eval()
    plan = as_plan({k: v for k, v in config.items() if k != "int8"})
    example = fit_x[:1].float() / 255.0
    model, _ = compress(model, plan, example)
    # ``steps`` batches drawn with replacement, through the suite's one epoch loop.
    cfg = TrainConfig(epochs=1, batch_size=batch_size, optimizer="adam", lr=lr, weight_decay=0.01, schedule="constant",
                      augment=True)
    sampler = RandomSampler(fit_x, replacement=True, num_samples=steps * batch_size)
    loader = DataLoader(TensorDataset(fit_x, fit_y), batch_size=batch_size, sampler=sampler)
    opt, sched = make_optimizer(model.parameters(), cfg, steps)
    EpochLoop(model, make_objective("classify"), cfg, opt, sched, flip=fit_x.shape[1] == 3).run_epoch(loader, 0)
    row = measure(model, bool(config["int8"]), val_x, val_y, fit_x[:256].float() / 255.0, LatencyConfig(**latency))
    row["reward"] = reward(row, ref, AdaDeep.model_validate(method), budget_ms)
    ray.tune.report(row)


def search(job: MethodJob, method: "AdaDeep") -> dict:
    """Tune's random search over per-layer plans; returns the best plan and every trial's row."""
    import ray.tune  # deferred, as in _trial
    ctx, source = job.ctx, job.source
    budget = method.budget(ctx.cfg.compare)
    model = source.load().cpu()
    fit_x, fit_y, val_x, val_y = job.split()
    calibration = fit_x[:256].float() / 255.0
    ref = measure(model, False, val_x, val_y, calibration, ctx.cfg.evaluate.latency)
    modules = dict(model.named_modules())
    space = {name: ray.tune.choice(choices_for(modules[name])) for name in layer_names(model)}
    space["int8"] = ray.tune.choice([False, True])
    ft = ctx.cfg.compare.finetune
    trainable = ray.tune.with_resources(ray.tune.with_parameters(
        _trial, source={"model": source.model, "kwargs": source.kwargs}, state=model.state_dict(),
        split=(fit_x, fit_y, val_x, val_y), method=method.model_dump(), ref=ref, budget_ms=budget,
        latency=ctx.cfg.evaluate.latency.model_dump(), threads=ctx.cfg.runtime.threads(),
        steps=method.search_steps, batch_size=ft.batch_size, lr=ft.lr), {"CPU": ctx.cfg.runtime.cpus_per_worker})
    tuner = ray.tune.Tuner(trainable, param_space=space,
                           tune_config=ray.tune.TuneConfig(metric="reward", mode="max", num_samples=method.trials,
                                                           max_concurrent_trials=1,  # one at a time: fair latency
                                                           reuse_actors=True,  # a warm process per trial: ~3 s less each
                                                           search_alg=ray.tune.search.BasicVariantGenerator(random_state=0)),
                           run_config=ray.tune.RunConfig(name="search", storage_path=str(job.work), verbose=0))
    ensure_ray()
    grid = tuner.fit()
    rows = []
    for result in grid:
        if result.error is not None or not result.metrics or "reward" not in result.metrics:
            rows.append({"error": str(result.error).splitlines()[-1] if result.error else "no result", "config": result.config})
            continue
        rows.append({**{k: result.metrics[k] for k in ("val_acc", "size_bytes", P50, "reward")}, "config": result.config})
    ok = [r for r in rows if "reward" in r]
    if not ok:
        raise TrainingError(f"AdaDeep: all {len(rows)} trials failed; first error: {rows[0].get('error')}")
    best = max(ok, key=lambda r: r["reward"])
    return {"reference": ref, "budget_ms": budget, "layers": layer_names(model), "trials": rows, "best": best,
            "met": best["reward"] > -1.0}


def report_markdown(result: dict) -> str:
    ref, names = result["reference"], result["layers"]
    lines = [f"AdaDeep search (Ray Tune random search, {len(result['trials'])} plans); reference: val acc "
             f"{100 * ref['val_acc']:.2f}%, {ref[P50]:.3f} ms, {ref['size_bytes'] / 1024:.1f} KB; budget "
             f"{result['budget_ms']} ms; {'a plan met the constraints' if result['met'] else 'NO plan met the constraints'}",
             "", "| reward | val acc | p50 ms | size KB | int8 | " + " | ".join(names) + " |",
             "|---|---|---|---|---|" + "---|" * len(names)]
    for r in sorted(result["trials"], key=lambda r: -r.get("reward", -1e9)):
        if "reward" not in r:
            lines.append(f"| failed: {r['error']} |")
            continue
        c = r["config"]
        lines.append(f"| {r['reward']:.3f} | {100 * r['val_acc']:.2f}% | {r[P50]:.3f} | {r['size_bytes'] / 1024:.1f} | "
                     f"{'yes' if c['int8'] else 'no'} | " + " | ".join(c[n] for n in names) + " |")
    return "\n".join(lines)


def save(result: dict, work: Path) -> None:
    (work / "adadeep_search.json").write_text(json.dumps(result, indent=2, default=str))
    (work / "adadeep_search.md").write_text(report_markdown(result) + "\n")

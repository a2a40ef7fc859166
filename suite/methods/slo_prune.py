"""``kind: slo_prune``: the SLO loop of CAE-Net (Sec. III-A), usually ``of: caenet``.

Time the model; while it misses the budget, remove the next share of ``ratios`` of its
channels (the encoder's only for CAE-Net) and retrain it, with knowledge transfer from the
baseline for CAE-Net; stop at the first that meets the budget or when no ratio is left.
The budget is ``budget_ms`` (else ``compare.slo_ms``), or with ``speedup`` the baseline's
batch-1 p50 divided by it (timed beside the unpruned model). Candidates are timed on this
machine, or with ``board: NAME`` on that board of ``caenet compare --boards`` (each beside
the baseline, through the board's Ray actor and the measurement cache).
"""

from __future__ import annotations

import json
from typing import ClassVar, Literal

import torch
import torch.nn as nn
from pydantic import Field, field_validator

from suite.config import ConfigError
from suite.methods import register
from suite.methods.job import MethodJob, TimesItself, prune_structure
from suite.metrics import accuracy, time_models
from suite.timing import P50
from suite.timing import HIGH, LOW, interval
from suite.stages.trained import load_model, write_spec


@register
class SLOPrune(TimesItself):
    """The SLO loop of Sec. III-A: prune channels and retrain until the latency budget holds."""

    kind: Literal["slo_prune"]
    ratios: list[float] = [0.25, 0.5, 0.75]  # shares of the channels removed, tried in order
    speedup: float | None = Field(default=None, gt=0)  # the budget as a speed-up over the baseline, timed where candidates are
    board: str | None = None  # time the candidates on this board of --boards (default: this machine)
    teacher: ClassVar[bool] = True
    artifacts = ("slo_loop.md",)

    @field_validator("ratios")
    @classmethod
    def _in_range(cls, ratios: list[float]) -> list[float]:
        if not ratios or any(not 0 < r < 1 for r in ratios):
            raise ValueError(f"slo_prune ratios remove that share of channels, so must be in (0, 1), got {ratios}")
        return ratios

    def check(self, compare) -> None:
        if self.budget(compare) is None and self.speedup is None:
            raise ValueError(f"method {self.name!r} ({self.kind}) needs a latency budget: budget_ms, compare.slo_ms or speedup")

    def key(self, cfg) -> dict:
        key = super().key(cfg)
        key["method"]["ratios"] = self.ratios  # always stated, as in the keys of stages cached before methods had classes
        return key

    def run(self, job: MethodJob) -> dict:
        ctx, source = job.ctx, job.source
        _, _, val_x, val_y = job.split()
        time = self._timer(job, val_x)
        model = source.load()
        timed = time({"m": model, "baseline": job.rows["baseline"].load()}, {"m": [source.model, source.kwargs]})
        budget = timed["baseline"][P50] / self.speedup if self.speedup else self.budget(ctx.cfg.compare)

        def candidate(ratio: float, model: nn.Module, stats: dict) -> dict:
            return {"ratio": ratio, **{k: stats[k] for k in (P50, P50 + LOW, P50 + HIGH)}, "val_acc": accuracy(model, val_x, val_y),
                    "parameters": sum(p.numel() for p in model.parameters()), "meets_budget": stats[P50] <= budget}

        tried = [candidate(0.0, model, timed["m"])]
        chosen = {"name": source.model, "kwargs": source.kwargs, "weights": source.stage.file("model.pt"), **tried[0]}
        stage = job.job["name"]
        job.log(f"[{stage}] unpruned: {tried[0][P50]:.3f} ms vs budget {budget:g} ms")
        kd = source.model == "caenet" or (source.model == "resized" and source.kwargs.get("base") == "caenet")
        metrics: dict = {}
        for ratio in sorted(self.ratios):
            if chosen["meets_budget"]:
                break
            folder = job.work / f"ratio-{ratio:g}"
            folder.mkdir(exist_ok=True)
            name, kwargs = prune_structure(job, ratio, folder / "pruned_init.pt")
            metrics = job.fit(folder / "model.pt", model=name, model_kwargs=kwargs, init_from={"": str(folder / "pruned_init.pt")},
                              storage_path=ctx.storage_for(folder), name=f"{stage}-r{ratio:g}", **(job.teacher() if kd else {}))
            model = load_model(name, kwargs, folder / "model.pt")
            row = candidate(ratio, model, time({"m": model}, {"m": [name, kwargs]})["m"])
            tried.append(row)
            chosen = {"name": name, "kwargs": kwargs, "weights": folder / "model.pt", **row}
            job.log(f"[{stage}] channels -{100 * ratio:.0f}%: {row[P50]:.3f} ms, "
                    f"val acc {100 * row['val_acc']:.2f}% ({'meets' if row['meets_budget'] else 'misses'} the budget)")
        torch.save(torch.load(chosen["weights"], map_location="cpu", weights_only=True), job.work / "model.pt")
        write_spec(job.work, chosen["name"], chosen["kwargs"])
        lines = self._report(budget, chosen, tried)
        (job.work / "slo_loop.md").write_text("\n".join(lines) + "\n")
        (job.work / "slo_loop.json").write_text(json.dumps({"budget_ms": budget, "tried": tried, "chosen": chosen["ratio"]}, indent=2))
        job.log("\n".join(lines))
        return {**{k: v for k, v in metrics.items() if isinstance(v, (int, float))}, "slo_ratio": chosen["ratio"],
                "slo_met": float(chosen["meets_budget"]), "slo_candidates_tried": len(tried)}

    def _timer(self, job: MethodJob, images: torch.Tensor):
        """time(models, architectures) -> label -> latency stats, where this loop decides: this
        machine (``evaluate.latency``), or the board (``architectures`` name the cache entries)."""
        lat = job.ctx.cfg.evaluate.latency
        if self.board is None:
            return lambda models, architectures: time_models(models, images[:1].float() / 255.0, lat)
        timer = job.ctx.board_timers.get(self.board)
        if timer is None:
            raise ConfigError(f"compare.methods[{self.name!r}].board: {self.board} is not a board of this run; "
                              "give the boards file that names it with --boards")
        baseline = job.rows["baseline"].load()
        return lambda models, architectures: timer({"baseline": baseline, **models}, architectures, images.float() / 255.0)

    def _report(self, budget: float, chosen: dict, tried: list[dict]) -> list[str]:
        verdict = "met" if chosen["meets_budget"] else "not met: no ratio left (add larger ratios or relax the budget)"
        target = f"{self.speedup:g}x the baseline's speed = " if self.speedup else ""
        where = f"board {self.board}" if self.board else "this machine"
        lines = [f"SLO loop for {self.of}: budget {target}{budget:.3g} ms batch-1 p50 on {where}; {verdict}", "",
                 "| channels removed | p50 ms [95%] | val acc | parameters | meets |", "|---|---|---|---|---|"]
        lines += [f"| {100 * t['ratio']:.0f}% | {interval(t)} | {100 * t['val_acc']:.2f}% | {t['parameters']:,} | "
                  f"{'yes' if t['meets_budget'] else 'no'} |" for t in tried]
        return lines

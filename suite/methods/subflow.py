"""``kind: subflow``: SubFlow (Lee & Nirjon 2020). ``of`` is fine-tuned with random utilization
``ratios`` (each step trains a random subnetwork), then each ratio's subnetwork is cut out for
real, timed here, and the largest ratio within the latency budget is kept (the smallest when
none is)."""

from __future__ import annotations

import json
from typing import Literal

import torch
from pydantic import field_validator

from suite.config import ConfigError
from suite.methods import register
from suite.methods.job import MethodJob, TimesItself, base_kwargs
from suite.metrics import accuracy, time_models
from suite.timing import P50
from suite.models.subflow import extract
from suite.stages.trained import load_model, write_spec


@register
class SubFlow(TimesItself):
    """SubFlow: trained at random utilization ratios; the largest subnetwork within the budget kept."""

    kind: Literal["subflow"]
    ratios: list[float] = [0.25, 0.5, 0.75, 1.0]  # utilization ratios trained together
    artifacts = ("subflow_ratios.json",)

    @field_validator("ratios")
    @classmethod
    def _in_range(cls, ratios: list[float]) -> list[float]:
        if not ratios or any(not 0 < r <= 1 for r in ratios):
            raise ValueError(f"ratios must be in (0, 1], got {ratios}")
        return ratios

    def check(self, compare) -> None:
        if self.budget(compare) is None:
            raise ValueError(f"method {self.name!r} ({self.kind}) needs a latency budget: budget_ms, compare.slo_ms")

    def run(self, job: MethodJob) -> dict:
        source, geometry = job.source, job.geometry
        if source.model == "resized":
            raise ConfigError(f"compare.methods: {self.name!r}: SubFlow starts from an unpruned model; set 'of' to one")
        base, kwargs0 = source.model, base_kwargs(job, source.kwargs)
        kwargs = {**geometry, "base": base, "base_kwargs": kwargs0, "ratios": self.ratios}
        metrics = job.fit(job.work / "subflow.pt", model="subflow", model_kwargs=kwargs,
                          init_from={"": str(source.stage.file("model.pt"))})
        trained = load_model("subflow", kwargs, job.work / "subflow.pt").cpu()
        fit_x, _, val_x, val_y = job.split()
        calibration = fit_x[:512].float() / 255.0
        subnets, specs = {}, {}
        for ratio in self.ratios:
            subnets[ratio], specs[ratio] = extract(trained, base, kwargs0, geometry, ratio, calibration)
        timings = time_models({str(r): m for r, m in subnets.items()}, calibration[:1], job.ctx.cfg.evaluate.latency)
        budget = self.budget(job.ctx.cfg.compare)
        tried = []
        for ratio in self.ratios:
            p50 = timings[str(ratio)]["latency_p50_ms"]
            tried.append({"ratio": ratio, "val_acc": accuracy(subnets[ratio], val_x, val_y), P50: p50,
                          "parameters": sum(p.numel() for p in subnets[ratio].parameters()),
                          "meets_budget": budget is None or p50 <= budget})
        fitting = [t for t in tried if t["meets_budget"]]
        chosen = max(fitting, key=lambda t: t["ratio"]) if fitting else min(tried, key=lambda t: t["ratio"])
        (job.work / "subflow_ratios.json").write_text(json.dumps({"budget_ms": budget, "tried": tried, "chosen": chosen["ratio"]}, indent=2))
        torch.save(subnets[chosen["ratio"]].state_dict(), job.work / "model.pt")
        name, spec = specs[chosen["ratio"]]
        write_spec(job.work, name, spec)
        metrics.update({"subflow_ratio": chosen["ratio"], "subflow_meets_budget": float(chosen["meets_budget"])})
        metrics.update({f"subflow_val_acc_r{t['ratio']}": t["val_acc"] for t in tried})
        metrics.update({f"subflow_p50_ms_r{t['ratio']}": t[P50] for t in tried})
        return metrics

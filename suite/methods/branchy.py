"""``kind: branchy``: BranchyNet (Teerapittayanon et al. 2016). Side exits trained jointly with
the main branch; then, on validation images, one entropy threshold per exit is chosen so that
the accuracy gives up at most ``compare.branchy_tolerance`` while the expected latency (each
part timed on this machine) is lowest."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from suite.methods import register
from suite.methods.job import FromScratch, MethodJob
from suite.metrics import batch1_latency
from suite.models.branchy import choose_thresholds, component_inputs
from suite.stages.trained import batched, load_model, write_spec
from suite.timing import Protocol


@register
class Branchy(FromScratch):
    """BranchyNet: early exits trained jointly, entropy thresholds chosen on validation."""

    kind: Literal["branchy"]
    times_itself: ClassVar[bool] = True

    def key(self, cfg) -> dict:
        return {**super().key(cfg), "tolerance": cfg.compare.branchy_tolerance}

    def run(self, job: MethodJob) -> dict:
        name, kwargs = self.architecture(job)
        weights = job.work / "model.pt"
        metrics = job.fit(weights, model=name, model_kwargs=kwargs, objective="branchy")
        metrics.update(choose_exits(job, name, kwargs, weights))
        write_spec(job.work, name, kwargs)
        return metrics


def choose_exits(job: MethodJob, name: str, kwargs: dict, weights) -> dict:
    """Pick the entropy thresholds on the validation images and store them in the weights."""
    cfg = job.ctx.cfg
    model = load_model(name, kwargs, weights)
    _, _, images, labels = job.split()
    model.return_all = True
    exits = batched(lambda x: model(x).transpose(0, 1), images)  # [n, exits, classes]
    model.return_all = False
    lat = cfg.evaluate.latency
    model = model.cpu()
    example = images[:1].float() / 255.0
    costs = {part: batch1_latency({part: module}, x, lat.threads, Protocol.of(lat))[part]["latency_p50_ms"]
             for part, (module, x) in component_inputs(model, example).items()}
    choice = choose_thresholds(list(exits.transpose(0, 1)), labels, costs, cfg.compare.branchy_tolerance)
    model.thresholds.copy_(torch.tensor(choice["thresholds"]))
    torch.save(model.state_dict(), weights)
    out = {"branchy_val_acc": choice["val_acc"], "branchy_final_exit_val_acc": choice["final_exit_val_acc"],
           "branchy_expected_latency_ms": choice["expected_latency_ms"]}
    out.update({f"branchy_threshold_{i}": t for i, t in enumerate(choice["thresholds"])})
    out.update({f"branchy_val_exit_share_{i}": s for i, s in enumerate(choice["exit_shares"])})
    return out

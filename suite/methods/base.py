"""The base class of every competitor method: what a ``compare.methods`` entry of a kind
holds, what the comparison stage needs to know of it, and its cache key."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict

from suite.config import CompareConfig, ExperimentConfig, MethodEntry, TrainConfig


class MethodParams(MethodEntry):
    """One competitor row of Table I / II (``caenet compare``).

    Each ``kind`` is a subclass in its own module of ``suite/methods/`` with the fields that
    kind takes, its checks and its ``run``; ``suite.experiment`` parses each entry as the
    subclass its ``kind`` names. The class variables tell the comparison stage what a kind needs.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    fresh: ClassVar[bool] = False  # trained from scratch on the data ('of' unused)
    trains: ClassVar[bool] = True  # runs a training (int8 does not: no train settings in its key)
    teacher: ClassVar[bool] = False  # reads the baseline's logits (the entropy stage) as soft targets
    times_itself: ClassVar[bool] = False  # times candidates to choose one: latency settings and budget are in its key
    uses_tune: ClassVar[bool] = False  # runs a Ray Tune search (a local Ray then starts with its dashboard)
    artifacts: ClassVar[tuple[str, ...]] = ()  # files of its stage folder logged to MLflow besides spec.json

    def train_config(self, compare: CompareConfig) -> TrainConfig:
        return self.train or (compare.train if self.fresh else compare.finetune)

    def budget(self, compare: CompareConfig) -> float | None:
        """The latency budget (ms, batch-1 p50 on this machine) for kinds that time themselves."""
        return getattr(self, "budget_ms", None) or compare.slo_ms

    def check(self, compare: CompareConfig) -> None:
        """Checks that need the rest of ``compare``; raise ValueError with a one-line message."""

    def key(self, cfg: ExperimentConfig) -> dict:
        """What the stage's cache key holds besides the data settings. Defaults are left out,
        so a new option (with its default) does not invalidate finished stages."""
        key: dict = {"method": self.model_dump(exclude={"name", "train", "seeds"}, exclude_defaults=True)}
        if self.trains:
            key["train"] = self.train_config(cfg.compare).model_dump()
        if self.times_itself:
            key["latency"] = cfg.evaluate.latency.model_dump()
            key["budget_ms"] = self.budget(cfg.compare)
        return key

"""Did a training learn? Judged from its epochs' numbers after its last epoch, so that no table
reports a win over a model that did not (issue 30):

- **near chance**: validation accuracy within a tenth of the way from chance (1 / classes) to 1;
- **still rising**: validation accuracy grew by more than a point over the last two epochs
  (more epochs would change the result);
- **diverged**: a training loss that is NaN or infinite, or ended above where it started.

Reconstruction trainings (no accuracy) are judged on their loss only.
"""

from __future__ import annotations

import math

RISING = 0.01  # validation accuracy points over the last two epochs that count as still rising


def near_chance(acc: float, num_classes: int) -> bool:
    """Within a tenth of the way from chance (1 / classes) to 1."""
    chance = 1.0 / max(num_classes, 1)
    return acc < chance + 0.1 * (1 - chance)


def verdict(metrics: dict) -> str | None:
    """Why the training behind a stage's final ``metrics`` did not converge (``problems``, as its
    last epoch recorded them), or None: it did, or the stage trained nothing."""
    return metrics.get("convergence", "") if metrics.get("converged") == 0 else None


def unconverged(stages: dict[str, dict]) -> dict[str, str]:
    """Stage name -> why, for the stages (name -> final metrics) whose training did not converge."""
    return {name: why for name, metrics in stages.items() if (why := verdict(metrics)) is not None}


def problems(history: list[dict], num_classes: int, epochs_key: str = "baseline.train.epochs",
             stopped_early: bool = False) -> list[str]:
    """Why the training of ``history`` (each epoch's train_loss / val_acc) did not converge;
    empty when it did. ``epochs_key``: the config key that lengthens it, named in the advice.
    ``stopped_early``: early stopping ended it at its best epoch (``history`` up to there),
    after ``patience`` epochs without a better one, so it is not still rising."""
    found = []
    longer = epochs_key
    if epochs_key.endswith(".epochs"):  # or a length in optimizer steps, which fits the data size
        longer = f"{epochs_key}, or {epochs_key[: -len('epochs')]}min_steps"
    losses = [h.get("train_loss") for h in history if h.get("train_loss") is not None]
    if any(not math.isfinite(v) for v in losses) or (len(losses) >= 2 and losses[-1] > losses[0]):
        found.append(f"the training loss diverged ({losses[0]:.4g} -> {losses[-1]:.4g}); lower the learning rate")
    accs = [h["val_acc"] for h in history if h.get("val_acc") is not None]
    if accs:
        if near_chance(accs[-1], num_classes):
            found.append(f"val acc {100 * accs[-1]:.1f}% is near chance ({100 / max(num_classes, 1):.0f}%); "
                         f"train longer ({longer})")
        elif not stopped_early and len(accs) >= 3 and accs[-1] - accs[-3] > RISING:
            found.append(f"val acc still rising ({100 * accs[-3]:.1f}% -> {100 * accs[-1]:.1f}% over the last 2 epochs); "
                         f"train longer ({longer})")
    return found

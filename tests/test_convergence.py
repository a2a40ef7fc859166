"""The convergence check (issue 30) on epoch histories whose verdict is known."""

import math

from suite.training.convergence import problems


def _h(*accs, losses=None):
    losses = losses or [1.0 / (i + 1) for i in range(len(accs))]
    return [{"train_loss": l, "val_acc": a} for l, a in zip(losses, accs)]


def test_a_learned_plateau_converged():
    assert problems(_h(0.5, 0.9, 0.95, 0.955, 0.956), 10) == []


def test_near_chance_is_flagged_with_the_key_to_set():
    found = problems(_h(0.11, 0.12, 0.125), 10, "baseline.train.epochs")
    assert len(found) == 1 and "near chance (10%)" in found[0] and "baseline.train.epochs" in found[0]
    assert problems(_h(0.54), 2) and not problems(_h(0.7), 2)  # two classes: chance is 50%


def test_still_rising_is_flagged():
    found = problems(_h(0.5, 0.7, 0.8, 0.9), 10)
    assert len(found) == 1 and "still rising" in found[0]


def test_a_diverged_loss_is_flagged():
    assert "diverged" in problems(_h(0.9, 0.9, 0.9, losses=[1.0, 0.5, math.nan]), 10)[0]
    assert "diverged" in problems(_h(0.9, 0.9, 0.9, losses=[1.0, 2.0, 3.0]), 10)[0]


def test_a_reconstruction_is_judged_on_its_loss_only():
    assert problems([{"train_loss": 0.2}, {"train_loss": 0.05}], 10) == []
    assert problems([{"train_loss": 0.2}, {"train_loss": 0.5}], 10)

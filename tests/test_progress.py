"""The driver's console view of running trainings: bars on a terminal, lines elsewhere."""

from __future__ import annotations

from suite.distributed import progress

P = {"epoch": 2, "epochs": 3, "step": 5, "steps": 10, "loss": 0.5, "images_per_second": 1000.0, "left_s": 4.0}


def test_lines_off_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress, "interactive", lambda: False)
    display = progress._Display()
    display.progress("[autoencoder]", P)
    display.epoch("[autoencoder]", 3, {"epoch": 2, "train_loss": 0.25, "val_loss": 0.3, "epoch_seconds": 1.5})
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "[autoencoder] epoch 2/3: 5/10 batches (50%), loss 0.5, 1000 img/s, ~4s left in the epoch",
        "[autoencoder] epoch 2/3  train_loss=0.25  val_loss=0.3  (1.5s)"]
    assert out.err == "" and not display.bars  # no bar drawn into a log
    assert progress.every_s(20.0) == 20.0


def test_one_bar_per_running_training_on_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress, "interactive", lambda: True)
    display = progress._Display()
    display.progress("[baseline]", P)
    display.progress("(k=2 / seed 0) [caenet]", {**P, "epoch": 1, "step": 3})
    bars = display.bars
    assert set(bars) == {"[baseline]", "(k=2 / seed 0) [caenet]"}
    assert len({abs(b.pos) for b in bars.values()}) == 2  # a line each
    assert bars["[baseline]"].n == 15 and bars["[baseline]"].total == 30  # epoch 2 of 3, batch 5 of 10
    display.epoch("[baseline]", 3, {"epoch": 2, "train_loss": 0.25, "epoch_seconds": 1.0})
    assert bars["[baseline]"].n == 20
    display.done("[baseline]")
    assert set(display.bars) == {"(k=2 / seed 0) [caenet]"}
    display.progress("[autoencoder]", P)  # a new training takes the free line
    assert abs(display.bars["[autoencoder]"].pos) != abs(display.bars["(k=2 / seed 0) [caenet]"].pos)
    display.done("[autoencoder]")
    display.done("(k=2 / seed 0) [caenet]")
    out = capsys.readouterr()
    assert "[baseline] epoch 2/3  train_loss=0.25" in out.out  # the epoch line above the bars
    assert "[baseline]" in out.err and "epoch 2/3, loss 0.5" in out.err  # the bar, with its numbers
    assert progress.every_s(20.0) == progress.TTY_EVERY_S  # workers send often enough to move a bar


def test_a_local_ray_starts_its_dashboard_only_for_what_needs_it():
    """Ray Tune and multi-worker Ray Train query the dashboard's State API; one-worker trainings
    (warm tasks) do not, and a run without them starts Ray without it."""
    from suite.config import RuntimeConfig
    from suite.distributed.ray_runtime import needs_dashboard
    from suite.experiment import load as load_config
    from tests.test_cli_e2e import REPO

    assert not needs_dashboard(RuntimeConfig(), tune=False)
    assert needs_dashboard(RuntimeConfig(), tune=True)
    assert needs_dashboard(RuntimeConfig(workers=2), tune=False)
    assert needs_dashboard(RuntimeConfig(trainer="ray-train"), tune=False)
    methods = load_config(REPO / "configs" / "mnist_lenet.yaml").compare.methods
    assert [m.name for m in methods if m.uses_tune] == ["AdaDeep"]  # `caenet compare` starts it for AdaDeep's search

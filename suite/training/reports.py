"""What a training reports besides its epoch metrics: the console's epoch line and progress
records inside an epoch (``ProgressLines``), keyed ``PROGRESS`` in the stream to the driver."""

from __future__ import annotations

PROGRESS = "_progress"  # a progress record inside an epoch, as a key of the stream's items


def epoch_line(label: str, epochs: int, metrics: dict) -> str:
    """``[name] epoch e/E  train_loss=...  val_acc=...  (Ns)``: one line per finished epoch
    (``label``: the training's ``TrainJob.label``, e.g. ``[caenet]``)."""
    shown = "  ".join(f"{k}={metrics[k]:.4g}" for k in ("train_loss", "images_per_second", "val_loss", "val_acc",
                                                        "weight_sparsity") if k in metrics)
    return f"{label} epoch {int(metrics.get('epoch', 0))}/{epochs}  {shown}  ({metrics.get('epoch_seconds', 0.0):.1f}s)"


def progress_line(label: str, p: dict) -> str:
    """A line inside an epoch: batches done, loss so far, images/s, time left in the epoch."""
    step, steps = p["step"], p["steps"]
    return (f"{label} epoch {p['epoch']}/{p['epochs']}: {step}/{steps} batches ({100 * step // steps}%), "
            f"loss {p['loss']:.4g}, {p['images_per_second']:.0f} img/s, ~{p['left_s']:.0f}s left in the epoch")

"""Pictures people would rather look at than read."""

from __future__ import annotations

import numpy as np
import torch


def _pyplot():
    # Deferred on purpose: pyplot takes ~0.5 s to import, and most commands draw nothing.
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (workers and CI have no display)
    import matplotlib.pyplot as plt  # deferred, as above

    return plt


def subplots(*args, **kwargs):
    """``plt.subplots`` on the file-only backend; every picture of the suite starts here."""
    return _pyplot().subplots(*args, **kwargs)


def save(fig, path, dpi: int = 110) -> None:
    """Write ``fig`` and free it (pyplot keeps every open figure otherwise)."""
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)


def conversion_grid(images: torch.Tensor, labels: np.ndarray, entropy: np.ndarray, targets: np.ndarray,
                    reconstruct, class_names, max_classes: int = 10):
    """Per class: the easiest image, the hardest one, the hardest one's target and the CAE's output for it."""
    classes = np.unique(labels)[:max_classes]
    fig, axes = subplots(len(classes), 4, figsize=(4 * 1.6, len(classes) * 1.6), squeeze=False)
    titles = ("easiest", "hardest", "its target", "CAE output")
    for row, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        easy, hard = idx[np.argmin(entropy[idx])], idx[np.argmax(entropy[idx])]
        with torch.no_grad():
            out = reconstruct(images[hard : hard + 1].float() / 255.0)[0].cpu()
        pics = [images[easy].float() / 255.0, images[hard].float() / 255.0, images[targets[hard]].float() / 255.0, out]
        for col, pic in enumerate(pics):
            ax = axes[row][col]
            arr = pic.permute(1, 2, 0).numpy().clip(0, 1)
            ax.imshow(arr[..., 0] if arr.shape[-1] == 1 else arr, cmap="gray" if arr.shape[-1] == 1 else None)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=8)
            if col == 0:
                ax.set_ylabel(str(class_names[int(c)])[:10], fontsize=8)
    fig.tight_layout()
    return fig

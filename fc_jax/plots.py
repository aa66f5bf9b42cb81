"""Training curves as the course draws them: loss per iteration, train/val accuracy per epoch.

Contract: `plot_history(history, path)` writes one PNG with two panels from a `fc_jax.fit.Run`
history dict (`loss` per iteration, `train_acc` and `val_acc` per epoch). matplotlib is imported
only when a plot is made, and through `matplotlib.figure.Figure` with the Agg canvas, so no global
backend is switched and no window opens.
"""

import os
from pathlib import Path

__all__ = ["plot_history"]


def plot_history(history: dict, path: os.PathLike | str, title: str | None = None) -> Path:
    """Save the course's two plots (training loss; train and validation accuracy) to `path`.

    Args:
      history: dict with "loss" (per-iteration losses), "train_acc" and "val_acc" (per epoch).
      path: the PNG to write (its folder must exist).
      title: optional figure title.

    Returns:
      The path written.
    """
    for k in ("loss", "train_acc", "val_acc"):
        if k not in history:
            raise ValueError(f"history must contain {k!r}; got keys {sorted(history)}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 8))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1)
    ax1.plot(history["loss"], "o", markersize=2)
    ax1.set_title("Training loss")
    ax1.set_xlabel("Iteration")
    ax2.plot(range(1, len(history["train_acc"]) + 1), history["train_acc"], "-o", label="train")
    ax2.plot(range(1, len(history["val_acc"]) + 1), history["val_acc"], "-o", label="val")
    ax2.set_title("Accuracy")
    ax2.set_xlabel("Epoch")
    ax2.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    return path

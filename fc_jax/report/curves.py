"""Training curves as the course draws them: loss per iteration, train/val accuracy per epoch.

Contract: `plot_history(history, path, title, settings)` writes one PNG with two labelled panels
from a `fc_jax.runs.fit.Run` history dict (`loss` per iteration, `train_acc` and `val_acc` per epoch),
the run's settings in the title and the best validation epoch marked (a dashed vertical line and a
star with its value). Missing values (None or NaN, e.g. after divergence) leave gaps. The PNG is
written atomically (`fc_jax.storage.files.atomic_open`): a failed write leaves the previous file intact.
matplotlib is imported only when a plot is made, through `matplotlib.figure.Figure` with the Agg
canvas, so no global backend is switched and no window opens.
"""

import os
import textwrap
from pathlib import Path

import numpy as np

from fc_jax.storage.files import atomic_open

__all__ = ["plot_history", "format_settings"]


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def format_settings(settings: dict | None, width: int = 100) -> str:
    """`k=v, k=v, ...` (floats to 4 significant digits), wrapped to lines of at most `width`."""
    parts = [
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (settings or {}).items()
    ]
    return "\n".join(textwrap.wrap(", ".join(parts), width))


def _history_figure(history: dict, title: str | None, settings: dict | None):
    for k in ("loss", "train_acc", "val_acc"):
        if k not in history:
            raise ValueError(f"history must contain {k!r}; got keys {sorted(history)}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    loss, train, val = (_floats(history[k]) for k in ("loss", "train_acc", "val_acc"))
    fig = Figure(figsize=(8, 8))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1)
    ax1.plot(np.arange(1, len(loss) + 1), loss, "o", markersize=2)
    ax1.set_title("Training loss")
    ax1.set_xlabel("Iteration")
    ax1.set_ylabel("Loss")
    ax2.plot(np.arange(1, len(train) + 1), train, "-o", label="train")
    ax2.plot(np.arange(1, len(val) + 1), val, "-o", label="val")
    if np.isfinite(val).any():
        best = int(np.nanargmax(val))  # the first best epoch, as fit keeps it
        epoch, acc = best + 1, val[best]
        ax2.axvline(epoch, color="gray", linestyle="--", linewidth=1)
        ax2.plot(
            [epoch],
            [acc],
            "*",
            color="red",
            markersize=14,
            label=f"best val {acc:.4f} (epoch {epoch})",
        )
        ax2.annotate(f"{acc:.4f}", (epoch, acc), textcoords="offset points", xytext=(6, -14))
    ax2.set_title("Accuracy")
    ax2.set_xlabel("Epoch")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_ylabel("Accuracy")
    ax2.legend(loc="lower right")
    heading = "\n".join(t for t in (title, format_settings(settings)) if t)
    if heading:
        fig.suptitle(heading, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.025 * (heading.count("\n") + 1) if heading else 1))
    return fig


def plot_history(
    history: dict, path: os.PathLike | str, title: str | None = None, settings: dict | None = None
) -> Path:
    """Save the course's two plots (training loss; train and validation accuracy) to `path`.

    Args:
      history: dict with "loss" (per-iteration losses), "train_acc" and "val_acc" (per epoch);
        None or NaN entries are drawn as gaps.
      path: the PNG to write (atomically; its folder is created if missing).
      title: optional first line of the figure title.
      settings: optional run settings (e.g. learning rate, reg, batch size) for the title.

    Returns:
      The path written.

    Raises:
      ValueError: a history entry is missing.
      fc_jax.storage.files.WriteError: the PNG could not be written; a previous one is untouched.
    """
    fig = _history_figure(history, title, settings)
    with atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=80)
    return Path(path)

"""Training curves as the course draws them: loss per iteration, train/val accuracy per epoch.

Contract: `plot_history(history, path, title, settings)` writes one PNG with two labelled panels
from a `fc_jax.runs.fit.Run` history dict (`loss` per iteration, `train_acc` and `val_acc` per epoch),
a short title (`run_title`: the net, how it was trained, the test accuracy) and the best
validation epoch marked (a dashed vertical line and a star with its value). `write_history_csv`
writes the per-epoch table (`history.csv`: epoch, mean loss, accuracies, learning rate, seconds). Missing values (None or NaN, e.g. after divergence) leave gaps. The PNG is
written atomically (`fc_jax.storage.files.atomic_open`): a failed write leaves the previous file intact.
matplotlib is imported only when a plot is made, through `matplotlib.figure.Figure` with the Agg
canvas, so no global backend is switched and no window opens.
"""

import csv
import io
import os
from pathlib import Path

import numpy as np

from fc_jax.storage.files import atomic_open, atomic_write_text

__all__ = ["history_figure", "plot_history", "run_title", "write_history_csv"]


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _num(v) -> str:
    return f"{float(v):.3g}"


def run_title(settings: dict | None, test_acc: float | None = None) -> str:
    """A short human title of a run: the net on one line, how it was trained (and its test
    accuracy, when known) on the next, e.g.

      cifar10: hidden [512, 256], batchnorm, dropout (keep 0.75)
      adam, learning rate 0.002 (x0.9 per epoch), batch 200, 12 epochs: test acc 0.578

    Settings that are missing are left out; no file system paths appear.
    """
    s = settings or {}
    net = []
    if s.get("hidden_dims") is not None:
        net.append(f"hidden {list(s['hidden_dims'])}")
    if s.get("normalization") not in (None, "none"):
        net.append(str(s["normalization"]))
    if s.get("keep_prob") is not None:
        keep = float(s["keep_prob"])
        net.append("no dropout" if keep >= 1 else f"dropout (keep {_num(keep)})")
    first = ", ".join(net)
    if s.get("dataset"):
        first = f"{s['dataset']}: {first}" if first else str(s["dataset"])
    rule = [str(s["update_rule"])] if s.get("update_rule") else []
    if s.get("learning_rate") is not None:
        decay = s.get("lr_decay")
        per_epoch = f" (x{_num(decay)} per epoch)" if decay is not None and decay != 1 else ""
        rule.append(f"learning rate {_num(s['learning_rate'])}{per_epoch}")
    if s.get("reg"):
        rule.append(f"L2 {_num(s['reg'])}")
    if s.get("batch_size") is not None:
        rule.append(f"batch {s['batch_size']}")
    if s.get("epochs") is not None:
        rule.append(f"{s['epochs']} epochs")
    second = ", ".join(rule)
    if test_acc is not None and np.isfinite(test_acc):
        second += f": test acc {float(test_acc):.3f}"
    return "\n".join(line for line in (first, second) if line)


def history_figure(history: dict, title: str | None, settings: dict | None, test_acc=None):
    """The matplotlib `Figure` `plot_history` saves (for a notebook to show or restyle)."""
    for k in ("loss", "train_acc", "val_acc"):
        if k not in history:
            raise ValueError(f"history must contain {k!r}; got keys {sorted(history)}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    loss, train, val = (_floats(history[k]) for k in ("loss", "train_acc", "val_acc"))
    fig = Figure(figsize=(8, 8), layout="constrained")
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
        last = epoch == len(val) and len(val) > 1  # at the right edge: write it to the left
        ax2.annotate(
            f"{acc:.4f}",
            (epoch, acc),
            textcoords="offset points",
            xytext=(-6 if last else 6, -14),
            ha="right" if last else "left",
        )
    ax2.set_title("Accuracy")
    ax2.set_xlabel("Epoch")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_ylabel("Accuracy")
    ax2.legend(loc="lower right")
    heading = "\n".join(t for t in (title, run_title(settings, test_acc) if settings else "") if t)
    if heading:
        fig.suptitle(heading, fontsize=11)
    return fig


def plot_history(
    history: dict,
    path: os.PathLike | str,
    title: str | None = None,
    settings: dict | None = None,
    test_acc: float | None = None,
) -> Path:
    """Save the course's two plots (training loss; train and validation accuracy) to `path`.

    Args:
      history: dict with "loss" (per-iteration losses), "train_acc" and "val_acc" (per epoch);
        None or NaN entries are drawn as gaps.
      path: the PNG to write (atomically; its folder is created if missing).
      title: optional first line of the figure title.
      settings: optional run settings (net, update rule, learning rate, ...): the title's
        `run_title` lines.
      test_acc: the run's test accuracy, shown in the title when given.

    Returns:
      The path written.

    Raises:
      ValueError: a history entry is missing.
      fc_jax.storage.files.WriteError: the PNG could not be written; a previous one is untouched.
    """
    fig = history_figure(history, title, settings, test_acc)
    with atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=80)
    return Path(path)


def write_history_csv(history: dict, path: os.PathLike | str) -> Path:
    """Write one row per epoch to `path` (atomically): epoch, loss (the mean of the epoch's steps),
    train_acc, val_acc, lr, seconds; a value the history lacks is an empty cell."""
    epochs = len(history.get("val_acc", []))
    loss = _floats(history.get("loss", []))
    steps = len(loss) // epochs if epochs else 0
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["epoch", "loss", "train_acc", "val_acc", "lr", "seconds"])

    def cell(name: str, e: int):
        values = history.get(name) or []
        v = values[e] if e < len(values) else None
        return "" if v is None else f"{float(v):.7g}"  # float32 values: 7 digits

    for e in range(epochs):
        chunk = loss[e * steps : (e + 1) * steps]
        mean = f"{float(np.nanmean(chunk)):.7g}" if np.isfinite(chunk).any() else ""
        w.writerow(
            [
                e + 1,
                mean,
                cell("train_acc", e),
                cell("val_acc", e),
                cell("lr", e),
                cell("epoch_seconds", e),
            ]
        )
    return atomic_write_text(path, text.getvalue())

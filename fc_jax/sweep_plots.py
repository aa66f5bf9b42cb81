"""Reporting a sweep: records, a ranked table, CSV/JSON files and `sweep.png`.

Contract: every function reads a `fc_jax.sweep.SweepResult` and touches neither jax nor the result.
`result_records` gives one JSON-ready dict per trial (every hyperparameter, seed, best validation
accuracy and epoch, divergence, full history; NaN becomes None); `format_table` ranks the trials by
best validation accuracy; `write_results(result, out_dir)` writes `results.csv` and `results.json`;
`plot_sweep(result, path)` draws validation accuracy over the two main swept hyperparameters: a
heatmap when their values form a grid, a scatter otherwise (random search). matplotlib is imported
only when a plot is made, through `Figure` and the Agg canvas (no global backend switch).
"""

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

__all__ = ["swept_names", "result_records", "format_table", "write_results", "plot_sweep"]

_FIELDS = ("learning_rate", "lr_decay", "reg", "weight_scale", "keep_prob", "momentum")
_FIELDS += ("decay_rate", "beta1", "beta2", "epsilon")


def _value(result, name: str, k: int):
    """Trial k's `name`: the seed, else the shortest decimal of the stored (float32/64) value."""
    if name == "seed":
        return int(result.trials[k]["seed"])
    return float(str(getattr(result.hparams, name)[k]))


def swept_names(result) -> list[str]:
    """The hyperparameters (and `seed`) that take more than one value, in the trials' key order."""
    names = list(dict.fromkeys(k for t in result.trials for k in t))
    return [n for n in names if len({_value(result, n, k) for k in range(len(result.trials))}) > 1]


def _order(result) -> np.ndarray:
    """Trial indices, best validation accuracy first (stable for ties)."""
    return np.argsort(-np.asarray(result.best_val_acc), kind="stable")


def result_records(result) -> list[dict]:
    """One dict per trial: `HParams` fields, seed, best val acc and epoch, divergence, history."""
    clean = lambda a: [float(v) if np.isfinite(v) else None for v in a]
    return [
        {
            "trial": k,
            **{f: _value(result, f, k) for f in (*_FIELDS, "seed")},
            "best_val_acc": float(result.best_val_acc[k]),
            "best_epoch": int(result.best_epoch[k]),
            "diverged": bool(result.diverged[k]),
            "diverged_iteration": int(result.diverged_iteration[k]),
            "history": {name: clean(v[k]) for name, v in result.history.items()},
        }
        for k in range(len(result.trials))
    ]


def format_table(result, top: int | None = None) -> str:
    """The trials ranked by best validation accuracy, one line each (the swept values shown)."""
    names = swept_names(result) or ["learning_rate"]
    head = ["rank", "trial", *names, "best_val_acc", "epoch", "diverged"]
    rows = []
    for rank, k in enumerate(_order(result)[:top], start=1):
        vals = [f"{_value(result, n, k):.4g}" for n in names]
        acc = f"{result.best_val_acc[k]:.4f}" if result.best_epoch[k] else "-"
        div = f"at it {result.diverged_iteration[k]}" if result.diverged[k] else "no"
        rows.append([str(rank), str(k), *vals, acc, str(result.best_epoch[k]), div])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
    return "\n".join([fmt(head), *map(fmt, rows)])


def write_results(result, out_dir: os.PathLike | str, extra: dict | None = None) -> dict:
    """Write `results.csv` (one row per trial, ranked) and `results.json` (records + settings).

    Args:
      result: a `SweepResult`.
      out_dir: folder (created if missing).
      extra: more JSON-ready entries for results.json (e.g. the command-line settings).

    Returns:
      {"csv": path, "json": path}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = result_records(result)
    cols = ["rank", *(c for c in records[0] if c != "history"), "final_val_acc"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for rank, k in enumerate(_order(result), start=1):
            r = {c: v for c, v in records[k].items() if c != "history"}
            w.writerow({"rank": rank, **r, "final_val_acc": records[k]["history"]["val_acc"][-1]})
    cfg = result.config
    summary = {
        **(extra or {}),
        "config": {f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
        "update_rule": result.update_rule,
        "swept": swept_names(result),
        "best_trial": int(_order(result)[0]),
        "compile_seconds": result.compile_seconds,
        "run_seconds": result.run_seconds,
        "devices": result.devices,
        "trials": records,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    return {"csv": out / "results.csv", "json": out / "results.json"}


def _axis(ax, which: str, values) -> None:
    v = np.asarray(values, float)
    if np.all(v > 0) and v.max() / v.min() >= 10:
        getattr(ax, f"set_{which}scale")("log")


def plot_sweep(result, path: os.PathLike | str, names: list[str] | None = None) -> Path:
    """Validation accuracy over the two main swept hyperparameters (`names`, default the first two
    of `swept_names`): a heatmap (best over any other swept values) when every pair of their values
    was tried, else a scatter coloured by accuracy (diverged trials as black crosses)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(names or swept_names(result) or ["learning_rate"])[:2]
    K = len(result.trials)
    acc = np.where(result.best_epoch > 0, result.best_val_acc, np.nan)
    cols = [[_value(result, n, k) for k in range(K)] for n in names]
    fig = Figure(figsize=(6.5, 5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    levels = [sorted(set(c)) for c in cols]
    pairs = {tuple(c[k] for c in cols) for k in range(K)}
    if len(names) == 2 and len(pairs) == math.prod(map(len, levels)) and len(pairs) > 1:
        grid = np.full([len(levels[1]), len(levels[0])], np.nan)
        for k in range(K):
            i, j = levels[1].index(cols[1][k]), levels[0].index(cols[0][k])
            if not np.isnan(acc[k]):
                grid[i, j] = np.fmax(grid[i, j], acc[k])
        im = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
        mid = np.nanmean([np.nanmin(grid), np.nanmax(grid)]) if np.isfinite(grid).any() else 0
        for (i, j), v in np.ndenumerate(grid):
            text, color = ("diverged", "k") if np.isnan(v) else (f"{v:.3f}", "wk"[int(v > mid)])
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
        ax.set_xticks(range(len(levels[0])), [f"{v:.3g}" for v in levels[0]])
        ax.set_yticks(range(len(levels[1])), [f"{v:.3g}" for v in levels[1]])
    else:
        x = cols[0]
        y = cols[1] if len(names) == 2 else acc
        ok = ~np.isnan(acc)
        im = ax.scatter(np.asarray(x)[ok], np.asarray(y)[ok], c=acc[ok], cmap="viridis", s=40)
        if (~ok).any():
            ax.scatter(np.asarray(x)[~ok], np.asarray(y)[~ok], c="k", marker="x", label="diverged")
            ax.legend(loc="best")
        _axis(ax, "x", x)
        if len(names) == 2:
            _axis(ax, "y", y)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1] if len(names) == 2 else "best val acc")
    fig.colorbar(im, ax=ax, label="best val acc")
    ax.set_title(f"{K} trials, {result.update_rule}, hidden {list(result.config.hidden_dims)}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    return path

"""Reporting a sweep: records, a ranked table, CSV/JSON files and `sweep.png`.

Contract: every function reads a `fc_jax.runs.sweep.SweepResult` and touches neither jax nor the result.
`result_records` gives one JSON-ready dict per trial (every hyperparameter, seed, best validation
accuracy and epoch, divergence, full history; NaN becomes None); `format_table` ranks the trials by
best validation accuracy; `write_results(result, out_dir)` writes `results.csv` and `results.json`.
With several seeds per configuration (`result.seeds` > 1), `config_records` gives one dict per
configuration (its values, seeds, mean and sample standard deviation of the best validation
accuracy) and the table, `results.csv` and the plot show configurations ranked by the mean, with
the per-lane records kept in `results.json`. A PBT sweep's `results.json` holds its lineage (who
copied whom, at which epoch, with which values) and each lane's initial values, and `sweep.png`
draws the copies under the panels;
`plot_sweep(result, path)` draws validation accuracy over every swept hyperparameter (one panel
per pair when three or more were swept: a heatmap when their values form a grid, a scatter
otherwise), written atomically. matplotlib is imported only when a plot is made, through `Figure`
and the Agg canvas (no global backend switch).
"""

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from fc_jax.hparams import HParams
from fc_jax.storage.files import atomic_open, atomic_write_text

__all__ = [
    "trial_id",
    "swept_names",
    "result_records",
    "config_records",
    "format_table",
    "write_results",
    "plot_sweep",
]

_FIELDS = HParams._fields  # the hyperparameter vocabulary, defined once in fc_jax.hparams


def _value(result, name: str, k: int):
    """Trial k's `name`: the seed, else the shortest decimal of the stored (float32/64) value."""
    if name == "seed":
        return int(result.trials[k]["seed"])
    return float(str(getattr(result.hparams, name)[k]))


def _seeds(result) -> int:
    return int(getattr(result, "seeds", 1))


def trial_id(result, k: int) -> int:
    """Row k's name: `result.trial_ids[k]` (e.g. an Optuna trial number), else k."""
    ids = getattr(result, "trial_ids", ())
    return int(ids[k]) if len(ids) else k


def swept_names(result) -> list[str]:
    """The hyperparameters (and `seed`) that take more than one value, in the trials' key order;
    with several seeds per configuration, `seed` is not one of them (it varies within one)."""
    names = list(dict.fromkeys(k for t in result.trials for k in t))
    if _seeds(result) > 1:
        names.remove("seed")
    return [n for n in names if len({_value(result, n, k) for k in range(len(result.trials))}) > 1]


def _order(result) -> np.ndarray:
    """Trial indices, best validation accuracy first (stable for ties)."""
    return np.argsort(-np.asarray(result.best_val_acc), kind="stable")


def _config_order(result) -> np.ndarray:
    """Configuration indices, highest mean first (stable for ties)."""
    return np.argsort(-np.asarray(result.config_mean), kind="stable")


def config_records(result) -> list[dict]:
    """One dict per configuration: its values (of its first lane), its lanes and their seeds, the
    mean and sample standard deviation over its seeds of the best validation accuracy (as
    `SweepResult.config_mean` / `config_std`), lanes diverged and epochs trained."""
    n, mean, std = _seeds(result), result.config_mean, result.config_std
    out = []
    for c in range(len(result.trials) // n):
        lanes = list(range(c * n, c * n + n))
        out.append(
            {
                "configuration": c,
                **{f: _value(result, f, lanes[0]) for f in _FIELDS},
                "seeds": [int(result.trials[k]["seed"]) for k in lanes],
                "lanes": lanes,
                "mean_best_val_acc": float(mean[c]),
                "std_best_val_acc": float(std[c]),
                "best_val_accs": [float(result.best_val_acc[k]) for k in lanes],
                "diverged": int(np.sum(result.diverged[lanes])),
                "epochs": int(result.epochs[lanes[0]]),
                "stopped": bool(result.stopped[lanes[0]]),
            }
        )
    return out


def result_records(result) -> list[dict]:
    """One dict per trial: `HParams` fields, seed, best val acc and epoch, divergence, history."""
    clean = lambda a: [float(v) if np.isfinite(v) else None for v in a]
    return [
        {
            "trial": trial_id(result, k),
            **{f: _value(result, f, k) for f in (*_FIELDS, "seed")},
            "best_val_acc": float(result.best_val_acc[k]),
            "best_epoch": int(result.best_epoch[k]),
            "diverged": bool(result.diverged[k]),
            "diverged_iteration": int(result.diverged_iteration[k]),
            "epochs": int(result.epochs[k]),
            "stopped": bool(result.stopped[k]),
            "history": {name: clean(v) for name, v in result.histories[k].items()},
        }
        for k in range(len(result.trials))
    ]


def _format_configs(result, top: int | None) -> str:
    names = swept_names(result) or ["learning_rate"]
    n = _seeds(result)
    head = [
        "rank",
        "config",
        *names,
        f"mean_val_acc ({n} seeds)",
        "std",
        "min",
        "max",
        "trained",
        "diverged",
    ]
    records = config_records(result)
    rows = []
    for rank, c in enumerate(_config_order(result)[:top], start=1):
        r = records[c]
        accs = [
            a for a, k in zip(r["best_val_accs"], r["lanes"], strict=True) if result.best_epoch[k]
        ]
        lo, hi = (f"{min(accs):.4f}", f"{max(accs):.4f}") if accs else ("-", "-")
        trained = f"{r['epochs']}" + (" (stopped)" if r["stopped"] else "")
        vals = [f"{r[x]:.4g}" for x in names]
        rows.append(
            [
                str(rank),
                str(c),
                *vals,
                f"{r['mean_best_val_acc']:.4f}",
                f"{r['std_best_val_acc']:.4f}",
                lo,
                hi,
                trained,
                f"{r['diverged']}/{n}",
            ]
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
    return "\n".join([fmt(head), *map(fmt, rows)])


def format_table(result, top: int | None = None) -> str:
    """The trials ranked by best validation accuracy, one line each (the swept values shown); with
    several seeds per configuration, the configurations ranked by their mean over the seeds, with
    the standard deviation, lowest and highest."""
    if _seeds(result) > 1:
        return _format_configs(result, top)
    names = swept_names(result) or ["learning_rate"]
    head = ["rank", "trial", *names, "best_val_acc", "epoch", "trained", "diverged"]
    rows = []
    for rank, k in enumerate(_order(result)[:top], start=1):
        vals = [f"{_value(result, n, k):.4g}" for n in names]
        acc = f"{result.best_val_acc[k]:.4f}" if result.best_epoch[k] else "-"
        div = f"at it {result.diverged_iteration[k]}" if result.diverged[k] else "no"
        trained = f"{result.epochs[k]}" + (" (stopped)" if result.stopped[k] else "")
        rows.append(
            [
                str(rank),
                str(trial_id(result, k)),
                *vals,
                acc,
                str(result.best_epoch[k]),
                trained,
                div,
            ]
        )
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
    records = result_records(result)
    text = io.StringIO(newline="")
    if _seeds(result) > 1:  # one row per configuration, ranked by the mean over its seeds
        configs = config_records(result)
        cols = ["rank", *configs[0]]
        w = csv.DictWriter(text, fieldnames=cols)
        w.writeheader()
        for rank, c in enumerate(_config_order(result), start=1):
            row = {
                k: " ".join(map(str, v)) if isinstance(v, list) else v
                for k, v in configs[c].items()
            }
            w.writerow({"rank": rank, **row})
    else:
        cols = ["rank", *(c for c in records[0] if c != "history"), "final_val_acc"]
        w = csv.DictWriter(text, fieldnames=cols)
        w.writeheader()
        for rank, k in enumerate(_order(result), start=1):
            r = {c: v for c, v in records[k].items() if c != "history"}
            last = (records[k]["history"]["val_acc"] or [None])[-1]
            w.writerow({"rank": rank, **r, "final_val_acc": last})
    atomic_write_text(out / "results.csv", text.getvalue())
    cfg = result.config
    summary = {
        **(extra or {}),
        "config": {f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
        "update_rule": result.update_rule,
        "swept": swept_names(result),
        "best_trial": trial_id(result, int(result.best)),
        "seeds": _seeds(result),
        "compile_seconds": result.compile_seconds,
        "run_seconds": result.run_seconds,
        "devices": result.devices,
        "schedule": getattr(result, "schedule", "full"),
        "rungs": list(getattr(result, "rungs", ())),
        "lineage": list(getattr(result, "lineage", ())),
        "lane_epochs": int(np.sum(result.epochs)),
        "trials": records,
    }
    if getattr(result, "pbt", None) is not None:  # the values each lane started from
        summary["pbt"] = result.pbt._asdict()
        for r, t in zip(records, result.trials, strict=True):
            r["initial"] = {k: v for k, v in t.items() if k != "seed"}
    if _seeds(result) > 1:
        summary["best_configuration"] = int(result.best_configuration)
        summary["configurations"] = [config_records(result)[c] for c in _config_order(result)]
    atomic_write_text(out / "results.json", json.dumps(summary, indent=1))
    return {"csv": out / "results.csv", "json": out / "results.json"}


def _axis(ax, which: str, values) -> None:
    """A log axis when every value is positive and they span a decade; linear otherwise."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size and np.all(v > 0) and v.max() / v.min() >= 10:
        getattr(ax, f"set_{which}scale")("log")


def _panel(
    ax, cols: dict, acc: np.ndarray, xname: str, yname: str | None, norm, labels: bool, std=None
):
    """Best val acc over (xname, yname): a heatmap (best over the other swept values) when every
    pair of their values was tried, else a scatter; diverged trials as 'diverged' / black crosses.
    With yname None: accuracy against xname. `std` (per point, several seeds): error bars, and
    '± std' in a heatmap's labels. Returns the mappable for the colorbar."""
    x = np.asarray(cols[xname], float)
    y = np.asarray(cols[yname], float) if yname else acc
    ok = ~np.isnan(acc)
    levels = [sorted(set(x.tolist())), sorted(set(y.tolist()))] if yname else None
    if yname and len(levels[0]) * len(levels[1]) == len(set(zip(x, y, strict=True))) > 1:
        grid = np.full((len(levels[1]), len(levels[0])), np.nan)
        spread = np.full_like(grid, np.nan)
        for k in np.flatnonzero(ok):
            i, j = levels[1].index(y[k]), levels[0].index(x[k])
            if not acc[k] <= grid[i, j]:
                grid[i, j] = acc[k]
                spread[i, j] = np.nan if std is None else std[k]
        im = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto", norm=norm)
        if labels and grid.size <= 64:
            mid = (norm.vmin + norm.vmax) / 2
            for (i, j), v in np.ndenumerate(grid):
                text, color = ("diverged", "k") if np.isnan(v) else (f"{v:.3f}", "wk"[int(v > mid)])
                if np.isfinite(spread[i, j]):
                    text += f"\n±{spread[i, j]:.3f}"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=7)
        ax.set_xticks(range(len(levels[0])), [f"{v:.3g}" for v in levels[0]], fontsize=7)
        ax.set_yticks(range(len(levels[1])), [f"{v:.3g}" for v in levels[1]], fontsize=7)
    else:
        im = ax.scatter(x[ok], y[ok], c=acc[ok], cmap="viridis", norm=norm, s=30, zorder=2)
        if std is not None and not yname:
            ax.errorbar(x[ok], y[ok], yerr=np.asarray(std)[ok], fmt="none", ecolor="0.5", lw=1)
        if (~ok).any():
            y_bad = y[~ok] if yname else np.full((~ok).sum(), norm.vmin)
            ax.scatter(x[~ok], y_bad, c="k", marker="x", label="diverged")
            ax.legend(loc="best", fontsize=7)
        _axis(ax, "x", x)
        if yname:
            _axis(ax, "y", y)
    ax.set_xlabel(xname)
    ax.set_ylabel(yname or "best val acc")
    return im


def _plot_rungs(ax, result, rungs) -> None:
    """Validation accuracy per epoch of every trial; the halving rungs as vertical lines, each
    labelled on a top axis with how many trials went on. The y-range fits the trials that went
    past the first rung (the ones halving is about); the others are counted when below it."""
    curves = [np.asarray(h["val_acc"], float) for h in result.histories]
    for v in curves:
        if v.size:
            style = dict(lw=1.8, alpha=0.9) if len(v) == max(rungs) else dict(lw=0.8, alpha=0.5)
            ax.plot(np.arange(1, len(v) + 1), v, marker="o", markersize=2, **style)
    epochs = np.asarray(result.epochs)
    labels = []
    for r in rungs[:-1]:
        ax.axvline(r, color="k", ls="--", lw=0.8)
        labels.append(f"{int(np.sum(epochs > r))} of {int(np.sum(epochs >= r))} go on")
    top = ax.secondary_xaxis("top")
    top.set_xticks(list(rungs[:-1]), labels, fontsize=7, rotation=90)
    top.tick_params(length=0)
    on = [v[np.isfinite(v)] for v, e in zip(curves, epochs, strict=True) if e > rungs[0]]
    on = np.concatenate(on) if on else np.zeros(0)
    if on.size:
        lo, hi = float(on.min()), float(on.max())
        pad = max(0.01, 0.08 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)
        hidden = sum(1 for v in curves if np.isfinite(v).any() and np.nanmax(v) < lo - pad)
        if hidden:
            ax.text(
                0.99,
                0.02,
                f"{hidden} stopped trial(s) below {lo - pad:.2f} not shown",
                ha="right",
                va="bottom",
                fontsize=7,
                transform=ax.transAxes,
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("val acc")
    ax.set_title(
        f"successive halving: {len(result.trials)} trials, rungs at {list(rungs)} epochs "
        f"({int(np.sum(result.epochs))} lane-epochs)",
        fontsize=9,
    )


def _plot_lineage(ax, result) -> None:
    """PBT: validation accuracy per epoch of every lane, each copy drawn as a dotted line from
    the source's point at the exploit epoch to the copying lane's next point (a cross marks the
    state it dropped)."""
    curves = [np.asarray(h["val_acc"], float) for h in result.histories]
    cuts = {
        k: sorted(ev["epoch"] for ev in result.lineage if ev["lane"] == k)
        for k in range(len(curves))
    }
    colors = {}
    for k, v in enumerate(curves):  # a lane's line breaks where it copied another lane
        bounds = [0, *cuts[k], len(v)]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            (line,) = ax.plot(
                np.arange(a + 1, b + 1),
                v[a:b],
                lw=1,
                alpha=0.8,
                color=colors.get(k),
                marker="o",
                ms=2,
            )
            colors[k] = line.get_color()
    for ev in result.lineage:
        e, k, src = ev["epoch"], ev["lane"], ev["source"]
        if e < len(curves[k]) and e <= len(curves[src]):
            ax.plot([e, e + 1], [curves[src][e - 1], curves[k][e]], ls=":", color=colors[k], lw=1)
            if np.isfinite(curves[k][e - 1]):
                ax.plot([e], [curves[k][e - 1]], marker="x", color=colors[k], ms=5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val acc")
    p = result.pbt
    ax.set_title(
        f"population-based training: {len(result.trials)} lanes; every {p.ready} epoch(s) the "
        f"worst {p.quantile:g} copy one of the best {p.quantile:g}\nand perturb "
        f"{', '.join(p.names)} x0.8 or x1.2 ({len(result.lineage)} copies, dotted; x: the "
        "state a lane dropped)",
        fontsize=8,
    )


def plot_sweep(result, path: os.PathLike | str, names: list[str] | None = None) -> Path:
    """Validation accuracy over every swept hyperparameter (`names`, default `swept_names`).

    One name: accuracy against it. Two: one panel, a heatmap (best over any other swept values)
    when every pair of their values was tried, else a scatter coloured by accuracy. Three or more:
    a corner grid with one such panel per pair of names, each the best over the others, so no axis
    is dropped. Diverged trials are marked, log axes are used only for positive values spanning a
    decade, and a sweep where every trial diverged still draws. Written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    names = list(names or swept_names(result) or ["learning_rate"])
    K, seeds = len(result.trials), _seeds(result)
    acc = np.where(
        np.asarray(result.best_epoch) > 0, np.asarray(result.best_val_acc, float), np.nan
    )
    std = None
    if seeds > 1:  # one point per configuration: the mean over its seeds, the spread as bars
        some = (np.asarray(result.best_epoch) > 0).reshape(-1, seeds).any(axis=1)
        acc, std = np.where(some, result.config_mean, np.nan), result.config_std
    first = range(0, K, seeds)  # each configuration's first lane holds its values
    cols = {n: [_value(result, n, k) for k in first] for n in names}
    finite = acc[np.isfinite(acc)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    norm = Normalize(lo - 0.005 if lo == hi else lo, hi + 0.005 if lo == hi else hi)
    n = len(names)
    side = 1 if n <= 2 else n - 1
    size = (6.5, 5) if side == 1 else (3.2 * side + 1.2, 3 * side + 0.6)
    rungs = tuple(getattr(result, "rungs", ()) or ())
    pbt = getattr(result, "pbt", None) is not None
    extra = 3.8 if rungs or pbt else 0
    fig = Figure(figsize=(size[0], size[1] + extra), layout="constrained")
    FigureCanvasAgg(fig)
    top = fig
    if rungs or pbt:  # each trial's validation curve: halving's rungs, or PBT's copies
        top, bottom = fig.subfigures(2, 1, height_ratios=[size[1], 3.8])
        if rungs:
            _plot_rungs(bottom.subplots(), result, rungs)
        else:
            _plot_lineage(bottom.subplots(), result)
    axes = np.asarray(top.subplots(side, side, squeeze=False))
    if n <= 2:
        im = _panel(axes[0, 0], cols, acc, names[0], names[1] if n == 2 else None, norm, True, std)
    else:  # lower triangle: row r pairs names[r + 1] (y) with names[c] (x), c <= r
        for r in range(side):
            for c in range(side):
                if c > r:
                    axes[r, c].set_axis_off()
                    continue
                im = _panel(axes[r, c], cols, acc, names[c], names[r + 1], norm, n == 3, std)
    top.colorbar(im, ax=axes.ravel().tolist(), label="best val acc")
    best = "every trial diverged" if not finite.size else f"best val acc {hi:.4f}"
    note = "" if n <= 2 else "\neach panel: best over the other hyperparameters"
    what = f"{K} trials"
    if pbt:
        what = f"{K} lanes (values at the end of PBT)"
    if seeds > 1:
        what = f"{K // seeds} configurations x {seeds} seeds (mean ± std over seeds)"
        best = best.replace("best val acc", "best mean val acc")
    top.suptitle(
        f"{what}, {result.update_rule}, hidden {list(result.config.hidden_dims)}: {best}{note}",
        fontsize=9,
    )
    with atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=80)
    return Path(path)

"""fc_jax.report.curves and fc_jax.report.sweeps.plot_sweep: labelled, honest, crash-free, atomic PNGs."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from fc_jax.report import curves, sweeps
from fc_jax.storage.files import WriteError

PNG = b"\x89PNG\r\n\x1a\n"
HISTORY = {
    "loss": [2.3, 2.1, None, 1.8, 1.7, 1.6],
    "train_acc": [0.2, 0.35, 0.5, 0.55],
    "val_acc": [0.18, 0.41, 0.39, 0.41],  # best 0.41 first reached at epoch 2
}


def _texts(fig) -> str:
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.texts]
        if ax.get_legend():
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    return "\n".join(out)


def test_history_plot_is_labelled_and_marks_the_best_epoch():
    settings = {"learning_rate": 1e-3, "reg": 0.0, "batch_size": 200, "update_rule": "adam"}
    fig = curves.history_figure(HISTORY, "cifar10 [100, 100]", settings)
    loss_ax, acc_ax = fig.axes
    assert (loss_ax.get_xlabel(), loss_ax.get_ylabel()) == ("Iteration", "Loss")
    assert (acc_ax.get_xlabel(), acc_ax.get_ylabel()) == ("Epoch", "Accuracy")
    title = fig.texts[0].get_text()
    assert title == "cifar10 [100, 100]\nadam, learning rate 0.001, batch 200"
    dashed = [ln for ln in acc_ax.lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [2, 2]
    star = [ln for ln in acc_ax.lines if ln.get_marker() == "*"]
    assert (
        len(star) == 1 and list(star[0].get_xdata()) == [2] and list(star[0].get_ydata()) == [0.41]
    )
    assert "best val 0.4100 (epoch 2)" in _texts(fig)


def test_run_title_is_short_human_and_has_no_paths():
    from fc_jax import settings

    s = {**settings.settings("cifar10", {}), "data_dir": "/work/shared/data/cifar-10-batches-py"}
    assert curves.run_title(s, 0.5781) == (
        "cifar10: hidden [512, 256], batchnorm, dropout (keep 0.75)\n"
        "adam, learning rate 0.002 (x0.9 per epoch), batch 200, 12 epochs: test acc 0.578"
    )
    s = settings.settings("digits", {"reg": 1e-4, "update_rule": "sgd"})
    assert curves.run_title(s) == (
        "digits: hidden [128], no dropout\nsgd, learning rate 0.001, L2 0.0001, batch 64, 30 epochs"
    )
    assert curves.run_title(s, float("nan")) == curves.run_title(s)  # no test split
    assert curves.run_title({}) == ""


def test_history_csv_has_one_row_per_epoch(tmp_path):
    history = {
        "loss": [2.0, 1.0, None, 0.5, float("nan"), float("nan")],  # 2 steps per epoch
        "train_acc": [0.2, 0.35, 0.5],
        "val_acc": [0.18, 0.41, None],
        "lr": [1e-3, 9e-4, 8.1e-4],
        "epoch_seconds": [1.5, 0.25, 0.25],
    }
    path = curves.write_history_csv(history, tmp_path / "history.csv")
    assert path.read_text().splitlines() == [
        "epoch,loss,train_acc,val_acc,lr,seconds",
        "1,1.5,0.2,0.18,0.001,1.5",
        "2,0.5,0.35,0.41,0.0009,0.25",
        "3,,0.5,,0.00081,0.25",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]  # written atomically


def test_history_plot_without_a_finite_val_acc_has_no_marker():
    history = {"loss": [float("nan")] * 3, "train_acc": [None], "val_acc": [None]}
    fig = curves.history_figure(history, None, None)
    assert not fig.texts and "best val" not in _texts(fig)
    with pytest.raises(ValueError, match="history must contain 'val_acc'"):
        curves.plot_history({"loss": [], "train_acc": []}, "unused.png")


def test_history_png_is_written_atomically(tmp_path, monkeypatch):
    path = curves.plot_history(HISTORY, tmp_path / "out" / "curves.png", "t", {"lr": 0.1})
    assert path.read_bytes().startswith(PNG)
    old = path.read_bytes()
    from matplotlib.figure import Figure

    def full(self, f, **kw):
        f.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(
        WriteError, match=r"^cannot write .*curves.png: No space left on device \(ENOSPC\)$"
    ):
        curves.plot_history(HISTORY, path)
    assert path.read_bytes() == old and [p.name for p in path.parent.iterdir()] == ["curves.png"]


def _result(grid: dict, acc=None, seeds=None, best_epoch=None):
    """A fake SweepResult: one trial per point of the grid (the product of the values)."""
    names = list(grid)
    points = list(itertools.product(*grid.values()))
    K = len(points)
    hp = {n: np.array([p[i] for p in points], np.float32) for i, n in enumerate(names)}
    acc = np.linspace(0.1, 0.5, K) if acc is None else np.asarray(acc, float)
    return SimpleNamespace(
        trials=[{**{n: float(hp[n][k]) for n in names}, "seed": 0} for k in range(K)],
        hparams=SimpleNamespace(**hp),
        best_val_acc=acc,
        best_epoch=np.ones(K, int) if best_epoch is None else np.asarray(best_epoch),
        update_rule="sgd",
        config=SimpleNamespace(hidden_dims=(10,)),
    )


def _sweep_figure(result, tmp_path, monkeypatch, names=None):
    """Run plot_sweep for real and return the figure it saved."""
    from matplotlib.figure import Figure

    saved = []
    real = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda self, f, **kw: saved.append(self) or real(self, f, **kw)
    )
    path = sweeps.plot_sweep(result, tmp_path / "sweep.png", names)
    assert path.read_bytes().startswith(PNG) and [p.name for p in tmp_path.iterdir()] == [
        "sweep.png"
    ]
    return saved[0]


def _axis_names(fig) -> set[str]:
    return {ax.get_xlabel() for ax in fig.axes} | {ax.get_ylabel() for ax in fig.axes}


def test_three_hyperparameters_all_appear(tmp_path, monkeypatch):
    grid = {"learning_rate": [1e-3, 1e-2], "reg": [0.0, 0.1, 1.0], "weight_scale": [1e-2, 5e-2]}
    fig = _sweep_figure(_result(grid), tmp_path, monkeypatch)
    assert {"learning_rate", "reg", "weight_scale"} <= _axis_names(fig)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison and ax.get_xlabel()]
    assert len(panels) == 3  # one per pair
    assert "best over the other hyperparameters" in fig.texts[0].get_text()
    # the (learning_rate, reg) heatmap holds the best over weight_scale of each cell
    heat = next(
        ax for ax in panels if (ax.get_xlabel(), ax.get_ylabel()) == ("learning_rate", "reg")
    )
    cells = heat.images[0].get_array()
    res = _result(grid)
    lr, reg = res.hparams.learning_rate, res.hparams.reg
    want = max(
        a
        for a, x, y in zip(res.best_val_acc, lr, reg)
        if x == np.float32(1e-2) and y == np.float32(0.1)
    )
    assert cells[1, 1] == pytest.approx(want)


def test_four_hyperparameters_random_search(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    names = ["learning_rate", "reg", "weight_scale", "momentum"]
    res = _result({"learning_rate": [1e-3]})
    K = 12
    hp = {n: rng.uniform(1e-4, 1, K).astype(np.float32) for n in names}
    res.hparams = SimpleNamespace(**hp)
    res.trials = [{**{n: float(hp[n][k]) for n in names}, "seed": 0} for k in range(K)]
    res.best_val_acc, res.best_epoch = rng.uniform(0, 0.5, K), np.ones(K, int)
    fig = _sweep_figure(res, tmp_path, monkeypatch)
    assert set(names) <= _axis_names(fig)
    assert len([ax for ax in fig.axes if ax.axison and ax.get_xlabel()]) == 6


@pytest.mark.parametrize("names", [None, ["learning_rate"]])
def test_every_trial_diverged_and_a_zero_on_a_log_range(tmp_path, monkeypatch, names):
    grid = {"learning_rate": [1e-3, 1e-1, 10.0], "reg": [0.0, 1e-3, 1e-1]}  # reg 0: no log axis
    res = _result(grid, acc=np.full(9, np.nan), best_epoch=np.zeros(9, int))
    fig = _sweep_figure(res, tmp_path, monkeypatch, names)
    assert "every trial diverged" in fig.texts[0].get_text()
    if names is None:
        assert "diverged" in _texts(fig)  # the heatmap cells say so


def test_scatter_with_zero_and_diverged_trials(tmp_path, monkeypatch):
    res = _result({"learning_rate": [1e-4, 1e-3, 1e-2, 1e-1]})
    res.hparams.reg = np.array([0.0, 1e-3, 1e-2, 0.5], np.float32)  # not a grid: a scatter
    for k, t in enumerate(res.trials):
        t["reg"] = float(res.hparams.reg[k])
    res.best_epoch = np.array([1, 0, 1, 1])
    fig = _sweep_figure(res, tmp_path, monkeypatch)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("learning_rate", "reg")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"  # 0 is never put on a log axis
    assert "diverged" in _texts(fig)


# ------------------------------------------------- every picture the commands write, as a reader
def _halving_result():
    """27 trials over rungs 1, 3, 9, 27 (as `--schedule halving --eta 3` draws them)."""
    rng = np.random.default_rng(0)
    epochs = np.array([27] + [9] * 2 + [3] * 6 + [1] * 18)
    histories = []
    for e in epochs:
        start = rng.uniform(0.1, 0.45) if e == 1 else rng.uniform(0.4, 0.5)
        histories.append({"val_acc": list(np.minimum(0.6, start + 0.1 * np.log1p(np.arange(e))))})
    res = _result(
        {"learning_rate": list(np.geomspace(1e-4, 1e-2, 27))},
        acc=[max(h["val_acc"]) for h in histories],
    )
    res.histories, res.epochs, res.rungs = histories, epochs, (1, 3, 9, 27)
    return res


def _titles(fig) -> list[str]:
    subfigs = [fig, *getattr(fig, "subfigs", [])]
    return [t.get_text() for f in subfigs for t in f.texts] + [
        ax.get_title() for ax in fig.axes if ax.get_title()
    ]


def _check_readable(fig):
    """Titles short and free of paths; every visible panel names both axes."""
    fig.canvas.draw()
    titles = _titles(fig)
    assert titles
    for title in titles:
        assert "/" not in title and "=" not in title, title
        assert all(0 < len(line) <= 80 for line in title.splitlines()), title
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            assert ax.get_ylabel().strip() == "best val acc"
        elif ax.get_visible() and ax.axison and (ax.lines or ax.images or ax.collections):
            assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), ax


@pytest.mark.parametrize("picture", ["curves", "grid2", "grid3", "random", "halving", "diverged"])
def test_every_picture_has_a_readable_title_and_labelled_axes(tmp_path, monkeypatch, picture):
    from fc_jax import settings

    if picture == "curves":  # what fc-jax train writes, with a real data path in the settings
        s = {
            **settings.settings("cifar10", {}),
            "data_dir": "/work/shared/data/cifar-10-batches-py",
        }
        _check_readable(curves.history_figure(HISTORY, None, s, 0.578))
        return
    if picture == "grid2":
        res = _result({"learning_rate": [1e-4, 3e-4, 1e-3, 3e-3], "weight_scale": [1e-2, 5e-2]})
    elif picture == "grid3":
        res = _result({"learning_rate": [1e-3, 1e-2], "reg": [0.0, 0.1], "keep_prob": [0.5, 1]})
    elif picture == "random":
        res = _result({"learning_rate": [1e-4, 1e-3, 1e-2]})
        res.hparams.keep_prob = np.array([0.5, 0.9, 0.7], np.float32)
        for k, t in enumerate(res.trials):
            t["keep_prob"] = float(res.hparams.keep_prob[k])
    elif picture == "halving":
        res = _halving_result()
    else:
        res = _result({"learning_rate": [1e-3, 1e-1]}, acc=[np.nan] * 2, best_epoch=[0, 0])
    _check_readable(_sweep_figure(res, tmp_path, monkeypatch))


def test_halving_rung_labels_do_not_overlap_and_the_curves_fill_the_panel(tmp_path, monkeypatch):
    res = _halving_result()
    fig = _sweep_figure(res, tmp_path, monkeypatch)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = [a for a in fig.axes if a.get_xlabel() == "epoch"]
    (top,) = ax.child_axes
    labels = [t for t in top.get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in labels] == ["9 of 27 go on", "3 of 9 go on", "1 of 3 go on"]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    title = ax.title.get_window_extent(renderer)
    assert not any(b.overlaps(title) for b in boxes)
    # the y-range fits the trials that went past the first rung, not the stopped ones
    went_on = [v for h, e in zip(res.histories, res.epochs) if e > 1 for v in h["val_acc"]]
    lo, hi = ax.get_ylim()
    assert (
        lo <= min(went_on) and max(went_on) <= hi and hi - lo < 1.3 * (max(went_on) - min(went_on))
    )
    assert "stopped trial(s) below" in _texts(fig)

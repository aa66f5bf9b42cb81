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
    fig = curves._history_figure(HISTORY, "cifar10 [100, 100]", settings)
    loss_ax, acc_ax = fig.axes
    assert (loss_ax.get_xlabel(), loss_ax.get_ylabel()) == ("Iteration", "Loss")
    assert (acc_ax.get_xlabel(), acc_ax.get_ylabel()) == ("Epoch", "Accuracy")
    title = fig.texts[0].get_text()
    assert title.startswith("cifar10 [100, 100]\n")
    assert "learning_rate=0.001, reg=0, batch_size=200, update_rule=adam" in title
    dashed = [ln for ln in acc_ax.lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [2, 2]
    star = [ln for ln in acc_ax.lines if ln.get_marker() == "*"]
    assert (
        len(star) == 1 and list(star[0].get_xdata()) == [2] and list(star[0].get_ydata()) == [0.41]
    )
    assert "best val 0.4100 (epoch 2)" in _texts(fig)


def test_history_plot_without_a_finite_val_acc_has_no_marker():
    history = {"loss": [float("nan")] * 3, "train_acc": [None], "val_acc": [None]}
    fig = curves._history_figure(history, None, None)
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

"""Tests for fc_jax.runs.loop: THE run loop, called directly (train_lanes, promote)."""

import jax
import numpy as np
import pytest

from fc_jax import models
from fc_jax.data import datasets
from fc_jax.hparams import make_hparams
from fc_jax.runs import fit, loop
from fc_jax.runs.lanes import Lanes, promote
from fc_jax.runs.schedule import Halving, Schedule

D, C = 10, 3


def _data(n=120, seed=0):
    X, y = datasets.synthetic(n + 40, D, C, seed=seed)
    return dict(X_train=X[:n], y_train=y[:n], X_val=X[n:], y_val=y[n:])


def _stack(hps):
    return jax.tree.map(lambda *v: np.stack([np.asarray(x) for x in v]), *hps)


def _snapshot(best_val, epoch, budget, diverged=None):
    """A hand-built `Lanes` holding only what `promote` reads."""
    K = len(best_val)
    ts = type("TS", (), {"diverged": np.zeros(K, bool) if diverged is None else diverged})()
    return Lanes(
        ts,
        np.asarray(epoch),
        np.asarray(budget),
        [{}] * K,
        None,
        None,
        np.asarray(best_val, float),
        np.zeros(K, int),
        0.0,
        0.0,
    )


def test_promote_keeps_the_best_third_of_a_finished_rung():
    s = Schedule(num_epochs=9, halving=Halving(3, 1))
    lanes = _snapshot([0.2, 0.9, 0.5, 0.1, 0.8, 0.3], [1] * 6, [1] * 6)
    out = promote(lanes, s)
    assert out.budget.tolist() == [1, 3, 1, 1, 3, 1]  # the best 6 // 3 = 2 go on to 3 epochs


def test_promote_skips_diverged_lanes_and_stops_after_the_last_rung():
    s = Schedule(num_epochs=3, halving=Halving(3, 1))
    diverged = np.array([False, True, False])
    out = promote(_snapshot([0.2, 0.99, 0.5], [1, 1, 1], [1, 1, 1], diverged), s)
    assert out.budget.tolist() == [1, 1, 3]  # the diverged lane's accuracy does not count
    assert promote(_snapshot([0.2, 0.9, 0.5], [1, 3, 1], [1, 3, 1]), s) is None


@pytest.mark.slow
def test_train_lanes_k_lanes_equal_k_fits():
    """Each lane ends bit for bit where fit with its values ends (groups of one lane: a wider vmap
    may round the last bit differently, see tests/test_sweep.py)."""
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    values = [
        dict(learning_rate=1e-2, weight_scale=0.1),
        dict(learning_rate=3e-3, weight_scale=0.05),
    ]
    hps = [make_hparams("adam", **v) for v in values]
    s = Schedule(num_epochs=2, batch_size=20, independent_batches=True, num_train_samples=None)
    lanes = loop.train_lanes(cfg, _data(), _stack(hps), [3, 4], schedule=s, width=1)
    assert lanes.epoch.tolist() == [2, 2] and not lanes.diverged.any()
    for k, (hp, seed) in enumerate(zip(hps, [3, 4])):
        run = fit.fit(cfg, _data(), hparams=hp, schedule=s._replace(seed=seed))
        np.testing.assert_array_equal(lanes.ts.params["W1"][k], run.ts.params["W1"])
        assert lanes.history[k]["val_acc"] == run.history["val_acc"]


def test_callbacks_of_fit_see_runs_and_stop_ends_the_run():
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    seen, calls, lines = [], [], []
    stop = lambda run: run.epoch >= 2
    callbacks = loop.Callbacks(seen.append, lambda *a: calls.append(a), lines.append, stop)
    s = Schedule(num_epochs=5, batch_size=20, chunks_per_epoch=2)
    run = fit.fit(cfg, _data(), schedule=s, callbacks=callbacks)
    assert run.epoch == 2 and [r.epoch for r in seen] == [1, 2]
    assert isinstance(seen[0], fit.Run) and len(lines) == 2 and lines[0].startswith("(Epoch 1 / 5)")
    assert calls == [(1, 1, 2), (1, 2, 2), (2, 1, 2), (2, 2, 2)]


def test_train_lanes_refuses_bad_input_before_compiling():
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    hp = _stack([make_hparams("adam")])
    with pytest.raises(ValueError, match="on_diverge"):
        loop.train_lanes(cfg, _data(), hp, [0], on_diverge="ignore")
    with pytest.raises(ValueError, match="X_train has 7 features; the config expects 10"):
        bad = {**_data(), "X_train": np.zeros((120, 7), np.float32)}
        loop.train_lanes(cfg, bad, hp, [0])
    with pytest.raises(ValueError, match="batch_size 500 is larger"):
        loop.train_lanes(cfg, _data(), hp, [0], schedule=Schedule(batch_size=500))

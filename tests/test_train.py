"""The compiled engine (fc_jax.train) and the host loop (fc_jax.runs.fit)."""

import inspect
import re
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax import models, optim, train
from fc_jax.data import datasets
from fc_jax.hparams import make_hparams
from fc_jax.runs import fit, loop
from fc_jax.runs.schedule import Schedule

D, C = 12, 4
ONE_EPOCH = Schedule(num_epochs=1)


def _data(n=200, seed=0):
    X, y = datasets.synthetic(n + 60, D, C, seed=seed)
    return dict(X_train=X[:n], y_train=y[:n], X_val=X[n:], y_val=y[n:])


@pytest.mark.parametrize(
    "norm,keep,rule",
    [(None, 1.0, "adam"), ("batchnorm", 0.7, "sgd_momentum"), ("layernorm", 0.8, "rmsprop")],
)
@pytest.mark.slow
def test_scan_epoch_equals_python_loop_of_steps(norm, keep, rule, x64):
    cfg = models.NetConfig(
        (9, 7), input_dim=D, num_classes=C, normalization=norm, dropout=keep < 1, dtype="float64"
    )
    opt = optim.get_optimizer(rule)
    hp = make_hparams(rule, jnp.float64, keep_prob=keep, reg=0.01)
    d = _data()
    X, y = jnp.asarray(d["X_train"], jnp.float64), jnp.asarray(d["y_train"])
    ts0 = train.init_train_state(jax.random.key(0), cfg, opt, 0.1)
    idx = train.sample_indices(jax.random.key(1), X.shape[0], 6, 16)
    ts_scan, losses = train.make_epoch(cfg, opt)(ts0, X, y, idx, hp)
    step = train.make_step(cfg, opt)
    ts, loop_losses = ts0, []
    for i in idx:
        ts, loss = step(ts, X[i], y[i], hp)
        loop_losses.append(loss)
    chex.assert_trees_all_close(ts_scan.params, ts.params, rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(ts_scan.model_state, ts.model_state, rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(ts_scan.opt_state, ts.opt_state, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(losses, np.array(loop_losses), rtol=1e-12)
    assert int(ts_scan.step) == 6 and not bool(ts_scan.diverged)


class _TraceState(NamedTuple):
    count: Any  # shape=(), int32
    slots: Any  # {"trace": like params, "steps": like params}: a nested per-parameter state


def _trace_optimizer() -> optim.Optimizer:
    """A toy rule whose state nests per-parameter buffers in a dict: the layout must follow them."""

    def init(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
        return _TraceState(jnp.zeros((), jnp.int32), {"trace": zeros(), "steps": zeros()})

    def update(grads, state, params, hp):
        trace = jax.tree.map(lambda t, g: 0.9 * t + g, state.slots["trace"], grads)
        steps = jax.tree.map(lambda s: s + 1, state.slots["steps"])
        new = jax.tree.map(lambda p, t: p - hp.learning_rate * t, params, trace)
        return new, _TraceState(state.count + 1, {"trace": trace, "steps": steps})

    return optim.Optimizer(init, optim.skippable(update))


@pytest.mark.slow
def test_engine_layout_stays_inside_the_epoch(x64):
    # The epoch's W1 layout is invisible outside it: model, loss and step take no layout flag, the
    # TrainState comes back in the public (D, H1) layout, and every per-parameter buffer of any
    # optimizer state (found by tree structure, not by key) is converted back too.
    for fn in (models.forward, models.loss_fn, train.train_step):
        assert "transposed_w1" not in inspect.signature(fn).parameters
    cfg = models.NetConfig((9, 7), input_dim=D, num_classes=C, dtype="float64")
    opt = _trace_optimizer()
    hp = make_hparams("sgd", jnp.float64, learning_rate=0.05, reg=0.01)
    d = _data()
    X, y = jnp.asarray(d["X_train"], jnp.float64), jnp.asarray(d["y_train"])
    ts0 = train.init_train_state(jax.random.key(0), cfg, opt, 0.1)
    idx = train.sample_indices(jax.random.key(1), X.shape[0], 5, 16)
    ts_scan, _ = train.make_epoch(cfg, opt)(ts0, X, y, idx, hp)
    ts = ts0
    for i in idx:
        ts, _ = train.make_step(cfg, opt)(ts, X[i], y[i], hp)
    chex.assert_trees_all_equal_shapes_and_dtypes(ts_scan, ts0)
    chex.assert_trees_all_close(ts_scan.params, ts.params, rtol=1e-12, atol=1e-14)
    chex.assert_trees_all_close(ts_scan.opt_state, ts.opt_state, rtol=1e-12, atol=1e-14)
    assert int(ts_scan.opt_state.count) == 5


def test_new_learning_rate_does_not_recompile():
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    opt = optim.get_optimizer("sgd")
    d = _data()
    X, y = jnp.asarray(d["X_train"]), jnp.asarray(d["y_train"])
    ts0 = train.init_train_state(jax.random.key(0), cfg, opt, 0.1)
    idx = train.sample_indices(jax.random.key(1), X.shape[0], 3, 10)
    chex.clear_trace_counter()
    epoch = jax.jit(
        chex.assert_max_traces(n=1)(lambda *a: train.scan_epoch(*a, config=cfg, optimizer=opt))
    )
    out = [
        epoch(ts0, X, y, idx, make_hparams("sgd", learning_rate=lr))[0].params["W1"]
        for lr in (1e-3, 1e-1)
    ]
    assert not np.allclose(out[0], out[1])


def test_sample_indices():
    idx = np.asarray(train.sample_indices(jax.random.key(0), 50, 7, 10, replace=True))
    assert idx.shape == (7, 10) and idx.dtype == np.int32 and idx.min() >= 0 and idx.max() < 50
    perm = np.asarray(train.sample_indices(jax.random.key(0), 50, 5, 10, replace=False))
    assert sorted(perm.ravel().tolist()) == list(range(50))  # one full permutation
    long = np.asarray(train.sample_indices(jax.random.key(0), 30, 5, 10, replace=False))
    assert sorted(long.ravel()[:30].tolist()) == list(range(30))
    with pytest.raises(ValueError, match="batch_size"):
        train.sample_indices(jax.random.key(0), 50, 5, 0)


def test_accuracy_matches_numpy_with_padding():
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    params = models.init_params(jax.random.key(0), cfg, 0.5)
    X, y = datasets.synthetic(37, D, C, seed=3)
    acc = float(
        train.accuracy(params, {}, jnp.asarray(X), jnp.asarray(y), config=cfg, batch_size=10)
    )
    scores = np.maximum(X @ np.asarray(params["W1"]), 0) @ np.asarray(params["W2"])
    assert acc == pytest.approx(np.mean(scores.argmax(1) == y), abs=1e-6)


@pytest.mark.slow
def test_fit_same_seed_same_result_and_chunks_do_not_matter():
    cfg = models.NetConfig((16,), input_dim=D, num_classes=C, dropout=True)
    hp = make_hparams("adam", keep_prob=0.8, weight_scale=0.1)
    s = Schedule(num_epochs=2, batch_size=20, seed=3)
    a = fit.fit(cfg, _data(), hparams=hp, schedule=s)
    b = fit.fit(cfg, _data(), hparams=hp, schedule=s._replace(chunks_per_epoch=5))
    c = fit.fit(cfg, _data(), hparams=hp, schedule=s._replace(seed=4))
    for k in a.ts.params:
        np.testing.assert_array_equal(a.ts.params[k], b.ts.params[k])
    assert a.history["loss"] == b.history["loss"]
    assert not np.array_equal(a.ts.params["W1"], c.ts.params["W1"])
    assert len(a.history["loss"]) == 2 * 10 and len(a.history["val_acc"]) == 2
    assert a.history["lr"] == pytest.approx([1e-3, 1e-3])


@pytest.mark.slow
def test_fit_overfits_50_examples():
    X, y = datasets.synthetic(50, D, C, seed=5)
    rng = np.random.default_rng(0)
    X = X + rng.standard_normal(X.shape).astype(
        np.float32
    )  # make it hard enough to need memorizing
    d = dict(X_train=X, y_train=y, X_val=X, y_val=y)
    cfg = models.NetConfig((100, 100), input_dim=D, num_classes=C)
    run = fit.fit(
        cfg,
        d,
        hparams=make_hparams("adam", learning_rate=1e-2, weight_scale=0.1),
        schedule=Schedule(num_epochs=40, batch_size=25, num_train_samples=None),
        optimizer="adam",
    )
    assert run.history["train_acc"][-1] == 1.0


@pytest.mark.slow
def test_fit_resume_is_exact():
    cfg = models.NetConfig(
        (16,), input_dim=D, num_classes=C, normalization="batchnorm", dropout=True
    )
    kw = dict(
        optimizer="rmsprop",
        hparams=make_hparams("rmsprop", keep_prob=0.7, lr_decay=0.9, weight_scale=0.1),
    )
    s = Schedule(num_epochs=3, batch_size=20, seed=1)
    full = fit.fit(cfg, _data(), schedule=s, **kw)
    half = fit.fit(cfg, _data(), schedule=s._replace(num_epochs=1), **kw)
    resumed = fit.fit(cfg, _data(), schedule=s, resume=half, **kw)
    for k in full.ts.params:
        np.testing.assert_array_equal(full.ts.params[k], resumed.ts.params[k])
    assert (
        full.history["loss"] == resumed.history["loss"]
        and full.history["lr"] == resumed.history["lr"]
    )


@pytest.mark.slow
def test_divergence_names_epoch_and_step_and_keeps_last_good_epoch():
    cfg = models.NetConfig((16,), input_dim=D, num_classes=C)
    seen = []
    with pytest.raises(loop.DivergedError, match=r"epoch \d+, step \d+") as err:
        fit.fit(
            cfg,
            _data(),
            hparams=make_hparams("sgd", learning_rate=1e30, weight_scale=0.1),
            schedule=Schedule(num_epochs=5, batch_size=20),
            optimizer="sgd",
            callbacks=loop.Callbacks(on_epoch_end=seen.append),
        )
    assert err.value.epoch == len(seen) + 1
    assert all(np.isfinite(np.asarray(r.ts.params["W1"])).all() for r in seen)


def test_diverged_run_freezes_params():
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    opt = optim.get_optimizer("sgd")
    d = _data()
    X, y = jnp.asarray(d["X_train"]), jnp.asarray(d["y_train"])
    ts0 = train.init_train_state(jax.random.key(0), cfg, opt, 0.1)
    X_bad = X.at[:].set(jnp.nan)
    idx = train.sample_indices(jax.random.key(1), X.shape[0], 3, 10)
    ts, losses = train.make_epoch(cfg, opt)(ts0, X_bad, y, idx, make_hparams("sgd"))
    assert bool(ts.diverged) and not np.isfinite(np.asarray(losses)).any()
    chex.assert_trees_all_equal(ts.params, ts0.params)


def test_non_finite_gradient_counts_as_diverged():
    # The divergence flag reads the loss and the 1-D gradients (batch sums of the backward signal).
    grads = {"W1": jnp.ones((3, 2)), "b1": jnp.ones(2), "W2": jnp.ones((2, 2)), "b2": jnp.ones(2)}
    assert bool(train.all_finite(jnp.asarray(1.0), grads))
    assert not bool(train.all_finite(jnp.asarray(jnp.inf), grads))
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        assert not bool(
            train.all_finite(jnp.asarray(1.0), {**grads, "b1": grads["b1"].at[1].set(bad)})
        )


@jax.custom_vjp
def _poison(b, hit):
    """0 in value; its gradient for `b` is NaN where `hit` (a finite loss, a non-finite gradient)."""
    return jnp.zeros((), b.dtype)


_poison.defvjp(
    lambda b, hit: (jnp.zeros((), b.dtype), (b, hit)),
    lambda res, g: (jnp.where(res[1], jnp.nan, 0.0) * jnp.ones_like(res[0]), None),
)


def test_a_non_finite_gradient_stops_the_run_at_its_step(monkeypatch):
    # Step 3's minibatch holds the marked row: its loss is finite, its gradient is not. The run is
    # diverged from that step, its params are those after step 2, and the reported losses are NaN
    # from step 3 on (histories, `DivergedError` and the sweep's diverged_iteration read them).
    loss_fn = models.loss_fn

    def poisoned(params, state, X, y, hp, **kw):
        loss, aux = loss_fn(params, state, X, y, hp, **kw)
        return loss + _poison(params["b1"], jnp.any(X[:, 0] == 1e6)), aux

    monkeypatch.setattr(models, "loss_fn", poisoned)
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    opt = optim.get_optimizer("adam")
    d = _data()
    X = jnp.asarray(d["X_train"]).at[0, 0].set(1e6)
    y = jnp.asarray(d["y_train"])
    idx = jnp.asarray([[1, 2], [3, 4], [5, 6], [0, 7], [8, 9]], jnp.int32)
    ts0 = train.init_train_state(jax.random.key(0), cfg, opt, 0.1)
    hp = make_hparams("adam")
    ts, losses = train.make_epoch(cfg, opt)(ts0, X, y, idx, hp)
    good, _ = train.make_epoch(cfg, opt)(ts0, X, y, idx[:3], hp)
    losses = np.asarray(losses)
    assert bool(ts.diverged) and np.isfinite(losses[:3]).all() and np.isnan(losses[3:]).all()
    chex.assert_trees_all_equal((ts.params, ts.opt_state), (good.params, good.opt_state))


def _loop_body_copies(hlo: str) -> tuple[int, list[str]]:
    """(number of while-loop bodies found, shapes of the arrays copied inside them) of an HLO text."""
    bodies = set(re.findall(r"body=(%[\w.\-]+)", hlo))
    found, shapes = 0, []
    for comp in re.findall(r"\n(%[^\n]*\{\n.*?\n\})", hlo, re.S):
        if comp.split(" ", 1)[0] in bodies:
            found += 1
            shapes += re.findall(r"= (\w+\[[0-9,]*\])\{[0-9,]*\} copy\(", comp)
    return found, shapes


@pytest.mark.parametrize(
    "rule,norm", [("adam", None), ("sgd_momentum", None), ("adam", "batchnorm"), ("sgd", None)]
)
def test_epoch_updates_every_weight_in_place(rule, norm):
    # The update rules compute the new params from their guarded state, and the divergence flag
    # waits for the backward pass: XLA then updates each weight and its optimizer buffers in
    # place. Selecting after the update (or reading only the loss) made it copy them every step.
    cfg = models.NetConfig(
        (48, 40), input_dim=256, num_classes=10, normalization=norm, dropout=norm is not None
    )
    opt = optim.get_optimizer(rule)
    ts = train.init_train_state(jax.random.key(0), cfg, opt, 1e-2)
    X, y = jnp.zeros((64, 256)), jnp.zeros((64,), jnp.int32)
    idx = train.sample_indices(jax.random.key(1), 64, 3, 16)
    hlo = train.make_epoch(cfg, opt).lower(ts, X, y, idx, make_hparams(rule)).compile().as_text()
    found, copied = _loop_body_copies(hlo)
    weights = {"f32[48,256]", "f32[256,48]", "f32[48,40]", "f32[40,10]"}  # W1 either way, W2, W3
    assert found >= 1 and not weights & set(copied), copied


@pytest.mark.slow
def test_fit_float64():
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C, dtype="float64")
    run = fit.fit(cfg, _data(), schedule=Schedule(num_epochs=1, batch_size=20))
    assert run.ts.params["W1"].dtype == np.float64
    assert not jax.config.jax_enable_x64


@pytest.mark.parametrize(
    "change,match",
    [
        (
            lambda d: d.update(
                X_train=np.where(
                    np.arange(d["X_train"].size).reshape(d["X_train"].shape) == 5,
                    np.nan,
                    d["X_train"],
                )
            ),
            "X_train",
        ),
        (lambda d: d.update(y_val=d["y_val"] + C), "y_val"),
        (lambda d: d.update(y_train=d["y_train"][:-1]), "y_train"),
    ],
)
def test_fit_rejects_bad_data(change, match):
    d = _data()
    change(d)
    with pytest.raises(ValueError, match=match):
        fit.fit(models.NetConfig((8,), input_dim=D, num_classes=C), d, schedule=ONE_EPOCH)


def test_fit_rejects_bad_hparams_and_rule():
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    with pytest.raises(ValueError, match="learning_rate"):
        fit.fit(
            cfg,
            _data(),
            hparams=make_hparams("sgd")._replace(learning_rate=jnp.asarray(-1.0)),
            schedule=ONE_EPOCH,
        )
    with pytest.raises(ValueError, match="nadam"):
        fit.fit(cfg, _data(), optimizer="nadam", schedule=ONE_EPOCH)
    with pytest.raises(ValueError, match="features"):
        wide = models.NetConfig((8,), input_dim=D + 1, num_classes=C)
        fit.fit(wide, _data(), schedule=ONE_EPOCH)
    with pytest.raises(ValueError, match="fit trains one lane"):
        fit.fit(cfg, _data(), schedule=Schedule(seeds=2))


@pytest.mark.slow
def test_bfloat16_epoch_keeps_float32_master_state():
    # The policy changes the matmuls only: params, optimizer state and batchnorm statistics stay
    # float32 through an epoch (and a step), and the losses track float32's within bfloat16 rounding.
    f32 = models.NetConfig((16,), input_dim=D, num_classes=C, normalization="batchnorm")
    bf16 = models.NetConfig(
        (16,), input_dim=D, num_classes=C, normalization="batchnorm", compute_dtype="bfloat16"
    )
    opt = optim.get_optimizer("adam")
    d = _data()
    X, y = jnp.asarray(d["X_train"]), jnp.asarray(d["y_train"])
    ts0 = train.init_train_state(jax.random.key(0), bf16, opt, 0.1)
    idx = train.sample_indices(jax.random.key(1), X.shape[0], 4, 32)
    hp = make_hparams("adam", learning_rate=1e-2)
    ts, losses = train.make_epoch(bf16, opt)(ts0, X, y, idx, hp)
    ts1, _ = train.make_step(bf16, opt)(ts0, X[idx[0]], y[idx[0]], hp)
    chex.assert_trees_all_equal_shapes_and_dtypes(ts, ts0)
    chex.assert_trees_all_equal_shapes_and_dtypes(ts1, ts0)
    assert {v.dtype for v in jax.tree.leaves((ts.params, ts.opt_state, ts.model_state))} == {
        jnp.dtype(jnp.float32),
        jnp.dtype(jnp.int32),  # adam's t
    }
    assert not np.array_equal(ts.params["W1"], ts0.params["W1"])
    _, losses32 = train.make_epoch(f32, opt)(ts0, X, y, idx, hp)
    np.testing.assert_allclose(losses, losses32, rtol=1e-2)

"""Learning-rate schedules inside the scan (fc_jax.lr_schedules) and their place in the run loop."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax import models, optim, train
from fc_jax.data import datasets
from fc_jax.hparams import make_hparams
from fc_jax.lr_schedules import LRSchedule, learning_rate_at
from fc_jax.runs import fit
from fc_jax.runs.schedule import Schedule, epoch_learning_rate

D, C = 12, 4


def _numpy_lr(kind, lr0, t, S, E, warmup, f):
    """The schedules' formulas written out once more, in float64 Python, step by step."""
    T, W = S * E, warmup * S
    if kind == "triangle":
        P = W if W > 0 else T / 2
        if t < P:
            return lr0 * (f + (1 - f) * t / max(P, 1))
        return lr0 * max(f + (1 - f) * (1 - (t - P) / max(T - P, 1)), f)
    if t < W:
        return lr0 * min(1.0, (t + 1) / W)
    p = min(max((t - W) / max(T - W, 1), 0.0), 1.0)
    if kind == "cosine":
        return lr0 * (f + (1 - f) * (1 + math.cos(math.pi * p)) / 2)
    return lr0 * (f + (1 - f) * (1 - p))


@pytest.mark.parametrize("kind", ["cosine", "linear", "triangle"])
@pytest.mark.parametrize("warmup,final", [(0.0, 0.0), (1.5, 0.1), (4.0, 1.0)])
def test_each_kind_follows_its_formula(kind, warmup, final, x64):
    S, E, lr0 = 7, 4, 0.3
    hp = make_hparams(
        "sgd", jnp.float64, learning_rate=lr0, warmup_epochs=warmup, final_lr_fraction=final
    )
    sched = LRSchedule(kind, S, E)
    steps = jnp.arange(S * E, dtype=jnp.int32)
    got = jax.vmap(lambda t: learning_rate_at(sched, hp, t))(steps)
    want = [_numpy_lr(kind, lr0, t, S, E, warmup, final) for t in range(S * E)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    if kind != "triangle" and warmup == 0:
        assert got[0] == lr0  # no warmup: the first step takes the full rate
    if final == 0:
        assert 0 <= got[-1] < lr0 * 0.1  # ends near 0


def test_step_kind_is_the_given_rate():
    hp = make_hparams("sgd", learning_rate=0.3, lr_decay=0.5)
    assert learning_rate_at(LRSchedule("step", 5, 3), hp, jnp.int32(11)) == hp.learning_rate


def _data(n=120, seed=0):
    X, y = datasets.synthetic(n + 40, D, C, seed=seed)
    return dict(X_train=X[:n], y_train=y[:n], X_val=X[n:], y_val=y[n:])


@pytest.mark.slow
def test_scan_uses_the_global_step(x64):
    """Two epochs of the scan equal a Python loop of steps fed the numpy formula's rates."""
    cfg = models.NetConfig((9,), input_dim=D, num_classes=C, dtype="float64")
    opt = optim.get_optimizer("sgd_momentum")
    hp = make_hparams(
        "sgd_momentum", jnp.float64, learning_rate=0.05, warmup_epochs=0.5, final_lr_fraction=0.2
    )
    d = _data()
    X, y = jnp.asarray(d["X_train"], jnp.float64), jnp.asarray(d["y_train"])
    S, E = 6, 2
    sched = LRSchedule("cosine", S, E)
    ts0 = train.init_train_state(jax.random.key(0), cfg, opt, 0.1)
    epoch = train.make_epoch(cfg, opt, sched)
    step = train.make_step(cfg, opt)
    ts_scan, ts = ts0, ts0
    for e in range(E):
        idx = train.sample_indices(jax.random.key(e), X.shape[0], S, 16)
        ts_scan, _ = epoch(ts_scan, X, y, idx, hp)
        for s, i in enumerate(idx):
            lr = _numpy_lr("cosine", 0.05, e * S + s, S, E, 0.5, 0.2)
            ts, _ = step(ts, X[i], y[i], hp._replace(learning_rate=jnp.float64(lr)))
    chex.assert_trees_all_close(ts_scan.params, ts.params, rtol=1e-12, atol=1e-14)


def test_one_compile_across_schedule_values():
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    opt = optim.get_optimizer("sgd")
    d = _data()
    X, y = jnp.asarray(d["X_train"]), jnp.asarray(d["y_train"])
    ts0 = train.init_train_state(jax.random.key(0), cfg, opt, 0.1)
    idx = train.sample_indices(jax.random.key(1), X.shape[0], 3, 10)
    sched = LRSchedule("triangle", 3, 2)
    chex.clear_trace_counter()
    epoch = jax.jit(
        chex.assert_max_traces(n=1)(
            lambda *a: train.scan_epoch(*a, config=cfg, optimizer=opt, lr_schedule=sched)
        )
    )
    out = [
        epoch(ts0, X, y, idx, make_hparams("sgd", warmup_epochs=w, final_lr_fraction=f))[0]
        for w, f in ((0.0, 0.0), (1.0, 0.5), (2.0, 1.0))
    ]
    assert not np.allclose(out[0].params["W1"], out[1].params["W1"])


@pytest.mark.slow
def test_lanes_mix_schedule_values_and_each_equals_fit():
    from fc_jax.runs.sweep import run_sweep

    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    trials = [
        {"warmup_epochs": 0.0, "final_lr_fraction": 0.0},
        {"warmup_epochs": 1.0, "final_lr_fraction": 0.3},
    ]
    s = Schedule(num_epochs=2, batch_size=20, lr_schedule="linear")
    res = run_sweep(cfg, _data(), trials, schedule=s)
    one = fit.fit(cfg, _data(), hparams=make_hparams("adam", **trials[1]), schedule=s)
    np.testing.assert_allclose(res.final_state.params["W1"][1], one.ts.params["W1"], rtol=1e-5)
    np.testing.assert_allclose(res.history["lr"][1], one.history["lr"])
    assert res.history["lr"][1][0] < res.history["lr"][0][0]  # the warmup lane starts lower


def test_step_is_the_course_decay():
    """`step` (the default) trains each epoch at the host's float64 `lr *= lr_decay`, as the engine
    called without a schedule (the run loop's lane vmap rounds differently in the last bit; the
    rates themselves are exact)."""
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    opt = optim.get_optimizer("adam")
    hp = make_hparams("adam", lr_decay=0.7, weight_scale=0.1)
    d = _data()
    run = fit.fit(cfg, d, hparams=hp, schedule=Schedule(num_epochs=3, batch_size=20, seed=3))
    X, y = jnp.asarray(d["X_train"]), jnp.asarray(d["y_train"])
    ts = train.init_train_state(jax.random.key(3), cfg, opt, hp.weight_scale)
    epoch = train.make_epoch(cfg, opt)
    for e in range(3):
        k = jax.random.fold_in(jax.random.fold_in(jax.random.key(3), 1), e)
        idx = train.sample_indices(k, len(X), len(X) // 20, 20)
        lr = np.float32(epoch_learning_rate(np.float32(1e-3), np.float32(0.7), e))
        ts, _ = epoch(ts, X, y, idx, hp._replace(learning_rate=jnp.asarray(lr)))
    chex.assert_trees_all_close(run.ts.params, ts.params, rtol=1e-5, atol=1e-7)
    assert run.history["lr"][2] == float(
        np.float32(epoch_learning_rate(np.float32(1e-3), np.float32(0.7), 2))
    )


@pytest.mark.parametrize(
    "kind,warmup,match",
    [
        ("step", 1.0, "warmup_epochs needs lr_schedule"),
        ("cosine", 3.5, "longer than the run"),
        ("sine", 0.0, "lr_schedule must be one of"),
    ],
)
def test_refusals(kind, warmup, match):
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    with pytest.raises(ValueError, match=match):
        fit.fit(
            cfg,
            _data(),
            hparams=make_hparams("adam", warmup_epochs=warmup),
            schedule=Schedule(num_epochs=3, batch_size=20, lr_schedule=kind),
        )

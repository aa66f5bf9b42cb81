"""Augmentation inside the scanned epoch (fc_jax.augment): crops, flips, mixup."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from fc_jax import augment as aug
from fc_jax import models, optim, train
from fc_jax.data import datasets
from fc_jax.hparams import make_hparams
from fc_jax.runs import fit, placement
from fc_jax.runs.loop import Callbacks
from fc_jax.runs.schedule import Schedule, epoch_keys
from fc_jax.runs.sweep import run_sweep

SHAPE = (2, 5, 6)  # (C, H, W): not square, so rows and columns cannot be swapped unnoticed
D, C = 2 * 5 * 6, 4


def _numpy_crop_flip(x, offsets, flips, shape, pad):
    c, h, w = shape
    out = []
    for row, (dy, dx), f in zip(x, offsets, flips):
        img = np.pad(row.reshape(c, h, w), ((0, 0), (pad, pad), (pad, pad)))
        img = img[:, dy : dy + h, dx : dx + w]
        out.append((img[:, :, ::-1] if f else img).reshape(-1))
    return np.stack(out)


@pytest.mark.parametrize("pad,flip", [(0, True), (2, False), (3, True)])
def test_crop_flip_matches_numpy(pad, flip, rng):
    x = rng.normal(size=(40, D)).astype(np.float32)
    offsets, flips = aug.crop_flip_draws(jax.random.key(7), 40, pad, flip)
    got = aug.crop_flip(jnp.asarray(x), offsets, flips, SHAPE, pad)
    want = _numpy_crop_flip(x, np.asarray(offsets), np.asarray(flips), SHAPE, pad)
    np.testing.assert_array_equal(got, want)  # data movement only: exact
    rows = np.array([3, 0, 39, 3] * 10)  # straight from the whole set, rows repeated
    got_rows = aug.crop_flip_rows(jnp.asarray(x), jnp.asarray(rows), offsets, flips, SHAPE, pad)
    np.testing.assert_array_equal(
        got_rows, _numpy_crop_flip(x[rows], *map(np.asarray, (offsets, flips)), SHAPE, pad)
    )
    o, f = np.asarray(offsets), np.asarray(flips)
    assert o.min() >= 0 and o.max() <= 2 * pad
    if pad:
        assert len({tuple(r) for r in o}) > 5  # the offsets vary
    assert f.any() and not f.all() if flip else not f.any()


@pytest.mark.slow
def test_mixup_batch_and_loss_match_numpy(x64):
    """The mixed batch is lam * x + (1 - lam) * x[perm]; the loss of the two labels equals the
    cross-entropy of the mixed one-hot targets, value and gradient (jax.grad of plain jnp)."""
    cfg = models.NetConfig((7,), input_dim=D, num_classes=C, dtype="float64")
    params = models.init_params(jax.random.key(0), cfg, 0.3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, D))
    y = rng.integers(0, C, 16)
    hp = make_hparams("adam", jnp.float64, mixup_alpha=0.4, reg=0.01)
    xm, yb, (y2, lam) = aug.augment_batch(
        jax.random.key(3),
        jnp.asarray(x),
        jnp.asarray(y),
        jnp.arange(16),
        hp,
        aug.Augment(mixup=True),
    )
    np.testing.assert_array_equal(yb, y)
    perm, lam_np = aug.mixup_draws(jax.random.key(3), 16, 0.4, jnp.float64)
    perm, lam_np = np.asarray(perm), float(lam_np)
    assert sorted(perm) == list(range(16)) and 0 < lam_np < 1 and float(lam) == lam_np
    np.testing.assert_allclose(xm, lam_np * x + (1 - lam_np) * x[perm], rtol=1e-14)
    np.testing.assert_array_equal(y2, y[perm])

    def soft_ce(p):  # plain jnp: softmax cross-entropy against the mixed one-hot targets
        s = models.scores(p, {}, xm, config=cfg)
        t = lam_np * jax.nn.one_hot(y, C) + (1 - lam_np) * jax.nn.one_hot(y[perm], C)
        data = -jnp.sum(t * jax.nn.log_softmax(s)) / 16
        return data + sum(0.5 * 0.01 * jnp.sum(p[f"W{i}"] ** 2) for i in (1, 2))

    def mixed(p):
        return models.loss_fn(p, {}, xm, jnp.asarray(y), hp, config=cfg, mix=(y2, lam))[0]

    np.testing.assert_allclose(mixed(params), soft_ce(params), rtol=1e-12)
    chex.assert_trees_all_close(jax.grad(mixed)(params), jax.grad(soft_ce)(params), rtol=1e-10)


def test_alpha_zero_is_not_mixed():
    perm, lam = aug.mixup_draws(jax.random.key(0), 8, 0.0, jnp.float32)
    assert float(lam) == 1.0
    x = jnp.arange(16.0).reshape(8, 2)
    np.testing.assert_array_equal(aug.mix_inputs(x, perm, lam), x)


def _data(n=80, seed=0):
    X, y = datasets.synthetic(n + 40, D, C, seed=seed)
    return dict(X_train=X[:n], y_train=y[:n], X_val=X[n:], y_val=y[n:])


@pytest.mark.slow
def test_scan_epoch_equals_python_loop_of_augmented_steps(x64):
    cfg = models.NetConfig((9,), input_dim=D, num_classes=C, dtype="float64")
    opt = optim.get_optimizer("adam")
    hp = make_hparams("adam", jnp.float64, mixup_alpha=0.3)
    d = _data()
    X, y = jnp.asarray(d["X_train"], jnp.float64), jnp.asarray(d["y_train"])
    a = aug.Augment(SHAPE, 2, True, True)
    ts0 = train.init_train_state(jax.random.key(0), cfg, opt, 0.1)
    idx = train.sample_indices(jax.random.key(1), X.shape[0], 5, 16)
    keys = epoch_keys(Schedule(), [0], 0, 5)
    ts_scan, _ = train.make_epoch(cfg, opt, augment=a)(ts0, X, y, idx, hp, None, keys)
    ts = ts0
    for i, k in zip(idx, keys):
        xb, yb, mix = aug.augment_batch(jax.random.wrap_key_data(k), X, y, i, hp, a)
        ts, _ = train.train_step(ts, xb, yb, hp, config=cfg, optimizer=opt, mix=mix)
    chex.assert_trees_all_close(ts_scan.params, ts.params, rtol=1e-12, atol=1e-14)
    plain, _ = train.make_epoch(cfg, opt)(ts0, X, y, idx, hp)
    assert not np.allclose(plain.params["W1"], ts.params["W1"])  # augmentation changed training


def test_shared_minibatches_crop_once_for_all_lanes():
    """With shared minibatches the crops and flips are one computation, not one per lane: the
    vmapped epoch gathers the augmented batch without a lane axis (the lanes read one batch)."""
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    opt = optim.get_optimizer("adam")
    mesh = Mesh(np.array(jax.devices()[:1]), ("trials",))
    a = aug.Augment(SHAPE, 2, True, False)
    texts = []
    for independent in (False, True):
        fns = placement.make_lane_fns(cfg, opt, mesh, independent, None, a)
        ts = fns.init(jnp.arange(3, dtype=jnp.uint32), jnp.full((3,), 0.1))
        hp = jax.tree.map(lambda v: jnp.full((3,), v), make_hparams("adam"))
        idx = jnp.zeros((3, 4, 10) if independent else (4, 10), jnp.int32)
        keys = epoch_keys(Schedule(independent_batches=independent), [0, 1, 2], 0, 4)
        X, y = jnp.zeros((80, D)), jnp.zeros((80,), jnp.int32)
        texts.append(str(jax.make_jaxpr(fns.epoch)(ts, X, y, idx, hp, keys)))
    # the gather's (batch, D) flat indices: computed once, or once per lane
    assert "i32[10,60]" in texts[0] and "i32[3,10,60]" not in texts[0]
    assert "i32[3,10,60]" in texts[1]


@pytest.mark.slow
def test_augmentation_is_shared_by_lanes_and_independent_per_lane():
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    trials = [{"seed": 0}, {"seed": 1}]
    s = Schedule(num_epochs=2, batch_size=20, crop_pad=1, flip=True, image_shape=SHAPE)
    both = run_sweep(cfg, _data(), trials, schedule=s)
    alone = run_sweep(cfg, _data(), trials[1:], schedule=s)  # lane seed 1, shared stream of seed 0
    np.testing.assert_allclose(
        both.final_state.params["W1"][1], alone.final_state.params["W1"][0], rtol=1e-5, atol=1e-7
    )
    own = run_sweep(cfg, _data(), trials, schedule=s._replace(independent_batches=True))
    solo = fit.fit(cfg, _data(), hparams=make_hparams("adam"), schedule=s._replace(seed=1))
    np.testing.assert_allclose(
        own.final_state.params["W1"][1], solo.ts.params["W1"], rtol=1e-5, atol=1e-7
    )
    assert not np.allclose(own.final_state.params["W1"][1], both.final_state.params["W1"][1])


@pytest.mark.slow
def test_resume_is_exact_with_augmentation_and_mixup():
    cfg = models.NetConfig((16,), input_dim=D, num_classes=C, dropout=True)
    hp = make_hparams("adam", keep_prob=0.8, mixup_alpha=0.5, warmup_epochs=1.0)
    s = Schedule(
        num_epochs=3,
        batch_size=20,
        seed=2,
        crop_pad=2,
        flip=True,
        image_shape=SHAPE,
        lr_schedule="cosine",
        chunks_per_epoch=2,
    )
    snapshots = []
    full = fit.fit(cfg, _data(), hparams=hp, schedule=s, callbacks=Callbacks(snapshots.append))
    resumed = fit.fit(cfg, _data(), hparams=hp, schedule=s, resume=snapshots[0])
    for k in full.ts.params:
        np.testing.assert_array_equal(full.ts.params[k], resumed.ts.params[k])
    assert full.history["loss"] == resumed.history["loss"]


def test_refusals():
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    s = Schedule(num_epochs=1, batch_size=20)
    with pytest.raises(ValueError, match="crop_pad 1 needs images"):
        fit.fit(cfg, _data(), schedule=s._replace(crop_pad=1))
    with pytest.raises(ValueError, match="flip needs images"):
        fit.fit(cfg, _data(), schedule=s._replace(flip=True))
    with pytest.raises(ValueError, match="larger than the image"):
        fit.fit(cfg, _data(), schedule=s._replace(crop_pad=6, image_shape=SHAPE))
    with pytest.raises(ValueError, match="mixup_alpha=-1"):
        make_hparams("adam", mixup_alpha=-1)


@pytest.mark.slow
def test_lanes_with_different_alphas():
    """Lanes mixing with different alphas (alpha 0: that lane is not mixed) train together."""
    cfg = models.NetConfig((8,), input_dim=D, num_classes=C)
    trials = [{"mixup_alpha": 0.0}, {"mixup_alpha": 0.4}]
    s = Schedule(num_epochs=2, batch_size=20)
    res = run_sweep(cfg, _data(), trials, schedule=s)
    plain = fit.fit(cfg, _data(), hparams=make_hparams("adam"), schedule=s)
    np.testing.assert_allclose(
        res.final_state.params["W1"][0], plain.ts.params["W1"], rtol=1e-5, atol=1e-7
    )
    assert not np.allclose(res.final_state.params["W1"][1], plain.ts.params["W1"], atol=1e-4)


@pytest.mark.slow
def test_cli_trains_with_the_recipe_flags_and_resume_refuses_another(tmp_path, capsys):
    from fc_jax import cli

    out = tmp_path / "run"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--num-training",
        "200",
        "--lr-schedule",
        "triangle",
        "--crop-pad",
        "1",
        "--flip",
        "--mixup-alpha",
        "0.2",
        "--out",
        str(out),
        "--quiet",
    ]
    assert cli.main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["epochs"] == 2 and 0 <= line["test_acc"] <= 1
    saved = json.loads((out / "history.json").read_text())["settings"]
    assert (saved["lr_schedule"], saved["crop_pad"], saved["flip"]) == ("triangle", 1, True)
    assert cli.main(["train", "--resume", str(out), "--no-flip"]) == 2
    assert "--flip False (checkpoint: True)" in capsys.readouterr().err

"""fc_jax.models against two independent oracles: a plain-jnp model with no custom VJPs (autodiff
gives its gradients) and the numpy reference `fc_jax.reference.fc_net.FullyConnectedNet`; plus
batchnorm state, the parameter count, initialization, errors, jit/retracing and dtypes."""

import dataclasses
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax import layers, losses, models, precision
from fc_jax.hparams import make_hparams
from fc_jax.reference.fc_net import FullyConnectedNet
from tests.helpers import rel_error

N, D, HIDDEN, C = 5, 12, (7, 6), 4
EPS = 1e-5


# ---------------------------------------------------------------- the plain-jnp oracle
def _plain_norm(a, gamma, beta, axis):
    mu = jnp.mean(a, axis=axis, keepdims=True)
    var = jnp.mean((a - mu) ** 2, axis=axis, keepdims=True)  # biased
    return gamma[None, :] * (a - mu) / jnp.sqrt(var + EPS) + beta[None, :]


def _plain_forward(params, state, X, masks, config, train):
    """Scores (N, C) and the list of pre-normalization activations, all in plain jnp."""
    L = config.num_layers
    h = X.reshape(X.shape[0], -1)
    pre = []
    for i in range(1, L):
        a = h @ params[f"W{i}"] + params[f"b{i}"][None, :]
        pre.append(a)
        if config.normalization == "layernorm":
            a = _plain_norm(a, params[f"gamma{i}"], params[f"beta{i}"], axis=1)
        elif config.normalization == "batchnorm" and train:
            a = _plain_norm(a, params[f"gamma{i}"], params[f"beta{i}"], axis=0)
        elif config.normalization == "batchnorm":
            rm, rv = state[f"running_mean{i}"], state[f"running_var{i}"]
            a = (a - rm[None, :]) / jnp.sqrt(rv[None, :] + EPS) * params[f"gamma{i}"][None, :]
            a = a + params[f"beta{i}"][None, :]
        h = jnp.maximum(a, 0)
        if train and masks is not None:
            h = h * masks[i - 1]
    return h @ params[f"W{L}"] + params[f"b{L}"][None, :], pre


def _plain_loss(params, state, X, y, reg, masks, config, train):
    s, _ = _plain_forward(params, state, X, masks, config, train)
    if config.loss == "softmax":
        data = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(s, axis=1), y[:, None], axis=1))
    else:
        correct = jnp.take_along_axis(s, y[:, None], axis=1)
        margins = jnp.maximum(0, s - correct + 1) * (
            1 - jax.nn.one_hot(y, s.shape[1], dtype=s.dtype)
        )
        data = jnp.sum(margins) / s.shape[0]
    wsq = sum(jnp.sum(v**2) for k, v in params.items() if k.startswith("W"))
    return data + 0.5 * reg * wsq


# ---------------------------------------------------------------- helpers
def _config(normalization=None, keep_prob=1.0, dtype="float64", loss="softmax", hidden=HIDDEN):
    return models.NetConfig(
        hidden_dims=hidden,
        input_dim=D,
        num_classes=C,
        normalization=normalization,
        dropout=keep_prob < 1,
        dtype=dtype,
        loss=loss,
    )


def _params(config, seed=0, scale=0.4):
    """Random params with non-trivial biases, gammas and betas (not the 0/1 init)."""
    params = models.init_params(jax.random.key(seed), config, scale)
    rng = np.random.default_rng(seed + 100)
    dtype = jnp.dtype(config.dtype)
    out = {}
    for k, v in params.items():
        if k.startswith("W"):
            out[k] = v
        elif k.startswith("gamma"):
            out[k] = jnp.asarray(1 + 0.3 * rng.standard_normal(v.shape), dtype)
        else:
            out[k] = jnp.asarray(0.1 * rng.standard_normal(v.shape), dtype)
    return out


def _state(config, seed=1):
    """Random non-zero running statistics (variances positive) so the momentum update is visible."""
    rng = np.random.default_rng(seed)
    dtype = jnp.dtype(config.dtype)
    st = models.init_state(config)
    return {
        k: jnp.asarray(
            0.5 + rng.random(v.shape) if "var" in k else rng.standard_normal(v.shape), dtype
        )
        for k, v in st.items()
    }


def _data(dtype=np.float64, seed=2, shape=(N, 3, 4)):
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.standard_normal(shape), dtype)
    y = jnp.asarray(rng.integers(0, C, N), jnp.int32)
    return X, y


def _masks(config, keep_prob, seed=3):
    keys = jax.random.split(jax.random.key(seed), len(config.hidden_dims))
    dtype = jnp.dtype(config.dtype)
    return tuple(
        layers.dropout_mask(k, keep_prob, (N, h), dtype)
        for k, h in zip(keys, config.hidden_dims, strict=True)
    )


def _assert_tree_rel(got, want, tol):
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape, k
        err = rel_error(got[k], want[k])
        assert err < tol, f"{k}: rel_error {err:.3e} >= {tol}"


# ---------------------------------------------------------------- 1. vs the plain-jnp model
@pytest.mark.parametrize(
    "normalization,keep_prob,reg",
    list(itertools.product([None, "batchnorm", "layernorm"], [1.0, 0.6], [0.0, 0.7])),
)
@pytest.mark.slow
def test_loss_and_grads_match_plain_model(x64, normalization, keep_prob, reg):
    config = _config(normalization, keep_prob)
    params, state = _params(config), _state(config)
    X, y = _data()
    hp = make_hparams(dtype=jnp.float64, reg=reg, keep_prob=keep_prob)
    masks = _masks(config, keep_prob) if keep_prob < 1 else None
    if masks is not None:  # the masks really drop units
        assert all(float(jnp.min(m)) == 0.0 for m in masks)

    grads, (new_state, scores) = jax.grad(models.loss_fn, has_aux=True)(
        params, state, X, y, hp, config=config, masks=masks
    )
    loss, _ = models.loss_fn(params, state, X, y, hp, config=config, masks=masks)
    plain = lambda p: _plain_loss(p, state, X, y, reg, masks, config, True)
    want_loss, want_grads = jax.value_and_grad(plain)(params)
    want_scores, _ = _plain_forward(params, state, X, masks, config, True)

    assert rel_error(loss, want_loss) < 1e-10
    assert rel_error(scores, want_scores) < 1e-10
    assert loss.dtype == jnp.float64
    if normalization == "batchnorm":
        # The bias before batchnorm has an exactly-zero gradient in exact arithmetic; both sides
        # leave round-off of ~1e-17, which cs231n's rel_error (floor 1e-8) cannot compare.
        for i in range(1, config.num_layers):
            for g in (grads[f"b{i}"], want_grads[f"b{i}"]):
                assert float(jnp.max(jnp.abs(g))) < 1e-13
            grads = {k: v for k, v in grads.items() if k != f"b{i}"}
            want_grads = {k: v for k, v in want_grads.items() if k != f"b{i}"}
    _assert_tree_rel(grads, want_grads, 1e-10)


@pytest.mark.slow
def test_label_smoothing_matches_plain_model(x64):
    config = _config("layernorm")
    params = _params(config)
    X, y = _data()
    hp = make_hparams(dtype=jnp.float64, reg=0.3, label_smoothing=0.2)

    def plain(p):
        s, _ = _plain_forward(p, {}, X, None, config, True)
        target = 0.8 * jax.nn.one_hot(y, C, dtype=s.dtype) + 0.2 / C
        data = -jnp.mean(jnp.sum(target * jax.nn.log_softmax(s, axis=1), axis=1))
        return data + 0.15 * sum(jnp.sum(v**2) for k, v in p.items() if k.startswith("W"))

    (loss, _), grads = jax.value_and_grad(models.loss_fn, has_aux=True)(
        params, {}, X, y, hp, config=config
    )
    want_loss, want_grads = jax.value_and_grad(plain)(params)
    assert rel_error(loss, want_loss) < 1e-10
    _assert_tree_rel(grads, want_grads, 1e-10)
    unsmoothed = models.loss_fn(params, {}, X, y, hp._replace(label_smoothing=0.0), config=config)
    assert float(loss) != float(unsmoothed[0])


def test_zero_label_smoothing_is_the_course_loss_bit_for_bit(monkeypatch):
    # float32, jitted value_and_grad through the whole net: hparams.label_smoothing = 0 gives the
    # same bits as the two-argument softmax_loss (the course's loss) that loss_fn called before.
    config = _config("batchnorm", dtype="float32")
    params, state = _params(config), _state(config)
    X, y = _data(np.float32)
    hp = make_hparams(reg=0.1)
    assert float(hp.label_smoothing) == 0.0

    def vg(hp):  # a fresh jit each call: it traces whatever softmax_loss is at the time
        fn = jax.jit(jax.value_and_grad(models.loss_fn, has_aux=True), static_argnames="config")
        return fn(params, state, X, y, hp, config=config)

    smoothed = vg(hp)
    course = losses.softmax_loss
    monkeypatch.setattr(losses, "softmax_loss", lambda s, y, ls=None: course(s, y))
    jax.tree.map(np.testing.assert_array_equal, smoothed, vg(hp))


def test_svm_refuses_a_concrete_label_smoothing():
    config = _config(loss="svm", dtype="float32")
    params = _params(config)
    X, y = _data(np.float32)
    models.loss_fn(params, {}, X, y, make_hparams(label_smoothing=0.0), config=config)
    with pytest.raises(ValueError, match="label_smoothing"):
        models.loss_fn(params, {}, X, y, make_hparams(label_smoothing=0.1), config=config)


@pytest.mark.parametrize("normalization", [None, "layernorm"])
def test_svm_loss_and_grads_match_plain_model(x64, normalization):
    config = _config(normalization, loss="svm")
    params = _params(config)
    X, y = _data()
    hp = make_hparams(dtype=jnp.float64, reg=0.3)
    grads, _ = jax.grad(models.loss_fn, has_aux=True)(params, {}, X, y, hp, config=config)
    loss, _ = models.loss_fn(params, {}, X, y, hp, config=config)
    want_loss, want_grads = jax.value_and_grad(
        lambda p: _plain_loss(p, {}, X, y, 0.3, None, config, True)
    )(params)
    assert float(want_loss) > 0.3  # some margins are active
    assert rel_error(loss, want_loss) < 1e-10
    _assert_tree_rel(grads, want_grads, 1e-10)


def test_key_masks_reproducible(x64):
    config = _config("layernorm", 0.6)
    params = _params(config)
    X, y = _data()
    hp = make_hparams(dtype=jnp.float64, keep_prob=0.6)
    loss = lambda k: float(models.loss_fn(params, {}, X, y, hp, config=config, key=k)[0])
    a, b = loss(jax.random.key(7)), loss(jax.random.key(7))
    other = loss(jax.random.key(8))
    ones = tuple(jnp.ones((N, h), jnp.float64) for h in HIDDEN)
    no_drop = float(models.loss_fn(params, {}, X, y, hp, config=config, masks=ones)[0])
    assert a == b
    assert a != other
    assert a != no_drop and other != no_drop  # dropout was applied


# ---------------------------------------------------------------- 2. vs the numpy reference
@pytest.mark.parametrize(
    "normalization,keep_prob",
    list(itertools.product([None, "batchnorm", "layernorm"], [1.0, 0.6])),
)
def test_matches_numpy_reference(x64, normalization, keep_prob):
    # Equal hidden widths: the reference net shares one dropout_param (so one injected mask) across
    # layers; fc_jax gets the same mask for each layer.
    hidden = (6, 6)
    reg = 0.7
    np.random.seed(231)
    ref = FullyConnectedNet(
        list(hidden),
        input_dim=D,
        num_classes=C,
        dropout_keep_ratio=keep_prob,
        normalization=normalization,
        reg=reg,
        weight_scale=0.4,
        dtype=np.float64,
    )
    config = _config(normalization, keep_prob, hidden=hidden)
    params = {k: jnp.asarray(v) for k, v in ref.params.items()}
    assert set(params) == set(models.init_params(jax.random.key(0), config))
    state = models.init_state(config)  # zeros, like the reference's default running stats
    X, y = _data()
    X_np, y_np = np.array(X), np.array(y)
    masks = None
    if keep_prob < 1:
        m = np.array(layers.dropout_mask(jax.random.key(5), keep_prob, (N, 6), jnp.float64))
        assert m.min() == 0.0 and m.max() == pytest.approx(1 / keep_prob)
        ref.dropout_param["mask"] = m
        masks = (jnp.asarray(m), jnp.asarray(m))
    hp = make_hparams(dtype=jnp.float64, reg=reg, keep_prob=keep_prob)

    want_loss, want_grads = ref.loss(X_np, y_np)
    grads, (new_state, _) = jax.grad(models.loss_fn, has_aux=True)(
        params, state, X, y, hp, config=config, masks=masks
    )
    loss, _ = models.loss_fn(params, state, X, y, hp, config=config, masks=masks)
    assert rel_error(loss, want_loss) < 1e-8
    if normalization == "batchnorm":  # analytically zero: compare absolutely
        for i in (1, 2):
            assert np.max(np.abs(grads.pop(f"b{i}"))) < 1e-13
            assert np.max(np.abs(want_grads.pop(f"b{i}"))) < 1e-13
    _assert_tree_rel(grads, want_grads, 1e-8)

    if normalization == "batchnorm":  # running statistics after one train step
        for i, bn in enumerate(ref.bn_params, start=1):
            assert rel_error(new_state[f"running_mean{i}"], bn["running_mean"]) < 1e-8
            assert rel_error(new_state[f"running_var{i}"], bn["running_var"]) < 1e-8
    # test mode: running statistics, no dropout
    got_scores = models.scores(params, new_state, X, config=config)
    assert rel_error(got_scores, ref.loss(X_np)) < 1e-8


# ---------------------------------------------------------------- 3. batchnorm state
def test_batchnorm_running_stats_update(x64):
    config = _config("batchnorm", 0.6)
    params, state = _params(config), _state(config)
    X, y = _data()
    masks = _masks(config, 0.6)
    hp = make_hparams(dtype=jnp.float64, keep_prob=0.6)
    _, (new_state, _) = models.loss_fn(params, state, X, y, hp, config=config, masks=masks)
    _, pre = _plain_forward(params, state, X, masks, config, True)
    assert set(new_state) == set(state)
    for i, a in enumerate(pre, start=1):
        a = np.asarray(a)
        mean, var = a.mean(axis=0), a.var(axis=0)  # numpy's var is biased (ddof=0)
        old_m, old_v = np.asarray(state[f"running_mean{i}"]), np.asarray(state[f"running_var{i}"])
        assert rel_error(new_state[f"running_mean{i}"], 0.9 * old_m + 0.1 * mean) < 1e-12
        assert rel_error(new_state[f"running_var{i}"], 0.9 * old_v + 0.1 * var) < 1e-12
        assert rel_error(new_state[f"running_mean{i}"], old_m) > 1e-3  # it did move
    # the input state was not mutated
    assert all(np.array_equal(state[k], _state(config)[k]) for k in state)


def test_batchnorm_test_mode_uses_running_stats(x64):
    config = _config("batchnorm", 0.6)
    params, state = _params(config), _state(config)
    X, y = _data()
    hp = make_hparams(dtype=jnp.float64, keep_prob=0.6)
    want, _ = _plain_forward(params, state, X, None, config, False)
    got = models.scores(params, state, X, config=config)
    assert rel_error(got, want) < 1e-12
    # test mode differs from train mode (batch statistics)
    train_scores = models.loss_fn(params, state, X, y, hp, config=config, masks=_masks(config, 0.6))
    assert rel_error(train_scores[1][1], want) > 1e-3
    loss, (new_state, s) = models.loss_fn(params, state, X, y, hp, config=config, train=False)
    assert rel_error(s, want) < 1e-12
    assert set(new_state) == set(state)
    for k in state:
        assert np.array_equal(new_state[k], state[k])
    pred = models.predict(params, state, X, config=config)
    assert pred.dtype == jnp.int32
    np.testing.assert_array_equal(pred, np.argmax(np.asarray(want), axis=1))


@pytest.mark.parametrize("normalization", [None, "layernorm"])
def test_no_state_without_batchnorm(x64, normalization):
    config = _config(normalization)
    assert models.init_state(config) == {}
    X, y = _data()
    hp = make_hparams(dtype=jnp.float64)
    _, (new_state, _) = models.loss_fn(_params(config), {}, X, y, hp, config=config)
    assert new_state == {}


# ---------------------------------------------------------------- 4. parameter count
def test_param_count_pinned():
    base = dict(hidden_dims=(100, 100, 100, 100), input_dim=3072, num_classes=10)
    # 307,300 (layer 1) + 3 * 10,100 (layers 2-4) + 1,010 (output layer)
    plain_count = 3072 * 100 + 100 + 3 * (100 * 100 + 100) + 100 * 10 + 10
    assert plain_count == 338_610
    cases = [
        (models.NetConfig(**base), 338_610),
        (models.NetConfig(**base, normalization="batchnorm"), 338_610 + 2 * 400),
        (models.NetConfig(**base, normalization="layernorm"), 339_410),
        (models.NetConfig(**base, dropout=True), 338_610),  # dropout adds nothing
        (
            models.NetConfig(hidden_dims=(7, 6), input_dim=12, num_classes=4),
            12 * 7 + 7 + 7 * 6 + 6 + 6 * 4 + 4,
        ),
    ]
    for config, want in cases:
        assert models.param_count(config) == want
        shapes = jax.eval_shape(lambda k, c=config: models.init_params(k, c), jax.random.key(0))
        assert sum(int(np.prod(s.shape)) for s in shapes.values()) == want


# ---------------------------------------------------------------- 5. init_params
@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
def test_init_params_shapes_and_values_float32(normalization):
    config = _config(normalization, dtype="float32")
    params = models.init_params(jax.random.key(0), config, 1e-2)
    dims = (D, *HIDDEN, C)
    want_keys = {f"{n}{i}" for i in (1, 2, 3) for n in ("W", "b")}
    if normalization:
        want_keys |= {f"{n}{i}" for i in (1, 2) for n in ("gamma", "beta")}
    assert set(params) == want_keys
    for i in (1, 2, 3):
        assert params[f"W{i}"].shape == (dims[i - 1], dims[i])
        assert params[f"b{i}"].shape == (dims[i],)
        np.testing.assert_array_equal(params[f"b{i}"], 0)
    if normalization:
        for i in (1, 2):
            assert params[f"gamma{i}"].shape == params[f"beta{i}"].shape == (dims[i],)
            np.testing.assert_array_equal(params[f"gamma{i}"], 1)
            np.testing.assert_array_equal(params[f"beta{i}"], 0)
    assert all(v.dtype == jnp.float32 for v in params.values())


def test_init_params_float64(x64):
    config = _config("batchnorm", dtype="float64")
    params = models.init_params(jax.random.key(0), config)
    assert all(v.dtype == jnp.float64 for v in params.values())
    assert all(v.dtype == jnp.float64 for v in models.init_state(config).values())


@pytest.mark.parametrize("scale", [1e-2, 0.5])
def test_init_weight_std(scale):
    config = models.NetConfig(hidden_dims=(300,), input_dim=400, num_classes=10)
    params = models.init_params(jax.random.key(1), config, scale)
    w = np.asarray(params["W1"], np.float64)  # 120,000 draws: std within ~1%
    assert abs(w.std() / scale - 1) < 0.02
    assert abs(w.mean()) < 0.02 * scale


def test_init_params_keys():
    config = _config("layernorm", dtype="float32")
    a = models.init_params(jax.random.key(3), config)
    b = models.init_params(jax.random.key(3), config)
    c = models.init_params(jax.random.key(4), config)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    for i in (1, 2, 3):
        assert not np.allclose(a[f"W{i}"], c[f"W{i}"])
    # layers draw from different keys
    assert not np.allclose(a["W1"][:6, :6].ravel(), a["W2"][:6, :6].ravel())


def test_init_params_vmap_over_weight_scale():
    config = _config(dtype="float32")
    scales = jnp.asarray([1e-3, 1e-2, 1.0], jnp.float32)
    stacked = jax.vmap(lambda s: models.init_params(jax.random.key(0), config, s))(scales)
    assert stacked["W1"].shape == (3, D, HIDDEN[0])
    assert stacked["b2"].shape == (3, HIDDEN[1])
    single = models.init_params(jax.random.key(0), config, 1.0)
    for j, s in enumerate(np.asarray(scales)):
        for i in (1, 2, 3):
            w = np.asarray(stacked[f"W{i}"][j])
            np.testing.assert_allclose(w, s * np.asarray(single[f"W{i}"]), rtol=1e-6)
    stds = [float(jnp.std(stacked["W1"][j])) for j in range(3)]
    np.testing.assert_allclose(np.array(stds) / stds[2], np.asarray(scales), rtol=1e-5)


# ---------------------------------------------------------------- 6. errors
def test_wrong_feature_size_names_X():
    config = _config(dtype="float32")
    params = models.init_params(jax.random.key(0), config)
    X, y = _data(np.float32, shape=(N, 11))
    hp = make_hparams()
    with pytest.raises(ValueError, match=rf"X.*\(N, {D}\)"):
        models.loss_fn(params, {}, X, y, hp, config=config)
    with pytest.raises(ValueError, match=r"X"):
        models.scores(params, {}, jnp.ones((D,), jnp.float32), config=config)  # no batch axis


def test_dropout_without_key_raises():
    config = _config(keep_prob=0.5, dtype="float32")
    params = models.init_params(jax.random.key(0), config)
    X, y = _data(np.float32)
    hp = make_hparams(keep_prob=0.5)
    with pytest.raises(ValueError, match="key"):
        models.loss_fn(params, {}, X, y, hp, config=config)
    # test mode needs no key
    models.loss_fn(params, {}, X, y, hp, config=config, train=False)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(hidden_dims=(7, -1)), "hidden_dims"),
        (dict(hidden_dims=(0,)), "hidden_dims"),
        (dict(normalization="groupnorm"), "normalization"),
        (dict(dropout=0.5), "dropout"),
        (dict(dropout="yes"), "dropout"),
        (dict(dtype="int8"), "dtype"),
        (dict(loss="hinge"), "loss"),
        (dict(input_dim=0), "input_dim"),
        (dict(num_classes=-3), "num_classes"),
        (dict(compute_dtype="float16"), "compute_dtype"),
        (dict(compute_dtype="bf16"), "compute_dtype"),
        (dict(dtype="float64", compute_dtype="bfloat16"), "compute_dtype"),
    ],
)
def test_bad_config_raises_naming_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        models.NetConfig(**kwargs)


@pytest.mark.parametrize("bad", [C, -1])
def test_labels_out_of_range_raise(bad):
    config = _config(dtype="float32")
    params = models.init_params(jax.random.key(0), config)
    X, y = _data(np.float32)
    y = y.at[2].set(bad)
    with pytest.raises(ValueError, match="labels"):
        models.loss_fn(params, {}, X, y, make_hparams(), config=config)


# ---------------------------------------------------------------- 7. composition
@pytest.mark.slow
@pytest.mark.parametrize("normalization", [None, "batchnorm"])
def test_jit_value_and_grad_equals_eager_and_reg_does_not_retrace(x64, normalization):
    config = _config(normalization, 0.6)
    params, state = _params(config), _state(config)
    X, y = _data()
    key = jax.random.key(11)
    traces = 0

    def counted(*args, **kwargs):
        nonlocal traces
        traces += 1
        return models.loss_fn(*args, **kwargs)

    vg = jax.value_and_grad(counted, has_aux=True)
    jitted = jax.jit(vg, static_argnames=("config", "train"))
    for reg in (0.0, 0.7, 0.05):
        hp = make_hparams(dtype=jnp.float64, reg=reg, keep_prob=0.6)
        (lj, (sj, scj)), gj = jitted(params, state, X, y, hp, config=config, key=key)
        (le, (se, sce)), ge = vg(params, state, X, y, hp, config=config, key=key)
        assert rel_error(lj, le) < 1e-12
        assert rel_error(scj, sce) < 1e-12
        for k in ge:
            np.testing.assert_allclose(gj[k], ge[k], rtol=1e-10, atol=1e-14)
        for k in se:
            assert rel_error(sj[k], se[k]) < 1e-12
    assert traces == 1 + 3  # one jit trace; three eager calls


# ---------------------------------------------------------------- 8. dtypes
@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.slow
def test_float32_in_float32_out(normalization):
    config = _config(normalization, 0.6, dtype="float32")
    params = models.init_params(jax.random.key(0), config, 0.1)
    state = models.init_state(config)
    X, y = _data(np.float32)
    hp = make_hparams(keep_prob=0.6, reg=0.1)
    (loss, (new_state, s)), grads = jax.value_and_grad(models.loss_fn, has_aux=True)(
        params, state, X, y, hp, config=config, key=jax.random.key(1)
    )
    assert loss.dtype == s.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in grads.values())
    assert all(v.dtype == jnp.float32 for v in new_state.values())
    assert np.isfinite(float(loss))


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
def test_float64_in_float64_out(x64, normalization):
    config = _config(normalization, 0.6, dtype="float64")
    params = models.init_params(jax.random.key(0), config, 0.1)
    state = models.init_state(config)
    X, y = _data(np.float64)
    hp = make_hparams(dtype=jnp.float32, keep_prob=0.6, reg=0.1)  # float32 hparams are fine
    (loss, (new_state, s)), grads = jax.value_and_grad(models.loss_fn, has_aux=True)(
        params, state, X, y, hp, config=config, key=jax.random.key(1)
    )
    assert loss.dtype == s.dtype == jnp.float64
    assert all(g.dtype == jnp.float64 for g in grads.values())
    assert all(v.dtype == jnp.float64 for v in new_state.values())


@pytest.mark.slow
def test_dropout_structure_with_keep_prob_one_is_the_net_without_dropout():
    """Structure in the config, value in HParams: keep_prob 1.0 keeps every unit, bit for bit."""
    cd = models.NetConfig(hidden_dims=(7, 6), input_dim=12, num_classes=4, dropout=True)
    cn = models.NetConfig(hidden_dims=(7, 6), input_dim=12, num_classes=4)
    pd = models.init_params(jax.random.key(0), cd)
    X, y = jax.random.normal(jax.random.key(2), (5, 12)), jnp.arange(5, dtype=jnp.int32) % 4
    grad = jax.value_and_grad(
        lambda p, c, hp, k: models.loss_fn(p, {}, X, y, hp, config=c, key=k)[0]
    )
    one = make_hparams(keep_prob=1.0)
    l_d, g_d = grad(pd, cd, one, jax.random.key(1))
    l_n, g_n = grad(pd, cn, one, None)
    assert l_d == l_n
    assert all(np.array_equal(g_d[k], g_n[k]) for k in g_n)
    l_half = grad(pd, cd, make_hparams(keep_prob=0.5), jax.random.key(1))[0]
    assert l_half != l_d  # and keep_prob < 1 really drops units


def test_missing_batchnorm_state_and_disabled_float64_are_clear_errors():
    cb = models.NetConfig(hidden_dims=(7,), input_dim=12, num_classes=4, normalization="batchnorm")
    pb = models.init_params(jax.random.key(0), cb)
    with pytest.raises(ValueError, match="init_state"):
        models.loss_fn(
            pb, {}, jnp.ones((5, 12)), jnp.zeros(5, jnp.int32), make_hparams(), config=cb
        )
    with pytest.raises(ValueError, match="enable_x64"):
        models.init_params(jax.random.key(0), models.NetConfig(hidden_dims=(3,), dtype="float64"))
    with pytest.raises(ValueError, match="hidden_dims"):
        models.NetConfig(hidden_dims=(True,))
    with pytest.raises(ValueError, match="dropout"):
        models.NetConfig(dropout="0.5")


# ---------------------------------------------------------------- 9. the bfloat16 policy
def _eqns(jaxpr):
    """Every equation of a jaxpr, nested ones (custom VJPs, pjit, scan bodies) included."""
    for e in jaxpr.eqns:
        yield e
        for v in e.params.values():
            for sub in v if isinstance(v, tuple | list) else (v,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _eqns(inner)


def test_compute_dtype_float32_is_the_default_config():
    for cd in (None, "float32"):
        c = models.NetConfig(compute_dtype=cd)
        assert c == models.NetConfig() and hash(c) == hash(models.NetConfig())
        assert c.compute_dtype is None
    assert models.NetConfig(dtype="float64", compute_dtype="float64").compute_dtype is None


@pytest.mark.parametrize("cd", [None, "bfloat16"])
def test_policy_in_the_jaxpr(cd):
    # Default: no bfloat16 anywhere (no convert, no dot), so the float32 path is today's program.
    # bfloat16: every product (3 per layer: forward, dx, dw) is bf16 x bf16 -> float32, and each
    # layer casts 3 arrays (x and w in the forward, dout in the backward): once per step.
    config = models.NetConfig(
        (7, 6), input_dim=D, num_classes=C, normalization="batchnorm", compute_dtype=cd
    )
    params, state = models.init_params(jax.random.key(0), config), models.init_state(config)
    X, y = _data(np.float32)
    grad = jax.value_and_grad(models.loss_fn, has_aux=True)
    jaxpr = jax.make_jaxpr(lambda p: grad(p, state, X, y, make_hparams(), config=config))(params)
    eqns = list(_eqns(jaxpr.jaxpr))
    dots = [
        (*(str(v.aval.dtype) for v in e.invars), str(e.outvars[0].aval.dtype))
        for e in eqns
        if e.primitive.name == "dot_general"
    ]
    to_bf16 = [e for e in eqns if "bfloat16" in str(e.params.get("new_dtype"))]
    assert len(dots) == 3 * config.num_layers
    if cd is None:
        assert "bf16" not in str(jaxpr) and not to_bf16
        assert set(dots) == {("float32", "float32", "float32")}
    else:
        assert set(dots) == {("bfloat16", "bfloat16", "float32")}
        assert len(to_bf16) == 3 * config.num_layers


def _away_from_kinks(params, X, config):
    """`params` with each hidden layer's shift (its bias, or its beta under a norm) chosen per unit
    so that no pre-ReLU value of the float64 forward on X lies near zero; and that smallest |value|.

    A bfloat16 forward moves a pre-activation by about 1e-2 here: within that of zero, its unit's
    ReLU gradient can flip, which no backward can help (a property of any bfloat16 forward).
    """
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    h, margin = np.asarray(X, np.float64).reshape(X.shape[0], -1), np.inf
    grid = np.linspace(-1, 1, 401)
    for i in range(1, config.num_layers):
        a = h @ p[f"W{i}"] + (0 if config.normalization is None else p[f"b{i}"][None, :])
        if config.normalization is not None:  # gamma * x_hat, the shift is beta
            axis = 0 if config.normalization == "batchnorm" else 1
            xc = a - a.mean(axis=axis, keepdims=True)
            a = p[f"gamma{i}"] * xc / np.sqrt((xc**2).mean(axis=axis, keepdims=True) + EPS)
        gaps = np.abs(a[:, :, None] + grid[None, None, :]).min(axis=0)  # (H, grid)
        shift = grid[np.argmax(gaps, axis=1)]
        p[f"beta{i}" if config.normalization else f"b{i}"] = shift
        margin = min(margin, gaps.max(axis=1).min())
        h = np.maximum(a + shift[None, :], 0)
    return {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}, margin


@pytest.mark.slow
@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
def test_bfloat16_loss_and_grads_match_float32(normalization):
    # The whole net through the hand-written backward: loss within 1e-3, the gradient (all params
    # as one vector) within the layers' 1e-2 (tests/test_layers.py BF16_TOL); batchnorm's running
    # statistics within 1e-2. Measured: 4e-3 to 7e-3 for the gradient. The shifts keep every
    # pre-ReLU value away from zero (`_away_from_kinks`): with random ones, units whose
    # pre-activation rounds across zero flip, and on nets this small the gradient then moved by
    # 0.3-9% (a smooth activation in their place: 0.1-0.5%).
    f32 = models.NetConfig((16, 12), input_dim=20, num_classes=5, normalization=normalization)
    bf16 = dataclasses.replace(f32, compute_dtype="bfloat16")
    r = np.random.default_rng(4)
    X = jnp.asarray(r.standard_normal((32, 20)), jnp.float32)
    y = jnp.asarray(r.integers(0, 5, 32), jnp.int32)
    params, margin = _away_from_kinks(models.init_params(jax.random.key(0), f32, 0.3), X, f32)
    assert margin > 0.05  # the premise: every pre-ReLU value is far from zero
    state = models.init_state(f32)
    hp = make_hparams(reg=0.1)
    grad = jax.value_and_grad(models.loss_fn, has_aux=True)
    (l32, (s32, _)), g32 = grad(params, state, X, y, hp, config=f32)
    (lbf, (sbf, scores)), gbf = grad(params, state, X, y, hp, config=bf16)
    assert lbf.dtype == scores.dtype == jnp.float32
    assert all(v.dtype == jnp.float32 for v in [*gbf.values(), *sbf.values()])
    assert abs(float(lbf) - float(l32)) < 1e-3 * abs(float(l32))
    flat = lambda g: np.concatenate([np.ravel(g[k]) for k in sorted(g)])  # noqa: E731
    assert 0 < _nrel(flat(gbf), flat(g32)) < 1e-2
    for k in s32:
        assert _nrel(sbf[k], s32[k]) < 1e-2, k


def _nrel(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


class _Device(NamedTuple):  # what fast_bfloat16 reads of a jax.Device
    platform: str
    device_kind: str = "fake"
    compute_capability: str | None = None


_ZEN2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx avx2 fma\n"
_SPR = "model name\t: Intel Xeon Platinum 8480+\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16\n"


def test_fast_bfloat16_and_the_notice():
    cpu = _Device("cpu")
    assert not precision.fast_bfloat16(cpu, _ZEN2)
    assert precision.fast_bfloat16(cpu, _SPR)
    assert not precision.fast_bfloat16(cpu, "")  # no flags to read (e.g. not Linux): not fast
    assert precision.fast_bfloat16(_Device("tpu"))
    assert precision.fast_bfloat16(_Device("gpu", compute_capability="9.0"))
    assert not precision.fast_bfloat16(_Device("gpu", compute_capability="7.0"))
    bf16 = models.NetConfig(compute_dtype="bfloat16")
    line = precision.precision_notice(bf16, [cpu], _ZEN2)
    assert line.startswith("note: --precision bf16 may be slower than float32 on this CPU")
    assert "AMD EPYC 7B12" in line and "\n" not in line
    assert precision.precision_notice(bf16, [cpu], _SPR) is None
    assert precision.precision_notice(models.NetConfig(), [cpu], _ZEN2) is None
    assert precision.precision_notice(bf16, [_Device("tpu")], _ZEN2) is None
    v100 = _Device("gpu", "Tesla V100", "7.0")
    assert "Tesla V100" in precision.precision_notice(bf16, [v100])

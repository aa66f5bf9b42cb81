"""Every layer, in float64, five ways: reference forward, reference backward, autodiff of the
forward rule, central differences, and composition (jit, vmap, grad-of-jit, scan)."""

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fc_jax import gradcheck, layers, normalization
from fc_jax.reference import gradient_check
from fc_jax.reference import layers as ref
from tests.helpers import rel_error


def _tuple(g):
    return g if isinstance(g, tuple) else (g,)


@dataclass(frozen=True)
class Case:
    make: Callable  # rng -> tuple of float64 numpy args
    fn: Callable  # the custom_vjp layer
    plain: Callable  # the same math in plain jnp (autodiff oracle)
    fwd: Callable  # X_forward
    bwd: Callable  # X_backward
    ref_fwd: Callable  # numpy reference forward -> (out, cache)
    ref_bwd: Callable  # numpy reference backward -> grads
    diff: tuple  # indices of differentiable args


def _mask(rng, shape, p=0.6):
    return ((rng.random(shape) < p) / p).astype(np.float64)


def _transpose_dw(grads):
    dx, dw, db = grads
    return dx, dw.T, db


def _plain_norm(x, g, b, axis, eps=1e-5):
    mu = x.mean(axis=axis, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axis, keepdims=True)
    return g[None, :] * (x - mu) / jnp.sqrt(var + eps) + b[None, :]


CASES = {
    "affine": Case(
        make=lambda r: (
            r.standard_normal((4, 2, 3)),
            r.standard_normal((6, 5)),
            r.standard_normal(5),
        ),
        fn=layers.affine,
        plain=lambda x, w, b: x.reshape(x.shape[0], -1) @ w + b[None, :],
        fwd=layers.affine_forward,
        bwd=layers.affine_backward,
        ref_fwd=ref.affine_forward,
        ref_bwd=ref.affine_backward,
        diff=(0, 1, 2),
    ),
    "affine_t": Case(  # the engine's transposed-weight input layer
        make=lambda r: (
            r.standard_normal((4, 2, 3)),
            r.standard_normal((5, 6)),
            r.standard_normal(5),
        ),
        fn=layers.affine_t,
        plain=lambda x, wt, b: x.reshape(x.shape[0], -1) @ wt.T + b[None, :],
        fwd=layers.affine_t_forward,
        bwd=layers.affine_t_backward,
        ref_fwd=lambda x, wt, b: ref.affine_forward(x, wt.T, b),
        ref_bwd=lambda dout, cache: _transpose_dw(ref.affine_backward(dout, cache)),
        diff=(0, 1, 2),
    ),
    "relu": Case(
        make=lambda r: (r.standard_normal((5, 7)),),
        fn=layers.relu,
        plain=lambda x: jnp.maximum(x, 0),
        fwd=layers.relu_forward,
        bwd=layers.relu_backward,
        ref_fwd=ref.relu_forward,
        ref_bwd=ref.relu_backward,
        diff=(0,),
    ),
    "affine_relu": Case(
        make=lambda r: (r.standard_normal((4, 6)), r.standard_normal((6, 5)), r.standard_normal(5)),
        fn=layers.affine_relu,
        plain=lambda x, w, b: jnp.maximum(x @ w + b[None, :], 0),
        fwd=layers.affine_relu_forward,
        bwd=layers.affine_relu_backward,
        ref_fwd=ref.affine_relu_forward,
        ref_bwd=ref.affine_relu_backward,
        diff=(0, 1, 2),
    ),
    "dropout": Case(
        make=lambda r: (r.standard_normal((6, 8)), _mask(r, (6, 8))),
        fn=layers.dropout,
        plain=lambda x, m: x * m,
        fwd=layers.dropout_forward,
        bwd=layers.dropout_backward,
        ref_fwd=lambda x, m: ref.dropout_forward(x, {"mode": "train", "p": 0.6, "mask": m}),
        ref_bwd=ref.dropout_backward,
        diff=(0,),
    ),
    "batchnorm": Case(
        make=lambda r: (
            3 * r.standard_normal((8, 5)) + 2,
            r.standard_normal(5),
            r.standard_normal(5),
        ),
        fn=normalization.batchnorm,
        plain=lambda x, g, b: _plain_norm(x, g, b, axis=0),
        fwd=normalization.batchnorm_forward,
        bwd=normalization.batchnorm_backward,
        ref_fwd=lambda x, g, b: ref.batchnorm_forward(x, g, b, {"mode": "train"}),
        ref_bwd=ref.batchnorm_backward,
        diff=(0, 1, 2),
    ),
    "layernorm": Case(
        make=lambda r: (
            3 * r.standard_normal((4, 6)) - 1,
            r.standard_normal(6),
            r.standard_normal(6),
        ),
        fn=normalization.layernorm,
        plain=lambda x, g, b: _plain_norm(x, g, b, axis=1),
        fwd=normalization.layernorm_forward,
        bwd=normalization.layernorm_backward,
        ref_fwd=lambda x, g, b: ref.layernorm_forward(x, g, b, {}),
        ref_bwd=ref.layernorm_backward,
        diff=(0, 1, 2),
    ),
}
NAMES = sorted(CASES)


@pytest.fixture(params=NAMES)
def case(request, x64):
    c = CASES[request.param]
    rng = np.random.default_rng(sum(map(ord, request.param)))
    args = c.make(rng)
    out_shape = np.shape(c.plain(*args))
    return c, args, rng.standard_normal(out_shape)


def test_forward_matches_reference(case):
    c, args, _ = case
    out, _ = c.fwd(*map(jnp.asarray, args))
    ref_out, _ = c.ref_fwd(*args)
    assert out.dtype == jnp.float64
    assert rel_error(out, ref_out) < 1e-12


def test_backward_matches_reference(case):
    c, args, dout = case
    _, cache = c.fwd(*map(jnp.asarray, args))
    grads = _tuple(c.bwd(jnp.asarray(dout), cache))
    _, ref_cache = c.ref_fwd(*args)
    ref_grads = _tuple(c.ref_bwd(dout, ref_cache))
    assert len(grads) == len(ref_grads) == len(c.diff)
    for g, rg in zip(grads, ref_grads):
        assert g.shape == rg.shape
        assert rel_error(g, rg) < 1e-10


@pytest.mark.slow
def test_backward_matches_autodiff_of_forward_rule(case):
    """The hand-written backward equals jax.vjp of the (plain jnp) forward rule and of a plain forward."""
    c, args, dout = case
    jargs = tuple(map(jnp.asarray, args))
    _, cache = c.fwd(*jargs)
    grads = _tuple(c.bwd(jnp.asarray(dout), cache))
    _, vjp = jax.vjp(lambda *a: c.fwd(*a)[0], *jargs)
    auto = vjp(jnp.asarray(dout))
    for g, i in zip(grads, c.diff):
        assert rel_error(g, auto[i]) < 1e-10
    errs = gradcheck.check_vjp(c.fn, c.plain, jargs, argnums=c.diff)
    assert max(errs) < 1e-10


def test_central_differences(case):
    c, args, dout = case
    _, cache = c.fwd(*map(jnp.asarray, args))
    grads = _tuple(c.bwd(jnp.asarray(dout), cache))
    for g, i in zip(grads, c.diff):
        arr = np.array(args[i])

        def f(a, i=i):
            new = list(args)
            new[i] = a
            return np.asarray(c.fn(*map(jnp.asarray, new)))

        num = gradient_check.eval_numerical_gradient_array(f, arr, dout)
        assert rel_error(g, num) < 1e-7, f"arg {i}"
    diff_fn = lambda *d: c.fn(
        *[d[c.diff.index(j)] if j in c.diff else jnp.asarray(a) for j, a in enumerate(args)]
    )
    check_grads(diff_fn, tuple(jnp.asarray(args[i]) for i in c.diff), order=1, modes=["rev"])


@pytest.mark.slow
def test_composition(case):
    """jit, vmap over a leading trial axis, grad of jit, and inside lax.scan agree with eager."""
    c, args, dout = case
    jargs = tuple(map(jnp.asarray, args))
    dout = jnp.asarray(dout)
    loss = lambda *a: jnp.sum(c.fn(*a) * dout)
    eager = jax.grad(loss, argnums=c.diff)(*jargs)
    np.testing.assert_allclose(jax.jit(c.fn)(*jargs), c.fn(*jargs), rtol=1e-12)
    for g, e in zip(jax.grad(jax.jit(loss), argnums=c.diff)(*jargs), eager):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)
    for g, e in zip(jax.jit(jax.grad(loss, argnums=c.diff))(*jargs), eager):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)
    # vmap over 3 trials: trial t scales every input by (1 + t / 10).
    stacked = tuple(jnp.stack([a * s for s in (1.0, 1.1, 1.2)]) for a in jargs)
    vg = jax.vmap(jax.grad(loss, argnums=c.diff))(*stacked)
    for t in range(3):
        single = jax.grad(loss, argnums=c.diff)(*(s[t] for s in stacked))
        for g, e in zip(vg, single):
            np.testing.assert_allclose(g[t], e, rtol=1e-12, atol=1e-14)

    def body(carry, _):
        return carry, jax.grad(loss, argnums=c.diff)(*jargs)

    _, scanned = jax.lax.scan(body, 0.0, None, length=2)
    for g, e in zip(scanned, eager):
        np.testing.assert_allclose(g[1], e, rtol=1e-12, atol=1e-14)


def test_batchnorm_alt_backward_equals_step_by_step(x64):
    rng = np.random.default_rng(1)
    x, g, b = (
        jnp.asarray(a)
        for a in (
            5 * rng.standard_normal((16, 7)) + 3,
            rng.standard_normal(7),
            rng.standard_normal(7),
        )
    )
    dout = jnp.asarray(rng.standard_normal((16, 7)))
    _, cache = normalization.batchnorm_forward(x, g, b)
    for a, alt in zip(
        normalization.batchnorm_backward(dout, cache),
        normalization.batchnorm_backward_alt(dout, cache),
    ):
        assert rel_error(a, alt) < 1e-10


def test_batchnorm_running_stats_follow_course(x64):
    rng = np.random.default_rng(2)
    d = 4
    rm, rv = jnp.zeros(d), jnp.zeros(d)
    bn_param = {"mode": "train"}
    for _ in range(5):
        x = rng.standard_normal((10, d)) * 2 + 1
        rm, rv = normalization.batchnorm_update_running(rm, rv, jnp.asarray(x))
        ref.batchnorm_forward(x, np.ones(d), np.zeros(d), bn_param)
    assert rel_error(rm, bn_param["running_mean"]) < 1e-12
    assert rel_error(rv, bn_param["running_var"]) < 1e-12
    x = rng.standard_normal((6, d))
    out = normalization.batchnorm_inference(jnp.asarray(x), jnp.ones(d), jnp.zeros(d), rm, rv)
    ref_out, _ = ref.batchnorm_forward(x, np.ones(d), np.zeros(d), {**bn_param, "mode": "test"})
    assert rel_error(out, ref_out) < 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_dtype_is_kept_float32(name):
    c = CASES[name]
    args = tuple(jnp.asarray(a, jnp.float32) for a in c.make(np.random.default_rng(0)))
    assert not jax.config.jax_enable_x64
    out = c.fn(*args)
    assert out.dtype == jnp.float32
    grads = jax.grad(lambda *a: jnp.sum(c.fn(*a)), argnums=c.diff)(*args)
    assert all(g.dtype == jnp.float32 for g in grads)


def test_dtype_is_kept_float64(x64):
    x = jnp.ones((2, 3), jnp.float64)
    assert layers.relu(x).dtype == jnp.float64
    mask = layers.dropout_mask(jax.random.key(0), 0.5, (2, 3), jnp.float64)
    assert layers.dropout(x, mask).dtype == jnp.float64


def test_dropout_mask_statistics():
    for p in (0.25, 0.4, 0.7, 1.0):
        m = np.asarray(layers.dropout_mask(jax.random.key(3), p, (500, 400)))
        assert set(np.unique(m)) <= {0.0, np.float32(1 / p)}
        assert abs((m == 0).mean() - (1 - p)) < 0.01
        assert abs(m.mean() - 1.0) < 0.02  # inverted dropout keeps the expectation


def test_bad_inputs_name_the_argument():
    x, w, b = jnp.ones((4, 6)), jnp.ones((5, 3)), jnp.ones(3)
    with pytest.raises(ValueError, match="w of shape"):
        layers.affine(x, w, b)
    with pytest.raises(ValueError, match="b must have shape"):
        layers.affine(x, jnp.ones((6, 3)), jnp.ones(4))
    with pytest.raises(ValueError, match="gamma"):
        normalization.batchnorm(x, jnp.ones(5), jnp.ones(6))
    with pytest.raises(ValueError, match="beta"):
        normalization.layernorm(x, jnp.ones(6), jnp.ones(2))
    for p in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="keep_prob"):
            layers.dropout_mask(jax.random.key(0), p, (2, 2))
    with pytest.raises(ValueError, match="mask"):
        layers.dropout(x, jnp.ones((4, 5)))


@pytest.mark.parametrize("fn", [layers.affine, layers.affine_relu])
def test_transposed_weight_is_the_same_layer(fn, x64):
    # The engine's storage of W1: same values, and the gradient comes back in the stored layout.
    r = np.random.default_rng(0)
    x, w, b = r.normal(size=(5, 2, 3)), r.normal(size=(6, 4)), r.normal(size=4)
    g = r.normal(size=(5, 4))
    out, vjp = jax.vjp(fn, x, w, b)
    out_t, vjp_t = jax.vjp(fn, x, layers.TransposedWeight(w.T), b)
    np.testing.assert_allclose(out_t, out, rtol=1e-14)
    (dx, dw, db), (dx_t, dw_t, db_t) = vjp(g), vjp_t(g)
    assert isinstance(dw_t, layers.TransposedWeight) and dw_t.t.shape == (4, 6)
    np.testing.assert_allclose(dw_t.t.T, dw, rtol=1e-13)
    np.testing.assert_allclose(dx_t, dx, rtol=1e-13)
    np.testing.assert_allclose(db_t, db, rtol=1e-13)


# ---------------------------------------------------------------- the bfloat16 policy
# Tolerance: bfloat16 keeps 8 significant bits (unit roundoff 2**-9, about 2e-3). Each product
# rounds its two operands once and accumulates in float32, so its norm-wise relative error is a few
# units of 2**-9 (3e-3 here); 1e-2 is the documented bound. A ReLU kink would add more where a
# pre-activation lies within bfloat16 rounding of zero (its unit's gradient flips): none does here.
BF16_TOL = 1e-2


def _nrel(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


_POLICY = {  # name -> (layer, weight as the layer takes it from the (D, M) array)
    "affine": (layers.affine, lambda w: w),
    "affine/TransposedWeight": (layers.affine, lambda w: layers.TransposedWeight(w.T)),
    "affine_t": (layers.affine_t, lambda w: w.T),
    "affine_relu": (layers.affine_relu, lambda w: w),
    "affine_relu/TransposedWeight": (layers.affine_relu, lambda w: layers.TransposedWeight(w.T)),
}


@pytest.mark.parametrize("name", list(_POLICY))
def test_bfloat16_vjp_matches_float64(name, x64):
    fn, as_w = _POLICY[name]
    r = np.random.default_rng(5)
    x, w, b = r.normal(size=(16, 3, 8)), r.normal(size=(24, 10)), r.normal(size=10)
    g = r.normal(size=(16, 10))
    out64, vjp64 = jax.vjp(fn, jnp.asarray(x), as_w(jnp.asarray(w)), jnp.asarray(b))
    args32 = (
        jnp.asarray(x, jnp.float32),
        as_w(jnp.asarray(w, jnp.float32)),
        jnp.asarray(b, jnp.float32),
    )
    out, vjp = jax.vjp(lambda *a: fn(*a, "bfloat16"), *args32)
    grads = vjp(jnp.asarray(g, jnp.float32))
    assert out.dtype == jnp.float32
    assert all(t.dtype == jnp.float32 for t in jax.tree.leaves(grads))  # dx, dw (any layout), db
    assert _nrel(out, out64) < BF16_TOL
    for got, want in zip(
        jax.tree.leaves(grads), jax.tree.leaves(vjp64(jnp.asarray(g))), strict=True
    ):
        assert _nrel(got, want) < BF16_TOL
    assert not np.array_equal(out, fn(*args32))  # the products really ran on bfloat16 operands


@pytest.mark.parametrize(
    "fwd,bwd,transposed",
    [
        (layers.affine_forward, layers.affine_backward, False),
        (layers.affine_t_forward, layers.affine_t_backward, True),
        (layers.affine_relu_forward, layers.affine_relu_backward, False),
    ],
)
def test_bfloat16_cache_holds_the_cast_copies(fwd, bwd, transposed):
    # Cast once: the forward keeps bfloat16 copies of x and w for the backward; dx, dw, db float32.
    r = np.random.default_rng(6)
    x, w, b = (jnp.asarray(r.normal(size=s), jnp.float32) for s in ((4, 6), (6, 3), (3,)))
    w = w.T if transposed else w
    out, cache = fwd(x, w, b, "bfloat16")
    assert out.dtype == jnp.float32
    assert cache[0].dtype == cache[1].dtype == jnp.bfloat16
    grads = bwd(jnp.ones((4, 3), jnp.float32), cache, "bfloat16")
    assert [t.dtype for t in grads] == [jnp.float32] * 3
    assert [t.shape for t in grads] == [x.shape, w.shape, b.shape]
    with pytest.raises(ValueError, match="master weights"):
        fwd(x, w.astype(jnp.bfloat16), b, "bfloat16")


def test_bfloat16_affine_under_vmap_of_stacked_transposed_weights():
    # The sweep's form: K stacked (M, D) weights under vmap, each lane the layer alone.
    r = np.random.default_rng(7)
    x, b = jnp.asarray(r.normal(size=(5, 6)), jnp.float32), jnp.zeros(3, jnp.float32)
    wt = jnp.asarray(r.normal(size=(2, 3, 6)), jnp.float32)
    f = lambda t: layers.affine(x, layers.TransposedWeight(t), b, "bfloat16")  # noqa: E731
    out = jax.jit(jax.vmap(f))(wt)
    assert out.dtype == jnp.float32
    for k in range(2):
        np.testing.assert_array_equal(out[k], f(wt[k]))

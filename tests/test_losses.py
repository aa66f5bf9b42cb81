"""softmax_loss and svm_loss: reference, autodiff, central differences, cotangent scaling, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fc_jax import gradcheck, losses
from fc_jax.reference import gradient_check
from fc_jax.reference import layers as ref
from tests.helpers import rel_error


def _plain_softmax(s, y):
    return -jnp.mean(jax.nn.log_softmax(s, axis=1)[jnp.arange(s.shape[0]), y])


def _plain_svm(s, y):
    n = s.shape[0]
    m = jnp.maximum(0, s - s[jnp.arange(n), y][:, None] + 1)
    return (jnp.sum(m) - n) / n  # the correct class contributes exactly 1 per row


LOSSES = {
    "softmax": (
        losses.softmax_loss,
        losses.softmax_loss_forward,
        losses.softmax_loss_backward,
        ref.softmax_loss,
        _plain_softmax,
    ),
    "svm": (
        losses.svm_loss,
        losses.svm_loss_forward,
        losses.svm_loss_backward,
        ref.svm_loss,
        _plain_svm,
    ),
}


def _data(seed=0, n=12, c=7, scale=1.0):
    rng = np.random.default_rng(seed)
    return scale * rng.standard_normal((n, c)), rng.integers(0, c, n)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_matches_reference_autodiff_and_numeric(name, x64):
    fn, fwd, bwd, ref_fn, plain = LOSSES[name]
    s, y = _data()
    ref_loss, ref_dx = ref_fn(s, y)
    loss, cache = fwd(jnp.asarray(s), jnp.asarray(y))
    assert loss.dtype == jnp.float64
    assert rel_error(loss, ref_loss) < 1e-12
    dx = bwd(jnp.asarray(1.0), cache)
    assert rel_error(dx, ref_dx) < 1e-10
    assert rel_error(jax.grad(fn)(jnp.asarray(s), jnp.asarray(y)), ref_dx) < 1e-10
    assert (
        max(gradcheck.check_vjp(fn, plain, (jnp.asarray(s), jnp.asarray(y)), argnums=[0])) < 1e-10
    )
    num = gradient_check.eval_numerical_gradient(
        lambda a: float(fn(jnp.asarray(a), jnp.asarray(y))), s.copy(), verbose=False
    )
    assert rel_error(dx, num) < 1e-7
    check_grads(lambda a: fn(a, jnp.asarray(y)), (jnp.asarray(s),), order=1, modes=["rev"])


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_backward_multiplies_by_cotangent(name, x64):
    fn = LOSSES[name][0]
    s, y = map(jnp.asarray, _data(1))
    g1 = jax.grad(fn)(s, y)
    g3 = jax.grad(lambda a: 3.0 * fn(a, y))(s)
    np.testing.assert_allclose(g3, 3.0 * g1, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_composition(name, x64):
    fn = LOSSES[name][0]
    s, y = map(jnp.asarray, _data(2))
    eager = jax.grad(fn)(s, y)
    np.testing.assert_allclose(jax.grad(jax.jit(fn))(s, y), eager, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(jax.grad(fn))(s, y), eager, rtol=1e-12)
    stacked = jnp.stack([s, 2 * s, -s])
    vg = jax.vmap(jax.grad(fn), in_axes=(0, None))(stacked, y)
    for t in range(3):
        np.testing.assert_allclose(vg[t], jax.grad(fn)(stacked[t], y), rtol=1e-12)
    _, scanned = jax.lax.scan(lambda c, a: (c, jax.grad(fn)(a, y)), 0.0, stacked)
    np.testing.assert_allclose(scanned[1], jax.grad(fn)(stacked[1], y), rtol=1e-12)


def test_softmax_is_stable_for_large_scores():
    s, y = _data(3, scale=1e4)
    loss = losses.softmax_loss(jnp.asarray(s, jnp.float32), jnp.asarray(y))
    g = jax.grad(losses.softmax_loss)(jnp.asarray(s, jnp.float32), jnp.asarray(y))
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    ref_loss, _ = ref.softmax_loss(s, y)
    assert rel_error(loss, ref_loss) < 1e-5


def test_softmax_of_small_scores_is_log_c():
    s, y = _data(4, n=500, c=10, scale=1e-3)
    assert abs(float(losses.softmax_loss(jnp.asarray(s), jnp.asarray(y))) - np.log(10)) < 1e-2


def test_dtypes_kept():
    s, y = _data(5)
    for fn in (losses.softmax_loss, losses.svm_loss):
        assert fn(jnp.asarray(s, jnp.float32), jnp.asarray(y)).dtype == jnp.float32
        assert jax.grad(fn)(jnp.asarray(s, jnp.float32), jnp.asarray(y)).dtype == jnp.float32


@pytest.mark.parametrize("fn", [losses.softmax_loss, losses.svm_loss])
def test_bad_labels(fn):
    s = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"labels y must be in \[0, 2\]"):
        fn(s, jnp.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match=r"labels y must be in"):
        fn(s, jnp.array([0, -1, 1, 0]))
    with pytest.raises(TypeError, match="integer"):
        fn(s, jnp.array([0.0, 1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match=r"y must have shape \(4,\)"):
        fn(s, jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match="scores"):
        fn(jnp.zeros(4), jnp.array([0, 1, 2, 0]))


def test_l2_penalty_weights_only(x64):
    params = {
        "W1": jnp.ones((2, 3)),
        "b1": jnp.ones(3) * 100,
        "W2": 2 * jnp.ones((3, 1)),
        "gamma1": jnp.ones(3),
    }
    assert float(losses.l2_penalty(params, 0.5)) == pytest.approx(0.5 * 0.5 * (6 + 12))
    g = jax.grad(losses.l2_penalty)(params, 0.5)
    np.testing.assert_allclose(g["W2"], 0.5 * params["W2"])
    np.testing.assert_allclose(g["b1"], 0.0)

"""softmax_loss and svm_loss: reference, autodiff, central differences, cotangent scaling, errors;
label smoothing: the same five checks, a sweep axis, and bit-identity with the course's loss at 0."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fc_jax import gradcheck, losses
from fc_jax.hparams import make_hparams, validate_hparams
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


# ---------------------------------------------------------------- label smoothing
def _plain_smoothed(s, y, ls):
    c = s.shape[1]
    target = (1 - ls) * jax.nn.one_hot(y, c, dtype=s.dtype) + ls / c
    return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(s, axis=1), axis=1))


@pytest.mark.parametrize("ls", [0.0, 0.1, 0.37])
def test_smoothed_softmax_matches_reference_autodiff_and_numeric(ls, x64):
    s, y = _data(6, n=6, c=5)
    sj, yj, lsj = jnp.asarray(s), jnp.asarray(y), jnp.asarray(ls)
    ref_loss, ref_dx = ref.softmax_loss(s, y, ls)
    # Smoothing puts gradient entries p_c - ls / C near 0, where central differences' round-off
    # (~3e-11 here) exceeds 1e-7 of the entry; these data keep every entry above 5e-4.
    assert np.abs(ref_dx).min() > 5e-4
    loss, cache = losses.softmax_loss_forward(sj, yj, lsj)
    assert loss.dtype == jnp.float64
    assert rel_error(loss, ref_loss) < 1e-12
    assert rel_error(loss, _plain_smoothed(sj, yj, ls)) < 1e-12
    dx = losses.softmax_loss_backward(jnp.asarray(1.0), cache)
    assert rel_error(dx, ref_dx) < 1e-10
    # The hand-written backward against jax.vjp of the plain jnp loss, with a cotangent of 2.5.
    ours = jax.vjp(lambda a: losses.softmax_loss(a, yj, lsj), sj)[1](jnp.asarray(2.5))[0]
    plain = jax.vjp(lambda a: _plain_smoothed(a, yj, ls), sj)[1](jnp.asarray(2.5))[0]
    assert rel_error(ours, plain) < 1e-10
    assert rel_error(losses.softmax_loss_backward(jnp.asarray(2.5), cache), plain) < 1e-10
    num = gradient_check.eval_numerical_gradient(
        lambda a: float(losses.softmax_loss(jnp.asarray(a), yj, lsj)), s.copy(), verbose=False
    )
    assert rel_error(dx, num) < 1e-7
    check_grads(lambda a: losses.softmax_loss(a, yj, lsj), (sj,), order=1, modes=["rev"])


def test_smoothed_softmax_backward_multiplies_by_cotangent_and_ignores_smoothing(x64):
    s, y = map(jnp.asarray, _data(7))
    ls = jnp.asarray(0.2)
    g1 = jax.grad(losses.softmax_loss)(s, y, ls)
    g3 = jax.grad(lambda a: 3.0 * losses.softmax_loss(a, y, ls))(s)
    np.testing.assert_allclose(g3, 3.0 * g1, rtol=1e-12)
    # label_smoothing is data with no cotangent (C3): its gradient is zero, not d loss / d ls.
    assert float(jax.grad(lambda v: losses.softmax_loss(s, y, v))(ls)) == 0.0


def test_smoothed_softmax_under_jit_and_vmap_over_a_smoothing_axis(x64):
    s, y = map(jnp.asarray, _data(8))
    sweep = jnp.asarray([0.0, 0.05, 0.3])
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def value_and_grad(ls):
        return jax.value_and_grad(losses.softmax_loss)(s, y, ls)

    vl, vg = jax.jit(jax.vmap(value_and_grad))(sweep)
    for i, ls in enumerate(sweep):
        loss, g = value_and_grad(ls)  # one trace for every value: the smoothing is data
        ref_loss, ref_dx = ref.softmax_loss(np.asarray(s), np.asarray(y), float(ls))
        np.testing.assert_allclose(vl[i], loss, rtol=1e-12)
        np.testing.assert_allclose(vg[i], g, rtol=1e-12)
        assert rel_error(loss, ref_loss) < 1e-12 and rel_error(g, ref_dx) < 1e-10
    assert not np.allclose(vg[0], vg[2])


def _course_softmax(scores, y):
    """The course's loss as fc_jax computed it before label smoothing (forward and backward)."""
    shifted = scores - jnp.max(scores, axis=1, keepdims=True)
    log_probs = shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=1, keepdims=True))
    loss = -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))
    onehot = jax.nn.one_hot(y, scores.shape[1], dtype=scores.dtype)
    return loss, (jnp.exp(log_probs) - onehot) * (1.0 / scores.shape[0])


@pytest.mark.parametrize(
    "seed, n, c, scale", [(0, 12, 7, 1.0), (1, 200, 10, 30.0), (2, 3, 2, 1e-3)]
)
def test_zero_smoothing_is_the_course_loss_bit_for_bit(seed, n, c, scale):
    s, y = _data(seed, n, c, scale)
    s, y = jnp.asarray(s, jnp.float32), jnp.asarray(y)
    zero = jnp.zeros((), jnp.float32)
    vg = jax.value_and_grad(losses.softmax_loss)
    for wrap in (lambda f: f, jax.jit):
        expected = wrap(_course_softmax)(s, y)
        chex.assert_trees_all_equal(wrap(vg)(s, y), expected)
        chex.assert_trees_all_equal(wrap(vg)(s, y, zero), expected)
        chex.assert_trees_all_equal(wrap(vg)(s, y, 0.0), expected)


def test_smoothing_keeps_the_scores_dtype(x64):
    s, y = _data(9)
    s32, y = jnp.asarray(s, jnp.float32), jnp.asarray(y)
    for ls in (jnp.asarray(0.1, jnp.float64), jnp.asarray(0.1, jnp.float32), 0.1):
        assert losses.softmax_loss(s32, y, ls).dtype == jnp.float32
        assert jax.grad(losses.softmax_loss)(s32, y, ls).dtype == jnp.float32


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_bad_label_smoothing_is_refused_naming_it(bad):
    s, y = jnp.zeros((4, 3)), jnp.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.softmax_loss(s, y, jnp.asarray(bad))
    with pytest.raises(ValueError, match="label_smoothing"):
        validate_hparams({"label_smoothing": bad})
    with pytest.raises(ValueError, match="label_smoothing"):
        make_hparams("adam", label_smoothing=bad)
    with pytest.raises(ValueError, match="label_smoothing"):
        ref.softmax_loss(np.zeros((4, 3)), np.array([0, 1, 2, 0]), bad)
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.softmax_loss(s, y, jnp.asarray([0.1, 0.2]))  # one value per call; vmap for more

"""fc_jax.gradcheck: numeric gradients against closed forms, rel_error on hand-computed values,
and check_vjp both passing a correct custom VJP and failing a wrong one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax import gradcheck
from fc_jax.reference import gradient_check


# ---------------------------------------------------------------- numeric gradients
def test_eval_numerical_gradient_cubic(rng):
    # |x| in [0.5, 2]: keeps 3x^2 away from 0 so the relative error is meaningful
    x = rng.uniform(0.5, 2.0, (3, 4)) * rng.choice([-1.0, 1.0], (3, 4))
    x0 = x.copy()
    calls = []

    def f(v):
        calls.append(1)
        return np.sum(v**3)

    grad = gradient_check.eval_numerical_gradient(f, x, verbose=False)
    assert grad.shape == x.shape and grad.dtype == np.float64
    # central differences on a cubic: error is exactly h^2 per entry, i.e. 1e-10
    np.testing.assert_allclose(grad, 3 * x0**2, rtol=0, atol=1e-8)
    assert gradient_check.rel_error(grad, 3 * x0**2) < 1e-7
    np.testing.assert_array_equal(x, x0)  # restored
    assert len(calls) == 1 + 2 * x.size


def test_eval_numerical_gradient_verbose_prints(rng, capsys):
    x = rng.standard_normal(3)
    gradient_check.eval_numerical_gradient(lambda v: np.sum(v**2), x, verbose=True)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3
    assert out[0].startswith("(0,)")
    assert float(out[1].split()[-1]) == pytest.approx(2 * x[1], rel=1e-6)
    gradient_check.eval_numerical_gradient(lambda v: np.sum(v**2), x, verbose=False)
    assert capsys.readouterr().out == ""


def test_eval_numerical_gradient_array_elementwise(rng):
    x = rng.standard_normal((4, 5))
    x0 = x.copy()
    df = rng.standard_normal((4, 5))
    grad = gradient_check.eval_numerical_gradient_array(lambda v: np.sin(v) * v, x, df)
    want = df * (np.cos(x0) * x0 + np.sin(x0))
    assert gradient_check.rel_error(grad, want) < 1e-7
    np.testing.assert_array_equal(x, x0)


def test_eval_numerical_gradient_array_mixing(rng):
    """A non-elementwise f: dx = W^T-style contraction with df."""
    x = rng.standard_normal(4)
    W = rng.standard_normal((3, 4))
    df = rng.standard_normal(3)
    grad = gradient_check.eval_numerical_gradient_array(lambda v: W @ v, x, df)
    assert gradient_check.rel_error(grad, df @ W) < 1e-8


# ---------------------------------------------------------------- rel_error
@pytest.mark.parametrize(
    "x,y,want",
    [
        (1.0, 1.0, 0.0),
        (1.0, 3.0, 2.0 / 4.0),
        (-1.0, 1.0, 1.0),
        (0.0, 0.0, 0.0),  # 0 / max(1e-8, 0)
        (0.0, 1e-9, 1e-9 / 1e-8),  # the 1e-8 floor applies
        (0.0, 1e-6, 1.0),  # above the floor: |x - y| / (|x| + |y|)
        ([1.0, 2.0], [1.0, 4.0], 2.0 / 6.0),  # the max over entries
        ([[0.0, 5.0]], [[1e-10, 5.0]], 1e-10 / 1e-8),
    ],
)
def test_rel_error_hand_values(x, y, want):
    got = gradient_check.rel_error(np.asarray(x), np.asarray(y))
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-300)
    assert gradient_check.rel_error(np.asarray(y), np.asarray(x)) == pytest.approx(want, rel=1e-12)


# ---------------------------------------------------------------- check_vjp
def _plain(x, w):
    return jnp.tanh(x @ w)


def _fwd(x, w):
    out = jnp.tanh(x @ w)
    return out, (x, w, out)


def _good_bwd(res, g):
    x, w, out = res
    da = g * (1 - out**2)
    return da @ w.T, x.T @ da


@jax.custom_vjp
def good(x, w):
    return _plain(x, w)


good.defvjp(_fwd, _good_bwd)


@jax.custom_vjp
def wrong_derivative(x, w):
    return _plain(x, w)


wrong_derivative.defvjp(_fwd, lambda res, g: _good_bwd(res, g * (1 + res[2])))


@jax.custom_vjp
def ignores_cotangent(x, w):
    return _plain(x, w)


# the bug of C4: backward as if the incoming cotangent were all ones
ignores_cotangent.defvjp(_fwd, lambda res, g: _good_bwd(res, jnp.ones_like(g)))


@pytest.fixture
def args(x64, rng):
    return jnp.asarray(rng.standard_normal((5, 3))), jnp.asarray(rng.standard_normal((3, 4)))


def test_check_vjp_passes_correct_vjp(args):
    errs = gradcheck.check_vjp(good, _plain, args)
    assert len(errs) == 2
    assert max(errs) < 1e-12


@pytest.mark.parametrize("bad", [wrong_derivative, ignores_cotangent])
def test_check_vjp_fails_wrong_vjp(args, bad):
    errs = gradcheck.check_vjp(bad, _plain, args)
    assert max(errs) > 1e-2


def test_check_vjp_argnums_and_integer_args(x64, rng):
    x = jnp.asarray(rng.standard_normal((5, 3)))
    idx = jnp.asarray([2, 0, 1, 1, 0], jnp.int32)
    f = lambda x, idx: good(x, jnp.eye(3, dtype=x.dtype))[jnp.arange(5), idx]
    plain = lambda x, idx: _plain(x, jnp.eye(3, dtype=x.dtype))[jnp.arange(5), idx]
    errs = gradcheck.check_vjp(f, plain, (x, idx))  # the int argument is skipped by default
    assert len(errs) == 1 and errs[0] < 1e-12
    x, w = x, jnp.asarray(rng.standard_normal((3, 4)))
    only_w = gradcheck.check_vjp(wrong_derivative, _plain, (x, w), argnums=[1])
    assert len(only_w) == 1 and only_w[0] > 1e-2


def test_check_vjp_shape_mismatch_raises(args):
    with pytest.raises(ValueError, match="shape"):
        gradcheck.check_vjp(good, lambda x, w: _plain(x, w).T, args)

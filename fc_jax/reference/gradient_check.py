"""Numerical gradients by centered differences: the cs231n `gradient_check.py` API, in NumPy.

Contract: `eval_numerical_gradient(f, x)` returns d f(x) / dx for a scalar-valued `f`;
`eval_numerical_gradient_array(f, x, df)` returns the vector-Jacobian product `df . d f(x) / dx` for
an array-valued `f`; both perturb `x` in place one entry at a time and restore it afterwards, so
`f` must read `x` (not a copy taken earlier). `rel_error` is the course's relative error. Use
float64 inputs: with h = 1e-5, float32 round-off swamps the differences.

This module imports NumPy only, never JAX (fc_jax.gradcheck re-exports it).
"""

import numpy as np

__all__ = ["eval_numerical_gradient", "eval_numerical_gradient_array", "rel_error"]


def eval_numerical_gradient(f, x, verbose=True, h=1e-5):
    """Numerical gradient of a scalar function at x by centered differences. Mirrors cs231n.

    Args:
      f: a function of one array argument returning a scalar.
      x: array (any shape) at which to evaluate the gradient; modified and restored in place.
      verbose: print `ix, grad[ix]` for each entry.
      h: step size.

    Returns:
      grad: array with x's shape and dtype.
    """
    f(x)  # the course evaluates f at x once first; kept so f's side effects match
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        fxph = f(x)  # f(x + h)
        x[ix] = oldval - h
        fxmh = f(x)  # f(x - h)
        x[ix] = oldval  # restore
        grad[ix] = (fxph - fxmh) / (2 * h)
        if verbose:
            print(ix, grad[ix])
        it.iternext()
    return grad


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Numerical vector-Jacobian product `sum(df * d f(x) / dx)` of an array function (cs231n).

    Args:
      f: a function of one array argument returning an array with df's shape.
      x: array (any shape); modified and restored in place.
      df: upstream gradient with the shape of f(x).
      h: step size.

    Returns:
      grad: array with x's shape and dtype.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        pos = np.array(f(x), copy=True)
        x[ix] = oldval - h
        neg = np.array(f(x), copy=True)
        x[ix] = oldval
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def rel_error(x, y):
    """The cs231n relative error: `max(|x - y| / max(1e-8, |x| + |y|))`, a Python float."""
    x, y = np.asarray(x), np.asarray(y)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))

"""cs231n `layers.py` over the JAX core: the course's names, arguments, dicts and return values.

Contract: every layer is `X_forward(..., param_dict) -> (out, cache)` and `X_backward(dout, cache)`,
and the losses are `svm_loss(x, y) / softmax_loss(x, y) -> (loss, dx)`, exactly as in the course.
Each call runs one jitted core function (`fc_jax.layers` / `fc_jax.losses`) in the inputs' precision
(float64 inputs compute in float64 inside `jax.enable_x64(True)`; float32 stays float32) and returns
fresh NumPy arrays; losses are NumPy scalars. The mutable parts live here only: `batchnorm_forward`
writes its running statistics back into `bn_param` (as NumPy arrays) and `dropout_forward` draws its
mask from NumPy's global RNG (`np.random.seed(dropout_param['seed'])` first, if given), exactly as
the course does, so seeded notebooks print the same numbers. A cache is the core's NamedTuple of
JAX arrays (plus the mode, for batchnorm and dropout).

Dropout's `p` is the KEEP probability: `p=0.75` keeps 75% of the units.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import layers as _L
from fc_jax import losses as _losses
from fc_jax import normalization as _N
from fc_jax.cs231n._bridge import keep_prob_of, mode_of, precision, to_numpy, to_scalar

__all__ = [
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "layernorm_forward",
    "layernorm_backward",
    "dropout_forward",
    "dropout_backward",
    "svm_loss",
    "softmax_loss",
]


def _run(fn, *args):
    """Call a jitted core function in the inputs' precision; return NumPy outputs and JAX cache."""
    with precision(*args):
        out, cache = fn(*args)
        return to_numpy(out), cache


# ---------------------------------------------------------------- affine, relu
_affine_fwd = jax.jit(_L.affine_forward)
_affine_bwd = jax.jit(_L.affine_backward)
_relu_fwd = jax.jit(_L.relu_forward)
_relu_bwd = jax.jit(_L.relu_backward)


def affine_forward(x, w, b):
    """Affine `x.reshape(N, D) @ w + b`. x: (N, d1, ..., dk); w: (D, M); b: (M,). -> (N, M)."""
    return _run(_affine_fwd, np.asarray(x), np.asarray(w), np.asarray(b))


def affine_backward(dout, cache):
    """Backward of `affine_forward`. dout: (N, M). Returns (dx (N, d1..dk), dw (D, M), db (M,))."""
    dout = np.asarray(dout)
    with precision(dout, cache):
        return to_numpy(_affine_bwd(dout, cache))


def relu_forward(x):
    """ReLU `max(0, x)` of any shape. Returns (out, cache)."""
    return _run(_relu_fwd, np.asarray(x))


def relu_backward(dout, cache):
    """Backward of `relu_forward`: `dout` where x > 0, else 0."""
    dout = np.asarray(dout)
    with precision(dout, cache):
        return to_numpy(_relu_bwd(dout, cache))


# ---------------------------------------------------------------- batchnorm
class BatchnormCache(NamedTuple):
    norm: _N.NormCache  # core cache (x_centered, inv_std, x_hat, gamma)
    mode: str  # "train" (batch statistics) or "test" (running statistics: constants)


@partial(jax.jit, static_argnames="eps")
def _bn_train(x, gamma, beta, running_mean, running_var, momentum, eps):
    out, cache = _N.batchnorm_forward(x, gamma, beta, eps)
    running = _N.batchnorm_update_running(running_mean, running_var, x, momentum)
    return out, cache, running


@partial(jax.jit, static_argnames="eps")
def _bn_test(x, gamma, beta, running_mean, running_var, eps):
    out = _N.batchnorm_inference(x, gamma, beta, running_mean, running_var, eps)
    inv_std = jax.lax.rsqrt(running_var + jnp.asarray(eps, running_var.dtype))[None, :]
    xc = x - running_mean[None, :]
    return out, _N.NormCache(xc, inv_std, xc * inv_std, gamma)


@jax.jit
def _bn_test_bwd(dout, cache):
    """Test mode: the running statistics are constants, so dx = dout * gamma * inv_std."""
    dx = dout * cache.gamma[None, :] * cache.inv_std
    return dx, jnp.sum(dout * cache.x_hat, axis=0), jnp.sum(dout, axis=0)


_bn_bwd = jax.jit(_N.batchnorm_backward)
_bn_bwd_alt = jax.jit(_N.batchnorm_backward_alt)


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization of (N, D) `x`. Mirrors cs231n `batchnorm_forward`.

    Train mode normalizes with the batch mean and (biased) variance and updates
    `running = momentum * running + (1 - momentum) * batch` in `bn_param`; test mode normalizes
    with the running statistics. Either way `bn_param['running_mean' / 'running_var']` hold (D,)
    NumPy arrays afterwards (zeros of x's dtype when they were missing).

    Args:
      x: (N, D) inputs; gamma, beta: (D,) scale and shift.
      bn_param: dict with 'mode' ('train' | 'test'), optional 'eps' (1e-5), 'momentum' (0.9),
        'running_mean' and 'running_var'.

    Returns:
      out: (N, D); cache for `batchnorm_backward` / `batchnorm_backward_alt`.
    """
    mode = mode_of(bn_param, "bn_param")
    x, gamma, beta = np.asarray(x), np.asarray(gamma), np.asarray(beta)
    if x.ndim != 2:
        raise ValueError(f"batchnorm_forward: x must have shape (N, D); got {x.shape}")
    eps = float(bn_param.get("eps", 1e-5))
    zeros = np.zeros(x.shape[1], dtype=x.dtype)
    rm = np.asarray(bn_param.get("running_mean", zeros))
    rv = np.asarray(bn_param.get("running_var", zeros))
    with precision(x, gamma, beta, rm, rv):
        if mode == "train":
            momentum = float(bn_param.get("momentum", 0.9))
            out, cache, (rm, rv) = _bn_train(x, gamma, beta, rm, rv, momentum, eps=eps)
            rm, rv = to_numpy((rm, rv))
        else:
            out, cache = _bn_test(x, gamma, beta, rm, rv, eps=eps)
        bn_param["running_mean"], bn_param["running_var"] = rm, rv
        return to_numpy(out), BatchnormCache(cache, mode)


def _bn_backward(dout, cache: BatchnormCache, train_bwd):
    dout = np.asarray(dout)
    with precision(dout, cache.norm):
        bwd = train_bwd if cache.mode == "train" else _bn_test_bwd
        return to_numpy(bwd(dout, cache.norm))


def batchnorm_backward(dout, cache):
    """Batchnorm backward, step by step through the graph. Returns (dx (N, D), dgamma, dbeta)."""
    return _bn_backward(dout, cache, _bn_bwd)


def batchnorm_backward_alt(dout, cache):
    """Batchnorm backward in closed form; same results as `batchnorm_backward`."""
    return _bn_backward(dout, cache, _bn_bwd_alt)


# ---------------------------------------------------------------- layernorm
_ln_fwd = jax.jit(_N.layernorm_forward, static_argnames="eps")
_ln_bwd = jax.jit(_N.layernorm_backward)


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalization of each row of (N, D) `x`. Mirrors cs231n `layernorm_forward`.

    Args:
      x: (N, D); gamma, beta: (D,); ln_param: dict with optional 'eps' (1e-5); other keys ignored.

    Returns:
      out: (N, D); cache for `layernorm_backward`.
    """
    x, gamma, beta = np.asarray(x), np.asarray(gamma), np.asarray(beta)
    if x.ndim != 2:
        raise ValueError(f"layernorm_forward: x must have shape (N, D); got {x.shape}")
    eps = float(ln_param.get("eps", 1e-5))
    with precision(x, gamma, beta):
        out, cache = _ln_fwd(x, gamma, beta, eps=eps)
        return to_numpy(out), cache


def layernorm_backward(dout, cache):
    """Backward of `layernorm_forward`. Returns (dx (N, D), dgamma (D,), dbeta (D,))."""
    dout = np.asarray(dout)
    with precision(dout, cache):
        return to_numpy(_ln_bwd(dout, cache))


# ---------------------------------------------------------------- dropout
class DropoutCache(NamedTuple):
    dropout: _L.DropoutCache | None  # core cache (the mask); None in test mode
    mode: str


_do_fwd = jax.jit(_L.dropout_forward)
_do_bwd = jax.jit(_L.dropout_backward)


def dropout_forward(x, dropout_param):
    """Inverted dropout. Mirrors cs231n `dropout_forward`.

    NOTE: `p` is the probability of KEEPING a unit. With 'seed', `np.random.seed(seed)` runs first
    (in either mode, as in the course). Train mode draws `mask = (np.random.rand(*x.shape) < p) / p`
    from NumPy's global RNG and returns `x * mask`; test mode returns `x` unchanged.

    Args:
      x: inputs of any shape.
      dropout_param: dict with 'p' (keep probability in (0, 1]), 'mode' ('train' | 'test') and
        optional 'seed'.

    Returns:
      out: like x (same dtype); cache for `dropout_backward`.
    """
    p = keep_prob_of(dropout_param)
    mode = mode_of(dropout_param, "dropout_param")
    if "seed" in dropout_param:
        np.random.seed(dropout_param["seed"])
    x = np.asarray(x)
    if mode == "test":
        return x, DropoutCache(None, mode)
    mask = ((np.random.rand(*x.shape) < p) / p).astype(x.dtype)
    out, cache = _run(_do_fwd, x, mask)
    return out, DropoutCache(cache, mode)


def dropout_backward(dout, cache):
    """Backward of `dropout_forward`: `dout * mask` in train mode, `dout` in test mode."""
    dout = np.asarray(dout)
    if cache.mode == "test":
        return dout
    with precision(dout, cache.dropout):
        return to_numpy(_do_bwd(dout, cache.dropout))


# ---------------------------------------------------------------- losses
def _loss_and_grad(forward, backward):
    def fn(x, y):
        loss, cache = forward(x, y)
        return loss, backward(jnp.ones((), x.dtype), cache)

    return jax.jit(fn)


_svm = _loss_and_grad(_losses.svm_loss_forward, _losses.svm_loss_backward)
_softmax = _loss_and_grad(_losses.softmax_loss_forward, _losses.softmax_loss_backward)


def _labels(x: np.ndarray, y, name: str) -> np.ndarray:
    y = np.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"{name}: x must have shape (N, C); got {x.shape}")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{name}: y must be integer labels of shape ({x.shape[0]},); got {y.dtype} {y.shape}"
        )
    if y.size and (y.min() < 0 or y.max() >= x.shape[1]):
        raise ValueError(
            f"{name}: labels y must lie in [0, {x.shape[1]}); got {y.min()}..{y.max()}"
        )
    return y.astype(np.int32)


def _loss(fn, x, y, name):
    x = np.asarray(x)
    y = _labels(x, y, name)
    with precision(x):
        loss, dx = fn(x, y)
        return to_scalar(loss), to_numpy(dx)


def svm_loss(x, y):
    """Multiclass SVM loss. x: (N, C) scores; y: (N,) labels in [0, C). -> (loss, dx (N, C))."""
    return _loss(_svm, x, y, "svm_loss")


def softmax_loss(x, y):
    """Softmax cross-entropy. x: (N, C) scores; y: (N,) labels in [0, C). -> (loss, dx (N, C))."""
    return _loss(_softmax, x, y, "softmax_loss")

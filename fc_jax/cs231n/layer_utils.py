"""cs231n `layer_utils.py`: "sandwich" layers built from the facade layers.

Contract: `affine_relu_forward(x, w, b) -> (out, cache)` / `affine_relu_backward(dout, cache) ->
(dx, dw, db)`, and the normalized sandwiches `affine_bn_relu_*` / `affine_ln_relu_*` whose backward
returns `(dx, dw, db, dgamma, dbeta)`, as in the course solution. `affine_relu` is one jitted core
call (`fc_jax.layers.affine_relu_forward/backward`); the normalized sandwiches chain the facade
layers, so `bn_param` gets its running statistics written back exactly as `batchnorm_forward` does.
Outputs are NumPy arrays.
"""

import jax
import numpy as np

from fc_jax import layers as _L
from fc_jax.cs231n._bridge import precision, to_numpy
from fc_jax.cs231n.layers import (
    affine_backward,
    affine_forward,
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    relu_backward,
    relu_forward,
)

__all__ = [
    "affine_relu_forward",
    "affine_relu_backward",
    "affine_bn_relu_forward",
    "affine_bn_relu_backward",
    "affine_ln_relu_forward",
    "affine_ln_relu_backward",
]

_ar_fwd = jax.jit(_L.affine_relu_forward)
_ar_bwd = jax.jit(_L.affine_relu_backward)


def affine_relu_forward(x, w, b):
    """Affine then ReLU. x: (N, d1, ..., dk); w: (D, M); b: (M,). Returns (out (N, M), cache)."""
    x, w, b = np.asarray(x), np.asarray(w), np.asarray(b)
    with precision(x, w, b):
        out, cache = _ar_fwd(x, w, b)
        return to_numpy(out), cache


def affine_relu_backward(dout, cache):
    """Backward of `affine_relu_forward`. Returns (dx, dw, db)."""
    dout = np.asarray(dout)
    with precision(dout, cache):
        return to_numpy(_ar_bwd(dout, cache))


def _norm_relu_forward(norm_forward, x, w, b, gamma, beta, param):
    a, fc_cache = affine_forward(x, w, b)
    an, norm_cache = norm_forward(a, gamma, beta, param)
    out, relu_cache = relu_forward(an)
    return out, (fc_cache, norm_cache, relu_cache)


def _norm_relu_backward(norm_backward, dout, cache):
    fc_cache, norm_cache, relu_cache = cache
    dan = relu_backward(dout, relu_cache)
    da, dgamma, dbeta = norm_backward(dan, norm_cache)
    dx, dw, db = affine_backward(da, fc_cache)
    return dx, dw, db, dgamma, dbeta


def affine_bn_relu_forward(x, w, b, gamma, beta, bn_param):
    """Affine - batchnorm - ReLU. gamma, beta: (M,); bn_param as in `batchnorm_forward`.

    Returns:
      out: (N, M); cache for `affine_bn_relu_backward`.
    """
    return _norm_relu_forward(batchnorm_forward, x, w, b, gamma, beta, bn_param)


def affine_bn_relu_backward(dout, cache):
    """Backward of `affine_bn_relu_forward`. Returns (dx, dw, db, dgamma, dbeta)."""
    return _norm_relu_backward(batchnorm_backward_alt, dout, cache)


def affine_ln_relu_forward(x, w, b, gamma, beta, ln_param):
    """Affine - layernorm - ReLU. gamma, beta: (M,); ln_param as in `layernorm_forward`.

    Returns:
      out: (N, M); cache for `affine_ln_relu_backward`.
    """
    return _norm_relu_forward(layernorm_forward, x, w, b, gamma, beta, ln_param)


def affine_ln_relu_backward(dout, cache):
    """Backward of `affine_ln_relu_forward`. Returns (dx, dw, db, dgamma, dbeta)."""
    return _norm_relu_backward(layernorm_backward, dout, cache)

"""Layers as `jax.custom_vjp` functions with hand-written backward passes.

Contract: each layer X is a triple kept together in this order:

* `X_forward(...) -> (out, cache)`: plain jnp, the custom VJP's forward rule; `cache` is a NamedTuple
  of arrays only.
* `X_backward(dout, cache) -> grads`: the hand-written backward (no autodiff inside), with cs231n's
  argument order, one gradient per differentiable input.
* `X(...)`: the `jax.custom_vjp` function built from the pair. `jax.grad` through it runs `X_backward`.

Batch and layer normalization live in `fc_jax.normalization` and are re-exported here.
Names, argument orders and semantics mirror cs231n's `layers.py`; the course's mutable `bn_param` and
`dropout_param` dicts live only in the facade (`fc_jax.cs231n`). Here batchnorm's running statistics are
separate pure functions and dropout takes an explicit mask drawn outside the custom VJP, so every
backward is deterministic. Everything is dtype-polymorphic: dtypes come from the inputs.

Mixed precision: the affine layers (`affine`, `affine_t`, `affine_relu`) take an optional static
`compute_dtype` (e.g. "bfloat16"): their matmuls, forward and backward, then run on operands of that
dtype and accumulate in the master dtype (b's, float32); see `fc_jax.precision`.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.types import Array, Key

__all__ = [
    "AffineCache",
    "affine_forward",
    "affine_backward",
    "affine",
    "TransposedWeight",
    "AffineTCache",
    "affine_t_forward",
    "affine_t_backward",
    "affine_t",
    "ReluCache",
    "relu_forward",
    "relu_backward",
    "relu",
    "AffineReluCache",
    "affine_relu_forward",
    "affine_relu_backward",
    "affine_relu",
    "dropout_mask",
    "DropoutCache",
    "dropout_forward",
    "dropout_backward",
    "dropout",
]


def _check_affine(x, w, b) -> None:
    if x.ndim < 1:
        raise ValueError(f"affine: x must have a batch axis, shape (N, d1, ..., dk); got {x.shape}")
    if w.ndim != 2:
        raise ValueError(f"affine: w must have shape (D, M); got {w.shape}")
    d = 1
    for s in x.shape[1:]:
        d *= s
    if d != w.shape[0]:
        raise ValueError(
            f"affine: x of shape {x.shape} flattens to (N, {d}) but w has shape {w.shape}; "
            f"expected w of shape ({d}, M)"
        )
    if b.shape != (w.shape[1],):
        raise ValueError(
            f"affine: b must have shape ({w.shape[1]},) to match w {w.shape}; got {b.shape}"
        )


# ---------------------------------------------------------------- mixed precision
# A compute dtype (`compute_dtype`, e.g. "bfloat16"; None: none) is a static, hashable argument of
# the affine layers (a `nondiff_argnums` entry of their custom VJPs). With one, the forward casts x
# and w to it once and keeps those copies in the cache, and every product (forward, dx, dw) runs on
# compute-dtype operands and accumulates in the master dtype (b's, float32): outputs and gradients
# stay float32. No loss scaling is needed: see `fc_jax.precision`. With None nothing is cast and the
# products are the plain float32 ones, op for op.
def _cast(compute_dtype, *arrays):
    return arrays if compute_dtype is None else tuple(a.astype(compute_dtype) for a in arrays)


def _dot(a, b, acc_dtype, dims=None):
    """`a @ b` (or `lax.dot_general` over `dims`), accumulated in `acc_dtype` when not None."""
    if dims is None:
        return jnp.matmul(a, b, preferred_element_type=acc_dtype)
    return jax.lax.dot_general(a, b, dims, preferred_element_type=acc_dtype)


def _transposed(a: Array) -> Array:
    """`a.T` of a 2-D array as a row-major array of its own: flattening the transpose (a 1-D array has
    one layout) makes the copy physical, and the barrier keeps XLA from folding the reshapes away.
    XLA:CPU's bfloat16 dot contracting the batch axis of both operands (`x.T @ dout`) runs far
    slower than the same product on a physically transposed operand, and a barrier on `a.T` alone
    does not help there: layout assignment keeps the transpose a free relabelling (figures:
    `python benchmarks/ab_ops.py --only bf16`, benchmarks/RESULTS.md, "Mixed precision")."""
    n, m = a.shape
    return jax.lax.optimization_barrier(a.T.reshape(-1)).reshape(m, n)


def _master(x, b, compute_dtype):
    """Under a compute dtype, x joins the master dtype (b's) before the custom VJP, so the
    hand-written dx (accumulated in that dtype) has x's dtype; a no-op on a float32 net."""
    return x if compute_dtype is None or x.dtype == b.dtype else x.astype(b.dtype)


def _check_policy(w, b, compute_dtype) -> None:
    if compute_dtype is not None and w.dtype != b.dtype:
        raise ValueError(
            f"affine: with compute_dtype={compute_dtype!r}, w and b hold the master weights and "
            f"must share one dtype; got w {w.dtype}, b {b.dtype}"
        )


# ---------------------------------------------------------------- affine
class AffineCache(NamedTuple):
    x: Array  # (N, d1, ..., dk) the input as given (its compute-dtype copy under a policy)
    w: Array  # (D, M) (its compute-dtype copy under a policy)


def affine_forward(x: Array, w: Array, b: Array, compute_dtype=None) -> tuple[Array, AffineCache]:
    """Affine layer: `out = x.reshape(N, D) @ w + b`. Mirrors cs231n `affine_forward`.

    Args:
      x: (N, d1, ..., dk) inputs; D = d1 * ... * dk.
      w: (D, M) weights.
      b: (M,) biases.
      compute_dtype: None, or the dtype of the matmul's operands (e.g. "bfloat16"): x and w are cast
        to it and the product accumulates in b's dtype (float32 master weights).

    Returns:
      out: (N, M) in b's dtype under a compute dtype; cache: `AffineCache(x, w)` (the cast copies).
    """
    _check_affine(x, w, b)
    _check_policy(w, b, compute_dtype)
    acc = None if compute_dtype is None else b.dtype
    xc, wc = _cast(compute_dtype, x, w)
    out = _dot(xc.reshape(x.shape[0], -1), wc, acc) + b[None, :]
    return out, AffineCache(xc, wc)


def affine_backward(
    dout: Array, cache: AffineCache, compute_dtype=None
) -> tuple[Array, Array, Array]:
    """Backward of `affine_forward`. Mirrors cs231n `affine_backward`.

    Args:
      dout: (N, M) upstream gradient.
      cache: from `affine_forward` (with the same `compute_dtype`).
      compute_dtype: as in `affine_forward`: dout is cast to it and dx, dw accumulate in dout's dtype.

    Returns:
      dx: (N, d1, ..., dk), dw: (D, M), db: (M,), all in dout's dtype under a compute dtype.
    """
    x, w = cache
    acc = None if compute_dtype is None else dout.dtype
    (d,) = _cast(compute_dtype, dout)
    x2 = x.reshape(x.shape[0], -1)
    if compute_dtype is None:
        dx = _dot(d, w.T, acc).reshape(x.shape)
    else:  # (w @ d.T).T: on XLA:CPU faster than `d @ w.T` in bfloat16 (ab_ops.py --only bf16)
        dx = _dot(w, d, acc, (((1,), (1,)), ((), ()))).T.reshape(x.shape)
    # dw = x2.T @ dout. XLA:CPU runs this dot (contracting the batch axis of both operands into a
    # tall (D, M) output) much slower than a plain (D, N) @ (N, M) product, so materialize x2.T
    # first; the barrier stops XLA from folding the transpose back into the dot (the figures are
    # in benchmarks/RESULTS.md).
    # Under a compute dtype (bfloat16) that barrier is not enough: `_transposed` copies for real.
    x2t = jax.lax.optimization_barrier(x2.T) if compute_dtype is None else _transposed(x2)
    dw = _dot(x2t, d, acc)
    db = jnp.sum(dout, axis=0)
    return dx, dw, db


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _affine(x, w, b, compute_dtype):
    return affine_forward(x, w, b, compute_dtype)[0]


_affine.defvjp(affine_forward, lambda cd, cache, g: affine_backward(g, cache, cd))


def affine(x: Array, w: "Array | TransposedWeight", b: Array, compute_dtype=None) -> Array:
    """Affine layer with the hand-written backward as its VJP. See `affine_forward`.

    `w` may be a `TransposedWeight` (the training engine's storage of the input layer's weight);
    the layer then runs `affine_t` on its (M, D) array. `compute_dtype` (None or e.g. "bfloat16",
    static) is the matmul precision policy of the module comment above.
    """
    x = _master(x, b, compute_dtype)
    if isinstance(w, TransposedWeight):
        return _affine_t(x, w.t, b, compute_dtype)
    return _affine(x, w, b, compute_dtype)


# ---------------------------------------------------------------- affine, transposed weight
class TransposedWeight(NamedTuple):
    """A (D, M) weight stored transposed: `t` holds its (M, D) transpose.

    The training engine stores the input layer's weight this way inside an epoch (see
    `fc_jax.train`): on CPU both of that layer's products are then plain GEMMs with no transpose
    copy. `affine` and `affine_relu` accept it in place of `w`; a model, a loss and an optimizer
    see only a pytree whose single leaf is the stored array. Public params never hold one.
    """

    t: Array  # (M, D) the weight, transposed


class AffineTCache(NamedTuple):
    x: Array  # (N, d1, ..., dk) the input as given (its compute-dtype copy under a policy)
    w_t: Array  # (M, D) the weight, transposed (its compute-dtype copy under a policy)


def affine_t_forward(
    x: Array, w_t: Array, b: Array, compute_dtype=None
) -> tuple[Array, AffineTCache]:
    """`affine_forward(x, w_t.T, b, compute_dtype)` with the weight stored transposed, (M, D).

    The training engine keeps the input layer's weight in this layout inside an epoch: on CPU both
    products of this layer (`x @ w_t.T` and `dw_t = dout.T @ x`) then run as fast GEMMs with no
    transpose copies (benchmarks/RESULTS.md). Public params always hold `W1` as (D, M).
    """
    _check_affine(x, w_t.T, b)
    _check_policy(w_t, b, compute_dtype)
    acc = None if compute_dtype is None else b.dtype
    xc, wc = _cast(compute_dtype, x, w_t)
    x2 = xc.reshape(x.shape[0], -1)
    # (w_t @ x2.T).T rather than x2 @ w_t.T: equal math, but under a sweep's vmap over stacked
    # weights (K, M, D) this orientation is one (K*M, D) x (D, N) GEMM with no (D, K*M) transpose
    # copy of all K weights (faster for K=16 on 2 CPU cores, benchmarks/RESULTS.md); alone it is
    # no slower.
    out = _dot(wc, x2, acc, (((1,), (1,)), ((), ()))).T + b[None, :]
    return out, AffineTCache(xc, wc)


def affine_t_backward(
    dout: Array, cache: AffineTCache, compute_dtype=None
) -> tuple[Array, Array, Array]:
    """Backward of `affine_t_forward`: dx (N, d1, ..., dk), dw_t (M, D), db (M,)."""
    x, w_t = cache
    acc = None if compute_dtype is None else dout.dtype
    (d,) = _cast(compute_dtype, dout)
    x2 = x.reshape(x.shape[0], -1)
    dt = d.T if compute_dtype is None else _transposed(d)  # see `affine_backward`
    return _dot(d, w_t, acc).reshape(x.shape), _dot(dt, x2, acc), jnp.sum(dout, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _affine_t(x, w_t, b, compute_dtype):
    return affine_t_forward(x, w_t, b, compute_dtype)[0]


_affine_t.defvjp(affine_t_forward, lambda cd, cache, g: affine_t_backward(g, cache, cd))


def affine_t(x: Array, w_t: Array, b: Array, compute_dtype=None) -> Array:
    """Affine layer with a transposed (M, D) weight and its hand-written VJP. See `affine_t_forward`."""
    return _affine_t(_master(x, b, compute_dtype), w_t, b, compute_dtype)


# ---------------------------------------------------------------- relu
class ReluCache(NamedTuple):
    x: Array  # the input


def relu_forward(x: Array) -> tuple[Array, ReluCache]:
    """ReLU, `max(0, x)` elementwise. Mirrors cs231n `relu_forward`."""
    return jnp.maximum(x, 0), ReluCache(x)


def relu_backward(dout: Array, cache: ReluCache) -> Array:
    """Backward of `relu_forward`: passes `dout` where `x > 0`. Mirrors cs231n `relu_backward`."""
    return jnp.where(cache.x > 0, dout, jnp.zeros_like(dout))


@jax.custom_vjp
def relu(x: Array) -> Array:
    """ReLU with the hand-written backward as its VJP."""
    return relu_forward(x)[0]


relu.defvjp(relu_forward, lambda cache, g: (relu_backward(g, cache),))


# ---------------------------------------------------------------- affine_relu
class AffineReluCache(NamedTuple):
    x: Array  # (N, d1, ..., dk) input (its compute-dtype copy under a policy)
    w: Array  # (D, M) (its compute-dtype copy under a policy)
    a: Array  # (N, M) pre-activation, in the master dtype


def affine_relu_forward(
    x: Array, w: Array, b: Array, compute_dtype=None
) -> tuple[Array, AffineReluCache]:
    """Affine then ReLU. Mirrors cs231n `layer_utils.affine_relu_forward`."""
    a, c = affine_forward(x, w, b, compute_dtype)
    return jnp.maximum(a, 0), AffineReluCache(c.x, c.w, a)


def affine_relu_backward(
    dout: Array, cache: AffineReluCache, compute_dtype=None
) -> tuple[Array, Array, Array]:
    """Backward of `affine_relu_forward`: (dx, dw, db)."""
    da = relu_backward(dout, ReluCache(cache.a))
    return affine_backward(da, AffineCache(cache.x, cache.w), compute_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _affine_relu(x, w, b, compute_dtype):
    return affine_relu_forward(x, w, b, compute_dtype)[0]


_affine_relu.defvjp(affine_relu_forward, lambda cd, cache, g: affine_relu_backward(g, cache, cd))


def affine_relu(x: Array, w: "Array | TransposedWeight", b: Array, compute_dtype=None) -> Array:
    """Affine then ReLU, with the hand-written backward as its VJP (`w`, `compute_dtype` as in `affine`)."""
    x = _master(x, b, compute_dtype)
    if isinstance(w, TransposedWeight):
        return relu(_affine_t(x, w.t, b, compute_dtype))
    return _affine_relu(x, w, b, compute_dtype)


# ---------------------------------------------------------------- dropout
def _check_keep_prob(keep_prob) -> None:
    if isinstance(keep_prob, jax.core.Tracer):
        return  # a traced value (a sweep axis): validated at the entry point instead
    k = np.asarray(keep_prob)
    if not np.all((k > 0) & (k <= 1)):
        raise ValueError(
            f"keep_prob must be in (0, 1] (the probability of KEEPING a unit); got {keep_prob}"
        )


def dropout_mask(key: Key, keep_prob, shape: tuple[int, ...], dtype=None) -> Array:
    """Draw an inverted-dropout mask: each entry is `1 / keep_prob` with probability `keep_prob`, else 0.

    Note: `keep_prob` is the probability of KEEPING a unit (cs231n's `p`), not a drop rate.

    Args:
      key: a PRNG key.
      keep_prob: scalar in (0, 1]; may be a traced array (sweepable).
      shape: the mask shape, usually `x.shape`.
      dtype: the mask dtype (default: jax's default float dtype).

    Returns:
      mask of `shape` and `dtype`.
    """
    _check_keep_prob(keep_prob)
    dtype = jnp.result_type(float) if dtype is None else dtype
    p = jnp.asarray(keep_prob, dtype)
    keep = jax.random.uniform(key, shape, dtype) < p
    return jnp.where(keep, 1 / p, jnp.zeros((), dtype)).astype(dtype)


class DropoutCache(NamedTuple):
    mask: Array  # 0 or 1 / keep_prob


def dropout_forward(x: Array, mask: Array) -> tuple[Array, DropoutCache]:
    """Inverted dropout with a given mask: `out = x * mask`. Mirrors cs231n `dropout_forward` (train)."""
    if mask.shape != x.shape:
        raise ValueError(f"dropout: mask must have the shape of x {x.shape}; got {mask.shape}")
    return x * mask, DropoutCache(mask)


def dropout_backward(dout: Array, cache: DropoutCache) -> Array:
    """Backward of `dropout_forward`: `dx = dout * mask`."""
    return dout * cache.mask


@jax.custom_vjp
def dropout(x: Array, mask: Array) -> Array:
    """Inverted dropout `x * mask` with its hand-written VJP; build `mask` with `dropout_mask`."""
    return dropout_forward(x, mask)[0]


dropout.defvjp(dropout_forward, lambda cache, g: (dropout_backward(g, cache), None))

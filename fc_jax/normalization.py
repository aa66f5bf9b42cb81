"""Batch and layer normalization as `jax.custom_vjp` functions (re-exported by `fc_jax.layers`).

Contract: as in `fc_jax.layers`, each is a `X_forward -> (out, cache)` / hand-written
`X_backward(dout, cache)` pair built into a custom VJP `X(x, gamma, beta, eps=1e-5)` over (N, D)
inputs, `eps` a Python float (a non-differentiable argument). Batchnorm normalizes over the batch in
train mode; its running statistics are separate pure functions (`batchnorm_stats`,
`batchnorm_update_running` with the course's momentum 0.9) and test mode is `batchnorm_inference`.
`batchnorm_backward` follows the computational graph step by step; `batchnorm_backward_alt` is the
closed form the custom VJP uses. Mirrors cs231n `batchnorm_*` and `layernorm_*`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fc_jax.types import Array

__all__ = [
    "NormCache",
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_alt",
    "batchnorm",
    "batchnorm_stats",
    "batchnorm_update_running",
    "batchnorm_inference",
    "layernorm_forward",
    "layernorm_backward",
    "layernorm",
]


def _check_norm(name: str, x, gamma, beta) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name}: x must have shape (N, D); got {x.shape}")
    for arg, v in (("gamma", gamma), ("beta", beta)):
        if v.shape != (x.shape[1],):
            raise ValueError(
                f"{name}: {arg} must have shape ({x.shape[1]},) to match x {x.shape}; got {v.shape}"
            )


class NormCache(NamedTuple):
    x_centered: (
        Array  # (N, D) x minus its mean (over the batch for batchnorm, the features for layernorm)
    )
    inv_std: Array  # (1, D) for batchnorm, (N, 1) for layernorm: 1 / sqrt(var + eps)
    x_hat: Array  # (N, D) normalized input
    gamma: Array  # (D,)


def _normalize(x, gamma, beta, eps, axis):
    mu = jnp.mean(x, axis=axis, keepdims=True)
    xc = x - mu
    var = jnp.mean(xc * xc, axis=axis, keepdims=True)
    inv_std = jax.lax.rsqrt(var + jnp.asarray(eps, x.dtype))
    x_hat = xc * inv_std
    out = gamma[None, :] * x_hat + beta[None, :]
    return out, NormCache(xc, inv_std, x_hat, gamma)


def _closed_form_backward(dout: Array, cache: NormCache, axis: int) -> tuple[Array, Array, Array]:
    """Backward of `_normalize` over `axis` (0: batchnorm, 1: layernorm), with M = x.shape[axis]:
    `dx = inv_std / M * (M * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat))`, sums over `axis`.
    """
    _, inv_std, x_hat, gamma = cache
    m = dout.shape[axis]
    dbeta = jnp.sum(dout, axis=0)
    dgamma = jnp.sum(dout * x_hat, axis=0)
    dx_hat = dout * gamma[None, :]
    dx = (inv_std / m) * (
        m * dx_hat
        - jnp.sum(dx_hat, axis=axis, keepdims=True)
        - x_hat * jnp.sum(dx_hat * x_hat, axis=axis, keepdims=True)
    )
    return dx, dgamma, dbeta


def _norm_vjp(forward, backward):
    """`forward(x, gamma, beta, eps)[0]` as a custom VJP running `backward(dout, cache)`; `eps` is static."""
    f = jax.custom_vjp(
        lambda x, gamma, beta, eps: forward(x, gamma, beta, eps)[0], nondiff_argnums=(3,)
    )
    f.defvjp(forward, lambda eps, cache, g: backward(g, cache))
    return f


def batchnorm_forward(
    x: Array, gamma: Array, beta: Array, eps: float = 1e-5
) -> tuple[Array, NormCache]:
    """Train-mode batch normalization of (N, D) over the batch axis (biased variance).

    Mirrors cs231n `batchnorm_forward` in train mode; running statistics are kept separately with
    `batchnorm_stats` / `batchnorm_update_running`, and test mode is `batchnorm_inference`.

    Args:
      x: (N, D) inputs; gamma, beta: (D,) scale and shift; eps: variance fuzz.

    Returns:
      out: (N, D); cache: `NormCache`.
    """
    _check_norm("batchnorm", x, gamma, beta)
    return _normalize(x, gamma, beta, eps, axis=0)


def batchnorm_backward(dout: Array, cache: NormCache) -> tuple[Array, Array, Array]:
    """Backward of batchnorm, step by step through the computational graph (cs231n `batchnorm_backward`).

    Returns:
      dx: (N, D), dgamma: (D,), dbeta: (D,).
    """
    xc, inv_std, x_hat, gamma = cache
    n = dout.shape[0]
    dbeta = jnp.sum(dout, axis=0)
    dgamma = jnp.sum(dout * x_hat, axis=0)
    dx_hat = dout * gamma[None, :]
    dinv_std = jnp.sum(dx_hat * xc, axis=0, keepdims=True)  # x_hat = xc * inv_std
    dxc = dx_hat * inv_std
    dstd = -dinv_std * inv_std * inv_std  # inv_std = 1 / std
    dvar = 0.5 * dstd * inv_std  # std = sqrt(var + eps)
    dxc = dxc + 2.0 * xc * dvar / n  # var = mean(xc ** 2)
    dmu = -jnp.sum(dxc, axis=0, keepdims=True)  # xc = x - mu
    dx = dxc + dmu / n  # mu = mean(x)
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout: Array, cache: NormCache) -> tuple[Array, Array, Array]:
    """Closed-form batchnorm backward (cs231n `batchnorm_backward_alt`); equals `batchnorm_backward`.

    `dx = inv_std / N * (N * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat))`, sums over the batch.
    """
    return _closed_form_backward(dout, cache, axis=0)


_batchnorm = _norm_vjp(batchnorm_forward, batchnorm_backward_alt)


def batchnorm(x: Array, gamma: Array, beta: Array, eps: float = 1e-5) -> Array:
    """Train-mode batchnorm of (N, D) with the closed-form backward as its VJP. `eps` is a Python float."""
    return _batchnorm(x, gamma, beta, float(eps))


def batchnorm_stats(x: Array) -> tuple[Array, Array]:
    """Batch mean and biased variance of (N, D) `x`, each (D,), outside autodiff (for running stats)."""
    x = jax.lax.stop_gradient(x)
    mu = jnp.mean(x, axis=0)
    return mu, jnp.mean(jnp.square(x - mu[None, :]), axis=0)


def batchnorm_update_running(
    running_mean: Array, running_var: Array, x: Array, momentum: float = 0.9
) -> tuple[Array, Array]:
    """The course's running averages: `running = momentum * running + (1 - momentum) * batch`.

    Args:
      running_mean, running_var: (D,) current running statistics.
      x: (N, D) the batch being normalized.
      momentum: decay of the running averages (cs231n's default 0.9).

    Returns:
      (new_running_mean, new_running_var), each (D,), in the running statistics' dtype.
    """
    mu, var = batchnorm_stats(x)
    m = jnp.asarray(momentum, running_mean.dtype)
    new_mean = m * running_mean + (1 - m) * mu.astype(running_mean.dtype)
    new_var = m * running_var + (1 - m) * var.astype(running_var.dtype)
    return new_mean, new_var


def batchnorm_inference(
    x: Array, gamma: Array, beta: Array, running_mean: Array, running_var: Array, eps: float = 1e-5
) -> Array:
    """Test-mode batchnorm: normalize with the running statistics (cs231n `batchnorm_forward`, test)."""
    _check_norm("batchnorm", x, gamma, beta)
    inv_std = jax.lax.rsqrt(running_var + jnp.asarray(eps, x.dtype))
    return (x - running_mean[None, :]) * (gamma * inv_std)[None, :] + beta[None, :]


def layernorm_forward(
    x: Array, gamma: Array, beta: Array, eps: float = 1e-5
) -> tuple[Array, NormCache]:
    """Layer normalization: normalize each example of (N, D) over its D features.

    Mirrors cs231n `layernorm_forward` (same in train and test mode).
    """
    _check_norm("layernorm", x, gamma, beta)
    return _normalize(x, gamma, beta, eps, axis=1)


def layernorm_backward(dout: Array, cache: NormCache) -> tuple[Array, Array, Array]:
    """Backward of layernorm (closed form over the features): (dx, dgamma, dbeta)."""
    return _closed_form_backward(dout, cache, axis=1)


_layernorm = _norm_vjp(layernorm_forward, layernorm_backward)


def layernorm(x: Array, gamma: Array, beta: Array, eps: float = 1e-5) -> Array:
    """Layer normalization with the hand-written backward as its VJP. `eps` is a Python float."""
    return _layernorm(x, gamma, beta, float(eps))

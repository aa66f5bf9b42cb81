"""Gradient checking: the course's numeric gradients plus a custom-VJP vs autodiff comparison.

Contract: `eval_numerical_gradient(f, x, verbose=True, h=1e-5)`,
`eval_numerical_gradient_array(f, x, df, h=1e-5)` and `rel_error(x, y)` have the course's semantics
and are host-side numpy (they come from `fc_jax.reference.gradient_check`). `check_vjp(f, plain_f, args)`
compares the VJP of `f` (which runs the hand-written backward) with `jax.vjp` of a plain-jnp forward
for the same random cotangent and returns the worst relative error per argument. Run gradient checks
in float64: `with jax.enable_x64(True): ...`.
"""

from collections.abc import Callable, Sequence

import jax
import numpy as np

from fc_jax.reference.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)

__all__ = ["eval_numerical_gradient", "eval_numerical_gradient_array", "rel_error", "check_vjp"]


def check_vjp(
    f: Callable,
    plain_f: Callable,
    args: Sequence,
    argnums: Sequence[int] | None = None,
    seed: int = 0,
) -> list[float]:
    """Compare the VJP of `f` with the VJP of `plain_f` (autodiff) at `args`.

    Args:
      f: the function under test (usually a `jax.custom_vjp`).
      plain_f: the same math in plain jnp, differentiated by JAX.
      args: the primal arguments, shared by both.
      argnums: which arguments to compare the cotangents of (default: every float argument).
      seed: seed of the random cotangent (drawn on the host from N(0, 1), so it is not all ones).

    Returns:
      The cs231n `rel_error` of each compared argument's cotangent, in `argnums` order.
    """
    if argnums is None:
        argnums = [i for i, a in enumerate(args) if np.issubdtype(np.asarray(a).dtype, np.floating)]
    out, vjp_f = jax.vjp(f, *args)
    out_plain, vjp_plain = jax.vjp(plain_f, *args)
    if np.shape(out) != np.shape(out_plain):
        raise ValueError(f"f and plain_f disagree on the output shape: {np.shape(out)} vs {np.shape(out_plain)}")
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(np.shape(out)).astype(np.asarray(out).dtype)
    ct = vjp_f(jax.numpy.asarray(g))
    ct_plain = vjp_plain(jax.numpy.asarray(g))
    return [rel_error(np.asarray(ct[i]), np.asarray(ct_plain[i])) for i in argnums]

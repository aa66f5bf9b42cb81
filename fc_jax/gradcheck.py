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
import jax.numpy as jnp
import numpy as np

from fc_jax.reference.gradient_check import (
    eval_numerical_gradient_array,
    rel_error,
)

__all__ = [
    "check_vjp",
    "check_all",
]


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
        raise ValueError(
            f"f and plain_f disagree on the output shape: {np.shape(out)} vs {np.shape(out_plain)}"
        )
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(np.shape(out)).astype(np.asarray(out).dtype)
    ct = vjp_f(jax.numpy.asarray(g))
    ct_plain = vjp_plain(jax.numpy.asarray(g))
    return [rel_error(np.asarray(ct[i]), np.asarray(ct_plain[i])) for i in argnums]


# ------------------------------------------------------------------ the `fc-jax gradcheck` suite
def _cases(rng):
    """[(name, f, float64 args, tolerance)]; `f` runs the hand-written backward under jax.vjp."""
    from fc_jax import layers, losses, models, normalization
    from fc_jax.hparams import make_hparams

    r = lambda *shape: rng.standard_normal(shape)
    y = jnp.asarray(rng.integers(0, 5, 8))
    mask = layers.dropout_mask(jax.random.key(1), 0.7, (6, 5), jnp.float64)
    staged = jax.custom_vjp(lambda x, g, b: normalization.batchnorm_forward(x, g, b)[0])
    staged.defvjp(
        normalization.batchnorm_forward, lambda c, d: normalization.batchnorm_backward(d, c)
    )
    cases = [
        ("affine", layers.affine, [r(6, 2, 3), r(6, 4), r(4)], 1e-7),
        ("affine_t", layers.affine_t, [r(6, 2, 3), r(4, 6), r(4)], 1e-7),
        ("relu", layers.relu, [r(6, 5)], 1e-7),
        ("affine_relu", layers.affine_relu, [r(6, 4), r(4, 5), r(5)], 1e-7),
        ("batchnorm", normalization.batchnorm, [3 * r(6, 5) + 2, r(5), r(5)], 1e-7),
        ("batchnorm_backward", staged, [3 * r(6, 5) + 2, r(5), r(5)], 1e-7),
        ("layernorm", normalization.layernorm, [3 * r(6, 5) + 2, r(5), r(5)], 1e-7),
        ("dropout", lambda x: layers.dropout(x, mask), [r(6, 5)], 1e-7),
        ("softmax_loss", lambda s: losses.softmax_loss(s, y), [r(8, 5)], 1e-7),
        ("svm_loss", lambda s: losses.svm_loss(s, y), [r(8, 5)], 1e-7),
    ]
    x, yn = r(4, 6), y[:4] % 3
    for norm, keep in ((None, 0.75), ("batchnorm", 1.0), ("layernorm", 0.75)):
        cfg = models.NetConfig((7, 5), 6, 3, normalization=norm, dropout=keep < 1, dtype="float64")
        p0 = models.init_params(jax.random.key(2), cfg, 0.5)
        hp = make_hparams("sgd", jnp.float64, reg=0.1, keep_prob=keep)

        @jax.jit  # hp is an argument (dropout_mask's keep_prob check needs it traced under jit)
        def loss(hp, *leaves, cfg=cfg, names=tuple(sorted(p0))):  # noqa: B008
            params = dict(zip(names, leaves, strict=True))
            state, key = models.init_state(cfg), jax.random.key(3)
            return models.loss_fn(params, state, x, yn, hp, config=cfg, key=key)[0]

        net = lambda *leaves, loss=loss, hp=hp: loss(hp, *leaves)
        cases.append((f"net_{norm or 'plain'}", net, [np.asarray(p0[k]) for k in sorted(p0)], 1e-6))
    return cases


def check_all(seed: int = 0) -> dict[str, tuple[float, float]]:
    """Central differences (float64) against every custom-VJP layer, loss, and three whole nets.

    Each check uses a random cotangent (not 1), so backward rules must multiply by it. Layers and
    losses report the course's `rel_error`; whole nets report the relative error of the full gradient
    vector, since elementwise round-off swamps parameters the loss ignores (a bias before batchnorm).

    Returns:
      {name: (worst relative error, tolerance)}.
    """
    worst = {}
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        for name, f, xs, tol in _cases(rng):
            f = jax.jit(f)
            out, vjp = jax.vjp(f, *xs)
            dout = rng.standard_normal(np.shape(out))
            an = [np.asarray(a) for a in vjp(dout)]
            num = []
            for i in range(len(xs)):
                fi = lambda x, i=i, f=f, xs=xs: np.asarray(f(*xs[:i], x, *xs[i + 1 :]))
                num.append(eval_numerical_gradient_array(fi, np.array(xs[i]), dout))
            if name.startswith("net"):
                n, a = (np.concatenate([v.ravel() for v in vs]) for vs in (num, an))
                err = float(
                    np.linalg.norm(n - a) / max(1e-8, np.linalg.norm(n) + np.linalg.norm(a))
                )
            else:
                err = max(rel_error(u, v) for u, v in zip(num, an, strict=True))
            worst[name] = (err, tol)
    return worst

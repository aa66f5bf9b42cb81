"""First-order update rules as pure functions: sgd, sgd_momentum, rmsprop, adam, adamw, lion.

Contract: an optimizer is an `Optimizer(init, update)` pair of pure functions,

  init(params) -> state
  update(grads, state, params, hparams, skip=None) -> (new_params, new_state)

  params: a pytree of floating arrays (fc_jax uses a flat dict `W1, b1, gamma1, ...`; a bare
    array works too). grads: the loss gradient, same structure, shapes and dtypes as params.
  state: the rule's NamedTuple (`SGDState`, `MomentumState`, `RMSPropState`, `AdamState`,
    `AdamWState`, `LionState`) whose fields use the cs231n config names (`velocity`, `cache`, `t`,
    `m`, `v`).
  hparams: an `fc_jax.hparams.HParams` of scalar arrays. The rules read only their own fields,
    each cast to the dtype of the parameter it updates, so float32 hyperparameters do not upcast
    float64 parameters (and back): the dtypes of params and state never change.
  skip: None, or a scalar bool array; where true the step is skipped: params and state come back
    unchanged, bit for bit (the training step passes its divergence flag). Every rule is written
    for one array (its math only) and lifted to pytrees by `_lift`, which applies `skip` to the new
    state first and computes the new params from that guarded state. Selecting after the
    update instead (`skippable`, for a rule written without `skip`) gives the same values (up to
    how XLA rounds a fused multiply-add), but XLA then recomputes the state inside the parameter
    update and, since the old state is still read there, copies every parameter and state buffer
    each step (measured by `benchmarks/ab_engine.py`, "select after"; figures in
    benchmarks/RESULTS.md).

`update` returns the new parameters (cs231n's `next_w`), not an update to apply, and nothing
here closes over a hyperparameter: a new learning rate is new data, not a new compilation, and
`jax.vmap` over stacked params, state and `HParams` runs a sweep. The functions are not jitted;
wrap the whole training step (or epoch) in `jax.jit`. The math follows cs231n `optim.py`
(mirrored in NumPy by `fc_jax.reference.optim`); in particular Adam (and AdamW) increments `t`
before its bias correction. AdamW (Loshchilov & Hutter) and Lion (Chen et al. 2023) go beyond the
course; their decoupled weight decay (`hparams.weight_decay`) acts on every leaf.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fc_jax.hparams import HParams
from fc_jax.types import Array, Grads, Params

__all__ = [
    "Optimizer",
    "SGDState",
    "MomentumState",
    "RMSPropState",
    "AdamState",
    "AdamWState",
    "LionState",
    "sgd",
    "sgd_momentum",
    "rmsprop",
    "adam",
    "adamw",
    "lion",
    "OPTIMIZERS",
    "get_optimizer",
    "skippable",
]


class Optimizer(NamedTuple):
    """An `(init, update)` pair of pure functions (see the module docstring).

    init(params) -> state: the rule's NamedTuple state; each array field has the tree structure,
      shapes and dtypes of `params`.
    update(grads, state, params, hparams, skip=None) -> (new_params, new_state): one step, or
      none where `skip` is true. `grads` and `params` share structure, shapes and dtypes; outputs
      keep those of `params` and `state`. Wrap a four-argument rule in `skippable`.
    Under `jax.vmap` every array (`skip` too) may carry a leading sweep axis `(S, ...)`.
    """

    init: Callable[[Params], Any]
    update: Callable[..., tuple[Params, Any]]


def _keep(skip, new, old):
    """`new`, or `old` where `skip` is true (no select at all when `skip` is None)."""
    return new if skip is None else jnp.where(skip, old, new)


def skippable(update: Callable[[Grads, Any, Params, HParams], tuple[Params, Any]]):
    """Give a four-argument `update(grads, state, params, hparams)` the `skip` argument.

    The step runs, then params and state are selected (old where `skip` is true). The built-in
    rules take `skip` themselves, which compiles to less memory traffic (see the module docstring).
    """

    def update_or_skip(grads, state, params, hparams, skip=None):
        new_params, new_state = update(grads, state, params, hparams)
        keep = lambda new, old: jax.tree.map(lambda n, o: _keep(skip, n, o), new, old)  # noqa: E731
        return keep(new_params, params), keep(new_state, state)

    return update_or_skip


def _scalars(grads: Grads, params: Params, hparams: HParams, make: Callable[..., tuple]) -> dict:
    """Check the arguments; return `make(dtype)` (the rule's scalar constants) per leaf dtype.

    The scalars are computed once per update for each distinct parameter dtype (usually one), so
    the per-element work is only the rule's fused update expression.
    """
    if not isinstance(hparams, HParams):
        raise TypeError(f"hparams must be an fc_jax.hparams.HParams, got {type(hparams).__name__}")
    if jax.tree.structure(grads) != jax.tree.structure(params):
        raise ValueError(
            "grads must have the same tree structure as params: got "
            f"{jax.tree.structure(grads)} and {jax.tree.structure(params)}"
        )
    dtypes = set()
    for path, p in jax.tree_util.tree_leaves_with_path(params):
        dtype = getattr(p, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            got = dtype if dtype is not None else type(p).__name__
            name = f"params{jax.tree_util.keystr(path)}"
            raise TypeError(f"{name} must be a floating-point array, got {got}")
        dtypes.add(dtype)
    return {d: make(d) for d in dtypes}


def _lift(leaf, grads: Grads, buffers: tuple, params: Params, scalars: dict, skip) -> tuple:
    """Apply a rule written for one array to every leaf, with `skip` applied here, once.

    `leaf(p, g, *buffers, *scalars) -> (new_buffers, step)` is the rule's math on one array (`g`
    already cast to `p.dtype`, `scalars` the rule's constants for that dtype): its new state
    buffers, and `step(*buffers) -> new p`. The new buffers are guarded first and the parameter
    is computed from the guarded ones, so a skipped step returns everything unchanged, bit for
    bit, and XLA can update every buffer in place (see the module docstring).

    Returns:
      (new params, *new buffer trees), each shaped like `params`.
    """

    def one(p, g, *old):
        new, step = leaf(p, jnp.asarray(g, p.dtype), *old, *scalars[p.dtype])
        new = tuple(_keep(skip, n, o) for n, o in zip(new, old, strict=True))
        return (_keep(skip, step(*new), p), *new)

    out = jax.tree.map(one, params, grads, *buffers)
    return tuple(jax.tree.map(lambda _, o, i=i: o[i], params, out) for i in range(1 + len(buffers)))


# --------------------------------------------------------------------------------------------
class SGDState(NamedTuple):
    """Vanilla SGD keeps no state."""


def _sgd_leaf(p, g, lr):
    return (), lambda: p - lr * g


def sgd() -> Optimizer:
    r"""Vanilla stochastic gradient descent. Mirrors cs231n `sgd`.

    .. math::
        w_t = w_{t-1} - \mathrm{lr} \cdot g_t

    Reads `hparams.learning_rate`. The state is the empty `SGDState()`.

    Example:
        >>> import jax.numpy as jnp
        >>> from fc_jax.hparams import make_hparams
        >>> opt = sgd()
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> grads = {"w": jnp.array([0.5, 0.5])}
        >>> new, state = opt.update(grads, opt.init(params), params, make_hparams("sgd"))
        >>> print([round(float(x), 4) for x in new["w"]])
        [0.995, -2.005]
    """

    def init(params: Params) -> SGDState:
        del params
        return SGDState()

    def update(grads, state, params, hparams, skip=None):
        s = _scalars(grads, params, hparams, lambda d: (jnp.asarray(hparams.learning_rate, d),))
        (new_params,) = _lift(_sgd_leaf, grads, (), params, s, skip)
        return new_params, state

    return Optimizer(init, update)


# --------------------------------------------------------------------------------------------
class MomentumState(NamedTuple):
    """State of `sgd_momentum`."""

    velocity: Params  # like params: the running velocity v


def _momentum_leaf(p, g, v, lr, mu):
    v = mu * v - lr * g  # velocity
    return (v,), lambda v: p + v


def sgd_momentum() -> Optimizer:
    r"""Stochastic gradient descent with (heavy-ball) momentum. Mirrors cs231n `sgd_momentum`.

    .. math::
        v_t &= \mu \cdot v_{t-1} - \mathrm{lr} \cdot g_t \\
        w_t &= w_{t-1} + v_t

    Reads `hparams.learning_rate` and `hparams.momentum` (:math:`\mu`); the velocity starts at 0.
    """

    def init(params: Params) -> MomentumState:
        return MomentumState(velocity=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params, hparams, skip=None):

        def make(d):
            return jnp.asarray(hparams.learning_rate, d), jnp.asarray(hparams.momentum, d)

        s = _scalars(grads, params, hparams, make)
        new_params, velocity = _lift(_momentum_leaf, grads, (state.velocity,), params, s, skip)
        return new_params, MomentumState(velocity=velocity)

    return Optimizer(init, update)


# --------------------------------------------------------------------------------------------
class RMSPropState(NamedTuple):
    """State of `rmsprop`."""

    cache: Params  # like params: the moving average of squared gradients


def _rmsprop_leaf(p, g, cache, lr, dr, one_minus_dr, eps):
    cache = dr * cache + one_minus_dr * (g * g)  # moving average of g^2
    return (cache,), lambda cache: p - lr * g / (jnp.sqrt(cache) + eps)


def rmsprop() -> Optimizer:
    r"""RMSProp: per-parameter step sizes from a moving average of g². Mirrors cs231n `rmsprop`.

    .. math::
        c_t &= \rho \cdot c_{t-1} + (1 - \rho) \cdot g_t^2 \\
        w_t &= w_{t-1} - \mathrm{lr} \cdot g_t / (\sqrt{c_t} + \epsilon)

    Reads `hparams.learning_rate`, `hparams.decay_rate` (:math:`\rho`) and `hparams.epsilon`;
    the cache starts at 0.
    """

    def init(params: Params) -> RMSPropState:
        return RMSPropState(cache=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params, hparams, skip=None):

        def make(d):
            lr, dr, eps = (
                jnp.asarray(h, d)
                for h in (hparams.learning_rate, hparams.decay_rate, hparams.epsilon)
            )
            return lr, dr, 1 - dr, eps

        s = _scalars(grads, params, hparams, make)
        new_params, cache = _lift(_rmsprop_leaf, grads, (state.cache,), params, s, skip)
        return new_params, RMSPropState(cache=cache)

    return Optimizer(init, update)


# --------------------------------------------------------------------------------------------
class AdamState(NamedTuple):
    """State of `adam`, with the cs231n config names."""

    t: Array  # shape=(), int32: the number of updates taken so far
    m: Params  # like params: the moving average of gradients (first moment)
    v: Params  # like params: the moving average of squared gradients (second moment)


def _adam_leaf(p, g, m, v, b1, one_minus_b1, b2, one_minus_b2, eps, step, inv_bc2):
    m = b1 * m + one_minus_b1 * g  # first moment
    v = b2 * v + one_minus_b2 * (g * g)  # second moment
    # w - lr * (m / bc1) / (sqrt(v / bc2) + eps), with lr / bc1 and 1 / bc2 folded into scalars.
    return (m, v), lambda m, v: p - step * m / (jnp.sqrt(v * inv_bc2) + eps)


def adam() -> Optimizer:
    r"""Adam with bias-corrected moment estimates. Mirrors cs231n `adam`.

    .. math::
        t &\leftarrow t + 1 \\
        m_t &= \beta_1 \cdot m_{t-1} + (1 - \beta_1) \cdot g_t \\
        v_t &= \beta_2 \cdot v_{t-1} + (1 - \beta_2) \cdot g_t^2 \\
        \hat m_t &= m_t / (1 - \beta_1^t), \quad \hat v_t = v_t / (1 - \beta_2^t) \\
        w_t &= w_{t-1} - \mathrm{lr} \cdot \hat m_t / (\sqrt{\hat v_t} + \epsilon)

    Reads `hparams.learning_rate`, `beta1`, `beta2` and `epsilon`; `m` and `v` start at 0 and
    `t` at 0. Like cs231n (and unlike some papers' pseudo-code), `t` is incremented *before* the
    bias correction, so the first update uses `t = 1`, and `epsilon` is added outside the square
    root of the bias-corrected second moment. The two bias corrections are computed once per
    update as scalars.

    Example (minimize ``w**2``; each early Adam step moves every weight by about ``lr``):
        >>> import jax.numpy as jnp
        >>> from fc_jax.hparams import make_hparams
        >>> opt = adam()
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = opt.init(params)
        >>> hp = make_hparams("adam", learning_rate=0.1)
        >>> for _ in range(3):
        ...     grads = {"w": 2 * params["w"]}
        ...     params, state = opt.update(grads, state, params, hp)
        >>> print(int(state.t), [round(float(x), 2) for x in params["w"]])
        3 [0.7, -1.7]
    """

    def init(params: Params) -> AdamState:
        # Separate buffers for m and v, so a jitted step may donate the state.
        m, v = (jax.tree.map(jnp.zeros_like, params) for _ in range(2))
        return AdamState(t=jnp.zeros((), jnp.int32), m=m, v=v)

    def update(grads, state, params, hparams, skip=None):
        t = state.t + 1

        def make(d):
            lr, b1, b2, eps = (
                jnp.asarray(h, d)
                for h in (hparams.learning_rate, hparams.beta1, hparams.beta2, hparams.epsilon)
            )
            bc1, bc2 = 1 - b1**t, 1 - b2**t  # bias corrections, scalars
            return b1, 1 - b1, b2, 1 - b2, eps, lr / bc1, 1 / bc2

        s = _scalars(grads, params, hparams, make)
        new_params, m, v = _lift(_adam_leaf, grads, (state.m, state.v), params, s, skip)
        return new_params, AdamState(t=_keep(skip, t, state.t), m=m, v=v)

    return Optimizer(init, update)


# --------------------------------------------------------------------------------------------
class AdamWState(NamedTuple):
    """State of `adamw`: Adam's fields."""

    t: Array  # shape=(), int32: the number of updates taken so far
    m: Params  # like params: the moving average of gradients (first moment)
    v: Params  # like params: the moving average of squared gradients (second moment)


def _adamw_leaf(p, g, m, v, b1, one_minus_b1, b2, one_minus_b2, eps, step, inv_bc2, lr_wd):
    m = b1 * m + one_minus_b1 * g  # first moment
    v = b2 * v + one_minus_b2 * (g * g)  # second moment
    # w - lr * (mhat / (sqrt(vhat) + eps) + wd * w), with lr / bc1, 1 / bc2 and lr * wd as scalars.
    return (m, v), lambda m, v: p - (step * m / (jnp.sqrt(v * inv_bc2) + eps) + lr_wd * p)


def adamw() -> Optimizer:
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay Regularization").

    .. math::
        t &\leftarrow t + 1 \\
        m_t &= \beta_1 \cdot m_{t-1} + (1 - \beta_1) \cdot g_t \\
        v_t &= \beta_2 \cdot v_{t-1} + (1 - \beta_2) \cdot g_t^2 \\
        \hat m_t &= m_t / (1 - \beta_1^t), \quad \hat v_t = v_t / (1 - \beta_2^t) \\
        w_t &= w_{t-1} - \mathrm{lr} \cdot (\hat m_t / (\sqrt{\hat v_t} + \epsilon)
               + \lambda \cdot w_{t-1})

    Reads `hparams.learning_rate`, `beta1`, `beta2`, `epsilon` and `weight_decay`
    (:math:`\lambda`); `m`, `v` and `t` start at 0. The moments and `t` follow `adam` exactly
    (`t` is incremented before the bias correction), and `weight_decay = 0` is Adam. The decay is
    decoupled from the gradient (not the L2 term `reg`, which Adam rescales) and is multiplied by
    the learning rate, as in PyTorch and optax, so `lr_decay` shrinks it too. It acts on every
    leaf (biases and batchnorm's gamma, beta too, like PyTorch's default); for weights-only decay
    use `reg`.

    Example (minimize ``w**2``; each step is about ``lr * (1 + wd * |w|)``):
        >>> import jax.numpy as jnp
        >>> from fc_jax.hparams import make_hparams
        >>> opt = adamw()
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = opt.init(params)
        >>> hp = make_hparams("adamw", learning_rate=0.1, weight_decay=0.5)
        >>> for _ in range(3):
        ...     grads = {"w": 2 * params["w"]}
        ...     params, state = opt.update(grads, state, params, hp)
        >>> print(int(state.t), [round(float(x), 2) for x in params["w"]])
        3 [0.57, -1.43]
    """

    def init(params: Params) -> AdamWState:
        # Separate buffers for m and v, so a jitted step may donate the state.
        m, v = (jax.tree.map(jnp.zeros_like, params) for _ in range(2))
        return AdamWState(t=jnp.zeros((), jnp.int32), m=m, v=v)

    def update(grads, state, params, hparams, skip=None):
        t = state.t + 1

        def make(d):
            lr, b1, b2, eps, wd = (
                jnp.asarray(h, d)
                for h in (
                    hparams.learning_rate,
                    hparams.beta1,
                    hparams.beta2,
                    hparams.epsilon,
                    hparams.weight_decay,
                )
            )
            bc1, bc2 = 1 - b1**t, 1 - b2**t  # bias corrections, scalars
            return b1, 1 - b1, b2, 1 - b2, eps, lr / bc1, 1 / bc2, lr * wd

        s = _scalars(grads, params, hparams, make)
        new_params, m, v = _lift(_adamw_leaf, grads, (state.m, state.v), params, s, skip)
        return new_params, AdamWState(t=_keep(skip, t, state.t), m=m, v=v)

    return Optimizer(init, update)


# --------------------------------------------------------------------------------------------
class LionState(NamedTuple):
    """State of `lion`."""

    m: Params  # like params: the momentum, a moving average of gradients


def _lion_leaf(p, g, m, lr, b1, one_minus_b1, b2, one_minus_b2, lr_wd):
    c = b1 * m + one_minus_b1 * g  # the interpolation whose sign is the step, from the old m
    m = b2 * m + one_minus_b2 * g  # momentum
    return (m,), lambda m: p - (lr * jnp.sign(c) + lr_wd * p)


def lion() -> Optimizer:
    r"""Lion, the sign of an interpolated momentum (Chen et al. 2023, "Symbolic Discovery of
    Optimization Algorithms").

    .. math::
        c_t &= \beta_1 \cdot m_{t-1} + (1 - \beta_1) \cdot g_t \\
        w_t &= w_{t-1} - \mathrm{lr} \cdot (\mathrm{sign}(c_t) + \lambda \cdot w_{t-1}) \\
        m_t &= \beta_2 \cdot m_{t-1} + (1 - \beta_2) \cdot g_t

    Reads `hparams.learning_rate`, `beta1`, `beta2` and `weight_decay` (:math:`\lambda`); `m`
    starts at 0 (`sign(0) = 0`: a leaf with zero gradient and zero momentum does not move). Every
    element moves by exactly `lr` (plus the decay), so Lion wants a learning rate 3-10x smaller
    than Adam's (default 1e-4) and, for the same effective decay `lr * wd`, a larger
    `weight_decay`. The decay is decoupled, multiplied by the learning rate, and acts on every leaf.

    Example (minimize ``w**2``; each step moves every weight by exactly ``lr``):
        >>> import jax.numpy as jnp
        >>> from fc_jax.hparams import make_hparams
        >>> opt = lion()
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = opt.init(params)
        >>> hp = make_hparams("lion", learning_rate=0.1)
        >>> for _ in range(3):
        ...     grads = {"w": 2 * params["w"]}
        ...     params, state = opt.update(grads, state, params, hp)
        >>> print([round(float(x), 2) for x in params["w"]])
        [0.7, -1.7]
    """

    def init(params: Params) -> LionState:
        return LionState(m=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params, hparams, skip=None):

        def make(d):
            lr, b1, b2, wd = (
                jnp.asarray(h, d)
                for h in (hparams.learning_rate, hparams.beta1, hparams.beta2, hparams.weight_decay)
            )
            return lr, b1, 1 - b1, b2, 1 - b2, lr * wd

        s = _scalars(grads, params, hparams, make)
        new_params, m = _lift(_lion_leaf, grads, (state.m,), params, s, skip)
        return new_params, LionState(m=m)

    return Optimizer(init, update)


# --------------------------------------------------------------------------------------------
OPTIMIZERS: dict[str, Callable[[], Optimizer]] = {
    "sgd": sgd,
    "sgd_momentum": sgd_momentum,
    "rmsprop": rmsprop,
    "adam": adam,
    "adamw": adamw,
    "lion": lion,
}


def get_optimizer(name: str) -> Optimizer:
    """Return the optimizer for a cs231n `update_rule` name.

    Args:
      name: one of "sgd", "sgd_momentum", "rmsprop", "adam", "adamw", "lion".

    Returns:
      The `Optimizer(init, update)` built by the matching factory.

    Raises:
      ValueError: if `name` is not one of the names above.

    Example:
        >>> import jax.numpy as jnp
        >>> get_optimizer("adam").init({"w": jnp.zeros(3)}).t.dtype
        dtype('int32')
    """
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"unknown update_rule {name!r}; expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name]()

"""cs231n `optim.py` over the pure optimizers of `fc_jax.optim`.

Contract: each rule is `rule(w, dw, config=None) -> (next_w, config)`, as in the course.

  w: the current weights (NumPy array, floating dtype); dw: the gradient, same shape.
  config: a dict of hyperparameters and optimizer state. Missing entries get the course's defaults
    via `config.setdefault` (sgd: learning_rate 1e-2; sgd_momentum: learning_rate 1e-2,
    momentum 0.9, velocity zeros; rmsprop: learning_rate 1e-2, decay_rate 0.99, epsilon 1e-8,
    cache zeros; adam: learning_rate 1e-3, beta1 0.9, beta2 0.999, epsilon 1e-8, m and v zeros,
    t 0). The new state is written back into this same dict (NumPy arrays; adam's `t` a Python
    int), which is also returned.

Each call reads the dict, builds an `HParams` (data, so a new learning rate never recompiles) and
the core state (`MomentumState(velocity)`, `RMSPropState(cache)`, `AdamState(t, m, v)`), runs the
core rule's jitted `update` in w's precision (float64 inside `jax.enable_x64(True)`), and writes
the returned state back with `config.update(...)`. As in the course, adam increments `t` before
its bias correction.
"""

import jax
import numpy as np

from fc_jax import optim as _core
from fc_jax.cs231n._bridge import HPARAM_FILLERS, precision, to_numpy
from fc_jax.hparams import HParams, validate_hparams

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam"]

# The course's defaults, in the order the course sets them. State entries (velocity, cache, m, v,
# t) are filled in separately because they depend on w.
_DEFAULTS = {
    "sgd": {"learning_rate": 1e-2},
    "sgd_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "rmsprop": {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
}
_UPDATES: dict[str, object] = {}


def _update_fn(rule: str):
    fn = _UPDATES.get(rule)
    if fn is None:
        fn = _UPDATES[rule] = jax.jit(_core.get_optimizer(rule).update)
    return fn


def _step(rule: str, w, dw, config: dict | None, state_keys: tuple[str, ...]):
    """Fill defaults, run the core update, write the new state back; return (next_w, config)."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise TypeError(f"{rule}: config must be a dict or None; got {type(config).__name__}")
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.floating):
        raise TypeError(f"{rule}: w must be a floating-point array; got dtype {w.dtype}")
    dw = np.asarray(dw, dtype=w.dtype)
    if dw.shape != w.shape:
        raise ValueError(f"{rule}: dw must have w's shape {w.shape}; got {dw.shape}")
    for name, value in _DEFAULTS[rule].items():
        config.setdefault(name, value)
    for name in state_keys:
        config.setdefault(name, 0 if name == "t" else np.zeros_like(w))
    validate_hparams({name: config[name] for name in _DEFAULTS[rule]})

    values = {**HPARAM_FILLERS, **{name: config[name] for name in _DEFAULTS[rule]}}
    hparams = HParams(**{name: np.asarray(values[name], w.dtype) for name in HParams._fields})
    state = _state(rule, config, w)
    with precision(w):
        next_w, new_state = _update_fn(rule)(dw, state, w, hparams)
        next_w, new_state = to_numpy(next_w), to_numpy(new_state)
    if rule == "adam":
        new_state = new_state._replace(t=int(new_state.t))
    config.update(new_state._asdict())
    return next_w, config


def _state(rule: str, config: dict, w: np.ndarray):
    """The core optimizer state from the config's entries (arrays cast to w's dtype and shape)."""

    def arr(name):
        a = np.asarray(config[name], dtype=w.dtype)
        if a.shape != w.shape:
            raise ValueError(
                f"{rule}: config[{name!r}] must have w's shape {w.shape}; got {a.shape}"
            )
        return a

    if rule == "sgd":
        return _core.SGDState()
    if rule == "sgd_momentum":
        return _core.MomentumState(velocity=arr("velocity"))
    if rule == "rmsprop":
        return _core.RMSPropState(cache=arr("cache"))
    t = np.asarray(config["t"])
    if t.ndim or not np.issubdtype(t.dtype, np.integer) or t < 0:
        raise ValueError(f"adam: config['t'] must be a non-negative integer; got {config['t']!r}")
    return _core.AdamState(t=t.astype(np.int32), m=arr("m"), v=arr("v"))


def sgd(w, dw, config=None):
    """Vanilla SGD: `next_w = w - learning_rate * dw`. config: learning_rate (1e-2)."""
    return _step("sgd", w, dw, config, ())


def sgd_momentum(w, dw, config=None):
    """SGD with momentum: `v = momentum * v - learning_rate * dw; next_w = w + v`.

    config: learning_rate (1e-2), momentum (0.9), velocity (zeros like w; written back).
    """
    return _step("sgd_momentum", w, dw, config, ("velocity",))


def rmsprop(w, dw, config=None):
    """RMSProp: `cache = decay_rate * cache + (1 - decay_rate) * dw**2;
    next_w = w - learning_rate * dw / (sqrt(cache) + epsilon)`.

    config: learning_rate (1e-2), decay_rate (0.99), epsilon (1e-8), cache (zeros; written back).
    """
    return _step("rmsprop", w, dw, config, ("cache",))


def adam(w, dw, config=None):
    """Adam with bias correction; `t` is incremented before the correction, as in the course.

        t += 1; m = beta1 * m + (1 - beta1) * dw; v = beta2 * v + (1 - beta2) * dw**2
        next_w = w - learning_rate * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + epsilon)

    config: learning_rate (1e-3), beta1 (0.9), beta2 (0.999), epsilon (1e-8), m and v (zeros),
    t (0); m, v and t are written back.
    """
    return _step("adam", w, dw, config, ("m", "v", "t"))

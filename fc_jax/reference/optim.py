"""First-order update rules in NumPy: the cs231n `optim.py` API, used as the tests' oracle.

Contract: each rule (the course's sgd, sgd_momentum, rmsprop, adam, and beyond the course adamw
and lion) has the signature `rule(w, dw, config=None) -> (next_w, config)`.

  w: an array of the current weights; dw: an array of the same shape, the loss gradient w.r.t. w.
  config: a dict of hyperparameters and optimizer state (learning rate, moving averages, ...).
    Missing entries are filled with the rule's defaults via `config.setdefault`, and the new
    state is written back into this same dict, which is also returned.

This module imports NumPy only, never JAX: it is the independent reference that `fc_jax.optim`
is tested against, and the `--backend numpy` fallback.
"""

import numpy as np

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam", "adamw", "lion"]


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent: `next_w = w - learning_rate * dw`.

    config format:
      learning_rate: scalar learning rate (default 1e-2).
    """
    if config is None:
        config = {}
    config.setdefault("learning_rate", 1e-2)

    next_w = w - config["learning_rate"] * dw
    return next_w, config


def sgd_momentum(w, dw, config=None):
    """Stochastic gradient descent with momentum.

        v = momentum * v - learning_rate * dw
        next_w = w + v

    config format:
      learning_rate: scalar learning rate (default 1e-2).
      momentum: scalar in [0, 1) giving the momentum value (default 0.9); 0 reduces to sgd.
      velocity: array of the same shape as w and dw holding the moving average of the gradients
        (default zeros).
    """
    if config is None:
        config = {}
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("momentum", 0.9)
    config.setdefault("velocity", np.zeros_like(w))

    v = config["momentum"] * config["velocity"] - config["learning_rate"] * dw
    next_w = w + v

    config["velocity"] = v
    return next_w, config


def rmsprop(w, dw, config=None):
    """RMSProp: a moving average of squared gradients sets per-parameter learning rates.

        cache = decay_rate * cache + (1 - decay_rate) * dw**2
        next_w = w - learning_rate * dw / (sqrt(cache) + epsilon)

    config format:
      learning_rate: scalar learning rate (default 1e-2).
      decay_rate: scalar in [0, 1) giving the decay rate of the squared-gradient cache
        (default 0.99).
      epsilon: small scalar that avoids dividing by zero (default 1e-8).
      cache: moving average of second moments of the gradients (default zeros).
    """
    if config is None:
        config = {}
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("decay_rate", 0.99)
    config.setdefault("epsilon", 1e-8)
    config.setdefault("cache", np.zeros_like(w))

    dr = config["decay_rate"]
    cache = dr * config["cache"] + (1 - dr) * dw**2
    next_w = w - config["learning_rate"] * dw / (np.sqrt(cache) + config["epsilon"])

    config["cache"] = cache
    return next_w, config


def adam(w, dw, config=None):
    """Adam: moving averages of the gradient and its square, with bias correction.

    The step counter is incremented *before* the bias correction, as in the course:

        t = t + 1
        m = beta1 * m + (1 - beta1) * dw;      mt = m / (1 - beta1**t)
        v = beta2 * v + (1 - beta2) * dw**2;   vt = v / (1 - beta2**t)
        next_w = w - learning_rate * mt / (sqrt(vt) + epsilon)

    config format:
      learning_rate: scalar learning rate (default 1e-3).
      beta1: decay rate for the moving average of the first moment of the gradient (default 0.9).
      beta2: decay rate for the moving average of the second moment (default 0.999).
      epsilon: small scalar that avoids dividing by zero (default 1e-8).
      m: moving average of the gradient (default zeros).
      v: moving average of the squared gradient (default zeros).
      t: iteration number (default 0).
    """
    if config is None:
        config = {}
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    config.setdefault("m", np.zeros_like(w))
    config.setdefault("v", np.zeros_like(w))
    config.setdefault("t", 0)

    b1, b2 = config["beta1"], config["beta2"]
    t = config["t"] + 1
    m = b1 * config["m"] + (1 - b1) * dw
    mt = m / (1 - b1**t)
    v = b2 * config["v"] + (1 - b2) * dw**2
    vt = v / (1 - b2**t)
    next_w = w - config["learning_rate"] * mt / (np.sqrt(vt) + config["epsilon"])

    config["t"], config["m"], config["v"] = t, m, v
    return next_w, config


def adamw(w, dw, config=None):
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter).

    The moments and the step counter follow `adam` (t is incremented before the bias correction):

        t = t + 1
        m = beta1 * m + (1 - beta1) * dw;      mt = m / (1 - beta1**t)
        v = beta2 * v + (1 - beta2) * dw**2;   vt = v / (1 - beta2**t)
        next_w = w - learning_rate * (mt / (sqrt(vt) + epsilon) + weight_decay * w)

    config format: as `adam` (defaults learning_rate 1e-3, beta1 0.9, beta2 0.999, epsilon 1e-8),
    plus weight_decay: scalar >= 0, the decoupled decay rate (default 1e-2).
    """
    if config is None:
        config = {}
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    config.setdefault("weight_decay", 1e-2)
    config.setdefault("m", np.zeros_like(w))
    config.setdefault("v", np.zeros_like(w))
    config.setdefault("t", 0)

    b1, b2 = config["beta1"], config["beta2"]
    t = config["t"] + 1
    m = b1 * config["m"] + (1 - b1) * dw
    mt = m / (1 - b1**t)
    v = b2 * config["v"] + (1 - b2) * dw**2
    vt = v / (1 - b2**t)
    step = mt / (np.sqrt(vt) + config["epsilon"]) + config["weight_decay"] * w
    next_w = w - config["learning_rate"] * step

    config["t"], config["m"], config["v"] = t, m, v
    return next_w, config


def lion(w, dw, config=None):
    """Lion (Chen et al. 2023): the sign of an interpolation of momentum and gradient.

        c = beta1 * m + (1 - beta1) * dw
        next_w = w - learning_rate * (sign(c) + weight_decay * w)
        m = beta2 * m + (1 - beta2) * dw

    config format:
      learning_rate: scalar learning rate (default 1e-4).
      beta1: interpolation weight of the momentum in c (default 0.9).
      beta2: decay rate of the momentum (default 0.99).
      weight_decay: scalar >= 0, the decoupled decay rate (default 0).
      m: the momentum, a moving average of the gradient (default zeros).
    """
    if config is None:
        config = {}
    config.setdefault("learning_rate", 1e-4)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.99)
    config.setdefault("weight_decay", 0.0)
    config.setdefault("m", np.zeros_like(w))

    b1, b2 = config["beta1"], config["beta2"]
    c = b1 * config["m"] + (1 - b1) * dw
    next_w = w - config["learning_rate"] * (np.sign(c) + config["weight_decay"] * w)

    config["m"] = b2 * config["m"] + (1 - b2) * dw
    return next_w, config

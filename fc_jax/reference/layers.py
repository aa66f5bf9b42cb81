"""Layers and losses in NumPy with hand-written backward passes: the cs231n `layers.py` API.

Contract: every layer is a pair `*_forward(inputs..., param_dict) -> (out, cache)` and
`*_backward(dout, cache) -> grads`, with the course's names, argument order and return values.
A cache is a tuple. Losses return `(loss, dx)` with the loss averaged over the N examples.
Every function preserves the dtype of its inputs (float32 in, float32 out).

Dropout's `p` is the KEEP probability, as in the course: `p=0.75` keeps 75% of the units and zeroes
25%. Kept units are scaled by `1 / p` (inverted dropout), so test mode is the identity.

This module imports NumPy only, never JAX: it is the oracle for `fc_jax.layers`/`fc_jax.losses`.
"""

import numpy as np

__all__ = [
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "affine_relu_forward",
    "affine_relu_backward",
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


def affine_forward(x, w, b):
    """Affine (fully-connected) layer: `out = x.reshape(N, D) @ w + b`. Mirrors cs231n.

    Args:
      x: (N, d_1, ..., d_k) inputs, flattened to (N, D) with D = d_1 * ... * d_k.
      w: (D, M) weights.
      b: (M,) biases.

    Returns:
      out: (N, M) outputs; cache: (x, w, b).
    """
    x2 = x.reshape(x.shape[0], -1)
    if w.ndim != 2 or w.shape[0] != x2.shape[1]:
        raise ValueError(f"affine_forward: w must have shape ({x2.shape[1]}, M), got {w.shape}")
    if b.shape != (w.shape[1],):
        raise ValueError(f"affine_forward: b must have shape ({w.shape[1]},), got {b.shape}")
    out = x2 @ w + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    """Backward pass of `affine_forward`.

    Args:
      dout: (N, M) upstream gradient; cache: (x, w, b) from `affine_forward`.

    Returns:
      dx: gradient with x's shape (N, d_1, ..., d_k); dw: (D, M); db: (M,).
    """
    x, w, _ = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = np.sum(dout, axis=0)
    return dx, dw, db


def relu_forward(x):
    """Rectified linear unit: `out = max(0, x)`. Returns `(out, cache=x)`; any shape."""
    out = np.maximum(x, 0)
    return out, x


def relu_backward(dout, cache):
    """Backward pass of `relu_forward`: `dx = dout * (x > 0)`, same shape as x."""
    x = cache
    return dout * (x > 0)


def affine_relu_forward(x, w, b):
    """An affine layer followed by a ReLU. Returns `(out, (affine_cache, relu_cache))`."""
    a, fc_cache = affine_forward(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Backward pass of `affine_relu_forward`. Returns `(dx, dw, db)`."""
    fc_cache, relu_cache = cache
    da = relu_backward(dout, relu_cache)
    return affine_backward(da, fc_cache)


def _normalize(x, axis, eps):
    """Centre and scale x along `axis` (biased var, keepdims). Returns (mu, var, xc, std, xn)."""
    mu = np.mean(x, axis=axis, keepdims=True)
    xc = x - mu
    var = np.mean(xc**2, axis=axis, keepdims=True)
    std = np.sqrt(var + eps)
    return mu, var, xc, std, xc / std


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization over the batch axis. Mirrors cs231n `batchnorm_forward`.

    In train mode the batch mean and biased variance normalize x, and the running averages are
    updated in place in `bn_param`: `running = momentum * running + (1 - momentum) * batch_stat`.
    In test mode the running averages normalize x.

    Args:
      x: (N, D) inputs.
      gamma: (D,) scale; beta: (D,) shift.
      bn_param: dict with 'mode' ('train' or 'test'), optional 'eps' (default 1e-5), 'momentum'
        (default 0.9), 'running_mean' and 'running_var' ((D,), default zeros of x's dtype).

    Returns:
      out: (N, D); cache: a tuple for `batchnorm_backward` / `batchnorm_backward_alt`.
    """
    mode = bn_param.get("mode")
    if mode not in ("train", "test"):
        raise ValueError(f"bn_param['mode'] must be 'train' or 'test', got {mode!r}")
    if x.ndim != 2:
        raise ValueError(f"batchnorm_forward: x must have shape (N, D), got {x.shape}")
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    D = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))

    if mode == "train":
        mu, var, xc, std, xn = _normalize(x, 0, eps)
        running_mean = momentum * running_mean + (1 - momentum) * mu[0]
        running_var = momentum * running_var + (1 - momentum) * var[0]
    else:
        xc = x - running_mean
        std = np.sqrt(running_var + eps)[None, :]
        xn = xc / std
    out = gamma * xn + beta

    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return out, (xc, std, xn, gamma, mode)


def batchnorm_backward(dout, cache):
    """Backward pass of batch normalization, step by step through the computational graph.

    Args:
      dout: (N, D) upstream gradient; cache: from `batchnorm_forward`.

    Returns:
      dx: (N, D); dgamma: (D,); dbeta: (D,).
    """
    xc, std, xn, gamma, mode = cache
    N = dout.shape[0]
    dbeta = np.sum(dout, axis=0)  # out = gamma * xn + beta
    dgamma = np.sum(dout * xn, axis=0)
    dxn = dout * gamma
    dxc = dxn / std  # xn = xc / std
    if mode == "test":  # running statistics are constants
        return dxc, dgamma, dbeta
    dstd = -np.sum(dxn * xc / std**2, axis=0)
    dvar = 0.5 * dstd / std[0]  # std = sqrt(var + eps)
    dxc = dxc + (2.0 / N) * xc * dvar  # var = mean(xc**2)
    dmu = -np.sum(dxc, axis=0)  # xc = x - mu
    dx = dxc + dmu / N  # mu = mean(x)
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """Backward pass of batch normalization in closed form (same inputs and outputs as above).

    dx = (1 / (N * std)) * (N * dxn - sum(dxn) - xn * sum(dxn * xn)),  with dxn = gamma * dout.
    """
    xc, std, xn, gamma, mode = cache
    N = dout.shape[0]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * xn, axis=0)
    dxn = dout * gamma
    if mode == "test":
        return dxn / std, dgamma, dbeta
    dx = (N * dxn - dxn.sum(axis=0) - xn * np.sum(dxn * xn, axis=0)) / (N * std)
    return dx, dgamma, dbeta


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalization: normalize each example over its features. Mirrors cs231n.

    Train and test modes are identical and no running statistics are kept.

    Args:
      x: (N, D) inputs; gamma: (D,) scale; beta: (D,) shift.
      ln_param: dict with optional 'eps' (default 1e-5); any other key is ignored.

    Returns:
      out: (N, D); cache: a tuple for `layernorm_backward`.
    """
    if x.ndim != 2:
        raise ValueError(f"layernorm_forward: x must have shape (N, D), got {x.shape}")
    eps = ln_param.get("eps", 1e-5)
    *_, std, xn = _normalize(x, 1, eps)
    out = gamma * xn + beta
    return out, (std, xn, gamma)


def layernorm_backward(dout, cache):
    """Backward pass of layer normalization (closed form, per example).

    Returns:
      dx: (N, D); dgamma: (D,); dbeta: (D,).
    """
    std, xn, gamma = cache
    D = dout.shape[1]
    dbeta = np.sum(dout, axis=0)
    dgamma = np.sum(dout * xn, axis=0)
    dxn = dout * gamma
    dx = (
        D * dxn - dxn.sum(axis=1, keepdims=True) - xn * np.sum(dxn * xn, axis=1, keepdims=True)
    ) / (D * std)
    return dx, dgamma, dbeta


def dropout_forward(x, dropout_param):
    """Inverted dropout. Mirrors cs231n `dropout_forward`.

    NOTE: `p` is the KEEP probability (each unit survives with probability p), not the drop rate.

    If 'seed' is present, `np.random.seed(seed)` runs first (in either mode, as the course does).
    In train mode the mask is `(np.random.rand(*x.shape) < p) / p`, or, if given,
    `dropout_param['mask']` (values 0 or 1/p, x's shape) used as-is with no random draw, so tests
    can inject the mask that fc_jax drew. Test mode is the identity.

    Args:
      x: inputs of any shape.
      dropout_param: dict with 'p' (keep probability in (0, 1]), 'mode' ('train' or 'test'),
        optional 'seed' and optional 'mask'.

    Returns:
      out: same shape and dtype as x; cache: (dropout_param, mask).
    """
    p, mode = dropout_param["p"], dropout_param["mode"]
    if not 0 < p <= 1:
        raise ValueError(f"dropout_param['p'] is the keep probability, in (0, 1]; got {p!r}")
    if mode not in ("train", "test"):
        raise ValueError(f"dropout_param['mode'] must be 'train' or 'test', got {mode!r}")
    if "seed" in dropout_param:
        np.random.seed(dropout_param["seed"])

    mask = None
    if mode == "train":
        mask = dropout_param.get("mask")
        if mask is None:
            mask = (np.random.rand(*x.shape) < p) / p
        elif np.shape(mask) != x.shape:
            raise ValueError(
                f"dropout_param['mask'] must have shape {x.shape}, got {np.shape(mask)}"
            )
        else:
            mask = np.asarray(mask)
        out = x * mask
    else:
        out = x
    return out.astype(x.dtype, copy=False), (dropout_param, mask)


def dropout_backward(dout, cache):
    """Backward pass of `dropout_forward`: `dx = dout * mask` in train mode, `dout` in test mode."""
    dropout_param, mask = cache
    if dropout_param["mode"] == "train":
        return (dout * mask).astype(dout.dtype, copy=False)
    return dout


def _check_labels(x, y, name):
    if x.ndim != 2:
        raise ValueError(f"{name}: x must have shape (N, C), got {x.shape}")
    y = np.asarray(y)
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"{name}: y must be integer labels of shape ({x.shape[0]},), "
            f"got dtype {y.dtype} and shape {y.shape}"
        )
    if y.size and (y.min() < 0 or y.max() >= x.shape[1]):
        raise ValueError(f"{name}: labels must lie in [0, {x.shape[1]}), got {y.min()}..{y.max()}")
    return y


def svm_loss(x, y):
    """Multiclass SVM (hinge) loss with margin 1, averaged over N.

    Args:
      x: (N, C) scores; y: (N,) integer labels in [0, C).

    Returns:
      loss: scalar; dx: (N, C) gradient of the loss w.r.t. x.
    """
    y = _check_labels(x, y, "svm_loss")
    N = x.shape[0]
    rows = np.arange(N)
    margins = np.maximum(0, x - x[rows, y][:, None] + 1.0)
    margins[rows, y] = 0
    loss = np.sum(margins) / N
    positive = margins > 0
    dx = positive.astype(x.dtype)
    dx[rows, y] -= np.sum(positive, axis=1)
    dx /= N
    return loss, dx


def softmax_loss(x, y, label_smoothing=0.0):
    """Softmax cross-entropy loss, averaged over N; stable (scores shifted by their row max).

    With label smoothing `ls` the target is `(1 - ls) * onehot(y) + ls / C`:
    `loss = -sum(target * log_softmax(x)) / N` and `dx = (softmax(x) - target) / N`.

    Args:
      x: (N, C) scores; y: (N,) integer labels in [0, C).
      label_smoothing: scalar in [0, 1); 0 (the default) is the course's loss, computed as ever.

    Returns:
      loss: scalar; dx: (N, C) gradient of the loss w.r.t. x.
    """
    y = _check_labels(x, y, "softmax_loss")
    ls = float(label_smoothing)
    if not 0 <= ls < 1:
        raise ValueError(f"softmax_loss: label_smoothing must be in [0, 1), got {label_smoothing}")
    N, C = x.shape
    rows = np.arange(N)
    shifted = x - np.max(x, axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    if ls == 0:  # the course's formula
        loss = -np.sum(log_probs[rows, y]) / N
        dx = np.exp(log_probs)
        dx[rows, y] -= 1
    else:
        target = np.full_like(log_probs, ls / C)
        target[rows, y] += 1 - ls
        loss = -np.sum(target * log_probs) / N
        dx = np.exp(log_probs) - target
    dx /= N
    return loss, dx

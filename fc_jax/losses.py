"""Classification losses as `jax.custom_vjp` functions, plus the L2 penalty.

Contract: `softmax_loss(scores, y)` and `svm_loss(scores, y)` take scores (N, C) and integer labels
(N,) and return the scalar mean loss. Each is built from `*_forward(scores, y) -> (loss, cache)` and a
hand-written `*_backward(dloss, cache) -> dscores` that multiplies by the incoming cotangent `dloss`
(so `grad(lambda s: 3 * softmax_loss(s, y))` is three times the plain gradient). Labels get no
cotangent. `softmax_loss(scores, y, label_smoothing)` also takes a scalar array in [0, 1) (data, so
it can be swept; it gets no cotangent either); at 0 every number equals the course's loss bit for
bit. The facade's course API (`(loss, dx)` pairs) is in `fc_jax.cs231n.layers`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax.types import Array, Params

__all__ = [
    "SoftmaxCache",
    "softmax_loss_forward",
    "softmax_loss_backward",
    "softmax_loss",
    "SVMCache",
    "svm_loss_forward",
    "svm_loss_backward",
    "svm_loss",
    "l2_penalty",
]


def _check_scores_labels(scores, y) -> None:
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (N, C); got {scores.shape}")
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"y must hold integer class labels; got dtype {y.dtype}")
    if y.shape != (scores.shape[0],):
        raise ValueError(
            f"y must have shape ({scores.shape[0]},) to match scores {scores.shape}; got {y.shape}"
        )
    if not isinstance(y, jax.core.Tracer):  # a value check is possible only outside tracing
        y_np = np.asarray(y)
        if y_np.size and (y_np.min() < 0 or y_np.max() >= scores.shape[1]):
            raise ValueError(
                f"labels y must be in [0, {scores.shape[1] - 1}] for {scores.shape[1]} classes; "
                f"got min {y_np.min()}, max {y_np.max()}"
            )


def _check_smoothing(label_smoothing) -> None:
    if jnp.ndim(label_smoothing) != 0:
        raise ValueError(
            f"label_smoothing must be a scalar; got shape {jnp.shape(label_smoothing)}"
        )
    if not isinstance(label_smoothing, jax.core.Tracer):  # a value check only outside tracing
        v = float(label_smoothing)
        if not 0 <= v < 1:
            raise ValueError(f"label_smoothing must be in [0, 1); got {v}")


# ---------------------------------------------------------------- softmax
class SoftmaxCache(NamedTuple):
    probs: Array  # (N, C) softmax probabilities
    y: Array  # (N,) integer labels
    label_smoothing: Array | None = None  # () in the scores' dtype; None: the course's loss


def softmax_loss_forward(
    scores: Array, y: Array, label_smoothing: Array | None = None
) -> tuple[Array, SoftmaxCache]:
    """Mean cross-entropy of softmax(scores), stable for large scores (log-sum-exp).

    With label smoothing `ls` the target is `(1 - ls) * onehot(y) + ls / C` and the loss is the mean
    over N of `-sum_c target_c * log_softmax(scores)_c`, computed per example as
    `(1 - ls) * (-log p_y) + (ls / C) * sum_c (-log p_c)`. Where `ls` is 0 the course's per-example
    loss `-log p_y` is selected as is, so the loss is bit-identical to `label_smoothing=None`.

    Args:
      scores: (N, C) class scores; y: (N,) integer labels in [0, C).
      label_smoothing: None (the course's loss), or a scalar in [0, 1).

    Returns:
      loss: scalar; cache: `SoftmaxCache(probs, y, label_smoothing)`.
    """
    _check_scores_labels(scores, y)
    shifted = scores - jax.lax.stop_gradient(jnp.max(scores, axis=1, keepdims=True))
    log_probs = shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=1, keepdims=True))
    picked = jnp.take_along_axis(log_probs, y[:, None], axis=1)
    if label_smoothing is None:
        return -jnp.mean(picked), SoftmaxCache(jnp.exp(log_probs), y)
    ls = jnp.asarray(label_smoothing, scores.dtype)
    c = scores.shape[1]
    smoothed = (1 - ls) * picked + (ls / c) * jnp.sum(log_probs, axis=1, keepdims=True)
    loss = -jnp.mean(jnp.where(ls == 0, picked, smoothed))
    return loss, SoftmaxCache(jnp.exp(log_probs), y, ls)


def softmax_loss_backward(dloss: Array, cache: SoftmaxCache) -> Array:
    """Backward of the softmax loss: `dscores = dloss * (probs - target) / N`.

    `target` is `onehot(y)`, or `(1 - ls) * onehot(y) + ls / C` with label smoothing (equal to
    `onehot(y)` bit for bit where `ls` is 0).
    """
    probs, y, ls = cache
    n, c = probs.shape
    target = jax.nn.one_hot(y, c, dtype=probs.dtype)
    if ls is not None:
        target = (1 - ls) * target + ls / c
    return (probs - target) * (dloss / n)


@jax.custom_vjp
def _softmax_loss(scores, y):
    return softmax_loss_forward(scores, y)[0]


_softmax_loss.defvjp(softmax_loss_forward, lambda cache, g: (softmax_loss_backward(g, cache), None))


@jax.custom_vjp
def _smoothed_softmax_loss(scores, y, label_smoothing):
    return softmax_loss_forward(scores, y, label_smoothing)[0]


_smoothed_softmax_loss.defvjp(
    softmax_loss_forward, lambda cache, g: (softmax_loss_backward(g, cache), None, None)
)


def softmax_loss(scores: Array, y: Array, label_smoothing: Array | None = None) -> Array:
    """Mean softmax cross-entropy with the hand-written backward as its VJP. Mirrors cs231n `softmax_loss`.

    Args:
      scores: (N, C) class scores; y: (N,) integer labels in [0, C).
      label_smoothing: None (default: the course's loss, the same operations as ever), or a scalar
        (array) in [0, 1): the target puts `1 - ls + ls / C` on the label and `ls / C` on every
        other class. It is data: a new value does not recompile, `jax.vmap` over it sweeps it, and
        it gets no cotangent. 0 gives the course's loss and gradient bit for bit.

    Returns:
      The scalar mean loss, in the dtype of `scores`.

    Example:
        >>> import jax.numpy as jnp
        >>> s, y = jnp.array([[2.0, 0, 0, 0], [0, 0, 0, 2.0]]), jnp.array([0, 3])
        >>> print(round(float(softmax_loss(s, y)), 4), round(float(softmax_loss(s, y, 0.1)), 4))
        0.3408 0.4908
    """
    _check_scores_labels(scores, y)
    if label_smoothing is None:
        return _softmax_loss(scores, y)
    _check_smoothing(label_smoothing)
    return _smoothed_softmax_loss(scores, y, label_smoothing)


# ---------------------------------------------------------------- multiclass SVM
class SVMCache(NamedTuple):
    margins: Array  # (N, C) hinge margins, zero at the correct class
    y: Array  # (N,) integer labels


def svm_loss_forward(scores: Array, y: Array) -> tuple[Array, SVMCache]:
    """Multiclass SVM: mean over examples of `sum_{j != y} max(0, s_j - s_y + 1)`.

    Args:
      scores: (N, C); y: (N,) integer labels in [0, C).

    Returns:
      loss: scalar; cache: `SVMCache(margins, y)`.
    """
    _check_scores_labels(scores, y)
    n, c = scores.shape
    correct = jnp.take_along_axis(scores, y[:, None], axis=1)
    is_y = jax.nn.one_hot(y, c, dtype=jnp.bool_)
    margins = jnp.where(is_y, jnp.zeros((), scores.dtype), jnp.maximum(0, scores - correct + 1))
    return jnp.sum(margins) / n, SVMCache(margins, y)


def svm_loss_backward(dloss: Array, cache: SVMCache) -> Array:
    """Backward of the SVM loss: +1 per positive margin, minus their count at the correct class, / N."""
    margins, y = cache
    n, c = margins.shape
    positive = (margins > 0).astype(margins.dtype)
    onehot = jax.nn.one_hot(y, c, dtype=margins.dtype)
    dscores = positive - onehot * jnp.sum(positive, axis=1, keepdims=True)
    return dscores * (dloss / n)


@jax.custom_vjp
def _svm_loss(scores, y):
    return svm_loss_forward(scores, y)[0]


_svm_loss.defvjp(svm_loss_forward, lambda cache, g: (svm_loss_backward(g, cache), None))


def svm_loss(scores: Array, y: Array) -> Array:
    """Mean multiclass SVM loss with the hand-written backward as its VJP. Mirrors cs231n `svm_loss`."""
    _check_scores_labels(scores, y)
    return _svm_loss(scores, y)


# ---------------------------------------------------------------- regularization
def l2_penalty(params: Params, reg: Array) -> Array:
    """`0.5 * reg * sum(W ** 2)` over the weight matrices (keys starting with "W") only.

    Plain jnp: autodiff gives `reg * W`, as the course adds to each weight gradient.
    """
    weights = [v for k, v in params.items() if k.startswith("W")]
    r = 0.5 * jnp.asarray(reg, weights[0].dtype)
    return sum(r * jnp.sum(w * w) for w in weights)

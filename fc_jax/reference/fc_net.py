"""Fully-connected classifiers in NumPy: the cs231n `classifiers/fc_net.py` API.

Contract: a model holds `self.params` (a dict `W1, b1, [gamma1, beta1,] ..., WL, bL`) and
`loss(X, y=None)`, which returns the (N, C) class scores when `y` is None (test mode), otherwise
`(loss, grads)` with `grads` keyed like `params`. The L2 penalty `0.5 * reg * sum(W**2)` covers
the weight matrices only. Weights are drawn from NumPy's global RNG in the course's order, so a
seeded run reproduces the course notebooks' numbers.

This module imports NumPy only, never JAX.
"""

import numpy as np

from fc_jax.reference.layers import (
    affine_backward,
    affine_forward,
    affine_relu_backward,
    affine_relu_forward,
    batchnorm_backward_alt,
    batchnorm_forward,
    dropout_backward,
    dropout_forward,
    layernorm_backward,
    layernorm_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
)

__all__ = ["TwoLayerNet", "FullyConnectedNet", "init_fully_connected"]

_NORMALIZATIONS = (None, "batchnorm", "layernorm")


class TwoLayerNet:
    """affine - relu - affine - softmax, in float64. Mirrors cs231n `TwoLayerNet`.

    Args:
      input_dim: D, the size of one flattened input.
      hidden_dim: H, the hidden layer's width.
      num_classes: C.
      weight_scale: standard deviation of the normal initial weights (biases start at zero).
      reg: L2 regularization strength.
    """

    def __init__(
        self, input_dim=3 * 32 * 32, hidden_dim=100, num_classes=10, weight_scale=1e-3, reg=0.0
    ):
        self.reg = reg
        self.params = {
            "W1": weight_scale * np.random.randn(input_dim, hidden_dim),
            "b1": np.zeros(hidden_dim),
            "W2": weight_scale * np.random.randn(hidden_dim, num_classes),
            "b2": np.zeros(num_classes),
        }

    def loss(self, X, y=None):
        """Scores (N, C) if y is None, else (loss, grads). X: (N, d_1, ..., d_k); y: (N,)."""
        p = self.params
        h, cache1 = affine_relu_forward(X, p["W1"], p["b1"])
        scores, cache2 = affine_forward(h, p["W2"], p["b2"])
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)
        loss += 0.5 * self.reg * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))
        grads = {}
        dh, grads["W2"], grads["b2"] = affine_backward(dscores, cache2)
        _, grads["W1"], grads["b1"] = affine_relu_backward(dh, cache1)
        grads["W1"] += self.reg * p["W1"]
        grads["W2"] += self.reg * p["W2"]
        return loss, grads


def init_fully_connected(
    net,
    hidden_dims,
    input_dim,
    num_classes,
    dropout_keep_ratio,
    normalization,
    reg,
    weight_scale,
    dtype,
    seed,
):
    """The course's `FullyConnectedNet.__init__`: set `net`'s attributes, drawing the weights from
    NumPy's global RNG in the course's order (W_i = weight_scale * randn(fan_in, fan_out), b_i zeros,
    then gamma/beta for hidden layers), so a seeded notebook reproduces the course's numbers. Shared
    by this reference net and the `fc_jax.cs231n` facade's net.
    """
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if not 0 < dropout_keep_ratio <= 1:
        raise ValueError(f"dropout_keep_ratio must be in (0, 1], got {dropout_keep_ratio!r}")
    net.normalization = normalization
    net.use_dropout = dropout_keep_ratio != 1
    net.reg = reg
    net.num_layers = 1 + len(hidden_dims)
    net.dtype = dtype
    net.params = {}

    dims = [input_dim, *hidden_dims, num_classes]
    for i in range(1, net.num_layers + 1):
        net.params[f"W{i}"] = weight_scale * np.random.randn(dims[i - 1], dims[i])
        net.params[f"b{i}"] = np.zeros(dims[i])
        if normalization is not None and i < net.num_layers:
            net.params[f"gamma{i}"] = np.ones(dims[i])
            net.params[f"beta{i}"] = np.zeros(dims[i])

    net.dropout_param = {}
    if net.use_dropout:
        net.dropout_param = {"mode": "train", "p": dropout_keep_ratio}
        if seed is not None:
            net.dropout_param["seed"] = seed

    net.bn_params = []
    if normalization == "batchnorm":
        net.bn_params = [{"mode": "train"} for _ in range(net.num_layers - 1)]
    elif normalization == "layernorm":
        net.bn_params = [{} for _ in range(net.num_layers - 1)]

    for k, v in net.params.items():
        net.params[k] = v.astype(dtype)


class FullyConnectedNet:
    """{affine - [batch/layer norm] - relu - [dropout]} x (L - 1) - affine - softmax.

    Mirrors cs231n `FullyConnectedNet`. `dropout_param` and `bn_params` (one dict per hidden layer)
    are the course's mutable dicts; batchnorm running statistics live in `bn_params`.

    Args:
      hidden_dims: widths of the L - 1 hidden layers.
      input_dim: D, the size of one flattened input.
      num_classes: C.
      dropout_keep_ratio: dropout KEEP probability in (0, 1]; 1 means no dropout.
      normalization: None, 'batchnorm' or 'layernorm'.
      reg: L2 regularization strength.
      weight_scale: standard deviation of the normal initial weights.
      dtype: dtype of the parameters and the computation (float64 for gradient checks).
      seed: if given, dropout re-seeds NumPy's global RNG with it on every call (deterministic).
    """

    def __init__(
        self,
        hidden_dims,
        input_dim=3 * 32 * 32,
        num_classes=10,
        dropout_keep_ratio=1,
        normalization=None,
        reg=0.0,
        weight_scale=1e-2,
        dtype=np.float32,
        seed=None,
    ):
        init_fully_connected(
            self,
            hidden_dims,
            input_dim,
            num_classes,
            dropout_keep_ratio,
            normalization,
            reg,
            weight_scale,
            dtype,
            seed,
        )

    def _hidden_forward(self, x, i):
        """Layer i: affine - [norm] - relu - [dropout]. Returns (out, cache)."""
        p = self.params
        if self.normalization is None:
            out, cache = affine_relu_forward(x, p[f"W{i}"], p[f"b{i}"])
        else:
            a, fc_cache = affine_forward(x, p[f"W{i}"], p[f"b{i}"])
            norm = batchnorm_forward if self.normalization == "batchnorm" else layernorm_forward
            an, norm_cache = norm(a, p[f"gamma{i}"], p[f"beta{i}"], self.bn_params[i - 1])
            out, relu_cache = relu_forward(an)
            cache = (fc_cache, norm_cache, relu_cache)
        do_cache = None
        if self.use_dropout:
            out, do_cache = dropout_forward(out, self.dropout_param)
        return out, (cache, do_cache)

    def _hidden_backward(self, dout, cache, i, grads):
        """Backward of layer i; writes W/b/gamma/beta grads into `grads`, returns dx."""
        cache, do_cache = cache
        if self.use_dropout:
            dout = dropout_backward(dout, do_cache)
        if self.normalization is None:
            dx, grads[f"W{i}"], grads[f"b{i}"] = affine_relu_backward(dout, cache)
            return dx
        fc_cache, norm_cache, relu_cache = cache
        dan = relu_backward(dout, relu_cache)
        norm = batchnorm_backward_alt if self.normalization == "batchnorm" else layernorm_backward
        da, grads[f"gamma{i}"], grads[f"beta{i}"] = norm(dan, norm_cache)
        dx, grads[f"W{i}"], grads[f"b{i}"] = affine_backward(da, fc_cache)
        return dx

    def loss(self, X, y=None):
        """Scores (N, C) if y is None (test mode), else (loss, grads) (train mode).

        Args:
          X: (N, d_1, ..., d_k) inputs, cast to the model's dtype.
          y: (N,) integer labels in [0, C), or None.
        """
        X = X.astype(self.dtype)
        mode = "test" if y is None else "train"
        if self.use_dropout:
            self.dropout_param["mode"] = mode
        if self.normalization == "batchnorm":
            for bn_param in self.bn_params:
                bn_param["mode"] = mode

        L = self.num_layers
        h, caches = X, []
        for i in range(1, L):
            h, cache = self._hidden_forward(h, i)
            caches.append(cache)
        scores, last_cache = affine_forward(h, self.params[f"W{L}"], self.params[f"b{L}"])
        if mode == "test":
            return scores

        loss, dscores = softmax_loss(scores, y)
        grads = {}
        dh, grads[f"W{L}"], grads[f"b{L}"] = affine_backward(dscores, last_cache)
        for i in range(L - 1, 0, -1):
            dh = self._hidden_backward(dh, caches[i - 1], i, grads)
        for i in range(1, L + 1):
            W = self.params[f"W{i}"]
            loss += 0.5 * self.reg * np.sum(W * W)
            grads[f"W{i}"] += self.reg * W
        return loss, grads

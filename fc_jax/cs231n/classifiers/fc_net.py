"""cs231n `classifiers/fc_net.py`: `TwoLayerNet` and `FullyConnectedNet` over `fc_jax.models`.

Contract (the course's): a model holds `params` (a plain dict of NumPy arrays `W1, b1, [gamma1,
beta1,] ..., WL, bL` that users may assign into), `reg`, and for `FullyConnectedNet` the mutable
`dropout_param` and `bn_params`. `loss(X, y=None)` returns (N, C) scores (test mode) when `y` is
None, else `(loss, grads)` (train mode) with `grads` keyed like `params`, all NumPy.

Each call reads the dicts fresh, runs one jitted core function (`models.forward` in test mode,
`value_and_grad(models.loss_fn)` in train mode; one jit per NetConfig and mode, built once and
cached, float64 inside `jax.enable_x64(True)`), writes the batchnorm state returned by the core back
into `bn_params[i]`, and returns NumPy arrays of the model's dtype. `reg` is passed as data, so
changing it never recompiles. Randomness is the course's NumPy global RNG: initialization draws
`weight_scale * np.random.randn(fan_in, fan_out)` layer by layer, and dropout masks are drawn on
the host exactly as the course's `dropout_forward` draws them (re-seeding with `seed` before each
layer's mask when a seed is given) and handed to the core as `masks`. So `np.random.seed(231)`
reproduces the course's numbers.
"""

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import models
from fc_jax.cs231n._bridge import (
    HPARAM_FILLERS,
    cached_jit,
    keep_prob_of,
    mode_of,
    precision,
    to_numpy,
    to_scalar,
)
from fc_jax.hparams import HParams
from fc_jax.reference.fc_net import init_fully_connected

__all__ = ["TwoLayerNet", "FullyConnectedNet"]

_NORMALIZATIONS = (None, "batchnorm", "layernorm")


@lru_cache(maxsize=256)
def _config(dims: tuple[int, ...], normalization, dropout: bool, dtype: str) -> models.NetConfig:
    return models.NetConfig(
        hidden_dims=dims[1:-1],
        input_dim=dims[0],
        num_classes=dims[-1],
        normalization=normalization,
        dropout=dropout,
        dtype=dtype,
    )


def loss_key(config: models.NetConfig, train: bool) -> tuple:
    """The jit-cache key of a model's loss (`_bridge.trace_count(loss_key(...))` counts traces)."""
    return ("fc_net.loss", config, train)


def _build(config: models.NetConfig, train: bool):
    if not train:
        return lambda params, state, X: models.forward(
            params, state, X, config=config, train=False
        )[0]

    def train_fn(params, state, X, y, reg, masks):
        fill = {k: jnp.asarray(v, reg.dtype) for k, v in HPARAM_FILLERS.items()}
        hp = HParams(**{**fill, "reg": reg})  # reg is data: a new value never recompiles
        grad_fn = jax.value_and_grad(models.loss_fn, has_aux=True)
        (loss, (new_state, _)), grads = grad_fn(
            params, state, X, y, hp, config=config, train=True, masks=masks
        )
        return loss, grads, new_state

    return train_fn


class _Net:
    """The facade's machinery; subclasses set params, reg, num_layers, normalization, dropout."""

    normalization = None
    use_dropout = False
    dropout_param: dict = {}
    bn_params: list = []

    def _dtype(self, X: np.ndarray) -> np.dtype:
        raise NotImplementedError

    def loss(self, X, y=None):
        """Scores (N, C) if y is None (test mode), else (loss, grads) (train mode).

        Args:
          X: (N, d1, ..., dk) inputs with d1 * ... * dk equal to the input dimension.
          y: (N,) integer labels in [0, C), or None.

        Returns:
          scores (N, C), or (loss, grads): a NumPy scalar and a dict keyed like `params`.
        """
        X = np.asarray(X)
        dtype = self._dtype(X)
        X = X.astype(dtype, copy=False)
        mode = "test" if y is None else "train"
        if self.use_dropout:
            self.dropout_param["mode"] = mode
        if self.normalization == "batchnorm":
            for bn_param in self.bn_params:
                bn_param["mode"] = mode
        params = {k: np.asarray(v, dtype) for k, v in self.params.items()}
        L = self.num_layers
        dims = (params["W1"].shape[0], *(params[f"W{i}"].shape[1] for i in range(1, L + 1)))
        train = mode == "train"
        if train:  # check everything before drawing from the global RNG
            y = _labels(y, X.shape[0], dims[-1])
            reg = float(self.reg)
            if not np.isfinite(reg) or reg < 0:
                raise ValueError(f"reg must be a finite number >= 0; got {self.reg!r}")
        p = keep_prob_of(self.dropout_param) if self.use_dropout else 1.0
        state = self._state(dims[1:-1], dtype)
        masks = self._masks(X.shape[0], dims[1:-1], dtype, mode)
        config = _config(dims, self.normalization, p < 1, dtype.name)
        fn = cached_jit(loss_key(config, train), lambda: _build(config, train))
        if not train:
            with precision(X):
                return to_numpy(fn(params, state, X))
        with precision(X):
            out = fn(params, state, X, y, np.asarray(reg, dtype), masks if p < 1 else None)
            loss, grads, new_state = to_scalar(out[0]), to_numpy(out[1]), to_numpy(out[2])
        for i, bn_param in enumerate(self.bn_params if state else (), start=1):
            bn_param["running_mean"] = new_state[f"running_mean{i}"]
            bn_param["running_var"] = new_state[f"running_var{i}"]
        return loss, grads

    def _masks(self, n: int, hidden: tuple[int, ...], dtype, mode: str):
        """The course's dropout masks, drawn layer by layer from NumPy's global RNG (train mode)."""
        if not self.use_dropout:
            return None
        p = keep_prob_of(self.dropout_param)
        seed = self.dropout_param.get("seed")
        if mode == "test":  # the course's dropout_forward re-seeds even in test mode
            if "seed" in self.dropout_param:
                np.random.seed(seed)
            return None
        masks = []
        for h in hidden:
            if "seed" in self.dropout_param:
                np.random.seed(seed)
            masks.append(((np.random.rand(n, h) < p) / p).astype(dtype))
        return tuple(masks)

    def _state(self, hidden: tuple[int, ...], dtype) -> dict:
        """Check the normalization dicts; batchnorm running stats as the core's state dict."""
        if self.normalization is None:
            return {}
        if len(self.bn_params) != len(hidden):
            raise ValueError(f"bn_params must hold one dict per hidden layer ({len(hidden)})")
        state = {}
        for i, (bn_param, h) in enumerate(zip(self.bn_params, hidden, strict=True), start=1):
            eps, momentum = bn_param.get("eps", 1e-5), bn_param.get("momentum", 0.9)
            if eps != models.NORM_EPS or momentum != models.BN_MOMENTUM:
                raise ValueError(
                    f"bn_params[{i - 1}]: the net supports only the course's eps={models.NORM_EPS} "
                    f"and momentum={models.BN_MOMENTUM}; got eps={eps}, momentum={momentum}"
                )
            if self.normalization == "batchnorm":
                mode_of(bn_param, f"bn_params[{i - 1}]")
                for name in ("running_mean", "running_var"):
                    bn_param.setdefault(name, np.zeros(h, dtype=dtype))
                    state[f"{name}{i}"] = np.asarray(bn_param[name], dtype)
        return state


def _labels(y, n: int, num_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must be integer labels of shape ({n},); got {y.dtype} {y.shape}")
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels y must lie in [0, {num_classes}); got {y.min()}..{y.max()}")
    return y.astype(np.int32)


class TwoLayerNet(_Net):
    """affine - relu - affine - softmax. Mirrors cs231n `TwoLayerNet`; parameters are float64.

    Args:
      input_dim: D; hidden_dim: H; num_classes: C.
      weight_scale: std of the normal initial weights (`np.random.randn`, global RNG); biases 0.
      reg: L2 strength.
    """

    num_layers = 2

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

    def _dtype(self, X):  # numpy promotion of X and the parameters, as the course computes
        return np.result_type(X.dtype, *(v.dtype for v in self.params.values()), np.float32)


class FullyConnectedNet(_Net):
    """{affine - [batch/layer norm] - relu - [dropout]} x (L - 1) - affine - softmax.

    Mirrors cs231n `FullyConnectedNet`.

    Args:
      hidden_dims: widths of the L - 1 hidden layers.
      input_dim: D; num_classes: C.
      dropout_keep_ratio: dropout KEEP probability in (0, 1]; 1 means no dropout. (`dropout` is
        accepted as an alias, the course's older keyword.)
      normalization: None, "batchnorm" or "layernorm".
      reg: L2 strength.
      weight_scale: std of the normal initial weights (`np.random.randn`, global RNG).
      dtype: np.float32 or np.float64 (use float64 for gradient checks).
      seed: if given, every dropout mask is drawn after `np.random.seed(seed)` (deterministic).
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
        dropout=None,
    ):
        if dropout is not None:
            if dropout_keep_ratio != 1:
                raise TypeError("pass dropout_keep_ratio or its alias dropout, not both")
            dropout_keep_ratio = dropout
        hidden_dims = list(hidden_dims)
        if not all(isinstance(h, int | np.integer) and h > 0 for h in hidden_dims):
            raise ValueError(f"hidden_dims must be positive integers; got {hidden_dims}")
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {_NORMALIZATIONS}; got {normalization!r}"
            )
        if not 0 < dropout_keep_ratio <= 1:
            raise ValueError(
                f"dropout_keep_ratio is the KEEP probability, in (0, 1]; got {dropout_keep_ratio!r}"
            )
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be np.float32 or np.float64; got {dtype!r}")
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

    def _dtype(self, X):  # the course casts X to self.dtype; params may have been reassigned
        return np.result_type(self.dtype, *(v.dtype for v in self.params.values()))

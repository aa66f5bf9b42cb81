"""Fully-connected nets as (config, params, state).

Contract: a model is a frozen, hashable `NetConfig` (static under jit), a flat params dict with the
course's keys (`W1, b1, gamma1, beta1, ..., WL, bL`) and a separate state dict holding batchnorm
running statistics (`running_mean1, running_var1, ...`), returned updated, never mutated.

    loss_fn(params, state, X, y, hparams, *, config, key=None, train=True)
        -> (loss, (new_state, scores))

is the single loss signature, for `jax.value_and_grad(loss_fn, has_aux=True)`. The architecture is the
course's {affine - [batch/layer norm] - relu - [dropout]} x (L - 1) - affine - softmax (or svm), built
only from the custom-VJP layers, so `jax.grad(loss_fn)` runs the hand-written backward passes.
Hyperparameters (reg, keep_prob) come from `hparams` as data, so they can be swept without recompiling.
`NetConfig.compute_dtype` ("bfloat16") is the matmul precision policy, passed to every affine layer
(float32 master weights; see `fc_jax.precision`).
"""

import contextlib
import dataclasses
import math

import jax
import jax.numpy as jnp

from fc_jax import layers, losses, normalization
from fc_jax.hparams import HParams
from fc_jax.types import Array, Key, ModelState, Params

__all__ = [
    "NetConfig",
    "init_params",
    "init_state",
    "param_count",
    "forward",
    "loss_fn",
    "scores",
    "predict",
    "x64_scope",
]

NORMALIZATIONS = (None, "batchnorm", "layernorm")
BN_MOMENTUM = 0.9  # the course's running-average momentum
NORM_EPS = 1e-5  # the course's eps


@dataclasses.dataclass(frozen=True)
class NetConfig:
    """Architecture of a fully-connected net (hashable: a static jit argument).

    Attributes:
      hidden_dims: sizes of the hidden layers, e.g. (100, 100).
      input_dim: D, the flattened input size (CIFAR-10: 3 * 32 * 32).
      num_classes: C.
      normalization: None, "batchnorm" or "layernorm" after each hidden affine layer.
      dropout: whether the net has a dropout layer after each hidden layer (structure). The keep
        probability is a value, `hparams.keep_prob` (sweepable; 1.0 keeps every unit, which is
        exactly the net without dropout).
      dtype: "float32" or "float64" for parameters and computation.
      loss: "softmax" or "svm".
      compute_dtype: the precision policy of the affine layers' matmuls. None (or "float32", or
        `dtype`: all normalized to None) runs everything in `dtype`. "bfloat16" (dtype "float32"
        only) casts each matmul's operands to bfloat16 and accumulates in float32, forward and
        backward; parameters, optimizer state, batchnorm statistics, the norms, the loss and the
        update rules stay float32 (master weights). See `fc_jax.precision`.
    """

    hidden_dims: tuple[int, ...] = (100, 100)  # hidden layer widths
    input_dim: int = 3 * 32 * 32  # flattened input size
    num_classes: int = 10  # number of classes
    normalization: str | None = None  # None | "batchnorm" | "layernorm"
    dropout: bool = False  # dropout layers present; their keep probability is hparams.keep_prob
    dtype: str = "float32"  # "float32" | "float64"
    loss: str = "softmax"  # "softmax" | "svm"
    compute_dtype: str | None = None  # None ("float32": = dtype) | "bfloat16" (dtype float32)

    def __post_init__(self):
        dims = tuple(self.hidden_dims)
        object.__setattr__(self, "hidden_dims", dims)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise ValueError(f"hidden_dims must be positive integers; got {dims}")
        for name in ("input_dim", "num_classes"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}; got {self.normalization!r}"
            )
        if not isinstance(self.dropout, bool):
            raise ValueError(
                f"dropout must be True or False (the keep probability is hparams.keep_prob); "
                f"got {self.dropout!r}"
            )
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {self.dtype!r}")
        if self.loss not in ("softmax", "svm"):
            raise ValueError(f"loss must be 'softmax' or 'svm'; got {self.loss!r}")
        if self.compute_dtype in ("float32", self.dtype):
            object.__setattr__(self, "compute_dtype", None)  # one config, one jit cache entry
        if self.compute_dtype not in (None, "bfloat16"):
            raise ValueError(
                f"compute_dtype must be None or 'float32' (matmuls in dtype) or 'bfloat16'; "
                f"got {self.compute_dtype!r}"
            )
        if self.compute_dtype == "bfloat16" and self.dtype != "float32":
            raise ValueError(
                f"compute_dtype 'bfloat16' needs dtype 'float32' (float32 master weights); "
                f"got dtype {self.dtype!r}"
            )

    @property
    def num_layers(self) -> int:
        return len(self.hidden_dims) + 1

    @property
    def dims(self) -> tuple[int, ...]:
        return (self.input_dim, *self.hidden_dims, self.num_classes)


def x64_scope(config: NetConfig):
    """`jax.enable_x64(True)` for float64 configs, a no-op context otherwise."""
    return jax.enable_x64(True) if config.dtype == "float64" else contextlib.nullcontext()


def _check_dtype_enabled(config: NetConfig) -> None:
    if config.dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            "config.dtype is 'float64' but float64 is disabled in jax: run inside `with jax.enable_x64(True):`"
        )


def param_count(config: NetConfig) -> int:
    """Number of scalar parameters (weights, biases, and gamma/beta when normalized)."""
    d = config.dims
    n = sum(d[i] * d[i + 1] + d[i + 1] for i in range(config.num_layers))
    if config.normalization is not None:
        n += 2 * sum(config.hidden_dims)
    return n


def init_params(key: Key, config: NetConfig, weight_scale=1e-2) -> Params:
    """Initial parameters: `W_i = weight_scale * N(0, 1)` of shape (fan_in, fan_out), `b_i = 0`,
    `gamma_i = 1`, `beta_i = 0`.

    Args:
      key: PRNG key; layer i draws from `jax.random.split(key, L)[i - 1]`.
      config: the architecture.
      weight_scale: a float or scalar array (traced values are fine: sweeps vmap over it).

    Returns:
      The flat params dict in `config.dtype`.
    """
    _check_dtype_enabled(config)
    dtype = jnp.dtype(config.dtype)
    keys = jax.random.split(key, config.num_layers)
    scale = jnp.asarray(weight_scale, dtype)
    d = config.dims
    params = {}
    for i in range(config.num_layers):
        params[f"W{i + 1}"] = scale * jax.random.normal(keys[i], (d[i], d[i + 1]), dtype)
        params[f"b{i + 1}"] = jnp.zeros(d[i + 1], dtype)
        if config.normalization is not None and i < config.num_layers - 1:
            params[f"gamma{i + 1}"] = jnp.ones(d[i + 1], dtype)
            params[f"beta{i + 1}"] = jnp.zeros(d[i + 1], dtype)
    return params


def init_state(config: NetConfig) -> ModelState:
    """Batchnorm running statistics (zeros, as the course initializes them); empty otherwise."""
    if config.normalization != "batchnorm":
        return {}
    _check_dtype_enabled(config)
    dtype = jnp.dtype(config.dtype)
    state = {}
    for i, h in enumerate(config.hidden_dims, start=1):
        state[f"running_mean{i}"] = jnp.zeros(h, dtype)
        state[f"running_var{i}"] = jnp.zeros(h, dtype)
    return state


def _check_input(X, config: NetConfig) -> Array:
    if X.ndim < 2 or math.prod(X.shape[1:]) != config.input_dim:
        raise ValueError(
            f"X must have shape (N, ...) flattening to (N, {config.input_dim}) for this config; got {X.shape}"
        )
    return X.reshape(X.shape[0], config.input_dim)


def forward(
    params: Params,
    state: ModelState,
    X: Array,
    hparams: HParams | None = None,
    *,
    config: NetConfig,
    key: Key | None = None,
    train: bool = True,
    masks: tuple[Array, ...] | None = None,
) -> tuple[Array, ModelState]:
    """Scores of the net and the updated batchnorm state.

    Args:
      params, state: the model.
      X: (N, d1, ..., dk) inputs with d1 * ... * dk == config.input_dim.
      hparams: needed for dropout in train mode (`hparams.keep_prob`); may be None otherwise.
      config: the architecture (static).
      key: PRNG key for the dropout masks; required when training a net with dropout.
      train: train mode (batch statistics, dropout) or test mode (running statistics, no dropout).
      masks: optional explicit dropout masks, one per hidden layer (each (N, H_i), entries 0 or
        1 / keep_prob), used instead of drawing from `key` (the facade passes the course's numpy masks).

    Returns:
      scores: (N, C); new_state: state with updated running statistics (unchanged in test mode).
    """
    h = _check_input(X, config)
    if config.normalization == "batchnorm" and f"running_mean{config.num_layers - 1}" not in state:
        raise ValueError(
            "this net has batchnorm: pass state=init_state(config) with its running statistics"
        )
    use_dropout = train and config.dropout
    if use_dropout and masks is None:
        if key is None:
            raise ValueError(
                "this net has dropout: training it needs a PRNG key (key=jax.random.key(seed))"
            )
        if hparams is None:
            raise ValueError("this net has dropout: training it needs hparams (hparams.keep_prob)")
        keys = jax.random.split(key, config.num_layers)
    if use_dropout and masks is not None and len(masks) != config.num_layers - 1:
        raise ValueError(
            f"masks must hold one mask per hidden layer ({config.num_layers - 1}); got {len(masks)}"
        )
    new_state = dict(state)
    norm = config.normalization
    cd = config.compute_dtype  # static: the affine layers' matmul policy; None casts nothing
    for i in range(1, config.num_layers):
        w, b = params[f"W{i}"], params[f"b{i}"]
        if norm is None:
            h = layers.affine_relu(h, w, b, cd)
        else:
            a = layers.affine(h, w, b, cd)
        if norm is not None:
            gamma, beta = params[f"gamma{i}"], params[f"beta{i}"]
            if norm == "layernorm":
                a = normalization.layernorm(a, gamma, beta, NORM_EPS)
            elif train:
                rm, rv = state[f"running_mean{i}"], state[f"running_var{i}"]
                new_state[f"running_mean{i}"], new_state[f"running_var{i}"] = (
                    normalization.batchnorm_update_running(rm, rv, a, BN_MOMENTUM)
                )
                a = normalization.batchnorm(a, gamma, beta, NORM_EPS)
            else:
                rm, rv = state[f"running_mean{i}"], state[f"running_var{i}"]
                a = normalization.batchnorm_inference(a, gamma, beta, rm, rv, NORM_EPS)
            h = layers.relu(a)
        if use_dropout:
            if masks is not None:
                mask = masks[i - 1]
            else:
                mask = layers.dropout_mask(keys[i - 1], hparams.keep_prob, h.shape, h.dtype)
            h = layers.dropout(h, mask)
    L = config.num_layers
    return layers.affine(h, params[f"W{L}"], params[f"b{L}"], cd), new_state


def loss_fn(
    params: Params,
    state: ModelState,
    X: Array,
    y: Array,
    hparams: HParams,
    *,
    config: NetConfig,
    key: Key | None = None,
    train: bool = True,
    masks: tuple[Array, ...] | None = None,
    mix: tuple[Array, Array] | None = None,
) -> tuple[Array, tuple[ModelState, Array]]:
    """Data loss plus `0.5 * hparams.reg * sum(W_i ** 2)`, with `(new_state, scores)` as aux.

    The softmax loss reads `hparams.label_smoothing` (0: the course's loss, bit for bit). The SVM
    loss has no smoothing: a concrete non-zero value raises ValueError; a traced one (under jit or
    vmap) cannot be checked here and is ignored, so check values before compiling
    (`fc_jax.hparams.validate_hparams` checks the range only).

    `mix=(y2, lam)` (mixup, `fc_jax.augment`): X is already mixed, and the data loss is
    `lam * loss(scores, y) + (1 - lam) * loss(scores, y2)`, exact for cross-entropy (the loss is
    linear in its one-hot target), so the labels stay integers.

    Use as `jax.value_and_grad(loss_fn, has_aux=True)(params, state, X, y, hp, config=c, key=k)`.
    """
    s, new_state = forward(
        params,
        state,
        X,
        hparams,
        config=config,
        key=key,
        train=train,
        masks=masks,
    )
    data_loss = _data_loss(s, y, hparams, config)
    if mix is not None:
        y2, lam = mix
        data_loss = lam * data_loss + (1 - lam) * _data_loss(s, y2, hparams, config)
    loss = data_loss
    for i in range(1, config.num_layers + 1):  # the course's order: bitwise-equal losses
        (w,) = jax.tree.leaves(params[f"W{i}"])  # the stored array (a sum of squares: any layout)
        loss = loss + losses.l2_penalty({f"W{i}": w}, hparams.reg)
    return loss, (new_state, s)


def _data_loss(s: Array, y: Array, hparams: HParams, config: NetConfig) -> Array:
    if config.loss == "softmax":
        return losses.softmax_loss(s, y, hparams.label_smoothing)
    ls = hparams.label_smoothing
    if not isinstance(ls, jax.core.Tracer) and jnp.any(jnp.asarray(ls) != 0):
        raise ValueError(f"label_smoothing={ls} needs loss='softmax'; the svm loss has none")
    return losses.svm_loss(s, y)


def scores(params: Params, state: ModelState, X: Array, *, config: NetConfig) -> Array:
    """Test-mode scores (N, C): running statistics, no dropout."""
    return forward(params, state, X, None, config=config, train=False)[0]


def predict(params: Params, state: ModelState, X: Array, *, config: NetConfig) -> Array:
    """Test-mode class predictions (N,) as int32."""
    return jnp.argmax(scores(params, state, X, config=config), axis=1).astype(jnp.int32)

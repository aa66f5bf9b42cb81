"""The compiled training engine: one `jit` of a `lax.scan` over minibatch steps.

Contract:

* `TrainState` holds everything a run carries (params, batchnorm state, optimizer state, a base PRNG
  key, the global step count, a divergence flag). It is a pytree; `jax.vmap` over a leading axis gives
  many models at once (see `fc_jax.runs.sweep`).
* `sample_indices(key, num_train, steps, batch_size, replace)` draws an epoch's minibatch indices,
  shape (steps, batch); it is separate so tests and benchmarks can inject indices.
* `make_epoch(config, optimizer)` returns `epoch(ts, X, y, idx, hparams, masks=None) -> (ts, losses)`,
  jitted: the data stay on the device, each step gathers its minibatch, runs the hand-written backward
  through `jax.value_and_grad(models.loss_fn)`, applies the update rule, and the per-step losses come
  back stacked. The dropout key of step t is `fold_in(ts.key, t)`, so a run is a pure function of
  (seed, indices) and resumes exactly. A step whose loss or gradient is not finite (`all_finite`) marks
  the run diverged; from then on its parameters stop changing (in a sweep the other lanes go on
  untouched).
* Layout: `make_epoch` decides once how the parameters are stored inside the scan (`_engine_layout`).
  Today the input layer's weight is held transposed, as a `layers.TransposedWeight` of shape (H1, D),
  where both of its products are plain GEMMs on CPU; every subtree of the optimizer state shaped like
  the params is converted the same way. The epoch converts on entry and exit, so callers, checkpoints
  and the model, loss and optimizer signatures only ever see the course's (D, H1) layout.
* Structure beyond the net, static per `make_epoch`: an `lr_schedules.LRSchedule` (a kind other
  than "step" computes each step's rate from `ts.step` and the `HParams` values) and an
  `augment.Augment` (crops, flips, mixup of each minibatch from the per-step `keys`; the rows and
  keys of a sweep's shared minibatches carry no lane axis, so neither does the augmented batch).
* `make_step` is the same step jitted alone (the course-style loop, for benchmarks and tests), and
  `make_evaluate(config)` is a batched, jitted accuracy.

Hyperparameters are data (`HParams`), never closed over: a new learning rate does not recompile.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fc_jax import augment as aug
from fc_jax import layers, lr_schedules, models
from fc_jax.hparams import HParams
from fc_jax.optim import Optimizer
from fc_jax.types import Array, Key, ModelState, Params

__all__ = [
    "TrainState",
    "init_train_state",
    "sample_indices",
    "train_step",
    "make_step",
    "all_finite",
    "scan_epoch",
    "make_epoch",
    "accuracy",
    "make_evaluate",
]


class TrainState(NamedTuple):
    params: Params
    model_state: ModelState  # batchnorm running statistics
    opt_state: Any  # the optimizer's NamedTuple state
    key: Key  # base key; step t's dropout key is fold_in(key, t)
    step: Array  # shape=(), int32: steps taken so far
    diverged: Array  # shape=(), bool: a step's loss or gradient was not finite; params frozen since


def init_train_state(
    key: Key, config: models.NetConfig, optimizer: Optimizer, weight_scale
) -> TrainState:
    """Fresh parameters (from `key`), zero batchnorm statistics and optimizer state.

    The init key and the dropout key are independent splits of `key`.
    """
    k_init, k_run = jax.random.split(key)
    params = models.init_params(k_init, config, weight_scale)
    return TrainState(
        params=params,
        model_state=models.init_state(config),
        opt_state=optimizer.init(params),
        key=k_run,
        step=jnp.zeros((), jnp.int32),
        diverged=jnp.zeros((), jnp.bool_),
    )


def sample_indices(
    key: Key, num_train: int, steps: int, batch_size: int, replace: bool = True
) -> Array:
    """Minibatch indices of one epoch, shape (steps, batch_size), int32.

    Args:
      key: PRNG key of this epoch.
      num_train: number of training examples to draw from.
      steps, batch_size: the epoch's shape.
      replace: True draws each minibatch uniformly with replacement, as the cs231n Solver does;
        False walks fresh permutations of the data (without replacement within a permutation).
    """
    if num_train < 1 or steps < 1 or batch_size < 1:
        raise ValueError(
            f"need num_train, steps, batch_size >= 1; got {num_train}, {steps}, {batch_size}"
        )
    if replace:
        return jax.random.randint(key, (steps, batch_size), 0, num_train, dtype=jnp.int32)
    total = steps * batch_size
    reps = -(-total // num_train)
    perms = [jax.random.permutation(k, num_train) for k in jax.random.split(key, reps)]
    return jnp.concatenate(perms)[:total].reshape(steps, batch_size).astype(jnp.int32)


def all_finite(loss: Array, grads) -> Array:
    """Whether the loss and the 1-D gradients (biases, gammas, betas) are all finite.

    Each 1-D gradient is a batch sum of the backward signal at its layer, so a non-finite value
    anywhere in the backward pass reaches one of them; the check reads a few hundred numbers. It
    also makes every parameter update wait for the whole backward pass, which is what lets XLA
    update each weight in place: with the loss alone, an update could run before the backward
    product that still reads the old weight, so XLA copied every weight each step.
    """
    vectors = [g for g in jax.tree.leaves(grads) if g.ndim == 1]
    return jnp.isfinite(loss) & jnp.isfinite(sum((jnp.sum(g) for g in vectors), jnp.zeros(())))


def train_step(
    ts: TrainState,
    xb: Array,
    yb: Array,
    hparams: HParams,
    masks: tuple[Array, ...] | None = None,
    *,
    config: models.NetConfig,
    optimizer: Optimizer,
    mix: tuple[Array, Array] | None = None,
) -> tuple[TrainState, Array]:
    """One step: loss, hand-written gradients, update. Not jitted (see `make_step`, `make_epoch`).

    Works on whatever pytree `ts.params` is (the public dict, or the engine's layout inside an epoch).
    `mix=(y2, lam)`: `xb` is a mixup batch (`fc_jax.augment`), see `models.loss_fn`.

    Returns:
      (new TrainState, the minibatch loss before the update; NaN once the run has diverged).
    """
    key = jax.random.fold_in(ts.key, ts.step) if config.dropout and masks is None else None
    grad_fn = jax.value_and_grad(models.loss_fn, has_aux=True)
    (loss, (model_state, _)), grads = grad_fn(
        ts.params,
        ts.model_state,
        xb,
        yb,
        hparams,
        config=config,
        key=key,
        train=True,
        masks=masks,
        mix=mix,
    )
    diverged = ts.diverged | ~all_finite(loss, grads)
    # The rule itself skips the step (it computes the params from its guarded state, so XLA
    # updates the buffers in place; see `fc_jax.optim`).
    params, opt_state = optimizer.update(grads, ts.opt_state, ts.params, hparams, skip=diverged)
    model_state = jax.tree.map(lambda n, o: jnp.where(diverged, o, n), model_state, ts.model_state)
    return (
        TrainState(
            params=params,
            model_state=model_state,
            opt_state=opt_state,
            key=ts.key,
            step=ts.step + 1,
            diverged=diverged,
        ),
        # NaN from the first diverged step on, even when only its gradient was not finite: the
        # histories, `DivergedError` and a sweep's `diverged_iteration` read it there.
        jnp.where(diverged, jnp.nan, loss),
    )


def make_step(config: models.NetConfig, optimizer: Optimizer):
    """`step(ts, xb, yb, hparams, masks=None) -> (ts, loss)`, jitted alone (one dispatch per step)."""
    return jax.jit(functools.partial(train_step, config=config, optimizer=optimizer))


class _Layout(NamedTuple):
    """How an epoch stores the parameters inside its scan: `inner = to_inner(public)` and back."""

    to_inner: Callable[[Params], Any]
    to_public: Callable[[Any], Params]


def _engine_layout(config: models.NetConfig) -> _Layout:
    """The layout of the parameters inside the scan, decided once per `make_epoch`.

    The input layer's weight is held transposed (`layers.TransposedWeight`, (H1, D)): XLA:CPU then
    runs both of its products as plain GEMMs, with no transpose copy of the (N, D) minibatch, about
    faster on a W1 epoch (benchmarks/RESULTS.md). Everything else keeps the public layout.
    """
    del config  # one rule for every net today; the hook for a per-device or per-net choice

    def to_inner(params):
        return {**params, "W1": layers.TransposedWeight(jnp.swapaxes(params["W1"], -1, -2))}

    def to_public(inner):
        return {**inner, "W1": jnp.swapaxes(inner["W1"].t, -1, -2)}

    return _Layout(to_inner, to_public)


def _like_params(tree, params):
    """Split `tree` (an optimizer state) into its subtrees shaped like `params` and the rest.

    Returns (treedef, mask): `treedef.flatten_up_to(tree)` lists the parts and `mask[i]` says part i
    has the tree structure of `params` (a per-parameter buffer: velocity, cache, m, v). The check is
    on structure only, so it holds for any optimizer whose state mirrors the params.
    """
    structure = jax.tree.structure(params)
    is_like = lambda t: jax.tree.structure(t) == structure  # noqa: E731
    parts, treedef = jax.tree.flatten(tree, is_leaf=is_like)
    return treedef, [is_like(p) for p in parts]


def _convert(tree, treedef, mask, fn):
    parts = treedef.flatten_up_to(tree)
    return treedef.unflatten([fn(p) if m else p for p, m in zip(parts, mask, strict=True)])


def scan_epoch(
    ts,
    X,
    y,
    idx,
    hparams,
    masks=None,
    keys=None,
    *,
    config,
    optimizer,
    layout=None,
    lr_schedule=None,
    augment=None,
):
    """`make_epoch`'s function before `jax.jit`: a `lax.scan` of `train_step` over `idx` (for
    tracing it inside another jit, or counting its traces)."""
    layout = layout or _engine_layout(config)
    if (keys is None) != (augment is None or not augment.active):
        raise ValueError("pass per-step augmentation keys exactly when the epoch augments")

    wrap = jax.random.wrap_key_data

    def body(ts, xs):
        i, m, k = xs
        hp, mix = hparams, None
        if k is None:
            xb, yb = X[i], y[i]
        else:  # the same key and rows for every lane: one augmented batch
            xb, yb, mix = aug.augment_batch(wrap(k), X, y, i, hparams, augment)
        if lr_schedule is not None and lr_schedule.kind != "step":
            hp = hp._replace(learning_rate=lr_schedules.learning_rate_at(lr_schedule, hp, ts.step))
        return train_step(ts, xb, yb, hp, m, config=config, optimizer=optimizer, mix=mix)

    treedef, mask = _like_params(ts.opt_state, ts.params)
    inner = ts._replace(
        params=layout.to_inner(ts.params),
        opt_state=_convert(ts.opt_state, treedef, mask, layout.to_inner),
    )
    inner, losses = jax.lax.scan(body, inner, (idx, masks, keys))
    out = inner._replace(
        params=layout.to_public(inner.params),
        opt_state=_convert(inner.opt_state, treedef, mask, layout.to_public),
    )
    return out, losses


def make_epoch(
    config: models.NetConfig,
    optimizer: Optimizer,
    lr_schedule: lr_schedules.LRSchedule | None = None,
    augment: aug.Augment | None = None,
):
    """`epoch(ts, X, y, idx, hparams, masks=None, keys=None) -> (ts, losses)`: one jit of a scan.

    `lr_schedule` (structure): None or kind "step" trains with `hparams.learning_rate` as given
    (the host decays it per epoch); another kind computes each step's rate from `ts.step`
    (`fc_jax.lr_schedules.learning_rate_at`). `augment` (structure): crops, flips, mixup of each
    minibatch (`fc_jax.augment`), drawn from `keys`.

    Args of the returned function:
      ts: a `TrainState`.
      X: (N, ...) training inputs on the device; y: (N,) integer labels.
      idx: (steps, batch) minibatch indices (see `sample_indices`).
      hparams: `HParams` of scalars (with kind "step" or no schedule, the learning rate already
        decayed for this epoch; with another kind, the initial rate).
      masks: optional explicit dropout masks, a tuple with one (steps, batch, H_i) array per hidden
        layer (the facade's course-exact masks); None draws them from `ts.key`.
      keys: (steps, 2) uint32 raw key data, step t's augmentation key (`jax.random.key_data`);
        given exactly when `augment` does something.

    Returns:
      (new TrainState, losses of shape (steps,)).
    """
    layout = _engine_layout(config)
    return jax.jit(
        functools.partial(
            scan_epoch,
            config=config,
            optimizer=optimizer,
            layout=layout,
            lr_schedule=lr_schedule,
            augment=augment,
        )
    )


def accuracy(
    params: Params,
    state: ModelState,
    X: Array,
    y: Array,
    *,
    config: models.NetConfig,
    batch_size: int = 1000,
) -> Array:
    """Test-mode accuracy over (X, y), computed in batches of `batch_size` (a scalar array)."""
    n = X.shape[0]
    nb = -(-n // batch_size)
    pad = nb * batch_size - n
    Xp = jnp.concatenate([X, jnp.zeros((pad, *X.shape[1:]), X.dtype)]) if pad else X
    yp = jnp.concatenate([y, jnp.full((pad,), -1, y.dtype)]) if pad else y
    Xb = Xp.reshape(nb, batch_size, *X.shape[1:])
    pred = jax.lax.map(lambda xb: models.predict(params, state, xb, config=config), Xb).reshape(-1)
    correct = jnp.sum((pred == yp).astype(jnp.int32))
    return correct / n


def make_evaluate(config: models.NetConfig, batch_size: int = 1000):
    """`evaluate(params, state, X, y) -> accuracy`, jitted and batched."""
    return jax.jit(functools.partial(accuracy, config=config, batch_size=batch_size))

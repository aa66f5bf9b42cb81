"""cs231n `solver.py`: the course's `Solver`, run on the compiled engine (`train.make_epoch`).

Contract (the course's): `Solver(model, data, **kwargs)` with the course's keyword arguments
(`update_rule`, `optim_config`, `lr_decay`, `batch_size`, `num_epochs`, `num_train_samples`,
`num_val_samples`, `checkpoint_name`, `print_every`, `verbose`; anything else raises
`ValueError('Unrecognized arguments ...')`). `train()` runs `num_epochs * max(N // batch_size, 1)`
iterations, fills `loss_history`, `train_acc_history`, `val_acc_history`, `best_val_acc`,
`best_params`, `epoch`, prints the course's lines, decays `optim_configs[p]['learning_rate']` by
`lr_decay` at each epoch end, checks accuracy at the first iteration, each epoch end and the last
iteration, and leaves the best params in `model.params`. `model` is a facade `TwoLayerNet` or
`FullyConnectedNet` (the Solver compiles its `NetConfig`).

Same numbers as the course, compiled: NumPy's global RNG stream is reproduced draw for draw on the
host (per iteration `np.random.choice(N, batch_size)`, then each hidden layer's dropout mask
`(np.random.rand(batch, H) < p) / p`, re-seeded per layer when `dropout_param` has a seed; per
accuracy check the subsample `np.random.choice(N, num_samples)`, and the re-seed a seeded dropout
net's test-mode forward does). The draws of a run of iterations are stacked into
`(steps, batch)` indices and `(steps, batch, H_i)` masks and handed to one jitted `lax.scan`. Each
epoch is two scans, of 1 and `iterations_per_epoch - 1` steps (so the first-iteration check falls
between them): at most two compiled shapes. Loss lines are printed from the stacked losses. The
loop is pipelined: a run of iterations and its accuracy check (scored on the device, from the data
copied there once per `train()`) are dispatched before the previous run's results are read, so the
host's draws and bookkeeping overlap the device; every line, history entry and RNG draw keeps the
course's order.
After `train()` the final batchnorm statistics are in `model.bn_params` and the optimizer state in
`optim_configs[p]` under the course's keys (`velocity`, `cache`, `m`, `v`, `t`), so a second
`train()` continues where the first stopped. Checkpoints are `'%s_epoch_%d.npz'` archives (params,
running statistics, and a `meta` JSON string), never pickles.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import models, train
from fc_jax.cs231n import optim as course_optim
from fc_jax.cs231n._bridge import HPARAM_FILLERS, cached_jit, keep_prob_of
from fc_jax.cs231n.classifiers.fc_net import FullyConnectedNet, TwoLayerNet
from fc_jax.data.datasets import check_labels
from fc_jax.hparams import RULE_DEFAULTS, HParams, check_integer, validate_hparams
from fc_jax.models import x64_scope
from fc_jax.optim import get_optimizer

__all__ = ["Solver", "net_config", "epoch_key", "predict_key"]

# fmt: off
_KWARGS = dict(update_rule="sgd", optim_config={}, lr_decay=1.0, batch_size=100, num_epochs=10,
               num_train_samples=1000, num_val_samples=None, checkpoint_name=None, print_every=10,
               verbose=True)  # the course's keyword arguments and defaults
_CHECKPOINT_FIELDS = ("lr_decay", "batch_size", "num_train_samples", "num_val_samples", "epoch",
                      "loss_history", "train_acc_history", "val_acc_history")
# fmt: on
# Integer arguments and their least value; the sample counts may also be None (use all).
_COUNTS = dict(batch_size=1, print_every=1, num_epochs=0, num_train_samples=1, num_val_samples=1)


def net_config(model, X) -> models.NetConfig:
    """The core `NetConfig` of a facade model (dtype: the one its `loss(X)` computes in)."""
    if not isinstance(model, TwoLayerNet | FullyConnectedNet):
        got = type(model).__name__
        raise TypeError(
            f"model must be a fc_jax.cs231n TwoLayerNet or FullyConnectedNet; got {got}"
        )
    p = model.params
    dims = (p["W1"].shape[0], *(p[f"W{i}"].shape[1] for i in range(1, model.num_layers + 1)))
    base = getattr(model, "dtype", np.asarray(X).dtype)  # TwoLayerNet promotes with X
    dtype = np.result_type(base, *(np.asarray(v).dtype for v in p.values()), np.float32)
    norm, keep = model.normalization, _keep_prob(model)
    return models.NetConfig(dims[1:-1], dims[0], dims[-1], norm, dropout=keep < 1, dtype=dtype.name)


def _keep_prob(model) -> float:
    """The dropout KEEP probability of a facade model (1.0 without dropout)."""
    return keep_prob_of(model.dropout_param) if model.use_dropout else 1.0


def epoch_key(config: models.NetConfig, update_rule: str) -> tuple:
    """The jit-cache key of the Solver's epoch scan (`_bridge.trace_count(epoch_key(...))`)."""
    return ("solver.epoch", config, update_rule)


def predict_key(config: models.NetConfig, batch_size: int) -> tuple:
    """The jit-cache key of the Solver's batched test-mode predictions."""
    return ("solver.predict", config, batch_size)


def _build_predict(config: models.NetConfig, batch_size: int):
    def predict(params, state, X):  # X: (num_batches * batch_size, D), zero-padded
        Xb = X.reshape(-1, batch_size, config.input_dim)
        pred = jax.lax.map(lambda xb: models.predict(params, state, xb, config=config), Xb)
        return pred.reshape(-1)

    return predict


def _build_count(config: models.NetConfig, batch_size: int, n: int, subsample: bool):
    """`count(params, state, X, y, mask) -> number of correct predictions` among n examples.

    X: (N, D) on the device; with `subsample`, rows `mask` (n of them) are scored, else all n rows.
    The same zero-padded batches of `batch_size` as `_build_predict`.
    """
    nb = -(-n // batch_size)

    def count(params, state, X, y, mask):
        if subsample:
            X, y = X[mask], y[mask]
        Xp = jnp.concatenate([X, jnp.zeros((nb * batch_size - n, X.shape[1]), X.dtype)])
        Xb = Xp.reshape(nb, batch_size, config.input_dim)
        pred = jax.lax.map(lambda xb: models.predict(params, state, xb, config=config), Xb)
        return jnp.sum((pred.reshape(-1)[:n] == y).astype(jnp.int32))

    return count


def _model_state(model, config: models.NetConfig) -> dict:
    """Batchnorm running statistics from `model.bn_params` (zeros when absent): the core's state."""
    state, hidden = {}, config.hidden_dims if config.normalization else ()
    if len(model.bn_params) != len(hidden):
        raise ValueError(f"model.bn_params must hold one dict per hidden layer ({len(hidden)})")
    for i, (bn, h) in enumerate(zip(model.bn_params, hidden, strict=True), start=1):
        eps, momentum = bn.get("eps", models.NORM_EPS), bn.get("momentum", models.BN_MOMENTUM)
        if (eps, momentum) != (models.NORM_EPS, models.BN_MOMENTUM):
            raise ValueError(
                f"bn_params[{i - 1}]: only the course's eps and momentum are supported"
            )
        if config.normalization == "batchnorm":
            for name in ("running_mean", "running_var"):
                state[f"{name}{i}"] = np.asarray(bn.get(name, np.zeros(h)), config.dtype)
    return state


def _set_mode(model, mode: str) -> None:
    """What the course's `model.loss` does to the mode entries (it sets them on every call)."""
    if model.use_dropout:
        model.dropout_param["mode"] = mode
    if model.normalization == "batchnorm":
        for bn_param in model.bn_params:
            bn_param["mode"] = mode


class Solver:
    """Trains a facade model with minibatch updates on the compiled engine. Mirrors cs231n `Solver`.

    Args:
      model: a `fc_jax.cs231n.classifiers.fc_net` TwoLayerNet or FullyConnectedNet.
      data: dict with 'X_train' (N, d1, ..., dk), 'y_train' (N,), 'X_val', 'y_val'.
      **kwargs: update_rule ('sgd' | 'sgd_momentum' | 'rmsprop' | 'adam'), optim_config (dict of
        the rule's hyperparameters), lr_decay, batch_size, num_epochs, num_train_samples (train
        accuracy subsample; None: all), num_val_samples, checkpoint_name, print_every, verbose.
    """

    def __init__(self, model, data, **kwargs):
        missing = [k for k in ("X_train", "y_train", "X_val", "y_val") if k not in data]
        if missing:
            raise ValueError(f"data must contain X_train, y_train, X_val, y_val; missing {missing}")
        self.model = model
        self.X_train, self.y_train = np.asarray(data["X_train"]), np.asarray(data["y_train"])
        self.X_val, self.y_val = np.asarray(data["X_val"]), np.asarray(data["y_val"])
        for name, value in _KWARGS.items():
            setattr(self, name, kwargs.pop(name, value))
        if kwargs:
            raise ValueError("Unrecognized arguments " + ", ".join(f'"{k}"' for k in kwargs))
        if not isinstance(self.update_rule, str) or self.update_rule not in course_optim.__all__:
            raise ValueError(
                f'Invalid update_rule "{self.update_rule}"; expected one of {course_optim.__all__}'
            )
        self._rule, self.update_rule = self.update_rule, getattr(course_optim, self.update_rule)
        self._check_args()
        self._reset()

    def _check_args(self):
        config = net_config(self.model, self.X_train)
        for split in ("train", "val"):
            X, y = getattr(self, f"X_{split}"), getattr(self, f"y_{split}")
            check_labels(y, config.num_classes, f"y_{split}")
            if X.ndim < 2 or X.shape[0] != len(y) or X[0].size != config.input_dim or not len(y):
                raise ValueError(
                    f"X_{split} must be (N, ...) with N = len(y_{split}) > 0 and "
                    f"{config.input_dim} features per example; got {X.shape}"
                )
        for name, least in _COUNTS.items():
            v = getattr(self, name)
            if v is None and name.endswith("_samples"):
                continue
            check_integer(name, v, least)
        if not isinstance(self.optim_config, dict):
            raise TypeError(f"optim_config must be a dict; got {type(self.optim_config).__name__}")
        validate_hparams(
            {k: v for k, v in self.optim_config.items() if k in RULE_DEFAULTS[self._rule]}
        )
        d = self.lr_decay
        if isinstance(d, bool) or not isinstance(d, int | float | np.number) or not 0 < d < np.inf:
            raise ValueError(f"lr_decay must be a finite number > 0; got {self.lr_decay!r}")

    def _reset(self):
        """Set up the bookkeeping; called by __init__, don't call it by hand."""
        self.epoch = 0
        self.best_val_acc = 0
        self.best_params = {}
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self.optim_configs = {p: dict(self.optim_config) for p in self.model.params}

    # ------------------------------------------------------------------------------- accuracy
    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        """Fraction of examples whose top score is the label, with the course's subsampling draw.

        Args:
          X: (N, d1, ..., dk) inputs; y: (N,) integer labels.
          num_samples: if given and N > num_samples, score `np.random.choice(N, num_samples)`.
          batch_size: examples per compiled batch.
        """
        config = net_config(self.model, X)
        with x64_scope(config):
            params = {k: np.asarray(v, config.dtype) for k, v in self.model.params.items()}
            return self._accuracy(
                params, _model_state(self.model, config), config, X, y, num_samples, batch_size
            )

    def _accuracy(self, params, state, config, X, y, num_samples, batch_size):
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        X, y = np.asarray(X), np.asarray(y)
        N = X.shape[0]
        if num_samples is not None and N > num_samples:
            mask = np.random.choice(N, num_samples)
            N, X, y = num_samples, X[mask], y[mask]
        Xp = np.zeros((-(-N // batch_size) * batch_size, config.input_dim), config.dtype)
        Xp[:N] = X.reshape(N, -1)
        predict = cached_jit(
            predict_key(config, batch_size), lambda: _build_predict(config, batch_size)
        )
        pred = np.asarray(predict(params, state, Xp))[:N]
        _set_mode(self.model, "test")
        if self.model.use_dropout and "seed" in self.model.dropout_param and N:
            np.random.seed(self.model.dropout_param["seed"])  # as the course's test-mode dropout
        return np.mean(pred == y)

    def _accuracy_async(self, params, state, config, X, y, num_samples, batch_size=100):
        """`_accuracy` on device arrays X (N, D), y, dispatched without waiting for the result.

        Same RNG draws and facade side effects as `_accuracy`, in the same order; returns a
        function that waits for the count and gives the accuracy (a float64, as `np.mean`).
        """
        N, mask = X.shape[0], None
        if num_samples is not None and N > num_samples:
            mask = np.random.choice(N, num_samples).astype(np.int32)
            N = num_samples
        key = ("solver.count", config, batch_size, N, mask is not None)
        count = cached_jit(key, lambda: _build_count(config, batch_size, N, mask is not None))
        correct = count(params, state, X, y, mask)
        _set_mode(self.model, "test")
        if self.model.use_dropout and "seed" in self.model.dropout_param and N:
            np.random.seed(self.model.dropout_param["seed"])  # as the course's test-mode dropout
        return lambda: np.float64(int(correct)) / N

    def _device_data(self, dtype):
        """The train and val sets as (N, D) device arrays of `dtype`, copied once per `train()`.

        On CPU a C-contiguous, 64-byte-aligned array of the right dtype is used without a copy.
        """
        return tuple(
            (jnp.asarray(X.reshape(len(X), -1), dtype), jnp.asarray(y, jnp.int32))
            for X, y in ((self.X_train, self.y_train), (self.X_val, self.y_val))
        )

    # ------------------------------------------------------------------------------- training
    def _hparams(self, dtype) -> HParams:
        cfg = next(iter(self.optim_configs.values()))
        values = {**HPARAM_FILLERS, **RULE_DEFAULTS[self._rule]}
        values.update({k: cfg[k] for k in RULE_DEFAULTS[self._rule] if k in cfg})
        values.update(reg=self.model.reg, lr_decay=1.0)  # the lr decays on the host, per epoch
        validate_hparams({k: values[k] for k in (*RULE_DEFAULTS[self._rule], "reg")})
        values["keep_prob"] = _keep_prob(self.model)
        return HParams(**{k: np.asarray(values[k], dtype) for k in HParams._fields})

    def _opt_state(self, optimizer, params, dtype):
        """The optimizer state stored in `optim_configs` by an earlier train(), else a fresh one."""
        state = optimizer.init(params)
        keys = state._fields  # the course's config keys: velocity, cache, or t, m, v
        if not keys or not all(k in c for c in self.optim_configs.values() for k in keys):
            return state
        first = next(iter(self.optim_configs.values()))
        new = {k: {p: np.asarray(c[k], dtype) for p, c in self.optim_configs.items()} for k in keys}
        if "t" in keys:
            new["t"] = np.asarray(int(first["t"]), np.int32)
        return state._replace(**new)

    def _draw(self, steps: int, hidden: tuple, dtype):
        """A run's minibatch indices (steps, batch) and dropout masks, in the course's RNG order."""
        model, bs = self.model, self.batch_size
        if not model.use_dropout:  # one call draws the same stream as `steps` calls of (bs,)
            return np.random.choice(self.X_train.shape[0], (steps, bs)).astype(np.int32), None
        idx = np.empty((steps, bs), np.int32)
        masks = tuple(np.empty((steps, bs, h), dtype) for h in hidden)
        p = _keep_prob(model)
        for s in range(steps):
            idx[s] = np.random.choice(self.X_train.shape[0], bs)
            for m, h in zip(masks, hidden, strict=True):
                if "seed" in model.dropout_param:
                    np.random.seed(model.dropout_param["seed"])
                m[s] = (np.random.rand(bs, h) < p) / p
        return idx, masks

    def train(self):
        """Run the optimization, printing the course's progress lines when verbose."""
        model, rule = self.model, self._rule
        num_train = self.X_train.shape[0]
        iterations_per_epoch = max(num_train // self.batch_size, 1)
        num_iterations = self.num_epochs * iterations_per_epoch
        if num_iterations == 0:
            return
        config = net_config(model, self.X_train)
        optimizer = get_optimizer(rule)
        for cfg in self.optim_configs.values():  # the course's rules setdefault on their first call
            for k, v in RULE_DEFAULTS[rule].items():
                cfg.setdefault(k, v)
        with x64_scope(config):
            dtype = np.dtype(config.dtype)
            (X, y), val = self._device_data(dtype)
            params = {k: jnp.asarray(v, dtype) for k, v in model.params.items()}
            ts = train.TrainState(
                params,
                _model_state(model, config),
                self._opt_state(optimizer, params, dtype),
                jax.random.key(0),
                jnp.zeros((), jnp.int32),
                jnp.zeros((), jnp.bool_),
            )
            epoch_fn = cached_jit(
                epoch_key(config, rule), lambda: train.make_epoch(config, optimizer)
            )
            # Pipelined: each run of iterations (and its accuracy check) is dispatched before the
            # previous one's results are read, so the host's draws, prints and bookkeeping overlap
            # the device's work. All RNG draws still happen in the course's order; results are
            # recorded and printed in order, one run behind.
            chunks = [1, iterations_per_epoch - 1] if iterations_per_epoch > 1 else [1]
            t, pending = 0, []
            for _ in range(self.num_epochs):
                for steps in chunks:
                    idx, masks = self._draw(steps, config.hidden_dims, dtype)
                    ts, losses = epoch_fn(ts, X, y, idx, self._hparams(dtype), masks)
                    t0, t = t, t + steps
                    epoch_end = t % iterations_per_epoch == 0
                    if epoch_end:
                        self.epoch += 1
                        for cfg in self.optim_configs.values():
                            cfg["learning_rate"] *= self.lr_decay
                    check = None
                    if t == 1 or t == num_iterations or epoch_end:
                        check = self._dispatch_check(ts, config, (X, y), val)
                    for done in pending:
                        self._record(*done, num_iterations)
                    pending = [(t0, losses, check)]
            for done in pending:
                self._record(*done, num_iterations)
            self._write_back(ts)

    def _dispatch_check(self, ts, config, train_set, val_set):
        """Start the course's accuracy check on `ts` (its draws happen now); see `_record`."""
        args = (ts.params, ts.model_state, config)
        train_acc = self._accuracy_async(*args, *train_set, self.num_train_samples, 100)
        val_acc = self._accuracy_async(*args, *val_set, self.num_val_samples, 100)
        return self.epoch, train_acc, val_acc, ts.params, ts.model_state

    def _record(self, t0, losses, check, num_iterations):
        """Loss history and lines of a run of iterations starting at t0, then its check if any."""
        for t, loss in enumerate(np.asarray(losses), start=t0):
            self.loss_history.append(loss)
            if self.verbose and t % self.print_every == 0:
                print(f"(Iteration {t + 1} / {num_iterations}) loss: {loss:f}")
        if check is not None:
            self._check(*check)

    def _check(self, epoch, train_acc, val_acc, params, model_state):
        """The course's accuracy check, checkpoint, Epoch line and best-params bookkeeping."""
        train_acc, val_acc = train_acc(), val_acc()
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        current = {k: np.array(params[k]) for k in self.model.params}
        if self.checkpoint_name is not None:
            self._save_checkpoint(current, model_state, epoch)
        if self.verbose:
            print(
                f"(Epoch {epoch} / {self.num_epochs}) train acc: {train_acc:f}; val_acc: {val_acc:f}"
            )
        if val_acc > self.best_val_acc:
            self.best_val_acc = val_acc
            self.best_params = current

    def _write_back(self, ts):
        """Best params into `model.params`; final running stats, optimizer state into the dicts."""
        for i, bn in enumerate(self.model.bn_params if ts.model_state else (), start=1):
            bn["running_mean"] = np.array(ts.model_state[f"running_mean{i}"])
            bn["running_var"] = np.array(ts.model_state[f"running_var{i}"])
        for p, cfg in self.optim_configs.items():
            for k, v in ts.opt_state._asdict().items():
                cfg[k] = int(v) if k == "t" else np.array(v[p])
        final = {k: np.array(ts.params[k]) for k in self.model.params}
        if self.best_params is self.model.params:  # a second train() that found no better params:
            self.best_params.update(final)  # the course's steps mutate this shared dict in place
        # As the reference: keep the final params if the validation accuracy never rose above 0.
        self.model.params = self.best_params or final

    def _save_checkpoint(self, params: dict, model_state: dict, epoch: int):
        """The course's checkpoint as `<name>_epoch_<epoch>.npz`: arrays plus `meta` JSON."""
        meta = {k: getattr(self, k) for k in _CHECKPOINT_FIELDS}
        meta.update(epoch=epoch, update_rule=self._rule, optim_config=self.optim_config)
        filename = f"{self.checkpoint_name}_epoch_{epoch}.npz"
        if self.verbose:
            print(f'Saving checkpoint to "{filename}"')
        text = json.dumps(meta, default=lambda o: np.asarray(o).tolist())  # numpy scalars, arrays
        state = {k: np.asarray(v) for k, v in model_state.items()}
        np.savez(filename, **params, **state, meta=np.asarray(text))

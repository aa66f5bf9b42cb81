"""The host epoch loop around the compiled engine: `fit`.

Contract: `fit(config, data, ...)` trains one net on a course-style data dict (`X_train, y_train,
X_val, y_val`), with Python looping over epochs (or over chunks of an epoch, for a progress bar) and
everything inside an epoch compiled (`fc_jax.train.make_epoch`). Per epoch it decays the learning rate
(`lr *= lr_decay`, as the course's Solver), measures train accuracy on a random subsample and
validation accuracy, keeps the best params by validation accuracy, and calls `on_epoch_end(run)` with a
`Run` snapshot (what a checkpoint stores). A `Run` passed as `resume=` continues exactly: minibatch
indices and dropout keys depend only on (seed, epoch, step), so an interrupted-and-resumed run ends with
the same bits as an uninterrupted one. A non-finite loss raises `DivergedError` naming the epoch and
step, after the last good epoch's `on_epoch_end`.
"""

import contextlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import models, train
from fc_jax.data import check_finite, check_labels
from fc_jax.hparams import HParams, make_hparams, validate_hparams
from fc_jax.optim import get_optimizer

__all__ = ["Run", "DivergedError", "fit", "check_data", "x64_scope", "epoch_learning_rate"]


class DivergedError(RuntimeError):
    """The training loss became non-finite; `epoch` and `step` (1-based, within the epoch) say where."""

    def __init__(self, epoch: int, step: int, iteration: int):
        super().__init__(
            f"training diverged: the loss became non-finite at epoch {epoch}, step {step} of that epoch "
            f"(iteration {iteration}); lower the learning rate or the weight scale. The last good "
            f"checkpoint (end of epoch {epoch - 1}) is kept."
        )
        self.epoch, self.step, self.iteration = epoch, step, iteration


class Run(NamedTuple):
    """A resumable snapshot of a training run, taken at an epoch boundary."""

    ts: train.TrainState  # engine state after `epoch` epochs
    epoch: int  # epochs completed
    history: dict  # loss (per step), train_acc, val_acc, epoch_seconds, lr (per epoch)
    best_params: Any  # params with the best validation accuracy so far
    best_model_state: Any  # their batchnorm statistics
    best_val_acc: float


def x64_scope(config: models.NetConfig):
    """`jax.enable_x64(True)` for float64 configs, a no-op context otherwise."""
    return jax.enable_x64(True) if config.dtype == "float64" else contextlib.nullcontext()


def epoch_learning_rate(lr0: float, lr_decay: float, epoch: int) -> float:
    """The course's decayed learning rate after `epoch` epochs: `lr *= lr_decay`, repeated (float64)."""
    lr = float(lr0)
    for _ in range(epoch):
        lr *= float(lr_decay)
    return lr


def _chunks(steps: int, requested: int) -> int:
    """The largest divisor of `steps` not above `requested`, so every chunk has one shape."""
    return max(d for d in range(1, min(steps, max(requested, 1)) + 1) if steps % d == 0)


def check_data(config: models.NetConfig, data: dict, dtype) -> tuple[np.ndarray, ...]:
    """Validate a course-style data dict; returns host arrays (X_train, y_train, X_val, y_val).

    X is flattened to (N, D) in `dtype`, y is int32. Raises ValueError naming the array when values
    are not finite, labels are out of range, lengths differ or D is not `config.input_dim`.
    """
    out = []
    for split in ("train", "val"):
        X, y = np.asarray(data[f"X_{split}"]), np.asarray(data[f"y_{split}"])
        check_finite(X, f"X_{split}")
        check_labels(y, config.num_classes, f"y_{split}")
        if len(X) != len(y):
            raise ValueError(f"X_{split} has {len(X)} examples but y_{split} has {len(y)}")
        X = X.reshape(len(X), -1).astype(dtype)
        if X.shape[1] != config.input_dim:
            raise ValueError(
                f"X_{split} has {X.shape[1]} features; the config expects {config.input_dim}"
            )
        out += [X, y.astype(np.int32)]
    return tuple(out)


def fit(
    config: models.NetConfig,
    data: dict,
    *,
    update_rule: str = "adam",
    hparams: HParams | None = None,
    num_epochs: int = 10,
    batch_size: int = 100,
    seed: int = 0,
    replace: bool = True,
    chunks_per_epoch: int = 1,
    num_train_samples: int | None = 1000,
    resume: Run | None = None,
    on_epoch_end: Callable[[Run], None] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Run:
    """Train `config` on `data`; returns the final `Run` (best params by validation accuracy inside).

    Args:
      config: the architecture.
      data: dict with X_train (N, ...), y_train (N,), X_val, y_val (numpy or jax arrays).
      update_rule: "sgd", "sgd_momentum", "rmsprop" or "adam".
      hparams: `HParams` (default: the rule's course defaults); `learning_rate` is the initial rate.
      num_epochs: total epochs (a resumed run continues up to this number).
      batch_size: minibatch size; an epoch is max(N // batch_size, 1) steps.
      seed: seeds initialization, minibatch sampling and dropout.
      replace: minibatches with replacement (the course's Solver) or per-epoch permutations.
      chunks_per_epoch: compiled calls per epoch (more gives a finer progress bar; same result).
      num_train_samples: size of the random training subsample for train accuracy (None: all).
      resume: a `Run` to continue from (as loaded from a checkpoint).
      on_epoch_end: called with the `Run` after every epoch (e.g. to write a checkpoint).
      progress: called as `progress(epoch, chunk_done, chunks)` while an epoch runs.
      log: called with one line per epoch.

    Returns:
      The final `Run`.
    """
    optimizer = get_optimizer(update_rule)
    with x64_scope(config):
        dtype = jnp.dtype(config.dtype)
        hp = (
            hparams
            if hparams is not None
            else make_hparams(update_rule, dtype=dtype, keep_prob=config.keep_prob)
        )
        validate_hparams(hp._asdict())
        models.check_dropout_hparams(config, hp)
        Xtr, ytr, Xval, yval = (jnp.asarray(a) for a in check_data(config, data, dtype))
        n = Xtr.shape[0]
        steps = max(n // batch_size, 1)
        chunks = _chunks(steps, chunks_per_epoch)
        sample_key = jax.random.fold_in(jax.random.key(seed), 1)
        if resume is None:
            ts = train.init_train_state(jax.random.key(seed), config, optimizer, hp.weight_scale)
            run = Run(
                ts,
                0,
                {k: [] for k in ("loss", "train_acc", "val_acc", "epoch_seconds", "lr")},
                ts.params,
                ts.model_state,
                -1.0,
            )
        else:
            run = resume
        lr0, lr_decay = float(hp.learning_rate), float(hp.lr_decay)
        # Compile once, ahead of time, so compile time is reported apart from run time.
        t0 = time.perf_counter()
        idx_spec = jax.ShapeDtypeStruct((steps // chunks, batch_size), jnp.int32)
        epoch_fn = (
            train.make_epoch(config, optimizer).lower(run.ts, Xtr, ytr, idx_spec, hp).compile()
        )
        n_sub = num_train_samples if num_train_samples and num_train_samples < n else n
        evaluate = train.make_evaluate(config)
        p, ms = run.ts.params, run.ts.model_state
        eval_train = evaluate.lower(p, ms, Xtr[:n_sub], ytr[:n_sub]).compile()
        eval_val = evaluate.lower(p, ms, Xval, yval).compile()
        compile_seconds = time.perf_counter() - t0
        for epoch in range(run.epoch, num_epochs):
            t0 = time.perf_counter()
            lr = epoch_learning_rate(lr0, lr_decay, epoch)
            hp_e = hp._replace(learning_rate=jnp.asarray(lr, hp.learning_rate.dtype))
            idx = train.sample_indices(
                jax.random.fold_in(sample_key, epoch), n, steps, batch_size, replace
            )
            ts, losses = run.ts, []
            for c, idx_c in enumerate(jnp.split(idx, chunks)):
                ts, chunk_losses = epoch_fn(ts, Xtr, ytr, idx_c, hp_e)
                losses.append(chunk_losses)
                if progress is not None:
                    chunk_losses.block_until_ready()
                    progress(epoch + 1, c + 1, chunks)
            losses = np.concatenate([np.asarray(l) for l in losses])
            if bool(ts.diverged):
                bad = int(np.flatnonzero(~np.isfinite(losses))[0])
                raise DivergedError(epoch + 1, bad + 1, epoch * steps + bad + 1)
            sub = (
                np.random.default_rng([seed, epoch]).choice(n, n_sub, replace=False)
                if n_sub < n
                else slice(None)
            )
            train_acc = float(eval_train(ts.params, ts.model_state, Xtr[sub], ytr[sub]))
            val_acc = float(eval_val(ts.params, ts.model_state, Xval, yval))
            h = run.history
            history = {
                "compile_seconds": compile_seconds,
                "loss": h["loss"] + losses.tolist(),
                "train_acc": h["train_acc"] + [train_acc],
                "val_acc": h["val_acc"] + [val_acc],
                "epoch_seconds": h["epoch_seconds"] + [time.perf_counter() - t0],
                "lr": h["lr"] + [lr],
            }
            better = val_acc > run.best_val_acc
            run = Run(
                ts,
                epoch + 1,
                history,
                ts.params if better else run.best_params,
                ts.model_state if better else run.best_model_state,
                val_acc if better else run.best_val_acc,
            )
            if log is not None:
                log(
                    f"(Epoch {epoch + 1} / {num_epochs}) loss: {losses.mean():.4f}; train acc: {train_acc:.4f}; "
                    f"val acc: {val_acc:.4f}; {history['epoch_seconds'][-1]:.2f} s"
                )
            if on_epoch_end is not None:
                on_epoch_end(run)
        return run

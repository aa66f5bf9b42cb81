"""`fit`: one training run, the run loop (`fc_jax.runs.loop.train_lanes`) with K = 1.

Contract: `fit(config, data, ...)` trains one net on a course-style data dict (`X_train, y_train,
X_val, y_val`) and returns a `Run`, the single lane of the loop's `Lanes` with jax arrays: the engine
state, epochs done, history, best params by validation accuracy. A `Run` passed as `resume=`
continues exactly (minibatch indices and dropout keys depend only on (seed, epoch, step)). A
non-finite loss raises `DivergedError` naming the epoch and step, after the last good epoch's
`on_epoch_end`. How it trains is a `Schedule` and an update rule's name, its hooks one
`Callbacks`; everything about the schedule lives in `fc_jax.runs.loop`; a one-lane sweep is this
same loop, so it equals `fit` by construction.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import models, train
from fc_jax.hparams import HParams, make_hparams, validate_hparams
from fc_jax.models import x64_scope
from fc_jax.runs import loop
from fc_jax.runs.lanes import HISTORY_KEYS, Lanes
from fc_jax.runs.schedule import Schedule

__all__ = [
    "Run",
    "fit",
    "run_of",
    "lanes_of",
]


class Run(NamedTuple):
    """A resumable snapshot of one training run, taken at an epoch boundary."""

    ts: train.TrainState  # engine state after `epoch` epochs
    epoch: int  # epochs completed
    history: dict  # loss (per step), train_acc, val_acc, epoch_seconds, lr (per epoch)
    best_params: Any  # params with the best validation accuracy so far
    best_model_state: Any  # their batchnorm statistics
    best_val_acc: float


def run_of(lanes: Lanes, k: int = 0) -> Run:
    """Lane `k` of `lanes` as a `Run` (jax arrays; the key as a typed key)."""
    pick = lambda t: jax.tree.map(lambda a: jnp.asarray(a[k]), t)
    ts = pick(lanes.ts)
    history = {**lanes.history[k], "compile_seconds": lanes.compile_seconds}
    return Run(
        ts._replace(key=jax.random.wrap_key_data(ts.key)),
        int(lanes.epoch[k]),
        history,
        pick(lanes.best_params),
        pick(lanes.best_model_state),
        float(lanes.best_val_acc[k]),
    )


def lanes_of(run: Run, budget: int | None = None) -> Lanes:
    """A `Run` as one-lane `Lanes` (numpy, key as raw key data)."""
    one = lambda t: jax.tree.map(lambda a: np.asarray(a)[None], t)
    ts = run.ts._replace(key=jax.random.key_data(run.ts.key))
    h = {k: list(run.history.get(k, [])) for k in HISTORY_KEYS}
    best_epoch = int(np.argmax(h["val_acc"])) + 1 if h["val_acc"] else 0
    return Lanes(
        ts=one(ts),
        epoch=np.asarray([run.epoch], np.int64),
        budget=np.asarray([budget if budget is not None else run.epoch], np.int64),
        history=[h],
        best_params=one(run.best_params),
        best_model_state=one(run.best_model_state),
        best_val_acc=np.asarray([run.best_val_acc], np.float64),
        best_epoch=np.asarray([best_epoch], np.int64),
        compile_seconds=float(run.history.get("compile_seconds", 0.0)),
        run_seconds=float(sum(h["epoch_seconds"])),
    )


def fit(
    config: models.NetConfig,
    data: dict,
    *,
    hparams: HParams | None = None,
    schedule: Schedule = Schedule(),
    optimizer: str = "adam",
    resume: Run | Lanes | None = None,
    callbacks: loop.Callbacks | None = None,
) -> Run:
    """Train `config` on `data`; returns the final `Run` (best params by validation accuracy inside).

    Args:
      config: the architecture.
      data: dict with X_train (N, ...), y_train (N,), X_val, y_val (numpy or jax arrays).
      hparams: `HParams` (default: the rule's course defaults); `learning_rate` is the initial rate.
      schedule: the `Schedule`: epochs (a resumed run continues up to `num_epochs`), minibatches
        (an epoch is max(N // batch_size, 1) steps), `seed` (initialization, minibatch sampling,
        dropout), the train-accuracy subsample, checkpoint timing, learning-rate schedule kind and
        augmentation. One lane: no halving, no PBT, one seed.
      optimizer: the update rule's name: "sgd", "sgd_momentum", "rmsprop" or "adam".
      resume: a `Run` (or one-lane `Lanes`) to continue from (as loaded from a checkpoint).
      callbacks: `fc_jax.runs.loop.Callbacks`: `on_epoch_end(run)` after an epoch (e.g. to write
        a checkpoint; with `schedule.checkpoint_every` > 0 when `checkpoint_due`, and always for
        the last epoch done when `fit` ends, diverges or is interrupted); `progress(epoch,
        chunk_done, chunks)` while an epoch runs; `log(line)` once per epoch; `stop(run)` at
        every epoch boundary, true to end the run there.

    Returns:
      The final `Run`.
    """
    if schedule.halving is not None or schedule.pbt is not None or schedule.seeds != 1:
        raise ValueError("fit trains one lane: halving, pbt and seeds are run_sweep's")
    cb = callbacks or loop.Callbacks()
    with x64_scope(config):
        dtype = jnp.dtype(config.dtype)
        hp = hparams if hparams is not None else make_hparams(optimizer, dtype=dtype)
        validate_hparams(hp._asdict())
        hp = jax.tree.map(lambda v: np.asarray(v)[None], hp)
        if isinstance(resume, Run):
            resume = lanes_of(resume)
        lanes = loop.train_lanes(
            config,
            data,
            hp,
            [schedule.seed],
            schedule=schedule,
            optimizer=optimizer,
            resume=resume,
            callbacks=cb._replace(
                on_epoch_end=_of_run(cb.on_epoch_end),
                stop=None if cb.stop is None else (lambda ls: [0] if cb.stop(run_of(ls)) else []),
            ),
            on_diverge="raise",
        )
        return run_of(lanes)


def _of_run(f):
    """`f(run)` as a hook of the loop's `Lanes`."""
    return None if f is None else (lambda ls: f(run_of(ls)))

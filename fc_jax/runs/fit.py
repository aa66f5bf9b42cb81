"""`fit`: one training run, the run loop (`fc_jax.runs.loop.train_lanes`) with K = 1.

Contract: `fit(config, data, ...)` trains one net on a course-style data dict (`X_train, y_train,
X_val, y_val`) and returns a `Run`, the single lane of the loop's `Lanes` with jax arrays: the engine
state, epochs done, history, best params by validation accuracy. A `Run` passed as `resume=`
continues exactly (minibatch indices and dropout keys depend only on (seed, epoch, step)). A
non-finite loss raises `DivergedError` naming the epoch and step, after the last good epoch's
`on_epoch_end`. Everything about the schedule lives in `fc_jax.runs.loop`; a one-lane sweep is this
same loop, so it equals `fit` by construction.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import models, train
from fc_jax.hparams import HParams, make_hparams, validate_hparams
from fc_jax.models import x64_scope
from fc_jax.runs import loop
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


def run_of(lanes: loop.Lanes, k: int = 0) -> Run:
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


def lanes_of(run: Run, budget: int | None = None) -> loop.Lanes:
    """A `Run` as one-lane `Lanes` (numpy, key as raw key data)."""
    one = lambda t: jax.tree.map(lambda a: np.asarray(a)[None], t)
    ts = run.ts._replace(key=jax.random.key_data(run.ts.key))
    h = {k: list(run.history.get(k, [])) for k in loop.HISTORY_KEYS}
    best_epoch = int(np.argmax(h["val_acc"])) + 1 if h["val_acc"] else 0
    return loop.Lanes(
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
    update_rule: str = "adam",
    hparams: HParams | None = None,
    num_epochs: int = 10,
    batch_size: int = 100,
    seed: int = 0,
    replace: bool = True,
    chunks_per_epoch: int = 1,
    num_train_samples: int | None = 1000,
    checkpoint_every: float = 0.0,
    lr_schedule: str = "step",
    crop_pad: int = 0,
    flip: bool = False,
    image_shape: tuple[int, ...] | None = None,
    resume: Run | loop.Lanes | None = None,
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
      checkpoint_every: 0 calls `on_epoch_end` after every epoch; seconds > 0 call it by time
        (`fc_jax.runs.schedule.checkpoint_due`) and always for the last epoch done when `fit`
        ends, diverges or is interrupted.
      lr_schedule: "step" (the course's per-epoch decay), "cosine", "linear" or "triangle"
        (`fc_jax.lr_schedules`; their numbers are `hparams` values).
      crop_pad, flip: random crops of the images zero-padded by `crop_pad` pixels, random
        horizontal flips (`fc_jax.augment`); mixup is on when `hparams.mixup_alpha` > 0.
      image_shape: (C, H, W) of one row of X for crops and flips (default: X's, when 4-D).
      resume: a `Run` (or one-lane `Lanes`) to continue from (as loaded from a checkpoint).
      on_epoch_end: called with the `Run` after an epoch (e.g. to write a checkpoint).
      progress: called as `progress(epoch, chunk_done, chunks)` while an epoch runs.
      log: called with one line per epoch.

    Returns:
      The final `Run`.
    """
    with x64_scope(config):
        dtype = jnp.dtype(config.dtype)
        hp = hparams if hparams is not None else make_hparams(update_rule, dtype=dtype)
        validate_hparams(hp._asdict())
        hp = jax.tree.map(lambda v: np.asarray(v)[None], hp)
        schedule = Schedule(
            num_epochs,
            batch_size,
            seed,
            replace,
            False,
            chunks_per_epoch,
            num_train_samples,
            checkpoint_every=checkpoint_every,
            lr_schedule=lr_schedule,
            crop_pad=crop_pad,
            flip=flip,
            image_shape=None if image_shape is None else tuple(image_shape),
        )
        if isinstance(resume, Run):
            resume = lanes_of(resume)
        lanes = loop.train_lanes(
            config,
            data,
            hp,
            [seed],
            update_rule=update_rule,
            schedule=schedule,
            resume=resume,
            on_epoch_end=None if on_epoch_end is None else (lambda ls: on_epoch_end(run_of(ls))),
            on_diverge="raise",
            log=log,
            progress=progress,
        )
        return run_of(lanes)

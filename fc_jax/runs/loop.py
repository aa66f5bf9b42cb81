"""THE run loop: K >= 1 lanes trained epoch by epoch on the compiled engine.

Contract: a *lane* is one configuration (an `HParams` row and a seed). `train_lanes(config, data,
hparams, seeds, schedule=..., optimizer=...)` trains K lanes of one architecture with the update
rule `optimizer` and returns `Lanes`, a host-side (numpy) snapshot with a leading K axis: the
engine state, each lane's epochs done and epoch budget, history, best params by validation
accuracy. A single training run (`fc_jax.runs.fit.fit`) is K = 1; a sweep
(`fc_jax.runs.sweep.run_sweep`) is K lanes. Its hooks are one `Callbacks`. The schedule lives here
once:

* epoch e of every lane draws its minibatches from `fold_in(fold_in(key(seed), 1), e)`, with the
  schedule's seed (shared: one draw for all lanes) or each lane's own (`independent_batches`);
* lane k starts from `train.init_train_state(key(seed_k), config, opt, weight_scale_k)`; with
  the schedule's `lr_schedule` "step" its learning rate after e epochs is
  `epoch_learning_rate(lr_k, lr_decay_k, e)` (the course's decay, on the host), with another kind
  the engine computes each step's rate from the global step (`fc_jax.lr_schedules`);
* crops, flips (the schedule's structure) and mixup (when a lane's `mixup_alpha` > 0) augment each
  minibatch inside the scan, from per-step keys `epoch_keys` of `fold_in(fold_in(key(seed), 2), e)`
  with the minibatches' seed (shared by all lanes, or each lane's own);
* with `schedule.pbt`, after every `ready` epochs a PBT step (`fc_jax.runs.pbt.exploit`);
* after each epoch: accuracy on a training subsample (drawn from `default_rng([seed, e])`, as the
  course measures it) and on the validation set, best params per lane, then
  `callbacks.on_epoch_end(lanes)` (a checkpoint): after every epoch, or by time
  (`Schedule.checkpoint_every`, see `fc_jax.runs.schedule.checkpoint_due`) and always for the
  last epoch done when the loop ends or is interrupted; `resume=lanes` continues bit for bit from
  any of them (the epochs after it are trained again), since everything above depends only on
  (seed, epoch, step);
* a lane whose loss turns non-finite is frozen by the engine and stops (`on_diverge="stop"`), or the
  run raises `DivergedError` before its `on_epoch_end` (`on_diverge="raise"`, what `fit` does);
* `Schedule.halving`: successive halving. Every lane first trains `min_epochs`; when all lanes of a
  rung reach its budget, the best 1/eta by best validation accuracy (configurations by their mean
  over `Schedule.seeds` lanes, `promote`) go on to eta times the budget (capped at `num_epochs`)
  from their own state, the others stop where they are;
* `callbacks.stop(lanes)`, called at every epoch boundary (the first, and a resumed one,
  included), names lanes that stop where they are (their budget becomes their epoch), as halving
  stops the lanes it does not promote: an outside pruner's hook (`fc_jax.runs.optuna_bridge`);
* the lanes that still train run in groups of `width` lanes (`jax.vmap` over the lane axis, sharded
  over `Mesh(devices, ("trials",))`, padded with copies of the last lane): one compilation per width.
  Between epochs the state lives on the host, so groups, halving and checkpoints are one mechanism.
  A `cache` dict kept by the caller carries the compiled executables from one call to the next
  (the same architecture, update rule, devices, data shapes and width): batches of an Optuna
  study compile once.
"""

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from fc_jax import models
from fc_jax.hparams import HParams
from fc_jax.runs import epoch, pbt
from fc_jax.runs.epoch import make_context
from fc_jax.runs.lanes import Lanes, init_lanes, promote, stop_lanes
from fc_jax.runs.schedule import Schedule, checkpoint_due, lane_groups, rung_budgets

__all__ = ["Callbacks", "DivergedError", "train_lanes"]


class DivergedError(RuntimeError):
    """The training loss became non-finite; `epoch` and `step` (1-based, within the epoch) say where."""

    def __init__(self, epoch: int, step: int, iteration: int):
        kept = (
            f"the last good checkpoint (end of epoch {epoch - 1}) is kept"
            if epoch > 1
            else "no checkpoint exists yet (it diverged in its first epoch)"
        )
        super().__init__(
            f"training diverged: the loss or gradient became non-finite at epoch {epoch}, step "
            f"{step} of that epoch (iteration {iteration}); lower the learning rate or the weight "
            f"scale; {kept}."
        )
        self.epoch, self.step, self.iteration = epoch, step, iteration


class Callbacks(NamedTuple):
    """The run loop's hooks, all optional (`fit` calls them with its `Run` instead of `Lanes`)."""

    on_epoch_end: Callable[[Any], None] | None = None  # a snapshot to write (a checkpoint)
    progress: Callable[[int, int, int], None] | None = None  # (epoch, done, total) in an epoch
    log: Callable[[str], None] | None = None  # one line per epoch
    stop: Callable[[Any], Any] | None = None  # at every epoch boundary: which lanes stop there


def train_lanes(
    config: models.NetConfig,
    data: dict,
    hparams: HParams,
    seeds,
    *,
    schedule: Schedule = Schedule(),
    optimizer: str = "adam",
    width: int | None = None,
    devices: list | None = None,
    resume: Lanes | None = None,
    callbacks: Callbacks | None = None,
    on_diverge: str = "stop",
    cache: dict | None = None,
) -> Lanes:
    """Train K lanes of `config` on `data` (see the module docstring); returns the final `Lanes`.

    Args:
      config: the architecture (shared by all lanes).
      data: dict with X_train (N, ...), y_train (N,), X_val, y_val.
      hparams: `HParams` of (K,) arrays, lane k's values in row k (learning_rate is the initial rate).
      seeds: (K,) integer seeds of the lanes' initialization and dropout.
      schedule: the `Schedule` every lane shares.
      optimizer: the update rule's name: "sgd", "sgd_momentum", "rmsprop" or "adam".
      width: lanes run at once (default: all; rounded up to a multiple of the devices).
      devices: devices to shard the lane axis over (default: `jax.devices()[:1]`).
      resume: `Lanes` to continue from (as loaded from a checkpoint).
      callbacks: the hooks (`Callbacks`), each called with the `Lanes`: `on_epoch_end` after every
        epoch (e.g. to write a checkpoint); with `schedule.checkpoint_every` > 0 only when
        `checkpoint_due`, and always with the latest epoch not yet handed over when the loop
        ends: done, diverged (the last good epoch) or interrupted (Ctrl-C), so a checkpoint always
        holds the last epoch written, whole. `stop` at every epoch boundary returns the indices
        of lanes to stop where they are (e.g. a pruner's verdict).
      on_diverge: "stop" (a diverged lane stops, the others go on) or "raise" (`DivergedError`).
      cache: a dict the caller keeps between calls; the compiled executables are reused from it
        when the architecture, update rule, devices, data shapes and width match.
    """
    cb = callbacks or Callbacks()
    if on_diverge not in ("stop", "raise"):
        raise ValueError(f"on_diverge must be 'stop' or 'raise', got {on_diverge!r}")
    seeds = np.asarray(seeds, np.int64)
    hp = jax.tree.map(np.asarray, hparams)
    K = len(seeds)
    devices = list(devices or jax.devices()[:1])
    with models.x64_scope(config):
        ctx = make_context(
            config,
            data,
            hp,
            seeds,
            schedule=schedule,
            optimizer=optimizer,
            width=width,
            devices=devices,
            cache=cache,
            progress=cb.progress,
        )
        groups = lane_groups(K, schedule.seeds)
        first = rung_budgets(schedule.num_epochs, schedule.halving)[0]
        lanes = resume if resume is not None else init_lanes(ctx.fns, hp, seeds, first)
        if lanes.num_lanes != K:
            raise ValueError(f"resume holds {lanes.num_lanes} lanes; this run has {K}")
        if schedule.halving is None:  # a resumed run may be asked for more epochs
            lanes = lanes._replace(budget=np.full(K, schedule.num_epochs, np.int64))
        if schedule.pbt is not None and lanes.hparams is None:
            lanes = lanes._replace(hparams=hp)
        saver = _Saver(cb.on_epoch_end, schedule.checkpoint_every)
        try:
            while True:
                if cb.stop is not None:
                    lanes = stop_lanes(lanes, cb.stop(lanes))
                todo = np.flatnonzero((lanes.epoch < lanes.budget) & ~lanes.diverged)
                if not len(todo):
                    promoted = promote(lanes, schedule, groups) if schedule.halving else None
                    if promoted is None:
                        return lanes
                    lanes = promoted
                    continue
                e = int(lanes.epoch[todo].min())
                todo = todo[lanes.epoch[todo] == e]
                lanes = epoch.one_epoch(ctx, lanes, todo, e)
                bad = todo[lanes.diverged[todo]]
                if on_diverge == "raise" and len(bad):
                    steps = ctx.steps
                    losses = np.asarray(lanes.history[bad[0]]["loss"][-steps:])
                    step = int(np.flatnonzero(~np.isfinite(losses))[0])
                    raise DivergedError(e + 1, step + 1, e * steps + step + 1)
                if pbt.due(schedule.pbt, e + 1, schedule.num_epochs):
                    lanes = pbt.exploit(lanes, schedule.pbt, schedule.seed, e + 1)
                saver.pending = lanes  # handed over when due, or when the loop ends
                if cb.log is not None:
                    cb.log(_epoch_line(lanes, todo, e, schedule.num_epochs, ctx.steps))
                saver.epoch_end()
        finally:  # the end, an exception, Ctrl-C: the latest epoch not yet handed over
            saver.flush()


class _Saver:
    """Hands epoch ends to `on_epoch_end` when `checkpoint_due`; `flush` hands over the latest."""

    def __init__(self, on_epoch_end, every: float):
        self.write, self.every = on_epoch_end, every
        self.pending, self.last_end, self.last_cost = None, time.perf_counter(), 0.0

    def epoch_end(self) -> None:
        if checkpoint_due(self.every, time.perf_counter() - self.last_end, self.last_cost):
            self.flush()

    def flush(self) -> None:
        lanes, self.pending = self.pending, None  # a write that fails is not retried here
        if lanes is not None and self.write is not None:
            t0 = time.perf_counter()
            self.write(lanes)
            self.last_end = time.perf_counter()
            self.last_cost = self.last_end - t0


def _epoch_line(lanes: Lanes, todo, e: int, num_epochs: int, steps: int) -> str:
    h = lanes.history
    if lanes.num_lanes == 1:  # the course's Solver line
        h = h[0]
        return (
            f"(Epoch {e + 1} / {num_epochs}) loss: {np.mean(h['loss'][-steps:]):.4f}; "
            f"train acc: {h['train_acc'][-1]:.4f}; val acc: {h['val_acc'][-1]:.4f}; "
            f"{h['epoch_seconds'][-1]:.2f} s"
        )
    val = [h[k]["val_acc"][-1] for k in todo]
    val = [v for v in val if np.isfinite(v)]
    seconds = max(h[k]["epoch_seconds"][-1] for k in todo)
    return (
        f"(epoch {e + 1} / {num_epochs}) {len(todo)} of {lanes.num_lanes} configurations trained; "
        f"best val acc {max(val, default=float('nan')):.4f}; "
        f"diverged {int(lanes.diverged.sum())} / {lanes.num_lanes}; {seconds:.2f} s"
    )

"""Hyperparameter sweeps: K configurations of one net on the run loop, as one compiled program.

Contract: `run_sweep(config, data, trials, schedule=..., optimizer=...)` trains one lane per trial
(see `fc_jax.runs.space` for grids, random search and JSON specs) with
`fc_jax.runs.loop.train_lanes` and returns a `SweepResult`. Lane k is the configuration
`trials[k]` with its seed; it ends exactly where `fit` with the same hyperparameters and seed ends
(a one-lane sweep IS `fit`: the same loop). Minibatches are shared by all lanes by default (the
input layer of K nets is then one wide matmul), or drawn per lane (`Schedule.independent_batches`).
`Schedule.seeds` = N repeats every trial over N seeds as N consecutive lanes (the trial's seed s,
then s + 1, ..., s + N - 1; with shared minibatches the seeds vary initialization and dropout,
with `independent_batches` the minibatch order too): `SweepResult` then reports each
configuration's mean and standard deviation over its seeds and ranks by the mean.
`Schedule.halving` runs successive halving (`Halving(eta, min_epochs)`), promoting whole
configurations (all their seeds): the stopped trials stay in the result, their history ending
where they stopped. A diverged lane stops without touching the others. `max_lanes` bounds the
lanes run at once; without it, `lane_group_size` chooses: every lane at once on an accelerator,
one lane per device on CPUs: on one CPU device a wider group is no faster than one lane at a time
(the engine's GEMMs already use every core), but lanes on separate CPU devices run concurrently,
each on its own thread (`benchmarks/bench_sweep.py`; `fc-jax sweep` makes one CPU device per
core, see `fc_jax.cli.cpu_devices_for_sweeps`). The lane axis is sharded over
`Mesh(devices, ("trials",))` (every device by default).
"""

from typing import Any, NamedTuple

import jax
import numpy as np

from fc_jax import models
from fc_jax.hparams import HParams, check_integer
from fc_jax.models import x64_scope
from fc_jax.runs import loop, space
from fc_jax.runs.lanes import Lanes
from fc_jax.runs.schedule import (
    Pbt,
    Schedule,
    check_population,
    group_means,
    lane_groups,
    lane_scores,
    rung_budgets,
)

__all__ = [
    "SweepResult",
    "run_sweep",
    "lane_group_size",
    "result_of",
    "repeat_seeds",
    "pbt_defaults",
    "SCHEDULES",
]

SCHEDULES = ("full", "halving", "pbt")  # a sweep's kinds (`SweepResult.schedule`)
# What PBT perturbs by default: the swept hyperparameters that act during training (not the
# initialization's weight_scale), learning_rate when none is swept.
_PBT_FIXED = ("weight_scale",)


class SweepResult(NamedTuple):
    """The outcome of a sweep; every array has a leading axis of K lanes (one per trial)."""

    config: models.NetConfig
    update_rule: str
    trials: list  # K dicts of hyperparameters, each with its seed
    hparams: Any  # the stacked HParams, numpy (K,) fields
    history: (
        dict  # loss (K, E * steps); train_acc, val_acc, lr (K, E); nan where a lane did not train
    )
    histories: list  # K dicts of lists, each as long as that lane trained
    best_val_acc: np.ndarray  # (K,) best val accuracy before divergence (-1: none)
    best_epoch: np.ndarray  # (K,) 1-based epoch of best_val_acc (0: none)
    epochs: np.ndarray  # (K,) epochs each lane trained
    stopped: np.ndarray  # (K,) bool: stopped early by successive halving
    diverged: np.ndarray  # (K,) bool
    diverged_iteration: np.ndarray  # (K,) 1-based iteration of the first non-finite loss (0: none)
    best_params: dict  # numpy arrays (K, ...): each lane's params at its best epoch
    best_model_state: dict  # their batchnorm statistics
    final_state: Any  # numpy TrainState (K, ...) at the end; key as raw key data
    compile_seconds: float
    run_seconds: float
    devices: list  # str of each device the lanes were sharded over
    schedule: str = "full"
    rungs: tuple = ()  # the halving budgets (epochs), () for "full"
    trial_ids: tuple = ()  # each row's name in tables and files (e.g. Optuna trial numbers); () = 0..K-1
    seeds: int = 1  # lanes per configuration (consecutive lanes; see `repeat_seeds`)
    lineage: tuple = ()  # PBT's copies (`fc_jax.runs.pbt.exploit`); hparams are then the final ones
    pbt: Any = None  # the `Pbt` settings of a PBT sweep

    @property
    def groups(self) -> np.ndarray:
        """(K,) the configuration index of each lane."""
        return lane_groups(len(self.trials), self.seeds)

    @property
    def config_mean(self) -> np.ndarray:
        """(C,) each configuration's mean over its seeds of the best validation accuracy (a lane
        without one, diverged in its first epoch, counts as 0)."""
        return group_means(lane_scores(self.best_val_acc), self.groups)

    @property
    def config_std(self) -> np.ndarray:
        """(C,) the sample standard deviation (ddof=1) of the same; 0 with one seed."""
        if self.seeds == 1:
            return np.zeros(len(self.trials))
        score = lane_scores(self.best_val_acc).reshape(-1, self.seeds)
        return score.std(axis=1, ddof=1)

    @property
    def best_configuration(self) -> int:
        """Index of the configuration with the highest mean (the first of equal ones)."""
        return int(np.argmax(self.config_mean))

    @property
    def best(self) -> int:
        """The winning lane: the best configuration's lane with the highest best validation
        accuracy (with one seed per configuration: the trial with the highest one)."""
        lanes = np.flatnonzero(self.groups == self.best_configuration)
        return int(lanes[np.argmax(self.best_val_acc[lanes])])

    @property
    def lane_epochs(self) -> int:
        """Epochs trained, summed over the lanes (the sweep's cost in single-model epochs)."""
        return int(self.epochs.sum())


def lane_group_size(K: int, devices: list) -> int:
    """How many lanes to run at once when `max_lanes` is not given (see the module docstring).

    All K on an accelerator; on CPUs one lane per device.
    """
    return K if any(d.platform != "cpu" for d in devices) else min(K, len(devices))


def pbt_defaults(trials: list[dict], ready: int = 2, quantile: float = 0.25) -> Pbt:
    """`Pbt(ready, quantile, names)`: names are the hyperparameters whose values differ between
    the trials, except the initialization's weight_scale (learning_rate when none)."""
    names = [
        n for n in HParams._fields if n not in _PBT_FIXED and len({t.get(n) for t in trials}) > 1
    ]
    return Pbt(ready, quantile, tuple(names or ["learning_rate"]))


def repeat_seeds(trials: list[dict], seeds: int) -> list[dict]:
    """Each trial repeated over `seeds` seeds as consecutive lanes: seed s, s + 1, ..., s + N - 1
    (s: the trial's seed). ValueError when a seed would leave [0, MAX_SEED]."""
    check_integer("seeds", seeds, 1)
    out = [{**t, "seed": t["seed"] + i} for t in trials for i in range(seeds)]
    return space.check_trials(out)


def result_of(lanes: Lanes, config, update_rule, trials, hparams, schedule: Schedule, devices):
    """A `SweepResult` from the run loop's final `Lanes`."""
    K, E = lanes.num_lanes, schedule.num_epochs
    steps = max(
        (len(h["loss"]) // len(h["val_acc"]) for h in lanes.history if h["val_acc"]), default=0
    )
    history = {k: np.full((K, E), np.nan) for k in ("train_acc", "val_acc", "lr")}
    history["loss"] = np.full((K, E * steps), np.nan)
    first_bad = np.zeros(K, np.int64)
    for k, h in enumerate(lanes.history):
        for name in ("train_acc", "val_acc", "lr"):
            history[name][k, : len(h[name])] = h[name]
        loss = np.asarray(h["loss"], np.float64)
        history["loss"][k, : len(loss)] = loss
        if lanes.diverged[k] and len(loss):
            first_bad[k] = int(np.argmin(np.isfinite(loss))) + 1
    halving = schedule.halving is not None
    if lanes.hparams is not None:
        hparams = lanes.hparams
    return SweepResult(
        config=config,
        update_rule=update_rule,
        trials=trials,
        hparams=hparams,
        history=history,
        histories=lanes.history,
        best_val_acc=lanes.best_val_acc,
        best_epoch=lanes.best_epoch,
        epochs=lanes.epoch,
        stopped=(lanes.epoch < E) & ~lanes.diverged,
        diverged=lanes.diverged,
        diverged_iteration=first_bad,
        best_params=lanes.best_params,
        best_model_state=lanes.best_model_state,
        final_state=lanes.ts,
        compile_seconds=lanes.compile_seconds,
        run_seconds=lanes.run_seconds,
        devices=[str(d) for d in devices],
        schedule="halving" if halving else "pbt" if schedule.pbt else "full",
        rungs=tuple(rung_budgets(E, schedule.halving)) if halving else (),
        seeds=schedule.seeds,
        lineage=tuple(lanes.lineage),
        pbt=schedule.pbt,
    )


def run_sweep(
    config: models.NetConfig,
    data: dict,
    trials: list[dict],
    *,
    schedule: Schedule = Schedule(),
    optimizer: str = "adam",
    max_lanes: int | None = None,
    devices: list | None = None,
    resume: Lanes | None = None,
    callbacks: loop.Callbacks | None = None,
    cache: dict | None = None,
) -> SweepResult:
    """Train one `config` net per trial on the run loop.

    Args:
      config: the architecture (fixed for the whole sweep).
      data: dict with X_train (N, ...), y_train (N,), X_val, y_val.
      trials: K dicts `{name: value}` (see `fc_jax.runs.space`); unset names take `optimizer`'s
        defaults (keep_prob 1.0: no dropout; seed: `schedule.seed`).
      schedule: the `Schedule` every lane shares: as in `fit`, and `seed` is also the default
        lane seed and the seed of the shared minibatches and of the training subsample that
        train accuracy is measured on; `independent_batches` draws each lane's minibatches
        from its own seed (as `fit` would); `halving` runs successive halving, `pbt`
        population-based training (`fc_jax.runs.pbt`; `pbt_defaults(trials)` perturbs the swept
        values); `seeds` lanes per trial (`repeat_seeds`): results per configuration are the
        mean and standard deviation over its seeds, halving promotes configurations. The
        learning-rate schedule's kind, crops and flips are shared structure; its numbers
        (warmup_epochs, final_lr_fraction) and mixup_alpha may differ per lane. With shared
        minibatches the crops and flips are shared too (one input batch for all lanes); mixup
        mixes per lane (its weight follows each lane's alpha).
      optimizer: the update rule's name: "sgd", "sgd_momentum", "rmsprop" or "adam".
      max_lanes: most lanes run at once (default: `lane_group_size`), rounded up to whole devices.
      devices: devices to shard the lanes over (default `jax.devices()`).
      resume: `Lanes` of this sweep to continue (from `fc_jax.storage.checkpoint.load_lanes`).
      callbacks: `fc_jax.runs.loop.Callbacks`, each called with the `Lanes`: `on_epoch_end`
        after every epoch (e.g. to write a checkpoint; by time with
        `schedule.checkpoint_every`), `progress(epoch, done, total)`, `log(line)` once per
        epoch, `stop` at every epoch boundary: the lanes it names stop there (an Optuna
        pruner's hook).
      cache: a dict kept between calls so that runs of the same shapes compile once
        (`fc_jax.runs.loop.train_lanes`).

    Returns:
      A `SweepResult` (numpy arrays on the host, one row per lane: trial k's seeds are lanes
      k * seeds ... k * seeds + seeds - 1).
    """
    trials = [{**t, "seed": t.get("seed", schedule.seed)} for t in space.check_trials(trials)]
    trials = repeat_seeds(trials, schedule.seeds)
    if schedule.pbt is not None:
        check_population(schedule.pbt.quantile, len(trials))
    if max_lanes is not None:
        check_integer("max_lanes", max_lanes)
    devices = list(jax.devices() if devices is None else devices)
    with x64_scope(config):
        dtype = np.dtype(config.dtype)
        hp = jax.tree.map(np.asarray, space.stack_hparams(trials, optimizer, dtype))
        seeds = space.trial_seeds(trials)
        width = max_lanes or lane_group_size(len(trials), devices)
        lanes = loop.train_lanes(
            config,
            data,
            hp,
            seeds,
            schedule=schedule,
            optimizer=optimizer,
            width=width,
            devices=devices,
            resume=resume,
            callbacks=callbacks,
            on_diverge="stop",
            cache=cache,
        )
    return result_of(lanes, config, optimizer, trials, hp, schedule, devices)

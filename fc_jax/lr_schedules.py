"""Learning-rate schedules computed inside the scanned epoch, from the global step.

Contract: an `LRSchedule(kind, steps_per_epoch, num_epochs)` is structure (hashable, static under
jit); its numbers are values in `HParams` (`learning_rate` the peak, `warmup_epochs`,
`final_lr_fraction`), so lanes of one sweep may mix warmups and final fractions in one compiled
program. `learning_rate_at(schedule, hparams, step)` is the rate of global step `step` (0-based,
the step about to be taken), in the dtype of `hparams.learning_rate`. With S steps per epoch,
T = num_epochs * S steps, a warmup of W = warmup_epochs * S steps, f = final_lr_fraction and
lr0 = learning_rate:

* `step`: the course's `lr *= lr_decay` after each epoch. The host computes it per epoch (float64,
  `fc_jax.runs.schedule.epoch_learning_rate`), so every course number stays bit-identical; here
  it is `hparams.learning_rate` as given.
* `cosine`: `lr0 * min(1, (t + 1) / W)` during the warmup, then
  `lr0 * (f + (1 - f) * (1 + cos(pi * p)) / 2)` with `p = (t - W) / (T - W)`.
* `linear`: the same warmup, then `lr0 * (f + (1 - f) * (1 - p))`.
* `triangle`: up from `f * lr0` to `lr0` over the first P = W steps (half the run when W = 0),
  then down to `f * lr0` at the end: `lr0 * (f + (1 - f) * t / P)`, then
  `lr0 * (f + (1 - f) * (1 - (t - P) / (T - P)))`.
"""

from typing import NamedTuple

import jax.numpy as jnp

from fc_jax.hparams import HParams
from fc_jax.types import Array

__all__ = ["LR_SCHEDULES", "LRSchedule", "learning_rate_at"]

LR_SCHEDULES = ("step", "cosine", "linear", "triangle")


class LRSchedule(NamedTuple):
    """The schedule's kind and the run's length in steps (static: a new length recompiles)."""

    kind: str = "step"  # one of LR_SCHEDULES
    steps_per_epoch: int = 1
    num_epochs: int = 1


def learning_rate_at(schedule: LRSchedule, hparams: HParams, step: Array) -> Array:
    """The learning rate of global step `step` (0-based int array; see the module docstring)."""
    kind = schedule.kind
    if kind not in LR_SCHEDULES:
        raise ValueError(f"lr schedule must be one of {LR_SCHEDULES}, got {kind!r}")
    lr0 = jnp.asarray(hparams.learning_rate)
    if kind == "step":
        return lr0
    dt = lr0.dtype
    S = schedule.steps_per_epoch
    T = jnp.asarray(S * schedule.num_epochs, dt)
    t = jnp.asarray(step, dt)
    W = jnp.asarray(hparams.warmup_epochs, dt) * S
    f = jnp.asarray(hparams.final_lr_fraction, dt)
    one = jnp.ones((), dt)
    if kind == "triangle":
        P = jnp.where(W > 0, W, T / 2)
        up = f + (1 - f) * t / jnp.maximum(P, one)
        down = f + (1 - f) * (1 - (t - P) / jnp.maximum(T - P, one))
        return lr0 * jnp.where(t < P, up, jnp.maximum(down, f))
    warm = jnp.minimum(one, (t + 1) / jnp.maximum(W, jnp.finfo(dt).tiny))
    p = jnp.clip((t - W) / jnp.maximum(T - W, one), 0, 1)
    if kind == "cosine":
        after = f + (1 - f) * (1 + jnp.cos(jnp.pi * p)) / 2
    else:
        after = f + (1 - f) * (1 - p)
    return lr0 * jnp.where(t < W, warm, after)

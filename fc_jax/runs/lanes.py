"""The lanes' state between epochs: the `Lanes` snapshot and its transitions.

Contract: `Lanes` is what the run loop (`fc_jax.runs.loop.train_lanes`) hands to a checkpoint and
takes back to resume: numpy arrays with a leading K axis (one row per lane). `init_lanes` makes
fresh ones, `promote` is successive halving's step between rungs, `stop_lanes` stops lanes where
they are (an outside pruner's verdict). Nothing here compiles or touches a device, so storage
(`fc_jax.storage.checkpoint`) imports this module and not the loop.
"""

from typing import Any, NamedTuple

import jax
import numpy as np

from fc_jax import train
from fc_jax.hparams import HParams
from fc_jax.runs import placement
from fc_jax.runs.schedule import Schedule, group_means, lane_scores, rung_budgets

__all__ = [
    "Lanes",
    "HISTORY_KEYS",
    "init_lanes",
    "promote",
    "stop_lanes",
    "take_rows",
    "copy_tree",
    "assign_rows",
]

HISTORY_KEYS = ("loss", "train_acc", "val_acc", "epoch_seconds", "lr")


class Lanes(NamedTuple):
    """A resumable snapshot of K lanes at an epoch boundary; numpy arrays with a leading K axis."""

    ts: train.TrainState  # engine state; `key` holds the raw key data (jax.random.key_data)
    epoch: np.ndarray  # (K,) int64: epochs done
    budget: np.ndarray  # (K,) int64: the epoch this lane trains up to (its halving rung)
    history: list  # K dicts of lists: loss (per step), train_acc, val_acc, epoch_seconds, lr
    best_params: Any  # (K, ...) params at each lane's best validation accuracy
    best_model_state: Any  # their batchnorm statistics
    best_val_acc: np.ndarray  # (K,) float64 (-1: none yet)
    best_epoch: np.ndarray  # (K,) int64, 1-based (0: none yet)
    compile_seconds: float  # summed over every compilation of the run (all sessions)
    run_seconds: float  # summed over every epoch of every group
    hparams: Any = None  # (K,) numpy HParams when they change during the run (PBT), else None
    lineage: tuple = ()  # PBT's copies, in order (`fc_jax.runs.pbt.exploit`)

    @property
    def num_lanes(self) -> int:
        return len(self.epoch)

    @property
    def diverged(self) -> np.ndarray:
        return np.asarray(self.ts.diverged, bool)


def take_rows(tree, rows):
    """`tree[rows]`, leaf by leaf."""
    return jax.tree.map(lambda a: a[rows], tree)


def copy_tree(tree):
    """A writable numpy copy of every leaf (the snapshot handed to `on_epoch_end` stays as it was)."""
    return jax.tree.map(lambda a: np.array(a, copy=True), tree)


def assign_rows(tree, rows, values) -> None:
    """`tree[rows] = values`, leaf by leaf, in place (numpy leaves)."""

    def put(a, v):
        a[rows] = v

    jax.tree.map(put, tree, values)


def init_lanes(fns: placement.LaneFns, hparams: HParams, seeds: np.ndarray, budget: int) -> Lanes:
    """Fresh lanes: `init_train_state` per lane, pulled to the host."""
    K = len(seeds)
    ts = fns.init_host(seeds, np.asarray(hparams.weight_scale))
    return Lanes(
        ts=ts,
        epoch=np.zeros(K, np.int64),
        budget=np.full(K, budget, np.int64),
        history=[{k: [] for k in HISTORY_KEYS} for _ in range(K)],
        best_params=ts.params,
        best_model_state=ts.model_state,
        best_val_acc=np.full(K, -1.0),
        best_epoch=np.zeros(K, np.int64),
        compile_seconds=0.0,
        run_seconds=0.0,
    )


def promote(lanes: Lanes, schedule: Schedule, groups=None) -> Lanes | None:
    """Successive halving's step between rungs; None when no rung is left.

    `groups` ((K,) configuration index of each lane, default: each lane its own) makes the unit
    of promotion a configuration: the best 1/eta of the configurations still training at this
    rung, ranked by the mean over their lanes of `lane_scores`, go on with all their lanes.
    """
    budgets = rung_budgets(schedule.num_epochs, schedule.halving)
    frontier = int(lanes.budget.max())
    later = [b for b in budgets if b > frontier]
    groups = np.arange(lanes.num_lanes) if groups is None else np.asarray(groups)
    at = lanes.budget == frontier
    members = np.unique(groups[at & (lanes.epoch >= frontier) & ~lanes.diverged])
    if not later or not len(members):
        return None
    keep = max(1, len(members) // schedule.halving.eta)
    score = group_means(lane_scores(lanes.best_val_acc), groups)[members]
    chosen = members[np.argsort(-score, kind="stable")[:keep]]
    budget = lanes.budget.copy()
    budget[at & np.isin(groups, chosen)] = later[0]
    return lanes._replace(budget=budget)


def stop_lanes(lanes: Lanes, rows) -> Lanes:
    """`lanes` with the lanes `rows` stopped where they are (budget = epochs done)."""
    rows = np.asarray(rows, np.int64).reshape(-1)
    if not len(rows):
        return lanes
    budget = lanes.budget.copy()
    budget[rows] = np.minimum(budget[rows], lanes.epoch[rows])
    return lanes._replace(budget=budget)

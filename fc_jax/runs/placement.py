"""Lanes on devices: the engine vmapped over a lane axis, sharded over a one-dimensional mesh.

Contract: `make_lane_fns(config, optimizer, mesh, independent)` returns a `LaneFns` whose jitted
functions take and return pytrees with a leading lane axis W (a multiple of the mesh size), sharded
as `P("trials")` over `mesh`, with the data replicated:

* `epoch(ts, X, y, idx, hparams[, keys]) -> (ts, losses (W, steps))`:
  `jax.vmap(train.make_epoch(...))`; `idx` is (steps, batch) shared by all lanes, or
  (W, steps, batch) when `independent`, and so are the augmentation keys when the epoch augments;
* `evaluate(params, model_state, X, y) -> (W,)` accuracies;
* host <-> device: `init_host(seeds, weight_scale)` builds fresh lanes and returns them as numpy;
  `put_lanes(tree)` / `state_to_host(ts)` move a `TrainState` (its key as raw key data on the host);
  `put_replicated`, `put_idx`; `to_host` (a module function) gathers any array.

With several processes (`jax.distributed.initialize`), every process passes the same global host
arrays; `jax.make_array_from_callback` fills each process's own devices, and `to_host` gathers
with `multihost_utils.process_allgather`. One process then writes files (`is_lead`).
"""

from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fc_jax import models, train
from fc_jax.augment import Augment
from fc_jax.lr_schedules import LRSchedule
from fc_jax.optim import Optimizer

__all__ = ["LaneFns", "make_lane_fns", "to_host", "is_lead"]


def to_host(x) -> np.ndarray:
    """A (possibly multi-process) jax array as one numpy array on this host."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def is_lead() -> bool:
    """True in the process that reports and writes files (process 0)."""
    return jax.process_index() == 0


def _put(x, sharding: NamedSharding) -> jax.Array:
    """Place a global host array with `sharding`; each process supplies the same `x`."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


class LaneFns(NamedTuple):
    """The jitted, lane-sharded building blocks of the run loop (see the module docstring)."""

    lane: NamedSharding  # P("trials"): the leading lane axis split over the devices
    rep: NamedSharding  # replicated
    idx: NamedSharding  # minibatch indices: per lane (independent batches) or replicated
    init: Any  # jitted (seeds (W,), weight_scale (W,)) -> TrainState on the devices
    epoch: Any  # jitted vmapped epoch
    evaluate: Any  # jitted vmapped accuracy

    def put_lanes(self, tree):
        """Host pytree with a lane axis -> devices; a `TrainState`'s raw key data becomes keys."""
        out = jax.tree.map(lambda a: _put(a, self.lane), tree)
        if isinstance(tree, train.TrainState):
            return out._replace(key=jax.random.wrap_key_data(out.key))
        return out

    def put_replicated(self, arrays):
        return tuple(_put(a, self.rep) for a in arrays)

    def put_idx(self, idx):
        return _put(idx, self.idx)

    def state_to_host(self, ts: train.TrainState) -> train.TrainState:
        return jax.tree.map(to_host, ts._replace(key=jax.random.key_data(ts.key)))

    def init_host(self, seeds, weight_scale) -> train.TrainState:
        """Fresh lanes, built on the devices at once (padded to the mesh size), returned as numpy."""
        n, ndev = len(seeds), self.lane.mesh.size
        W = -(-n // ndev) * ndev
        rows = np.minimum(np.arange(W), n - 1)
        seeds = np.asarray(seeds, np.int64)[rows].astype(np.uint32)
        ws = np.asarray(weight_scale)[rows]
        ts = self.init(_put(seeds, self.lane), _put(ws, self.lane))
        return jax.tree.map(lambda a: a[:n], self.state_to_host(ts))


def make_lane_fns(
    config: models.NetConfig,
    optimizer: Optimizer,
    mesh: Mesh,
    independent: bool,
    lr_schedule: LRSchedule | None = None,
    augment: Augment | None = None,
) -> LaneFns:
    """The `LaneFns` of one architecture and update rule over `mesh` (see the module docstring).

    With an active `augment` the epoch takes a sixth argument, the per-step augmentation keys
    (raw key data): (steps, 2) shared by all lanes, or (W, steps, 2) when `independent`.
    """
    lane, rep = NamedSharding(mesh, P("trials")), NamedSharding(mesh, P())

    def init(seeds, weight_scale):
        one = lambda s, w: train.init_train_state(jax.random.key(s), config, optimizer, w)
        return jax.vmap(one)(seeds, weight_scale)

    one_epoch = train.make_epoch(config, optimizer, lr_schedule, augment)
    ax = 0 if independent else None
    idx_sh = lane if independent else rep
    if augment is not None and augment.active:
        with_keys = lambda ts, X, y, idx, hp, keys: one_epoch(ts, X, y, idx, hp, None, keys)  # noqa: E731
        epoch = jax.vmap(with_keys, in_axes=(0, None, None, ax, 0, ax))
        shardings = (lane, rep, rep, idx_sh, lane, idx_sh)
    else:
        epoch = jax.vmap(one_epoch, in_axes=(0, None, None, ax, 0))
        shardings = (lane, rep, rep, idx_sh, lane)
    acc = jax.vmap(
        lambda p, s, X, y: train.accuracy(p, s, X, y, config=config), in_axes=(0, 0, None, None)
    )
    return LaneFns(
        lane=lane,
        rep=rep,
        idx=idx_sh,
        init=jax.jit(init, in_shardings=(lane, lane), out_shardings=lane),
        epoch=jax.jit(epoch, in_shardings=shardings, out_shardings=(lane, lane)),
        evaluate=jax.jit(acc, in_shardings=(lane, lane, rep, rep), out_shardings=lane),
    )

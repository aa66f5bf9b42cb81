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
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from fc_jax import models, train
from fc_jax.data.datasets import check_finite, check_labels
from fc_jax.hparams import HParams
from fc_jax.optim import get_optimizer
from fc_jax.runs import pbt, placement
from fc_jax.runs.schedule import (
    Schedule,
    augment_of,
    check_augment,
    check_lr_values,
    check_schedule,
    checkpoint_due,
    chunks_of,
    epoch_indices,
    epoch_keys,
    group_means,
    lane_groups,
    lane_learning_rates,
    lane_scores,
    lr_schedule_of,
    rung_budgets,
    train_subsample,
)

__all__ = [
    "Lanes",
    "Callbacks",
    "DivergedError",
    "train_lanes",
    "init_lanes",
    "promote",
    "stop_lanes",
    "check_data",
    "HISTORY_KEYS",
]

HISTORY_KEYS = ("loss", "train_acc", "val_acc", "epoch_seconds", "lr")


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


class Callbacks(NamedTuple):
    """The run loop's hooks, all optional (`fit` calls them with its `Run` instead of `Lanes`)."""

    on_epoch_end: Callable[[Any], None] | None = None  # a snapshot to write (a checkpoint)
    progress: Callable[[int, int, int], None] | None = None  # (epoch, done, total) in an epoch
    log: Callable[[str], None] | None = None  # one line per epoch
    stop: Callable[[Any], Any] | None = None  # at every epoch boundary: which lanes stop there


def check_data(config: models.NetConfig, data: dict, dtype) -> tuple[np.ndarray, ...]:
    """Validate a course-style data dict; returns host arrays (X_train, y_train, X_val, y_val).

    X is flattened to (N, D) in `dtype`, y is int32. Raises ValueError naming the array when values
    are not finite, labels are out of range, lengths differ or D is not `config.input_dim`.
    """
    out = []
    for split in ("train", "val"):
        for k in (f"X_{split}", f"y_{split}"):
            if k not in data:
                raise ValueError(f"data has no {k!r}; expected X_train, y_train, X_val, y_val")
        X, y = np.asarray(data[f"X_{split}"]), np.asarray(data[f"y_{split}"])
        if len(X) == 0:
            raise ValueError(f"X_{split} is empty; training needs at least one example")
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


def _rows(tree, rows):
    return jax.tree.map(lambda a: a[rows], tree)


def _copy(tree):
    """A writable numpy copy of every leaf (the snapshot handed to `on_epoch_end` stays as it was)."""
    return jax.tree.map(lambda a: np.array(a, copy=True), tree)


def _assign_rows(tree, rows, values) -> None:
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
        ctx = _context(
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
                lanes = _one_epoch(ctx, lanes, todo, e)
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


# ------------------------------------------------------------------ one epoch, in named steps
class _Executables(NamedTuple):
    """The compiled programs of one group width, compiled ahead of time (so compile time is
    reported apart from training time)."""

    epoch: Any  # one chunk of an epoch: (ts, X, y, idx, hparams[, keys]) -> (ts, losses)
    train_acc: Any  # (params, model_state, X, y) -> (W,) on the training subsample
    val_acc: Any  # the same on the validation set (the same program when the shapes agree)


class _Context(NamedTuple):
    """What every epoch of one `train_lanes` call uses."""

    fns: placement.LaneFns
    compiled: dict  # {width: _Executables}, kept in the caller's cache between calls
    width: int  # lanes run at once
    hp: HParams  # (K,) numpy
    seeds: np.ndarray  # (K,)
    schedule: Schedule
    host: tuple  # X_train, y_train, X_val, y_val (numpy)
    dev: tuple  # the same on the devices, replicated
    steps: int  # minibatches per epoch
    chunks: int  # compiled calls per epoch
    progress: Callable | None
    augment: bool  # the epoch takes per-step augmentation keys


class _EpochPlan(NamedTuple):
    """What the groups of one epoch share."""

    e: int  # the epoch (0-based)
    hp: HParams  # (K,) the values the engine gets (`step`: the rate decayed on the host)
    lr: np.ndarray  # (K,) each lane's learning rate at the epoch's first step (the history's)
    sub: tuple  # (X, y) on the devices: the rows train accuracy is measured on
    groups: list  # arrays of lane indices, at most `width` each
    total: int  # compiled calls of the epoch, for `progress`


class _Trained(NamedTuple):
    """One group's epoch on the host, padding lanes removed."""

    ts: train.TrainState  # (m, ...) the new state
    loss: np.ndarray  # (m, steps)
    train_acc: np.ndarray  # (m,)
    val_acc: np.ndarray  # (m,)
    seconds: float  # training and evaluation
    compile_seconds: float


def _context(
    config, data, hp, seeds, *, schedule, optimizer, width, devices, cache, progress
) -> _Context:
    """Check the run (before anything compiles) and build its `_Context`, reusing the lane
    functions and executables of `cache` when the shapes match."""
    opt = get_optimizer(optimizer)  # a ValueError naming an unknown rule, first
    dtype = jnp.dtype(config.dtype)
    host = check_data(config, data, dtype)
    n = len(host[0])
    check_schedule(schedule, n)
    check_lr_values(schedule, hp)
    image_shape = check_augment(schedule, config.input_dim, np.shape(data["X_train"]))
    steps = max(n // schedule.batch_size, 1)
    chunks = chunks_of(steps, schedule.chunks_per_epoch)
    augment = augment_of(schedule, hp, image_shape)
    lr_schedule = lr_schedule_of(schedule, steps)
    k = schedule.num_train_samples
    key = (
        config,
        optimizer,
        tuple(devices),
        schedule.independent_batches,
        host[0].shape,
        host[2].shape,
        k if k and k < n else n,  # the training subsample's rows
        steps,
        chunks,
        schedule.batch_size,
        lr_schedule,
        augment,
    )
    if cache is not None and key in cache:
        fns, compiled = cache[key]
    else:
        mesh = Mesh(np.array(devices), ("trials",))
        fns = placement.make_lane_fns(
            config,
            opt,
            mesh,
            schedule.independent_batches,
            lr_schedule,
            augment,
        )
        compiled = {}
        if cache is not None:
            cache[key] = fns, compiled
    ndev = len(devices)
    return _Context(
        fns=fns,
        compiled=compiled,
        width=-(-min(len(seeds), width or len(seeds)) // ndev) * ndev,
        hp=hp,
        seeds=seeds,
        schedule=schedule,
        host=host,
        dev=fns.put_replicated(host),
        steps=steps,
        chunks=chunks,
        progress=progress,
        augment=augment.active,
    )


def _one_epoch(ctx: _Context, lanes: Lanes, todo, e: int) -> Lanes:
    """Train the lanes `todo` (all at epoch `e`) for one epoch, in groups of `ctx.width`.

    The steps: `_plan_epoch` (the epoch's rates, training subsample and groups), then for each
    group `_train_group` (`_group_inputs` on the devices, `_compile` once per width, the chunks,
    the accuracies) and `_record` (state, best params, history, timings on the host).
    """
    plan = _plan_epoch(ctx, lanes, todo, e)
    out = _writable(lanes)  # one copy of the state per epoch, written row by row
    for g, rows in enumerate(plan.groups):
        trained = _train_group(ctx, plan, out.ts, rows, done=g * ctx.chunks)
        out = _record(out, rows, trained, plan)
    epoch = out.epoch.copy()
    epoch[todo] += 1
    return out._replace(epoch=epoch)


def _plan_epoch(ctx: _Context, lanes: Lanes, todo, e: int) -> _EpochPlan:
    """Epoch `e`'s learning rates, training subsample and groups of lanes."""
    hp = ctx.hp if lanes.hparams is None else lanes.hparams  # PBT changes them between epochs
    Xtr, ytr = ctx.host[:2]
    sub = train_subsample(ctx.schedule, e, len(Xtr))
    # all rows: the training data already on the devices
    sub_data = (
        ctx.dev[:2] if isinstance(sub, slice) else ctx.fns.put_replicated((Xtr[sub], ytr[sub]))
    )
    lr = lane_learning_rates(ctx.schedule, hp, e, ctx.steps)
    # `step` decays per epoch on the host (the course's float64 products); the other kinds compute
    # each step's rate inside the scan from the initial rate
    hp_e = hp._replace(learning_rate=lr) if ctx.schedule.lr_schedule == "step" else hp
    W = ctx.width
    groups = [todo[g : g + W] for g in range(0, len(todo), W)]
    return _EpochPlan(
        e=e, hp=hp_e, lr=lr, sub=sub_data, groups=groups, total=len(groups) * ctx.chunks
    )


def _writable(lanes: Lanes) -> Lanes:
    """`lanes` with writable copies of what an epoch writes (the snapshot handed to
    `on_epoch_end` stays as it was)."""
    return lanes._replace(
        ts=_copy(lanes.ts),
        history=[dict(h) for h in lanes.history],
        best_params=_copy(lanes.best_params),
        best_model_state=_copy(lanes.best_model_state),
        best_val_acc=lanes.best_val_acc.copy(),
        best_epoch=lanes.best_epoch.copy(),
    )


def _group_inputs(ctx: _Context, plan: _EpochPlan, ts, padded) -> tuple:
    """The padded group's state and values on the devices, and its index and key chunks (host)."""
    s, fns = ctx.schedule, ctx.fns
    n = len(ctx.host[0])
    axis = int(s.independent_batches)  # per-lane draws have a leading lane axis
    idx = np.split(epoch_indices(s, ctx.seeds[padded], plan.e, n, ctx.steps), ctx.chunks, axis)
    keys = [()] * ctx.chunks
    if ctx.augment:
        drawn = epoch_keys(s, ctx.seeds[padded], plan.e, ctx.steps)
        keys = [(fns.put_idx(k),) for k in np.split(drawn, ctx.chunks, axis=axis)]
    return fns.put_lanes(_rows(ts, padded)), fns.put_lanes(_rows(plan.hp, padded)), idx, keys


def _compile(ctx: _Context, ts_g, hp_g, idx, keys, sub) -> _Executables:
    """The group width's `_Executables`, compiled ahead of time on these inputs' shapes."""
    fns, dev = ctx.fns, ctx.dev
    epoch = fns.epoch.lower(ts_g, *dev[:2], fns.put_idx(idx), hp_g, *keys).compile()
    evaluate = lambda X, y: fns.evaluate.lower(ts_g.params, ts_g.model_state, X, y).compile()
    train_acc = evaluate(*sub)
    same = sub[0].shape == dev[2].shape
    return _Executables(epoch, train_acc, train_acc if same else evaluate(*dev[2:]))


def _train_group(ctx: _Context, plan: _EpochPlan, ts, rows, done: int) -> _Trained:
    """One epoch of the lanes `rows` (padded to `ctx.width` with copies of the last), then their
    accuracies; `done`: the epoch's compiled calls before this group (for `progress`)."""
    m, W, fns = len(rows), ctx.width, ctx.fns
    padded = np.concatenate([rows, np.full(W - m, rows[-1])]) if m < W else rows
    ts_g, hp_g, idx, keys = _group_inputs(ctx, plan, ts, padded)
    t0, compile_s = time.perf_counter(), 0.0
    if W not in ctx.compiled:
        ctx.compiled[W] = _compile(ctx, ts_g, hp_g, idx[0], keys[0], plan.sub)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
    exe = ctx.compiled[W]
    losses = []
    for c, idx_c in enumerate(idx):
        ts_g, loss = exe.epoch(ts_g, *ctx.dev[:2], fns.put_idx(idx_c), hp_g, *keys[c])
        losses.append(loss)
        if ctx.progress is not None:
            loss.block_until_ready()
            ctx.progress(plan.e + 1, done + c + 1, plan.total)
    params, state = ts_g.params, ts_g.model_state
    train_acc = placement.to_host(exe.train_acc(params, state, *plan.sub))[:m]
    val_acc = placement.to_host(exe.val_acc(params, state, *ctx.dev[2:]))[:m]
    loss = np.concatenate([placement.to_host(l) for l in losses], axis=1)[:m]
    new = _rows(fns.state_to_host(ts_g), slice(0, m))
    seconds = time.perf_counter() - t0
    return _Trained(
        ts=new,
        loss=loss,
        train_acc=train_acc,
        val_acc=val_acc,
        seconds=seconds,
        compile_seconds=compile_s,
    )


def _record(lanes: Lanes, rows, t: _Trained, plan: _EpochPlan) -> Lanes:
    """Write a group's epoch into the writable `lanes` (`_writable`): its state, best params by
    validation accuracy, history and timings."""
    _assign_rows(lanes.ts, rows, t.ts)
    diverged = np.asarray(t.ts.diverged, bool)
    better = (t.val_acc > lanes.best_val_acc[rows]) & ~diverged
    win = rows[better]
    if len(win):
        best = (lanes.best_params, lanes.best_model_state)
        _assign_rows(best, win, _rows((t.ts.params, t.ts.model_state), better))
    lanes.best_val_acc[win], lanes.best_epoch[win] = t.val_acc[better], plan.e + 1
    for j, k in enumerate(rows):
        h = lanes.history[k] = {key: list(v) for key, v in lanes.history[k].items()}
        h["loss"] += t.loss[j].tolist()  # NaN from a diverged lane's first bad step on
        h["train_acc"].append(float(t.train_acc[j]) if not diverged[j] else float("nan"))
        h["val_acc"].append(float(t.val_acc[j]) if not diverged[j] else float("nan"))
        h["epoch_seconds"].append(t.seconds)
        h["lr"].append(float(plan.lr[k]))
    return lanes._replace(
        compile_seconds=lanes.compile_seconds + t.compile_seconds,
        run_seconds=lanes.run_seconds + t.seconds,
    )

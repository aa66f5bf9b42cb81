"""One epoch of the run loop, in named steps, for the lanes that still train.

Contract: `make_context(...)` checks a run before anything compiles and gathers what every epoch
uses (`Context`: the lane functions, the executables per group width, the data on host and
devices); `one_epoch(ctx, lanes, todo, e)` trains the lanes `todo` (all at epoch `e`) for one
epoch in groups of `ctx.width` and returns the new `Lanes`: `_plan_epoch` (the epoch's rates,
training subsample and groups), then per group `_train_group` (inputs on the devices, `_compile`
once per width, the chunks, the accuracies) and `_record` (state, best params, history, timings on
the host). `fc_jax.runs.loop.train_lanes` drives it epoch by epoch.
"""

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from fc_jax import models, train
from fc_jax.data.datasets import check_finite, check_labels
from fc_jax.hparams import HParams
from fc_jax.optim import get_optimizer
from fc_jax.runs import placement
from fc_jax.runs.lanes import Lanes, assign_rows, copy_tree, take_rows
from fc_jax.runs.schedule import (
    Schedule,
    augment_of,
    check_augment,
    check_lr_values,
    check_schedule,
    chunks_of,
    epoch_indices,
    epoch_keys,
    lane_learning_rates,
    lr_schedule_of,
    train_subsample,
)

__all__ = [
    "Context",
    "Executables",
    "EpochPlan",
    "Trained",
    "make_context",
    "one_epoch",
    "check_data",
]


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


class Executables(NamedTuple):
    """The compiled programs of one group width, compiled ahead of time (so compile time is
    reported apart from training time)."""

    epoch: Any  # one chunk of an epoch: (ts, X, y, idx, hparams[, keys]) -> (ts, losses)
    train_acc: Any  # (params, model_state, X, y) -> (W,) on the training subsample
    val_acc: Any  # the same on the validation set (the same program when the shapes agree)


class Context(NamedTuple):
    """What every epoch of one `train_lanes` call uses."""

    fns: placement.LaneFns
    compiled: dict  # {width: Executables}, kept in the caller's cache between calls
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


class EpochPlan(NamedTuple):
    """What the groups of one epoch share."""

    e: int  # the epoch (0-based)
    hp: HParams  # (K,) the values the engine gets (`step`: the rate decayed on the host)
    lr: np.ndarray  # (K,) each lane's learning rate at the epoch's first step (the history's)
    sub: tuple  # (X, y) on the devices: the rows train accuracy is measured on
    groups: list  # arrays of lane indices, at most `width` each
    total: int  # compiled calls of the epoch, for `progress`


class Trained(NamedTuple):
    """One group's epoch on the host, padding lanes removed."""

    ts: train.TrainState  # (m, ...) the new state
    loss: np.ndarray  # (m, steps)
    train_acc: np.ndarray  # (m,)
    val_acc: np.ndarray  # (m,)
    seconds: float  # training and evaluation
    compile_seconds: float


def make_context(
    config, data, hp, seeds, *, schedule, optimizer, width, devices, cache, progress
) -> Context:
    """Check the run (before anything compiles) and build its `Context`, reusing the lane
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
    return Context(
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


def one_epoch(ctx: Context, lanes: Lanes, todo, e: int) -> Lanes:
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


def _plan_epoch(ctx: Context, lanes: Lanes, todo, e: int) -> EpochPlan:
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
    return EpochPlan(
        e=e, hp=hp_e, lr=lr, sub=sub_data, groups=groups, total=len(groups) * ctx.chunks
    )


def _writable(lanes: Lanes) -> Lanes:
    """`lanes` with writable copies of what an epoch writes (the snapshot handed to
    `on_epoch_end` stays as it was)."""
    return lanes._replace(
        ts=copy_tree(lanes.ts),
        history=[dict(h) for h in lanes.history],
        best_params=copy_tree(lanes.best_params),
        best_model_state=copy_tree(lanes.best_model_state),
        best_val_acc=lanes.best_val_acc.copy(),
        best_epoch=lanes.best_epoch.copy(),
    )


def _group_inputs(ctx: Context, plan: EpochPlan, ts, padded) -> tuple:
    """The padded group's state and values on the devices, and its index and key chunks (host)."""
    s, fns = ctx.schedule, ctx.fns
    n = len(ctx.host[0])
    axis = int(s.independent_batches)  # per-lane draws have a leading lane axis
    idx = np.split(epoch_indices(s, ctx.seeds[padded], plan.e, n, ctx.steps), ctx.chunks, axis)
    keys = [()] * ctx.chunks
    if ctx.augment:
        drawn = epoch_keys(s, ctx.seeds[padded], plan.e, ctx.steps)
        keys = [(fns.put_idx(k),) for k in np.split(drawn, ctx.chunks, axis=axis)]
    return (
        fns.put_lanes(take_rows(ts, padded)),
        fns.put_lanes(take_rows(plan.hp, padded)),
        idx,
        keys,
    )


def _compile(ctx: Context, ts_g, hp_g, idx, keys, sub) -> Executables:
    """The group width's `Executables`, compiled ahead of time on these inputs' shapes."""
    fns, dev = ctx.fns, ctx.dev
    epoch = fns.epoch.lower(ts_g, *dev[:2], fns.put_idx(idx), hp_g, *keys).compile()
    evaluate = lambda X, y: fns.evaluate.lower(ts_g.params, ts_g.model_state, X, y).compile()
    train_acc = evaluate(*sub)
    same = sub[0].shape == dev[2].shape
    return Executables(epoch, train_acc, train_acc if same else evaluate(*dev[2:]))


def _train_group(ctx: Context, plan: EpochPlan, ts, rows, done: int) -> Trained:
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
    new = take_rows(fns.state_to_host(ts_g), slice(0, m))
    seconds = time.perf_counter() - t0
    return Trained(
        ts=new,
        loss=loss,
        train_acc=train_acc,
        val_acc=val_acc,
        seconds=seconds,
        compile_seconds=compile_s,
    )


def _record(lanes: Lanes, rows, t: Trained, plan: EpochPlan) -> Lanes:
    """Write a group's epoch into the writable `lanes` (`_writable`): its state, best params by
    validation accuracy, history and timings."""
    assign_rows(lanes.ts, rows, t.ts)
    diverged = np.asarray(t.ts.diverged, bool)
    better = (t.val_acc > lanes.best_val_acc[rows]) & ~diverged
    win = rows[better]
    if len(win):
        best = (lanes.best_params, lanes.best_model_state)
        assign_rows(best, win, take_rows((t.ts.params, t.ts.model_state), better))
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

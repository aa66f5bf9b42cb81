"""Hyperparameter sweeps: K models trained by one compiled program, sharded over the devices.

Contract: `run_sweep(config, data, trials, ...)` trains one net per trial (see `fc_jax.space` for
grids, random search and JSON specs) and returns a `SweepResult`. The K lanes are stacked along a
leading axis of the `TrainState` (params, optimizer and batchnorm state, key, step, diverged) and of
the `HParams`, and `jax.vmap` runs `fc_jax.train.make_epoch` over that axis with the data unbatched:

* minibatches are shared by all lanes (then the input layer of the K nets is one wide matmul),
  drawn exactly as `fit(seed=seed)` draws them, or (`independent_batches=True`) drawn per lane as
  `fit(seed=trial seed)` draws them;
* lane k starts from `init_train_state(jax.random.key(seed_k), config, optimizer, weight_scale_k)`,
  and its learning rate decays on the host as `fit.epoch_learning_rate(lr_k, lr_decay_k, epoch)`;
  so a lane ends with the same parameters as `fit` run alone on its configuration;
* a lane whose loss turns non-finite is marked diverged and frozen; the other lanes do not notice;
* per epoch: train/val accuracy per lane, best params per lane (by val accuracy, before divergence);
* `max_lanes` bounds the lanes run at once (chunks run one after another, all of one shape);
* with several devices, the lane axis is sharded over `Mesh(devices, ("trials",))` and the data are
  replicated; K is padded to a multiple of the device count with copies of the last lane, which are
  dropped from the results.

The architecture, normalization and update rule are fixed within a sweep; `run_groups` runs several
sweeps (architectures) one after another.
"""

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fc_jax import models, space, train
from fc_jax.fit import _chunks, check_data, epoch_learning_rate, x64_scope
from fc_jax.optim import get_optimizer

__all__ = ["SweepResult", "make_lane_fns", "run_sweep", "run_groups"]


class SweepResult(NamedTuple):
    """The outcome of a sweep; every array has a leading axis of K lanes (one per trial)."""

    config: models.NetConfig
    update_rule: str
    trials: list  # K dicts of hyperparameters, each with its seed
    hparams: Any  # the stacked HParams, numpy (K,) fields
    history: dict  # loss (K, epochs * steps); train_acc, val_acc, lr (K, epochs); nan once diverged
    best_val_acc: np.ndarray  # (K,) best val accuracy before divergence (-1: none)
    best_epoch: np.ndarray  # (K,) 1-based epoch of best_val_acc (0: none)
    diverged: np.ndarray  # (K,) bool
    diverged_iteration: np.ndarray  # (K,) 1-based iteration of the first non-finite loss (0: none)
    best_params: dict  # numpy arrays (K, ...): each lane's params at its best epoch
    best_model_state: dict  # their batchnorm statistics
    final_state: train.TrainState  # numpy (K, ...) after the last epoch; key as jax.random.key_data
    compile_seconds: float
    run_seconds: float
    devices: list  # str of each device the lanes were sharded over

    @property
    def best(self) -> int:
        """Index of the trial with the highest best validation accuracy."""
        return int(np.argmax(self.best_val_acc))


def _host(x) -> np.ndarray:
    """A (possibly multi-process) jax array as one numpy array on this host."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _put(x, sharding: NamedSharding) -> jax.Array:
    """Place a host array with `sharding`; each process supplies the same (global) `x`."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def make_lane_fns(config: models.NetConfig, update_rule: str, mesh: Mesh, independent: bool):
    """The jitted, lane-sharded building blocks of a sweep.

    Returns:
      dict with
        init(seeds (K,) int32, weight_scale (K,)) -> TrainState with a K axis;
        epoch(ts, X, y, idx, hparams) -> (ts, losses (K, steps)), vmapped `train.make_epoch`;
          idx is (steps, batch) shared, or (K, steps, batch) when `independent`;
        evaluate(params, model_state, X, y) -> (K,) accuracies;
        keep(better (K,) bool, new, old) -> new where better else old, per lane.
    """
    optimizer = get_optimizer(update_rule)
    lane, rep = NamedSharding(mesh, P("trials")), NamedSharding(mesh, P())
    idx_sh = lane if independent else rep

    def init(seeds, weight_scale):
        one = lambda s, w: train.init_train_state(jax.random.key(s), config, optimizer, w)
        return jax.vmap(one)(seeds, weight_scale)

    epoch = jax.vmap(
        train.make_epoch(config, optimizer), in_axes=(0, None, None, 0 if independent else None, 0)
    )
    acc = jax.vmap(
        lambda p, s, X, y: train.accuracy(p, s, X, y, config=config), in_axes=(0, 0, None, None)
    )

    def keep(better, new, old):
        pick = lambda n, o: jnp.where(better.reshape(-1, *([1] * (n.ndim - 1))), n, o)
        return jax.tree.map(pick, new, old)

    return dict(
        lane=lane,
        rep=rep,
        init=jax.jit(init, in_shardings=(lane, lane), out_shardings=lane),
        epoch=jax.jit(
            epoch, in_shardings=(lane, rep, rep, idx_sh, lane), out_shardings=(lane, lane)
        ),
        evaluate=jax.jit(acc, in_shardings=(lane, lane, rep, rep), out_shardings=lane),
        keep=jax.jit(keep, in_shardings=(lane, lane, lane), out_shardings=lane),
    )


class _Plan(NamedTuple):
    """The schedule every chunk of lanes shares."""

    num_epochs: int
    steps: int  # minibatches per epoch
    chunks: int  # compiled calls per epoch
    batch_size: int
    seed: int  # of the shared minibatches and of the train-accuracy subsample
    replace: bool
    independent: bool
    num_train_samples: int | None


def _indices(plan: _Plan, seeds: np.ndarray, epoch: int, n: int) -> np.ndarray:
    """The epoch's minibatch indices as `fit(seed=s)` draws them (0-based `epoch`): (steps, batch)
    from `plan.seed`, shared, or (K, steps, batch) from each lane's seed."""

    def draw(seed):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(int(seed)), 1), epoch)
        return np.asarray(train.sample_indices(key, n, plan.steps, plan.batch_size, plan.replace))

    return np.stack([draw(s) for s in seeds]) if plan.independent else draw(plan.seed)


def _train_chunk(fns: dict, plan: _Plan, host: tuple, seeds, hp, say, progress) -> dict:
    """Train the lanes (`seeds`, `hp` of (K,) numpy arrays) for all epochs; numpy results.

    Compiles `fns["epoch"]` on first use (fns["compiled"]) and times that apart from the epochs.
    """
    lane, rep = fns["lane"], fns["rep"]
    (Xtr, ytr, _, _), (X, y, X_val, y_val) = host, fns["data"]
    E, K, n = plan.num_epochs, len(seeds), len(Xtr)
    out = {k: np.full((K, E), np.nan) for k in ("lr", "train_acc", "val_acc")}
    out.update(loss=np.full((K, E * plan.steps), np.nan), best_val=np.full(K, -1.0))
    out.update(best_epoch=np.zeros(K, np.int64), seconds=0.0, compile_seconds=0.0)
    t0 = time.perf_counter()
    hp_dev = jax.tree.map(lambda v: _put(v, lane), hp)
    ts = fns["init"](_put(seeds, lane), hp_dev.weight_scale)
    best, X_sub, y_sub = (ts.params, ts.model_state), X, y
    for epoch in range(E):
        lrs = [epoch_learning_rate(a, d, epoch) for a, d in zip(hp.learning_rate, hp.lr_decay)]  # noqa: B905
        hp_e = hp_dev._replace(learning_rate=_put(np.asarray(lrs, hp.learning_rate.dtype), lane))
        idx = _indices(plan, seeds, epoch, n)
        idx = [
            _put(i, lane if plan.independent else rep)
            for i in np.split(idx, plan.chunks, int(plan.independent))
        ]
        if "compiled" not in fns:  # ahead of time, so compile time is reported apart
            fns["compiled"] = fns["epoch"].lower(ts, X, y, idx[0], hp_e).compile()
            out["compile_seconds"] = time.perf_counter() - t0
        t0, losses = time.perf_counter(), []
        for c, idx_c in enumerate(idx):
            ts, loss = fns["compiled"](ts, X, y, idx_c, hp_e)
            losses.append(loss)
            if progress is not None:
                loss.block_until_ready()
                progress(epoch + 1, c + 1, plan.chunks)
        if plan.num_train_samples and plan.num_train_samples < n:  # the subsample fit measures
            rng = np.random.default_rng([plan.seed, epoch])
            sub = rng.choice(n, plan.num_train_samples, replace=False)
            X_sub, y_sub = _put(Xtr[sub], rep), _put(ytr[sub], rep)
        train_acc = _host(fns["evaluate"](ts.params, ts.model_state, X_sub, y_sub))
        val_acc = _host(fns["evaluate"](ts.params, ts.model_state, X_val, y_val))
        diverged = _host(ts.diverged)
        better = (val_acc > out["best_val"]) & ~diverged
        best = fns["keep"](_put(better, lane), (ts.params, ts.model_state), best)
        out["best_val"] = np.where(better, val_acc, out["best_val"])
        out["best_epoch"] = np.where(better, epoch + 1, out["best_epoch"])
        out["lr"][:, epoch] = lrs
        out["train_acc"][:, epoch] = np.where(diverged, np.nan, train_acc)
        out["val_acc"][:, epoch] = np.where(diverged, np.nan, val_acc)
        step_losses = np.concatenate([_host(l) for l in losses], axis=1)
        out["loss"][:, epoch * plan.steps : (epoch + 1) * plan.steps] = step_losses
        out["seconds"] += time.perf_counter() - t0
        say(epoch + 1, out["val_acc"][:, epoch], diverged, time.perf_counter() - t0)
    out["best_params"], out["best_model_state"] = jax.tree.map(_host, best)
    out["final_state"] = jax.tree.map(_host, ts._replace(key=jax.random.key_data(ts.key)))
    return out


def _check_int(name: str, v, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")


def run_sweep(
    config: models.NetConfig,
    data: dict,
    trials: list[dict],
    *,
    update_rule: str = "adam",
    num_epochs: int = 10,
    batch_size: int = 100,
    seed: int = 0,
    replace: bool = True,
    independent_batches: bool = False,
    max_lanes: int | None = None,
    chunks_per_epoch: int = 1,
    num_train_samples: int | None = 1000,
    devices: list | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> SweepResult:
    """Train one `config` net per trial, all lanes of a chunk in one compiled program.

    Args:
      config: the architecture (fixed for the whole sweep).
      data: dict with X_train (N, ...), y_train (N,), X_val, y_val.
      trials: K dicts `{name: value}` (see `fc_jax.space`); unset names take `update_rule`'s
        defaults (keep_prob: `config.keep_prob`; seed: `seed`).
      update_rule: "sgd", "sgd_momentum", "rmsprop" or "adam".
      num_epochs, batch_size, replace, chunks_per_epoch, num_train_samples: as in `fit`.
      seed: the default lane seed, and the seed of the shared minibatches and of the training
        subsample that train accuracy is measured on (shared by all lanes).
      independent_batches: draw each lane's minibatches from its own seed (as `fit` would).
      max_lanes: most lanes run at once (default: all), rounded up to a multiple of the devices.
      devices: devices to shard the lanes over (default `jax.devices()`).
      log: called with one line per epoch (and chunk of lanes).
      progress: called as `progress(epoch, chunk_done, chunks)` while an epoch runs.

    Returns:
      A `SweepResult` (numpy arrays on the host, one row per trial).
    """
    trials = [{**t, "seed": t.get("seed", seed)} for t in space.check_trials(trials)]
    if any("keep_prob" in t for t in trials) and not config.use_dropout:
        raise ValueError("keep_prob is swept but the net has no dropout: set config.keep_prob < 1")
    _check_int("num_epochs", num_epochs, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, 0)
    if max_lanes is not None:
        _check_int("max_lanes", max_lanes, 1)
    devices = list(jax.devices() if devices is None else devices)
    mesh = Mesh(np.array(devices), ("trials",))
    with x64_scope(config):
        dtype = jnp.dtype(config.dtype)
        keep = {"keep_prob": config.keep_prob} if config.use_dropout else {}
        hp = jax.tree.map(np.asarray, space.stack_hparams(trials, update_rule, dtype, **keep))
        seeds, host = space.trial_seeds(trials), check_data(config, data, dtype)
        K, steps = len(trials), max(len(host[0]) // batch_size, 1)
        width = -(-min(K, max_lanes or K) // len(devices)) * len(devices)  # whole devices
        plan = _Plan(num_epochs, steps, _chunks(steps, chunks_per_epoch), batch_size, seed,
                     replace, independent_batches, num_train_samples)  # fmt: skip
        fns = make_lane_fns(config, update_rule, mesh, independent_batches)
        fns["data"] = tuple(_put(a, fns["rep"]) for a in host)
        parts = []
        for c0 in range(0, K, width):  # every chunk has `width` lanes: one compilation
            rows = np.minimum(np.arange(c0, c0 + width), K - 1)  # pad with copies of the last lane
            m = min(width, K - c0)
            label = f"lanes {c0 + 1}-{c0 + m} of {K}, " if width < K else ""

            def say(epoch, val_acc, diverged, seconds, label=label, m=m):
                if log is not None:
                    log(f"({label}epoch {epoch} / {num_epochs}) best val acc "
                        f"{np.nanmax(val_acc[:m], initial=0.0):.4f}; "
                        f"diverged {int(diverged[:m].sum())} / {m}; {seconds:.2f} s")  # fmt: skip

            hp_rows = jax.tree.map(lambda v, r=rows: v[r], hp)
            out = _train_chunk(fns, plan, host, seeds[rows], hp_rows, say, progress)
            parts.append(jax.tree.map(lambda a, m=m: a[:m] if np.ndim(a) else a, out))
        res = jax.tree.map(lambda *xs: np.concatenate(xs) if np.ndim(xs[0]) else sum(xs), *parts)
        finite = np.isfinite(res["loss"])
        first_bad = np.where(finite.all(axis=1), 0, np.argmin(finite, axis=1) + 1)
        after = np.arange(finite.shape[1])[None, :] >= first_bad[:, None] - 1
        res["loss"] = np.where(after & (first_bad > 0)[:, None], np.nan, res["loss"])
        return SweepResult(
            config=config,
            update_rule=update_rule,
            trials=trials,
            hparams=hp,
            history={k: res[k] for k in ("loss", "lr", "train_acc", "val_acc")},
            best_val_acc=res["best_val"],
            best_epoch=res["best_epoch"],
            diverged=res["final_state"].diverged.astype(bool),
            diverged_iteration=first_bad,
            best_params=res["best_params"],
            best_model_state=res["best_model_state"],
            final_state=res["final_state"],
            compile_seconds=float(res["compile_seconds"]),
            run_seconds=float(res["seconds"]),
            devices=[str(d) for d in devices],
        )


def run_groups(
    groups: list[tuple[models.NetConfig, list[dict]]], data: dict, **kwargs
) -> list[SweepResult]:
    """Run one sweep per `(config, trials)` pair, one after another (one compilation each).

    Every configuration and trial list is checked before the first sweep starts.
    """
    if not groups:
        raise ValueError("run_groups needs at least one (config, trials) pair")
    for config, trials in groups:
        if not isinstance(config, models.NetConfig):
            raise TypeError(f"each group needs a NetConfig, got {type(config).__name__}")
        space.check_trials(trials)
    return [run_sweep(config, data, trials, **kwargs) for config, trials in groups]

"""Benchmark: K configurations in one vmapped program vs K sequential runs of the single engine.

Default: 16 configurations (learning rate 1e-4, 3e-4, 1e-3, 3e-3 x weight scale 1e-2, 2e-2, 5e-2,
1e-1) of a [100, 100, 100, 100] net with adam, batch 100, one epoch (490 steps) on 49000 x 3072
float32 inputs (random, or CIFAR-10 with --data cifar10). Both sides use the same minibatch indices;
the sequential side compiles `train.make_epoch` once (hyperparameters are data) and runs it K times.
Compile time (`lower().compile()`) is reported apart from run time; each side runs once to warm up,
then is timed with `block_until_ready`. Prints the device and ONE JSON line.

    python benchmarks/bench_sweep.py            # full size (use a quiet machine)
    python benchmarks/bench_sweep.py --small    # 20 steps, 4 configurations, 2000 rows: a smoke test
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fc_jax import models, space, sweep, train
from fc_jax.optim import get_optimizer

GRID = {"learning_rate": [1e-4, 3e-4, 1e-3, 3e-3], "weight_scale": [1e-2, 2e-2, 5e-2, 1e-1]}


def _data(kind: str, rows: int):
    if kind == "cifar10":
        from fc_jax.data import get_dataset

        d = get_dataset("cifar10", num_training=rows, num_validation=0, num_test=0)
        return d["X_train"], d["y_train"].astype(np.int32)
    rng = np.random.default_rng(0)
    return rng.standard_normal((rows, 3072), np.float32), rng.integers(0, 10, rows, np.int32)


def _timed(fn):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=490, help="minibatches per epoch")
    p.add_argument("--configs", type=int, default=16, help="first N of the 4 x 4 grid (1..16)")
    p.add_argument("--rows", type=int, default=49000, help="training rows")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--hidden-dims", type=int, nargs="+", default=[100, 100, 100, 100])
    p.add_argument("--data", choices=("random", "cifar10"), default="random")
    p.add_argument("--independent-batches", action="store_true")
    p.add_argument("--small", action="store_true", help="--steps 20 --configs 4 --rows 2000")
    a = p.parse_args(argv)
    if a.small:
        a.steps, a.configs, a.rows = 20, 4, 2000
    if not 1 <= a.configs <= 16:
        p.error("--configs must be in 1..16")
    cfg = models.NetConfig(tuple(a.hidden_dims), input_dim=3072)
    trials = space.grid(GRID)[: a.configs]
    K, opt = len(trials), get_optimizer("adam")
    hp = space.stack_hparams(trials, "adam", jnp.float32)
    seeds = space.trial_seeds(trials)
    X_np, y_np = _data(a.data, a.rows)
    X, y = jnp.asarray(X_np), jnp.asarray(y_np)
    shape = (K, a.steps, a.batch_size) if a.independent_batches else (a.steps, a.batch_size)
    idx = jax.random.randint(jax.random.key(1), shape, 0, len(X_np), dtype=jnp.int32)

    # the sweep: K lanes, one program (sharded over the devices when there are several)
    devices = jax.devices()
    width = -(-K // len(devices)) * len(devices)
    rows = np.minimum(np.arange(width), K - 1)
    mesh = Mesh(np.array(devices), ("trials",))
    fns = sweep.make_lane_fns(cfg, "adam", mesh, a.independent_batches)
    lanes, rep = NamedSharding(mesh, P("trials")), NamedSharding(mesh, P())
    hp_w = jax.device_put(jax.tree.map(lambda v: v[rows], hp), lanes)
    idx_w = jax.device_put(idx[rows], lanes) if a.independent_batches else jax.device_put(idx, rep)
    Xs, ys = jax.device_put(X, rep), jax.device_put(y, rep)
    ts0, _ = _timed(lambda: fns["init"](jax.device_put(seeds[rows], lanes), hp_w.weight_scale))
    t0 = time.perf_counter()
    sweep_fn = fns["epoch"].lower(ts0, Xs, ys, idx_w, hp_w).compile()
    sweep_compile = time.perf_counter() - t0
    _timed(lambda: sweep_fn(ts0, Xs, ys, idx_w, hp_w))  # warm-up
    (_, losses), sweep_run = _timed(lambda: sweep_fn(ts0, Xs, ys, idx_w, hp_w))

    # sequential: the single-model engine, compiled once, run K times
    lane = lambda tree, k: jax.tree.map(lambda v: v[k], tree)
    states = [train.init_train_state(jax.random.key(int(s)), cfg, opt, hp.weight_scale[k]) for k, s in enumerate(seeds)]  # fmt: skip
    idx_k = lambda k: idx[k] if a.independent_batches else idx
    t0 = time.perf_counter()
    single = train.make_epoch(cfg, opt).lower(states[0], X, y, idx_k(0), lane(hp, 0)).compile()
    seq_compile = time.perf_counter() - t0
    _timed(lambda: single(states[0], X, y, idx_k(0), lane(hp, 0)))  # warm-up
    hps = [jax.block_until_ready(lane(hp, k)) for k in range(K)]
    t0 = time.perf_counter()
    seq_losses = [single(states[k], X, y, idx_k(k), hps[k])[1] for k in range(K)]
    jax.block_until_ready(seq_losses)
    seq_run = time.perf_counter() - t0

    agree = float(np.max(np.abs(np.asarray(losses)[:K] - np.stack(seq_losses))))
    print(f"device: {devices[0].device_kind} x {len(devices)} ({jax.default_backend()})")
    result = dict(
        bench="sweep",
        device=str(devices[0].device_kind),
        num_devices=len(devices),
        configs=K,
        lanes=width,  # K padded to a multiple of the devices
        steps=a.steps,
        batch_size=a.batch_size,
        hidden_dims=a.hidden_dims,
        rows=len(X_np),
        data=a.data,
        independent_batches=a.independent_batches,
        sweep_compile_s=round(sweep_compile, 4),
        sweep_run_s=round(sweep_run, 4),
        sequential_compile_s=round(seq_compile, 4),
        sequential_run_s=round(seq_run, 4),
        ratio_sweep_over_sequential=round(sweep_run / seq_run, 4),
        sweep_steps_per_s=round(K * a.steps / sweep_run, 1),
        sequential_steps_per_s=round(K * a.steps / seq_run, 1),
        max_loss_difference=agree,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""Cost per lane-step of a vmapped W1 epoch as the number of lanes K grows, against one model.

    python benchmarks/sweep_lanes.py              # K = 1, 2, 4, 8, 16; 200 steps each

Explains the CPU sweep ratio in RESULTS.md: on 2 CPU cores the stacked per-lane states fall out
of cache as K grows, so a lane-step costs more than a single model's step.
"""

import argparse
import time

import jax
import jax.numpy as jnp

from fc_jax import models, optim, train
from fc_jax.hparams import make_hparams


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lanes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    args = ap.parse_args()
    cfg, opt = models.NetConfig((100, 100, 100, 100)), optim.get_optimizer("adam")
    n = 49000
    X = jax.random.normal(jax.random.key(0), (n, 3072))
    y = jax.random.randint(jax.random.key(1), (n,), 0, 10)
    idx = train.sample_indices(jax.random.key(3), n, args.steps, 100)
    epoch = lambda *a: train._epoch(*a, config=cfg, optimizer=opt)
    for k in args.lanes:
        hp = jax.tree.map(lambda a, k=k: jnp.broadcast_to(a, (k,)), make_hparams("adam"))
        keys = jax.random.split(jax.random.key(2), k)
        ts = jax.vmap(lambda key: train.init_train_state(key, cfg, opt, 1e-2))(keys)
        f = jax.jit(jax.vmap(epoch, in_axes=(0, None, None, None, 0)))
        c = f.lower(ts, X, y, idx, hp).compile()
        c(ts, X, y, idx, hp)[1].block_until_ready()
        best = 1e9
        for _ in range(3):
            t = time.perf_counter()
            c(ts, X, y, idx, hp)[1].block_until_ready()
            best = min(best, time.perf_counter() - t)
        print(f"K={k:3d}: {1e3 * best / args.steps / k:.3f} ms per lane-step", flush=True)


if __name__ == "__main__":
    main()

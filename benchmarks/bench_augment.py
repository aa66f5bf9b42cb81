"""The cost of augmentation on the W1 epoch: seconds per epoch with and without it, in one run.

W1 (benchmarks/bench_train.py): net [100, 100, 100, 100], adam lr 1e-3, batch 100, 490 steps on
49000 x 3072 float32 data (CIFAR-10's shape, (3, 32, 32) images). Variants, each compiled apart
and run on the same minibatch indices and augmentation keys: none; crop 4 + flip (the target: at
most 10% more); crop 4 alone; flip alone; mixup 0.2; crop 4 + flip + mixup 0.2. Steady-state
times are the best of `--repeats` epochs, each closed with `block_until_ready()`, and the variants
are interleaved within each repeat (the machine's speed drifts). Prints one line per variant
(seconds, ratio to none) and one JSON line. `--hidden` and `--batch` time another net instead.

    python benchmarks/bench_augment.py                # full size
    python benchmarks/bench_augment.py --steps 50     # quick check
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import augment, models, optim, train
from fc_jax.hparams import make_hparams
from fc_jax.runs.schedule import Schedule, epoch_keys

SHAPE = (3, 32, 32)
VARIANTS = {  # name: (crop_pad, flip, mixup_alpha)
    "none": (0, False, 0.0),
    "crop4+flip": (4, True, 0.0),
    "crop4": (4, False, 0.0),
    "flip": (0, True, 0.0),
    "mixup0.2": (0, False, 0.2),
    "crop4+flip+mixup0.2": (4, True, 0.2),
}


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=None, help="steps per epoch (default: N // 100)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=49000)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--hidden", type=int, nargs="+", default=[100] * 4, help="default: W1's")
    ap.add_argument("--batch", type=int, default=100, help="default: W1's")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((args.n, 3072), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, args.n).astype(np.int32))
    steps = args.steps or args.n // args.batch
    config = models.NetConfig(tuple(args.hidden))
    opt = optim.get_optimizer("adam")
    idx = train.sample_indices(jax.random.key(1), args.n, steps, args.batch)
    keys = jnp.asarray(epoch_keys(Schedule(), [0], 0, steps))
    ts0 = train.init_train_state(jax.random.key(0), config, opt, 1e-2)
    runs, out = {}, {}
    for name in args.variants:
        pad, flip, alpha = VARIANTS[name]
        aug = augment.Augment(SHAPE, pad, flip, alpha > 0)
        hp = make_hparams("adam", learning_rate=1e-3, mixup_alpha=alpha)
        extra = (None, keys) if aug.active else ()
        t = time.perf_counter()
        epoch = train.make_epoch(config, opt, augment=aug if aug.active else None)
        epoch = epoch.lower(ts0, X, y, idx, hp, *extra).compile()
        compile_s = time.perf_counter() - t
        loss = float(jnp.mean(epoch(ts0, X, y, idx, hp, *extra)[1]))  # warm-up
        out[name] = dict(compile_s=compile_s, mean_loss=loss, times=[])
        runs[name] = lambda e=epoch, hp=hp, x=extra: e(ts0, X, y, idx, hp, *x)[
            1
        ].block_until_ready()
    for _ in range(args.repeats):  # interleaved: the machine's speed drifts
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            out[name]["times"].append(time.perf_counter() - t)
    base = min(out["none"]["times"]) if "none" in out else None
    for name, r in out.items():
        r["epoch_s"] = min(r["times"])
        r["over_none"] = r["epoch_s"] / base if base else None
        ratio = f", {r['over_none']:.3f}x none" if base else ""
        print(
            f"{list(args.hidden)} batch {args.batch} {name}: {r['epoch_s']:.3f} s/epoch "
            f"({steps} steps{ratio}); compile {r['compile_s']:.2f} s; mean loss "
            f"{r['mean_loss']:.4f}"
        )
    meta = dict(device=str(jax.devices()[0]), jax=jax.__version__, steps=steps)
    print(json.dumps(dict(meta, hidden=list(args.hidden), batch=args.batch, results=out)))


if __name__ == "__main__":
    main()

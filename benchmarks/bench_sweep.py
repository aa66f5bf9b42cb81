"""Benchmark: a K-configuration sweep as `fc-jax sweep` runs it vs one configuration at a time.

Default: 16 configurations (learning rate 1e-4, 3e-4, 1e-3, 3e-3 x weight scale 1e-2, 2e-2, 5e-2,
1e-1) of a [100, 100, 100, 100] net with adam, no dropout, batch 100, one epoch (490 steps) on
49000 x 3072 float32 inputs (random, or CIFAR-10 with --data cifar10), 1000 validation rows. Every
contender is `fc_jax.runs.sweep.run_sweep` (the run loop: minibatches, evaluation, host bookkeeping
included): on ONE device with `--max-lanes W` for each W in --widths (W = 1 is one configuration
at a time), and the default, `lane_group_size` over every device: all lanes at once on an
accelerator, one lane per device on CPUs, where this script, like `fc-jax sweep`, makes one CPU
device per core (`fc_jax.cli.cpu_devices_for_sweeps`; set JAX_NUM_CPU_DEVICES to choose). The
single-model engine run K times (`train.make_epoch`, no run loop) is a third reference. Each
contender runs once to warm up (compiling), then --repeats times, taking turns, and its best time
is kept (the machine's load drifts); compile time is reported apart. Prints a table and ONE JSON
line.

    python benchmarks/bench_sweep.py            # full size (use a quiet machine)
    python benchmarks/bench_sweep.py --small    # 40 steps, 4 configurations: a smoke test
"""

import argparse
import json
import sys
import time

from fc_jax.cli import cpu_devices_for_sweeps

cpu_devices_for_sweeps(["sweep"])  # as `fc-jax sweep`: before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from fc_jax import Schedule, models, train  # noqa: E402
from fc_jax.optim import get_optimizer  # noqa: E402
from fc_jax.runs import space, sweep  # noqa: E402

GRID = {"learning_rate": [1e-4, 3e-4, 1e-3, 3e-3], "weight_scale": [1e-2, 2e-2, 5e-2, 1e-1]}


def _data(kind: str, rows: int):
    if kind == "cifar10":
        from fc_jax.data.datasets import get_dataset

        d = get_dataset("cifar10", num_training=rows, num_validation=1000, num_test=0)
        return {k: d[k] for k in ("X_train", "y_train", "X_val", "y_val")}
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows + 1000, 3072), np.float32)
    y = rng.integers(0, 10, rows + 1000).astype(np.int32)
    return {"X_train": X[:rows], "y_train": y[:rows], "X_val": X[rows:], "y_val": y[rows:]}


def _sweep(cfg, data, trials, width, batch):
    """width W: `--max-lanes W` on one device; "default": every device, the default width."""
    one = width != "default"
    res = sweep.run_sweep(
        cfg,
        data,
        trials,
        schedule=Schedule(num_epochs=1, batch_size=batch),
        optimizer="adam",
        max_lanes=width if one else None,
        devices=jax.devices()[:1] if one else None,
    )
    return res.run_seconds, res.compile_seconds, res


def _engine_k_times(cfg, data, trials, batch):
    """The single-model engine, compiled once, run once per configuration (no run loop)."""
    opt = get_optimizer("adam")
    hp = space.stack_hparams(trials, "adam", jnp.float32)
    X, y = jnp.asarray(data["X_train"]), jnp.asarray(data["y_train"])
    steps = len(data["X_train"]) // batch
    idx = train.sample_indices(jax.random.key(1), len(data["X_train"]), steps, batch)
    lane = lambda k: jax.tree.map(lambda v: v[k], hp)
    states = [
        train.init_train_state(jax.random.key(0), cfg, opt, hp.weight_scale[k])
        for k in range(len(trials))
    ]
    t0 = time.perf_counter()
    single = train.make_epoch(cfg, opt).lower(states[0], X, y, idx, lane(0)).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(single(states[0], X, y, idx, lane(0)))
    hps = [jax.block_until_ready(lane(k)) for k in range(len(trials))]
    t0 = time.perf_counter()
    jax.block_until_ready([single(states[k], X, y, idx, hps[k])[1] for k in range(len(trials))])
    return time.perf_counter() - t0, compile_s


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", type=int, default=16, help="first N of the 4 x 4 grid (1..16)")
    p.add_argument("--rows", type=int, default=49000, help="training rows")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--hidden-dims", type=int, nargs="+", default=[100, 100, 100, 100])
    p.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[1, 2, 4, 8, 16],
        help="--max-lanes values to time besides the automatic choice",
    )
    p.add_argument("--data", choices=("random", "cifar10"), default="random")
    p.add_argument("--repeats", type=int, default=2, help="timed rounds; the best of each width")
    p.add_argument("--small", action="store_true", help="--configs 4 --rows 4000 --widths 1 4")
    p.add_argument(
        "--precision",
        choices=("float32", "bf16"),
        default="float32",
        help="bf16: bfloat16 matmuls with float32 master weights (NetConfig compute_dtype)",
    )
    a = p.parse_args(argv)
    if a.small:
        a.configs, a.rows, a.widths = 4, 4000, [1, 4]
    if not 1 <= a.configs <= 16:
        p.error("--configs must be in 1..16")
    compute = "bfloat16" if a.precision == "bf16" else None
    cfg = models.NetConfig(tuple(a.hidden_dims), input_dim=3072, compute_dtype=compute)
    trials = space.grid(GRID)[: a.configs]
    K, data = len(trials), _data(a.data, a.rows)
    devices = jax.devices()
    auto = sweep.lane_group_size(K, devices)
    names = [*sorted({min(w, K) for w in a.widths} | {1}), "default"]
    rows = {w: (float("inf"), 0.0, None) for w in names}
    for rep in range(a.repeats + 1):  # the first round warms up; the contenders take turns (noise)
        for w in names:
            run_s, compile_s, res = _sweep(cfg, data, trials, w, a.batch_size)
            if rep and run_s < rows[w][0]:
                rows[w] = (run_s, compile_s, res)
    engine_s, engine_compile = _engine_k_times(cfg, data, trials, a.batch_size)
    one = rows[1][0]
    print(
        f"device: {devices[0].device_kind} x {len(devices)} ({jax.default_backend()}), "
        f"{jax.local_device_count()} local; {K} configurations, {a.rows // a.batch_size} steps "
        f"each, {a.precision}; default: {auto} lanes at once over {len(devices)} device(s)"
    )
    print(f"{'contender':>22} {'run s':>8} {'compile s':>10} {'vs 1 lane':>10} {'best val':>9}")
    for w, (run_s, compile_s, res) in rows.items():
        name = f"default, {len(devices)} device(s)" if w == "default" else f"{w} lane(s), 1 device"
        print(
            f"{name:>22} {run_s:>8.3f} {compile_s:>10.3f} {run_s / one:>10.3f} "
            f"{res.best_val_acc.max():>9.4f}"
        )
    print(
        f"{'engine xK, 1 device':>22} {engine_s:>8.3f} {engine_compile:>10.3f} "
        f"{engine_s / one:>10.3f}   (make_epoch alone, no run loop)"
    )
    result = dict(
        bench="sweep",
        device=str(devices[0].device_kind),
        backend=jax.default_backend(),
        num_devices=len(devices),
        configs=K,
        steps=a.rows // a.batch_size,
        hidden_dims=a.hidden_dims,
        precision=a.precision,
        default_width=auto,
        run_s={str(w): round(r[0], 4) for w, r in rows.items()},
        compile_s={str(w): round(r[1], 4) for w, r in rows.items()},
        engine_k_times_s=round(engine_s, 4),
        ratio_default_over_one_lane=round(rows["default"][0] / one, 4),
        command=" ".join(sys.argv),
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""Throughput of a sweep against its width: lane-epochs per second for K = 1, 2, 4, ... lanes.

Each K is `fc_jax.runs.sweep.run_sweep` with K configurations of the W1 net ([100] x 4, adam, batch
100, no dropout) trained as ONE compiled program (`max_lanes=K`) on the devices given (default:
the first device only, so K = 1 is a single model and every K is one program on one device). The
run loop is included (minibatches, evaluation on 1000 validation rows, host bookkeeping). A
lane-epoch is one configuration trained one epoch; compile time (ahead of time, once per K, by
the run loop) is reported apart and is not in the rate; the first timed epoch is not a warm-up. Prints a table, writes a plot (--out) and ONE JSON line.

    python benchmarks/sweep_lanes.py                                  # K = 1..256, 49000 rows
    python benchmarks/sweep_lanes.py --max-lanes 64 --rows 5000       # a few minutes on 2 cores
    python benchmarks/sweep_lanes.py --data cifar10 --data-dir DIR    # CIFAR-10 instead of noise
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from fc_jax import Schedule, models
from fc_jax.runs import sweep


def _data(kind: str, rows: int, data_dir):
    if kind == "cifar10":
        from fc_jax.data.datasets import get_dataset

        d = get_dataset(
            "cifar10", num_training=rows, num_validation=1000, num_test=0, data_dir=data_dir
        )
        return {k: d[k] for k in ("X_train", "y_train", "X_val", "y_val")}
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows + 1000, 3072), np.float32)
    y = rng.integers(0, 10, rows + 1000).astype(np.int32)
    return {"X_train": X[:rows], "y_train": y[:rows], "X_val": X[rows:], "y_val": y[rows:]}


def _plot(rows: list[dict], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    K = [r["lanes"] for r in rows]
    ax.plot(K, [r["lane_epochs_per_s"] for r in rows], marker="o")
    ax.set_xscale("log", base=2)
    ax.set_xticks(K, [str(k) for k in K])
    ax.set_xlabel("lanes K (configurations in one compiled program)")
    ax.set_ylabel("lane-epochs per second")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=80)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-lanes", type=int, default=256, help="largest K (powers of 2 up to it)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per K (after a warm-up)")
    p.add_argument("--rows", type=int, default=49000, help="training rows (steps = rows / 100)")
    p.add_argument("--data", choices=("random", "cifar10"), default="random")
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: $FC_JAX_DATA_DIR)")
    p.add_argument("--devices", type=int, default=1, help="devices to shard the lanes over")
    p.add_argument(
        "--out",
        default=str(Path(tempfile.gettempdir()) / "sweep_lanes.png"),
        help="plot path (default: %(default)s)",
    )
    a = p.parse_args(argv)
    cfg = models.NetConfig((100, 100, 100, 100), input_dim=3072)
    data = _data(a.data, a.rows, a.data_dir)
    devices = jax.devices()[: a.devices]
    widths = [2**i for i in range(int(np.log2(max(a.max_lanes, 1))) + 1)]
    lrs = np.geomspace(1e-4, 3e-3, max(widths))
    rows = []
    name = f"{devices[0].device_kind} x {len(devices)} ({jax.default_backend()})"
    print(
        f"device: {name}; W1 net, {a.rows // 100} steps of 100 per epoch, {a.epochs} timed "
        f"epoch(s) per K",
        flush=True,
    )
    print(f"{'K':>4} {'run s':>8} {'compile s':>10} {'lane-epochs/s':>14} {'vs K=1':>7}")
    for K in widths:
        trials = [{"learning_rate": float(lr)} for lr in lrs[:K]]
        schedule = Schedule(num_epochs=a.epochs)
        res = sweep.run_sweep(cfg, data, trials, schedule=schedule, max_lanes=K, devices=devices)
        rate = K * a.epochs / res.run_seconds
        rows.append(
            dict(
                lanes=K,
                run_s=round(res.run_seconds, 4),
                compile_s=round(res.compile_seconds, 4),
                lane_epochs_per_s=round(rate, 4),
            )
        )
        print(
            f"{K:>4} {res.run_seconds:>8.3f} {res.compile_seconds:>10.3f} {rate:>14.3f} "
            f"{rate / rows[0]['lane_epochs_per_s']:>7.2f}",
            flush=True,
        )
    _plot(rows, Path(a.out), f"W1 sweep throughput, {name}, {a.rows // 100} steps/epoch")
    print(f"plot: {a.out}")
    print(
        json.dumps(
            dict(
                bench="sweep_lanes",
                device=name,
                steps=a.rows // 100,
                epochs=a.epochs,
                rows=rows,
                command=" ".join(sys.argv),
            )
        )
    )


if __name__ == "__main__":
    main()

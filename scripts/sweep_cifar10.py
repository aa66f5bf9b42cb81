"""Sweep learning rate x weight scale on CIFAR-10 in one compiled program; print the best configs.

Usage: python scripts/sweep_cifar10.py [--data-dir DIR] [--epochs N] [--num-training N]
           [--learning-rate 1e-4 3e-4 1e-3] [--weight-scale 1e-2 2e-2 5e-2] [--max-lanes K]
The net and the other settings are `fc_jax.settings.DEFAULTS["cifar10"]`; `fc-jax sweep` adds files.
"""

import argparse
import json

from fc_jax import Callbacks, NetConfig, Schedule, run_sweep
from fc_jax.data.datasets import get_dataset
from fc_jax.report.sweeps import format_table
from fc_jax.runs.space import grid
from fc_jax.settings import DEFAULTS


def main() -> None:
    d = DEFAULTS["cifar10"]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: $FC_JAX_DATA_DIR or the cache)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--num-training", type=int, default=d["num_training"])
    p.add_argument("--learning-rate", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3])
    p.add_argument("--weight-scale", type=float, nargs="+", default=[1e-2, 2e-2, 5e-2, 1e-1])
    p.add_argument("--max-lanes", type=int, help="most configurations trained at once")
    args = p.parse_args()

    data = get_dataset("cifar10", args.data_dir, num_training=args.num_training)
    norm = None if d["normalization"] == "none" else d["normalization"]
    config = NetConfig(tuple(d["hidden_dims"]), normalization=norm)
    trials = grid({"learning_rate": args.learning_rate, "weight_scale": args.weight_scale})
    trials = [{**t, "lr_decay": d["lr_decay"], "reg": d["reg"]} for t in trials]
    result = run_sweep(
        config,
        data,
        trials,
        schedule=Schedule(num_epochs=args.epochs, batch_size=d["batch_size"], seed=d["seed"]),
        optimizer=d["update_rule"],
        max_lanes=args.max_lanes,
        callbacks=Callbacks(log=print),
    )
    print(format_table(result, top=10))
    best = result.trials[result.best]
    print(
        json.dumps(
            {
                "best": best,
                "best_val_acc": float(result.best_val_acc[result.best]),
                "compile_seconds": round(result.compile_seconds, 2),
                "run_seconds": round(result.run_seconds, 2),
                "devices": result.devices,
            }
        )
    )


if __name__ == "__main__":
    main()

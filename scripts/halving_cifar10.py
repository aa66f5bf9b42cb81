"""Successive halving against the full sweep on CIFAR-10: best val accuracy, lane-epochs, wall time.

Usage: python scripts/halving_cifar10.py [--trials 27] [--epochs 9] [--eta 3] [--hidden-dims 100 100]
A random search (learning rate, weight scale, L2 strength, dropout keep probability) of a batchnorm
net (the CIFAR-10 recipe otherwise), trained by `fc_jax.runs.sweep.run_sweep` twice on the same trials:
every configuration for --epochs, then successive halving, each as `fc-jax sweep` would run it (one
CPU device per core, the default lanes at once). Prints a markdown table and one JSON line.
"""

import argparse
import json
import time

from fc_jax.cli import cpu_devices_for_sweeps

cpu_devices_for_sweeps(["sweep"])  # one CPU device per core, as `fc-jax sweep`

from fc_jax import settings  # noqa: E402
from fc_jax.data.datasets import get_dataset  # noqa: E402
from fc_jax.runs import space  # noqa: E402
from fc_jax.runs.schedule import Halving, Schedule  # noqa: E402
from fc_jax.runs.sweep import run_sweep  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=27)
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--hidden-dims", type=int, nargs="+", default=[100, 100])
    p.add_argument("--seed", type=int, default=0, help="seed of the random search")
    a = p.parse_args()
    s = settings.settings("cifar10", {"hidden_dims": a.hidden_dims})
    dists = {
        "learning_rate": space.log_uniform(1e-4, 3e-2),
        "reg": space.log_uniform(1e-6, 1e-2),
        "weight_scale": space.log_uniform(1e-3, 1e-1),
        "keep_prob": space.choice([0.5, 0.75, 1.0]),
    }
    trials = [{**t, "lr_decay": s["lr_decay"]} for t in space.random(a.trials, dists, a.seed)]
    data = get_dataset("cifar10")
    config = settings.config_of(s, dropout=True)
    full = Schedule(num_epochs=a.epochs, batch_size=s["batch_size"], seed=s["seed"], replace=False)
    rows = {}
    for schedule in ("full", "halving"):
        t0 = time.perf_counter()
        sched = full._replace(halving=Halving(eta=a.eta)) if schedule == "halving" else full
        res = run_sweep(config, data, trials, schedule=sched, optimizer=s["update_rule"])
        rows[schedule] = dict(
            best_val_acc=float(res.best_val_acc.max()),
            best_trial=res.best,
            lane_epochs=res.lane_epochs,
            wall_s=round(time.perf_counter() - t0, 1),
            run_s=round(res.run_seconds, 1),
            compile_s=round(res.compile_seconds, 1),
            devices=len(res.devices),
        )
    full, half = rows["full"], rows["halving"]
    print(
        "| schedule | best val acc | best trial | lane-epochs | wall s (compile s) |\n|---|---|---|---|---|"
    )
    for name, r in rows.items():
        print(
            f"| {name} | {r['best_val_acc']:.4f} | {r['best_trial']} | {r['lane_epochs']} | "
            f"{r['wall_s']} ({r['compile_s']}) |"
        )
    print(
        f"| halving / full | {half['best_val_acc'] - full['best_val_acc']:+.4f} | | "
        f"{half['lane_epochs'] / full['lane_epochs']:.3f} | {half['wall_s'] / full['wall_s']:.3f} |"
    )
    print(
        json.dumps(
            {
                "trials": a.trials,
                "epochs": a.epochs,
                "eta": a.eta,
                "hidden_dims": a.hidden_dims,
                **rows,
            }
        )
    )


if __name__ == "__main__":
    main()

"""Train the default CIFAR-10 net through the library API: NetConfig + HParams -> fit -> metrics.

Usage: python scripts/train_cifar10.py [--data-dir DIR] [--epochs N] [--num-training N] [--seed S]
The settings are `fc_jax.settings.DEFAULTS["cifar10"]`; `fc-jax train` does the same with checkpoints.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp

from fc_jax import Callbacks, Schedule, fit, settings
from fc_jax.data.datasets import get_dataset
from fc_jax.hparams import make_hparams
from fc_jax.train import make_evaluate


def main() -> None:
    d = settings.settings("cifar10", {})
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: $FC_JAX_DATA_DIR or the cache)")
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--num-training", type=int, default=d["num_training"])
    p.add_argument("--seed", type=int, default=d["seed"])
    args = p.parse_args()

    data = get_dataset("cifar10", args.data_dir, num_training=args.num_training)
    config = settings.config_of(d)  # dropout layers: the recipe keeps 0.75 of the units
    hp = make_hparams(d["update_rule"], jnp.float32, **settings.hparams_of(d))
    t0 = time.perf_counter()
    run = fit(
        config,
        data,
        hparams=hp,
        schedule=Schedule(
            num_epochs=args.epochs,
            batch_size=d["batch_size"],
            seed=args.seed,
            replace=d["sampling"] == "replace",
        ),
        optimizer=d["update_rule"],
        callbacks=Callbacks(log=print),
    )
    seconds = time.perf_counter() - t0
    X, y = jnp.asarray(data["X_test"]), jnp.asarray(data["y_test"], jnp.int32)
    test_acc = float(make_evaluate(config)(run.best_params, run.best_model_state, X, y))
    result = {
        "test_acc": test_acc,
        "best_val_acc": run.best_val_acc,
        "seconds": round(seconds, 2),
        "compile_seconds": round(run.history["compile_seconds"], 2),
        "device": str(jax.devices()[0]),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

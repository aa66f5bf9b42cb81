"""cs231n sanity check on the core API: overfit 50 CIFAR-10 images to 100% train accuracy.

Usage: python scripts/overfit_small.py [--data-dir DIR] [--epochs 20] [--seed 0]

A three-layer net (hidden 100, 100), sgd with learning rate 1e-2 and weight scale 1e-2, batch 25,
trained by `fc_jax.runs.fit.fit` (the compiled engine, no facade). A net that cannot memorize 50
examples has a bug. Exits non-zero if the final train accuracy is below 100%.
"""

import argparse
import os
import sys
import time
from pathlib import Path

from fc_jax.data.datasets import get_dataset
from fc_jax.hparams import make_hparams
from fc_jax.models import NetConfig
from fc_jax.runs.fit import fit
from fc_jax.runs.loop import Callbacks
from fc_jax.runs.schedule import Schedule


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = (
        os.environ.get("FC_JAX_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared/data"
    )
    p.add_argument("--data-dir", default=str(default), help="CIFAR-10 folder")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    data = get_dataset("cifar10", args.data_dir, num_training=50, num_validation=50, num_test=10)
    config = NetConfig(hidden_dims=(100, 100))
    hp = make_hparams("sgd", learning_rate=1e-2, weight_scale=1e-2)
    t0 = time.perf_counter()
    run = fit(
        config,
        data,
        hparams=hp,
        schedule=Schedule(
            num_epochs=args.epochs, batch_size=25, seed=args.seed, num_train_samples=None
        ),
        optimizer="sgd",
        callbacks=Callbacks(log=print),
    )
    h = run.history
    print(
        f"loss {h['loss'][0]:.3f} -> {h['loss'][-1]:.3f}; train acc {h['train_acc'][-1]:.2f}; "
        f"val acc {h['val_acc'][-1]:.2f}; {time.perf_counter() - t0:.1f} s"
    )
    return 0 if h["train_acc"][-1] == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())

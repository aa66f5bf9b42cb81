"""The search behind `fc-jax train --recipe cpu-10min`: >= 63% CIFAR-10 test accuracy in at most
10 minutes of training on a 2-core CPU.

Usage: python scripts/search_cpu_10min.py [--out runs/search-cpu-10min]
                                          [--step structure|sweep|final|all]
Step `structure` trains the [2048, 1024] batchnorm net (dropout keep 0.5, adam 3e-3 with a one-epoch
warmup and a cosine decay, label smoothing 0.1, bfloat16 matmuls) with three input pipelines that
a sweep cannot mix in one program (they change the data every lane reads): ZCA whitening with
flips (40 epochs), random crops of 2 pixels with flips (50 epochs), none (30 epochs). Step `sweep`
then searches the winner's dropout keep probability, learning rate and label smoothing with one
`fc-jax sweep`: 9 random configurations, successive halving (rungs of 2, 6 and 18 epochs of an
18-epoch cosine schedule), the lanes sharing each augmented minibatch. Step `final` trains the
sweep's best values for the recipe's 55 epochs. Every run reports the whole 10000-image test set.
Prints one markdown row per run; the figures and the machine are in benchmarks/RESULTS.md.
"""

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

BASE = shlex.split(
    "--hidden-dims 2048 1024 --normalization batchnorm --keep-prob 0.5 --learning-rate 3e-3 "
    "--lr-schedule cosine --warmup-epochs 1 --final-lr-fraction 0.01 --label-smoothing 0.1 "
    "--precision bf16 --batch-size 200 --sampling permutation --num-test 10000 "
    "--checkpoint-every 600 --quiet"
)
STRUCTURE = {
    "zca+flip": ["--whiten", "zca", "--flip", "--epochs", "40"],
    "crop2+flip": ["--crop-pad", "2", "--flip", "--epochs", "50"],
    "none": ["--epochs", "30"],
}
SWEEP = shlex.split(
    "--recipe cpu-10min --epochs 18 --random 9 --keep-prob-range 0.5 0.95 "
    "--learning-rate-range 1e-3 1e-2 --label-smoothing-range 0 0.2 "
    "--schedule halving --eta 3 --min-epochs 2 --checkpoint-every 600 --quiet"
)
SWEPT = ("keep_prob", "learning_rate", "label_smoothing")


def fc_jax(*args: str) -> dict:
    """Run `fc-jax ARGS`; its last stdout line (JSON)."""
    cmd = [sys.executable, "-m", "fc_jax", *args]
    print("$", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/search-cpu-10min"))
    p.add_argument("--step", choices=("structure", "sweep", "final", "all"), default="all")
    a = p.parse_args()
    print("| run | test accuracy (10000) | best val | training min |")
    print("|---|---|---|---|")
    if a.step in ("structure", "all"):
        for name, extra in STRUCTURE.items():
            r = fc_jax("train", *BASE, *extra, "--out", str(a.out / name))
            print(
                f"| {name} | {r['test_acc']:.4f} | {r['best_val_acc']:.3f} | "
                f"{r['train_seconds'] / 60:.1f} |",
                flush=True,
            )
    best = None
    if a.step in ("sweep", "all"):
        r = fc_jax("sweep", *SWEEP, "--out", str(a.out / "sweep"))
        best = {k: r["best"][k] for k in SWEPT}
        print(f"| sweep winner {best} | | {r['best_val_acc']:.3f} | {r['run_seconds'] / 60:.1f} |")
    if a.step in ("final", "all"):
        if best is None:  # the sweep ran before: its results
            best = json.loads((a.out / "sweep" / "best_config.json").read_text())["values"]
        # rounded to what a user would type: the recipe's values
        flags = [
            "--keep-prob",
            f"{best['keep_prob']:.1f}",
            "--learning-rate",
            f"{best['learning_rate']:.1e}",
            "--label-smoothing",
            f"{best['label_smoothing']:.2f}",
        ]
        r = fc_jax(
            "train",
            "--recipe",
            "cpu-10min",
            *flags,
            "--checkpoint-every",
            "600",
            "--quiet",
            "--out",
            str(a.out / "final"),
        )
        print(
            f"| final {' '.join(flags)} | {r['test_acc']:.4f} | {r['best_val_acc']:.3f} | "
            f"{r['train_seconds'] / 60:.1f} |",
            flush=True,
        )


def test_accuracy(path: Path) -> float:
    """A saved model's accuracy on the whole CIFAR-10 test set (10000 images)."""
    from fc_jax import load_model, predict_raw
    from fc_jax.data.cifar10 import read_cifar10_batch
    from fc_jax.data.download import cifar10_dir

    model = load_model(path)
    x, y = read_cifar10_batch(cifar10_dir(None) / "test_batch")
    pred = np.concatenate([predict_raw(model, x[i : i + 1000]) for i in range(0, len(x), 1000)])
    return float((pred == y).mean())


if __name__ == "__main__":
    main()

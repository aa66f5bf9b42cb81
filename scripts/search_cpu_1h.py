"""The search behind `fc-jax train --recipe cpu-1h`: >= 66% CIFAR-10 test accuracy in at most 60
minutes of training on a 2-core CPU.

Usage: python scripts/search_cpu_1h.py [--out runs/search-cpu-1h] [--minutes 55] [--train]
Augmentation (random 2-pixel crops and flips) stops the overfitting of the 10-minute search's
runs (scripts/search_cpu_10min.py: train and validation accuracy stay within a few points) but
pays only with many epochs, so the hour goes to epochs or to width. The script times two epochs of
each candidate width with the recipe's other settings and prints how many epochs fit in
`--minutes`; `--train` then trains the narrowest candidate for that many epochs (the choice made
for the recipe: the [2048, 1024] net's 10-minute run still gained in its last epochs, and 2.9x the
width buys 2.9x fewer epochs). Every run reports the whole 10000-image test set.
"""

import argparse
import json
import shlex
from pathlib import Path

from search_cpu_10min import fc_jax  # this folder is on sys.path when run as a script

# The recipe's settings ([2048, 1024], keep 0.5, cosine, label smoothing 0.1, crop 2, flip, bf16;
# the 10-minute search's crop2+flip run), with the width and the epochs given here.
BASE = shlex.split("--recipe cpu-1h --checkpoint-every 600 --quiet")
WIDTHS = ([2048, 1024], [3072, 1536], [4096, 2048])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/search-cpu-1h"))
    p.add_argument("--minutes", type=float, default=55.0)
    p.add_argument("--train", action="store_true")
    a = p.parse_args()
    print("| hidden dims | seconds per epoch | epochs in the budget |")
    print("|---|---|---|")
    fits = {}
    for dims in WIDTHS:
        name = "x".join(map(str, dims))
        words = ["--hidden-dims", *map(str, dims), "--epochs", "2"]
        r = fc_jax("train", *BASE, *words, "--out", str(a.out / f"time-{name}"))
        per_epoch = r["train_seconds"] / 2
        fits[name] = int(a.minutes * 60 / per_epoch)
        print(f"| {dims} | {per_epoch:.1f} | {fits[name]} |", flush=True)
    if a.train:
        name = "x".join(map(str, WIDTHS[0]))
        epochs = str(fits[name])
        r = fc_jax("train", *BASE, "--epochs", epochs, "--out", str(a.out / f"train-{name}"))
        print(json.dumps(r))


if __name__ == "__main__":
    main()

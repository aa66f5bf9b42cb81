"""The recipes' trade-off at a glance: validation accuracy against training time, one curve per run.

Usage: python scripts/plot_recipes.py RUN_DIR [RUN_DIR ...] [--out benchmarks/recipes_cpu.png]
Each RUN_DIR is a folder `fc-jax train --recipe NAME` wrote: its `history.json` gives the
validation accuracy after each epoch and the seconds each epoch took (compile time excluded), and
its test accuracy, drawn as a star at the run's total training time. Prints one markdown table
row per run (recipe | test accuracy | training time | epochs) for benchmarks/RESULTS.md.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/recipes_cpu.png"))
    p.add_argument(
        "--title", default="CIFAR-10 recipes on a 2-core CPU (fc-jax train --recipe NAME)"
    )
    a = p.parse_args()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    print("| recipe | test accuracy | training time | epochs |")
    print("|---|---|---|---|")
    for run in a.runs:
        saved = json.loads((run / "history.json").read_text())
        s, h = saved["settings"], saved["history"]
        minutes = np.cumsum(h["epoch_seconds"]) / 60
        name = s.get("recipe", "default")
        n_test = s.get("num_test") or 1000
        label = f"{name}: {saved['test_acc']:.1%} test ({n_test} images) in {minutes[-1]:.1f} min"
        (line,) = ax.plot(minutes, h["val_acc"], lw=1.2, label=label)
        ax.plot(minutes[-1], saved["test_acc"], "*", ms=12, color=line.get_color())
        print(
            f"| {name} | {saved['test_acc']:.1%} ({n_test} test images) | "
            f"{minutes[-1]:.1f} min | {len(minutes)} |"
        )
    ax.set_xscale("log")
    ax.set_xlabel("training time (minutes, log scale; compile time excluded)")
    ax.set_ylabel("accuracy (lines: validation; stars: test)")
    ax.set_title(a.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

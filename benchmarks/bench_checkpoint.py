"""Benchmark: what checkpoints cost, written after every epoch vs by time (`--checkpoint-every`).

Two runs, each as its own `fc-jax` process (its own CPU devices, as a user gets them), once with
`--checkpoint-every 0` (a checkpoint after every epoch: fc-jax before the flag existed) and once
with the default:

  (a) digits sweep: 27 [512, 512] nets (learning rate 3e-4, 1e-3, 3e-3 x weight scale 3e-2, 5e-2,
      1e-1 x L2 0, 1e-4, 1e-3), adam, the digits recipe's 30 epochs: a 130 MB checkpoint;
  (b) the CIFAR-10 default `fc-jax train` run, shortened to --epochs (3 by default; the recipe has
      12): a 27 MB checkpoint.

Each child wraps `fc_jax.storage.checkpoint.save_lanes` to count and time every write and reports
its wall time (`fc_jax.cli.main`, data loading and the final outputs included), the training time
(the run's `run_seconds` / `train_seconds`) and the checkpoint time; overhead = checkpoint time /
wall time. Prints a table and ONE JSON line.

    python benchmarks/bench_checkpoint.py                 # both, as in benchmarks/RESULTS.md
    python benchmarks/bench_checkpoint.py --only digits   # the sweep only
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = [
    "--learning-rate",
    "3e-4",
    "1e-3",
    "3e-3",
    "--weight-scale",
    "3e-2",
    "5e-2",
    "1e-1",
    "--reg",
    "0",
    "1e-4",
    "1e-3",
]


def commands(epochs: int) -> dict:
    return {
        "digits sweep, 27 x [512, 512]": [
            "sweep",
            "--dataset",
            "digits",
            "--hidden-dims",
            "512",
            "512",
            *GRID,
            "--quiet",
        ],
        f"cifar10 train, default, {epochs} epochs": ["train", "--epochs", str(epochs), "--quiet"],
    }


def child(argv: list[str]) -> None:
    """One `fc-jax` command, every checkpoint write counted and timed; one JSON line on stdout."""
    from fc_jax.cli import cpu_devices_for_sweeps

    cpu_devices_for_sweeps(argv)  # as the `fc-jax` executable does, before jax is imported
    import io
    from contextlib import redirect_stdout

    from fc_jax import cli
    from fc_jax.storage import checkpoint

    writes, real = [], checkpoint.save_lanes

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        path = real(*args, **kwargs)
        writes.append((time.perf_counter() - t0, path.stat().st_size))
        return path

    checkpoint.save_lanes = timed
    buf = io.StringIO()
    t0 = time.perf_counter()
    with redirect_stdout(buf):
        code = cli.main(argv)
    wall = time.perf_counter() - t0
    assert code == 0, buf.getvalue()
    line = json.loads(buf.getvalue().strip().splitlines()[-1])
    train_s = line.get("run_seconds", line.get("train_seconds"))
    print(
        json.dumps(
            dict(
                wall_s=wall,
                train_s=train_s,
                compile_s=line["compile_seconds"],
                writes=len(writes),
                checkpoint_s=sum(w for w, _ in writes),
                checkpoint_mb=max((b for _, b in writes), default=0) / 1e6,
            )
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="CIFAR-10 epochs (default: 3)")
    p.add_argument("--only", choices=("digits", "cifar10"), help="run one of the two")
    p.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        return child(args.child)
    import jax

    from fc_jax.workdir.folders import CHECKPOINT_EVERY

    rows = []
    for name, argv in commands(args.epochs).items():
        if args.only and not name.startswith(args.only):
            continue
        for every in ("0", f"{CHECKPOINT_EVERY:g}"):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [*argv, "--checkpoint-every", every, "--out", str(Path(tmp) / "run")]
                done = subprocess.run(
                    [sys.executable, __file__, "--child", *cmd],
                    env=os.environ,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            if done.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(
                dict(
                    run=name,
                    checkpoint_every=every,
                    command="fc-jax " + " ".join(cmd),
                    **r,
                    overhead=r["checkpoint_s"] / r["wall_s"],
                )
            )
            print(f"{name}, --checkpoint-every {every}: {r}", file=sys.stderr, flush=True)
    head = "| run | --checkpoint-every | writes | MB each | wall s | train s | compile s | checkpoint s | overhead |"
    print(head)
    print("|" + "---|" * 9)
    for r in rows:
        print(
            f"| {r['run']} | {r['checkpoint_every']} | {r['writes']} | {r['checkpoint_mb']:.0f} "
            f"| {r['wall_s']:.1f} | {r['train_s']:.1f} | {r['compile_s']:.1f} "
            f"| {r['checkpoint_s']:.1f} | {100 * r['overhead']:.1f}% |"
        )
    print(json.dumps(dict(device=str(jax.devices()[0]), rows=rows)))


if __name__ == "__main__":
    main()

"""Kill `fc-jax train` / `fc-jax sweep` at random moments, resume, and check nothing was lost.

Usage: python scripts/fault_loop.py [--rounds 20] [--command train|sweep|both] [--seed 0]
Each round starts a small digits run in a fresh folder, sends SIGKILL, SIGTERM or SIGINT after a
random delay (start-up, compiling, mid-epoch, mid-write), then runs `--resume` until it finishes
(killing again with probability 1/2), and compares the final `checkpoint.npz` arrays and history
(timings aside) with an uninterrupted reference run: every array must be bit-identical. A SIGINT
must exit 130 with one stderr line. Prints one line per round and a summary; exit 1 on any mismatch.
"""

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARGS = {
    "train": "train --dataset digits --num-training 600 --hidden-dims 32 --epochs 8 --quiet",
    "sweep": "sweep --dataset digits --num-training 600 --hidden-dims 32 --epochs 9 --quiet "
    "--learning-rate 1e-3 1e-2 --weight-scale 0.05 0.1 --schedule halving --eta 2",
}


def run(argv, kill_after=None, sig=signal.SIGKILL):
    proc = subprocess.Popen(
        [sys.executable, "-m", "fc_jax", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def state(folder: Path) -> dict:
    with np.load(folder / "checkpoint.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(z["meta"].tobytes())
    for h in meta["history"]:
        h.pop("epoch_seconds")
    return {**arrays, "history": json.dumps(meta["history"])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--command", choices=("train", "sweep", "both"), default="both")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng, bad = random.Random(a.seed), 0
    root = Path(tempfile.mkdtemp(prefix="fc_jax-faults-"))
    commands = ["train", "sweep"] if a.command == "both" else [a.command]
    refs = {}
    for c in commands:
        t0 = time.perf_counter()
        assert run([*ARGS[c].split(), "--out", str(root / f"ref-{c}")])[0] == 0
        refs[c] = (state(root / f"ref-{c}"), time.perf_counter() - t0)
    for r in range(a.rounds):
        c = commands[r % len(commands)]
        out, ref, span = root / f"round-{r}", *refs[c]
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
        code, err = run([*ARGS[c].split(), "--out", str(out)], rng.uniform(0.2, span), sig)
        notes = [f"{sig.name} -> exit {code}"]
        if sig == signal.SIGINT and code == 130 and len(err.strip().splitlines()) != 1:
            notes.append(f"SIGINT printed {len(err.strip().splitlines())} lines")
            bad += 1
        for _ in range(10):  # resume until it finishes
            if (out / "checkpoint.npz").exists():
                argv = [c, "--resume", str(out), "--quiet"]
            else:  # killed before its first checkpoint: start again
                argv = [*ARGS[c].split(), "--out", str(out)]
            kill = rng.uniform(0.2, span) if rng.random() < 0.5 else None
            code, err = run(argv, kill)
            notes.append(f"resume -> {code}")
            if code == 0:
                break
        got = state(out)
        same = got.keys() == ref.keys() and all(
            np.array_equal(got[k], ref[k]) if k != "history" else got[k] == ref[k] for k in ref
        )
        bad += not same
        print(f"round {r:3d} {c:5s}: {'identical' if same else 'MISMATCH'}; {', '.join(notes)}")
    print(
        f"{a.rounds - bad} of {a.rounds} rounds ended bit-identical to the uninterrupted run ({root})"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

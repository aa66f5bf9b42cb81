"""Multi-host sweeps, run for real: two processes of 2 CPU devices each equal one of 4 devices.

The README's multi-host recipe (`jax.distributed.initialize` in every process, one mesh over every
device of every process) is exercised on this machine: two processes (`tests/mp_child.py`) join
one JAX job through a coordinator on a free localhost port and run the same sweep, whose lanes are
sharded over all 4 devices and gathered back with cross-process collectives (gloo, JAX's default
CPU implementation, `jax_cpu_collectives_implementation`). A third process with 4 local devices
runs the same sweep as the reference.

The comparison is exact (`assert_array_equal`, NaN == NaN): both runs compile the same program for
the same 4-device mesh, device d holds the same lanes and the same replicated data, and no lane
reduces across devices (lanes are independent; gathers only copy), so each device computes the
same float32 operations in the same order. A difference means a lane met other inputs, not noise.

The test skips only when the platform has no cross-process CPU collectives: the children first
all-gather their process indices (no fc_jax code) and exit with `mp_child.EXIT_NO_COLLECTIVES`
if that fails; the skip reason carries JAX's error.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fc_jax

CHILD = Path(__file__).with_name("mp_child.py")
ROOT = Path(fc_jax.__file__).resolve().parents[1]  # the children import this same fc_jax
EXIT_NO_COLLECTIVES = 77  # as in mp_child.py
NO_COLLECTIVES = "no cross-process CPU collectives:"
TIMEOUT_S = 180  # for the two processes together; about 25 s on 2 idle cores
# what `fc-jax sweep --out DIR` writes (and the lock file only the writing process takes)
FILES = [
    ".lock",
    "best_config.json",
    "checkpoint.npz",
    "models",
    "results.csv",
    "results.json",
    "sweep.png",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(local_devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}",
        JAX_PLATFORMS="cpu",
        MPLBACKEND="Agg",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
    )
    return env


def _run_processes(tmp: Path, num_processes: int, local_devices: int, tag: str) -> list[str]:
    """Start `num_processes` children of one JAX job and wait for them all; returns their logs.

    Every child still running is killed when one fails or the time runs out. Skips the test if a
    child reports that the platform has no cross-process CPU collectives.
    """
    port, logs, procs = _free_port(), [], []
    try:
        for i in range(num_processes):
            argv = [
                sys.executable,
                str(CHILD),
                str(tmp / f"{tag}_{i}.npz"),
                str(tmp / f"{tag}_out_{i}"),
            ]
            if num_processes > 1:
                argv += ["--port", str(port), "--process-id", str(i)]
                argv += ["--num-processes", str(num_processes)]
            logs.append(tmp / f"{tag}_{i}.log")
            with open(logs[-1], "w") as log:
                procs.append(
                    subprocess.Popen(
                        argv, env=_env(local_devices), stdout=log, stderr=subprocess.STDOUT, cwd=tmp
                    )
                )
        deadline, timed_out = time.monotonic() + TIMEOUT_S, False
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break  # one failed: the others would wait for it until their own timeouts
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    text = [log.read_text() for log in logs]
    codes = [p.returncode for p in procs]
    if EXIT_NO_COLLECTIVES in codes:
        reason = text[codes.index(EXIT_NO_COLLECTIVES)]
        pytest.skip(f"this platform has {reason[reason.find(NO_COLLECTIVES) :].strip()}")
    report = "\n".join(
        f"--- process {i} (exit {c}):\n{t[-3000:]}" for i, (c, t) in enumerate(zip(codes, text))
    )
    assert codes == [0] * num_processes, (
        f"{tag}: {f'timed out after {TIMEOUT_S} s' if timed_out else 'failed'}\n{report}"
    )
    return text


@pytest.mark.slow
def test_two_processes_of_2_devices_equal_one_of_4(tmp_path):
    """Same lanes, bit for bit, in each process; only process 0 writes the CLI's files."""
    logs = _run_processes(tmp_path, 2, 2, "mp")
    assert all(f"process {i} / 2: 2 local of 4 devices" in log for i, log in enumerate(logs))
    _run_processes(tmp_path, 1, 4, "ref")
    with np.load(tmp_path / "ref_0.npz") as f:
        ref = dict(f)
    assert "['history']['val_acc']" in ref and ref["['best_val_acc']"].shape == (6,)
    for i in range(2):
        with np.load(tmp_path / f"mp_{i}.npz") as f:
            got = dict(f)
        assert sorted(got) == sorted(ref)
        diff = max(
            float(np.nanmax(np.abs(got[k].astype(np.float64) - ref[k]), initial=0.0)) for k in ref
        )
        for k in ref:
            np.testing.assert_array_equal(
                got[k], ref[k], err_msg=f"process {i}: {k} (max abs diff {diff})"
            )
    # fc-jax sweep --out DIR: process 0 writes what one process writes, process 1 nothing
    assert sorted(os.listdir(tmp_path / "ref_out_0")) == FILES
    assert sorted(os.listdir(tmp_path / "mp_out_0")) == FILES
    assert not (tmp_path / "mp_out_1").exists()
    made = {"mp_0.npz", "mp_1.npz", "mp_0.log", "mp_1.log", "mp_out_0"}  # the children's cwd too
    assert set(os.listdir(tmp_path)) == made | {"ref_0.npz", "ref_0.log", "ref_out_0"}
    csv = [(tmp_path / d / "results.csv").read_text() for d in ("mp_out_0", "ref_out_0")]
    assert csv[0] == csv[1]

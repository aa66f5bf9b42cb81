"""Small helpers shared by the tests."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Ctrl-C as a terminal sends it, even when the tests run where SIGINT is ignored (a background
# job inherits SIG_IGN, and Python then leaves it ignored): the child restores the default first.
_INTERRUPTIBLE = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'fc-jax'; runpy.run_module('fc_jax', run_name='__main__')"
)


def spawn_fc_jax(*argv, env=None) -> subprocess.Popen:
    """`fc-jax ARGV...` as a child process of this checkout (text pipes for stdout and stderr)."""
    return subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTIBLE, *map(str, argv)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def real_cifar10_dir(needed: str = "data_batch_1") -> Path:
    """The batches folder of the real CIFAR-10: `$FC_JAX_DATA_DIR`, else ../shared/data.

    Fails when FC_JAX_DATA_DIR or CI promises the data and `needed` is not there; skips only on a
    bare checkout with neither (tests never download).
    """
    from fc_jax.data.download import cifar10_dir

    folder = cifar10_dir(os.environ.get("FC_JAX_DATA_DIR") or SHARED_DATA).resolve()  # either form
    if not (folder / needed).is_file():
        if os.environ.get("FC_JAX_DATA_DIR") or os.environ.get("CI"):  # data promised: a failure
            pytest.fail(f"CIFAR-10 is not in {folder}, where FC_JAX_DATA_DIR / CI says it is")
        pytest.skip(
            f"CIFAR-10 is not in {folder} and FC_JAX_DATA_DIR is unset (tests never download)"
        )
    return folder


def rel_error(x, y):
    """The cs231n relative error: max |x - y| / max(1e-8, |x| + |y|)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))

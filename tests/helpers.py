"""Small helpers shared by the tests."""

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_cifar10_dir(needed: str = "data_batch_1") -> Path:
    """The batches folder of the real CIFAR-10: `$FC_JAX_DATA_DIR`, else ../shared/data.

    Fails when FC_JAX_DATA_DIR or CI promises the data and `needed` is not there; skips only on a
    bare checkout with neither (tests never download).
    """
    from fc_jax.data.download import cifar10_dir

    folder = cifar10_dir(os.environ.get("FC_JAX_DATA_DIR") or SHARED_DATA)  # either folder form
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

"""Shared fixtures. Tests never download data; float64 is enabled in a scope, never globally."""

import os

# pytest-xdist runs the suite in one process per core (pyproject's addopts): on a GPU each would
# otherwise reserve 75% of its memory at the first computation.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import numpy as np
import pytest

# Catch the (N,) vs (N, 1) broadcasting bug: write b[None, :] explicitly.
jax.config.update("jax_numpy_rank_promotion", "raise")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def x64():
    """Run the test body with float64 enabled, restored afterwards."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(231)


def pytest_configure(config):
    """Every test's user cache is a fresh temporary folder: no test writes to ~/.cache.

    The session also shares one fresh XLA compilation cache (this process and the `fc-jax`
    subprocesses the CLI tests start): many tests compile the same epoch, and a cache hit returns
    the same executable, so results are unchanged. It cut the CPU time of test_faults.py and
    test_sweep.py from 189 s to 113 s (one run, 2-core Xeon, under load).
    """
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="fc_jax-test-cache-")
    # pytest-xdist's workers inherit the controller's environment: they share its XLA cache
    shared = os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("JAX_COMPILATION_CACHE_DIR")
    xla_cache = {
        "jax_compilation_cache_dir": shared or tempfile.mkdtemp(prefix="fc_jax-test-xla-"),
        "jax_persistent_cache_min_compile_time_secs": 0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    for name, value in xla_cache.items():
        os.environ[name.upper()] = str(value)
        jax.config.update(name, value)

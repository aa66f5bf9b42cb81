"""Shared fixtures. Tests never download data; float64 is enabled in a scope, never globally."""

import os

import jax
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
    """Every test's user cache is a fresh temporary folder: no test writes to ~/.cache."""
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="fc_jax-test-cache-")

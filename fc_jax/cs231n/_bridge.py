"""Private glue between the mutable cs231n facade and the pure JAX core.

Contract: `precision(*trees)` is the context every facade call runs in: `jax.enable_x64(True)` when
any floating input (leaves of the given pytrees) is float64, else nothing, so float64 computes in
float64 without flipping x64 globally and float32 stays float32. `to_numpy` turns core outputs into
fresh, writable NumPy arrays (the course mutates what it gets back, e.g. gradient checks perturb
`model.params` in place). `cached_jit(key, build)` returns one jitted function per key, built once;
`trace_count(key)` says how often that function has been traced (a retrace test's instrument).
`mode_of` and `keep_prob_of` read and check the course's 'mode' and dropout 'p' entries.
"""

import contextlib
from collections import Counter
from collections.abc import Callable, Hashable

import jax
import numpy as np

from fc_jax.hparams import DEFAULTS

__all__ = [
    "HPARAM_FILLERS",
    "precision",
    "is_float64",
    "to_numpy",
    "to_scalar",
    "cached_jit",
    "trace_count",
    "mode_of",
    "keep_prob_of",
]

# Valid values for the HParams fields a facade call does not read (the course's defaults).
HPARAM_FILLERS = DEFAULTS
_F64 = (np.dtype(np.float64), np.dtype(np.complex128))
_JITS: dict[Hashable, Callable] = {}
_TRACES: Counter = Counter()


def is_float64(*trees) -> bool:
    """True if any leaf of `trees` (arrays, NumPy or JAX) has a 64-bit floating dtype."""
    for tree in trees:
        for leaf in jax.tree.leaves(tree):
            dtype = getattr(leaf, "dtype", None)
            if dtype is not None and dtype in _F64:
                return True
    return False


def precision(*trees) -> contextlib.AbstractContextManager:
    """`jax.enable_x64(True)` if any leaf of `trees` is float64, else a no-op context."""
    return jax.enable_x64(True) if is_float64(*trees) else contextlib.nullcontext()


def to_numpy(tree):
    """A writable NumPy copy of every array leaf of `tree` (the structure is kept)."""
    return jax.tree.map(np.array, tree)


def to_scalar(x) -> np.generic:
    """A 0-d array as a NumPy scalar of its dtype (the course's losses are NumPy scalars)."""
    return np.asarray(x)[()]


def cached_jit(key: Hashable, build: Callable[[], Callable], **jit_kwargs) -> Callable:
    """Return the jitted function stored under `key`, building it with `build()` the first time.

    The built function is wrapped so that each trace increments `trace_count(key)`; jax.jit itself
    caches compilations per input shapes, dtypes and x64 mode.
    """
    fn = _JITS.get(key)
    if fn is None:
        inner = build()

        def traced(*args, **kwargs):
            _TRACES[key] += 1
            return inner(*args, **kwargs)

        fn = _JITS[key] = jax.jit(traced, **jit_kwargs)
    return fn


def trace_count(key: Hashable | None = None) -> int:
    """How many times the function cached under `key` (None: any cached function) was traced."""
    return sum(_TRACES.values()) if key is None else _TRACES[key]


def mode_of(param: dict, name: str) -> str:
    """`param['mode']`, checked to be 'train' or 'test' (`name` names the dict in the error)."""
    mode = param.get("mode")
    if mode not in ("train", "test"):
        raise ValueError(f"{name}['mode'] must be 'train' or 'test'; got {mode!r}")
    return mode


def keep_prob_of(dropout_param: dict) -> float:
    """`dropout_param['p']`, checked to be a KEEP probability in (0, 1]."""
    if "p" not in dropout_param:
        raise ValueError("dropout_param['p'] (the probability of KEEPING a unit) is required")
    p = dropout_param["p"]
    if isinstance(p, bool) or not isinstance(p, int | float | np.number) or not 0 < p <= 1:
        raise ValueError(f"dropout_param['p'] is the KEEP probability, in (0, 1]; got {p!r}")
    return float(p)

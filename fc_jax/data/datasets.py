"""Datasets as host-side numpy arrays: CIFAR-10, the bundled 8x8 digits, synthetic clusters.

Contract: loaders return numpy arrays and never import jax. ``load_cifar10(root)`` parses the
python-pickle batches with a restricted unpickler (numpy array globals only) and checks every
file (the official files also against their official md5, see ``fc_jax.data.cifar10``), raising
``DataError`` that names the file, the fault and the fix. ``get_dataset(name)`` returns the
cs231n split dict (``X_train, y_train, X_val, y_val, X_test, y_test, mean_image``);
``DATASETS[name]`` is the table row: default sizes, ``input_dim``, ``pixel_scale`` (the factor
applied to raw pixels before ``mean_image`` is subtracted), ``image_shape`` (one raw image,
channels-first) and ``pixel_max`` (its largest raw value).
``check_finite`` and ``check_labels`` are the input guards the trainers use. Locating, reading
one file, downloading CIFAR-10 and ``provenance`` live in ``fc_jax.data.download`` (re-exported here).
"""

from __future__ import annotations

import operator
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fc_jax.data.cifar10 import CIFAR10_FILES, CIFAR10_FOLDER, DataError, read_cifar10_batch
from fc_jax.data.download import ensure_cifar10

__all__ = [
    "DATASETS",
    "Dataset",
    "check_finite",
    "check_labels",
    "get_dataset",
    "load_cifar10",
    "load_digits",
    "synthetic",
]


class Dataset(NamedTuple):
    """One row of the table of datasets."""

    num_training: int  # default split sizes
    num_validation: int
    num_test: int
    pool: int  # train + val examples available
    test_pool: int  # test examples available
    input_dim: int  # flattened example size
    pixel_scale: float  # raw pixels -> the scale get_dataset returns (before mean subtraction)
    image_shape: tuple[int, ...]  # one raw image, channels-first as get_dataset reads it
    pixel_max: int  # the largest raw pixel value


# THE table of datasets: adding one is a row here and its loader in `get_dataset`.
DATASETS: dict[str, Dataset] = {
    "cifar10": Dataset(49000, 1000, 1000, 50000, 10000, 3 * 32 * 32, 1.0, (3, 32, 32), 255),
    "digits": Dataset(1197, 300, 300, 1497, 300, 8 * 8, 1.0 / 16.0, (1, 8, 8), 16),
}
_DIGITS = Path(__file__).with_name("digits.npz")


def load_cifar10(
    root: os.PathLike | str,
    *,
    dtype=np.float32,
    rows_per_file: int | None = 10000,
    verify: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the six CIFAR-10 python batches from ``root``.

    Every file is checked (keys, a (rows_per_file, 3072) uint8 array, as many labels in 0..9)
    before the arrays are built. The float conversion (allocating and filling 740 MB) dominates
    the parsing, so ``dtype=np.uint8`` is the fastest and smallest (180 MB); ``get_dataset`` uses
    it and converts only the slices it returns.

    Args:
      root: the folder holding ``data_batch_1..5`` and ``test_batch``.
      dtype: np.float32 (default; pixel values 0..255, not scaled), another float, or np.uint8.
      rows_per_file: rows each file must hold (10000 in the real data); None accepts any.
      verify: check each file against the official md5 (``read_cifar10_batch``); None (default)
        does so for the official layout (10000 rows per file), so small test files are not.

    Returns:
      (X_train (50000, 3, 32, 32), y_train (50000,) int64, X_test (10000, 3, 32, 32),
      y_test (10000,) int64), X channels-first in ``dtype``.

    Raises:
      DataError: a file is missing, truncated, corrupt, not a CIFAR-10 batch, or (verified) not
        the official content.
    """
    dtype = np.dtype(dtype)
    if dtype != np.uint8 and dtype.kind != "f":
        raise TypeError(f"dtype must be np.uint8 or a float dtype, got {dtype}")
    root = Path(root).expanduser()
    if not (root / CIFAR10_FILES[0]).exists() and (root / CIFAR10_FOLDER).is_dir():
        raise DataError(f"{root} holds no {CIFAR10_FILES[0]}; pass {root / CIFAR10_FOLDER}.")
    batches = [read_cifar10_batch(root / name, rows_per_file, verify) for name in CIFAR10_FILES]

    def stack(parts):
        X = np.empty((sum(len(d) for d, _ in parts), 3, 32, 32), dtype)
        start = 0
        for data, _ in parts:
            X[start : start + len(data)] = data.reshape(-1, 3, 32, 32)
            start += len(data)
        return X, np.concatenate([labels for _, labels in parts])

    return *stack(batches[:5]), *stack(batches[5:])


def load_digits(*, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """The bundled 8x8 handwritten digits (UCI optdigits test set, as shipped by scikit-learn).

    Returns:
      (X (1797, 64) pixel counts 0..16 in ``dtype``, row-major 8x8; y (1797,) int64 in 0..9).
    """
    try:
        with np.load(_DIGITS, allow_pickle=False) as f:
            X, y = f["images"], f["labels"]
    except Exception as exc:
        raise DataError(f"bundled {_DIGITS} is unreadable ({exc}); reinstall fc_jax.") from exc
    if X.shape != (1797, 64) or y.shape != (1797,):
        raise DataError(f"bundled {_DIGITS} has shapes {X.shape}, {y.shape}; reinstall fc_jax.")
    return X.astype(dtype), y.astype(np.int64)


def _count(value, default: int, name: str, minimum: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_sizes(name: str, n_tr: int, n_val: int, n_te: int, pool: int, test_pool: int) -> None:
    if n_tr + n_val > pool:
        raise ValueError(
            f"{name} has {pool} train/val examples; num_training + num_validation "
            f"= {n_tr} + {n_val} = {n_tr + n_val} is too many"
        )
    if n_te > test_pool:
        raise ValueError(f"{name} has {test_pool} test examples; num_test={n_te} is too many")


def _to_float(x: np.ndarray, mean: np.ndarray, scale: float, dtype) -> np.ndarray:
    """(x * scale - mean) computed in float64, stored in ``dtype``, in chunks to bound memory."""
    out = np.empty(x.shape, dtype)
    for i in range(0, len(x), 4096):
        out[i : i + 4096] = x[i : i + 4096].astype(np.float64) * scale - mean
    return out


def get_dataset(
    name: str,
    data_dir: os.PathLike | str | None = None,
    num_training: int | None = None,
    num_validation: int | None = None,
    num_test: int | None = None,
    subtract_mean: bool = True,
    seed: int = 0,
    flatten: bool = True,
    dtype=np.float32,
) -> dict[str, np.ndarray]:
    """Split, scale and center a dataset the cs231n way.

    ``'cifar10'``: train = the first ``num_training`` (49000) of the 50000 training images,
    val = the next ``num_validation`` (1000), test = the first ``num_test`` (1000) test images;
    pixels stay 0..255 (the course does not scale). ``data_dir`` is resolved by ``cifar10_dir``;
    a folder the user names (``data_dir``, ``$FC_JAX_DATA_DIR``) is never written to; when
    ``data_dir`` is None and no complete folder is found, CIFAR-10 is downloaded into the user
    cache (see ``ensure_cifar10``; ``provenance(data_dir)`` says which folder was read).
    ``'digits'``: a fixed ``seed``-ed shuffle of the 1797 images: the first 1497 are the
    train/val pool (train = first ``num_training`` (1197), val = next ``num_validation``
    (300)), the last 300 the test pool; pixels are scaled to [0, 1].
    The mean image of the training part is subtracted when ``subtract_mean``; arithmetic is
    float64 (as the course's), cast to ``dtype`` at the end.

    Returns:
      dict with X_train (N, D) (or (N, C, H, W) when not ``flatten``: (N, 3, 32, 32) for
      cifar10, (N, 1, 8, 8) for digits) in ``dtype``, y_train (N,) int64, likewise X_val,
      y_val, X_test, y_test, and mean_image (one example's shape, float64): the image that was
      subtracted (zeros when ``subtract_mean`` is False).

    Raises:
      ValueError: unknown ``name``, or more examples requested than the dataset has.
      TypeError: a non-float ``dtype`` or a non-int count.
      DataError: the CIFAR-10 files are missing or broken.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if np.dtype(dtype).kind != "f":
        raise TypeError(f"dtype must be a float dtype, got {np.dtype(dtype)}")
    d_tr, d_val, d_te, pool, test_pool = DATASETS[name][:5]
    n_tr = _count(num_training, d_tr, "num_training", 1)
    n_val = _count(num_validation, d_val, "num_validation", 0)
    n_te = _count(num_test, d_te, "num_test", 0)
    _check_sizes(name, n_tr, n_val, n_te, pool, test_pool)
    if name == "cifar10":
        folder = ensure_cifar10(data_dir, download=data_dir is None)
        Xp, yp, Xt, yt = load_cifar10(folder, dtype=np.uint8)
    else:
        X, y = load_digits(dtype=np.uint8)
        X = X.reshape(-1, 1, 8, 8)
        order = np.random.default_rng(seed).permutation(len(X))
        Xp, yp, Xt, yt = X[order[:pool]], y[order[:pool]], X[order[pool:]], y[order[pool:]]
    scale = DATASETS[name].pixel_scale
    _check_sizes(name, n_tr, n_val, n_te, len(Xp), len(Xt))  # the files may hold fewer
    parts = {
        "train": (Xp[:n_tr], yp[:n_tr]),
        "val": (Xp[n_tr : n_tr + n_val], yp[n_tr : n_tr + n_val]),
        "test": (Xt[:n_te], yt[:n_te]),
    }
    shape = (int(np.prod(Xp.shape[1:])),) if flatten else Xp.shape[1:]
    mean = np.zeros(Xp.shape[1:])
    if subtract_mean:
        mean = parts["train"][0].mean(axis=0, dtype=np.float64) * scale
    out = {}
    for split, (X, y) in parts.items():
        out[f"X_{split}"] = _to_float(X, mean, scale, dtype).reshape(len(X), *shape)
        out[f"y_{split}"] = y.astype(np.int64)
    out["mean_image"] = mean.reshape(shape)
    return out


def synthetic(
    n: int, input_dim: int, num_classes: int, seed: int = 0, dtype=np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Learnable Gaussian-cluster data for tests: class centers 3 standard deviations apart.

    Returns:
      (X (n, input_dim) in ``dtype``, y (n,) int64 with classes as balanced as n allows).
    """
    n = _count(n, 0, "n", 1)
    input_dim = _count(input_dim, 0, "input_dim", 1)
    num_classes = _count(num_classes, 0, "num_classes", 1)
    if np.dtype(dtype).kind != "f":
        raise TypeError(f"dtype must be a float dtype, got {np.dtype(dtype)}")
    rng = np.random.default_rng(seed)
    centers = 3.0 * rng.standard_normal((num_classes, input_dim))
    y = rng.permutation(np.arange(n) % num_classes)
    X = centers[y] + rng.standard_normal((n, input_dim))
    return X.astype(dtype), y.astype(np.int64)


def check_finite(X, name: str = "X") -> None:
    """Raise ValueError if ``X`` holds NaN or inf, TypeError if it is not numeric."""
    X = np.asarray(X)
    if X.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be numeric, got dtype {X.dtype}")
    bad = ~np.isfinite(X)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} holds {int(np.isnan(X).sum())} NaN and "
            f"{int(np.isinf(X).sum())} inf values (first at index {first})"
        )


def check_labels(y, num_classes: int, name: str = "y") -> None:
    """Raise unless ``y`` is a 1-D integer array with values in ``0..num_classes-1``.

    Raises:
      TypeError: ``y`` is not of an integer dtype (bool and float labels are refused).
      ValueError: ``y`` is not 1-D or a label is out of range.
    """
    num_classes = _count(num_classes, 0, "num_classes", 1)
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name} must be in 0..{num_classes - 1}, got values in {y.min()}..{y.max()}"
        )

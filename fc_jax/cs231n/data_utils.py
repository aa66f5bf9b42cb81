"""cs231n ``data_utils``: the course's CIFAR-10 loaders over ``fc_jax.data.datasets``.

Contract: ``load_CIFAR10(ROOT)`` returns what the course's does, (Xtr (50000, 32, 32, 3) float64,
Ytr (50000,) int64, Xte (10000, 32, 32, 3) float64, Yte (10000,) int64), channels last;
``get_CIFAR10_data`` returns the course's split dict, channels first. The files are parsed by
``fc_jax.data.datasets.load_cifar10`` (a restricted unpickler that refuses anything but numpy arrays,
checked shapes and labels) instead of the course's plain ``pickle.load``.
"""

from __future__ import annotations

import os

import numpy as np

from fc_jax.data import datasets, download

__all__ = ["get_CIFAR10_data", "load_CIFAR10"]


def load_CIFAR10(ROOT: os.PathLike | str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load all of CIFAR-10 from the batches folder ``ROOT``. Mirrors cs231n ``load_CIFAR10``.

    Returns:
      (Xtr (50000, 32, 32, 3) float64, Ytr (50000,) int64, Xte (10000, 32, 32, 3) float64,
      Yte (10000,) int64), pixel values 0..255.
    """
    Xtr, Ytr, Xte, Yte = datasets.load_cifar10(ROOT, dtype=np.uint8)
    to_nhwc = lambda X: X.transpose(0, 2, 3, 1).astype(np.float64)
    return to_nhwc(Xtr), Ytr, to_nhwc(Xte), Yte


def get_CIFAR10_data(
    num_training: int = 49000,
    num_validation: int = 1000,
    num_test: int = 1000,
    subtract_mean: bool = True,
    cifar10_dir: os.PathLike | str | None = None,
) -> dict[str, np.ndarray]:
    """Load CIFAR-10 and split it as the course does. Mirrors cs231n ``get_CIFAR10_data``.

    Train is the first ``num_training`` training images, val the next ``num_validation``,
    test the first ``num_test`` test images; the training mean image is subtracted (in
    float64, exactly as the course does) and the images are transposed to channels first.
    Unlike the course, X is returned as float32 (half the memory; the nets cast to float32
    anyway).

    Args:
      cifar10_dir: the batches folder; None means ``fc_jax.data.download.cifar10_dir()``
        (``$FC_JAX_DATA_DIR`` or the user cache), downloaded there if missing.

    Returns:
      dict: X_train (num_training, 3, 32, 32) float32, y_train (num_training,) int64, and
      likewise X_val, y_val, X_test, y_test.
    """
    folder = download.ensure_cifar10(cifar10_dir, download=cifar10_dir is None)
    split = datasets.get_dataset(
        "cifar10",
        data_dir=folder,
        num_training=num_training,
        num_validation=num_validation,
        num_test=num_test,
        subtract_mean=subtract_mean,
        flatten=False,
        dtype=np.float32,
    )
    del split["mean_image"]
    return split

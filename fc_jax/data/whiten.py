"""ZCA whitening of a dataset, computed once from its training split (numpy only, no jax).

Contract: `zca_matrix(X, epsilon)` returns the symmetric (D, D) float64 matrix
`W = U diag(1 / sqrt(s + epsilon * mean(s))) U^T` of the covariance `X^T X / N = U diag(s) U^T` of
mean-subtracted rows X (N, D), so `X @ W` has (nearly) identity covariance and stays in the
pixels' layout (ZCA: the whitened image still looks like the image, so crops and flips apply).
`epsilon` is relative to the mean eigenvalue (the mean pixel variance): it damps the directions
of little variance. `whiten(data, epsilon)` whitens X_train, X_val and X_test of a course-style
data dict with the training split's matrix and adds it as `data["whiten"]`;
`fc_jax.storage.model.save_model` stores it, so `predict_raw` and `fc-jax eval` apply it to raw
images: `((X * pixel_scale - mean_image) @ W)`.
"""

import numpy as np

__all__ = ["WHITENINGS", "zca_matrix", "whiten"]

WHITENINGS = ("none", "zca")
_CHUNK = 4096  # rows per product (bounds the float64 copies of a chunk)


def zca_matrix(X: np.ndarray, epsilon: float) -> np.ndarray:
    """The (D, D) float64 ZCA matrix of the mean-subtracted rows `X` (see the module docstring)."""
    if not epsilon > 0:
        raise ValueError(f"whiten_epsilon must be > 0, got {epsilon!r}")
    X = np.asarray(X).reshape(len(X), -1)
    D = X.shape[1]
    cov = np.zeros((D, D))
    for start in range(0, len(X), _CHUNK):
        c = X[start : start + _CHUNK].astype(np.float64)
        cov += c.T @ c
    cov /= max(len(X), 1)
    s, U = np.linalg.eigh(cov)
    s = np.maximum(s, 0.0)
    eps = float(epsilon) * max(float(s.mean()), np.finfo(np.float64).tiny)
    return (U / np.sqrt(s + eps)[None, :]) @ U.T


def _apply(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    out = np.empty((len(X), W.shape[1]), X.dtype)
    flat = X.reshape(len(X), -1)
    for start in range(0, len(X), _CHUNK):
        out[start : start + _CHUNK] = flat[start : start + _CHUNK].astype(np.float64) @ W
    return out.reshape(X.shape)


def whiten(data: dict, epsilon: float) -> dict:
    """`data` with X_train, X_val, X_test whitened by the training split's ZCA matrix, which is
    added as `data["whiten"]` ((D, D) float64)."""
    W = zca_matrix(data["X_train"], epsilon)
    out = {k: _apply(v, W) if k in ("X_train", "X_val", "X_test") else v for k, v in data.items()}
    out["whiten"] = W
    return out

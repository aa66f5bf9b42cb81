"""A trained model as one file, reloaded and fed raw images.

Contract: `save_model(path, config, params, model_state, mean_image)` writes `model.npz` (in a
folder, or the `.npz` path given) through `fc_jax.storage.archive.write_checkpoint`: arrays `params/W1`,
..., `model_state/running_mean1`, ..., `mean_image`; meta `kind: "model"`, the `NetConfig` fields
(`dataclasses.asdict`, rebuilt with `NetConfig(**fields)`, so added or renamed fields need no
change here), `pixel_scale` and the caller's `meta`; files of format version 2 and 3 (the same
layout) are read. `load_model(path)` returns a `Model` with every
array bit-identical; any fault is one line of `fc_jax.storage.archive.CheckpointError`. `predict_raw(model,
X)` applies the training preprocessing (`X * pixel_scale - mean_image`, then the ZCA matrix
`whiten` when the model has one, in float64 as
`fc_jax.data.datasets.get_dataset` does, then the config's dtype), flattens, and returns test-mode class
predictions as numpy. It takes channels-first, channels-last (transposed) or flat images of the
dataset the model was trained on, and refuses values that are not raw pixels (e.g. scaled to [0, 1]).
"""

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from fc_jax import models
from fc_jax.data.datasets import DATASETS, check_finite
from fc_jax.models import x64_scope
from fc_jax.storage.archive import (
    CheckpointError,
    Spec,
    checkpoint_path,
    read_checkpoint,
    write_checkpoint,
)
from fc_jax.storage.trees import config_from_meta, flatten_tree, restore_tree, tree_spec

__all__ = ["MODEL_NAME", "Model", "save_model", "load_model", "predict_raw"]

MODEL_NAME = "model.npz"
MODEL_VERSIONS = (2, 3)  # the archive's format versions of a model file (the same layout)


class Model(NamedTuple):
    """A trained net ready for inference."""

    config: models.NetConfig
    params: Any  # {W1, b1, gamma1, ...} jax arrays in config.dtype
    model_state: Any  # batchnorm running statistics (empty dict otherwise)
    mean_image: np.ndarray | None  # float64, one example's shape; None: no mean subtraction
    meta: dict  # the caller's meta plus "pixel_scale"
    whiten: np.ndarray | None = None  # (D, D) float64 ZCA matrix applied after the mean; None


def save_model(
    path: os.PathLike | str,
    config: models.NetConfig,
    params: Any,
    model_state: Any = None,
    mean_image: Any = None,
    meta: dict | None = None,
    *,
    pixel_scale: float = 1.0,
    whiten: Any = None,
) -> Path:
    """Write a model for `load_model` atomically; `path` is a folder (then `model.npz`) or a `.npz`.

    Args:
      config: the architecture.
      params, model_state: as trained (e.g. a run's best params and their batchnorm statistics).
      mean_image: the image `get_dataset` subtracted (its `mean_image`), or None.
      meta: JSON-ready extras (dataset, accuracy, hyperparameters, ...).
      pixel_scale: the factor applied to raw pixels before the mean was subtracted
        (`fc_jax.data.datasets.DATASETS[name].pixel_scale`: 1 for cifar10, 1/16 for digits).
      whiten: the (D, D) matrix the mean-subtracted rows were multiplied by
        (`fc_jax.data.whiten`, `data["whiten"]`), or None.

    Returns:
      The file written.

    Raises:
      CheckpointError: the arrays do not fit `config`, or meta is not JSON-serializable.
      fc_jax.storage.files.WriteError: the write failed; an existing file is untouched.
    """
    arrays = {**flatten_tree("params", params), **flatten_tree("model_state", model_state or {})}
    want = _spec(config, None if mean_image is None else np.shape(mean_image))
    got = {k: (a.shape, a.dtype) for k, a in arrays.items()}
    if mean_image is not None:
        arrays["mean_image"] = np.asarray(mean_image, np.float64)
        got["mean_image"] = (arrays["mean_image"].shape, arrays["mean_image"].dtype)
    if whiten is not None:
        arrays["whiten"] = np.asarray(whiten, np.float64)
        got["whiten"] = (arrays["whiten"].shape, arrays["whiten"].dtype)
        want["whiten"] = ((config.input_dim, config.input_dim), np.dtype(np.float64))
    if got != want:
        bad = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        raise CheckpointError(f"arrays {bad} do not fit {config}: expected {want}, got {got}")
    doc = {
        "kind": "model",
        "config": dataclasses.asdict(config),
        "mean_image_shape": None if mean_image is None else list(np.shape(mean_image)),
        "pixel_scale": float(pixel_scale),
        "meta": dict(meta or {}),
        "whiten": whiten is not None,
    }
    return write_checkpoint(checkpoint_path(path, MODEL_NAME), arrays, doc)


@functools.cache
def _templates(config: models.NetConfig):
    with x64_scope(config):
        p = jax.eval_shape(lambda: models.init_params(jax.random.key(0), config))
        return p, jax.eval_shape(lambda: models.init_state(config))


def _spec(config: models.NetConfig, mean_shape) -> Spec:
    p, s = _templates(config)
    spec = {**tree_spec("params", p), **tree_spec("model_state", s)}
    if mean_shape is not None:
        if int(np.prod(mean_shape)) != config.input_dim:
            raise CheckpointError(
                f"mean_image of shape {tuple(mean_shape)} does not hold {config.input_dim} values"
            )
        spec["mean_image"] = (tuple(mean_shape), np.dtype(np.float64))
    return spec


def load_model(path: os.PathLike | str) -> Model:
    """Read `path/model.npz` (or a `.npz` path) written by `save_model`.

    Raises:
      CheckpointError: missing, corrupt, another format version, or not a model file.
    """
    path = checkpoint_path(path, MODEL_NAME)
    found = {}

    def expect(meta: dict) -> Spec:
        if meta.get("kind") != "model":
            raise CheckpointError(f"checkpoint {path} holds a {meta.get('kind')!r}, not a model")
        found["config"] = config_from_meta(meta["config"], path)
        float(meta["pixel_scale"]), dict(meta["meta"])  # types checked
        shape = meta["mean_image_shape"]
        spec = _spec(found["config"], None if shape is None else tuple(map(int, shape)))
        if meta.get("whiten", False) is True:  # older model files: no key, no whitening
            D = found["config"].input_dim
            spec["whiten"] = ((D, D), np.dtype(np.float64))
        return spec

    arrays, meta = read_checkpoint(path, expect, versions=MODEL_VERSIONS)
    config = found["config"]
    p, s = _templates(config)
    with x64_scope(config):
        params, state = restore_tree("params", p, arrays), restore_tree("model_state", s, arrays)
    extra = {**meta["meta"], "pixel_scale": float(meta["pixel_scale"])}
    return Model(config, params, state, arrays.get("mean_image"), extra, arrays.get("whiten"))


def _layouts(model: Model) -> tuple[list, int | None]:
    """([(shape of one example, axes to make it channels-first or None, name)], pixel max).

    The image shape comes from the dataset the model was trained on (its meta's settings), else
    from a channels-first mean image; without either, any shape with `input_dim` values is taken.
    """
    row = DATASETS.get((model.meta.get("settings") or {}).get("dataset"))
    shape = row.image_shape if row else None
    if shape is None and model.mean_image is not None and model.mean_image.ndim == 3:
        shape = model.mean_image.shape
    if shape is None or int(np.prod(shape)) != model.config.input_dim:
        return [], None
    C, H, W = shape
    layouts = [
        (tuple(shape), None, "channels-first"),
        ((H, W, C), (0, 3, 1, 2), "channels-last"),
        ((model.config.input_dim,), None, "flat"),
    ]
    if C == 1:
        layouts.append(((H, W), None, "one channel without its axis"))  # e.g. 8x8 digits
    return layouts, row.pixel_max if row else None


def _rows(model: Model, X: np.ndarray) -> np.ndarray:
    """(N, input_dim) float64 rows of the raw images `X` in an accepted layout, values checked."""
    layouts, pixel_max = _layouts(model)
    D = model.config.input_dim
    got = f"{X.dtype}{list(X.shape)}"
    if X.ndim < 1 or X.dtype.kind not in "biuf":
        raise ValueError(f"X must be (N, ...) numbers; got {got}")
    if not layouts:
        if X.size and X[0].size != D:
            raise ValueError(f"X must be (N, ...) numbers with {D} values per example; got {got}")
    else:
        match = next((axes for shape, axes, _ in layouts if X.shape[1:] == shape), False)
        if match is False:
            forms = [f"(N, {', '.join(map(str, shape))}) {name}" for shape, _, name in layouts]
            forms = ", ".join(forms[:-1]) + " or " + forms[-1]
            raise ValueError(f"X must be raw images of shape {forms}; got {got}")
        if match is not None:
            X = X.transpose(match)
    if X.size:
        check_finite(X, "X")
        lo, hi = float(X.min()), float(X.max())
        if pixel_max is not None and (lo < 0 or hi > pixel_max):
            raise ValueError(
                f"X holds values in [{lo:.4g}, {hi:.4g}]: not raw pixels 0..{pixel_max}; "
                "pass the images as stored (not normalized or mean-subtracted)"
            )
        if pixel_max is not None and pixel_max > 1 and X.dtype.kind == "f" and 0 < hi <= 1:
            raise ValueError(
                f"X looks scaled to [0, 1] (values in [{lo:.4g}, {hi:.4g}]); pass raw "
                f"pixel values 0..{pixel_max} as stored (multiply by {pixel_max})"
            )
    return X.reshape(len(X), -1).astype(np.float64)


def predict_raw(model: Model, X: Any) -> np.ndarray:
    """Class predictions (N,) int32 for raw images `X`, as stored on disk.

    For a model trained on CIFAR-10: (N, 3, 32, 32) channels-first (the library's layout),
    (N, 32, 32, 3) channels-last (transposed here) or (N, 3072) flat rows of channels-first
    images, pixel values 0..255 (any numeric dtype). Digits: (N, 1, 8, 8), (N, 8, 8, 1), (N, 8, 8)
    or (N, 64), values 0..16. Raises ValueError for another shape, NaN or inf, values outside the
    raw range, or floats that look scaled to [0, 1] (every image would land in one class). A model
    that does not name its dataset takes any shape with `config.input_dim` values per example.
    """
    x = _rows(model, np.asarray(X)) * model.meta["pixel_scale"]
    if model.mean_image is not None:
        x = x - model.mean_image.reshape(1, -1)
    if model.whiten is not None:
        x = x @ model.whiten
    with x64_scope(model.config):
        x = x.astype(model.config.dtype)
        return np.asarray(models.predict(model.params, model.model_state, x, config=model.config))

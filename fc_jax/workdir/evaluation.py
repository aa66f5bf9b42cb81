"""The test accuracy of a trained net: one function for `fc-jax train`, a sweep's retrained winner
and `fc-jax eval`.

Contract: `accuracy_on_test(config, params, model_state, data)` scores the best params on the test
split of `data` (NaN when it is empty); `evaluate_model(path)` loads a model file or a run folder's
`model.npz`, reloads the dataset it was trained on (same split, same preprocessing) and returns
that accuracy as the dict `fc-jax eval` prints; `model_path(path)` is the model file a path names.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from fc_jax import models, train
from fc_jax.data import datasets
from fc_jax.storage.model import load_model

__all__ = ["accuracy_on_test", "evaluate_model", "model_path"]


def accuracy_on_test(config, params, model_state, data: dict, whiten=None) -> float:
    """Accuracy of `params` (and the batchnorm statistics `model_state`) on the test split.

    Args:
      config: the net's `NetConfig`.
      params, model_state: the trained net (a run's best params).
      data: a dataset dict with `X_test` (N, ...) and `y_test` (N,), preprocessed as in training.
      whiten: (D, D) ZCA matrix to apply to the test images first (a loaded model's `whiten`, for
        data read raw), or None when `data` is already whitened or never was.

    Returns:
      The fraction of test images classified right; NaN when the test split is empty.
    """
    X, y = data["X_test"], data["y_test"]
    if len(X) == 0:
        return float("nan")
    with models.x64_scope(config):
        X = X.reshape(len(X), -1)
        if whiten is not None:  # the training preprocessing, as predict_raw applies it
            X = (X.astype(np.float64) @ whiten).astype(X.dtype)
        X, y = jnp.asarray(X, jnp.dtype(config.dtype)), jnp.asarray(y, jnp.int32)
        return float(train.make_evaluate(config)(params, model_state, X, y))


def model_path(path) -> Path:
    """The model file `path` names: itself, or `path/model.npz` for a run folder.

    Raises:
      ValueError: a sweep folder (it names the files to pass), a folder without a model, or no such path.
    """
    p = Path(path).expanduser()
    if p.is_dir() and not (p / "model.npz").exists():
        if (p / "models").is_dir():
            raise ValueError(
                f"{p} is a sweep folder: pass {p / 'models'}/trial-<k>.npz or, after "
                f"--retrain-best, {p / 'retrain'}"
            )
        raise ValueError(f"{p} holds no model.npz (a finished fc-jax train run writes one)")
    if not p.exists():
        raise ValueError(f"{p}: no such run folder or model file")
    return p


def evaluate_model(path, data_dir=None) -> dict:
    """The test accuracy of the model in `path` (a model file or a run folder) on its dataset.

    Args:
      path: a run folder holding `model.npz`, or a model file (a sweep's `models/trial-<k>.npz`).
      data_dir: the CIFAR-10 folder (default: the one the model was trained on).

    Returns:
      {"model", "dataset", "num_test", "test_acc"}: what `fc-jax eval PATH` prints.

    Raises:
      ValueError: no model there, a model that does not name its dataset, or no test split.
    """
    path = model_path(path)
    model = load_model(path)
    s = model.meta.get("settings")
    if not s:
        raise ValueError(f"{path} does not say which dataset it was trained on; use --inputs")
    sizes = s["num_training"], s["num_validation"], s["num_test"]
    folder = data_dir or s.get("data_dir")
    data = datasets.get_dataset(s["dataset"], folder, *sizes, dtype=np.dtype(s["dtype"]))
    if len(data["X_test"]) == 0:
        raise ValueError("the model was trained with --num-test 0: there is no test split to score")
    acc = accuracy_on_test(model.config, model.params, model.model_state, data, model.whiten)
    return {
        "model": str(path),
        "dataset": s["dataset"],
        "num_test": len(data["y_test"]),
        "test_acc": acc,
    }

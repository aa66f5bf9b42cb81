"""ZCA whitening (fc_jax.data.whiten): computed from the training split, saved with the model,
applied to raw images by `fc-jax eval --inputs` and `predict_raw`."""

import json

import numpy as np
import pytest

from fc_jax import cli, settings
from fc_jax.data.datasets import get_dataset
from fc_jax.data.whiten import whiten, zca_matrix
from fc_jax.storage.model import load_model, predict_raw


def test_zca_whitens_the_training_rows(rng):
    A = rng.normal(size=(6, 6))
    X = rng.normal(size=(4000, 6)) @ A  # correlated features
    X -= X.mean(0)
    W = zca_matrix(X, 1e-9)
    np.testing.assert_allclose(W, W.T, atol=1e-12)  # ZCA: symmetric (stays in the pixel basis)
    Z = X @ W
    np.testing.assert_allclose(Z.T @ Z / len(Z), np.eye(6), atol=1e-6)
    # the damping shrinks each direction by s / (s + eps * mean(s)), here by about half for the mean
    s = np.linalg.eigvalsh(X.T @ X / len(X))
    damped = np.linalg.eigvalsh((X @ zca_matrix(X, 1.0)).T @ (X @ zca_matrix(X, 1.0)) / len(X))
    np.testing.assert_allclose(np.sort(damped), np.sort(s / (s + s.mean())), rtol=1e-8)
    with pytest.raises(ValueError, match="whiten_epsilon must be > 0"):
        zca_matrix(X, 0.0)


def test_whiten_uses_the_training_split_for_every_split(rng):
    d = {k: rng.normal(size=(50, 4)) for k in ("X_train", "X_val", "X_test")}
    d["y_train"] = np.zeros(50)
    out = whiten(d, 0.1)
    W = zca_matrix(d["X_train"], 0.1)
    for k in ("X_train", "X_val", "X_test"):
        np.testing.assert_allclose(out[k], d[k] @ W, rtol=1e-12)
    assert out["y_train"] is d["y_train"] and out["whiten"].shape == (4, 4)


@pytest.mark.slow
def test_round_trip_through_fc_jax_eval_inputs(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--whiten",
        "zca",
        "--whiten-epsilon",
        "0.05",
        "--out",
        str(out),
        "--quiet",
    ]
    assert cli.main(argv) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model = load_model(out)
    assert model.whiten is not None and model.whiten.shape == (64, 64)
    raw = get_dataset("digits", subtract_mean=False, flatten=False)  # scaled by 1/16, not centered
    images = np.rint(raw["X_test"] * 16).astype(np.uint8)  # the raw pixels 0..16, (N, 1, 8, 8)
    np.save(tmp_path / "in.npy", images)
    assert (
        cli.main(
            [
                "eval",
                str(out),
                "--inputs",
                str(tmp_path / "in.npy"),
                "--output",
                str(tmp_path / "pred.npy"),
            ]
        )
        == 0
    )
    pred = np.load(tmp_path / "pred.npy")
    np.testing.assert_array_equal(pred, predict_raw(model, images))
    acc = float(np.mean(pred == raw["y_test"]))
    assert acc == pytest.approx(trained["test_acc"], abs=1e-6)  # the same preprocessing as training
    capsys.readouterr()
    assert cli.main(["eval", str(out)]) == 0  # the test split, whitened like the training data
    assert json.loads(capsys.readouterr().out)["test_acc"] == pytest.approx(acc, abs=1e-6)
    # without the matrix the raw images give other predictions: it is applied, not decorative
    bare = model._replace(whiten=None)
    assert not np.array_equal(predict_raw(bare, images), pred)
    # resume refuses another whitening by name
    assert cli.main(["train", "--resume", str(out), "--whiten", "none"]) == 2
    assert "--whiten 'none' (checkpoint: 'zca')" in capsys.readouterr().err


def test_refusals():
    with pytest.raises(ValueError, match="whiten must be one of"):
        settings.settings("digits", {"whiten": "pca"})
    with pytest.raises(ValueError, match="whiten_epsilon must be a finite number > 0"):
        settings.settings("digits", {"whiten": "zca", "whiten_epsilon": 0.0})

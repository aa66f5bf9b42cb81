"""fc_jax.storage.model: a model saved with its preprocessing, reloaded bit-identical, fed raw images."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from fc_jax import models, train
from fc_jax.hparams import make_hparams
from fc_jax.optim import get_optimizer
from fc_jax.runs import fit
from fc_jax.storage.archive import CheckpointError
from fc_jax.storage.checkpoint import load_run, save_run
from fc_jax.storage.model import Model, load_model, predict_raw, save_model


def _model(dtype="float32", normalization="batchnorm"):
    config = models.NetConfig(
        (5,), input_dim=12, num_classes=3, normalization=normalization, dtype=dtype
    )
    rng = np.random.default_rng(0)
    params = models.init_params(jax.random.key(0), config, 0.5)
    state = {
        k: np.abs(rng.standard_normal(v.shape)).astype(dtype)
        for k, v in models.init_state(config).items()
    }
    mean = rng.uniform(0, 255, (3, 2, 2))
    return config, params, state, mean


def _raw(n=40):
    return np.random.default_rng(1).integers(0, 256, (n, 3, 2, 2), dtype=np.uint8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip_and_predictions(tmp_path, dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    config, params, state, mean = _model(dtype)
    path = save_model(tmp_path, config, params, state, mean, {"dataset": "fake", "val_acc": 0.5})
    assert path == tmp_path / "model.npz"
    model = load_model(tmp_path)
    assert isinstance(model, Model) and model.config == config
    assert model.meta == {"dataset": "fake", "val_acc": 0.5, "pixel_scale": 1.0}
    for k in params:
        assert model.params[k].dtype == np.dtype(dtype)
        assert np.asarray(model.params[k]).tobytes() == np.asarray(params[k]).tobytes(), k
    for k in state:
        assert np.asarray(model.model_state[k]).tobytes() == state[k].tobytes(), k
    assert model.mean_image.dtype == np.float64 and np.array_equal(model.mean_image, mean)
    X = _raw()
    x = (X.astype(np.float64) - mean[None]).reshape(len(X), -1).astype(dtype)  # get_dataset's way
    want = np.asarray(models.predict(params, state, x, config=config))
    got = predict_raw(model, X)
    assert isinstance(got, np.ndarray) and got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(predict_raw(model, X.reshape(len(X), 12)), want)  # flat rows too
    assert len(set(want.tolist())) > 1  # the test can tell classes apart


def test_pixel_scale_and_no_mean(tmp_path):
    config, params, _, _ = _model(normalization=None)
    save_model(tmp_path / "digits.npz", config, params, None, None, pixel_scale=1 / 16)
    model = load_model(tmp_path / "digits.npz")
    assert model.mean_image is None and model.model_state == {}
    X = np.random.default_rng(2).integers(0, 17, (30, 12))
    want = models.predict(params, {}, (X / 16).astype(np.float32), config=config)
    np.testing.assert_array_equal(predict_raw(model, X), want)
    with pytest.raises(
        ValueError,
        match=r"X must be \(N, \.\.\.\) numbers with 12 values per example; got int64\[30, 5\]",
    ):
        predict_raw(model, X[:, :5])


def test_refusals(tmp_path):
    config, params, state, mean = _model()
    with pytest.raises(CheckpointError, match=r"arrays \['params/W1'\] do not fit"):
        save_model(tmp_path, config, {**params, "W1": params["W1"][:, :4]}, state, mean)
    with pytest.raises(CheckpointError, match="does not hold 12 values"):
        save_model(tmp_path, config, params, state, mean[:2])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="^no checkpoint at .*model.npz$"):
        load_model(tmp_path)
    save_model(tmp_path, config, params, state, mean)
    with pytest.raises(CheckpointError, match="holds a 'model', not a run"):
        load_run(tmp_path / "model.npz")
    raw = bytearray((tmp_path / "model.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "model.npz").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="^corrupt checkpoint .*model.npz: "):
        load_model(tmp_path)


def test_a_run_checkpoint_is_not_a_model(tmp_path):
    config = models.NetConfig((3,), input_dim=4, num_classes=2)
    ts = train.init_train_state(jax.random.key(1), config, get_optimizer("sgd"), 0.1)
    meta = {"config": config, "update_rule": "sgd", "hparams": make_hparams("sgd")}
    save_run(tmp_path, fit.Run(ts, 1, {}, ts.params, ts.model_state, 0.5), meta)
    with pytest.raises(CheckpointError, match="holds a 'lanes', not a model"):
        load_model(tmp_path / "checkpoint.npz")


def test_config_is_stored_field_by_field(tmp_path):
    """`dataclasses.asdict` in, `NetConfig(**fields)` out: a renamed field needs no change here."""
    config, params, state, mean = _model()
    save_model(tmp_path, config, params, state, mean)
    with np.load(tmp_path / "model.npz") as z:
        doc = json.loads(z["meta"].tobytes())
    assert doc["config"] == json.loads(json.dumps(dataclasses.asdict(config)))

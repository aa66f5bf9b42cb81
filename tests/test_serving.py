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
from fc_jax.runs.schedule import Schedule
from fc_jax.storage import archive
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
    meta["schedule"] = Schedule()
    save_run(tmp_path, fit.Run(ts, 1, {}, ts.params, ts.model_state, 0.5), meta)
    with pytest.raises(CheckpointError, match="holds a 'lanes', not a model"):
        load_model(tmp_path / "checkpoint.npz")


def test_a_model_file_of_format_version_2_loads(tmp_path, monkeypatch):
    """Format version 3 changed run checkpoints only: model files of version 2 stay readable."""
    config, params, state, mean = _model()
    monkeypatch.setattr(archive, "FORMAT_VERSION", 2)
    save_model(tmp_path, config, params, state, mean)
    monkeypatch.undo()
    with np.load(tmp_path / "model.npz") as z:
        assert json.loads(z["meta"].tobytes())["format_version"] == 2
    model = load_model(tmp_path)
    assert model.config == config and np.array_equal(model.params["W1"], params["W1"])


def test_config_is_stored_field_by_field(tmp_path):
    """`dataclasses.asdict` in, `NetConfig(**fields)` out: a renamed field needs no change here."""
    config, params, state, mean = _model()
    save_model(tmp_path, config, params, state, mean)
    with np.load(tmp_path / "model.npz") as z:
        doc = json.loads(z["meta"].tobytes())
    assert doc["config"] == json.loads(json.dumps(dataclasses.asdict(config)))


def _trained_like(tmp_path, dataset):
    """A model file as `fc-jax train` writes it (flat mean image, the settings in its meta)."""
    dim = {"cifar10": 3072, "digits": 64}[dataset]
    config = models.NetConfig((8,), input_dim=dim, num_classes=10)
    params = models.init_params(jax.random.key(3), config, 0.05)
    scale = {"cifar10": 1.0, "digits": 1 / 16}[dataset]
    top = {"cifar10": 255, "digits": 16}[dataset]  # raw pixels are 0..top
    mean = np.random.default_rng(4).uniform(0, top, dim) * scale
    save_model(
        tmp_path,
        config,
        params,
        None,
        mean,
        meta={"settings": {"dataset": dataset}},
        pixel_scale=scale,
    )
    return load_model(tmp_path)


def test_cifar10_images_channels_first_last_or_flat(tmp_path):
    model = _trained_like(tmp_path, "cifar10")
    chw = np.random.default_rng(5).integers(0, 256, (30, 3, 32, 32), dtype=np.uint8)
    want = predict_raw(model, chw)
    assert len(set(want.tolist())) > 1
    hwc = chw.transpose(0, 2, 3, 1)  # as PIL / matplotlib / most image files hold them
    np.testing.assert_array_equal(predict_raw(model, hwc), want)
    np.testing.assert_array_equal(predict_raw(model, chw.reshape(30, -1)), want)
    np.testing.assert_array_equal(predict_raw(model, chw.astype(np.float32)), want)
    # the layout matters: the same numbers read as channels-first rows classify differently
    assert not np.array_equal(predict_raw(model, hwc.reshape(30, -1)), want)
    with pytest.raises(
        ValueError,
        match=r"^X must be raw images of shape \(N, 3, 32, 32\) "
        r"channels-first, \(N, 32, 32, 3\) channels-last or \(N, 3072\) flat; got "
        r"uint8\[30, 32, 96\]$",
    ):
        predict_raw(model, chw.reshape(30, 32, 96))


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda x: x / 255.0,
            r"^X looks scaled to \[0, 1\] \(values in \[0, 1\]\); pass raw pixel "
            r"values 0\.\.255 as stored \(multiply by 255\)$",
        ),
        (lambda x: x.astype(np.float32) / 255, "multiply by 255"),
        (lambda x: (x - 127.5) / 127.5, r"values in \[-1, 1\]: not raw pixels 0\.\.255"),
        (lambda x: x * 2.0, r"values in \[0, 510\]: not raw pixels 0\.\.255"),
        (lambda x: np.where(x == 255, np.nan, x), r"^X holds \d+ NaN and 0 inf values"),
    ],
)
def test_values_that_are_not_raw_pixels_are_refused(tmp_path, make, match):
    model = _trained_like(tmp_path, "cifar10")
    x = np.random.default_rng(6).integers(0, 256, (10, 32, 32, 3)).astype(np.float64)
    x.flat[0], x.flat[1] = 0, 255
    with pytest.raises(ValueError, match=match):
        predict_raw(model, make(x))


def test_digits_images_in_every_layout_and_values_0_to_16(tmp_path):
    model = _trained_like(tmp_path, "digits")
    x = np.random.default_rng(7).integers(0, 17, (40, 8, 8))  # sklearn's digits.images layout
    want = predict_raw(model, x)
    assert len(set(want.tolist())) > 1
    for shaped in (x[:, None], x[..., None], x.reshape(40, 64)):
        np.testing.assert_array_equal(predict_raw(model, shaped), want)
    with pytest.raises(ValueError, match=r"multiply by 16"):
        predict_raw(model, x / 16.0)

"""Tests for fc_jax.settings: the settings schema, resume merging, data identity, precision."""

import numpy as np
import pytest

from fc_jax import models, settings
from fc_jax.data import datasets
from fc_jax.hparams import HPARAMS, RULE_DEFAULTS, make_hparams
from fc_jax.optim import OPTIMIZERS
from fc_jax.runs import fit
from fc_jax.runs.schedule import Schedule


def test_defaults_fill_what_is_not_given_and_are_checked():
    s = settings.settings("digits", {"epochs": 3, "learning_rate": None})
    assert s["epochs"] == 3 and s["learning_rate"] == settings.DEFAULTS["digits"]["learning_rate"]
    assert s["dataset"] == "digits" and s["precision"] == "float32"
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        settings.settings("mnist", {})


@pytest.mark.parametrize(
    "given,match",
    [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"batch_size": True}, "batch_size must be an integer >= 1"),
        ({"hidden_dims": [10, -1]}, "hidden_dims"),
        ({"update_rule": "nadam"}, "unknown update_rule 'nadam'"),
        (
            {"label_smoothing": 1.0},
            r"label_smoothing=1.0 is invalid: expected a finite value in \[0, 1\)",
        ),
        ({"keep_prob": 0.0}, r"keep_prob=0.0 is invalid"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"precision": "bf16", "dtype": "float64"}, "needs --dtype float32"),
        ({"seed": -1}, r"seed must be an integer in \[0,"),
    ],
)
def test_each_bad_setting_is_named(given, match):
    with pytest.raises(ValueError, match=match):
        settings.settings("digits", given)


def test_rules_come_from_the_optimizers_registry():
    assert settings.RULES == tuple(OPTIMIZERS) == tuple(RULE_DEFAULTS)


def test_hparams_of_gives_the_set_values_and_leaves_rule_constants_to_the_rule():
    s = settings.settings("digits", {"update_rule": "lion", "momentum": 0.5})
    hp = settings.hparams_of(s)
    assert hp["momentum"] == 0.5 and "beta2" not in hp  # lion's beta2 (0.99) comes from the rule
    assert float(make_hparams("lion", **hp).beta2) == pytest.approx(0.99)
    assert set(hp) <= set(HPARAMS)


def test_config_of_maps_structure():
    s = settings.settings("cifar10", {"precision": "bf16", "keep_prob": 1.0})
    cfg = settings.config_of(s)
    assert cfg.input_dim == datasets.DATASETS["cifar10"].input_dim == 3072
    assert cfg.compute_dtype == "bfloat16" and not cfg.dropout
    assert settings.config_of({**s, "precision": "float32"}).compute_dtype is None
    old = {k: v for k, v in s.items() if k != "precision"}  # a run saved before --precision
    assert settings.config_of(old).compute_dtype is None


def test_merge_resume_changes_only_epochs_and_names_each_conflict():
    saved = settings.settings("digits", {})
    assert settings.merge_resume(saved, {"epochs": 50})["epochs"] == 50
    with pytest.raises(ValueError, match=r"--learning-rate 0\.5 \(checkpoint: 0\.001\)"):
        settings.merge_resume(saved, {"learning_rate": 0.5, "epochs": 50})
    with pytest.raises(ValueError, match="--precision 'bf16'"):
        settings.merge_resume(saved, {"precision": "bf16"})


def test_data_fingerprint_sees_a_changed_row():
    d = datasets.get_dataset("digits")
    f = settings.data_fingerprint(d)
    assert f == settings.data_fingerprint({k: np.copy(v) for k, v in d.items()})
    d["X_train"] = d["X_train"].copy()
    d["X_train"][0, 0] += 1.0
    assert settings.data_fingerprint(d) != f


@pytest.mark.slow
def test_bfloat16_run_resumes_bit_identically():
    X, y = datasets.synthetic(260, 12, 4, seed=0)
    data = dict(X_train=X[:200], y_train=y[:200], X_val=X[200:], y_val=y[200:])
    cfg = models.NetConfig((16,), input_dim=12, num_classes=4, compute_dtype="bfloat16")
    hp = make_hparams("adam", weight_scale=0.1, lr_decay=0.9)
    s = Schedule(num_epochs=3, batch_size=20, seed=1)
    half = fit.fit(cfg, data, hparams=hp, schedule=s._replace(num_epochs=1))
    full = fit.fit(cfg, data, hparams=hp, schedule=s)
    resumed = fit.fit(cfg, data, hparams=hp, schedule=s, resume=half)
    for k in full.ts.params:
        assert full.ts.params[k].dtype == np.float32  # master weights stay float32
        np.testing.assert_array_equal(full.ts.params[k], resumed.ts.params[k])
    assert full.history["loss"] == resumed.history["loss"]

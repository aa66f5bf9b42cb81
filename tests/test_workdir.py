"""fc_jax.workdir: train, sweep and retrain into folders from Python, without argv (digits, small)."""

import json

import numpy as np
import pytest

from fc_jax import settings
from fc_jax.data.datasets import get_dataset
from fc_jax.runs.schedule import Schedule
from fc_jax.runs.sweep import run_sweep
from fc_jax.storage.model import load_model
from fc_jax.workdir.evaluation import accuracy_on_test, evaluate_model
from fc_jax.workdir.folders import Diverged, command_settings, train_command
from fc_jax.workdir.sweeping import sweep_in, trial_space
from fc_jax.workdir.training import prepare_train, train_in
from fc_jax.workdir.winner import retrain_best

SMALL = dict(num_training=200, num_validation=100, num_test=100, hidden_dims=[16], epochs=2)
RUN_FILES = {
    "checkpoint.npz",
    "history.json",
    "history.csv",
    "curves.png",
    "best_params.npz",
    "model.npz",
}
SUMMARY = {
    "dataset",
    "test_acc",
    "best_val_acc",
    "train_seconds",
    "compile_seconds",
    "epochs",
    "out_dir",
    "device",
}


def _files(folder):
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_train_in_writes_the_run_and_returns_its_summary(tmp_path):
    s = settings.settings("digits", SMALL)
    lines = []
    res = train_in(tmp_path / "run", s, log=lines.append)
    assert set(res) == SUMMARY and res["epochs"] == 2 and res["out_dir"] == str(tmp_path / "run")
    assert _files(tmp_path / "run") == RUN_FILES and len(lines) == 2
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["test_acc"] == res["test_acc"] and history["best_val_acc"] == res["best_val_acc"]
    assert history["settings"] == {**s, "data_dir": None}
    # one test-set evaluation: the run's, the saved model's (`fc-jax eval`), the function's
    model = load_model(tmp_path / "run" / "model.npz")
    data = get_dataset("digits", None, 200, 100, 100)
    acc = accuracy_on_test(model.config, model.params, model.model_state, data)
    assert evaluate_model(tmp_path / "run")["test_acc"] == acc == res["test_acc"]
    assert 0 < acc <= 1


def test_train_in_resumes_bit_for_bit(tmp_path):
    s = settings.settings("digits", SMALL)
    whole = train_in(tmp_path / "whole", s)
    first = train_in(tmp_path / "half", {**s, "epochs": 1})
    assert first["epochs"] == 1
    resumed = train_in(tmp_path / "half", {"epochs": 2}, resume=True)
    assert resumed["epochs"] == 2 and resumed["best_val_acc"] == whole["best_val_acc"]
    a, b = _npz(tmp_path / "whole" / "best_params.npz"), _npz(tmp_path / "half" / "best_params.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    h = [json.loads((tmp_path / n / "history.json").read_text()) for n in ("whole", "half")]
    assert h[0]["history"]["val_acc"] == h[1]["history"]["val_acc"]


def test_train_in_errors_are_exceptions(tmp_path):
    s = settings.settings("digits", SMALL)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="holds a checkpoint already: use --resume"):
        prepare_train(tmp_path / "run", s)
    with pytest.raises(ValueError, match="the numpy reference Solver is the course's"):
        prepare_train(tmp_path / "new", {**s, "flip": True}, backend="numpy")
    assert not (tmp_path / "new").exists()
    huge = {**s, "update_rule": "sgd", "learning_rate": 1e6, "epochs": 10}  # inf in a few epochs
    with pytest.raises(Diverged, match="Start again with a 10x lower learning rate") as err:
        train_in(tmp_path / "div", huge)
    assert err.value.command == train_command(
        {**huge, "learning_rate": 1e5}, tmp_path / "div-lr100000"
    )
    assert _files(tmp_path / "div") <= {"checkpoint.npz"}


def test_command_settings_are_what_the_command_line_gives():
    s = settings.settings("digits", {**SMALL, "learning_rate": 3e-3, "reg": 0, "beta1": 0.9})
    got = command_settings(s)
    assert got["reg"] == 0.0 and isinstance(got["reg"], float) and "beta1" not in got
    assert got == {k: v for k, v in s.items() if k not in ("beta1", "reg")} | {"reg": 0.0}


@pytest.mark.slow
def test_sweep_in_writes_the_sweep_and_retrains_the_winner(tmp_path):
    s = settings.settings("digits", SMALL)
    trials, seeds = trial_space(s, lists={"learning_rate": [1e-3, 1e-2]})
    assert seeds == 1 and [t["learning_rate"] for t in trials] == [1e-3, 1e-2]
    lines = []
    line = sweep_in(tmp_path / "sweep", s, trials, retrain_best=0, log=lines.append)
    out = tmp_path / "sweep"
    assert {"checkpoint.npz", "results.csv", "results.json", "sweep.png"} <= _files(out)
    assert {"best_config.json", "models", "retrain"} <= _files(out)
    assert _files(out / "models") == {"trial-0.npz", "trial-1.npz"}
    assert line["trials"] == 2 and line["diverged"] == 0 and line["out_dir"] == str(out)
    assert line["results"] == str(out / "results.json")
    record = json.loads((out / "best_config.json").read_text())
    assert record["command"] == line["train_command"] and record["reproduces_lane"]
    assert lines[-1] == f"retrain the winner (trial {record['trial']}): {record['command']}"
    # the retrained winner is the lane again, bit for bit, with its test accuracy
    assert line["retrain_best_val_acc"] == line["best_val_acc"] and line["retrain_epochs"] == 2
    assert line["test_acc"] == evaluate_model(out / "retrain")["test_acc"]


def test_sweep_in_errors_are_exceptions(tmp_path):
    s = settings.settings("digits", SMALL)
    trials, _ = trial_space(s, lists={"learning_rate": [1e-3, 1e-2]})
    with pytest.raises(ValueError, match="--schedule pbt trains one seed per configuration"):
        sweep_in(tmp_path / "a", s, trials, options={"schedule": "pbt", "seeds": 2})
    with pytest.raises(ValueError, match="nothing to sweep"):
        trial_space(s)
    train_in(tmp_path / "run", {**s, "epochs": 1})
    with pytest.raises(ValueError, match="was not written by fc-jax sweep"):
        sweep_in(tmp_path / "run", resume=True)
    assert not (tmp_path / "a").exists()


def test_retrain_best_trains_the_printed_command_and_refuses_a_second_time(tmp_path):
    s = {**settings.settings("digits", SMALL), "data_dir": None}
    trials, _ = trial_space(s, lists={"weight_scale": [0.05, 0.1]})
    data = get_dataset("digits", None, 200, 100, 100)
    result = run_sweep(
        settings.config_of(s),
        data,
        trials,
        schedule=Schedule(num_epochs=2, batch_size=s["batch_size"], seed=s["seed"]),
    )
    run = retrain_best(result, s, tmp_path, epochs=1)
    assert run["epochs"] == 1 and run["out_dir"] == str(tmp_path / "retrain")
    saved = json.loads((tmp_path / "retrain" / "history.json").read_text())["settings"]
    assert saved["weight_scale"] == trials[result.best]["weight_scale"] and saved["epochs"] == 1
    with pytest.raises(ValueError, match="holds a checkpoint already"):
        retrain_best(result, s, tmp_path)

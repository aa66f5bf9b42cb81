"""Optuna over lanes: a real SQLite study in a temporary folder, on the bundled digits.

Each test that needs Optuna asks for the `optuna` fixture, which skips with the reason when the
extra is not installed; the missing-Optuna message is tested without it.
"""

import json
import math
import sys

import numpy as np
import pytest

from fc_jax import cli, models, train
from fc_jax.data.datasets import get_dataset
from fc_jax.runs import space

NEEDS = 'the Optuna bridge needs the optuna extra: pip install -e ".[optuna]"'
SPACE = {"learning_rate": space.log_uniform(1e-4, 1e-1), "reg": space.uniform(0.0, 1e-2)}
CFG = models.NetConfig((16,), input_dim=64, num_classes=10)


@pytest.fixture
def optuna():
    mod = pytest.importorskip("optuna", reason=NEEDS)
    mod.logging.set_verbosity(mod.logging.WARNING)
    return mod


@pytest.fixture(scope="module")
def digits():
    return get_dataset("digits")


def _study(optuna, tmp_path, name="s", pruner=None):
    from fc_jax.runs import optuna_bridge

    url = f"sqlite:///{tmp_path / 'study.db'}"
    return optuna_bridge.open_study(url, name, pruner=pruner or optuna.pruners.NopPruner())


def _optimize(study, data, n, k, num_epochs=3, **kw):
    from fc_jax.runs import optuna_bridge
    from fc_jax.runs.schedule import Schedule

    kw = {"sampler": "random", "schedule": Schedule(num_epochs=num_epochs), **kw}
    return optuna_bridge.optimize(CFG, data, study, SPACE, n, lanes=k, **kw)


@pytest.mark.slow
def test_batches_compile_once_and_tell_the_lanes_best(optuna, digits, tmp_path, monkeypatch):
    """5 trials in batches of 2: 3 batches, one trace of the epoch, told values = lanes' best."""
    traces = []
    real = train.scan_epoch

    def counting(*args, **kwargs):
        traces.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "scan_epoch", counting)
    batches = []
    study = _study(optuna, tmp_path)
    res = _optimize(study, digits, 5, 2, on_batch_end=lambda nums, r: batches.append((nums, r)))
    assert [nums for nums, _ in batches] == [[0, 1], [2, 3], [4]]
    assert len(traces) == 1
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 5
    lanes = {n: (r, j) for nums, r in batches for j, n in enumerate(nums)}
    for t in trials:
        r, j = lanes[t.number]
        assert t.value == pytest.approx(float(r.best_val_acc[j]), abs=0)
        assert t.params["learning_rate"] == pytest.approx(float(r.hparams.learning_rate[j]), 1e-6)
        vals = r.histories[j]["val_acc"]
        assert t.intermediate_values == {e + 1: v for e, v in enumerate(vals)}
        assert max(vals) == t.value
    assert list(res.trial_ids) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(res.best_val_acc, [t.value for t in trials])
    assert res.epochs.tolist() == [3] * 5


def test_a_pruner_stops_a_lane(optuna, digits, tmp_path):
    """A lane whose first epoch is below the threshold trains one epoch and is told PRUNED."""
    study = _study(optuna, tmp_path, pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    study.enqueue_trial({"learning_rate": 1e-4, "reg": 0.0})  # barely moves in one epoch
    study.enqueue_trial({"learning_rate": 3e-2, "reg": 0.0})
    res = _optimize(study, digits, 2, 2, num_epochs=4)
    slow, fast = study.get_trials()
    assert slow.state == optuna.trial.TrialState.PRUNED and list(slow.intermediate_values) == [1]
    assert slow.intermediate_values[1] < 0.5
    assert fast.state == optuna.trial.TrialState.COMPLETE and len(fast.intermediate_values) == 4
    assert res.epochs.tolist() == [1, 4] and res.stopped.tolist() == [True, False]


@pytest.mark.slow
def test_killed_study_resumes_to_the_uninterrupted_result(optuna, digits, tmp_path):
    """Interrupted in batch 2 after its first checkpoint: the rerun fails and re-asks that batch,
    continues its lanes from the checkpoint, and ends with the trials an uninterrupted run has."""
    (tmp_path / "ref").mkdir()
    ref_study = _study(optuna, tmp_path / "ref")
    ref = _optimize(ref_study, digits, 5, 2, num_epochs=2)

    class Killed(Exception):
        pass

    epochs = []

    def kill(line):
        epochs.extend([1] * line.startswith("(epoch"))
        if len(epochs) == 4:  # batch 2, epoch 2, before its checkpoint
            raise Killed

    out = tmp_path / "run"
    with pytest.raises(Killed):
        _optimize(_study(optuna, tmp_path), digits, 5, 2, num_epochs=2, out_dir=out, log=kill)
    lines = []
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    res = _optimize(study, digits, 5, 2, num_epochs=2, out_dir=out, log=lines.append)
    assert any("[2, 3] were interrupted" in x and "from the checkpoint" in x for x in lines)
    states = [t.state.name for t in study.get_trials()]
    assert states.count("COMPLETE") == 5 and states.count("FAIL") == 2
    assert [t.user_attrs.get("fc_jax_retry_of") for t in study.get_trials()][4:6] == [2, 3]
    np.testing.assert_array_equal(res.best_val_acc, ref.best_val_acc)
    np.testing.assert_array_equal(res.hparams.learning_rate, ref.hparams.learning_rate)
    assert [h["val_acc"] for h in res.histories] == [h["val_acc"] for h in ref.histories]


def test_space_maps_onto_optuna_distributions(optuna):
    from fc_jax.runs import optuna_bridge

    d = optuna_bridge.distributions(
        {
            "learning_rate": space.log_uniform(1e-4, 1e-2),
            "keep_prob": space.uniform(0.5, 1.0),
            "seed": space.choice([1, 2]),
        }
    )
    assert d["learning_rate"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert d["keep_prob"] == optuna.distributions.FloatDistribution(0.5, 1.0)
    assert d["seed"] == optuna.distributions.CategoricalDistribution((1, 2))
    with pytest.raises(ValueError, match="momentum"):
        optuna_bridge.check_space({"momentum": space.uniform(0.5, 1.0)}, {})


# ---------------------------------------------------------------------------------- command line
@pytest.mark.slow
def test_cli_sampler_end_to_end(optuna, tmp_path, capsys):
    out = tmp_path / "o"
    argv = [
        "sweep",
        "--dataset",
        "digits",
        "--hidden-dims",
        "16",
        "--epochs",
        "2",
        "--sampler",
        "tpe",
        "--trials",
        "3",
        "--lanes",
        "8",
        "--learning-rate-range",
        "1e-3",
        "1e-1",
        "--keep-prob",
        "1",
        "0.8",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        final["trials"] == 3
        and final["dashboard"] == f"optuna-dashboard sqlite:///{out / 'study.db'}"
    )
    study = optuna.load_study(study_name="fc-jax", storage=final["study"])
    assert len(study.get_trials()) == 3 and study.best_value == final["best_val_acc"]
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 4 and sorted(p.name for p in (out / "models").iterdir()) == [
        "trial-0.npz",
        "trial-1.npz",
        "trial-2.npz",
    ]
    assert cli.main(["eval", str(out / "models" / f"trial-{final['best_trial']}.npz")]) == 0


def test_cli_help_names_the_dashboard():
    (p,) = [
        a
        for a in cli.build_parser()._subparsers._group_actions[0].choices["sweep"]._actions
        if "--study" in a.option_strings
    ]
    assert "optuna-dashboard" in p.help


def test_cli_refuses_bad_optuna_input_before_creating_anything(optuna, tmp_path, capsys):
    (tmp_path / "grid.json").write_text('{"grid": {"learning_rate": [0.001, 0.01]}}')
    base = ["sweep", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "o")]
    lr = ["--learning-rate-range", "1e-4", "1e-2"]
    cases = [
        (["--sampler", "tpe", "--trials", "0", *lr], "--trials: expected an integer >= 1"),
        (["--sampler", "tpe", *lr], "--sampler needs --trials N"),
        (["--sampler", "tpe", "--trials", "2", "--spec", str(tmp_path / "grid.json")], "is a grid"),
        (["--trials", "4", *lr], "need --sampler"),
        (["--sampler", "tpe", "--trials", "2", "--random", "2", *lr], "--random N"),
        (["--sampler", "tpe", "--trials", "2", "--schedule", "halving", *lr], "--pruner"),
        (["--sampler", "tpe", "--trials", "2", "--study", "nowhere.db", *lr], "database URL"),
        (["--sampler", "tpe", "--trials", "2", "--momentum-range", "0.5", "1"], "momentum"),
        (["--sampler", "tpe", "--trials", "2"], "needs a space"),
    ]
    for extra, match in cases:
        assert cli.main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert match in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "o").exists()


def test_without_optuna_sampler_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    out = tmp_path / "o"
    argv = [
        "sweep",
        "--dataset",
        "digits",
        "--sampler",
        "tpe",
        "--trials",
        "2",
        "--learning-rate-range",
        "1e-4",
        "1e-2",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == 'error: --sampler needs Optuna: pip install -e ".[optuna]"\n'
    assert not out.exists()


def test_lanes_above_trials_are_clamped(optuna, digits, tmp_path):
    res = _optimize(_study(optuna, tmp_path), digits, 2, 64, num_epochs=1)
    assert len(res.trials) == 2 and not math.isnan(res.best_val_acc.max())


@pytest.mark.slow
def test_cli_interrupted_study_resumes(optuna, tmp_path, capsys, monkeypatch):
    """Ctrl-C in batch 2 (after a checkpoint): exit 130 naming --resume; --resume finishes N."""
    from fc_jax.storage import checkpoint

    real, calls = checkpoint.save_lanes, []

    def save_then_interrupt(*args, **kwargs):
        path = real(*args, **kwargs)
        calls.append(path)
        if len(calls) == 3:  # batch 1 has 2 epochs: this is batch 2's first checkpoint
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(checkpoint, "save_lanes", save_then_interrupt)
    out = tmp_path / "o"
    argv = [
        "sweep",
        "--dataset",
        "digits",
        "--hidden-dims",
        "16",
        "--epochs",
        "2",
        "--sampler",
        "random",
        "--trials",
        "5",
        "--lanes",
        "2",
        "--learning-rate-range",
        "1e-3",
        "1e-1",
        "--pruner",
        "none",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 130
    assert f"fc-jax sweep --resume {out}" in capsys.readouterr().err
    monkeypatch.setattr(checkpoint, "save_lanes", real)
    assert cli.main(["sweep", "--resume", str(out)]) == 0
    captured = capsys.readouterr()
    assert "from the checkpoint" in captured.out
    study = optuna.load_study(study_name="fc-jax", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.get_trials()]
    assert states.count("COMPLETE") == 5 and states.count("FAIL") == 2
    assert len((out / "results.csv").read_text().splitlines()) == 6

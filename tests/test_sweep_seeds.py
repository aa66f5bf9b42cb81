"""Seeds per configuration: lanes, mean and spread computed by hand, halving by configuration.

A configuration repeated over N seeds is N consecutive lanes; every report (table, results.csv,
results.json) gives its mean and sample standard deviation over the seeds, checked here against
numbers computed by hand from the per-lane results, and successive halving promotes whole
configurations ranked by the mean.
"""

import csv
import json
import shlex
import statistics
from types import SimpleNamespace

import numpy as np
import pytest

from fc_jax import cli, models
from fc_jax.data.datasets import synthetic
from fc_jax.report import sweeps
from fc_jax.runs import schedule, space, sweep
from fc_jax.runs.lanes import Lanes, promote

D, C = 6, 3


def _data(n=40, n_val=20, seed=0):
    X, y = synthetic(n + n_val, D, C, seed=seed, dtype=np.float64)
    return {"X_train": X[:n], "y_train": y[:n], "X_val": X[n:], "y_val": y[n:]}


CFG = dict(input_dim=D, num_classes=C, dtype="float64")
CONFIGS = [{"learning_rate": 3e-2, "weight_scale": 0.3}, {"learning_rate": 1e-3, "seed": 7}]


@pytest.mark.slow
def test_seeds_are_consecutive_lanes_and_mean_std_are_by_hand(x64, tmp_path):
    cfg = models.NetConfig((5,), **CFG)
    s = schedule.Schedule(num_epochs=2, batch_size=10, seed=4, independent_batches=True)
    res = sweep.run_sweep(cfg, _data(), CONFIGS, schedule=s._replace(seeds=3))
    assert [t["seed"] for t in res.trials] == [4, 5, 6, 7, 8, 9]
    assert res.groups.tolist() == [0, 0, 0, 1, 1, 1] and res.seeds == 3
    # lane 4 is configuration 1 with seed 8, trained alone
    alone = sweep.run_sweep(cfg, _data(), [{**CONFIGS[1], "seed": 8}], schedule=s)
    assert alone.best_val_acc[0] == res.best_val_acc[4]
    accs = res.best_val_acc.tolist()
    means = [sum(accs[0:3]) / 3, sum(accs[3:6]) / 3]
    stds = [statistics.stdev(accs[0:3]), statistics.stdev(accs[3:6])]
    np.testing.assert_allclose(res.config_mean, means, rtol=1e-12)
    np.testing.assert_allclose(res.config_std, stds, rtol=1e-12)
    best_c = int(np.argmax(means))
    assert res.best_configuration == best_c
    assert res.best == 3 * best_c + int(np.argmax(accs[3 * best_c : 3 * best_c + 3]))
    # the table: one row per configuration, ranked by the mean, with its std, min and max
    rows = [line.split() for line in sweeps.format_table(res).splitlines()[1:]]
    order = np.argsort(-np.asarray(means), kind="stable")
    assert [int(r[1]) for r in rows] == order.tolist()
    for r, c in zip(rows, order, strict=True):
        group = accs[3 * c : 3 * c + 3]
        assert r[-6:-2] == [
            f"{means[c]:.4f}",
            f"{stds[c]:.4f}",
            f"{min(group):.4f}",
            f"{max(group):.4f}",
        ]
    # results.csv: one row per configuration; results.json keeps every lane
    sweeps.write_results(res, tmp_path)
    with open(tmp_path / "results.csv") as f:
        got = list(csv.DictReader(f))
    assert [int(r["configuration"]) for r in got] == order.tolist()
    for r in got:
        c = int(r["configuration"])
        assert float(r["mean_best_val_acc"]) == pytest.approx(means[c], rel=1e-12)
        assert float(r["std_best_val_acc"]) == pytest.approx(stds[c], rel=1e-12)
        assert r["seeds"] == " ".join(str(4 + 3 * c + i) for i in range(3))
    summary = json.loads((tmp_path / "results.json").read_text())
    assert len(summary["trials"]) == 6 and summary["seeds"] == 3
    assert summary["best_configuration"] == best_c and summary["best_trial"] == res.best
    assert [c["configuration"] for c in summary["configurations"]] == order.tolist()
    assert sweeps.plot_sweep(res, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_a_lane_without_any_validation_accuracy_counts_as_zero():
    score = schedule.lane_scores([0.5, -1.0, 0.7, 0.3])
    assert score.tolist() == [0.5, 0.0, 0.7, 0.3]
    assert schedule.group_means(score, [0, 0, 1, 1]).tolist() == [0.25, 0.5]


def _lanes(best, epoch, budget, diverged=None):
    K = len(best)
    div = np.zeros(K, bool) if diverged is None else np.asarray(diverged, bool)
    return Lanes(
        ts=SimpleNamespace(diverged=div),
        epoch=np.asarray(epoch),
        budget=np.asarray(budget),
        history=[{}] * K,
        best_params=None,
        best_model_state=None,
        best_val_acc=np.asarray(best, float),
        best_epoch=np.ones(K, np.int64),
        compile_seconds=0.0,
        run_seconds=0.0,
    )


def test_halving_promotes_whole_configurations_by_their_mean():
    """The best single lane (0.95) sits in a configuration with a poor mean: it is not promoted;
    the configuration with the best mean goes on with all its seeds, a diverged one included."""
    sched = schedule.Schedule(num_epochs=9, halving=schedule.Halving(3, 1), seeds=2)
    best = [0.95, 0.10, 0.60, 0.62, 0.50, 0.55]  # means: 0.525, 0.61, 0.525
    lanes = _lanes(best, [1] * 6, [1] * 6)
    groups = schedule.lane_groups(6, 2)
    assert promote(lanes, sched, groups).budget.tolist() == [1, 1, 3, 3, 1, 1]
    assert promote(lanes, sched).budget.tolist() == [3, 1, 1, 3, 1, 1]  # lanes alone
    # a diverged seed counts with its best before diverging and is carried with its group
    lanes = _lanes(best, [1, 1, 1, 0, 1, 1], [1] * 6, diverged=[0, 0, 0, 1, 0, 0])
    assert promote(lanes, sched, groups).budget.tolist() == [1, 1, 3, 3, 1, 1]


@pytest.mark.slow
def test_halving_sweep_with_seeds_keeps_whole_groups(x64):
    cfg = models.NetConfig((5,), **CFG)
    trials = [{"learning_rate": float(lr)} for lr in np.geomspace(1e-3, 3e-1, 6)]
    s = schedule.Schedule(num_epochs=3, batch_size=10, seed=1, halving=schedule.Halving(3), seeds=2)
    res = sweep.run_sweep(cfg, _data(), trials, schedule=s, max_lanes=12)
    epochs = res.epochs.reshape(6, 2)
    assert (epochs[:, 0] == epochs[:, 1]).all()  # the seeds of a configuration stop together
    assert sorted(epochs[:, 0].tolist()) == [1, 1, 1, 1, 3, 3]
    after1 = np.array([h["val_acc"][0] for h in res.histories]).reshape(6, 2).mean(axis=1)
    kept = np.flatnonzero(epochs[:, 0] == 3)
    assert set(kept) == set(np.argsort(-after1, kind="stable")[:2])


def test_spec_seeds_and_bad_seeds(tmp_path):
    from fc_jax import settings
    from fc_jax.workdir.sweeping import trial_space

    s = settings.settings("digits", {})
    (tmp_path / "s.json").write_text(json.dumps({"grid": {"reg": [0.0, 0.5]}, "seeds": 3}))
    trials, seeds = trial_space(s, spec=tmp_path / "s.json")
    assert len(trials) == 2 and seeds == 3
    assert trial_space(s, lists={"reg": [0.0]}, seeds=2)[1] == 2
    with pytest.raises(ValueError, match="differs from the spec"):
        trial_space(s, spec=tmp_path / "s.json", seeds=2)
    (tmp_path / "b.json").write_text(json.dumps({"grid": {"reg": [0.0]}, "seeds": 0}))
    with pytest.raises(ValueError, match='"seeds" must be an integer >= 1'):
        trial_space(s, spec=tmp_path / "b.json")
    with pytest.raises(ValueError, match="seed must be an integer in"):
        top = settings.settings("digits", {"seed": space.MAX_SEED})
        trial_space(top, lists={"reg": [0.0]}, seeds=2)
    assert cli.main(["sweep", "--dataset", "digits", "--reg", "0", "--seeds", "0"]) == 2


# ------------------------------------------------------------------------ the winner, ready to use
@pytest.mark.parametrize(
    "extra, independent",
    [
        (["--learning-rate", "3e-3", "1e-2", "--beta1", "0.8", "0.9"], False),
        (["--learning-rate", "3e-3", "1e-2", "--seeds", "2", "--independent-batches"], True),
    ],
)
@pytest.mark.slow
def test_printed_command_retrains_the_winner_exactly(tmp_path, capsys, extra, independent):
    """`fc-jax train` with the printed command ends at the sweep lane's best validation accuracy
    bit for bit; `best_config.json` holds the same values, seed and command."""
    out = tmp_path / "sweep"
    argv = [
        "sweep",
        "--dataset",
        "digits",
        "--hidden-dims",
        "16",
        "--epochs",
        "2",
        "--num-training",
        "300",
        "--seed",
        "5",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    final = json.loads(lines[-1])
    (printed,) = [ln.split(": ", 1)[1] for ln in lines if ln.startswith("retrain the winner")]
    record = json.loads((out / "best_config.json").read_text())
    assert record["command"] == printed == final["train_command"]
    assert record["trial"] == final["best_trial"] and record["reproduces_lane"]
    assert (
        record["seed"] == final["best"]["seed"] and record["best_val_acc"] == final["best_val_acc"]
    )
    assert {k: v for k, v in final["best"].items() if k != "seed"} == record["values"]
    if independent:
        assert record["seed"] in (5, 6) and "mean_best_val_acc" in record
    words = shlex.split(printed)
    assert words[:2] == ["fc-jax", "train"] and f"--seed {record['seed']}" in printed
    assert cli.main(words[1:]) == 0
    retrained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert retrained["best_val_acc"] == record["best_val_acc"]  # exactly


def test_a_shared_batch_lane_of_another_seed_says_the_command_differs(tmp_path):
    from fc_jax import settings
    from fc_jax.workdir import winner as best

    res = _fake_seeds_result([0.5, 0.9, 0.4, 0.3])  # the winner: configuration 0, seed 1
    s = settings.settings("digits", {"seed": 0})
    opts = {"independent_batches": False, "seeds": 2}
    record = best.best_config(res, s, opts, tmp_path)
    assert record["seed"] == 1 and record["trial"] == 1 and not record["reproduces_lane"]
    assert "--independent-batches" in record["differences"][0]
    assert "--seed 1" in record["command"]
    assert best.best_config(res, s, {**opts, "independent_batches": True}, tmp_path)[
        "reproduces_lane"
    ]


def _fake_seeds_result(accs):
    K = len(accs)
    trials = [{"learning_rate": 1e-3 * (1 + k // 2), "seed": k % 2} for k in range(K)]
    cfg = models.NetConfig((128,), input_dim=64, num_classes=10)
    return sweep.SweepResult(
        config=cfg,
        update_rule="adam",
        trials=trials,
        hparams=None,
        history={},
        histories=[{}] * K,
        best_val_acc=np.asarray(accs),
        best_epoch=np.ones(K, int),
        epochs=np.ones(K, int),
        stopped=np.zeros(K, bool),
        diverged=np.zeros(K, bool),
        diverged_iteration=np.zeros(K, int),
        best_params={},
        best_model_state={},
        final_state=None,
        compile_seconds=0.0,
        run_seconds=0.0,
        devices=["cpu"],
        seeds=2,
    )


# ------------------------------------------------------------- would halving stop the winner?
@pytest.mark.parametrize("seeds", [1, 2])
@pytest.mark.slow
def test_halving_replay_matches_a_real_halving_sweep(x64, seeds):
    """The replay on a full sweep decides what a halving sweep of the same trials decided."""
    from fc_jax.report.halving import halving_line, replay_halving

    cfg = models.NetConfig((5,), **CFG)
    trials = [{"learning_rate": float(lr)} for lr in np.geomspace(1e-3, 3e-1, 6)]
    s = schedule.Schedule(num_epochs=3, batch_size=10, seed=1, seeds=seeds)
    full = sweep.run_sweep(cfg, _data(), trials, schedule=s, max_lanes=12)
    s = s._replace(halving=schedule.Halving(eta=3))
    half = sweep.run_sweep(cfg, _data(), trials, schedule=s, max_lanes=12)
    replay = replay_halving(full, eta=3, min_epochs=1)
    went_on = sorted(set(half.groups[half.epochs == 3].tolist()))
    assert replay["rungs"] == [1, 3] and replay["kept"] == [went_on]
    kept = full.best_configuration in went_on
    assert (replay["stopped_at"] is None) == kept
    assert ("kept the winner" in halving_line(full)) == kept


def test_halving_replay_names_the_rung_that_stops_a_slow_starter():
    from fc_jax.report.halving import halving_line

    # trial 0 starts worst and ends best: halving (eta 3, rungs 1, 3, 9) stops it after epoch 1
    val = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.99]] + [[0.5] * 9] * 5)
    res = _fake_seeds_result(val.max(axis=1))._replace(
        history={"val_acc": val},
        seeds=1,
        epochs=np.full(6, 9),
        trials=[{"seed": 0}] * 6,
        diverged=np.zeros(6, bool),
    )
    line = halving_line(res)
    assert "stopped the winner (trial 0) after epoch 1: ranked 6 of 6, 2 went on" in line

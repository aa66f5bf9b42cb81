"""Sweeps: every lane of the vmapped program equals the same configuration trained alone.

The oracle for a lane is the single-model engine (`train.make_epoch` with the same key and indices)
or the host loop `fit` run alone; sharding, chunking and a diverging neighbour must not change a
lane. Nets are tiny and runs are a few steps, in float64.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from fc_jax import cli, models, settings, train
from fc_jax.data.datasets import synthetic
from fc_jax.hparams import HParams, make_hparams
from fc_jax.optim import get_optimizer
from fc_jax.report import sweeps
from fc_jax.runs import fit, placement, schedule, space, sweep
from fc_jax.runs.loop import Callbacks
from fc_jax.workdir.sweeping import trial_space

D, C = 6, 3


def _data(n=40, n_val=20, seed=0):
    X, y = synthetic(n + n_val, D, C, seed=seed, dtype=np.float64)
    return {"X_train": X[:n], "y_train": y[:n], "X_val": X[n:], "y_val": y[n:]}


def _lane(tree, k):
    return jax.tree.map(lambda a: a[k], tree)


def _max_diff(a, b):
    return max(np.max(np.abs(np.asarray(x) - np.asarray(y))) for x, y in zip(a, b, strict=True))


TRIALS = [
    {"learning_rate": 1e-2, "weight_scale": 0.3, "reg": 0.0, "lr_decay": 0.9, "seed": 3},
    {"learning_rate": 3e-2, "weight_scale": 0.1, "reg": 1e-2, "lr_decay": 0.5, "seed": 7},
    {"learning_rate": 5e-3, "weight_scale": 0.2, "reg": 1e-1, "lr_decay": 1.0, "seed": 11},
]


# The affine bias before a batchnorm has a zero true gradient, so its updates are rounding noise;
# rmsprop and adam scale noise up to learning-rate-sized steps, so batchnorm runs with momentum.
@pytest.mark.parametrize(
    "norm, keep, rule, independent",
    [
        (None, 1.0, "adam", False),
        (None, 0.6, "rmsprop", False),
        (None, 0.6, "rmsprop", True),
        ("batchnorm", 0.8, "sgd_momentum", False),
        ("batchnorm", 0.8, "sgd_momentum", True),
        ("layernorm", 1.0, "sgd", False),
    ],
)
@pytest.mark.slow
def test_each_lane_equals_make_epoch_alone(x64, norm, keep, rule, independent):
    """Params after 2 epochs and every loss of each lane match `train.make_epoch` on that lane."""
    cfg = models.NetConfig(
        (5, 4), input_dim=D, num_classes=C, normalization=norm, dropout=keep < 1, dtype="float64"
    )
    keeps = (keep, 0.9 * keep, 0.95 * keep)
    trials = (
        [{**t, "keep_prob": p} for t, p in zip(TRIALS, keeps, strict=True)] if keep < 1 else TRIALS
    )
    data, K, steps, batch = _data(), len(trials), 4, 8
    hp = space.stack_hparams(trials, rule, jnp.float64, **({"keep_prob": keep} if keep < 1 else {}))
    seeds = space.trial_seeds(trials)
    fns = placement.make_lane_fns(
        cfg, get_optimizer(rule), Mesh(np.array(jax.devices()[:1]), ("trials",)), independent
    )
    X, y = jnp.asarray(data["X_train"]), jnp.asarray(data["y_train"], jnp.int32)
    ts = fns.init(seeds, hp.weight_scale)
    opt, epoch_fn = get_optimizer(rule), train.make_epoch(cfg, get_optimizer(rule))
    alone = [
        train.init_train_state(jax.random.key(int(s)), cfg, opt, hp.weight_scale[k])
        for k, s in enumerate(seeds)
    ]
    rng = np.random.default_rng(0)
    for epoch in range(2):
        lrs = [
            schedule.epoch_learning_rate(float(a), float(d), epoch)
            for a, d in zip(hp.learning_rate, hp.lr_decay, strict=True)
        ]
        hp_e = hp._replace(learning_rate=jnp.asarray(lrs))
        idx = rng.integers(0, len(X), (K, steps, batch) if independent else (steps, batch)).astype(
            np.int32
        )
        ts, losses = fns.epoch(ts, X, y, jnp.asarray(idx), hp_e)
        for k in range(K):
            alone[k], loss_k = epoch_fn(
                alone[k], X, y, jnp.asarray(idx[k] if independent else idx), _lane(hp_e, k)
            )
            np.testing.assert_allclose(losses[k], loss_k, rtol=1e-10, atol=0)
    for k in range(K):
        lane = _lane(ts, k)
        assert int(lane.step) == int(alone[k].step) == 2 * steps
        for name in alone[k].params:
            np.testing.assert_allclose(
                lane.params[name], alone[k].params[name], rtol=1e-10, atol=1e-12
            )
        for name in alone[k].model_state:
            np.testing.assert_allclose(
                lane.model_state[name], alone[k].model_state[name], rtol=1e-10, atol=1e-12
            )
    # the lanes really differ (a broadcast bug would make them equal)
    assert _max_diff([ts.params["W1"][0]], [ts.params["W1"][1]]) > 1e-3


@pytest.mark.parametrize("independent", [False, True])
@pytest.mark.slow
def test_run_sweep_lane_equals_fit(x64, independent):
    """The host loop too: lane k of `run_sweep` ends where `fit` with its hparams and seed ends."""
    cfg = models.NetConfig((5,), input_dim=D, num_classes=C, dropout=True, dtype="float64")
    data = _data(n=60)
    trials = [
        {"learning_rate": 2e-2, "lr_decay": 0.8, "keep_prob": 0.7},
        {"learning_rate": 5e-3, "weight_scale": 0.3, "keep_prob": 0.9},
    ]
    if independent:
        trials = [{**t, "seed": s} for t, s in zip(trials, (5, 9), strict=True)]
    s = schedule.Schedule(num_epochs=2, batch_size=10, seed=4, num_train_samples=30)
    res = sweep.run_sweep(cfg, data, trials, schedule=s._replace(independent_batches=independent))
    for k, t in enumerate(trials):
        hp = make_hparams(
            "adam", jnp.float64, **{"keep_prob": 0.7, **{n: v for n, v in t.items() if n != "seed"}}
        )
        run = fit.fit(cfg, data, hparams=hp, schedule=s._replace(seed=t.get("seed", 4)))
        for name in run.ts.params:
            np.testing.assert_allclose(
                res.final_state.params[name][k], run.ts.params[name], rtol=1e-10, atol=1e-12
            )
        np.testing.assert_allclose(res.history["loss"][k], run.history["loss"], rtol=1e-10)
        np.testing.assert_allclose(res.history["lr"][k], run.history["lr"], rtol=1e-15)
        np.testing.assert_array_equal(res.history["val_acc"][k], run.history["val_acc"])
        if not independent:  # the train-accuracy subsample is drawn from the sweep's seed
            np.testing.assert_array_equal(res.history["train_acc"][k], run.history["train_acc"])
        assert res.best_val_acc[k] == run.best_val_acc
        for name in run.best_params:
            np.testing.assert_allclose(
                res.best_params[name][k], run.best_params[name], rtol=1e-10, atol=1e-12
            )


SGD = dict(
    optimizer="sgd",
    schedule=schedule.Schedule(num_epochs=2, batch_size=10, seed=1, num_train_samples=None),
)
GOOD = [{"learning_rate": 1e-2, "seed": 2}, {"learning_rate": 5e-2, "weight_scale": 0.2}]


def _check_same(a, b, lanes_a, lanes_b, exact):
    check = (
        np.testing.assert_array_equal
        if exact
        else (lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-13))
    )
    for name in a.final_state.params:
        check(a.final_state.params[name][lanes_a], b.final_state.params[name][lanes_b])
        check(a.best_params[name][lanes_a], b.best_params[name][lanes_b])
    for name in ("loss", "val_acc", "train_acc", "lr"):
        check(a.history[name][lanes_a], b.history[name][lanes_b])
    check(a.best_val_acc[lanes_a], b.best_val_acc[lanes_b])


@pytest.mark.slow
def test_diverging_lane_is_frozen_and_isolated(x64):
    cfg = models.NetConfig((5,), input_dim=D, num_classes=C, dtype="float64")
    data = _data()
    bad = {"learning_rate": 1e200}
    with_bad = sweep.run_sweep(cfg, data, [GOOD[0], bad, GOOD[1]], **SGD)
    # Bit for bit against the same program with a benign lane in its place (a different K changes
    # XLA's matmul tiling, hence the last bits), and to 1e-10 against the sweep without it.
    benign = sweep.run_sweep(cfg, data, [GOOD[0], {"learning_rate": 1e-3}, GOOD[1]], **SGD)
    without = sweep.run_sweep(cfg, data, GOOD, **SGD)
    assert with_bad.diverged.tolist() == [False, True, False]
    assert not without.diverged.any() and not benign.diverged.any()
    _check_same(with_bad, benign, [0, 2], [0, 2], exact=True)
    _check_same(with_bad, without, [0, 2], [0, 1], exact=False)
    it = with_bad.diverged_iteration[1]
    assert it >= 1 and np.isfinite(with_bad.history["loss"][1][: it - 1]).all()
    assert np.isnan(with_bad.history["loss"][1][it - 1 :]).all()
    assert np.isnan(with_bad.history["val_acc"][1]).all()  # diverged within the first epoch
    assert with_bad.best_epoch[1] == 0 and with_bad.best_val_acc[1] == -1.0
    # frozen: the diverged lane's params are still finite (the non-finite update was dropped)
    assert all(np.isfinite(v[1]).all() for v in with_bad.final_state.params.values())
    assert with_bad.best != 1
    records = sweeps.result_records(with_bad)
    assert records[1]["diverged"] and records[1]["history"]["val_acc"] == [None]  # it stopped
    json.dumps(records, allow_nan=False)  # NaN became None


@pytest.mark.slow
def test_chunked_run_equals_unchunked(x64):
    cfg = models.NetConfig(
        (5,), input_dim=D, num_classes=C, normalization="batchnorm", dtype="float64"
    )
    trials = space.grid({"learning_rate": [1e-2, 3e-2, 1e-1], "weight_scale": [0.1, 0.3]})[:5]
    data = _data()
    whole = sweep.run_sweep(cfg, data, trials, **SGD)
    for max_lanes in (2, 3):  # 3 chunks (the last one padded), 2 chunks
        chunked = sweep.run_sweep(cfg, data, trials, max_lanes=max_lanes, **SGD)
        _check_same(chunked, whole, slice(None), slice(None), exact=False)
        assert chunked.final_state.params["W1"].shape[0] == 5


_SHARDED = textwrap.dedent(
    """
    import sys, jax, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    from fc_jax import models
    from fc_jax.runs import placement
    from fc_jax.runs import space
    from fc_jax.runs import sweep
    from fc_jax.runs.schedule import Schedule
    from fc_jax.data.datasets import synthetic
    from fc_jax.optim import get_optimizer
    assert len(jax.devices()) == 8, jax.devices()
    with jax.enable_x64(True):
        X, y = synthetic(60, 6, 3, seed=0, dtype=np.float64)
        data = {"X_train": X[:40], "y_train": y[:40], "X_val": X[40:], "y_val": y[40:]}
        cfg = models.NetConfig((5,), input_dim=6, num_classes=3, dropout=True, dtype="float64")
        trials = space.grid({"learning_rate": [1e-2, 3e-2, 1e-1, 2e-2, 5e-3], "seed": [0, 1],
                             "keep_prob": [0.8]})[:K]
        s = Schedule(num_epochs=2, batch_size=10, independent_batches=True)
        res = sweep.run_sweep(cfg, data, trials, schedule=s, max_lanes=MAX_LANES)
        assert len(res.devices) == 8
        fns = placement.make_lane_fns(cfg, get_optimizer("adam"),
                                      Mesh(np.array(jax.devices()), ("trials",)), True)
        ts = fns.init(np.arange(8, dtype=np.int32), np.full(8, 0.1))
        assert ts.params["W1"].sharding.spec == P("trials")
        assert len({s.device for s in ts.params["W1"].addressable_shards}) == 8
    np.savez(sys.argv[1], *[res.final_state.params[k] for k in sorted(res.final_state.params)],
             res.history["loss"], res.history["val_acc"], res.best_val_acc)
    """
)


@pytest.mark.parametrize("K, max_lanes", [(5, "None"), (10, "3")])
@pytest.mark.slow
def test_sharded_over_8_cpu_devices_equals_unsharded(x64, tmp_path, K, max_lanes):
    """K=5 pads to 8 lanes; K=10 with max_lanes=3 runs 2 chunks of 8 (the second padded)."""
    script = _SHARDED.replace("MAX_LANES", max_lanes).replace("[:K]", f"[:{K}]")
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    out = tmp_path / "sharded.npz"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    X, y = synthetic(60, 6, 3, seed=0, dtype=np.float64)
    data = {"X_train": X[:40], "y_train": y[:40], "X_val": X[40:], "y_val": y[40:]}
    cfg = models.NetConfig((5,), input_dim=6, num_classes=3, dropout=True, dtype="float64")
    trials = space.grid(
        {"learning_rate": [1e-2, 3e-2, 1e-1, 2e-2, 5e-3], "seed": [0, 1], "keep_prob": [0.8]}
    )[:K]
    s = schedule.Schedule(num_epochs=2, batch_size=10, independent_batches=True)
    res = sweep.run_sweep(cfg, data, trials, schedule=s)
    assert len(res.devices) == 1
    ours = [res.final_state.params[k] for k in sorted(res.final_state.params)]
    ours += [res.history["loss"], res.history["val_acc"], res.best_val_acc]
    with np.load(out) as f:
        theirs = [f[f"arr_{i}"] for i in range(len(ours))]
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and a.shape[0] == K
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------------------------ search space
def test_grid_is_the_cartesian_product():
    trials = space.grid({"learning_rate": [1e-3, 1e-2], "reg": [0.0, 0.1, 0.2], "seed": [4]})
    assert len(trials) == 6
    assert trials[1] == {"learning_rate": 1e-3, "reg": 0.1, "seed": 4}  # last name varies fastest
    assert {(t["learning_rate"], t["reg"]) for t in trials} == {
        (a, b) for a in (1e-3, 1e-2) for b in (0.0, 0.1, 0.2)
    }


def test_random_search_draws_within_ranges_reproducibly():
    sp = {
        "learning_rate": space.log_uniform(1e-4, 1e-2),
        "reg": space.uniform(0.0, 0.5),
        "keep_prob": space.choice([0.5, 0.75]),
    }
    a, b = space.random(200, sp, seed=3), space.random(200, dict(reversed(sp.items())), seed=3)
    assert [sorted(t.items()) for t in a] == [sorted(t.items()) for t in b]
    lr = np.array([t["learning_rate"] for t in a])
    assert lr.min() >= 1e-4 and lr.max() <= 1e-2
    assert (
        0.3 < np.mean(np.log10(lr) < -3) < 0.7
    )  # log-uniform: half the mass below the log-midpoint
    assert {t["keep_prob"] for t in a} == {0.5, 0.75}
    assert all(0.0 <= t["reg"] <= 0.5 for t in a)
    assert space.random(5, sp, seed=4) != space.random(5, sp, seed=3)


def test_json_spec_matches_the_python_api(tmp_path):
    (tmp_path / "g.json").write_text(
        json.dumps({"grid": {"learning_rate": [1e-3, 1e-2], "weight_scale": [0.1]}})
    )
    assert space.load_spec(tmp_path / "g.json") == space.grid(
        {"learning_rate": [1e-3, 1e-2], "weight_scale": [0.1]}
    )
    spec = {
        "random": {
            "n": 7,
            "seed": 5,
            "params": {
                "learning_rate": {"log_uniform": [1e-4, 1e-2]},
                "beta1": {"uniform": [0.8, 0.95]},
                "seed": {"choice": [0, 1]},
            },
        }
    }
    (tmp_path / "r.json").write_text(json.dumps(spec))
    expected = space.random(
        7,
        {
            "learning_rate": space.log_uniform(1e-4, 1e-2),
            "beta1": space.uniform(0.8, 0.95),
            "seed": space.choice([0, 1]),
        },
        seed=5,
    )
    assert space.load_spec(tmp_path / "r.json") == expected


def test_stack_hparams_fills_defaults_per_lane(x64):
    trials = [
        {"learning_rate": 0.5, "seed": 3},
        {"reg": 0.25},
        {"momentum": 0.5, "weight_scale": 2.0},
    ]
    hp = space.stack_hparams(trials, "sgd_momentum", jnp.float64)
    default = make_hparams("sgd_momentum", jnp.float64)
    for f in HParams._fields:
        assert getattr(hp, f).shape == (3,) and getattr(hp, f).dtype == jnp.float64
        for k, t in enumerate(trials):
            assert float(getattr(hp, f)[k]) == t.get(f, float(getattr(default, f)))
    assert space.trial_seeds(trials, default=9).tolist() == [3, 9, 9]


BAD_SPACES = [
    (lambda: space.grid({}), "non-empty"),
    (lambda: space.grid({"learning_rate": []}), "learning_rate"),
    (lambda: space.grid({"learning_rate": 1e-3}), "list"),
    (lambda: space.grid({"learning_rate": [-1]}), "learning_rate"),
    (lambda: space.grid({"keep_prob": [1.5]}), "keep_prob"),
    (lambda: space.grid({"lerning_rate": [1e-3]}), "lerning_rate"),
    (lambda: space.grid({"learning_rate": ["big"]}), "learning_rate"),
    (lambda: space.grid({"seed": [1.5]}), "seed"),
    (lambda: space.grid({"seed": [-1]}), "seed"),
    (lambda: space.random(0, {"reg": space.uniform(0, 1)}), "n >= 1"),
    (lambda: space.random(3, {"reg": [0, 1]}), "distribution"),
    (lambda: space.random(3, {"reg": space.uniform(-1, 1)}), "reg"),
    (lambda: space.log_uniform(0.0, 1.0), "lo > 0"),
    (lambda: space.uniform(2.0, 1.0), "lo <= hi"),
    (lambda: space.choice([]), "non-empty"),
    (lambda: space.from_spec({"grid": {"reg": [0.1]}, "random": {}}), "spec"),
    (lambda: space.from_spec({"random": {"n": 3, "params": {"reg": {"normal": [0, 1]}}}}), "reg"),
    (lambda: space.from_spec({"random": {"n": 3, "params": {"reg": {"uniform": [0]}}}}), "lo, hi"),
    (lambda: space.check_trials([]), "non-empty"),
]


@pytest.mark.parametrize("make, match", BAD_SPACES)
def test_bad_spaces_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_malformed_json_spec_names_the_file(tmp_path):
    (tmp_path / "bad.json").write_text('{"grid": {"learning_rate": [1e-3,]}}')
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        space.load_spec(tmp_path / "bad.json")
    (tmp_path / "neg.json").write_text('{"grid": {"learning_rate": [-1]}}')
    with pytest.raises(ValueError, match="neg.json.*learning_rate"):
        space.load_spec(tmp_path / "neg.json")


@pytest.fixture
def no_compile(monkeypatch):
    """Fail the test if anything is traced for compilation."""

    def boom(*a, **k):
        raise AssertionError("compiled before the input was checked")

    monkeypatch.setattr(placement, "make_lane_fns", boom)
    monkeypatch.setattr(train, "make_epoch", boom)


@pytest.mark.parametrize(
    "trials, match",
    [
        ([], "non-empty"),
        ([{"learning_rate": -1}], "learning_rate"),
        ([{"keep_prob": 1.5}], "keep_prob"),
        ([{"lerning_rate": 1e-3}], "lerning_rate"),
        ([{"learning_rate": 1e-2}], "batch_size 100 is larger"),
    ],
)
def test_run_sweep_checks_before_compiling(no_compile, trials, match):
    cfg = models.NetConfig((5,), input_dim=D, num_classes=C)
    with pytest.raises(ValueError, match=match):
        sweep.run_sweep(cfg, _data(), trials)


# ---------------------------------------------------------------------------------- command line
def test_cli_rejects_bad_spaces_before_compiling(no_compile, tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{grid: }")
    base = ["sweep", "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "o")]
    cases = [
        (["--learning-rate", "-1"], "learning_rate"),
        (["--keep-prob", "1.5"], "keep_prob"),
        (["--spec", str(tmp_path / "bad.json")], "not valid JSON"),
        ([], "nothing to sweep"),
        (["--learning-rate-range", "1e-4", "1e-2"], "--random"),
        (["--random", "3", "--learning-rate-range", "1e-2", "1e-4"], "lo <= hi"),
        (
            ["--learning-rate", "1e-3", "1e-2", "--schedule", "halving", "--eta", "1"],
            "argument --eta: expected an integer >= 2",
        ),
    ]
    for extra, match in cases:
        assert cli.main(base + extra) == 2, extra
        assert match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_retrain_best_help_says_it_trains_from_scratch():
    (p,) = [
        a
        for a in cli.build_parser()._subparsers._group_actions[0].choices["sweep"]._actions
        if a.dest == "retrain_best"
    ]
    assert "from scratch for EPOCHS epochs" in p.help and "more" not in p.help


def test_cli_random_and_spec_spaces(tmp_path):
    s = {**settings.DEFAULTS["digits"], "dataset": "digits"}
    trials, _ = trial_space(
        s, random=6, ranges={"learning_rate": (1e-4, 1e-2)}, lists={"reg": [0, 0.1]}
    )
    assert len(trials) == 6 and all(
        1e-4 <= t["learning_rate"] <= 1e-2 and t["reg"] in (0, 0.1) for t in trials
    )
    assert all(
        t["weight_scale"] == s["weight_scale"] for t in trials
    )  # unswept: the dataset default
    (tmp_path / "s.json").write_text(
        json.dumps({"grid": {"reg": [0.0, 0.5], "seeds_are_not": [1]}})
    )
    with pytest.raises(ValueError, match="seeds_are_not"):
        trial_space(s, spec=str(tmp_path / "s.json"))
    with pytest.raises(ValueError, match="--spec"):
        trial_space(s, spec=str(tmp_path / "s.json"), lists={"reg": [0.1]})


def test_probability_ranges_are_uniform_scales_log_uniform():
    """One table decides; `--keep-prob-range 0.5 1` is uniform, not crowded near 0.5."""
    assert set(space.RANGE_SAMPLING) == set(HParams._fields)
    for name in ("keep_prob", "lr_decay", "momentum", "decay_rate", "beta1", "beta2"):
        assert space.RANGE_SAMPLING[name] == "uniform", name
    for name in ("learning_rate", "weight_scale", "reg", "epsilon"):
        assert space.RANGE_SAMPLING[name] == "log-uniform", name
    s = {**settings.DEFAULTS["digits"], "dataset": "digits"}
    ranges = {"learning_rate": (1e-4, 1e-2), "keep_prob": (0.5, 1), "beta1": (0.8, 0.99)}
    trials, _ = trial_space(s, random=400, random_seed=5, ranges=ranges)
    want = space.random(
        400,
        {
            "learning_rate": space.log_uniform(1e-4, 1e-2),
            "keep_prob": space.uniform(0.5, 1),
            "beta1": space.uniform(0.8, 0.99),
        },
        seed=5,
    )
    assert [{k: t[k] for k in w} for t, w in zip(trials, want, strict=True)] == want
    keep = np.array([t["keep_prob"] for t in trials])
    assert 0.4 < np.mean(keep < 0.75) < 0.6  # log-uniform would put 58% below the midpoint
    helps = {
        a.dest: a.help
        for a in cli.build_parser()._subparsers._group_actions[0].choices["sweep"]._actions
    }
    assert "keep_prob uniform in [LO, HI]" in helps["keep_prob_range"]
    assert "learning_rate log-uniform in [LO, HI]" in helps["learning_rate_range"]


@pytest.mark.slow
def test_cli_sweep_end_to_end_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    argv = (
        "sweep --dataset digits --hidden-dims 16 --learning-rate 1e-3 1e-2 --weight-scale 0.05 0.1"
    )
    argv = [*argv.split(), "--epochs", "2", "--num-training", "300", "--out", str(out)]
    assert cli.main([*argv, "--retrain-best", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    final = json.loads(lines[-1])
    assert [ln for ln in lines if ln.startswith("{")] == [lines[-1]]  # one JSON line
    # every trial's best params and the retrained winner are models `fc-jax eval` reads
    assert sorted(p.name for p in (out / "models").iterdir()) == [
        f"trial-{k}.npz" for k in range(4)
    ]
    assert cli.main(["eval", str(out / "retrain")]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["test_acc"] == pytest.approx(final["test_acc"], abs=1e-6)
    assert cli.main(["eval", str(out / "models" / f"trial-{final['best_trial']}.npz")]) == 0
    capsys.readouterr()
    assert sum(line.startswith("(epoch") for line in lines) == 2  # progress per epoch
    with open(out / "results.csv") as f:
        rows = list(__import__("csv").DictReader(f))
    assert len(rows) == 4 and [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    accs = [float(r["best_val_acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True)
    assert {(float(r["learning_rate"]), float(r["weight_scale"])) for r in rows} == {
        (a, b) for a in (1e-3, 1e-2) for b in (0.05, 0.1)
    }
    summary = json.loads((out / "results.json").read_text())
    assert len(summary["trials"]) == 4 and summary["swept"] == ["learning_rate", "weight_scale"]
    assert all(
        len(t["history"]["val_acc"]) == 2 and len(t["history"]["loss"]) == 2 * (300 // 64)
        for t in summary["trials"]
    )
    assert (
        final["trials"] == 4 and final["best_val_acc"] == max(accs) and final["out_dir"] == str(out)
    )
    assert max(accs) > 0.5  # digits is easy: 2 epochs of the best setting learn something
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fake_result(lrs, ws, accs, diverged):
    K = len(lrs)
    trials = [
        {"learning_rate": a, "weight_scale": b, "seed": 0} for a, b in zip(lrs, ws, strict=True)
    ]
    hp = jax.tree.map(np.asarray, space.stack_hparams(trials, "adam"))
    acc, div = np.asarray(accs, float), np.asarray(diverged, bool)
    history = {"loss": np.ones((K, 3)), "lr": np.ones((K, 1))}
    history.update(train_acc=acc[:, None], val_acc=np.where(div, np.nan, acc)[:, None])
    cfg = models.NetConfig((4,), input_dim=D, num_classes=C)
    best, epoch, it = np.where(div, -1.0, acc), np.where(div, 0, 1), np.where(div, 2, 0)
    return sweep.SweepResult(
        config=cfg,
        update_rule="adam",
        trials=trials,
        hparams=hp,
        history=history,
        histories=[{k: list(v[i]) for k, v in history.items()} for i in range(K)],
        best_val_acc=best,
        best_epoch=epoch,
        epochs=np.ones(K, int),
        stopped=np.zeros(K, bool),
        diverged=div,
        diverged_iteration=it,
        best_params={},
        best_model_state={},
        final_state=None,
        compile_seconds=0.0,
        run_seconds=0.0,
        devices=["cpu"],
    )


@pytest.mark.parametrize("grid", [True, False])
def test_table_files_and_plot(tmp_path, grid):
    if grid:
        res = _fake_result(
            [1e-3, 1e-3, 1e-2, 1e-2], [0.1, 0.2, 0.1, 0.2], [0.5, 0.7, 0.6, 0.1], [0, 0, 0, 1]
        )
    else:
        res = _fake_result([1e-3, 2e-3, 5e-3], [0.1, 0.3, 0.2], [0.2, 0.9, 0.4], [0, 0, 1])
    table = sweeps.format_table(res).splitlines()
    ranked = [int(line.split()[1]) for line in table[1:]]
    assert ranked == ([1, 2, 0, 3] if grid else [1, 0, 2])
    assert "at it 2" in table[-1]
    paths = sweeps.write_results(res, tmp_path, {"note": "x"})
    summary = json.loads(paths["json"].read_text())
    assert summary["note"] == "x" and summary["best_trial"] == ranked[0]
    assert sweeps.plot_sweep(res, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------ one run loop, halving, resume
@pytest.mark.slow
def test_one_lane_sweep_is_fit_bit_for_bit(x64):
    """`fit` is the run loop with K = 1, so a one-lane sweep is not close to it: it is it."""
    cfg = models.NetConfig(
        (5, 4), input_dim=D, num_classes=C, normalization="batchnorm", dropout=True, dtype="float64"
    )
    trial = {"learning_rate": 2e-2, "lr_decay": 0.8, "keep_prob": 0.7, "weight_scale": 0.2}
    kw = dict(
        schedule=schedule.Schedule(num_epochs=3, batch_size=10, seed=5, num_train_samples=30),
        optimizer="rmsprop",
    )
    res = sweep.run_sweep(cfg, _data(n=60), [trial], **kw)
    hp = make_hparams("rmsprop", jnp.float64, **trial)
    run = fit.fit(cfg, _data(n=60), hparams=hp, **kw)
    for name in run.ts.params:
        assert (
            res.final_state.params[name][0].tobytes() == np.asarray(run.ts.params[name]).tobytes()
        )
        assert res.best_params[name][0].tobytes() == np.asarray(run.best_params[name]).tobytes()
    assert res.histories[0]["loss"] == run.history["loss"]
    assert res.histories[0]["val_acc"] == run.history["val_acc"]
    assert res.best_val_acc[0] == run.best_val_acc


@pytest.mark.slow
def test_keep_prob_one_in_a_sweep_means_no_dropout(x64):
    """Mixed keep probabilities in one sweep: the lane at 1.0 is the net without dropout."""
    cfg = models.NetConfig((5,), input_dim=D, num_classes=C, dropout=True, dtype="float64")
    trials = [{"learning_rate": 2e-2, "keep_prob": 1.0}, {"learning_rate": 2e-2, "keep_prob": 0.5}]
    s = schedule.Schedule(num_epochs=2, batch_size=10, seed=2)
    res = sweep.run_sweep(cfg, _data(), trials, schedule=s)
    plain = models.NetConfig((5,), input_dim=D, num_classes=C, dtype="float64")
    run = fit.fit(
        plain, _data(), hparams=make_hparams("adam", jnp.float64, learning_rate=2e-2), schedule=s
    )
    for name in run.ts.params:
        np.testing.assert_allclose(res.final_state.params[name][0], run.ts.params[name], rtol=1e-10)
    assert not np.allclose(res.final_state.params["W1"][1], run.ts.params["W1"])


HALVING_TRIALS = [{"learning_rate": float(lr)} for lr in np.geomspace(1e-3, 3e-1, 9)]


@pytest.mark.slow
def test_successive_halving_keeps_the_best_and_continues_them(x64):
    cfg = models.NetConfig((5,), input_dim=D, num_classes=C, dtype="float64")
    s = schedule.Schedule(num_epochs=9, batch_size=10, seed=1)
    full = sweep.run_sweep(cfg, _data(), HALVING_TRIALS, schedule=s, max_lanes=9)
    s = s._replace(halving=schedule.Halving(eta=3))
    half = sweep.run_sweep(cfg, _data(), HALVING_TRIALS, schedule=s, max_lanes=9)
    assert half.rungs == (1, 3, 9) and half.schedule == "halving"
    assert sorted(half.epochs.tolist()) == [1] * 6 + [3] * 2 + [9]
    assert half.lane_epochs == 9 + 2 * 3 + 6 == 21 and full.lane_epochs == 81
    assert half.stopped.sum() == 8 and not full.stopped.any()
    # rung 1 promotes the 3 best by validation accuracy after one epoch; rung 2 the best of those
    after1 = np.array([h["val_acc"][0] for h in full.histories])
    promoted = np.flatnonzero(half.epochs >= 3)
    assert set(promoted) == set(np.argsort(-after1, kind="stable")[:3])
    for k in range(9):  # every lane's history is the full sweep's, cut where it stopped
        e = int(half.epochs[k])
        assert len(half.histories[k]["val_acc"]) == e
        np.testing.assert_allclose(
            half.histories[k]["loss"], full.histories[k]["loss"][: e * 4], rtol=1e-10
        )
        np.testing.assert_allclose(half.histories[k]["val_acc"], full.histories[k]["val_acc"][:e])
        assert np.isnan(half.history["val_acc"][k, e:]).all()
    top = int(np.flatnonzero(half.epochs == 9)[0])
    np.testing.assert_allclose(
        half.final_state.params["W1"][top], full.final_state.params["W1"][top], rtol=1e-10
    )


@pytest.mark.parametrize("halving", [None, schedule.Halving(eta=2)])
@pytest.mark.slow
def test_sweep_resumes_exactly_from_any_epoch(x64, halving):
    cfg = models.NetConfig((5,), input_dim=D, num_classes=C, dropout=True, dtype="float64")
    trials = [{**t, "keep_prob": 0.8} for t in HALVING_TRIALS[::2]]
    s = schedule.Schedule(num_epochs=4, batch_size=10, seed=1, halving=halving)
    kw = dict(schedule=s, max_lanes=2)
    snaps = []
    straight = sweep.run_sweep(cfg, _data(), trials, callbacks=Callbacks(snaps.append), **kw)
    assert len(snaps) >= 4
    for snap in snaps[:-1]:
        resumed = sweep.run_sweep(cfg, _data(), trials, resume=snap, **kw)
        assert resumed.epochs.tolist() == straight.epochs.tolist()
        drop = lambda hs: [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in hs]
        assert drop(resumed.histories) == drop(straight.histories)
        for name in straight.best_params:
            assert resumed.best_params[name].tobytes() == straight.best_params[name].tobytes()
            assert (
                resumed.final_state.params[name].tobytes()
                == straight.final_state.params[name].tobytes()
            )
        assert resumed.best_val_acc.tolist() == straight.best_val_acc.tolist()


def test_lane_group_size_model():
    """One lane per CPU device (a wider group on one device is no faster), all on an accelerator."""
    cpu = jax.devices("cpu")[0]
    assert sweep.lane_group_size(16, [cpu]) == 1
    assert sweep.lane_group_size(16, [cpu, cpu]) == 2
    assert sweep.lane_group_size(1, [cpu, cpu]) == 1

    class Gpu:
        platform = "gpu"

    assert sweep.lane_group_size(16, [Gpu()]) == 16


_DEVICES = (
    "import os, sys; from fc_jax.cli import cpu_devices_for_sweeps; "
    "cpu_devices_for_sweeps(sys.argv[1:]); import jax; print(len(jax.devices()))"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv, xla_flags, expected",
    [
        (["sweep", "--epochs", "1"], "", min(os.cpu_count() or 1, 4)),
        (["train"], "", 1),
        (["sweep"], "--xla_force_host_platform_device_count=3", 3),  # the user's choice wins
    ],
)
def test_fc_jax_sweep_makes_one_cpu_device_per_core(argv, xla_flags, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    env.update(XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", _DEVICES, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) == expected

"""Population-based training: exploit is an exact copy, explore stays in range, nothing recompiles,
and a resumed run is bit-identical to an uninterrupted one."""

import json

import chex
import jax
import numpy as np
import pytest

from fc_jax import cli, models
from fc_jax.data.datasets import synthetic
from fc_jax.hparams import HPARAMS
from fc_jax.runs import pbt, sweep
from fc_jax.runs.loop import Callbacks
from fc_jax.runs.schedule import Pbt, Schedule
from fc_jax.storage.checkpoint import load_lanes, save_lanes

D, C = 6, 3
CFG = models.NetConfig((5,), input_dim=D, num_classes=C, normalization="batchnorm", dropout=True)
TRIALS = [
    {"learning_rate": float(lr), "reg": float(r), "keep_prob": 0.9, "seed": k}
    for k, (lr, r) in enumerate(
        zip(np.geomspace(1e-3, 1e-1, 8), np.geomspace(1e-4, 1e-1, 8), strict=True)
    )
]
SCHEDULE = Schedule(num_epochs=4, batch_size=10, seed=3)
KW = dict(max_lanes=8, optimizer="sgd_momentum")


def _data(n=60, n_val=30):
    X, y = synthetic(n + n_val, D, C, seed=1, dtype=np.float32)
    return {"X_train": X[:n], "y_train": y[:n], "X_val": X[n:], "y_val": y[n:]}


def _row(tree, k):
    return jax.tree.map(lambda a: np.asarray(a)[k], tree)


@pytest.fixture(scope="module")
def snapshot():
    """The lanes of a plain sweep after 2 epochs, with their hyperparameters."""
    snaps = []
    callbacks = Callbacks(on_epoch_end=snaps.append)
    res = sweep.run_sweep(CFG, _data(), TRIALS, schedule=SCHEDULE, callbacks=callbacks, **KW)
    return snaps[1]._replace(hparams=res.hparams)


def test_exploit_copies_exactly_the_source_lanes_state(snapshot):
    p = Pbt(ready=2, quantile=0.25, names=("learning_rate", "reg"))
    old = snapshot
    new = pbt.exploit(old, p, seed=3, epoch=2)
    assert len(new.lineage) == 2 and [ev["epoch"] for ev in new.lineage] == [2, 2]
    last = np.array([h["val_acc"][-1] for h in old.history])
    worst, best = np.argsort(-last, kind="stable")[-2:], np.argsort(-last, kind="stable")[:2]
    copied = {ev["lane"]: ev["source"] for ev in new.lineage}
    assert set(copied) == set(worst) and set(copied.values()) <= set(best)
    for k in range(old.num_lanes):
        src = copied.get(k, k)
        for part in ("params", "model_state", "opt_state", "step", "diverged"):
            chex.assert_trees_all_equal(
                _row(getattr(new.ts, part), k), _row(getattr(old.ts, part), src)
            )
        chex.assert_trees_all_equal(_row(new.ts.key, k), _row(old.ts.key, k))  # its own masks
        chex.assert_trees_all_equal(
            _row((new.best_params, new.best_model_state), k),
            _row((old.best_params, old.best_model_state), src),
        )
        assert new.best_val_acc[k] == old.best_val_acc[src] and new.epoch[k] == old.epoch[src]
        for name in old.hparams._fields:
            was, now = getattr(old.hparams, name)[src], getattr(new.hparams, name)[k]
            assert now.dtype == was.dtype
            if k in copied and name in p.names:
                want = [
                    pbt.clip_to_range(name, was.astype(np.float64) * f, was.dtype)
                    for f in pbt.FACTORS
                ]
                assert now in want
                assert {ev["lane"]: ev["values"][name] for ev in new.lineage}[k] == float(now)
            else:
                assert now == was
    # a pure function of (seed, epoch, accuracies): the same call decides the same
    again = pbt.exploit(old, p, seed=3, epoch=2)
    assert again.lineage == new.lineage
    chex.assert_trees_all_equal(again.hparams, new.hparams)


@pytest.mark.parametrize("name", list(HPARAMS))
def test_perturbation_stays_in_the_valid_range(name):
    row = HPARAMS[name]
    hi = 1.0 if np.isfinite(row.high) else 1e6
    values = np.asarray([1e-6, 0.5 * hi, 0.95 * hi, hi if row.high_closed else 0.99 * hi])
    for dtype in (np.float32, np.float64):
        for f in pbt.FACTORS:
            out = pbt.perturb(values.astype(dtype), f, name)
            assert out.dtype == dtype and row.valid(out.astype(np.float64)).all(), (name, out)
    assert pbt.perturb(np.float32([0.9]), 1.2, "beta1")[0] == np.nextafter(np.float32(1), 0)
    assert pbt.perturb(np.float32([0.9]), 1.2, "keep_prob")[0] == 1.0


def test_exploit_never_copies_a_lane_without_accuracy(snapshot):
    history = [{**h, "val_acc": [float("nan")] * 2} for h in snapshot.history]
    lanes = snapshot._replace(history=history)
    assert pbt.exploit(lanes, Pbt(1, 0.5), seed=0, epoch=2) is lanes
    assert not pbt.due(Pbt(2), 3, 10) and pbt.due(Pbt(2), 4, 10) and not pbt.due(Pbt(2), 10, 10)


@pytest.mark.slow
def test_no_compilation_across_exploit_steps():
    """After the first epoch compiled the engine, 3 PBT steps and 3 epochs compile nothing."""
    BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
    compiles, marks = [], []

    def listen(event, duration, **kwargs):
        if event == BACKEND_COMPILE_EVENT:
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        p = Pbt(1, 0.25, ("learning_rate", "reg"))
        res = sweep.run_sweep(
            CFG,
            _data(),
            TRIALS,
            schedule=SCHEDULE._replace(pbt=p),
            callbacks=Callbacks(on_epoch_end=lambda ls: marks.append(len(compiles))),
            **KW,
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert len({ev["epoch"] for ev in res.lineage}) == 3  # exploit after epochs 1, 2, 3
    assert marks[0] > 0 and marks[-1] == marks[0]


@pytest.mark.slow
def test_resume_after_a_pbt_step_is_bit_identical(tmp_path):
    s = SCHEDULE._replace(num_epochs=5, pbt=Pbt(2, 0.25, ("learning_rate", "reg")))
    kw = {**KW, "schedule": s, "max_lanes": 4}
    saved = []

    def save(lanes):
        folder = tmp_path / f"e{len(saved) + 1}"
        save_lanes(folder, lanes, {"config": CFG, "update_rule": kw["optimizer"], "schedule": s})
        saved.append(folder)

    straight = sweep.run_sweep(CFG, _data(), TRIALS, callbacks=Callbacks(save), **kw)
    assert {ev["epoch"] for ev in straight.lineage} == {2, 4}
    for folder in (saved[1], saved[2]):  # killed right after a PBT step, and an epoch later
        lanes, meta = load_lanes(folder)
        assert lanes.hparams is not None and lanes.lineage == straight.lineage[:2]
        assert meta["schedule"] == s
        resumed = sweep.run_sweep(CFG, _data(), TRIALS, resume=lanes, **kw)
        assert resumed.lineage == straight.lineage
        drop = lambda hs: [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in hs]
        assert drop(resumed.histories) == drop(straight.histories)
        for a, b in [
            (resumed.final_state, straight.final_state),
            (resumed.best_params, straight.best_params),
            (resumed.hparams, straight.hparams),
        ]:
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
                assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


@pytest.mark.slow
def test_cli_pbt_writes_lineage_and_refuses_bad_settings(tmp_path, capsys):
    out = tmp_path / "pbt"
    base = [
        "sweep",
        "--dataset",
        "digits",
        "--hidden-dims",
        "8",
        "--num-training",
        "200",
        "--learning-rate",
        "1e-4",
        "1e-3",
        "1e-2",
        "3e-2",
        "--epochs",
        "2",
        "--quiet",
    ]
    assert cli.main([*base, "--schedule", "pbt", "--seeds", "2", "--out", str(out)]) == 2
    assert cli.main([*base, "--schedule", "pbt", "--quantile", "0.7", "--out", str(out)]) == 2
    assert cli.main([*base, "--schedule", "pbt", "--quantile", "0.2", "--out", str(out)]) == 2
    assert "needs at least 5 configurations; got 4" in capsys.readouterr().err
    assert not out.exists()
    capsys.readouterr()
    assert cli.main([*base, "--schedule", "pbt", "--ready", "1", "--out", str(out)]) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((out / "results.json").read_text())
    assert final["schedule"] == summary["schedule"] == "pbt" and not final["reproduces_lane"]
    assert summary["pbt"] == {"ready": 1, "quantile": 0.25, "names": ["learning_rate"]}
    (ev,) = summary["lineage"]  # 4 lanes, a quarter: one copy after epoch 1
    assert ev["epoch"] == 1 and ev["source"] != ev["lane"]
    lane = summary["trials"][ev["lane"]]
    assert lane["learning_rate"] == pytest.approx(ev["values"]["learning_rate"], rel=1e-6)
    assert lane["initial"]["learning_rate"] in (1e-4, 1e-3, 1e-2, 3e-2)
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_too_few_lanes_for_the_quantile_is_refused_before_compiling():
    with pytest.raises(ValueError, match="needs at least 4 lanes; got 3"):
        sweep.run_sweep(CFG, _data(), TRIALS[:3], schedule=SCHEDULE._replace(pbt=Pbt()), **KW)

"""The facade `Solver` (compiled engine) against the course's numpy Solver (`fc_jax.reference`).

The oracle is `fc_jax.reference.solver.Solver` training `fc_jax.reference.fc_net` nets: the
course's code, a Python loop of per-step numpy calls drawing from NumPy's global RNG. Started
from the same `np.random.seed`, both must print the same lines and end with the same histories,
parameters, optimizer state and RNG state (float64). The facade scopes float64 itself, so these
tests do not use the `x64` fixture (and check that x64 does not leak).
"""

import json

import jax
import numpy as np
import pytest

from fc_jax.cs231n import _bridge
from fc_jax.cs231n.classifiers import fc_net
from fc_jax.cs231n.solver import Solver, epoch_key, net_config
from fc_jax.reference import fc_net as ref_net
from fc_jax.reference.solver import Solver as RefSolver
from tests.helpers import real_cifar10_dir, rel_error


@pytest.fixture(autouse=True)
def no_x64_leak():
    before = jax.config.read("jax_enable_x64")
    yield
    assert jax.config.read("jax_enable_x64") == before


def _data(n_train=45, n_val=15, seed=0):
    """Separable-ish 5-class data shaped (N, 3, 2, 2); 45 // 10 = 4 iterations per epoch."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 5, n_train + n_val)
    X = (2 * r.normal(size=(5, 12))[y] + r.normal(size=(len(y), 12))).reshape(-1, 3, 2, 2)
    return {
        "X_train": X[:n_train],
        "y_train": y[:n_train],
        "X_val": X[n_train:],
        "y_val": y[n_train:],
    }


def _train(capsys, solver_cls, net_cls, net_kw, solver_kw, data=None):
    """Seed, build, train; return (solver, model, printed text, the RNG's next draw)."""
    np.random.seed(231)
    if net_cls in (fc_net.TwoLayerNet, ref_net.TwoLayerNet):
        model = net_cls(input_dim=12, hidden_dim=8, num_classes=5, weight_scale=0.3, **net_kw)
    else:
        model = net_cls([8, 7], 12, 5, weight_scale=0.3, **{"dtype": np.float64, **net_kw})
    kw = dict(batch_size=10, num_epochs=3, print_every=3, num_train_samples=20, num_val_samples=10)
    solver = solver_cls(model, data or _data(), **{**kw, **solver_kw})
    capsys.readouterr()
    solver.train()
    return solver, model, capsys.readouterr().out, np.random.rand()


def _close(a, b, rtol=1e-9, atol=1e-12):
    """Equal to float64 round-off: relative 1e-9, or 1e-12 absolute for entries that are round-off
    themselves (a bias right before batchnorm has a zero gradient up to rounding)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= rtol * np.abs(b) + atol))


def _assert_same(mine, ref):
    (s, m, out, after), (rs, rm, rout, rafter) = mine, ref
    assert out == rout and out.count("(Epoch") == 4  # printed lines, formatted at float64
    assert after == rafter  # the global RNG stream was consumed draw for draw
    assert _close(s.loss_history, rs.loss_history)
    assert s.train_acc_history == rs.train_acc_history and s.val_acc_history == rs.val_acc_history
    assert s.best_val_acc == rs.best_val_acc > 0 and s.epoch == rs.epoch == 3
    assert list(m.params) == list(rm.params)
    for k in rm.params:
        assert m.params[k].dtype == np.float64 and _close(m.params[k], rm.params[k]), k
        assert _close(s.best_params[k], rs.best_params[k]), k
    for p, cfg in rs.optim_configs.items():  # optimizer state under the course's keys
        assert s.optim_configs[p].keys() == cfg.keys(), p
        for k, v in cfg.items():
            assert _close(s.optim_configs[p][k], v), (p, k)
    for bn, rbn in zip(m.bn_params, getattr(rm, "bn_params", []), strict=True):
        assert bn.keys() == rbn.keys()
        for k in set(rbn) - {"mode"}:  # batchnorm: running_mean, running_var
            assert _close(bn[k], rbn[k]), k
        assert bn.get("mode") == rbn.get("mode")


CASES = {
    "sgd": ({}, dict(update_rule="sgd", optim_config={"learning_rate": 0.1})),
    "momentum": ({}, dict(update_rule="sgd_momentum", optim_config={"learning_rate": 0.05})),
    "rmsprop": ({}, dict(update_rule="rmsprop", optim_config={"learning_rate": 3e-3})),
    "adam_decay": (
        {},
        dict(update_rule="adam", optim_config={"learning_rate": 1e-2}, lr_decay=0.7),
    ),
    "reg": (dict(reg=0.3), dict(update_rule="sgd_momentum", optim_config={"learning_rate": 0.05})),
    "batchnorm": (
        dict(normalization="batchnorm"),
        dict(update_rule="sgd_momentum", optim_config={"learning_rate": 0.05}, lr_decay=0.9),
    ),
    "dropout": (dict(dropout_keep_ratio=0.75), dict(update_rule="adam", num_train_samples=None)),
    "dropout_seed_ln": (
        dict(dropout_keep_ratio=0.75, seed=5, normalization="layernorm"),
        dict(update_rule="rmsprop", optim_config={"learning_rate": 3e-3}),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.slow
def test_solver_matches_the_course_solver_exactly(capsys, case):
    net_kw, solver_kw = CASES[case]
    mine = _train(capsys, Solver, fc_net.FullyConnectedNet, net_kw, solver_kw)
    ref = _train(capsys, RefSolver, ref_net.FullyConnectedNet, net_kw, solver_kw)
    _assert_same(mine, ref)
    losses = mine[0].loss_history
    assert np.mean(losses[-4:]) < np.mean(losses[:4])  # it trained


def test_two_layer_net_matches_and_odd_print_every(capsys):
    kw = dict(update_rule="adam", optim_config={"learning_rate": 2e-2}, print_every=5)
    mine = _train(capsys, Solver, fc_net.TwoLayerNet, {"reg": 0.1}, kw)
    ref = _train(capsys, RefSolver, ref_net.TwoLayerNet, {"reg": 0.1}, kw)
    _assert_same(mine, ref)
    assert "(Iteration 6 / 12)" in mine[2] and "(Iteration 11 / 12)" in mine[2]


@pytest.mark.parametrize(
    "rule, net_kw", [("adam", {}), ("sgd_momentum", dict(normalization="batchnorm"))]
)
def test_second_train_continues_from_the_written_back_state(capsys, rule, net_kw):
    """train() twice: the second run starts from the state written back by the first (optimizer
    state in optim_configs, batchnorm statistics in bn_params), as the course's does."""
    kw = dict(update_rule=rule, num_epochs=2)
    runs = []
    for solver_cls, net_cls in (
        (Solver, fc_net.FullyConnectedNet),
        (RefSolver, ref_net.FullyConnectedNet),
    ):
        solver, model, out, _ = _train(capsys, solver_cls, net_cls, net_kw, kw)
        solver.train()
        runs.append((solver, model, out + capsys.readouterr().out, np.random.rand()))
    (s, m, out, after), (rs, rm, rout, rafter) = runs
    assert out == rout and "(Epoch 4 / 2)" in out and after == rafter
    assert _close(s.loss_history, rs.loss_history) and len(s.loss_history) == 16
    assert s.optim_configs["W1"].get("t") == rs.optim_configs["W1"].get("t") in (16, None)
    for bn, rbn in zip(m.bn_params, rm.bn_params, strict=True):
        assert _close(bn["running_var"], rbn["running_var"])
    for k in rm.params:
        assert _close(m.params[k], rm.params[k]), k


def test_check_accuracy_matches_the_course(capsys):
    data = _data()
    np.random.seed(0)
    model = fc_net.FullyConnectedNet(
        [8], input_dim=12, num_classes=5, dtype=np.float64, weight_scale=0.5
    )
    np.random.seed(0)
    ref = ref_net.FullyConnectedNet(
        [8], input_dim=12, num_classes=5, dtype=np.float64, weight_scale=0.5
    )
    solver, rsolver = Solver(model, data), RefSolver(ref, data)
    for num_samples, batch_size in ((None, 100), (17, 5), (30, 7)):
        np.random.seed(9)
        acc = solver.check_accuracy(data["X_train"], data["y_train"], num_samples, batch_size)
        after = np.random.rand()
        np.random.seed(9)
        assert acc == rsolver.check_accuracy(
            data["X_train"], data["y_train"], num_samples, batch_size
        )
        assert after == np.random.rand()


def test_training_runs_on_the_compiled_engine(capsys):
    """Never per-step `model.loss` calls: a few traces of one scan, then no retrace."""
    data = _data(n_train=53)  # 5 iterations per epoch: scans of 1 and 4 steps
    np.random.seed(0)
    model = fc_net.FullyConnectedNet([11], input_dim=12, num_classes=5, dtype=np.float64)
    key = epoch_key(net_config(model, data["X_train"]), "rmsprop")
    before = _bridge.trace_count(key)

    def no_loss(*args, **kwargs):
        raise AssertionError("the Solver must not call model.loss")

    model.loss = no_loss
    for lr in (1e-2, 3e-3):  # a new learning rate and new solver: data, not a recompilation
        solver = Solver(
            model,
            data,
            update_rule="rmsprop",
            optim_config={"learning_rate": lr},
            num_epochs=4,
            batch_size=10,
            verbose=False,
        )
        solver.train()
        assert len(solver.loss_history) == 20 and len(solver.val_acc_history) == 5
    assert 1 <= _bridge.trace_count(key) - before <= 2


def test_checkpoints_are_npz_with_json_meta(capsys, tmp_path):
    """One file per accuracy check, as the course; params equal the oracle's at that check."""
    seen = []

    class Recording(RefSolver):
        def check_accuracy(self, X, y, num_samples=None, batch_size=100):
            if X is self.X_train:
                seen.append({k: v.copy() for k, v in self.model.params.items()})
            return super().check_accuracy(X, y, num_samples, batch_size)

    kw = dict(update_rule="sgd_momentum", num_epochs=2)
    net_kw = dict(normalization="batchnorm")
    ref = _train(capsys, Recording, ref_net.FullyConnectedNet, net_kw, kw)
    kw["checkpoint_name"] = str(tmp_path / "ck")
    s, m, out, _ = _train(capsys, Solver, fc_net.FullyConnectedNet, net_kw, kw)
    lines = out.splitlines()
    saves = [i for i, ln in enumerate(lines) if ln.startswith("Saving checkpoint to")]
    assert [lines[i + 1].startswith("(Epoch") for i in saves] == [True] * 3
    assert "\n".join(ln for i, ln in enumerate(lines) if i not in saves) + "\n" == ref[2]
    for epoch, params in enumerate(seen):
        name = tmp_path / f"ck_epoch_{epoch}.npz"
        assert f'Saving checkpoint to "{name}"' in out
        with np.load(name, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            for k, v in params.items():
                assert _close(z[k], v), (epoch, k)
            assert z["running_mean1"].shape == (8,)
        assert meta["epoch"] == epoch and meta["update_rule"] == "sgd_momentum"
        assert meta["loss_history"] == [float(v) for v in s.loss_history[: max(1, 4 * epoch)]]


@pytest.mark.slow
def test_float32_model_stays_float32_and_close_to_float64(capsys):
    kw = dict(update_rule="adam")
    solver, model, _, _ = _train(
        capsys, Solver, fc_net.FullyConnectedNet, {"dtype": np.float32}, kw
    )
    ref = _train(capsys, RefSolver, ref_net.FullyConnectedNet, {}, kw)[0]
    assert all(v.dtype == np.float32 for v in model.params.values())
    assert all(v.dtype == np.float32 for k, v in solver.optim_configs["W1"].items() if k in "mv")
    assert rel_error(solver.loss_history, ref.loss_history) < 1e-5


@pytest.mark.slow
def test_overfits_50_cifar10_images(capsys):
    """The course cell: a three-layer net reaches 100% train accuracy on 50 images in 20 epochs."""
    from fc_jax.data.datasets import get_dataset

    small = get_dataset(
        "cifar10",
        data_dir=real_cifar10_dir(),
        num_training=50,
        num_validation=50,
        num_test=10,
        flatten=False,
    )
    np.random.seed(231)
    model = fc_net.FullyConnectedNet([100, 100], weight_scale=1e-2, dtype=np.float64)
    solver = Solver(
        model,
        small,
        print_every=10,
        num_epochs=20,
        batch_size=25,
        update_rule="sgd",
        optim_config={"learning_rate": 1e-2},
    )
    solver.train()
    out = capsys.readouterr().out
    assert "(Epoch 20 / 20) train acc: 1.000000" in out and solver.train_acc_history[-1] == 1.0
    assert solver.loss_history[-1] < 0.1 < 2.0 < solver.loss_history[0]


def test_bad_arguments():
    data = _data()
    model = fc_net.FullyConnectedNet([8], input_dim=12, num_classes=5)
    with pytest.raises(ValueError, match='Unrecognized arguments "learning_rate"'):
        Solver(model, data, learning_rate=1e-3)
    with pytest.raises(ValueError, match='Invalid update_rule "nesterov"'):
        Solver(model, data, update_rule="nesterov")
    with pytest.raises(ValueError, match='Invalid update_rule "adamw"'):  # not a course rule
        Solver(model, data, update_rule="adamw")
    with pytest.raises(ValueError, match="X_val"):
        Solver(model, {k: v for k, v in data.items() if k != "X_val"})
    for kw, match in [
        (dict(batch_size=0), "batch_size"),
        (dict(num_epochs=-1), "num_epochs"),
        (dict(print_every=2.5), "print_every"),
        (dict(num_train_samples=0), "num_train_samples"),
        (dict(lr_decay=0.0), "lr_decay"),
        (dict(optim_config={"learning_rate": -1.0}), "learning_rate"),
    ]:
        with pytest.raises(ValueError, match=match):
            Solver(model, data, **kw)
    with pytest.raises(TypeError, match="optim_config"):
        Solver(model, data, optim_config=[("learning_rate", 1e-3)])
    with pytest.raises(ValueError, match="y_train"):
        Solver(model, {**data, "y_train": data["y_train"] + 5})
    with pytest.raises(ValueError, match="X_val"):
        Solver(model, {**data, "X_val": data["X_val"][:, :2]})
    with pytest.raises(TypeError, match="TwoLayerNet or FullyConnectedNet"):
        Solver(ref_net.FullyConnectedNet([8], input_dim=12, num_classes=5), data)
    solver = Solver(model, data, num_epochs=0)
    solver.train()  # zero iterations: nothing happens, as in the course
    assert solver.loss_history == [] and solver.epoch == 0

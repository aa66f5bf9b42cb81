"""The course notebooks' check cells, run through the `fc_jax.cs231n` facade.

Expected values come from outside the facade: the numpy reference `fc_jax.reference` (the course's
solution code), literal numbers printed in the course notebooks, closed forms, and central
differences. Float64 inputs must compute in float64 with x64 scoped by the facade itself, so these
tests do not use the `x64` fixture (and check that x64 does not leak).
"""

import logging

import jax
import numpy as np
import pytest

from fc_jax.cs231n import _bridge, optim
from fc_jax.cs231n import layer_utils as LU
from fc_jax.cs231n import layers as L
from fc_jax.cs231n.classifiers.fc_net import FullyConnectedNet, TwoLayerNet
from fc_jax.cs231n.gradient_check import grad_check_sparse
from fc_jax.reference import fc_net as ref_net
from fc_jax.reference import layers as RL
from fc_jax.reference import optim as ref_optim
from fc_jax.reference.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array
from tests.helpers import rel_error


@pytest.fixture(autouse=True)
def no_x64_leak():
    before = jax.config.read("jax_enable_x64")
    yield
    assert jax.config.read("jax_enable_x64") == before


def assert_grad_close(num, ana, rtol, atol=1e-9, what=""):
    """Elementwise |num - ana| <= rtol * (|num| + |ana|) + atol: the course's relative error where
    the gradient is non-negligible, and the central differences' round-off floor (about
    eps * |f| / h) where it is ~0 (a bias right before batchnorm, a unit on a ReLU's dead side)."""
    err = np.abs(num - ana) - rtol * (np.abs(num) + np.abs(ana))
    assert np.all(err <= atol), (what, float(err.max()), rel_error(num, ana))


def _course_input(seed=231):
    np.random.seed(seed)
    return np.random.randn


# ---------------------------------------------------------------- layers (FullyConnectedNets.ipynb)
def test_affine_and_relu_forward_course_values():
    shape = (4, 5, 6)
    x = np.linspace(-0.1, 0.5, num=2 * 120).reshape(2, *shape)
    w = np.linspace(-0.2, 0.3, num=3 * 120).reshape(120, 3)
    b = np.linspace(-0.3, 0.1, num=3)
    out, _ = L.affine_forward(x, w, b)
    course = [[1.49834967, 1.70660132, 1.91485297], [3.25553199, 3.5141327, 3.77273342]]
    assert rel_error(out, course) < 1e-8 and out.dtype == np.float64
    assert rel_error(out, RL.affine_forward(x, w, b)[0]) < 1e-14  # float64, not truncated
    x = np.linspace(-0.5, 0.5, num=12).reshape(3, 4)
    out, _ = L.relu_forward(x)
    course = [
        [0, 0, 0, 0],
        [0, 0, 0.04545455, 0.13636364],
        [0.22727273, 0.31818182, 0.40909091, 0.5],
    ]
    assert rel_error(out, course) < 1e-7


def _grad_case(name):
    """The course cell's inputs, forward (x..., -> out) and the facade backward, per layer."""
    randn = _course_input()
    if name == "affine":
        x, w, b, dout = randn(10, 2, 3), randn(6, 5), randn(5), randn(10, 5)
        return (
            [x, w, b],
            dout,
            L.affine_forward,
            L.affine_backward,
            RL.affine_forward,
            RL.affine_backward,
        )
    if name == "relu":
        x, dout = randn(10, 10), randn(10, 10)
        return [x], dout, L.relu_forward, L.relu_backward, RL.relu_forward, RL.relu_backward
    if name == "affine_relu":
        x, w, b, dout = randn(2, 3, 4), randn(12, 10), randn(10), randn(2, 10)
        ref = (RL.affine_relu_forward, RL.affine_relu_backward)
        return [x, w, b], dout, LU.affine_relu_forward, LU.affine_relu_backward, *ref
    if name.startswith(("batchnorm", "layernorm")):
        x = 5 * randn(4, 5) + 12
        gamma, beta, dout = randn(5), randn(5), randn(4, 5)
        norm, _, variant = name.partition("_")
        param = {"mode": "train"} if norm == "batchnorm" else {}
        if variant == "test":  # test mode: fixed running statistics
            param = {
                "mode": "test",
                "running_mean": randn(5) + 12,
                "running_var": randn(5) ** 2 + 1,
            }
        fwd, rfwd = getattr(L, f"{norm}_forward"), getattr(RL, f"{norm}_forward")
        bwd = L.batchnorm_backward_alt if variant == "alt" else getattr(L, f"{norm}_backward")
        rbwd = getattr(RL, f"{norm}_backward")
        return (
            [x, gamma, beta],
            dout,
            lambda *a: fwd(*a, dict(param)),
            bwd,
            lambda *a: rfwd(*a, dict(param)),
            rbwd,
        )
    assert name == "dropout"
    x, dout = randn(10, 10) + 10, randn(10, 10)
    p = {"mode": "train", "p": 0.2, "seed": 123}
    ref = (lambda x: RL.dropout_forward(x, dict(p)), RL.dropout_backward)
    return [x], dout, lambda x: L.dropout_forward(x, p), L.dropout_backward, *ref


LAYER_CASES = ["affine", "relu", "affine_relu", "batchnorm", "batchnorm_alt", "batchnorm_test"]
LAYER_CASES += ["layernorm", "dropout"]


@pytest.mark.parametrize("name", LAYER_CASES)
def test_layer_numeric_gradients(name):
    """The course's gradient-check cells: float64, rel_error ~1e-7 or less."""
    args, dout, fwd, bwd, rfwd, rbwd = _grad_case(name)
    out, cache = fwd(*args)
    grads = bwd(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for i, g in enumerate(grads):

        def f(v, i=i):
            return fwd(*args[:i], v, *args[i + 1 :])[0]

        num = eval_numerical_gradient_array(f, args[i].copy(), dout)
        assert g.dtype == np.float64 and rel_error(num, g) < 1e-7, (name, i, rel_error(num, g))
    rout, rcache = rfwd(*args)  # the course's own solution agrees to round-off
    rgrads = rbwd(dout, rcache)
    rgrads = rgrads if isinstance(rgrads, tuple) else (rgrads,)
    assert rel_error(out, rout) < 1e-12
    assert all(rel_error(g, r) < 1e-10 for g, r in zip(grads, rgrads, strict=True))


def test_batchnorm_backward_alt_equals_backward():
    randn = _course_input()
    x, gamma, beta, dout = 5 * randn(100, 500) + 12, randn(500), randn(500), randn(100, 500)
    _, cache = L.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    g1, g2 = L.batchnorm_backward(dout, cache), L.batchnorm_backward_alt(dout, cache)
    assert max(rel_error(a, b) for a, b in zip(g1, g2, strict=True)) < 1e-10


@pytest.mark.parametrize("loss", ["svm", "softmax"])
def test_loss_layers(loss):
    randn = _course_input()
    x = 0.001 * randn(50, 10)
    y = np.random.randint(10, size=50)
    fn, ref = getattr(L, f"{loss}_loss"), getattr(RL, f"{loss}_loss")
    value, dx = fn(x, y)
    num = eval_numerical_gradient(lambda x: fn(x, y)[0], x, verbose=False)
    assert rel_error(num, dx) < 1e-7
    expected = 9.0 if loss == "svm" else np.log(10)  # near-equal scores: C - 1 margins / log C
    assert abs(value - expected) < 0.02 and isinstance(value, np.float64)
    assert abs(value - ref(x, y)[0]) < 1e-12 and rel_error(dx, ref(x, y)[1]) < 1e-10


# ---------------------------------------------------------------- sandwiches
@pytest.mark.parametrize("norm", ["bn", "ln"])
def test_normalized_sandwiches(norm):
    randn = _course_input()
    x, w, b, gamma, beta, dout = (
        randn(4, 3, 2),
        randn(6, 5),
        randn(5),
        randn(5),
        randn(5),
        randn(4, 5),
    )
    fwd, bwd = (
        getattr(LU, f"affine_{norm}_relu_forward"),
        getattr(LU, f"affine_{norm}_relu_backward"),
    )
    param = {"mode": "train"}
    out, cache = fwd(x, w, b, gamma, beta, param)
    grads = bwd(dout, cache)
    args = [x, w, b, gamma, beta]
    for i, g in enumerate(grads):  # (dx, dw, db, dgamma, dbeta)

        def f(v, i=i):
            return fwd(*args[:i], v, *args[i + 1 :], {"mode": "train"})[0]

        num = eval_numerical_gradient_array(f, args[i].copy(), dout)
        assert_grad_close(num, g, rtol=1e-7, what=i)
    a = RL.affine_forward(x, w, b)[0]
    rnorm = RL.batchnorm_forward if norm == "bn" else RL.layernorm_forward
    rparam = {"mode": "train"}
    assert rel_error(out, np.maximum(rnorm(a, gamma, beta, rparam)[0], 0)) < 1e-12
    if norm == "bn":
        assert rel_error(param["running_mean"], rparam["running_mean"]) < 1e-12


# ---------------------------------------------------------------- dropout and batchnorm statistics
@pytest.mark.parametrize("p", [0.25, 0.4, 0.7])
def test_dropout_statistics(p):
    x = _course_input()(500, 500) + 10
    out, _ = L.dropout_forward(x, {"mode": "train", "p": p})
    out_test, _ = L.dropout_forward(x, {"mode": "test", "p": p})
    assert abs(out.mean() - x.mean()) < 0.02 * x.mean()
    assert abs((out == 0).mean() - (1 - p)) < 0.01
    assert np.array_equal(out_test, x)
    np.random.seed(7)  # the same global RNG state gives the course's mask, bit for bit
    ours = L.dropout_forward(x, {"mode": "train", "p": p})[0]
    np.random.seed(7)
    assert np.array_equal(ours, RL.dropout_forward(x, {"mode": "train", "p": p})[0])


def test_batchnorm_train_and_test_statistics():
    randn = _course_input()
    N, D1, D2, D3 = 200, 50, 60, 3
    W1, W2 = randn(D1, D2), randn(D2, D3)
    a = np.maximum(0, randn(N, D1) @ W1) @ W2
    gamma, beta = np.asarray([1.0, 2.0, 3.0]), np.asarray([11.0, 12.0, 13.0])
    a_norm, _ = L.batchnorm_forward(a, gamma, beta, {"mode": "train"})
    assert (
        rel_error(a_norm.mean(axis=0), beta) < 1e-10 and rel_error(a_norm.std(axis=0), gamma) < 1e-6
    )

    randn = _course_input()
    W1, W2 = randn(D1, D2), randn(D2, D3)
    bn, rbn = {"mode": "train"}, {"mode": "train"}
    gamma, beta = np.ones(D3), np.zeros(D3)
    for _ in range(50):
        a = np.maximum(0, randn(N, D1) @ W1) @ W2
        L.batchnorm_forward(a, gamma, beta, bn)
        RL.batchnorm_forward(a, gamma, beta, rbn)
    assert isinstance(bn["running_mean"], np.ndarray) and bn["running_var"].dtype == np.float64
    assert rel_error(bn["running_mean"], rbn["running_mean"]) < 1e-10
    assert rel_error(bn["running_var"], rbn["running_var"]) < 1e-10
    bn["mode"] = "test"
    a = np.maximum(0, randn(N, D1) @ W1) @ W2
    a_norm, _ = L.batchnorm_forward(a, gamma, beta, bn)
    assert np.all(np.abs(a_norm.mean(axis=0)) < 0.15) and np.all(
        np.abs(a_norm.std(axis=0) - 1) < 0.15
    )


# ---------------------------------------------------------------- classifiers
def test_two_layer_net_course_cell():
    randn = _course_input()
    N, D, H, C, std = 3, 5, 50, 7, 1e-3
    X, y = randn(N, D), np.random.randint(C, size=N)
    model = TwoLayerNet(input_dim=D, hidden_dim=H, num_classes=C, weight_scale=std)
    assert abs(model.params["W1"].std() - std) < std / 10 and np.all(model.params["b1"] == 0)
    assert abs(model.params["W2"].std() - std) < std / 10 and np.all(model.params["b2"] == 0)
    model.params["W1"] = np.linspace(-0.7, 0.3, num=D * H).reshape(D, H)
    model.params["b1"] = np.linspace(-0.1, 0.9, num=H)
    model.params["W2"] = np.linspace(-0.3, 0.4, num=H * C).reshape(H, C)
    model.params["b2"] = np.linspace(-0.9, 0.1, num=C)
    X = np.linspace(-5.5, 4.5, num=N * D).reshape(D, N).T
    ref = ref_net.TwoLayerNet(input_dim=D, hidden_dim=H, num_classes=C)
    ref.params = {k: v.copy() for k, v in model.params.items()}
    correct_scores = [
        [11.53165108, 12.2917344, 13.05181771, 13.81190102, 14.57198434, 15.33206765, 16.09215096],
        [12.05769098, 12.74614105, 13.43459113, 14.1230412, 14.81149128, 15.49994135, 16.18839143],
        [12.58373087, 13.20054771, 13.81736455, 14.43418138, 15.05099822, 15.66781506, 16.2846319],
    ]
    assert np.abs(model.loss(X) - correct_scores).sum() < 1e-6
    assert np.abs(model.loss(X) - ref.loss(X)).max() < 1e-12
    y = np.asarray([0, 5, 1])
    for reg, correct_loss in [(0.0, 3.4702243556), (1.0, 26.5948426952)]:
        model.reg = ref.reg = reg
        loss, _ = model.loss(X, y)
        assert abs(loss - correct_loss) < 1e-10 and abs(loss - ref.loss(X, y)[0]) < 1e-12
    for reg in [0.0, 0.7]:
        model.reg = reg
        _, grads = model.loss(X, y)
        for name in sorted(grads):
            num = eval_numerical_gradient(
                lambda _: model.loss(X, y)[0], model.params[name], verbose=False
            )
            assert rel_error(num, grads[name]) < 1e-6, (reg, name)


N_FC, D_FC, H1, H2, C_FC = 2, 15, 20, 30, 10
FC_CASES = {
    "plain-reg0": dict(reg=0.0),
    "plain-reg3.14": dict(reg=3.14),
    "batchnorm-reg0": dict(reg=0.0, normalization="batchnorm"),
    "batchnorm-reg3.14": dict(reg=3.14, normalization="batchnorm"),
    "layernorm-reg0": dict(reg=0.0, normalization="layernorm"),
    "layernorm-reg3.14": dict(reg=3.14, normalization="layernorm"),
    "dropout0.75-seed": dict(dropout_keep_ratio=0.75, seed=123),
    "dropout0.5-seed": dict(dropout_keep_ratio=0.5, seed=123),
    "dropout0.5-batchnorm-seed": dict(dropout_keep_ratio=0.5, seed=123, normalization="batchnorm"),
}


def _fc_pair(n, **kw):
    """The course cell's data and model, built twice from the same global RNG state."""
    models = []
    for cls in (FullyConnectedNet, ref_net.FullyConnectedNet):
        randn = _course_input()
        X, y = randn(n, D_FC), np.random.randint(C_FC, size=(n,))
        common = dict(input_dim=D_FC, num_classes=C_FC, weight_scale=5e-2, dtype=np.float64)
        models.append(cls([H1, H2], **common, **kw))
    return *models, X, y


def _assert_same(ours, ref):
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("case", FC_CASES)
@pytest.mark.slow
def test_fully_connected_net_matches_reference_and_numeric_gradients(case):
    kw = FC_CASES[case]
    # With N = 2, batchnorm's hidden units have variances near eps and the central differences of
    # W1 are off by ~1e-4 (the course says "1e-4 ~ 1e-10 for W"; the reference shows the same), so
    # the batchnorm nets are checked on N = 8, which is well conditioned.
    model, ref, X, y = _fc_pair(8 if "normalization" in kw else N_FC, **kw)
    assert model.params.keys() == ref.params.keys()
    assert all(np.array_equal(model.params[k], ref.params[k]) for k in ref.params)
    for _ in range(2):  # the second call sees the updated running statistics
        (loss, grads), (rloss, rgrads) = model.loss(X, y), ref.loss(X, y)
        assert abs(loss - rloss) < 1e-10 and grads.keys() == rgrads.keys()
        for k in rgrads:
            _assert_same(grads[k], rgrads[k])
        for bn, rbn in zip(model.bn_params, ref.bn_params, strict=True):
            assert isinstance(bn.get("running_mean", np.zeros(0)), np.ndarray)
            for k in ("running_mean", "running_var") if "running_mean" in rbn else ():
                _assert_same(bn[k], rbn[k])
    _assert_same(model.loss(X), ref.loss(X))
    for name in sorted(grads):
        num = eval_numerical_gradient(
            lambda _: model.loss(X, y)[0], model.params[name], verbose=False
        )
        assert_grad_close(num, grads[name], rtol=1e-6, what=name)


def test_fully_connected_net_course_cells_print_course_numbers():
    """FullyConnectedNets.ipynb prints 'Initial loss: 2.3004790897684924' and 7.052114776533016."""
    randn = _course_input()
    X, y = randn(N_FC, D_FC), np.random.randint(C_FC, size=(N_FC,))
    for reg, printed in [(0, 2.3004790897684924), (3.14, 7.052114776533016)]:
        model = FullyConnectedNet(
            [H1, H2], input_dim=D_FC, num_classes=C_FC, reg=reg, weight_scale=5e-2, dtype=np.float64
        )
        assert abs(model.loss(X, y)[0] - printed) < 1e-12
    for kw in [dict(normalization="batchnorm"), dict(dropout_keep_ratio=0.5, seed=123)]:
        model, ref, X, y = _fc_pair(N_FC, **kw)  # N = 2 as in the course: analytic grads only
        (loss, grads), (rloss, rgrads) = model.loss(X, y), ref.loss(X, y)
        assert abs(loss - rloss) < 1e-10
        for k in rgrads:
            _assert_same(grads[k], rgrads[k])


def test_dropout_masks_come_from_the_global_rng():
    model, ref, X, y = _fc_pair(N_FC, dropout_keep_ratio=0.5)  # no seed: a new mask each call
    losses = []
    for seed in (1, 1, 2):
        np.random.seed(seed)
        losses.append(model.loss(X, y)[0])
        np.random.seed(seed)
        assert abs(losses[-1] - ref.loss(X, y)[0]) < 1e-10
    assert losses[0] == losses[1] != losses[2]
    seeded, _, X, y = _fc_pair(N_FC, dropout_keep_ratio=0.5, seed=123)
    assert seeded.loss(X, y)[0] == seeded.loss(X, y)[0]  # np.random.seed(123) before each mask
    assert seeded.dropout_param["mode"] == "train" and seeded.loss(X).shape == (N_FC, C_FC)
    assert seeded.dropout_param["mode"] == "test"


def test_dropout_alias_and_params_assignment():
    np.random.seed(0)
    a = FullyConnectedNet([4], input_dim=3, num_classes=2, dropout=0.5)
    assert a.use_dropout and a.dropout_param["p"] == 0.5
    a.params["W1"] = np.zeros((3, 4), np.float32)  # read fresh: zero hidden layer, scores = b2
    a.params["b2"] = np.array([1.0, -1.0], np.float32)
    np.testing.assert_array_equal(a.loss(np.ones((2, 3))), [[1.0, -1.0], [1.0, -1.0]])


# ---------------------------------------------------------------- optim (FullyConnectedNets.ipynb)
def _lin(a, b):
    return np.linspace(a, b, num=20).reshape(4, 5)


OPTIM_CASES = {
    "sgd_momentum": (
        {"learning_rate": 1e-3, "velocity": _lin(0.6, 0.9)},
        [0.1406, 0.20738947, 0.27417895, 0.34096842, 0.40775789],
        [1.14244211, 1.20923158, 1.27602105, 1.34281053, 1.4096],
        {"velocity": [0.5406, 0.55475789, 0.56891579, 0.58307368, 0.59723158]},
    ),
    "rmsprop": (
        {"learning_rate": 1e-2, "cache": _lin(0.6, 0.9)},
        [-0.39223849, -0.34037513, -0.28849239, -0.23659121, -0.18467247],
        [0.38739248, 0.43947102, 0.49155973, 0.54365823, 0.59576619],
        {"cache": [0.5976, 0.6126277, 0.6277108, 0.64284931, 0.65804321]},
    ),
    "adam": (
        {"learning_rate": 1e-2, "m": _lin(0.6, 0.9), "v": _lin(0.7, 0.5), "t": 5},
        [-0.40094747, -0.34836187, -0.29577703, -0.24319299, -0.19060977],
        [0.38774145, 0.44031188, 0.49288093, 0.54544852, 0.59801459],
        {
            "v": [0.69966, 0.68908382, 0.67851319, 0.66794809, 0.65738853],
            "m": [0.48, 0.49947368, 0.51894737, 0.53842105, 0.55789474],
        },
    ),
}


@pytest.mark.parametrize("rule", OPTIM_CASES)
def test_update_rules_course_cells(rule):
    config, first_row, last_row, state_rows = OPTIM_CASES[rule]
    w, dw = _lin(-0.4, 0.6), _lin(-0.6, 0.4)
    ours, ref = dict(config), dict(config)  # the rules replace state arrays, never mutate them
    next_w, out = getattr(optim, rule)(w, dw, config=ours)
    assert out is ours and next_w.dtype == np.float64
    assert rel_error(next_w[0], first_row) < 1e-7 and rel_error(next_w[-1], last_row) < 1e-7
    for k, row in state_rows.items():
        assert isinstance(ours[k], np.ndarray) and rel_error(ours[k][0], row) < 1e-7
    ref_w, _ = getattr(ref_optim, rule)(w, dw, ref)
    for step in range(5):  # five steps in all, each from the written-back state
        if step:
            g = np.cos(next_w * step)
            next_w = getattr(optim, rule)(next_w, g, ours)[0]
            ref_w = getattr(ref_optim, rule)(ref_w, g, ref)[0]
        assert rel_error(next_w, ref_w) < 1e-12, step  # same float64 math as the reference
        for k in state_rows:
            assert rel_error(ours[k], ref[k]) < 1e-12, (step, k)
    if rule == "adam":
        assert type(ours["t"]) is int and ours["t"] == ref["t"] == 10


def test_update_rule_defaults_are_written_into_config():
    w, dw = _lin(-0.4, 0.6), _lin(-0.6, 0.4)
    next_w, config = optim.sgd(w, dw)
    assert config == {"learning_rate": 1e-2} and rel_error(next_w, w - 1e-2 * dw) < 1e-12
    _, config = optim.adam(w, dw)
    expected = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "t": 1}
    assert {k: config[k] for k in expected} == expected and config["m"].shape == w.shape
    _, config = optim.rmsprop(w, dw)
    assert (
        config["decay_rate"] == 0.99
        and config["epsilon"] == 1e-8
        and config["learning_rate"] == 1e-2
    )
    _, config = optim.sgd_momentum(w, dw)
    assert config["momentum"] == 0.9 and rel_error(config["velocity"], -1e-2 * dw) < 1e-12


# ---------------------------------------------------------------- dtypes, errors, compilation
@pytest.mark.slow
def test_float32_in_gives_float32_out():
    randn = _course_input()
    x, w, b = (a.astype(np.float32) for a in (randn(4, 6), randn(6, 3), randn(3)))
    out, cache = L.affine_forward(x, w, b)
    assert out.dtype == np.float32 and all(
        g.dtype == np.float32 for g in L.affine_backward(out, cache)
    )
    bn = {"mode": "train"}
    out, cache = L.batchnorm_forward(x, np.ones(6, np.float32), np.zeros(6, np.float32), bn)
    assert out.dtype == bn["running_mean"].dtype == np.float32
    assert L.batchnorm_backward_alt(out, cache)[0].dtype == np.float32
    assert L.dropout_forward(x, {"mode": "train", "p": 0.5})[0].dtype == np.float32
    loss, dx = L.softmax_loss(out, np.array([0, 1, 2, 0]))
    assert isinstance(loss, np.float32) and dx.dtype == np.float32
    next_w, config = optim.adam(w, w)
    assert next_w.dtype == config["m"].dtype == np.float32
    model, ref, X, y = _fc_pair(N_FC, normalization="batchnorm")
    model32 = FullyConnectedNet(
        [H1, H2], input_dim=D_FC, num_classes=C_FC, normalization="batchnorm", dtype=np.float32
    )
    model32.params = {k: v.astype(np.float32) for k, v in model.params.items()}
    loss, grads = model32.loss(X, y)  # float64 X is cast to the model's dtype, as in the course
    assert isinstance(loss, np.float32) and all(g.dtype == np.float32 for g in grads.values())
    assert model32.bn_params[0]["running_mean"].dtype == np.float32
    assert model32.loss(X).dtype == np.float32 and abs(loss - ref.loss(X, y)[0]) < 1e-5


def test_bad_inputs_raise_clear_errors():
    x = np.ones((2, 3))
    for p in [0, -0.1, 1.5]:
        with pytest.raises(ValueError, match="KEEP"):
            L.dropout_forward(x, {"mode": "train", "p": p})
    with pytest.raises(ValueError, match="'p'"):
        L.dropout_forward(x, {"mode": "train"})
    with pytest.raises(ValueError, match="mode"):
        L.dropout_forward(x, {"mode": "eval", "p": 0.5})
    with pytest.raises(ValueError, match="mode"):
        L.batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "inference"})
    with pytest.raises(ValueError, match="labels"):
        L.softmax_loss(x, np.array([0, 3]))
    with pytest.raises(ValueError, match="dropout_keep_ratio"):
        FullyConnectedNet([4], dropout_keep_ratio=0)
    with pytest.raises(ValueError, match="normalization"):
        FullyConnectedNet([4], normalization="groupnorm")
    with pytest.raises(TypeError, match="alias"):
        FullyConnectedNet([4], dropout_keep_ratio=0.5, dropout=0.5)
    model = FullyConnectedNet([4], input_dim=3, num_classes=2, normalization="batchnorm")
    with pytest.raises(ValueError, match="integer labels"):
        model.loss(x, np.array([0.0, 1.0]))
    model.bn_params[0]["momentum"] = 0.5
    with pytest.raises(ValueError, match="momentum"):
        model.loss(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="learning_rate"):
        optim.sgd(x, x, {"learning_rate": -1.0})
    with pytest.raises(ValueError, match="shape"):
        optim.sgd(x, np.ones(3))


def test_model_loss_compiles_once_and_reg_is_data(caplog):
    np.random.seed(0)
    model = FullyConnectedNet([7, 11], input_dim=13, num_classes=5, dtype=np.float64, reg=0.1)
    X, y = np.random.randn(4, 13), np.array([0, 1, 2, 4])
    traces = _bridge.trace_count()
    first = model.loss(X, y)[0]
    assert _bridge.trace_count() == traces + 1  # dims unique to this test: one new trace
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        assert model.loss(X, y)[0] == first
        model.reg = 0.5
        second = model.loss(X, y)[0]
        model.params["W1"] = model.params["W1"] * 2  # a new array of the same shape
        model.loss(X, y)
    assert _bridge.trace_count() == traces + 1
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
    W = [model.params["W1"] / 2, model.params["W2"], model.params["W3"]]
    assert abs(second - first - 0.5 * 0.4 * sum(np.sum(w * w) for w in W)) < 1e-12
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):  # the instruments do see one
        model.loss(X[:3], y[:3])  # a new batch size: jax.jit traces and compiles again
    assert _bridge.trace_count() == traces + 2
    assert [r for r in caplog.records if "Compiling" in r.getMessage()]


def test_model_loss_call_overhead():
    """Guards against per-call recompilation (which costs tens of ms), not a benchmark."""
    import timeit

    model, _, X, y = _fc_pair(3, normalization=None)
    model.loss(X, y)
    per_call = min(timeit.repeat(lambda: model.loss(X, y), number=50, repeat=3)) / 50
    assert per_call < 5e-3


def test_star_imports_and_grad_check_sparse(capsys):
    import random

    ns = {}
    exec("from fc_jax.cs231n.layers import *\nfrom fc_jax.cs231n.layer_utils import *", ns)
    course = {"affine_forward", "batchnorm_backward_alt", "dropout_forward", "softmax_loss"}
    assert course | {"affine_relu_forward", "affine_bn_relu_backward"} <= ns.keys()
    randn = _course_input()
    x, y = randn(5, 4), np.random.randint(4, size=5)
    random.seed(0)
    grad_check_sparse(lambda x: L.softmax_loss(x, y)[0], x, L.softmax_loss(x, y)[1], num_checks=5)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and all(float(s.split()[-1]) < 1e-7 for s in lines)

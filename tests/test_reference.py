"""Tests for fc_jax.reference, the NumPy oracle: course golden values, central differences,
closed-form statistics, the Solver's RNG order, and that importing it never imports JAX."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fc_jax.reference import layers as L
from fc_jax.reference.fc_net import FullyConnectedNet, TwoLayerNet
from fc_jax.reference.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)
from fc_jax.reference.solver import Solver

REPO = Path(__file__).resolve().parents[1]


def _num_grads(fwd, args, dout):
    """Central-difference vjp of `fwd(*args)[0]` w.r.t. each array in args (float64)."""
    grads = []
    for i, a in enumerate(args):
        f = lambda v, i=i: fwd(*args[:i], v, *args[i + 1 :])[0]
        grads.append(eval_numerical_gradient_array(f, a, dout))
    return grads


# ---------------------------------------------------------------------------- no JAX, ever


def test_importing_reference_never_imports_jax():
    code = """
import sys
import numpy as np
import fc_jax.reference as R
np.random.seed(0)
X, y = np.random.randn(20, 4), np.random.randint(3, size=20)
net = R.FullyConnectedNet([5], input_dim=4, num_classes=3, normalization='batchnorm',
                          dropout_keep_ratio=0.5, seed=1)
R.Solver(net, {'X_train': X, 'y_train': y, 'X_val': X, 'y_val': y}, update_rule='adam',
         batch_size=10, num_epochs=1, verbose=False).train()
R.gradient_check.rel_error(X, X)
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib'))
assert not bad, bad
print('ok')
"""
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


# ---------------------------------------------------------------------------- golden values


def test_affine_and_relu_forward_match_course_values():
    x = np.linspace(-0.1, 0.5, num=240).reshape(2, 4, 5, 6)
    w = np.linspace(-0.2, 0.3, num=360).reshape(120, 3)
    b = np.linspace(-0.3, 0.1, num=3)
    out, _ = L.affine_forward(x, w, b)
    correct = np.array([[1.49834967, 1.70660132, 1.91485297], [3.25553199, 3.5141327, 3.77273342]])
    assert rel_error(out, correct) < 1e-8

    out, _ = L.relu_forward(np.linspace(-0.5, 0.5, num=12).reshape(3, 4))
    correct = [
        [0, 0, 0, 0],
        [0, 0, 0.04545455, 0.13636364],
        [0.22727273, 0.31818182, 0.40909091, 0.5],
    ]
    assert rel_error(out, np.array(correct)) < 1e-7


def test_two_layer_net_matches_course_values():
    N, D, H, C, std = 3, 5, 50, 7, 1e-3
    np.random.seed(231)
    model = TwoLayerNet(input_dim=D, hidden_dim=H, num_classes=C, weight_scale=std)
    assert abs(model.params["W1"].std() - std) < std / 10 and not model.params["b1"].any()
    assert abs(model.params["W2"].std() - std) < std / 10 and not model.params["b2"].any()
    model.params["W1"] = np.linspace(-0.7, 0.3, num=D * H).reshape(D, H)
    model.params["b1"] = np.linspace(-0.1, 0.9, num=H)
    model.params["W2"] = np.linspace(-0.3, 0.4, num=H * C).reshape(H, C)
    model.params["b2"] = np.linspace(-0.9, 0.1, num=C)
    X = np.linspace(-5.5, 4.5, num=N * D).reshape(D, N).T
    # fmt: off
    correct = np.array([
        [11.53165108, 12.2917344, 13.05181771, 13.81190102, 14.57198434, 15.33206765, 16.09215096],
        [12.05769098, 12.74614105, 13.43459113, 14.1230412, 14.81149128, 15.49994135, 16.18839143],
        [12.58373087, 13.20054771, 13.81736455, 14.43418138, 15.05099822, 15.66781506, 16.2846319],
    ])
    # fmt: on
    assert np.abs(model.loss(X) - correct).sum() < 1e-6
    y = np.array([0, 5, 1])
    assert abs(model.loss(X, y)[0] - 3.4702243556) < 1e-10
    model.reg = 1.0
    loss, grads = model.loss(X, y)
    assert abs(loss - 26.5948426952) < 1e-10
    for model.reg in (0.0, 0.7):  # the notebook's check: errors below 1e-6
        _, grads = model.loss(X, y)
        for name in grads:
            num = eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params[name], False)
            assert rel_error(num, grads[name]) < 1e-6, name


@pytest.mark.parametrize(
    "normalization, losses",
    [
        (None, (2.3004790897684924, 7.052114776533016)),
        ("batchnorm", (2.2611955101340957, 6.996533220108303)),
    ],
)
def test_fc_net_initial_loss_matches_course_notebook(normalization, losses):
    np.random.seed(231)
    X, y = np.random.randn(2, 15), np.random.randint(10, size=(2,))
    for reg, expected in zip((0, 3.14), losses, strict=True):
        model = FullyConnectedNet(
            [20, 30],
            input_dim=15,
            num_classes=10,
            reg=reg,
            weight_scale=5e-2,
            dtype=np.float64,
            normalization=normalization,
        )
        assert abs(model.loss(X, y)[0] - expected) < 1e-12


# ---------------------------------------------------------------------------- layer gradients


def _layer_cases():
    """(name, forward with cache as last output, args, backward, N x out shape) in float64."""
    r = np.random.RandomState(231)
    x, w, b = r.randn(10, 2, 3), r.randn(6, 5), r.randn(5)
    xn, gamma, beta = 5 * r.randn(4, 5) + 12, r.randn(5), r.randn(5)
    train = lambda: {"mode": "train"}
    return [
        ("affine", L.affine_forward, (x, w, b), L.affine_backward, (10, 5)),
        (
            "relu",
            L.relu_forward,
            (r.randn(10, 10),),
            lambda d, c: (L.relu_backward(d, c),),
            (10, 10),
        ),
        ("affine_relu", L.affine_relu_forward, (x, w, b), L.affine_relu_backward, (10, 5)),
        (
            "batchnorm",
            lambda x, g, b: L.batchnorm_forward(x, g, b, train()),
            (xn, gamma, beta),
            L.batchnorm_backward,
            (4, 5),
        ),
        (
            "batchnorm_alt",
            lambda x, g, b: L.batchnorm_forward(x, g, b, train()),
            (xn, gamma, beta),
            L.batchnorm_backward_alt,
            (4, 5),
        ),
        (
            "batchnorm_test_mode",
            lambda x, g, b: L.batchnorm_forward(
                x,
                g,
                b,
                {
                    "mode": "test",
                    "running_mean": r.randn(5) * 0 + 11.0,
                    "running_var": np.full(5, 20.0),
                },
            ),
            (xn, gamma, beta),
            L.batchnorm_backward,
            (4, 5),
        ),
        (
            "layernorm",
            lambda x, g, b: L.layernorm_forward(x, g, b, {}),
            (xn, gamma, beta),
            L.layernorm_backward,
            (4, 5),
        ),
        (
            "dropout",
            lambda x: L.dropout_forward(x, {"mode": "train", "p": 0.2, "seed": 123}),
            (r.randn(10, 10) + 10,),
            lambda d, c: (L.dropout_backward(d, c),),
            (10, 10),
        ),
    ]


@pytest.mark.parametrize("case", _layer_cases(), ids=lambda c: c[0])
def test_layer_backward_matches_central_differences(case):
    _, fwd, args, bwd, out_shape = case
    dout = np.random.RandomState(0).randn(*out_shape)
    _, cache = fwd(*args)
    grads = bwd(dout, cache)
    assert len(grads) == len(args)
    for g, num, a in zip(grads, _num_grads(fwd, args, dout), args, strict=True):
        assert g.shape == a.shape
        assert rel_error(g, num) < 1e-7


def test_batchnorm_backward_equals_alt():
    r = np.random.RandomState(231)
    x, gamma, beta, dout = 5 * r.randn(100, 500) + 12, r.randn(500), r.randn(500), r.randn(100, 500)
    _, cache = L.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    alt = L.batchnorm_backward_alt(dout, cache)
    for g1, g2 in zip(L.batchnorm_backward(dout, cache), alt, strict=True):
        assert rel_error(g1, g2) < 1e-10


@pytest.mark.parametrize("loss_fn", [L.svm_loss, L.softmax_loss])
def test_loss_gradients_match_central_differences(loss_fn):
    r = np.random.RandomState(231)
    x, y = 0.001 * r.randn(50, 10), r.randint(10, size=50)  # margins ~1: far from the hinge's kink
    loss, dx = loss_fn(x, y)
    num = eval_numerical_gradient(lambda v: loss_fn(v, y)[0], x, verbose=False)
    assert rel_error(dx, num) < 1e-7
    expected = 9.0 if loss_fn is L.svm_loss else np.log(10)  # (C - 1) * margin / chance
    assert abs(loss - expected) < 1e-2


def test_softmax_loss_is_stable_and_matches_formula():
    r = np.random.RandomState(0)
    x, y = r.randn(6, 4), r.randint(4, size=6)
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    loss, dx = L.softmax_loss(x, y)
    assert abs(loss + np.mean(np.log(p[np.arange(6), y]))) < 1e-12
    loss_big, dx_big = L.softmax_loss(x + 1000.0, y)  # unshifted exp would overflow
    assert abs(loss_big - loss) < 1e-9 and rel_error(dx_big, dx) < 1e-9


@pytest.mark.parametrize("ls", [0.1, 0.5])
def test_smoothed_softmax_loss_matches_formula_and_central_differences(ls):
    r = np.random.RandomState(1)
    x, y = r.randn(6, 5), r.randint(5, size=6)
    target = (1 - ls) * np.eye(5)[y] + ls / 5
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    loss, dx = L.softmax_loss(x, y, ls)
    assert abs(loss + np.mean(np.sum(target * np.log(p), axis=1))) < 1e-12
    assert rel_error(dx, (p - target) / 6) < 1e-12
    num = eval_numerical_gradient(lambda v: L.softmax_loss(v, y, ls)[0], x, verbose=False)
    assert np.abs(dx).min() > 5e-4  # entries near 0 would measure round-off, not the gradient
    assert rel_error(dx, num) < 1e-7
    loss0, dx0 = L.softmax_loss(x, y, 0.0)  # no smoothing: the course's loss, bit for bit
    assert loss0 == L.softmax_loss(x, y)[0] and np.array_equal(dx0, L.softmax_loss(x, y)[1])


@pytest.mark.parametrize("ls", [1.0, -0.1, np.nan])
def test_softmax_loss_rejects_bad_label_smoothing(ls):
    with pytest.raises(ValueError, match="label_smoothing"):
        L.softmax_loss(np.zeros((2, 3)), np.array([0, 1]), ls)


@pytest.mark.parametrize("loss_fn", [L.svm_loss, L.softmax_loss])
@pytest.mark.parametrize("y", [np.array([0, 3]), np.array([0.0, 1.0]), np.array([0, 1, 2])])
def test_losses_reject_bad_labels(loss_fn, y):
    with pytest.raises(ValueError, match="y|labels"):
        loss_fn(np.zeros((2, 3)), y)


# ---------------------------------------------------------------------------- normalization


def _bn_inputs(r, N=200):
    W1, W2 = r.randn(50, 60), r.randn(60, 3)
    return lambda: np.maximum(0, r.randn(N, 50) @ W1) @ W2


def test_batchnorm_train_output_has_mean_beta_and_std_gamma():
    a = _bn_inputs(np.random.RandomState(231))()
    gamma, beta = np.array([1.0, 2.0, 3.0]), np.array([11.0, 12.0, 13.0])
    out, _ = L.batchnorm_forward(a, gamma, beta, {"mode": "train"})
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-9)
    np.testing.assert_allclose(out.std(axis=0), gamma, rtol=1e-6)


def test_batchnorm_running_stats_follow_the_ema_formula():
    r = np.random.RandomState(1)
    x1, x2 = r.randn(8, 3) + 4, 2 * r.randn(8, 3)
    bn = {"mode": "train", "momentum": 0.8}
    for x in (x1, x2):
        L.batchnorm_forward(x, np.ones(3), np.zeros(3), bn)
    np.testing.assert_allclose(bn["running_mean"], 0.8 * 0.2 * x1.mean(0) + 0.2 * x2.mean(0))
    np.testing.assert_allclose(bn["running_var"], 0.8 * 0.2 * x1.var(0) + 0.2 * x2.var(0))
    out, _ = L.batchnorm_forward(x1, np.ones(3), np.zeros(3), {**bn, "mode": "test", "eps": 0.5})
    expected = (x1 - bn["running_mean"]) / np.sqrt(bn["running_var"] + 0.5)
    np.testing.assert_allclose(out, expected)


def test_batchnorm_test_mode_after_training_passes():
    r = np.random.RandomState(231)
    draw = _bn_inputs(r)
    bn = {"mode": "train"}
    for _ in range(50):
        L.batchnorm_forward(draw(), np.ones(3), np.zeros(3), bn)
    bn["mode"] = "test"
    out, _ = L.batchnorm_forward(draw(), np.ones(3), np.zeros(3), bn)
    assert np.all(np.abs(out.mean(axis=0)) < 0.2) and np.all(np.abs(out.std(axis=0) - 1) < 0.2)
    with pytest.raises(ValueError, match="mode"):
        L.batchnorm_forward(draw(), np.ones(3), np.zeros(3), {"mode": "eval"})


def test_layernorm_normalizes_each_example():
    a = _bn_inputs(np.random.RandomState(231), N=4)()
    out, _ = L.layernorm_forward(a, np.full(3, 3.0), np.full(3, 5.0), {})
    np.testing.assert_allclose(out.mean(axis=1), 5.0, atol=1e-9)
    np.testing.assert_allclose(out.std(axis=1), 3.0, rtol=1e-5)


# ---------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("p", [0.25, 0.4, 0.7])
def test_dropout_statistics(p):
    x = np.random.RandomState(231).randn(500, 500) + 10
    out, _ = L.dropout_forward(x, {"mode": "train", "p": p, "seed": 123})
    assert abs(out.mean() / x.mean() - 1) < 0.01
    assert abs(np.mean(out == 0) - (1 - p)) < 0.01
    out_test, _ = L.dropout_forward(x, {"mode": "test", "p": p, "seed": 123})
    np.testing.assert_array_equal(out_test, x)
    reseeded = np.random.rand()  # the course seeds before looking at the mode
    np.random.seed(123)
    assert reseeded == np.random.rand()
    np.random.seed(123)
    np.testing.assert_array_equal(out, x * ((np.random.rand(500, 500) < p) / p))


def test_dropout_uses_an_explicit_mask_without_drawing():
    r = np.random.RandomState(0)
    x, dout = r.randn(4, 6), r.randn(4, 6)
    mask = (r.rand(4, 6) < 0.5) / 0.5
    state = np.random.get_state()[1].copy()
    out, cache = L.dropout_forward(x, {"mode": "train", "p": 0.5, "mask": mask})
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    np.testing.assert_array_equal(out, x * mask)
    np.testing.assert_array_equal(L.dropout_backward(dout, cache), dout * mask)
    with pytest.raises(ValueError, match="mask"):
        L.dropout_forward(x, {"mode": "train", "p": 0.5, "mask": mask[:2]})
    with pytest.raises(ValueError, match="keep probability"):
        L.dropout_forward(x, {"mode": "train", "p": 0.0})


# ---------------------------------------------------------------------------- dtypes


def test_float32_in_gives_float32_out():
    r = np.random.RandomState(0)
    f = lambda *s: r.randn(*s).astype(np.float32)
    x, w, b, g, be, dout = f(4, 2, 3), f(6, 5), f(5), f(5), f(5), f(4, 5)
    outs = []
    out, c = L.affine_relu_forward(x, w, b)
    outs += [out, *L.affine_relu_backward(dout, c)]
    bn = {"mode": "train"}
    out, c = L.batchnorm_forward(dout, g, be, bn)
    outs += [out, *L.batchnorm_backward(dout, c), *L.batchnorm_backward_alt(dout, c)]
    outs += [bn["running_mean"], bn["running_var"]]
    out, c = L.layernorm_forward(dout, g, be, {})
    outs += [out, *L.layernorm_backward(dout, c)]
    out, c = L.dropout_forward(dout, {"mode": "train", "p": 0.3})
    outs += [out, L.dropout_backward(dout, c)]
    y = np.array([0, 1, 4, 2])
    for loss_fn in (L.svm_loss, L.softmax_loss):
        outs += list(loss_fn(dout, y))
    net = FullyConnectedNet([7], input_dim=6, num_classes=5, normalization="batchnorm", reg=0.1)
    loss, grads = net.loss(x.astype(np.float64), y)
    outs += [loss, *grads.values(), *net.params.values(), net.loss(x)]
    outs += [net.bn_params[0]["running_mean"], net.bn_params[0]["running_var"]]
    assert [np.asarray(o).dtype for o in outs] == [np.float32] * len(outs)


# ---------------------------------------------------------------------------- FullyConnectedNet

FC_CONFIGS = {
    "plain": {},
    "batchnorm": {"normalization": "batchnorm"},
    "layernorm": {"normalization": "layernorm"},
    "dropout": {"dropout_keep_ratio": 0.5, "seed": 123},
    "batchnorm_dropout": {"normalization": "batchnorm", "dropout_keep_ratio": 0.75, "seed": 1},
    "layernorm_dropout": {"normalization": "layernorm", "dropout_keep_ratio": 0.75, "seed": 1},
}


@pytest.mark.parametrize("reg", [0.0, 3.14])
@pytest.mark.parametrize("name", FC_CONFIGS)
def test_fc_net_gradients_match_central_differences(name, reg):
    np.random.seed(0)
    X, y = np.random.randn(5, 8), np.random.randint(6, size=5)
    model = FullyConnectedNet(
        [10, 9],
        input_dim=8,
        num_classes=6,
        reg=reg,
        weight_scale=0.5,
        dtype=np.float64,
        **FC_CONFIGS[name],
    )
    loss, grads = model.loss(X, y)
    assert sorted(grads) == sorted(model.params)
    for k, g in grads.items():
        num = eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params[k], False)
        if k in ("b1", "b2") and name.startswith("batchnorm"):
            # A bias right before batchnorm cancels out: its gradient is exactly zero.
            assert np.abs(g).max() < 1e-12 and np.abs(num).max() < 1e-8
        else:
            assert rel_error(g, num) < 1e-5, k


def test_fc_net_init_follows_course_order_and_dtype():
    np.random.seed(7)
    model = FullyConnectedNet(
        [4, 3], input_dim=5, num_classes=2, normalization="layernorm", weight_scale=0.1
    )
    np.random.seed(7)
    dims = [5, 4, 3, 2]
    for i in range(1, 4):
        expected = (0.1 * np.random.randn(dims[i - 1], dims[i])).astype(np.float32)
        np.testing.assert_array_equal(model.params[f"W{i}"], expected)
        np.testing.assert_array_equal(model.params[f"b{i}"], np.zeros(dims[i], np.float32))
    assert sorted(model.params) == sorted(
        ["W1", "b1", "W2", "b2", "W3", "b3", "gamma1", "beta1", "gamma2", "beta2"]
    )
    assert all(v.dtype == np.float32 for v in model.params.values())
    assert np.all(model.params["gamma2"] == 1) and np.all(model.params["beta1"] == 0)
    with pytest.raises(ValueError, match="normalization"):
        FullyConnectedNet([4], normalization="groupnorm")
    with pytest.raises(ValueError, match="dropout_keep_ratio"):
        FullyConnectedNet([4], dropout_keep_ratio=0.0)


def test_fc_net_modes_and_running_stats():
    np.random.seed(0)
    X, y = np.random.randn(6, 5), np.random.randint(3, size=6)
    model = FullyConnectedNet(
        [4], input_dim=5, num_classes=3, normalization="batchnorm", dropout_keep_ratio=0.5, reg=0.5
    )
    model.loss(X, y)
    bn = model.bn_params[0]
    assert bn["mode"] == "train" and model.dropout_param["mode"] == "train"
    a = X.astype(np.float32) @ model.params["W1"] + model.params["b1"]
    np.testing.assert_allclose(bn["running_mean"], 0.1 * a.mean(0), rtol=1e-5)
    scores = model.loss(X)
    assert scores.shape == (6, 3) and bn["mode"] == "test" and model.dropout_param["mode"] == "test"
    np.testing.assert_array_equal(model.loss(X), scores)  # test mode is deterministic


# ---------------------------------------------------------------------------- Solver


def _toy_data(n=50, d=5, c=3, seed=0):
    r = np.random.RandomState(seed)
    centres = 3 * r.randn(c, d)
    y = r.randint(c, size=2 * n)
    X = centres[y] + r.randn(2 * n, d)
    return {"X_train": X[:n], "y_train": y[:n], "X_val": X[n:], "y_val": y[n:]}


def test_solver_trains_and_prints_course_lines(capsys):
    np.random.seed(231)
    data = _toy_data()
    model = FullyConnectedNet([20], input_dim=5, num_classes=3, weight_scale=1e-2)
    solver = Solver(
        model,
        data,
        update_rule="adam",
        optim_config={"learning_rate": 5e-2},
        lr_decay=0.5,
        batch_size=5,
        num_epochs=2,
        print_every=4,
    )
    solver.train()
    lines = capsys.readouterr().out.splitlines()
    its = [ln for ln in lines if ln.startswith("(Iteration")]
    eps = [ln for ln in lines if ln.startswith("(Epoch")]
    assert len(its) == 5 and len(eps) == 3 and len(lines) == 8  # 20 iterations
    assert all(re.fullmatch(r"\(Iteration \d+ / 20\) loss: \d+\.\d{6}", ln) for ln in its)
    pat = r"\(Epoch ([012]) / 2\) train acc: (\d\.\d{6}); val_acc: (\d\.\d{6})"
    assert [re.fullmatch(pat, ln).group(1) for ln in eps] == ["0", "1", "2"]
    assert its[1].startswith("(Iteration 5 / 20)") and float(its[1][-8:]) == pytest.approx(
        float(solver.loss_history[4]), abs=1e-6
    )
    assert solver.train_acc_history[-1] > solver.train_acc_history[0] + 0.4
    assert np.mean(solver.loss_history[-3:]) < solver.loss_history[0]
    assert max(solver.val_acc_history) == solver.best_val_acc > 0.9
    assert model.params is solver.best_params
    for cfg in solver.optim_configs.values():
        assert cfg["learning_rate"] == pytest.approx(5e-2 * 0.5**2) and cfg["t"] == 20
    assert solver.optim_config == {"learning_rate": 5e-2}  # per-parameter copies


class _Recorder:
    """A model that records the batches it sees and predicts class 0."""

    def __init__(self):
        self.params, self.seen = {"w": np.zeros(2)}, []

    def loss(self, X, y=None):
        self.seen.append(X[:, 0].astype(int))
        if y is None:
            return np.zeros((len(X), 2))
        return 0.0, {"w": np.ones(2)}


def test_solver_draws_batches_and_samples_in_course_order():
    data = {"X_train": np.arange(30.0)[:, None], "y_train": np.zeros(30, int)}
    data |= {"X_val": np.arange(7.0)[:, None], "y_val": np.zeros(7, int)}
    np.random.seed(3)
    expected_batch = np.random.choice(30, 8)
    expected_sample = np.random.choice(30, 12)
    model = _Recorder()
    solver = Solver(model, data, batch_size=8, num_train_samples=12, verbose=False)
    np.random.seed(3)
    solver._step()
    assert (
        solver.check_accuracy(data["X_train"], data["y_train"], num_samples=12, batch_size=5) == 1
    )
    np.testing.assert_array_equal(model.seen[0], expected_batch)
    np.testing.assert_array_equal(np.concatenate(model.seen[1:]), expected_sample)
    assert [len(s) for s in model.seen[1:]] == [5, 5, 2]
    np.testing.assert_array_equal(model.params["w"], -1e-2 * np.ones(2))  # one sgd step


def test_solver_rejects_bad_arguments():
    data = _toy_data(n=4)
    model = TwoLayerNet(input_dim=5, hidden_dim=3, num_classes=3)
    with pytest.raises(ValueError, match="nesterov"):
        Solver(model, data, update_rule="nesterov")
    with pytest.raises(ValueError, match="learning_rate"):
        Solver(model, data, learning_rate=1e-3)
    with pytest.raises(ValueError, match="X_val"):
        Solver(model, {"X_train": data["X_train"], "y_train": data["y_train"]})

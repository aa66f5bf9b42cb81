"""Replay the cs231n FullyConnectedNets notebook end to end through the `fc_jax.cs231n` facade.

Usage: python scripts/fully_connected_nets.py [--data-dir DIR] [--out runs/notebooks] [--quick]

Sections, as in the notebook: layer checks (affine, relu, the affine-relu sandwich, svm and
softmax losses) and the TwoLayerNet / FullyConnectedNet gradient checks, printing the relative
errors; overfitting 50 CIFAR-10 training images to 100% train accuracy with a three-layer and a
five-layer net; sgd vs sgd_momentum vs rmsprop vs adam on 4000 images for 5 epochs; and a best
model trained on the full training set (>= 50% validation accuracy), with validation and test
accuracy. Figures go to --out. Data: --data-dir, else $FC_JAX_DATA_DIR, else ../shared/data.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the Agg canvas, no pyplot and no display needed

from fc_jax.cs231n import layers as L
from fc_jax.cs231n.classifiers.fc_net import FullyConnectedNet, TwoLayerNet
from fc_jax.cs231n.data_utils import get_CIFAR10_data
from fc_jax.cs231n.layer_utils import affine_relu_backward, affine_relu_forward
from fc_jax.cs231n.solver import Solver
from fc_jax.reference.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)


def _vjp_errors(name, fwd, args, dout, grads):
    """Print each analytic gradient's relative error against central differences of `fwd`."""
    for i, (arg, g) in enumerate(zip(args, grads, strict=True)):
        f = lambda v, i=i: fwd(*args[:i], v, *args[i + 1 :])[0]
        num = eval_numerical_gradient_array(f, arg, dout)
        print(f"{name} d{'xwb'[i]} relative error: {rel_error(num, g):.2e}")


def layer_checks():
    print("== Layer checks")
    x = np.linspace(-0.1, 0.5, num=240).reshape(2, 4, 5, 6)
    w, b = np.linspace(-0.2, 0.3, num=360).reshape(120, 3), np.linspace(-0.3, 0.1, num=3)
    correct = [[1.49834967, 1.70660132, 1.91485297], [3.25553199, 3.5141327, 3.77273342]]
    print("affine_forward difference:", rel_error(L.affine_forward(x, w, b)[0], correct))
    np.random.seed(231)
    args = np.random.randn(10, 2, 3), np.random.randn(6, 5), np.random.randn(5)
    dout = np.random.randn(10, 5)
    grads = L.affine_backward(dout, L.affine_forward(*args)[1])
    _vjp_errors("affine_backward", L.affine_forward, args, dout, grads)
    x = np.linspace(-0.5, 0.5, num=12).reshape(3, 4)
    correct = [
        [0, 0, 0, 0],
        [0, 0, 0.04545455, 0.13636364],
        [0.22727273, 0.31818182, 0.40909091, 0.5],
    ]
    print("relu_forward difference:", rel_error(L.relu_forward(x)[0], correct))
    np.random.seed(231)
    x, dout = np.random.randn(10, 10), np.random.randn(10, 10)
    num = eval_numerical_gradient_array(lambda v: L.relu_forward(v)[0], x, dout)
    print("relu_backward dx error:", rel_error(num, L.relu_backward(dout, L.relu_forward(x)[1])))
    np.random.seed(231)
    x, w, b = np.random.randn(2, 3, 4), np.random.randn(12, 10), np.random.randn(10)
    dout = np.random.randn(2, 10)
    grads = affine_relu_backward(dout, affine_relu_forward(x, w, b)[1])
    _vjp_errors("affine_relu_backward", affine_relu_forward, (x, w, b), dout, grads)
    np.random.seed(231)
    x, y = 0.001 * np.random.randn(50, 10), np.random.randint(10, size=50)
    for name, expected in (("svm_loss", "9"), ("softmax_loss", "2.3")):
        fn = getattr(L, name)
        loss, dx = fn(x, y)
        num = eval_numerical_gradient(lambda v, fn=fn: fn(v, y)[0], x, verbose=False)
        print(
            f"{name}: loss {loss:.6f} (should be about {expected}), dx error {rel_error(num, dx):.2e}"
        )


def net_checks():
    print("== TwoLayerNet")
    np.random.seed(231)
    N, D, H, C = 3, 5, 50, 7
    model = TwoLayerNet(input_dim=D, hidden_dim=H, num_classes=C, weight_scale=1e-3)
    for name, (lo, hi), shape in [
        ("W1", (-0.7, 0.3), (D, H)),
        ("b1", (-0.1, 0.9), (H,)),
        ("W2", (-0.3, 0.4), (H, C)),
        ("b2", (-0.9, 0.1), (C,)),
    ]:
        model.params[name] = np.linspace(lo, hi, num=int(np.prod(shape))).reshape(shape)
    X, y = np.linspace(-5.5, 4.5, num=N * D).reshape(D, N).T, np.asarray([0, 5, 1])
    for reg, correct in ((0.0, 3.4702243556), (1.0, 26.5948426952)):
        model.reg = reg
        print(f"reg={reg}: loss {model.loss(X, y)[0]:.10f}, course {correct}")
    for reg in (0.0, 0.7):
        model.reg = reg
        _, grads = model.loss(X, y)
        for name in sorted(grads):
            num = eval_numerical_gradient(
                lambda _: model.loss(X, y)[0], model.params[name], verbose=False
            )
            print(f"reg={reg} {name} relative error: {rel_error(num, grads[name]):.2e}")
    print("== FullyConnectedNet [20, 30]")
    np.random.seed(231)
    X, y = np.random.randn(2, 15), np.random.randint(10, size=2)
    for reg in (0, 3.14):
        model = FullyConnectedNet(
            [20, 30], input_dim=15, num_classes=10, reg=reg, weight_scale=5e-2, dtype=np.float64
        )
        loss, grads = model.loss(X, y)
        print(f"reg={reg}: initial loss {loss}")
        for name in sorted(grads):
            num = eval_numerical_gradient(
                lambda _, m=model: m.loss(X, y)[0], model.params[name], verbose=False
            )
            print(f"  {name} relative error: {rel_error(num, grads[name]):.2e}")


def _subset(data, n):
    """The course's small_data: the first n training images, the full validation set."""
    return {
        "X_train": data["X_train"][:n],
        "y_train": data["y_train"][:n],
        "X_val": data["X_val"],
        "y_val": data["y_val"],
    }


def overfit(data, out):
    print("== Overfit 50 training images")
    small = _subset(data, 50)
    fig = Figure()
    ax = fig.subplots()
    for name, hidden, ws, lr in (
        ("three-layer", [100, 100], 1e-2, 1e-2),
        ("five-layer", [100] * 4, 5e-2, 1e-2),
    ):
        np.random.seed(231)
        model = FullyConnectedNet(hidden, weight_scale=ws, dtype=np.float64)
        solver = Solver(
            model,
            small,
            print_every=10,
            num_epochs=20,
            batch_size=25,
            update_rule="sgd",
            optim_config={"learning_rate": lr},
        )
        solver.train()
        print(f"{name}: train acc history {[round(float(a), 2) for a in solver.train_acc_history]}")
        ax.plot(solver.loss_history, label=f"{name} (ws={ws}, lr={lr})")
    ax.set(title="Training loss history", xlabel="Iteration", ylabel="Training loss")
    ax.legend()
    fig.savefig(out / "overfit_loss.png", dpi=100)


def optimizers(data, out):
    print("== Update rules on 4000 images, 5 epochs")
    small = _subset(data, 4000)
    lrs = {"sgd": 5e-3, "sgd_momentum": 5e-3, "rmsprop": 1e-4, "adam": 1e-3}
    fig = Figure(figsize=(12, 12))
    axes = fig.subplots(3, 1)
    for rule, lr in lrs.items():
        print("Running with", rule)
        np.random.seed(231)
        model = FullyConnectedNet([100] * 5, weight_scale=5e-2)
        solver = Solver(
            model,
            small,
            num_epochs=5,
            batch_size=100,
            update_rule=rule,
            optim_config={"learning_rate": lr},
            verbose=True,
            print_every=50,
        )
        t0 = time.perf_counter()
        solver.train()
        print(
            f"{rule}: final train acc {solver.train_acc_history[-1]:.3f}, best val acc "
            f"{solver.best_val_acc:.3f} ({time.perf_counter() - t0:.1f} s)"
        )
        axes[0].plot(solver.loss_history, "o", ms=2, label=rule)
        axes[1].plot(solver.train_acc_history, "-o", label=rule)
        axes[2].plot(solver.val_acc_history, "-o", label=rule)
    for ax, (title, xlabel) in zip(
        axes,
        (
            ("Training loss", "Iteration"),
            ("Training accuracy", "Epoch"),
            ("Validation accuracy", "Epoch"),
        ),
        strict=True,
    ):
        ax.set(title=title, xlabel=xlabel)
        ax.legend(loc="lower center", ncol=4)
    fig.tight_layout()
    fig.savefig(out / "update_rules.png", dpi=100)


def best_model(data):
    print("== Best model: [512, 256] + batchnorm, adam 1e-3, lr_decay 0.9, batch 200, 10 epochs")
    np.random.seed(231)
    model = FullyConnectedNet([512, 256], normalization="batchnorm", weight_scale=2e-2)
    solver = Solver(
        model,
        data,
        num_epochs=10,
        batch_size=200,
        update_rule="adam",
        optim_config={"learning_rate": 1e-3},
        lr_decay=0.9,
        print_every=500,
    )
    t0 = time.perf_counter()
    solver.train()
    seconds = time.perf_counter() - t0
    y_val_pred = np.argmax(model.loss(data["X_val"]), axis=1)
    y_test_pred = np.argmax(model.loss(data["X_test"]), axis=1)
    print(f"Validation set accuracy: {(y_val_pred == data['y_val']).mean():.4f}")
    print(
        f"Test set accuracy: {(y_test_pred == data['y_test']).mean():.4f}  ({seconds:.0f} s training)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = (
        os.environ.get("FC_JAX_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    p.add_argument("--data-dir", default=str(default_dir), help="CIFAR-10 folder")
    p.add_argument("--out", default="runs/notebooks", help="folder for the figures")
    p.add_argument("--quick", action="store_true", help="skip the full-data best model")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    layer_checks()
    net_checks()
    data = get_CIFAR10_data(cifar10_dir=args.data_dir)
    print({k: v.shape for k, v in data.items()})
    overfit(data, out)
    optimizers(data, out)
    if not args.quick:
        best_model(data)
    print(f"done in {time.perf_counter() - t0:.0f} s; figures in {out}")


if __name__ == "__main__":
    main()

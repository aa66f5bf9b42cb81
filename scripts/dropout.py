"""Replay the cs231n Dropout notebook end to end through the `fc_jax.cs231n` facade.

Usage: python scripts/dropout.py [--data-dir DIR] [--out runs/notebooks]

Sections, as in the notebook: dropout forward statistics for keep probabilities 0.25, 0.4, 0.7
(remember: the course's `p` is the probability of KEEPING a unit); the dropout backward gradient
check; FullyConnectedNet gradient checks with dropout 1, 0.75, 0.5; and the regularization
experiment (500 training images, keep 1.0 vs 0.25, one hidden layer of 500, adam 5e-4, 25 epochs,
batch 100), whose train/val accuracies are plotted into --out/dropout_accuracy.png.
Data: --data-dir, else $FC_JAX_DATA_DIR, else ../shared/data.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the Agg canvas, no pyplot and no display needed

from fc_jax.cs231n.classifiers.fc_net import FullyConnectedNet
from fc_jax.cs231n.data_utils import get_CIFAR10_data
from fc_jax.cs231n.layers import dropout_backward, dropout_forward
from fc_jax.cs231n.solver import Solver
from fc_jax.reference.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)


def dropout_checks():
    print("== Dropout forward")
    np.random.seed(231)
    x = np.random.randn(500, 500) + 10
    for p in (0.25, 0.4, 0.7):
        out, _ = dropout_forward(x, {"mode": "train", "p": p})
        out_test, _ = dropout_forward(x, {"mode": "test", "p": p})
        print("Running tests with p = ", p)
        print("Mean of input: ", x.mean())
        print("Mean of train-time output: ", out.mean())
        print("Mean of test-time output: ", out_test.mean())
        print("Fraction of train-time output set to zero: ", (out == 0).mean())
        print("Fraction of test-time output set to zero: ", (out_test == 0).mean())
    print("== Dropout backward")
    np.random.seed(231)
    x = np.random.randn(10, 10) + 10
    dout = np.random.randn(*x.shape)
    dropout_param = {"mode": "train", "p": 0.2, "seed": 123}
    dx = dropout_backward(dout, dropout_forward(x, dropout_param)[1])
    num = eval_numerical_gradient_array(lambda v: dropout_forward(v, dropout_param)[0], x, dout)
    print("dx relative error: ", rel_error(dx, num))  # the course expects < 1e-10


def net_checks():
    print("== FullyConnectedNet with dropout")
    np.random.seed(231)
    N, D, H1, H2, C = 2, 15, 20, 30, 10
    X, y = np.random.randn(N, D), np.random.randint(C, size=(N,))
    for keep in (1, 0.75, 0.5):
        print("Running check with dropout = ", keep)
        model = FullyConnectedNet(
            [H1, H2],
            input_dim=D,
            num_classes=C,
            weight_scale=5e-2,
            dtype=np.float64,
            dropout_keep_ratio=keep,
            seed=123,
        )
        loss, grads = model.loss(X, y)
        print("Initial loss: ", loss)
        for name in sorted(grads):
            f = lambda _, m=model: m.loss(X, y)[0]
            num = eval_numerical_gradient(f, model.params[name], verbose=False, h=1e-5)
            print(f"{name} relative error: {rel_error(num, grads[name]):.2e}")


def regularization(data, out):
    print("== Regularization experiment: 500 images, keep 1.0 vs 0.25")
    np.random.seed(231)
    small = {
        "X_train": data["X_train"][:500],
        "y_train": data["y_train"][:500],
        "X_val": data["X_val"],
        "y_val": data["y_val"],
    }
    solvers = {}
    for keep in (1, 0.25):
        model = FullyConnectedNet([500], dropout_keep_ratio=keep)
        print(keep)
        solver = Solver(
            model,
            small,
            num_epochs=25,
            batch_size=100,
            update_rule="adam",
            optim_config={"learning_rate": 5e-4},
            verbose=True,
            print_every=100,
        )
        t0 = time.perf_counter()
        solver.train()
        solvers[keep] = solver
        print(
            f"keep {keep}: final train acc {solver.train_acc_history[-1]:.3f}, best val acc "
            f"{solver.best_val_acc:.3f} ({time.perf_counter() - t0:.1f} s)\n"
        )
    fig = Figure(figsize=(15, 15))
    axes = fig.subplots(2, 1)
    for ax, (title, attr) in zip(
        axes,
        (("Train accuracy", "train_acc_history"), ("Val accuracy", "val_acc_history")),
        strict=True,
    ):
        for keep, solver in solvers.items():
            ax.plot(getattr(solver, attr), "o", label=f"{keep:.2f} dropout_keep_ratio")
        ax.set(title=f"{title}", xlabel="Epoch", ylabel="Accuracy")
        ax.legend(ncol=2, loc="lower right")
    fig.savefig(out / "dropout_accuracy.png", dpi=80)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = (
        os.environ.get("FC_JAX_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    p.add_argument("--data-dir", default=str(default_dir), help="CIFAR-10 folder")
    p.add_argument("--out", default="runs/notebooks", help="folder for the figures")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    dropout_checks()
    net_checks()
    regularization(get_CIFAR10_data(cifar10_dir=args.data_dir), out)
    print(f"done in {time.perf_counter() - t0:.0f} s; figure in {out / 'dropout_accuracy.png'}")


if __name__ == "__main__":
    main()

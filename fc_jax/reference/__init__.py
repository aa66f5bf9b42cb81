"""NumPy-only reference implementation of the cs231n fully-connected-nets assignment.

Contract: the same math as the JAX core with the course's API (layers with `(out, cache)` and
hand-written backward passes, `FullyConnectedNet`, update rules, `Solver`), importing NumPy only and
never JAX, directly or indirectly. It is the oracle for fc_jax's tests, the `--backend numpy`
fallback trainer, and the baseline that benchmarks compare against.
"""

from fc_jax.reference import fc_net, gradient_check, layers, optim, solver
from fc_jax.reference.fc_net import FullyConnectedNet, TwoLayerNet
from fc_jax.reference.solver import Solver

__all__ = [
    "layers",
    "gradient_check",
    "fc_net",
    "optim",
    "solver",
    "FullyConnectedNet",
    "TwoLayerNet",
    "Solver",
]

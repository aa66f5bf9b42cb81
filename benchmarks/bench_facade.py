"""Per-call cost of the drop-in facade's `model.loss` after the first (jitted and cached) call.

    python benchmarks/bench_facade.py

The net of the README's notebook cell: FullyConnectedNet([20, 30], input_dim=15, num_classes=10,
float64), N = 2. Numeric gradient checks call `model.loss` thousands of times, so this is what
they pay per call. Best of 5 repeats of 2000 calls.
"""

import timeit

import numpy as np

from fc_jax.cs231n.classifiers.fc_net import FullyConnectedNet

np.random.seed(231)
X, y = np.random.randn(2, 15), np.random.randint(10, size=2)
model = FullyConnectedNet(
    [20, 30], input_dim=15, num_classes=10, weight_scale=5e-2, dtype=np.float64
)
for label, call in (
    ("loss and grads", lambda: model.loss(X, y)),
    ("scores", lambda: model.loss(X)),
):
    call()
    seconds = min(timeit.repeat(call, number=2000, repeat=5)) / 2000
    print(f"model.loss ({label}): {1e6 * seconds:.0f} us per call")

"""fc_jax.reference.solver.Solver's `sampling` option: the course's draws unchanged by default,
one permutation per epoch walked in batches with sampling="permutation"."""

import numpy as np
import pytest

from fc_jax.reference.fc_net import FullyConnectedNet
from fc_jax.reference.solver import Solver


class _Recorder:
    """A model that learns nothing and records which training rows each step saw."""

    def __init__(self):
        self.params = {"W": np.zeros(1)}
        self.batches = []

    def loss(self, X, y=None):
        if y is None:
            return np.zeros((len(X), 2))
        self.batches.append(X[:, 0].astype(int).tolist())
        return 0.0, {"W": np.zeros(1)}


def _run(N, batch_size, epochs, **kw):
    data = {
        "X_train": np.arange(N, dtype=float)[:, None],
        "y_train": np.zeros(N, int),
        "X_val": np.zeros((3, 1)),
        "y_val": np.zeros(3, int),
    }
    model = _Recorder()
    np.random.seed(7)
    Solver(model, data, batch_size=batch_size, num_epochs=epochs, verbose=False, **kw).train()
    return model.batches


@pytest.mark.parametrize("kw", [{}, {"sampling": "replace"}])
def test_replace_is_the_course_draw_sequence(kw):
    got = _run(50, 10, 3, **kw)  # N < num_train_samples: the accuracy checks draw nothing
    np.random.seed(7)
    want = [np.random.choice(50, 10).tolist() for _ in range(15)]
    assert got == want


@pytest.mark.parametrize("N", [50, 53])
def test_permutation_walks_one_fresh_permutation_per_epoch(N):
    got = _run(N, 10, 3, sampling="permutation")
    np.random.seed(7)
    orders = [np.random.permutation(N) for _ in range(3)]
    assert got == [orders[e][i * 10 : (i + 1) * 10].tolist() for e in range(3) for i in range(5)]
    for e in range(3):
        seen = sum(got[5 * e : 5 * e + 5], [])
        assert len(set(seen)) == 50  # no row twice within an epoch (53: 3 rows left out)
    assert orders[0].tolist() != orders[1].tolist()


def test_permutation_with_a_batch_larger_than_the_data():
    got = _run(7, 10, 2, sampling="permutation")
    assert len(got) == 2 and all(sorted(b) == list(range(7)) for b in got)


def test_invalid_sampling():
    with pytest.raises(
        ValueError, match=r'Invalid sampling "shuffle"; expected "replace" or "permutation"'
    ):
        _run(10, 5, 1, sampling="shuffle")


def test_permutation_trains_a_real_net():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 6))
    y = (X[:, 0] > 0).astype(int)
    data = {"X_train": X[:80], "y_train": y[:80], "X_val": X[80:], "y_val": y[80:]}
    np.random.seed(0)
    model = FullyConnectedNet([16], input_dim=6, num_classes=2, weight_scale=0.1)
    solver = Solver(
        model,
        data,
        update_rule="adam",
        optim_config={"learning_rate": 1e-2},
        batch_size=20,
        num_epochs=10,
        sampling="permutation",
        verbose=False,
    )
    solver.train()
    assert solver.loss_history[-1] < solver.loss_history[0] and solver.best_val_acc >= 0.9

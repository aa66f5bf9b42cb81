"""Minibatch training loop in NumPy: the cs231n `solver.py` API.

Contract: `Solver(model, data, **kwargs)` trains any model with `model.params` (a dict of arrays)
and `model.loss(X, y=None)` (scores when y is None, else `(loss, grads)`). `train()` runs
`num_epochs * max(N // batch_size, 1)` steps of the update rule named by `update_rule` (looked up
in `fc_jax.reference.optim`), records `loss_history`, `train_acc_history`, `val_acc_history`,
and finally swaps the parameters with the best validation accuracy into `model.params`.

Random draws follow the course exactly, from NumPy's global RNG: with `sampling="replace"` (the
default, the course's) each step draws `np.random.choice(num_train, batch_size)` (with
replacement); with `sampling="permutation"` (fc_jax's default recipe) the first step of each epoch
draws `np.random.permutation(num_train)` and the epoch's steps walk it in consecutive batches (the
remainder of `num_train // batch_size` batches is left out). Each accuracy check on more than
`num_samples` examples draws `np.random.choice(N, num_samples)`. The fc_jax facade reproduces
this order. Unlike the course, `checkpoint_name` is accepted but nothing is ever written.

This module imports NumPy only, never JAX.
"""

import numpy as np

from fc_jax.reference import optim

__all__ = ["Solver"]


class Solver:
    """Trains a classification model with minibatch gradient descent. Mirrors cs231n `Solver`.

    Args:
      model: an object with `params` and `loss(X, y=None)` as described in the module docstring.
      data: dict with 'X_train' (N_train, ...), 'y_train' (N_train,), 'X_val', 'y_val'.
      update_rule: name of a rule in `fc_jax.reference.optim` (default 'sgd').
      optim_config: dict of hyperparameters copied to each parameter's config (default {}).
      lr_decay: the learning rate is multiplied by this after every epoch (default 1.0).
      batch_size: minibatch size (default 100).
      sampling: "replace" (default, the course's: each batch drawn with replacement) or
        "permutation" (each epoch walks one fresh permutation of the training set in batches).
      num_epochs: number of epochs (default 10).
      num_train_samples: training examples used for each train-accuracy check (default 1000).
      num_val_samples: validation examples used for each check (default None: all).
      checkpoint_name: accepted for compatibility; the reference never writes checkpoints.
      print_every: print the loss every this many iterations (default 10).
      verbose: print progress (default True).
    """

    def __init__(self, model, data, **kwargs):
        for k in ("X_train", "y_train", "X_val", "y_val"):
            if k not in data:
                raise ValueError(
                    f"data must contain 'X_train', 'y_train', 'X_val', 'y_val'; no {k!r}"
                )
        self.model = model
        self.X_train, self.y_train = data["X_train"], data["y_train"]
        self.X_val, self.y_val = data["X_val"], data["y_val"]

        self.update_rule = kwargs.pop("update_rule", "sgd")
        self.optim_config = kwargs.pop("optim_config", {})
        self.lr_decay = kwargs.pop("lr_decay", 1.0)
        self.batch_size = kwargs.pop("batch_size", 100)
        self.sampling = kwargs.pop("sampling", "replace")
        self.num_epochs = kwargs.pop("num_epochs", 10)
        self.num_train_samples = kwargs.pop("num_train_samples", 1000)
        self.num_val_samples = kwargs.pop("num_val_samples", None)
        self.checkpoint_name = kwargs.pop("checkpoint_name", None)
        self.print_every = kwargs.pop("print_every", 10)
        self.verbose = kwargs.pop("verbose", True)

        if kwargs:
            raise ValueError("Unrecognized arguments " + ", ".join(f'"{k}"' for k in kwargs))
        if not isinstance(self.update_rule, str) or self.update_rule not in optim.__all__:
            raise ValueError(
                f'Invalid update_rule "{self.update_rule}"; expected one of {optim.__all__}'
            )
        if self.sampling not in ("replace", "permutation"):
            raise ValueError(
                f'Invalid sampling "{self.sampling}"; expected "replace" or "permutation"'
            )
        self.update_rule = getattr(optim, self.update_rule)
        self._reset()

    def _reset(self):
        """Set up the bookkeeping; called by __init__, don't call it by hand."""
        self.epoch = 0
        self.best_val_acc = 0
        self.best_params = {}
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self._steps_taken = 0  # for sampling="permutation": where in the epoch's order we are
        self._order = None
        # Each parameter gets its own copy of optim_config (its optimizer state lives there).
        self.optim_configs = {p: dict(self.optim_config) for p in self.model.params}

    def _batch_mask(self):
        """The next minibatch's indices, as `sampling` says."""
        num_train = self.X_train.shape[0]
        if self.sampling == "replace":
            return np.random.choice(num_train, self.batch_size)
        i = self._steps_taken % max(num_train // self.batch_size, 1)
        self._steps_taken += 1
        if i == 0:
            self._order = np.random.permutation(num_train)
        return self._order[i * self.batch_size : (i + 1) * self.batch_size]

    def _step(self):
        """One gradient update on the next minibatch (see `sampling`); called by train()."""
        batch_mask = self._batch_mask()
        X_batch = self.X_train[batch_mask]
        y_batch = self.y_train[batch_mask]

        loss, grads = self.model.loss(X_batch, y_batch)
        self.loss_history.append(loss)

        for p, w in self.model.params.items():
            next_w, next_config = self.update_rule(w, grads[p], self.optim_configs[p])
            self.model.params[p] = next_w
            self.optim_configs[p] = next_config

    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        """Fraction of examples whose highest score is the label.

        Args:
          X: (N, d_1, ..., d_k) inputs; y: (N,) integer labels.
          num_samples: if given and N > num_samples, score `np.random.choice(N, num_samples)`.
          batch_size: examples per call to `model.loss`.

        Returns:
          acc: the accuracy, a float in [0, 1].
        """
        N = X.shape[0]
        if num_samples is not None and N > num_samples:
            mask = np.random.choice(N, num_samples)
            N = num_samples
            X, y = X[mask], y[mask]

        num_batches = -(-N // batch_size)  # ceil
        y_pred = []
        for i in range(num_batches):
            scores = self.model.loss(X[i * batch_size : (i + 1) * batch_size])
            y_pred.append(np.argmax(scores, axis=1))
        return np.mean(np.hstack(y_pred) == y)

    def train(self):
        """Run the optimization, printing the course's progress lines when verbose."""
        num_train = self.X_train.shape[0]
        iterations_per_epoch = max(num_train // self.batch_size, 1)
        num_iterations = self.num_epochs * iterations_per_epoch

        for t in range(num_iterations):
            self._step()
            if self.verbose and t % self.print_every == 0:
                print(f"(Iteration {t + 1} / {num_iterations}) loss: {self.loss_history[-1]:f}")

            epoch_end = (t + 1) % iterations_per_epoch == 0
            if epoch_end:
                self.epoch += 1
                for config in self.optim_configs.values():
                    config["learning_rate"] *= self.lr_decay

            # Check accuracy on the first and last iterations and at the end of each epoch.
            if t == 0 or t == num_iterations - 1 or epoch_end:
                train_acc = self.check_accuracy(
                    self.X_train, self.y_train, num_samples=self.num_train_samples
                )
                val_acc = self.check_accuracy(
                    self.X_val, self.y_val, num_samples=self.num_val_samples
                )
                self.train_acc_history.append(train_acc)
                self.val_acc_history.append(val_acc)
                if self.verbose:
                    print(
                        f"(Epoch {self.epoch} / {self.num_epochs}) "
                        f"train acc: {train_acc:f}; val_acc: {val_acc:f}"
                    )
                if val_acc > self.best_val_acc:
                    self.best_val_acc = val_acc
                    self.best_params = {k: v.copy() for k, v in self.model.params.items()}

        # Swap in the best parameters. The course would leave model.params empty if the validation
        # accuracy never rose above 0; here the final parameters are kept in that case.
        if self.best_params:
            self.model.params = self.best_params

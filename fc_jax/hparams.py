"""Hyperparameters as data.

Contract: an `HParams` is a NamedTuple of scalar arrays passed to every call of the model's loss,
the optimizers' `update` and the training epoch. It is never closed over and never a static jit
argument, so a new learning rate does not recompile and `jax.vmap` over a stacked `HParams` gives a
sweep. Optimizers and models cast each value to the dtype of the arrays it meets, so float32
hyperparameters work with float64 parameters and back.
"""

import numbers
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from fc_jax.types import Array

__all__ = [
    "HParams",
    "HParam",
    "HPARAMS",
    "DEFAULTS",
    "RULE_DEFAULTS",
    "make_hparams",
    "validate_hparams",
    "check_integer",
]


class HParam(NamedTuple):
    """One word of the hyperparameter vocabulary: its default, valid range, sampling scale, help.

    The range is `low < v` (or `<=` when `low_closed`) and `v < high` (or `<=` when `high_closed`);
    `scale` says how a `--NAME-range LO HI` random search samples it: "log" for scale parameters
    (rates, strengths, widths of an initialization), "linear" for probabilities and fractions.
    """

    default: float
    low: float
    high: float
    low_closed: bool
    high_closed: bool
    scale: str  # "log" | "linear"
    help: str

    @property
    def expected(self) -> str:
        """The valid range in words, e.g. 'in [0, 1)' or '> 0'."""
        if self.high == np.inf:
            return f"{'>=' if self.low_closed else '>'} {self.low:g}"
        lo, hi = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return f"in {lo}{self.low:g}, {self.high:g}{hi}"

    def valid(self, v: np.ndarray) -> np.ndarray:
        above = v >= self.low if self.low_closed else v > self.low
        below = v <= self.high if self.high_closed else v < self.high
        return np.isfinite(v) & above & below


def _positive(default: float, help: str) -> HParam:  # (0, inf), sampled log-uniformly
    return HParam(default, 0.0, np.inf, False, False, "log", help)


def _nonnegative(default: float, help: str) -> HParam:  # [0, inf), sampled log-uniformly
    return HParam(default, 0.0, np.inf, True, False, "log", help)


def _fraction(default: float, help: str, *, zero: bool = True, one: bool = False) -> HParam:
    """In [0, 1) by default (`zero`/`one` close either end), sampled uniformly."""
    return HParam(default, 0.0, 1.0, zero, one, "linear", help)


# THE hyperparameter vocabulary: one row per `HParams` field, in field order. Defaults are the
# course's (cs231n optim.py); `RULE_DEFAULTS` overrides them per update rule. Everything else
# (validation, `DEFAULTS`, the settings and flags of `fc-jax train` / `fc-jax sweep`, the sampling
# scale of a random search, the columns of a sweep's results) is derived from this table.
HPARAMS: dict[str, HParam] = {
    "learning_rate": _positive(1e-2, "step size (the initial rate)"),
    "momentum": _fraction(0.9, "sgd_momentum's mu"),
    "decay_rate": _fraction(0.99, "rmsprop's squared-gradient decay"),
    "beta1": _fraction(0.9, "adam/adamw first-moment decay; lion's sign interpolation"),
    "beta2": _fraction(0.999, "adam/adamw second-moment decay; lion's momentum decay"),
    "epsilon": _positive(1e-8, "rmsprop/adam/adamw denominator fuzz"),
    "reg": _nonnegative(0.0, "L2 strength: loss += 0.5 * reg * sum(W**2)"),
    "weight_scale": _positive(1e-2, "std of the N(0, 1) initial weights"),
    "keep_prob": _fraction(1.0, "dropout KEEP probability; 1 = no dropout", zero=False, one=True),
    "lr_decay": _fraction(
        1.0, "learning rate multiplier after each epoch (lr schedule step)", zero=False, one=True
    ),
    "label_smoothing": _fraction(0.0, "softmax target (1 - ls) * onehot + ls / C; 0 = none"),
    "weight_decay": _nonnegative(0.0, "adamw/lion decoupled decay: w -= lr * wd * w"),
    "warmup_epochs": HParam(
        0.0,
        0.0,
        np.inf,
        True,
        False,
        "linear",
        "epochs of linear warmup from 0 to the learning rate (cosine, linear; triangle's rise)",
    ),
    "final_lr_fraction": _fraction(
        0.0,
        "the learning rate at the end, as a fraction of the initial (cosine, linear, triangle)",
        one=True,
    ),
    "mixup_alpha": HParam(
        0.0,
        0.0,
        np.inf,
        True,
        False,
        "linear",
        "mixup: each minibatch mixes with a permutation of itself, weight ~ Beta(a, a); 0 = off",
    ),
}


class HParams(NamedTuple):
    """Scalar hyperparameters (each a 0-d array, or a 1-d array along a sweep axis).

    The fields are the rows of `HPARAMS` (default, range and meaning of each), in that order.
    """

    learning_rate: Array
    momentum: Array
    decay_rate: Array
    beta1: Array
    beta2: Array
    epsilon: Array
    reg: Array
    weight_scale: Array
    keep_prob: Array
    lr_decay: Array
    label_smoothing: Array
    weight_decay: Array
    warmup_epochs: Array
    final_lr_fraction: Array
    mixup_alpha: Array


assert HParams._fields == tuple(HPARAMS), "HParams and HPARAMS must list the same names in order"

DEFAULTS: dict[str, float] = {name: row.default for name, row in HPARAMS.items()}

# The defaults for each update rule: the course's (cs231n optim.py) for the first four.
RULE_DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"learning_rate": 1e-2},
    "sgd_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "rmsprop": {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
    # Beyond the course: PyTorch's AdamW defaults; Lion's paper defaults (Chen et al. 2023 suggest
    # a learning rate 3-10x smaller than AdamW's; weight decay 0 here, 3-10x AdamW's if used).
    "adamw": {
        "learning_rate": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
        "weight_decay": 1e-2,
    },
    "lion": {"learning_rate": 1e-4, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0},
}


def check_integer(name: str, value, low: int = 1) -> None:
    """ValueError unless `value` is an integer (not a bool) >= `low`: the one integer check."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def validate_hparams(values: dict) -> None:
    """Raise ValueError naming the first hyperparameter outside its valid range (`HPARAMS`).

    Works on concrete numbers or arrays (checks every element); call it before anything compiles.
    """
    unknown = set(values) - set(HPARAMS)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {sorted(unknown)}; expected names from {tuple(HPARAMS)}"
        )
    for name, value in values.items():
        row = HPARAMS[name]
        if not np.all(row.valid(np.asarray(value, dtype=np.float64))):
            raise ValueError(
                f"hyperparameter {name}={value!r} is invalid: expected a finite value "
                f"{row.expected}"
            )


def make_hparams(update_rule: str | None = None, dtype=jnp.float32, **overrides) -> HParams:
    """Build an `HParams` of 0-d arrays with the course's defaults for `update_rule`.

    Args:
      update_rule: one of "sgd", "sgd_momentum", "rmsprop", "adam", "adamw", "lion" (or None for
        generic defaults); picks the rule's default learning rate and constants (`RULE_DEFAULTS`).
      dtype: dtype of the scalar arrays.
      **overrides: any `HParams` field, e.g. `learning_rate=3e-4, reg=1e-3`.

    Returns:
      An `HParams` whose fields are 0-d arrays of `dtype`.
    """
    if update_rule is not None and update_rule not in RULE_DEFAULTS:
        raise ValueError(
            f"unknown update_rule {update_rule!r}; expected one of {sorted(RULE_DEFAULTS)}"
        )
    validate_hparams(overrides)
    values = dict(DEFAULTS)
    values.update(RULE_DEFAULTS.get(update_rule, {}) if update_rule else {})
    values.update(overrides)
    return HParams(**{k: jnp.asarray(values[k], dtype=dtype) for k in HParams._fields})

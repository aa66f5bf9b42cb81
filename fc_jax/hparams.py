"""Hyperparameters as data.

Contract: an `HParams` is a NamedTuple of scalar arrays passed to every call of the model's loss,
the optimizers' `update` and the training epoch. It is never closed over and never a static jit
argument, so a new learning rate does not recompile and `jax.vmap` over a stacked `HParams` gives a
sweep. Optimizers and models cast each value to the dtype of the arrays it meets, so float32
hyperparameters work with float64 parameters and back.
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from fc_jax.types import Array

__all__ = ["HParams", "make_hparams", "DEFAULTS", "RULE_DEFAULTS", "validate_hparams"]


class HParams(NamedTuple):
    """Scalar hyperparameters (each a 0-d array, or a 1-d array along a sweep axis)."""

    learning_rate: Array  # step size
    momentum: Array  # sgd_momentum's mu
    decay_rate: Array  # rmsprop's decay of the squared-gradient cache
    beta1: Array  # adam's / adamw's first-moment decay; lion's interpolation for the sign
    beta2: Array  # adam's / adamw's second-moment decay; lion's momentum decay
    epsilon: Array  # rmsprop / adam / adamw denominator fuzz
    reg: Array  # L2 strength: loss += 0.5 * reg * sum(W**2)
    weight_scale: Array  # std of the N(0, 1) initial weights
    keep_prob: Array  # dropout keep probability (cs231n's p); used only when the net has dropout
    lr_decay: Array  # learning rate multiplier applied at the end of each epoch
    label_smoothing: Array  # softmax only: target (1 - ls) * onehot + ls / C; 0 = the course loss
    weight_decay: Array  # adamw's / lion's decoupled decay: w -= lr * wd * w (all leaves)


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

# Generic defaults (the course's values); `RULE_DEFAULTS` overrides per update rule.
DEFAULTS: dict[str, float] = dict(
    learning_rate=1e-2,
    momentum=0.9,
    decay_rate=0.99,
    beta1=0.9,
    beta2=0.999,
    epsilon=1e-8,
    reg=0.0,
    weight_scale=1e-2,
    keep_prob=1.0,
    lr_decay=1.0,
    label_smoothing=0.0,
    weight_decay=0.0,
)


def validate_hparams(values: dict) -> None:
    """Raise ValueError naming the first hyperparameter outside its valid range.

    Works on concrete numbers or arrays (checks every element); call it before anything compiles.
    """
    unknown = set(values) - set(HParams._fields)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {sorted(unknown)}; expected names from {HParams._fields}"
        )
    rules = {
        "learning_rate": (lambda v: v > 0, "> 0"),
        "momentum": (lambda v: (v >= 0) & (v < 1), "in [0, 1)"),
        "decay_rate": (lambda v: (v >= 0) & (v < 1), "in [0, 1)"),
        "beta1": (lambda v: (v >= 0) & (v < 1), "in [0, 1)"),
        "beta2": (lambda v: (v >= 0) & (v < 1), "in [0, 1)"),
        "epsilon": (lambda v: v > 0, "> 0"),
        "reg": (lambda v: v >= 0, ">= 0"),
        "weight_scale": (lambda v: v > 0, "> 0"),
        "keep_prob": (lambda v: (v > 0) & (v <= 1), "in (0, 1]"),
        "lr_decay": (lambda v: (v > 0) & (v <= 1), "in (0, 1]"),
        "label_smoothing": (lambda v: (v >= 0) & (v < 1), "in [0, 1)"),
        "weight_decay": (lambda v: v >= 0, ">= 0"),
    }
    for name, value in values.items():
        arr = np.asarray(value, dtype=np.float64)
        ok, expected = rules[name]
        if not np.all(np.isfinite(arr)) or not np.all(ok(arr)):
            raise ValueError(
                f"hyperparameter {name}={value!r} is invalid: expected a finite value {expected}"
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

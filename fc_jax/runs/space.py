"""Hyperparameter search spaces: grids, random search, JSON specs, and the stacked `HParams`.

Contract: a *trial* is a dict `{name: value}` over the hyperparameters that do not change shapes
(`SWEEPABLE`: the `HParams` fields learning_rate, lr_decay, reg, weight_scale, keep_prob, momentum,
decay_rate, beta1, beta2, epsilon, plus the integer `seed` of a lane's initialization and dropout).
A search space is a list of trials:

  grid({"learning_rate": [1e-4, 1e-3], "reg": [0.0, 1e-3]})         # 4 trials (cartesian product)
  random(20, {"learning_rate": log_uniform(1e-4, 1e-2),
              "keep_prob": choice([0.5, 0.75])}, seed=0)             # 20 trials
  range_distribution("keep_prob", 0.5, 1.0)  # uniform; log-uniform for learning_rate (RANGE_SAMPLING)
  load_spec("space.json")  # {"grid": {...}} or {"random": {"n": 20, "seed": 0, "params": {...}}}
                           # plus optionally "seeds": N (lanes per configuration, `spec_seeds`)

Every constructor checks its input on the host and raises ValueError (naming the hyperparameter and
what was expected) for an empty or malformed space, an unknown name or an out-of-range value, so a
bad sweep fails before anything compiles. `stack_hparams(trials, update_rule, dtype)` turns K trials
into one `HParams` whose fields have shape (K,), filled with the rule's defaults where a trial is
silent; `trial_seeds` gives the (K,) seeds.
"""

import itertools
import json
import numbers
import os
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from fc_jax.hparams import HPARAMS, HParams, make_hparams, validate_hparams

__all__ = [
    "SWEEPABLE",
    "MAX_SEED",
    "check_seed",
    "LogUniform",
    "Uniform",
    "Choice",
    "log_uniform",
    "uniform",
    "choice",
    "RANGE_SAMPLING",
    "range_distribution",
    "grid",
    "random",
    "from_spec",
    "random_space",
    "load_spec",
    "spec_seeds",
    "read_spec",
    "check_trials",
    "stack_hparams",
    "trial_seeds",
]

SWEEPABLE = (*HParams._fields, "seed")  # the hyperparameter vocabulary (fc_jax.hparams) + seeds
MAX_SEED = 2**32 - 1  # seeds are uint32 (jax.random.key), as `fc-jax train --seed`


def check_seed(value, name: str = "seed") -> None:
    """ValueError unless `value` is an integer (not a bool) in [0, MAX_SEED]: the one seed check."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not 0 <= value <= MAX_SEED
    ):
        raise ValueError(f"{name} must be an integer in [0, {MAX_SEED}], got {value!r}")


class LogUniform(NamedTuple):
    """`exp(U(log lo, log hi))`: for scale parameters (learning rate, weight scale, reg > 0)."""

    lo: float
    hi: float

    def sample(self, rng: np.random.Generator, n: int) -> list:
        return np.exp(rng.uniform(np.log(self.lo), np.log(self.hi), n)).tolist()


class Uniform(NamedTuple):
    """`U(lo, hi)`."""

    lo: float
    hi: float

    def sample(self, rng: np.random.Generator, n: int) -> list:
        return rng.uniform(self.lo, self.hi, n).tolist()


class Choice(NamedTuple):
    """One of `values`, uniformly."""

    values: tuple

    def sample(self, rng: np.random.Generator, n: int) -> list:
        return [self.values[i] for i in rng.integers(0, len(self.values), n)]


def _number(value: Any, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return value.item() if isinstance(value, np.generic) else value


def _range(lo: Any, hi: Any, what: str) -> tuple[float, float]:
    lo, hi = float(_number(lo, f"{what} lo")), float(_number(hi, f"{what} hi"))
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"{what} needs finite lo <= hi, got ({lo}, {hi})")
    return lo, hi


def log_uniform(lo: float, hi: float) -> LogUniform:
    """A log-uniform distribution on [lo, hi]; needs 0 < lo <= hi."""
    lo, hi = _range(lo, hi, "log_uniform")
    if lo <= 0:
        raise ValueError(f"log_uniform needs lo > 0, got ({lo}, {hi})")
    return LogUniform(lo, hi)


def uniform(lo: float, hi: float) -> Uniform:
    """A uniform distribution on [lo, hi]."""
    return Uniform(*_range(lo, hi, "uniform"))


# How a range LO..HI of each hyperparameter is sampled (`range_distribution`, `fc-jax sweep
# --NAME-range`), from the vocabulary's table (`fc_jax.hparams.HPARAMS[name].scale`): scales that
# span decades log-uniformly, probabilities and fractions uniformly, so keep_prob in [0.5, 1] is
# not drawn near 0.5 more often than near 1.
RANGE_SAMPLING = {
    name: "log-uniform" if row.scale == "log" else "uniform" for name, row in HPARAMS.items()
}


def range_distribution(name: str, lo: float, hi: float) -> LogUniform | Uniform:
    """The distribution of hyperparameter `name` over [lo, hi], as `RANGE_SAMPLING` says."""
    _check_name(name)
    if name not in RANGE_SAMPLING:
        raise ValueError(f"{name} cannot be drawn from a range; give a choice of values")
    return (log_uniform if RANGE_SAMPLING[name] == "log-uniform" else uniform)(lo, hi)


def choice(values) -> Choice:
    """A uniform choice among a non-empty list of values."""
    if isinstance(values, str | bytes) or not hasattr(values, "__len__") or len(values) == 0:
        raise ValueError(f"choice needs a non-empty list of values, got {values!r}")
    return Choice(tuple(_number(v, "choice value") for v in values))


def _check_name(name: Any) -> None:
    if name not in SWEEPABLE:
        raise ValueError(
            f"unknown hyperparameter {name!r}; a sweep can vary only {', '.join(SWEEPABLE)} "
            "(the architecture, normalization and update rule are fixed within one sweep)"
        )


def check_trials(trials: list[dict]) -> list[dict]:
    """Validate a list of trials (see the module docstring); returns it as a list of plain dicts.

    Raises:
      ValueError: no trials, a trial that is not a dict, an unknown name, a non-number, a value
        out of range (via `validate_hparams`), or a seed that is not an integer in [0, 2**32).
    """
    if isinstance(trials, dict) or not isinstance(trials, list | tuple) or not trials:
        raise ValueError(f"a sweep needs a non-empty list of trials (dicts); got {trials!r}")
    out = []
    for t in trials:
        if not isinstance(t, dict):
            raise ValueError(f"each trial must be a dict {{name: value}}, got {t!r}")
        for name in t:
            _check_name(name)
        t = {k: _number(v, f"hyperparameter {k}") for k, v in t.items()}
        check_seed(t.get("seed", 0))
        validate_hparams({k: v for k, v in t.items() if k != "seed"})
        out.append(t)
    return out


def grid(space: dict[str, list]) -> list[dict]:
    """The cartesian product of `{name: [values]}`, in the order of the names (last varies fastest).

    Example: `grid({"learning_rate": [1e-3, 1e-2], "reg": [0.0, 0.1]})` gives 4 trials.
    """
    if not isinstance(space, dict) or not space:
        raise ValueError(f"grid needs a non-empty dict {{name: [values]}}, got {space!r}")
    for name, values in space.items():
        _check_name(name)
        if isinstance(values, str | bytes | dict) or not isinstance(values, list | tuple):
            raise ValueError(f"grid values of {name!r} must be a non-empty list, got {values!r}")
        if not values:
            raise ValueError(f"grid values of {name!r} are empty; give at least one value")
    names = list(space)
    return check_trials(
        [dict(zip(names, vs, strict=True)) for vs in itertools.product(*space.values())]
    )


def random(n: int, space: dict[str, Any], seed: int = 0) -> list[dict]:
    """`n` trials drawn independently from `{name: log_uniform(..) | uniform(..) | choice(..)}`.

    Names are sampled in sorted order from `np.random.default_rng(seed)`, so a space gives the same
    trials whatever the order of its keys. A `seed` entry must be a `choice` of integers.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"random search needs n >= 1 trials, got {n!r}")
    if not isinstance(space, dict) or not space:
        raise ValueError(
            f"random search needs a non-empty dict {{name: distribution}}, got {space!r}"
        )
    for name, dist in space.items():
        _check_name(name)
        if not isinstance(dist, LogUniform | Uniform | Choice):
            raise ValueError(
                f"distribution of {name!r} must be log_uniform(lo, hi), uniform(lo, hi) or "
                f"choice([...]), got {dist!r}"
            )
        if name == "seed" and not isinstance(dist, Choice):
            raise ValueError("seed can only be swept with choice([integers])")
    rng = np.random.default_rng(seed)
    columns = {name: space[name].sample(rng, int(n)) for name in sorted(space)}
    return check_trials([{k: columns[k][i] for k in space} for i in range(int(n))])


_DISTRIBUTIONS = {"log_uniform": log_uniform, "uniform": uniform, "choice": choice}


def from_spec(spec: dict) -> list[dict]:
    """Trials from a parsed JSON spec: `{"grid": {name: [values]}}` or
    `{"random": {"n": N, "seed": S, "params": {name: {"log_uniform" | "uniform": [lo, hi]} |
    {"choice": [values]}}}}`, either with an optional `"seeds": N` (read by `spec_seeds`)."""
    body = {k: v for k, v in spec.items() if k != "seeds"} if isinstance(spec, dict) else spec
    if not isinstance(body, dict) or len(body) != 1 or next(iter(body)) not in ("grid", "random"):
        raise ValueError(
            f'a sweep spec is {{"grid": {{...}}}} or {{"random": {{...}}}} (and optionally '
            f'"seeds": N), got {spec!r}'
        )
    spec_seeds(spec)
    if "grid" in spec:
        return grid(spec["grid"])
    n, seed, space = random_space(spec)
    return random(n, space, seed)


def random_space(spec: dict) -> tuple[int, int, dict]:
    """`(n, seed, {name: distribution})` of a parsed `{"random": {...}}` spec, not sampled (an
    Optuna sampler draws from it; see `from_spec`)."""
    if not isinstance(spec, dict) or set(spec) != {"random"}:
        raise ValueError(f'expected a {{"random": {{...}}}} spec, got {spec!r}')
    body = spec["random"]
    if not isinstance(body, dict) or set(body) - {"n", "seed", "params"} or "n" not in body:
        raise ValueError(f'"random" needs keys "n", "params" and optionally "seed", got {body!r}')
    params = body.get("params")
    if not isinstance(params, dict) or not params:
        raise ValueError(f'"random" needs a non-empty "params" dict, got {params!r}')
    space = {}
    for name, d in params.items():
        if not isinstance(d, dict) or len(d) != 1 or next(iter(d)) not in _DISTRIBUTIONS:
            raise ValueError(
                f'{name!r}: expected {{"log_uniform": [lo, hi]}}, {{"uniform": [lo, hi]}} or '
                f'{{"choice": [values]}}, got {d!r}'
            )
        ((kind, args),) = d.items()
        if kind != "choice" and not (isinstance(args, list) and len(args) == 2):
            raise ValueError(f"{name!r}: {kind} needs [lo, hi], got {args!r}")
        space[name] = choice(args) if kind == "choice" else _DISTRIBUTIONS[kind](*args)
    n, seed = body["n"], body.get("seed", 0)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"random search needs n >= 1 trials, got {n!r}")
    check_seed(seed, "random seed")
    for name, dist in space.items():  # the checks `random` makes before it samples
        if name == "seed" and not isinstance(dist, Choice):
            raise ValueError("seed can only be swept with choice([integers])")
        _check_name(name)
    return int(n), int(seed), space


def spec_seeds(spec: dict) -> int | None:
    """A spec's `"seeds": N` (lanes per configuration, an integer >= 1), or None without one."""
    n = spec.get("seeds") if isinstance(spec, dict) else None
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
        raise ValueError(f'"seeds" must be an integer >= 1 (seeds per configuration), got {n!r}')
    return n


def load_spec(path: os.PathLike | str, *, with_seeds: bool = False):
    """Trials from a JSON spec file (see `from_spec`); ValueError names the file on bad JSON.

    With `with_seeds`: (trials, the spec's "seeds" or None)."""
    spec = read_spec(path)
    try:
        trials = from_spec(spec)
        return (trials, spec_seeds(spec)) if with_seeds else trials
    except ValueError as exc:
        raise ValueError(f"sweep spec {path}: {exc}") from exc


def read_spec(path: os.PathLike | str) -> dict:
    """The parsed JSON of a spec file, unchecked; ValueError names the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"sweep spec {path} is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"sweep spec {path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except FileNotFoundError:
        raise ValueError(f"sweep spec {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"sweep spec {path} is a folder; give a JSON file") from None
    except OSError as exc:
        raise ValueError(f"sweep spec {path} cannot be read ({exc.strerror})") from None
    return spec


def trial_seeds(trials: list[dict], default: int = 0) -> np.ndarray:
    """The (K,) int64 seeds of the trials (`default` where a trial has none)."""
    return np.asarray([t.get("seed", default) for t in check_trials(trials)], np.int64)


def stack_hparams(trials: list[dict], update_rule: str, dtype=jnp.float32, **defaults) -> HParams:
    """One `HParams` whose fields have shape (K,): lane k holds trial k's values.

    Args:
      trials: K trials (see `check_trials`); their `seed` entries are ignored here (`trial_seeds`).
      update_rule: picks the course defaults for what a trial does not set (as `make_hparams`).
      dtype: dtype of the fields.
      **defaults: values for every lane unless a trial sets them (e.g. the net's keep_prob).

    Returns:
      `HParams` of (K,) arrays.
    """
    trials = check_trials(trials)
    base = make_hparams(update_rule, dtype, **defaults)
    cols = {
        f: np.asarray([t.get(f, float(getattr(base, f))) for t in trials], np.float64)
        for f in HParams._fields
    }
    return HParams(**{f: jnp.asarray(v, dtype) for f, v in cols.items()})

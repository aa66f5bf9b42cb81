"""Recipes: the settings of a run as one flat dict, per-dataset defaults, resume merging, data identity.

Contract: a run's *settings* are a flat JSON-ready dict (dataset, architecture, update rule, the
`HParams` values, schedule, data sizes); `settings(dataset, given)` fills what `given` leaves out
from `DEFAULTS[dataset]`, and `check_settings` validates every entry before anything is created or
compiled. `config_of(s)` and `hparams_of(s)` turn settings into the library's objects;
`merge_resume(saved, given)` continues a saved run (only `epochs` may change; any other differing
value is refused, naming the flag); `data_fingerprint(data)` identifies the data a run was trained
on. The command line (`fc_jax.cli`) is a thin layer over these; notebooks and tests call them too.
"""

import hashlib
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fc_jax.data.datasets import DATASETS
from fc_jax.hparams import HPARAMS, check_integer, validate_hparams
from fc_jax.optim import OPTIMIZERS
from fc_jax.runs.space import check_seed

__all__ = [
    "DEFAULTS",
    "RECIPES",
    "Recipe",
    "RULES",
    "PRECISIONS",
    "settings",
    "check_settings",
    "config_of",
    "hparams_of",
    "merge_resume",
    "check_structure",
    "data_fingerprint",
    "load_data",
]

PRECISIONS = {"float32": None, "bf16": "bfloat16"}  # --precision -> NetConfig.compute_dtype
RULES = tuple(OPTIMIZERS)  # the update rules: the optimizers' registry (fc_jax.optim)

_COMMON: dict[str, Any] = dict(
    keep_prob=1.0,  # dropout keep probability; 1 = the net has no dropout layers
    update_rule="adam",
    learning_rate=1e-3,
    reg=0.0,
    dtype="float32",
    precision="float32",  # or "bf16": bfloat16 matmuls, float32 master weights (fc_jax.precision)
    sampling="replace",
    seed=0,
    num_training=None,  # None: the dataset's default split
    num_validation=None,
    num_test=None,
    lr_schedule="step",  # the course's lr *= lr_decay per epoch (fc_jax.lr_schedules)
    crop_pad=0,  # random crops of the zero-padded images; 0 = none
    flip=False,  # random horizontal flips (off: the recipes, and digits are not mirror-symmetric)
    whiten="none",  # or "zca": computed once from the training split (fc_jax.data.whiten)
    whiten_epsilon=0.1,  # ZCA's damping, relative to the mean pixel variance
    recipe="default",  # a name in RECIPES: its values override DEFAULTS[dataset]
)
DEFAULTS: dict[str, dict[str, Any]] = {
    # The default recipe: measured in README.md ("fc-jax train" line) and benchmarks/RESULTS.md.
    "cifar10": dict(
        _COMMON,
        hidden_dims=[512, 256],
        normalization="batchnorm",
        keep_prob=0.75,
        learning_rate=2e-3,
        lr_decay=0.9,
        epochs=12,
        batch_size=200,
        weight_scale=2e-2,
        sampling="permutation",
    ),
    # The small dataset: a few seconds on one CPU core (README.md gives its accuracy).
    "digits": dict(
        _COMMON,
        hidden_dims=[128],
        normalization="none",
        lr_decay=1.0,
        epochs=30,
        batch_size=64,
        weight_scale=1e-1,
    ),
}


class Recipe(NamedTuple):
    """A named set of settings (`fc-jax train --recipe NAME`; flags still override each value)."""

    values: dict[str, Any]  # what differs from DEFAULTS["cifar10"]
    reaches: str  # what it reaches, measured (benchmarks/RESULTS.md, "Recipes")


# Each CIFAR-10 recipe beyond the default: found with scripts/search_cpu_10min.py and
# scripts/search_cpu_1h.py, measured in
# benchmarks/RESULTS.md ("Recipes"); they report the whole 10000-image test set.
_AUGMENTED = dict(
    hidden_dims=[2048, 1024],
    keep_prob=0.5,
    learning_rate=3e-3,
    lr_schedule="cosine",
    warmup_epochs=1.0,
    final_lr_fraction=0.01,
    label_smoothing=0.1,
    crop_pad=2,
    flip=True,
    precision="bf16",
    num_test=10000,
)
RECIPES: dict[str, Recipe] = {
    "default": Recipe({}, "about 58% test in under a minute on a 2-core CPU"),
    "cpu-10min": Recipe(
        # the halving sweep's winner (less dropout pays in a short run), 44 epochs
        dict(_AUGMENTED, epochs=44, keep_prob=0.9, learning_rate=4.5e-3, label_smoothing=0.15),
        "65.6% test in 7.2 minutes on a 2-core CPU with AMX-BF16",
    ),
    "cpu-1h": Recipe(
        dict(_AUGMENTED, epochs=320), "67.4% test in 53 minutes on a 2-core CPU with AMX-BF16"
    ),
    "gpu": Recipe(
        dict(_AUGMENTED, hidden_dims=[4096, 4096], crop_pad=4, batch_size=1000, epochs=300),
        "unmeasured: no GPU was lent; it runs on a CPU too",
    ),
}


def recipe_defaults(dataset: str, recipe: str = "default") -> dict:
    """The settings a run starts from: `DEFAULTS[dataset]` with recipe `recipe`'s values.

    Raises:
      ValueError: an unknown dataset or recipe, or a CIFAR-10 recipe for another dataset.
    """
    if dataset not in DEFAULTS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DEFAULTS)}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {tuple(RECIPES)}")
    if recipe != "default" and dataset != "cifar10":
        raise ValueError(f"--recipe {recipe} is a CIFAR-10 recipe; drop --dataset {dataset}")
    return {**DEFAULTS[dataset], **RECIPES[recipe].values, "recipe": recipe}


def settings(dataset: str, given: dict) -> dict:
    """`DEFAULTS[dataset]`, with the values of the recipe `given["recipe"]` names (if any),
    overridden by the non-None entries of `given`, checked."""
    base = recipe_defaults(dataset, given.get("recipe") or "default")
    s = {**base, **{k: v for k, v in given.items() if v is not None}}
    s["dataset"] = dataset
    check_settings(s)
    return s


def check_settings(s: dict) -> None:
    """ValueError naming the first invalid setting."""
    for k in ("epochs", "batch_size"):
        check_integer(k, s[k])
    check_seed(s["seed"])
    dims = s["hidden_dims"]
    if not isinstance(dims, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims
    ):
        raise ValueError(f"hidden_dims must be positive integers, got {dims!r}")
    if s["update_rule"] not in RULES:
        raise ValueError(f"unknown update_rule {s['update_rule']!r}; expected one of {RULES}")
    if s["normalization"] not in ("none", "batchnorm", "layernorm"):
        raise ValueError(
            f"normalization must be none, batchnorm or layernorm, got {s['normalization']!r}"
        )
    if s["dtype"] not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {s['dtype']!r}")
    if s.get("precision", "float32") not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {s['precision']!r}")
    if s.get("precision") == "bf16" and s["dtype"] != "float32":
        raise ValueError("--precision bf16 keeps float32 master weights: it needs --dtype float32")
    if s["sampling"] not in ("replace", "permutation"):
        raise ValueError(f"sampling must be replace or permutation, got {s['sampling']!r}")
    validate_hparams({k: s[k] for k in HPARAMS if k in s})
    check_structure(s, [s])


def check_structure(s: dict, lanes: list[dict]) -> None:
    """ValueError for a schedule or augmentation that does not fit settings `s` and the values of
    its lanes (`lanes`: dicts of HParams values; one for a training run, the trials of a sweep)."""
    from fc_jax.data.whiten import WHITENINGS
    from fc_jax.hparams import DEFAULTS as HP_DEFAULTS
    from fc_jax.lr_schedules import LR_SCHEDULES

    if s.get("whiten", "none") not in WHITENINGS:
        raise ValueError(f"whiten must be one of {WHITENINGS}, got {s['whiten']!r}")
    eps = s.get("whiten_epsilon", 0.1)
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < math.inf:
        raise ValueError(f"whiten_epsilon must be a finite number > 0, got {eps!r}")
    kind = s.get("lr_schedule", "step")
    if kind not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {kind!r}")
    check_integer("crop_pad", s.get("crop_pad", 0), 0)
    if not isinstance(s.get("flip", False), bool):
        raise ValueError(f"flip must be true or false, got {s['flip']!r}")
    shape = DATASETS[s["dataset"]].image_shape if s.get("dataset") in DATASETS else None
    if shape is not None and s.get("crop_pad", 0) > min(shape[1:]):
        raise ValueError(
            f"--crop-pad {s['crop_pad']} is larger than the {s['dataset']} images "
            f"({shape[1]}x{shape[2]})"
        )
    warmup = max(float(t.get("warmup_epochs", HP_DEFAULTS["warmup_epochs"])) for t in lanes)
    if kind == "step" and warmup > 0:
        raise ValueError(
            "--warmup-epochs needs --lr-schedule cosine, linear or triangle (step "
            "decays per epoch from the first step)"
        )
    if warmup > s["epochs"]:
        raise ValueError(
            f"--warmup-epochs {warmup:g} is longer than the run ({s['epochs']} epochs)"
        )


def config_of(s: dict, *, dropout: bool | None = None):
    """The `NetConfig` of settings `s` (dropout layers when keep_prob < 1, unless `dropout` says)."""
    from fc_jax.models import NetConfig

    return NetConfig(
        hidden_dims=tuple(s["hidden_dims"]),
        input_dim=DATASETS[s["dataset"]].input_dim,
        normalization=None if s["normalization"] == "none" else s["normalization"],
        dropout=bool(s["keep_prob"] < 1) if dropout is None else dropout,
        dtype=s["dtype"],
        compute_dtype=PRECISIONS[s.get("precision", "float32")],  # older runs: float32
    )


def hparams_of(s: dict, **overrides) -> dict:
    """The `HParams` values that settings `s` set (floats for `make_hparams`, which fills the rest
    with the update rule's defaults)."""
    return {**{k: float(s[k]) for k in HPARAMS if s.get(k) is not None}, **overrides}


def merge_resume(saved: dict, given: dict) -> dict:
    """Settings to continue a run saved with `saved`: `given` may change only `epochs`.

    Raises:
      ValueError: listing every given flag that differs from the checkpoint.
    """
    clash = [
        f"--{k.replace('_', '-')} {v!r} (checkpoint: {saved.get(k, _COMMON.get(k))!r})"
        for k, v in given.items()
        if v is not None and k != "epochs" and _differs(v, saved.get(k, _COMMON.get(k)))
    ]
    kind = saved.get("lr_schedule", "step")
    epochs = given.get("epochs")
    if kind != "step" and epochs is not None and epochs != saved.get("epochs"):
        clash.append(
            f"--epochs {epochs} (checkpoint: {saved.get('epochs')}; the {kind} learning "
            "rate schedule spans the run's epochs)"
        )
    if clash:
        raise ValueError(f"conflicts with the checkpoint: {', '.join(clash)}; omit them")
    out = dict(saved)
    if given.get("epochs") is not None:
        out["epochs"] = given["epochs"]
    return out


def _differs(a, b) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) != list(b)
    if isinstance(a, float) and isinstance(b, int | float):
        return not math.isclose(a, b, rel_tol=0, abs_tol=0)
    return a != b


def data_fingerprint(data: dict) -> str:
    """A cheap identity of the train/val data: shapes, dtypes and up to 1000 strided rows of each."""
    h = hashlib.sha256()
    for k in ("X_train", "y_train", "X_val", "y_val"):
        a = np.asarray(data[k])
        h.update(f"{k}{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a[:: max(1, len(a) // 1000)]).tobytes())
    return h.hexdigest()


def load_data(s: dict, data_dir: str | None = None, saved: dict | None = None):
    """The data of settings `s`, checked: (data dict, resolved data folder or None, fingerprint).

    Args:
      s: settings (dataset, sizes, dtype, batch_size).
      data_dir: the folder the user named (`--data-dir`), or None.
      saved: a checkpoint's meta when resuming: its `data_dir` is read again (so a run started
        with FC_JAX_DATA_DIR resumes without it) and its `data_fingerprint` must match.

    Raises:
      ValueError: a batch size larger than the training set, or other data than the checkpoint's.
      fc_jax.data.cifar10.DataError: missing or corrupt data files.
    """
    from fc_jax.data import datasets

    folder = None
    if s["dataset"] == "cifar10":
        if data_dir is not None:
            folder = str(Path(data_dir).expanduser().resolve())
        elif saved is not None and saved.get("data_dir"):
            folder = saved["data_dir"]
        else:
            from fc_jax.data.download import cifar10_dir

            folder = str(cifar10_dir(None).resolve())
    explicit = data_dir is not None or saved is not None  # else: the default, which may download
    sizes = s["num_training"], s["num_validation"], s["num_test"]
    data = datasets.get_dataset(
        s["dataset"], folder if explicit else None, *sizes, dtype=np.dtype(s["dtype"])
    )
    if s["batch_size"] > len(data["X_train"]):
        raise ValueError(
            f"--batch-size {s['batch_size']} is larger than the training set "
            f"({len(data['X_train'])} examples)"
        )
    if s.get("whiten", "none") == "zca":
        from fc_jax.data.whiten import whiten

        data = whiten(data, s["whiten_epsilon"])
    fingerprint = data_fingerprint(data)
    if saved is not None and saved.get("data_fingerprint") != fingerprint:
        raise ValueError(
            f"these data differ from those the run was trained on ({saved.get('data_dir')}); "
            "check --data-dir or FC_JAX_DATA_DIR"
        )
    return data, folder, fingerprint

"""fc_jax: fully-connected nets in JAX with hand-written custom-VJP backward passes.

The public names below are re-exported lazily (PEP 562), so `import fc_jax.reference` and
`import fc_jax.data.datasets` stay free of jax. No logic and no `jax.config` side effects live here.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "NetConfig": "fc_jax.models",
    "init_params": "fc_jax.models",
    "init_state": "fc_jax.models",
    "loss_fn": "fc_jax.models",
    "forward": "fc_jax.models",
    "predict": "fc_jax.models",
    "param_count": "fc_jax.models",
    "x64_scope": "fc_jax.models",
    "HParams": "fc_jax.hparams",
    "make_hparams": "fc_jax.hparams",
    "Optimizer": "fc_jax.optim",
    "get_optimizer": "fc_jax.optim",
    "sgd": "fc_jax.optim",
    "sgd_momentum": "fc_jax.optim",
    "rmsprop": "fc_jax.optim",
    "adam": "fc_jax.optim",
    "TrainState": "fc_jax.train",
    "make_epoch": "fc_jax.train",
    "make_step": "fc_jax.train",
    "sample_indices": "fc_jax.train",
    "fit": "fc_jax.runs.fit",
    "Run": "fc_jax.runs.fit",
    "DivergedError": "fc_jax.runs.loop",
    "Callbacks": "fc_jax.runs.loop",
    "train_lanes": "fc_jax.runs.loop",
    "Schedule": "fc_jax.runs.schedule",
    "Halving": "fc_jax.runs.schedule",
    "Pbt": "fc_jax.runs.schedule",
    "run_sweep": "fc_jax.runs.sweep",
    "SweepResult": "fc_jax.runs.sweep",
    "load_model": "fc_jax.storage.model",
    "predict_raw": "fc_jax.storage.model",
    "get_dataset": "fc_jax.data.datasets",
    "load_cifar10": "fc_jax.data.datasets",
}
_SUBMODULES = (
    "types",
    "hparams",
    "layers",
    "normalization",
    "losses",
    "models",
    "optim",
    "train",
    "gradcheck",
    "precision",
    "runs",
    "data",
    "storage",
    "report",
    "settings",
    "cli",
    "cs231n",
    "reference",
)

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"fc_jax.{name}")
    raise AttributeError(f"module 'fc_jax' has no attribute {name!r}")


def __dir__():
    return __all__

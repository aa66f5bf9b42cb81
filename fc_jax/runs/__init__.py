"""The ring's engine: one run loop for K >= 1 lanes, and what it is fed.

  loop       THE run loop: `train_lanes` trains K lanes epoch by epoch (`DivergedError`; its hooks
             are one `Callbacks`)
  lanes      the lanes' state between epochs (`Lanes`) and its transitions: fresh, halving's
             promotion, stopping; what checkpoints store
  epoch      one epoch of the loop in named steps (`make_context`, `one_epoch`)
  schedule   what every lane shares (`Schedule`, `Halving`, `Pbt`): minibatches, subsamples, learning
             rates, seeds per configuration; `fit` and `run_sweep` take it with an update rule's
             name (`optimizer=`), and checkpoints store it as one record
  pbt        population-based training's exploit/explore step, a gather over the lane axis
  placement  lanes on devices: the compiled epoch and evaluation over a lane axis
  fit        one training run: the loop with K = 1 (`fit`, `Run`)
  sweep      K configurations as one compiled program (`run_sweep`, `SweepResult`)
  space      search spaces: grids, random search, JSON specs -> trials -> stacked `HParams`
  optuna_bridge  an Optuna study over lanes (`optimize`); imports Optuna (an optional dependency)
  trial_records  lane records stored on Optuna trials, and the `SweepResult` rebuilt from them

Import the modules (`from fc_jax.runs import sweep`); the main names are also in `fc_jax`.
"""

__all__ = [
    "epoch",
    "fit",
    "lanes",
    "loop",
    "optuna_bridge",
    "pbt",
    "placement",
    "schedule",
    "space",
    "sweep",
    "trial_records",
]

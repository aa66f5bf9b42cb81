"""Lane records on Optuna trials: what `fc_jax.runs.optuna_bridge` stores, and a `SweepResult` back.

Contract: after a batch, each trial of an Optuna study gets its lane's record as the user attribute
"fc_jax" (`lane_record`: every `HParams` value and the seed, best validation accuracy and epoch,
epochs trained, pruned, divergence, per-epoch history with each epoch's mean loss), JSON-ready.
`counted_trials(study)` lists the finished trials less those interrupted and asked again (the
retry carries the user attribute "fc_jax_retry_of"); `study_result(study, ...)` rebuilds a
`SweepResult` of the counted trials that hold a record, so the table and files of a resumed study
come from the study alone. This module reads trials through their public attributes and does not
import Optuna.
"""

import jax
import numpy as np

from fc_jax import models
from fc_jax.hparams import HParams
from fc_jax.runs.sweep import SweepResult

__all__ = ["RECORD", "RETRY_OF", "lane_record", "first_lanes", "counted_trials", "study_result"]

RECORD = "fc_jax"  # a trial's user attribute holding its lane's record
RETRY_OF = "fc_jax_retry_of"  # a retried trial's user attribute: the interrupted trial's number


def counted_trials(study) -> list:
    """The study's finished trials, less those interrupted and asked again (`n_trials` counts these)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}
    return [t for t in trials if t.state.is_finished() and t.number not in retried]


def lane_record(res: SweepResult, j: int, pruned: bool) -> dict:
    """Lane j's record, JSON-ready (the "fc_jax" user attribute of its trial)."""
    clean = lambda v: [float(x) if np.isfinite(x) else None for x in v]
    h = res.histories[j]
    steps = len(h["loss"]) // max(len(h["val_acc"]), 1)
    loss = [
        float(np.mean(h["loss"][e * steps : (e + 1) * steps])) for e in range(len(h["val_acc"]))
    ]
    hp = {f: float(str(getattr(res.hparams, f)[j])) for f in HParams._fields}
    return {
        "hparams": {**hp, "seed": int(res.trials[j]["seed"])},
        "best_val_acc": float(res.best_val_acc[j]),
        "best_epoch": int(res.best_epoch[j]),
        "epochs": int(res.epochs[j]),
        "pruned": bool(pruned),
        "diverged": bool(res.diverged[j]),
        "diverged_iteration": int(res.diverged_iteration[j]),
        "history": {
            "loss": clean(loss),
            **{k: clean(h[k]) for k in ("train_acc", "val_acc", "lr", "epoch_seconds")},
        },
    }


def first_lanes(res: SweepResult, m: int) -> SweepResult:
    """The first m lanes of a batch's result (the padding lanes dropped)."""
    cut = lambda t: jax.tree.map(lambda a: a[:m], t)
    return res._replace(
        trials=res.trials[:m],
        hparams=cut(res.hparams),
        history=cut(res.history),
        histories=res.histories[:m],
        best_val_acc=res.best_val_acc[:m],
        best_epoch=res.best_epoch[:m],
        epochs=res.epochs[:m],
        stopped=res.stopped[:m],
        diverged=res.diverged[:m],
        diverged_iteration=res.diverged_iteration[:m],
        best_params=cut(res.best_params),
        best_model_state=cut(res.best_model_state),
        final_state=cut(res.final_state),
    )


def study_result(study, config: models.NetConfig, update_rule: str, num_epochs: int) -> SweepResult:
    """A `SweepResult` of the study's counted trials that hold a lane record, by trial number.

    Histories are per epoch ("loss" is each epoch's mean); params, states and timings are not
    kept in the study (None, and 0 seconds).
    """
    trials = [t for t in counted_trials(study) if RECORD in t.user_attrs]
    recs = [t.user_attrs[RECORD] for t in trials]
    K, E = len(recs), num_epochs
    nan = lambda v: [np.nan if x is None else x for x in v]
    histories = [{k: nan(v) for k, v in r["history"].items()} for r in recs]
    history = {k: np.full((K, E), np.nan) for k in ("loss", "train_acc", "val_acc", "lr")}
    for i, h in enumerate(histories):
        for k in history:
            history[k][i, : len(h[k])] = h[k][:E]
    col = lambda key, dtype: np.asarray([r[key] for r in recs], dtype)
    hp = HParams(
        **{f: np.asarray([r["hparams"][f] for r in recs], np.float64) for f in HParams._fields}
    )
    epochs, diverged = col("epochs", np.int64), col("diverged", bool)
    return SweepResult(
        config=config,
        update_rule=update_rule,
        trials=[dict(r["hparams"]) for r in recs],
        hparams=hp,
        history=history,
        histories=histories,
        best_val_acc=col("best_val_acc", np.float64),
        best_epoch=col("best_epoch", np.int64),
        epochs=epochs,
        stopped=(epochs < E) & ~diverged,
        diverged=diverged,
        diverged_iteration=col("diverged_iteration", np.int64),
        best_params=None,
        best_model_state=None,
        final_state=None,
        compile_seconds=0.0,
        run_seconds=0.0,
        devices=[],
        trial_ids=tuple(t.number for t in trials),
    )

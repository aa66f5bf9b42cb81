"""Optuna over lanes: ask K trials of a study, train them as K lanes of one compiled program, tell.

Contract: `optimize(config, data, study, space, n_trials, lanes=K)` repeats, until the study holds
`n_trials` finished trials: ask K trials (`study.ask(distributions)`, the space of
`fc_jax.runs.space` mapped by `distributions`), train them with `fc_jax.runs.sweep.run_sweep` as
K lanes, report each lane's validation accuracy after every epoch (`trial.report(val_acc,
epoch)`), stop the lanes the study's pruner prunes (their budget becomes their epoch, as halving
stops a lane), then tell the study each lane's best validation accuracy (COMPLETE), PRUNED, or
FAIL for a lane that diverged before any epoch ended. Every batch has K lanes (a short last batch
is padded with stopped copies), so all batches share one compilation (`cache`). Each trial keeps
its lane's record as the user attribute "fc_jax" (hyperparameters, epochs, per-epoch history), so
`fc_jax.runs.trial_records.study_result(study, ...)` rebuilds a `SweepResult` of every trial
from the study alone.

Kill and resume: the study lives in its storage (Optuna's RDB storage, SQLite by default in
`fc-jax sweep`). The trial numbers of the batch in training are the study's user attribute
"fc_jax_batch". A later `optimize` on the same study fails the trials of that batch still RUNNING
and asks them again with the same parameters (enqueued with the user attribute
"fc_jax_retry_of", Optuna's own retry convention), so they are trained again, not lost; with
`out_dir`, the lanes continue from the batch's latest checkpoint (`checkpoint.npz`, written after
every epoch) when it holds that batch. A failed-and-retried trial is not counted in `n_trials`.
With `sampler` named, each batch asks from a fresh sampler seeded from (seed, finished trials),
so a resumed study asks what an uninterrupted one would have asked. One `optimize` at a time per
study: the batch attribute is the study's, so two processes sharing a study would fail each
other's trials on start (parallel workers are the lanes).

Optuna is an optional dependency (`pip install -e ".[optuna]"`); only this module imports it.
"""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from fc_jax import models
from fc_jax.hparams import check_integer
from fc_jax.runs import space as spaces
from fc_jax.runs.loop import Callbacks
from fc_jax.runs.schedule import Schedule, check_schedule
from fc_jax.runs.sweep import SweepResult, run_sweep
from fc_jax.runs.trial_records import (
    RECORD,
    RETRY_OF,
    counted_trials,
    first_lanes,
    lane_record,
    study_result,
)

__all__ = [
    "SAMPLERS",
    "PRUNERS",
    "distributions",
    "check_space",
    "make_sampler",
    "make_pruner",
    "open_study",
    "optimize",
]

SAMPLERS = ("tpe", "random", "cmaes")
PRUNERS = ("median", "none")
_BATCH = "fc_jax_batch"


def distributions(space: dict) -> dict:
    """`{name: LogUniform | Uniform | Choice}` as Optuna distributions (log/linear float, categorical)."""
    out = {}
    for name, d in space.items():
        if isinstance(d, spaces.LogUniform):
            out[name] = FloatDistribution(d.lo, d.hi, log=True)
        elif isinstance(d, spaces.Uniform):
            out[name] = FloatDistribution(d.lo, d.hi)
        elif isinstance(d, spaces.Choice):
            out[name] = CategoricalDistribution(d.values)
        else:
            raise ValueError(f"{name!r}: expected log_uniform, uniform or choice, got {d!r}")
    return out


def check_space(space: dict, fixed: dict) -> None:
    """ValueError unless every end of every range and every choice is a valid trial."""
    if not isinstance(space, dict) or not space:
        raise ValueError(
            f"an Optuna search needs a non-empty space {{name: distribution}}, got {space!r}"
        )
    distributions(space)
    corners = [{}]
    for name, d in space.items():
        values = d.values if isinstance(d, spaces.Choice) else (d.lo, d.hi)
        corners += [{name: v} for v in values]
        if name == "seed" and not isinstance(d, spaces.Choice):
            raise ValueError("seed can only be searched with choice([integers])")
    spaces.check_trials([{**fixed, **c} for c in corners])


def make_sampler(name: str, seed: int = 0) -> "optuna.samplers.BaseSampler":
    """A seeded Optuna sampler: "tpe" (constant liar, for batches asked before they are told),
    "random" or "cmaes"."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {name!r}")


def make_pruner(name: str) -> "optuna.pruners.BasePruner":
    """ "median" (Optuna's MedianPruner: below the median of finished trials at the same epoch) or
    "none"."""
    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner must be one of {PRUNERS}, got {name!r}")


def open_study(storage: str, name: str, sampler=None, pruner=None) -> "optuna.Study":
    """The study `name` in `storage` (an RDB URL such as sqlite:///DIR/study.db), created when
    missing; it maximizes validation accuracy (ValueError if it exists and minimizes)."""
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        sampler=sampler,
        pruner=pruner,
    )
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ValueError(f"study {name!r} in {storage} minimizes; fc-jax maximizes accuracy")
    return study


def _recover(study) -> list[int]:
    """Fail the RUNNING trials of the interrupted batch and enqueue them again; their numbers."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    retried = {t.user_attrs[RETRY_OF] for t in trials.values() if RETRY_OF in t.user_attrs}
    batch = [n for n in study.user_attrs.get(_BATCH, []) if n in trials]
    interrupted = [n for n in batch if trials[n].state == TrialState.RUNNING]
    for n in interrupted:
        if n not in retried:  # a kill between enqueue and tell must not enqueue twice
            study.enqueue_trial(trials[n].params, user_attrs={RETRY_OF: n})
        study.tell(n, state=TrialState.FAIL)
    return interrupted


def _batch_seed(seed: int, done: int) -> int:
    return int(np.random.SeedSequence([seed, done]).generate_state(1)[0])


def _saved_lanes(out_dir, config, numbers: list[int]):
    """The checkpoint's lanes when it holds the batch `numbers`, else None."""
    if out_dir is None or not numbers or not (Path(out_dir) / "checkpoint.npz").exists():
        return None
    from fc_jax.storage.checkpoint import load_lanes

    lanes, meta = load_lanes(out_dir, config=config)
    return lanes if meta.get("optuna_batch") == numbers else None


def optimize(
    config: models.NetConfig,
    data: dict,
    study,
    space: dict,
    n_trials: int,
    *,
    lanes: int = 8,
    fixed: dict | None = None,
    schedule: Schedule = Schedule(),
    optimizer: str = "adam",
    sampler: str | None = None,
    sampler_seed: int | None = None,
    max_lanes: int | None = None,
    devices: list | None = None,
    out_dir: os.PathLike | str | None = None,
    meta: dict | None = None,
    on_batch_end: Callable[[list, SweepResult], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run the Optuna `study` over lanes until it holds `n_trials` finished trials (module docstring).

    Args:
      config: the architecture, the same for every trial (dropout layers must be in it when the
        space or `fixed` can set keep_prob < 1).
      data: dict with X_train, y_train, X_val, y_val.
      study: an `optuna.Study` that maximizes (see `open_study`); its pruner stops lanes.
      space: `{name: fc_jax.runs.space.log_uniform(..) | uniform(..) | choice(..)}`.
      n_trials: finished trials the study should hold (interrupted-and-retried ones not counted).
      lanes: trials asked and trained together per batch (clamped to `n_trials`).
      fixed: values of every trial for names outside the space (else the rule's defaults).
      schedule, optimizer, max_lanes, devices: as `run_sweep` (`schedule.seed`: the lanes'
        default seed and the minibatches'); no halving, no PBT, one seed per trial (the study's
        pruner stops lanes).
      sampler: a name of `SAMPLERS` to ask each batch from a fresh sampler seeded from
        (sampler_seed, finished trials), so a resumed study asks the same; None: the study's own.
      sampler_seed: the sampler's seed (default: `schedule.seed`).
      out_dir: folder for the lanes' checkpoint (and resuming from it), written when
        `schedule.checkpoint_every` says (0: after every epoch).
      meta: more entries for that checkpoint (e.g. the command line's settings).
      on_batch_end: called with (trial numbers, the batch's `SweepResult`, padding lanes
        removed) after each batch is trained, before it is told.
      log: called with one line per epoch and one per batch.

    Returns:
      `study_result` of the study: every counted trial with a lane record, ordered by number;
      compile and run seconds are this call's.
    """
    check_integer("n_trials", n_trials)
    check_integer("lanes", lanes)
    fixed = dict(fixed or {})
    check_space(space, fixed)
    dists = distributions(space)
    K = min(lanes, n_trials)
    from fc_jax.runs.epoch import check_data

    with models.x64_scope(config):
        n = len(check_data(config, data, np.dtype(config.dtype))[0])
    check_schedule(schedule, n)
    if schedule.halving is not None or schedule.pbt is not None or schedule.seeds != 1:
        raise ValueError("an Optuna study trains one seed per trial; its pruner stops lanes")
    seed, num_epochs = schedule.seed, schedule.num_epochs
    say = log or (lambda line: None)
    interrupted = _recover(study)
    saved = _saved_lanes(out_dir, config, interrupted) if interrupted else None
    if interrupted:
        say(
            f"trials {interrupted} were interrupted: failed and asked again with the same values"
            + (" (from the checkpoint)" if saved is not None else "")
        )
    cache, compile_s, run_s, batch, used = {}, 0.0, 0.0, 0, []
    while (left := n_trials - len(counted_trials(study))) > 0:
        if sampler is not None:
            study.sampler = make_sampler(
                sampler,
                _batch_seed(seed if sampler_seed is None else sampler_seed, n_trials - left),
            )
        trials = [study.ask(dists) for _ in range(min(K, left))]
        numbers = [t.number for t in trials]
        study.set_user_attr(_BATCH, numbers)
        m, batch = len(trials), batch + 1
        lane_trials = [{"seed": seed, **fixed, **t.params} for t in trials]
        lane_trials += [lane_trials[-1]] * (K - m)  # padding lanes, stopped at once
        retry_of = [t.user_attrs.get(RETRY_OF) for t in trials]
        resume = saved if saved is not None and retry_of == interrupted else None
        saved = None
        pruned, reported = [False] * m, [0] * m

        def stop(ls, trials=trials, pruned=pruned, reported=reported):
            rows = list(range(len(trials), ls.num_lanes))
            for j, trial in enumerate(trials):
                vals = ls.history[j]["val_acc"]
                for e in range(reported[j], len(vals)):
                    if np.isfinite(vals[e]):
                        trial.report(float(vals[e]), e + 1)
                new, reported[j] = len(vals) > reported[j], len(vals)
                live = ls.epoch[j] < num_epochs and not ls.diverged[j]
                pruned[j] = pruned[j] or (new and live and trial.should_prune())
                if pruned[j]:
                    rows.append(j)
            return rows

        save = None
        if out_dir is not None:
            from fc_jax.storage.checkpoint import save_lanes

            ck = {
                **(meta or {}),
                "config": config,
                "update_rule": optimizer,
                "schedule": schedule,
                "optuna_batch": numbers,
            }
            save = lambda ls, ck=ck: save_lanes(out_dir, ls, ck)
        res = run_sweep(
            config,
            data,
            lane_trials,
            schedule=schedule,
            optimizer=optimizer,
            max_lanes=max_lanes,
            devices=devices,
            resume=resume,
            callbacks=Callbacks(on_epoch_end=save, log=log, stop=stop),
            cache=cache,
        )
        compile_s, run_s = compile_s + res.compile_seconds, run_s + res.run_seconds
        used = res.devices
        for j, trial in enumerate(trials):
            trial.set_user_attr(RECORD, lane_record(res, j, pruned[j]))
        if on_batch_end is not None:
            on_batch_end(numbers, first_lanes(res, m)._replace(trial_ids=tuple(numbers)))
        for j, trial in enumerate(trials):
            if res.best_epoch[j] == 0:
                study.tell(trial, state=TrialState.FAIL)
            elif pruned[j]:
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, float(res.best_val_acc[j]))
        study.set_user_attr(_BATCH, [])
        say(
            f"batch {batch}: trials {numbers[0]}..{numbers[-1]} told; best val acc "
            f"{res.best_val_acc[:m].max():.4f}; {sum(pruned)} pruned; "
            f"{len(counted_trials(study))} of {n_trials} trials finished"
        )
    return study_result(study, config, optimizer, num_epochs)._replace(
        compile_seconds=compile_s, run_seconds=run_s, devices=used
    )

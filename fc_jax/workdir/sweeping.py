"""Sweep many configurations of one net into a sweep folder, resumably.

Contract: `trial_space(s, ...)` is the list of trials of a grid (value lists), a random search
(`random` trials over `ranges`, lists as uniform choices) or a JSON spec, unswept hyperparameters
filled from settings `s`, checked, with the seeds per configuration. `prepare_sweep(out_dir, s,
trials)` makes every check and creates nothing; `sweep_in(out_dir, s, trials)` loads the data,
locks the folder, trains the trials as lanes of `fc_jax.runs.sweep.run_sweep` (or, with an Optuna
plan instead of trials, `fc_jax.runs.optuna_bridge.optimize`), writing `checkpoint.npz` every
`checkpoint_every` seconds, after the last epoch and when interrupted, and at the end the table,
`results.csv`, `results.json`, `sweep.png`, `models/trial-<k>.npz` and `best_config.json`
(`fc_jax.workdir.winner.finish_sweep`); it returns the sweep's summary (the final JSON line of
`fc-jax sweep`). With `resume=True` the saved sweep continues to exactly the results of an
uninterrupted one. With several processes only process 0 logs and writes. Errors are exceptions:
`ValueError` (nothing created), `fc_jax.workdir.folders.Diverged` (every configuration diverged;
its `line` is the summary, the files are written), `fc_jax.workdir.folders.Interrupted`.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax

from fc_jax import settings
from fc_jax.precision import precision_notice
from fc_jax.runs import placement, space
from fc_jax.runs import sweep as sweeps
from fc_jax.runs.loop import Callbacks
from fc_jax.runs.schedule import check_population
from fc_jax.storage import checkpoint, files
from fc_jax.workdir.folders import CHECKPOINT_EVERY, Interrupted, check_out_dir, resume_dir
from fc_jax.workdir.optuna_study import dropout_of, require_optuna, run_study
from fc_jax.workdir.training import schedule_of
from fc_jax.workdir.winner import finish_sweep, save_models

__all__ = [
    "OPTIONS",
    "SweepPlan",
    "trial_space",
    "prepare_sweep",
    "sweep_in",
]

# How a sweep runs, beside its settings and trials (the flags of `fc-jax sweep`, saved with it);
# `fc_jax.workdir.training.schedule_of` makes the `Schedule` of them and the settings.
OPTIONS: dict[str, Any] = dict(
    schedule="full",  # or "halving" (successive halving) or "pbt" (population-based training)
    eta=3,  # halving: keep the best 1/eta at each rung
    min_epochs=1,  # halving: epochs of the first rung
    independent_batches=False,  # each configuration draws its own minibatches
    max_lanes=None,  # most configurations trained at once (None: `lane_group_size` chooses)
    random_seed=0,  # the random search's seed, or the Optuna sampler's
    ready=2,  # pbt: epochs between exploit steps
    quantile=0.25,  # pbt: the worst quantile copies one of the best quantile
    seeds=1,  # seeds per configuration
)


class SweepPlan(NamedTuple):
    """A checked sweep, nothing created yet."""

    settings: dict  # what every lane shares (`fc_jax.settings`)
    trials: list[dict] | None  # the lanes' values; None: an Optuna study (`options["optuna"]`)
    options: dict  # `OPTIONS`, completed
    out_dir: Path
    lanes: Any  # the checkpoint's `Lanes` when resuming, else None
    meta: dict | None  # the checkpoint's meta when resuming, else None


def trial_space(
    s: dict,
    *,
    lists: dict | None = None,
    ranges: dict | None = None,
    spec=None,
    random: int | None = None,
    random_seed: int = 0,
    seeds: int | None = None,
) -> tuple[list[dict], int]:
    """The trials of a search space, checked, and the seeds per configuration.

    Args:
      s: the sweep's settings; they fill every hyperparameter a trial leaves out.
      lists: {name: values}: grid axes (with `random`: uniform choices).
      ranges: {name: (lo, hi)}: with `random`, sampled as `fc_jax.runs.space.RANGE_SAMPLING` says.
      spec: a JSON spec file (`fc_jax.runs.space.load_spec`), instead of lists and ranges.
      random: random search with this many trials (default: a grid).
      random_seed: the random search's seed.
      seeds: seeds per configuration (default: the spec's "seeds", else 1).

    Returns:
      (trials, seeds): each trial a dict of every hyperparameter (and its seed, when swept).

    Raises:
      ValueError: an empty, contradictory or invalid space, or a lane seed out of range.
    """
    lists, ranges, spec_seeds = dict(lists or {}), dict(ranges or {}), None
    if spec is not None:
        if lists or ranges or random is not None:
            raise ValueError(
                "--spec FILE replaces the hyperparameter flags and --random; drop them"
            )
        trials, spec_seeds = space.load_spec(spec, with_seeds=True)
        if spec_seeds is not None and seeds is not None and spec_seeds != seeds:
            raise ValueError(
                f'--seeds {seeds} differs from the spec\'s "seeds": {spec_seeds}; give one'
            )
    elif random is not None:
        if not ranges:
            raise ValueError("--random N needs ranges (e.g. --learning-rate-range 1e-4 1e-2)")
        both = sorted(set(lists) & set(ranges))
        if both:
            raise ValueError(f"give either a list or a range for {both}, not both")
        dists = {n: space.range_distribution(n, *r) for n, r in ranges.items()}
        dists.update({n: space.choice(v) for n, v in lists.items()})
        trials = space.random(random, dists, random_seed)
    else:
        if ranges:
            raise ValueError("--*-range flags need --random N (a grid takes value lists)")
        if not lists:
            raise ValueError(
                "nothing to sweep: give values (e.g. --learning-rate 1e-4 1e-3), "
                "--random N with ranges, or --spec FILE"
            )
        trials = space.grid(lists)
    fill = settings.hparams_of(s)
    trials = space.check_trials(
        [{**{n: v for n, v in fill.items() if n not in t}, **t} for t in trials]
    )
    settings.check_structure(s, trials)
    seeds = seeds or spec_seeds or 1
    last = [{"seed": t.get("seed", s["seed"]) + seeds - 1} for t in trials]
    space.check_trials(last)  # every lane's seed a valid uint32 before anything is created
    return trials, seeds


def prepare_sweep(
    out_dir,
    s: dict | None = None,
    trials: list[dict] | None = None,
    *,
    options: dict | None = None,
    optuna: dict | None = None,
    resume: bool = False,
    more_trials: int | None = None,
    data_dir=None,
) -> SweepPlan:
    """Every check of a sweep into `out_dir`, nothing created.

    Args:
      out_dir: the sweep folder (with `resume`: the folder or its `checkpoint.npz`).
      s: a new sweep's settings; with `resume`, the settings given again (only `epochs` may
        differ from the checkpoint's), or None.
      trials: a new sweep's trials (`trial_space`), or None with `optuna`.
      options: `OPTIONS` to change (e.g. `{"schedule": "halving", "seeds": 2}`).
      optuna: instead of trials, an Optuna study's plan (`fc_jax.cli.study.plan`).
      resume: continue the sweep saved in `out_dir`.
      more_trials: resuming an Optuna study: the finished trials it should now hold.
      data_dir: the CIFAR-10 folder the user named, or None.

    Raises:
      ValueError: the one-line message of the first check that fails.
    """
    if not resume:
        s = dict(s)
        settings.check_settings(s)
        out = check_out_dir(out_dir, data_dir=data_dir)
        opts = {**OPTIONS, **(options or {})}
        if optuna is not None:
            require_optuna(optuna["sampler"])
            opts["seeds"] = 1
            opts["optuna"] = optuna
        else:
            if opts["schedule"] == "pbt" and opts["seeds"] > 1:
                raise ValueError("--schedule pbt trains one seed per configuration; drop --seeds")
            if opts["schedule"] == "pbt":
                check_population(
                    opts["quantile"], len(trials), "configurations", "--schedule pbt: "
                )
        if (out / "checkpoint.npz").exists():
            raise ValueError(
                f"{out} holds a checkpoint already: use --resume {out} or another --out"
            )
        return SweepPlan(s, trials, opts, out, None, None)
    out = resume_dir(out_dir)
    lanes, meta = checkpoint.load_lanes(out)
    if "sweep" not in meta:
        raise ValueError(
            f"{out}/checkpoint.npz was not written by fc-jax sweep; use fc-jax train --resume"
        )
    s = settings.merge_resume(meta["settings"], dict(s or {}))
    opts = meta["sweep"]["options"]
    if "optuna" in opts:
        require_optuna(opts["optuna"]["sampler"])
        if more_trials is not None:  # a finished study may be asked for more trials
            opts["optuna"]["trials"] = more_trials
    return SweepPlan(s, meta["sweep"].get("trials"), opts, out, lanes, meta)


def sweep_in(
    out_dir,
    s: dict | None = None,
    trials: list[dict] | None = None,
    *,
    options: dict | None = None,
    optuna: dict | None = None,
    resume: bool = False,
    more_trials: int | None = None,
    data_dir=None,
    checkpoint_every: float = CHECKPOINT_EVERY,
    retrain_best: int | None = None,
    top: int = 20,
    log: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> dict:
    """Sweep `trials` of the net of settings `s` into the folder `out_dir`; see the module.

    Args:
      out_dir, s, trials, options, optuna, resume, more_trials, data_dir: as `prepare_sweep`.
      checkpoint_every: seconds between checkpoints (0: after every epoch).
      retrain_best: train the winner again from scratch into `out_dir/retrain` for this many
        epochs (0: the sweep's) and add its test accuracy (default: no).
      top: rows of the table passed to `log`.
      log: called with each line `fc-jax sweep` prints on stdout but the last (default: nothing).
      note: called with the notes it prints on stderr (default: nothing).

    Returns:
      The summary: dataset, trials, schedule, best trial and values, accuracies, timings,
      devices, out_dir, results, the winner's `train_command` (and `test_acc` with `retrain_best`).

    Raises:
      ValueError: a check failed (nothing created); `Diverged`; `Interrupted`;
      `fc_jax.storage.files.WriteError`.
    """
    plan = prepare_sweep(
        out_dir,
        s,
        trials,
        options=options,
        optuna=optuna,
        resume=resume,
        more_trials=more_trials,
        data_dir=data_dir,
    )
    s, trials, opts, out = plan.settings, plan.trials, plan.options, plan.out_dir
    if trials is None:
        dropout = dropout_of(opts["optuna"])
    else:
        dropout = any(t["keep_prob"] < 1 for t in trials)
    config = settings.config_of(s, dropout=dropout)
    data, folder, fingerprint = settings.load_data(s, data_dir, plan.meta)
    s["data_dir"] = folder
    lead = placement.is_lead()
    quiet = lambda line: None
    note = note if note is not None and lead else quiet
    log = log if log is not None and lead else quiet
    count = len(trials) if trials is not None else opts["optuna"]["trials"]
    note(
        f"{s['dataset']}: {count} configurations of {list(config.hidden_dims)} "
        f"({s['update_rule']}, {opts['schedule']}) on {len(jax.devices())} device(s) -> {out}"
    )
    if notice := precision_notice(config, jax.devices()):
        note(notice)
    lock = files.lock_folder(out) if lead else None
    if lock is not None:
        lock.acquire()
    try:
        if lead:
            files.remove_stale_temps(out)
        if plan.meta is None:
            schedule = schedule_of(s, opts, trials, checkpoint_every=checkpoint_every)
        else:  # the saved schedule, so the sweep continues exactly
            schedule = plan.meta["schedule"]._replace(
                num_epochs=s["epochs"], checkpoint_every=checkpoint_every
            )
        meta = dict(
            config=config,
            update_rule=s["update_rule"],
            schedule=schedule,
            settings=s,
            data_fingerprint=fingerprint,
            data_dir=folder,
            sweep={"trials": trials, "options": opts},
        )
        context = dict(lead=lead, log=log, note=note)
        if trials is None:
            result, extra = run_study(s, config, data, opts, out, meta, context)
        else:
            result, extra = _sweep(s, config, data, trials, opts, out, plan.lanes, meta, context)
        done = dict(lead=lead, log=log, note=note, top=top, retrain_epochs=retrain_best)
        return finish_sweep(result, s, data, opts, out, extra=extra, **done)
    except Interrupted:  # the retrained winner's: resume that run
        raise
    except KeyboardInterrupt:
        raise Interrupted(out, "sweep", lead=lead) from None
    finally:
        if lock is not None:
            lock.release()


def _sweep(s, config, data, trials, opts, out, lanes, meta, context):
    """The trials as lanes of `run_sweep` on `meta["schedule"]`; (result, None)."""
    lead = context["lead"]
    save = (lambda ls: checkpoint.save_lanes(out, ls, meta)) if lead else None
    result = sweeps.run_sweep(
        config,
        data,
        trials,
        schedule=meta["schedule"],
        optimizer=s["update_rule"],
        max_lanes=opts["max_lanes"],
        resume=lanes,
        callbacks=Callbacks(on_epoch_end=save, log=context["log"]),
    )
    if lead:
        save_models(result, data, out, s)
    return result, None

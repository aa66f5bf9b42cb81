"""A finished sweep's outputs and its winner, ready to use.

Contract: `finish_sweep(result, s, data, options, out)` writes what a finished sweep leaves in its
folder (`results.csv`, `results.json`, `sweep.png`, `best_config.json`), logs the ranked table and
returns the summary; `save_models` writes each trial's best params as `models/trial-<k>.npz`.
`winner_settings(result, s)` are the settings of `fc-jax train` that retrain the sweep's winning
lane (`SweepResult.best`: with several seeds, the best configuration's best seed): the sweep's
settings `s` (net, update rule, data, epochs, batch size, sampling) with the lane's
hyperparameter values and seed. `best_config(result, s, options, out)` is the JSON-ready record
written as `best_config.json`, holding the `fc-jax train` command that retrains it (into
`out/retrain`); `retrain_best(result, s, out)` trains exactly what that command trains.

The command retrains the lane exactly (the same best validation accuracy, bit for bit) when the
lane drew the minibatches `fc-jax train --seed SEED` draws: with `--independent-batches`, or when
the lane's seed is the sweep's `--seed` (every lane of a sweep without `--seeds`; the first seed
of each configuration with it), and the net is the same (a lane with keep_prob 1 in a sweep that
mixes dropout in has dropout layers that keep everything; `fc-jax train` builds the net without
them, equal up to rounding), and not after population-based training, whose lane changed its
values on the way (the command trains its final values from scratch). `best_config.json` says
which holds (`reproduces_lane`, `differences`).
"""

import json
import shlex
from collections.abc import Callable
from pathlib import Path

import jax

from fc_jax import settings
from fc_jax.data.datasets import DATASETS
from fc_jax.hparams import HParams
from fc_jax.report.halving import halving_line, replay_halving
from fc_jax.report.sweeps import format_table, plot_sweep, trial_id, write_results
from fc_jax.storage import files
from fc_jax.storage.model import save_model
from fc_jax.workdir.folders import Diverged, Interrupted, command_settings, train_command
from fc_jax.workdir.training import train_in

__all__ = [
    "winner_settings",
    "best_config",
    "retrain_best",
    "save_models",
    "finish_sweep",
]


def winner_settings(result, s: dict, epochs: int | None = None) -> dict:
    """`fc-jax train` settings of the winning lane: `s` with its values and seed (and `epochs`)."""
    k = result.best
    trial = result.trials[k]
    values = {n: v for n, v in trial.items() if n in HParams._fields}
    if getattr(result, "pbt", None) is not None:  # the values PBT ended with
        values.update({n: float(getattr(result.hparams, n)[k]) for n in result.pbt.names})
    return {**s, **values, "seed": int(trial["seed"]), "epochs": epochs or s["epochs"]}


def best_config(result, s: dict, options: dict, out: Path) -> dict:
    """The record of `best_config.json`: the winner's values, seed, net, update rule, data, epochs,
    schedule, accuracies and the `fc-jax train` command that retrains it (see the module)."""
    k, w = result.best, winner_settings(result, s)
    command = train_command(w, Path(out) / "retrain")
    same_batches = bool(options.get("independent_batches")) or w["seed"] == s["seed"]
    same_net = settings.config_of(w) == result.config
    why = []
    if not same_batches:
        why.append(
            f"the lane drew the minibatches of the sweep's --seed {s['seed']}, the command "
            f"those of --seed {w['seed']} (sweep with --independent-batches to match)"
        )
    if not same_net:
        why.append("the sweep's net has dropout layers keeping everything, the command's none")
    if getattr(result, "pbt", None) is not None:
        why.append(
            "PBT changed the lane's state and values during training (lineage in "
            "results.json); the command trains its final values from scratch"
        )
    record = {
        "trial": k,
        "configuration": int(result.groups[k]),
        "values": {f: w[f] for f in HParams._fields if f in w},
        "seed": w["seed"],
        "net": {n: w[n] for n in ("hidden_dims", "normalization", "dtype", "precision")},
        "dropout": settings.config_of(w).dropout,
        "update_rule": w["update_rule"],
        "data": {
            n: w.get(n)
            for n in ("dataset", "num_training", "num_validation", "num_test", "data_dir")
        },
        "epochs": w["epochs"],
        "schedule": {"batch_size": w["batch_size"], "sampling": w["sampling"], **options},
        "best_val_acc": float(result.best_val_acc[k]),
        "best_epoch": int(result.best_epoch[k]),
        "command": command,
        "reproduces_lane": not why,
        "differences": why,
    }
    if result.seeds > 1:
        c = result.best_configuration
        record.update(
            mean_best_val_acc=float(result.config_mean[c]),
            std_best_val_acc=float(result.config_std[c]),
            seeds=[
                int(result.trials[j]["seed"])
                for j in range(len(result.trials))
                if result.groups[j] == c
            ],
        )
    return record


def retrain_best(
    result, s: dict, out, epochs: int | None = None, *, log: Callable[[str], None] | None = None
) -> dict:
    """Train the sweep's winner again from scratch into `out/retrain`: what the printed
    `fc-jax train` command (`best_config(...)["command"]`) trains, in this process.

    Args:
      result: the finished `SweepResult`; s: the sweep's settings (with its `data_dir`).
      out: the sweep's folder.
      epochs: the retrained run's epochs (default: the sweep's).
      log: called with each epoch's line.

    Returns:
      The run's summary (`fc_jax.workdir.training.train_in`), with its `test_acc`.

    Raises:
      As `train_in`; `Interrupted` names that run and its command.
    """
    w = winner_settings(result, s, epochs)
    command = train_command(w, Path(out) / "retrain")
    data_dir = w.get("data_dir") if w["dataset"] == "cifar10" else None
    try:
        return train_in(Path(out) / "retrain", command_settings(w), data_dir=data_dir, log=log)
    except Interrupted as exc:
        raise Interrupted(exc.out_dir, "train", argv=shlex.split(command)[1:]) from None


def save_models(result, data: dict, out: Path, s: dict) -> None:
    """Each trial's best params as `out/models/trial-<id>.npz` (skipped for a lane with none)."""
    for k, trial in enumerate(result.trials):
        if result.best_epoch[k] == 0:
            continue
        pick = lambda t, k=k: jax.tree.map(lambda a: a[k], t)
        save_model(
            out / "models" / f"trial-{trial_id(result, k)}.npz",
            result.config,
            pick(result.best_params),
            pick(result.best_model_state),
            data["mean_image"],
            meta={"settings": s, "trial": trial, "best_val_acc": float(result.best_val_acc[k])},
            pixel_scale=DATASETS[s["dataset"]].pixel_scale,
            whiten=data.get("whiten"),
        )


def finish_sweep(
    result,
    s: dict,
    data: dict,
    opts: dict,
    out: Path,
    *,
    lead: bool = True,
    log: Callable[[str], None] = lambda line: None,
    note: Callable[[str], None] = lambda line: None,
    top: int = 20,
    retrain_epochs: int | None = None,
    extra: dict | None = None,
) -> dict:
    """The table (to `log`), the files and the summary of a finished sweep; with
    `retrain_epochs`, `retrain_best` (0: the sweep's epochs) and its test accuracy.

    Raises:
      Diverged: every configuration diverged (the files are written; `line` is the summary).
    """
    trials = result.trials
    log(format_table(result, top))
    check = None
    if result.schedule == "full" and s["epochs"] > opts["min_epochs"]:
        check = replay_halving(result, opts["eta"], opts["min_epochs"])
        log(halving_line(result, opts["eta"], opts["min_epochs"]))
    best = result.trials[result.best]
    summary = {
        "settings": dict(s),
        "options": opts,
        "lane_epochs": result.lane_epochs,
        **(extra or {}),
    }
    if check is not None:
        summary["halving_check"] = check
    line = dict(
        dataset=s["dataset"],
        trials=len(trials),
        schedule=result.schedule,
        best_trial=trial_id(result, result.best),
        best=best,
        best_val_acc=float(result.best_val_acc[result.best]),
        diverged=int(result.diverged.sum()),
        lane_epochs=result.lane_epochs,
        compile_seconds=round(result.compile_seconds, 3),
        run_seconds=round(result.run_seconds, 3),
        devices=len(result.devices),
        device=(result.devices or [None])[0],
        out_dir=str(out),
        **(extra or {}),
    )
    if result.seeds > 1:
        c = result.best_configuration
        line.update(
            seeds=result.seeds,
            best_configuration=c,
            best_mean_val_acc=float(result.config_mean[c]),
            best_std_val_acc=float(result.config_std[c]),
        )
    if lead:
        paths = write_results(result, out, summary)
        plot_sweep(result, out / "sweep.png")
        line.update(results=str(paths["json"]))
    if result.diverged.all():
        raise Diverged(
            f"every one of the {len(trials)} configurations diverged; lower the learning "
            f"rates or weight scales (results written to {out})",
            line=line,
        )
    record = best_config(result, s, opts, out)
    if lead:
        files.atomic_write_text(out / "best_config.json", json.dumps(record, indent=1))
    log(f"retrain the winner (trial {result.best}): {record['command']}")
    line.update(train_command=record["command"], reproduces_lane=record["reproduces_lane"])
    if retrain_epochs is not None and lead:
        epochs = retrain_epochs or s["epochs"]
        again = train_command(winner_settings(result, s, epochs), out / "retrain")
        note(f"retraining trial {result.best} {best}: {again}")
        run = retrain_best(result, s, out, epochs, log=note)
        line.update(
            test_acc=run["test_acc"],
            retrain_epochs=epochs,
            retrain_best_val_acc=run["best_val_acc"],
        )
    return line

"""The winner of a sweep, ready to use: `best_config.json` and the `fc-jax train` command.

Contract: `winner_settings(result, s)` are the settings of `fc-jax train` that retrain the sweep's
winning lane (`SweepResult.best`: with several seeds, the best configuration's best seed): the
sweep's settings `s` (net, update rule, data, epochs, batch size, sampling) with the lane's
hyperparameter values and seed. `best_config(result, s, options, out)` is the JSON-ready record
written as `best_config.json`, holding that command (`fc_jax.cli.flags.train_command`, into
`out/retrain`); `retrain(command)` runs a printed command through `fc-jax train`'s own parser and
`run`, so `--retrain-best` is that command and nothing else.

The command retrains the lane exactly (the same best validation accuracy, bit for bit) when the
lane drew the minibatches `fc-jax train --seed SEED` draws: with `--independent-batches`, or when
the lane's seed is the sweep's `--seed` (every lane of a sweep without `--seeds`; the first seed
of each configuration with it), and the net is the same (a lane with keep_prob 1 in a sweep that
mixes dropout in has dropout layers that keep everything; `fc-jax train` builds the net without
them, equal up to rounding), and not after population-based training, whose lane changed its
values on the way (the command trains its final values from scratch). `best_config.json` says
which holds (`reproduces_lane`, `differences`).
"""

import contextlib
import io
import json
import shlex
import sys
from pathlib import Path

from fc_jax import settings
from fc_jax.cli import flags
from fc_jax.hparams import HParams

__all__ = ["winner_settings", "best_config", "retrain"]


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
    command = flags.train_command(w, Path(out) / "retrain")
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


def retrain(command: str, *, quiet: bool = False) -> dict | int:
    """Run `command` (an `fc-jax train ...` line) in this process through `fc-jax train`'s parser
    and `run`; its stdout goes to stderr (nowhere when `quiet`). Returns the run's `history.json`
    (settings, best_val_acc, test_acc, history), or the exit code when it is not 0."""
    from fc_jax import cli

    words = shlex.split(command)
    if words[:2] != ["fc-jax", "train"]:
        raise ValueError(f"not an fc-jax train command: {command}")
    args = cli.build_parser().parse_args(words[1:])
    args.quiet, args.argv = True, words[1:]
    with contextlib.redirect_stdout(io.StringIO() if quiet else sys.stderr):
        code = args.func(args)
    if code:
        return code
    out = Path(args.out)
    return json.loads((out / "history.json").read_text())

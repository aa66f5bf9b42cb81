"""`fc-jax sweep`: many configurations of one net on the run loop; resumable; successive halving.

Contract: the space comes from grid lists (`--learning-rate 1e-4 3e-4 --weight-scale 1e-2 5e-2`, one
flag per `HParams` field), from `--random N` with ranges (`--learning-rate-range 1e-4 1e-2`:
log-uniform for learning rates, weight scales, L2 and epsilon, uniform for probabilities and decay
factors, as `fc_jax.runs.space.RANGE_SAMPLING` says; list flags then become uniform choices), or
from `--spec FILE` (see `fc_jax.runs.space.from_spec`); unswept hyperparameters take the dataset's
recipe (`fc_jax.settings.DEFAULTS`). `--seeds N` (or `"seeds": N` in the spec) trains every
configuration with N seeds (`--seed`, `--seed` + 1, ...) as N lanes and reports, ranks and halves by
the mean over them (`fc_jax.runs.sweep.repeat_seeds`). The net has dropout layers when any trial
keeps less than 1 (`--keep-prob 1 0.5` mixes nets without and with dropout). Everything is checked
before anything is created or compiled. `--schedule halving --eta 3 --min-epochs 1` stops all but
the best 1/eta at each rung; `--schedule pbt --ready 2 --quantile 0.25` is population-based training
(`fc_jax.runs.pbt`: the worst quarter copies the best quarter every 2 epochs and perturbs the swept
hyperparameters). With `--out DIR`, a checkpoint of all lanes is written every `--checkpoint-every`
seconds, after the last epoch and when interrupted (`checkpoint.npz`, the format of `fc-jax train`) and `fc-jax sweep --resume DIR` continues a killed
sweep to exactly the results of an uninterrupted one. A full sweep also says whether successive
halving (`--eta`, `--min-epochs`) would have stopped its winner (`fc_jax.report.halving`). At the
end: the ranked table, ONE final JSON line, and in DIR `results.csv`, `results.json`, `sweep.png`,
each trial's best params as `models/trial-<k>.npz` (`fc-jax eval` reads them) and `best_config.json`
(the winner's values, seed, net, data, epochs and schedule, `fc_jax.cli.best`); the `fc-jax train`
command that retrains the winner is printed, and `--retrain-best [EPOCHS]` runs it (with EPOCHS
epochs) into `DIR/retrain/` and reports its test accuracy. Exit codes as `fc_jax.cli` (3: every
configuration diverged, or the retrained winner did). With several processes only process 0 prints
and writes. `--sampler tpe|random|cmaes --trials N --lanes K` searches the same space with an
Optuna study over lanes instead (`fc_jax.cli.study`; `optuna-dashboard sqlite:///DIR/study.db`
shows it).
"""

import argparse
import datetime
import json
import math
import sys
from pathlib import Path

from fc_jax import settings
from fc_jax.cli import flags
from fc_jax.cli import study as study_cli
from fc_jax.data.datasets import DATASETS
from fc_jax.precision import precision_notice
from fc_jax.runs import space

__all__ = ["add_parser", "run", "SWEPT", "save_models"]

SWEPT = space.SWEEPABLE  # every sweepable name: the HParams vocabulary plus lane seeds
_FLAG = {n: n.replace("_", "-") for n in SWEPT if n != "seed"}  # seeds: --seeds N, --seed
_NET = (
    "dataset",
    "hidden_dims",
    "normalization",
    "update_rule",
    "dtype",
    "precision",
    "epochs",
    "batch_size",
    "sampling",
    "seed",
    "num_training",
    "num_validation",
    "num_test",
)
_NET += (
    "recipe",
    "lr_schedule",
    "crop_pad",
    "flip",
    "whiten",
    "whiten_epsilon",
)  # shared by every lane
_SPACE = ("random", "spec", "seeds", *(f.replace("-", "_") for f in _FLAG.values()))
_RUN = (
    "schedule",
    "eta",
    "min_epochs",
    "independent_batches",
    "max_lanes",
    "random_seed",
    "ready",
    "quantile",
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="train many hyperparameter settings at once (vmap)",
        description=__doc__.split("\n\n")[0],
    )
    flags.add_data(p)
    flags.add_net(p)
    flags.add_schedule(p)
    a = p.add_argument
    for n in _FLAG:
        a(
            f"--{_FLAG[n]}",
            type=float,
            nargs="+",
            metavar="V",
            help=f"{n} values, a grid axis (default: the recipe's value)",
        )
        a(
            f"--{_FLAG[n]}-range",
            type=float,
            nargs=2,
            metavar=("LO", "HI"),
            help=f"with --random: {n} {space.RANGE_SAMPLING[n]} in [LO, HI] (default: not random)",
        )
    a(
        "--seeds",
        type=flags.positive_int,
        metavar="N",
        help="train every configuration with N seeds (--seed, --seed + 1, ...); the table, "
        'results and halving use the mean over them (default: 1, or the spec\'s "seeds")',
    )
    a(
        "--random",
        type=flags.positive_int,
        metavar="N",
        help="random search: N trials (default: a grid)",
    )
    a(
        "--random-seed",
        type=flags.seed,
        default=0,
        help="seed of the random search, or of --sampler (default: 0)",
    )
    a(
        "--spec",
        metavar="FILE",
        help='JSON space: {"grid": {...}} or {"random": {...}} (default: none)',
    )
    a(
        "--schedule",
        choices=("full", "halving", "pbt"),
        default="full",
        help="full: every configuration trains --epochs; halving: successive halving; pbt: "
        "population-based training (default: full)",
    )
    a(
        "--ready",
        type=flags.positive_int,
        default=2,
        metavar="EPOCHS",
        help="pbt: epochs between exploit steps (default: 2)",
    )
    a(
        "--quantile",
        type=_quantile,
        default=0.25,
        help="pbt: the worst QUANTILE of the lanes copy one of the best QUANTILE and perturb the "
        "swept hyperparameters x0.8 or x1.2, a number in (0, 0.5] (default: 0.25)",
    )
    a(
        "--eta",
        type=_eta,
        default=3,
        help="halving: keep the best 1/eta, an integer >= 2 (default: 3)",
    )
    a(
        "--min-epochs",
        type=flags.positive_int,
        default=1,
        help="halving: epochs of the first rung (default: 1)",
    )
    a(
        "--independent-batches",
        action="store_true",
        help="each configuration draws its own minibatches (default: shared)",
    )
    a(
        "--max-lanes",
        type=flags.positive_int,
        help="most configurations trained at once (default: all on a GPU, one per device on CPUs)",
    )
    a(
        "--retrain-best",
        type=flags.positive_int,
        nargs="?",
        const=0,
        metavar="EPOCHS",
        help="after the sweep, run the printed fc-jax train command: train the winner again from "
        "scratch for EPOCHS epochs (default EPOCHS: the sweep's --epochs) into OUT/retrain and "
        "report its test accuracy (default: no)",
    )
    a("--top", type=flags.positive_int, default=20, help="rows of the printed table (default: 20)")
    a("--resume", metavar="DIR", help="continue the sweep saved in DIR (default: a new sweep)")
    flags.add_checkpoint(p)
    study_cli.add_flags(p)
    flags.add_output(p, "runs/sweep-<dataset>-<timestamp>")
    p.set_defaults(func=run)


def _quantile(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        v = -1.0
    if not 0 < v <= 0.5:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 0.5], got {s!r}")
    return v


def _eta(s: str) -> int:
    v = flags.positive_int(s)
    if v < 2:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 2 (halving keeps the best 1/eta), got {s}"
        )
    return v


def _trials(args, s: dict) -> list[dict]:
    """The trials from the flags (validated), unswept values filled from the recipe `s`."""
    return _space(args, s)[0]


def _space(args, s: dict) -> tuple[list[dict], int]:
    """(the trials from the flags, validated, unswept values filled from the recipe `s`; seeds per
    configuration from --seeds or the spec)."""
    from fc_jax.runs import space

    arg = lambda n, suffix="": getattr(args, _FLAG[n].replace("-", "_") + suffix, None)
    lists = {n: arg(n) for n in _FLAG if arg(n) is not None}
    ranges = {n: arg(n, "_range") for n in _FLAG if arg(n, "_range") is not None}
    seeds = None
    if args.spec is not None:
        if lists or ranges or args.random is not None:
            raise ValueError(
                "--spec FILE replaces the hyperparameter flags and --random; drop them"
            )
        trials, seeds = space.load_spec(args.spec, with_seeds=True)
        if seeds is not None and args.seeds is not None and seeds != args.seeds:
            raise ValueError(
                f'--seeds {args.seeds} differs from the spec\'s "seeds": {seeds}; give one'
            )
    elif args.random is not None:
        if not ranges:
            raise ValueError("--random N needs ranges (e.g. --learning-rate-range 1e-4 1e-2)")
        both = sorted(set(lists) & set(ranges))
        if both:
            raise ValueError(f"give either a list or a range for {both}, not both")
        dists = {n: space.range_distribution(n, *r) for n, r in ranges.items()}
        dists.update({n: space.choice(v) for n, v in lists.items()})
        trials = space.random(args.random, dists, args.random_seed)
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
    seeds = args.seeds or seeds or 1
    last = [{"seed": t.get("seed", s["seed"]) + seeds - 1} for t in trials]
    space.check_trials(last)  # every lane's seed a valid uint32 before anything is created
    return trials, seeds


def _prepare(args):
    """(settings, trials (None: an Optuna study), run options, out, lanes or None, meta or None);
    nothing created."""
    if args.sampler is not None:
        study_cli.require_optuna(args.sampler)
    study_cli.check_flags(args)
    if args.resume is None:
        given = flags.given(args, _NET)
        s = settings.settings(given.get("dataset", "cifar10"), given)
        stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
        out = flags.check_out_dir(
            args.out or f"runs/sweep-{s['dataset']}-{stamp}", data_dir=args.data_dir
        )
        opts = {k: getattr(args, k) for k in _RUN}
        trials = None
        opts["seeds"] = 1
        if args.sampler is None:
            trials, seeds = _space(args, s)
            opts["seeds"] = seeds
            if opts["schedule"] == "pbt" and seeds > 1:
                raise ValueError("--schedule pbt trains one seed per configuration; drop --seeds")
            if opts["schedule"] == "pbt" and int(len(trials) * opts["quantile"]) < 1:
                raise ValueError(
                    f"--schedule pbt --quantile {opts['quantile']:g} needs at least "
                    f"{math.ceil(1 / opts['quantile'])} configurations; got {len(trials)}"
                )
        else:
            get = lambda n, suffix: (
                getattr(args, _FLAG[n].replace("-", "_") + suffix, None) if n in _FLAG else None
            )
            opts["optuna"] = study_cli.plan(args, s, out, get)
        if (out / "checkpoint.npz").exists():
            raise ValueError(
                f"{out} holds a checkpoint already: use --resume {out} or another --out"
            )
        return s, trials, opts, out, None, None
    from fc_jax.storage.checkpoint import load_lanes

    out = flags.resume_dir(args.resume)
    if args.out is not None and Path(args.out).resolve() != out.resolve():
        raise ValueError(f"--resume writes into {out}; drop --out {args.out}")
    extra = [f"--{k.replace('_', '-')}" for k in _SPACE if getattr(args, k, None) is not None]
    if extra:
        raise ValueError(f"--resume continues the saved space; drop {' '.join(extra)}")
    lanes, meta = load_lanes(out)
    if "sweep" not in meta:
        raise ValueError(
            f"{out}/checkpoint.npz was not written by fc-jax sweep; use fc-jax train --resume"
        )
    given = {k: v for k, v in flags.given(args, _NET).items() if k != "data_dir"}
    s = settings.merge_resume(meta["settings"], given)
    opts = meta["sweep"]["options"]
    if "optuna" in opts:
        study_cli.require_optuna(opts["optuna"]["sampler"])
        if args.trials is not None:  # a finished study may be asked for more trials
            opts["optuna"]["trials"] = args.trials
    return s, meta["sweep"].get("trials"), opts, out, lanes, meta


def run(args) -> int:
    import jax

    from fc_jax.runs.placement import is_lead

    s, trials, opts, out, lanes, meta = _prepare(args)
    if trials is None:
        dropout = study_cli.dropout_of(opts["optuna"])
    else:
        dropout = any(t["keep_prob"] < 1 for t in trials)
    config = settings.config_of(s, dropout=dropout)
    data, data_dir, fingerprint = settings.load_data(s, args.data_dir, meta)
    s["data_dir"] = data_dir
    lead = is_lead()
    note = (lambda m: None) if args.quiet or not lead else (lambda m: print(m, file=sys.stderr))
    say = (lambda line: print(line, flush=True)) if lead else (lambda line: None)
    count = len(trials) if trials is not None else opts["optuna"]["trials"]
    note(
        f"{s['dataset']}: {count} configurations of {list(config.hidden_dims)} "
        f"({s['update_rule']}, {opts['schedule']}) on {len(jax.devices())} device(s) -> {out}"
    )
    if notice := precision_notice(config, jax.devices()):
        note(notice)
    from fc_jax.storage.files import lock_folder, remove_stale_temps

    lock = lock_folder(out) if lead else None
    if lock is not None:
        lock.acquire()
    try:
        if lead:
            remove_stale_temps(out)
        new_meta = dict(
            config=config,
            update_rule=s["update_rule"],
            settings=s,
            data_fingerprint=fingerprint,
            data_dir=data_dir,
            sweep={"trials": trials, "options": opts},
        )
        if trials is None:
            report = lambda result, extra: _report(
                args, s, data, result, opts, out, new_meta, lead, say, note, extra
            )
            return study_cli.run(
                args, s, config, data, opts, out, new_meta, lead, say, note, report
            )
        return _sweep(args, s, config, data, trials, opts, out, lanes, new_meta, lead, say, note)
    except KeyboardInterrupt:
        if lead:
            print(flags.interrupted("sweep", out, getattr(args, "argv", None)), file=sys.stderr)
        return 130
    finally:
        if lock is not None:
            lock.release()


def _sweep(args, s, config, data, trials, opts, out, lanes, meta, lead, say, note) -> int:
    from fc_jax.cli import train as train_cli
    from fc_jax.runs.sweep import run_sweep
    from fc_jax.storage.checkpoint import save_lanes

    save = (lambda ls: save_lanes(out, ls, meta)) if lead else None
    pbt = None
    if opts["schedule"] == "pbt":
        from fc_jax.runs.sweep import pbt_defaults

        pbt = pbt_defaults(trials, opts["ready"], opts["quantile"])
    result = run_sweep(
        config,
        data,
        trials,
        update_rule=s["update_rule"],
        num_epochs=s["epochs"],
        batch_size=s["batch_size"],
        seed=s["seed"],
        replace=s["sampling"] == "replace",
        independent_batches=opts["independent_batches"],
        schedule=opts["schedule"],
        eta=opts["eta"],
        min_epochs=opts["min_epochs"],
        seeds=opts.get("seeds", 1),
        pbt=pbt,
        max_lanes=opts["max_lanes"],
        resume=lanes,
        on_epoch_end=save,
        log=say,
        checkpoint_every=args.checkpoint_every,
        **train_cli.structure_args(s),
    )
    if lead:
        save_models(result, data, out, s)
    return _report(args, s, data, result, opts, out, meta, lead, say, note)


def _report(args, s, data, result, opts, out, meta, lead, say, note, extra=None) -> int:
    """The table, the files and the JSON line of a finished sweep; --retrain-best."""
    from fc_jax.report.sweeps import format_table, plot_sweep, trial_id, write_results

    trials = result.trials
    say(format_table(result, args.top))
    check = None
    if result.schedule == "full" and s["epochs"] > opts["min_epochs"]:
        from fc_jax.report.halving import halving_line, replay_halving

        check = replay_halving(result, opts["eta"], opts["min_epochs"])
        say(halving_line(result, opts["eta"], opts["min_epochs"]))
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
    code = 0
    if result.diverged.all():
        print(
            f"error: every one of the {len(trials)} configurations diverged; lower the learning "
            f"rates or weight scales (results written to {out})",
            file=sys.stderr,
        )
        code = 3
    if lead:
        paths = write_results(result, out, summary)
        plot_sweep(result, out / "sweep.png")
        line.update(results=str(paths["json"]))
    if code == 0:
        from fc_jax.cli.best import best_config, retrain, winner_settings
        from fc_jax.storage.files import atomic_write_text

        record = best_config(result, s, opts, out)
        if lead:
            atomic_write_text(out / "best_config.json", json.dumps(record, indent=1))
        say(f"retrain the winner (trial {result.best}): {record['command']}")
        line.update(train_command=record["command"], reproduces_lane=record["reproduces_lane"])
        if args.retrain_best is not None and lead:
            epochs = args.retrain_best or s["epochs"]
            again = flags.train_command(winner_settings(result, s, epochs), out / "retrain")
            note(f"retraining trial {result.best} {best}: {again}")
            run = retrain(again, quiet=args.quiet)
            if isinstance(run, int):
                return run
            line.update(
                test_acc=run["test_acc"],
                retrain_epochs=epochs,
                retrain_best_val_acc=run["best_val_acc"],
            )
    say(json.dumps(line))
    return code


def save_models(result, data: dict, out: Path, s: dict) -> None:
    """Each trial's best params as `out/models/trial-<id>.npz` (skipped for a lane with none)."""
    import jax

    from fc_jax.report.sweeps import trial_id
    from fc_jax.storage.model import save_model

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

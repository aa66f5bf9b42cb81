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
(the winner's values, seed, net, data, epochs and schedule, `fc_jax.workdir.winner`); the `fc-jax train`
command that retrains the winner is printed, and `--retrain-best [EPOCHS]` runs it (with EPOCHS
epochs) into `DIR/retrain/` and reports its test accuracy. Exit codes as `fc_jax.cli` (3: every
configuration diverged, or the retrained winner did). With several processes only process 0 prints
and writes. `--sampler tpe|random|cmaes --trials N --lanes K` searches the same space with an
Optuna study over lanes instead (`fc_jax.cli.study`; `optuna-dashboard sqlite:///DIR/study.db`
shows it). The sweep itself is library code: `fc_jax.workdir.sweeping.sweep_in`.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

from fc_jax import settings
from fc_jax.cli import flags
from fc_jax.cli import study as study_cli
from fc_jax.runs import space
from fc_jax.runs.placement import is_lead
from fc_jax.workdir import sweeping
from fc_jax.workdir.folders import Diverged, check_out_dir, resume_dir
from fc_jax.workdir.optuna_study import require_optuna

__all__ = ["add_parser", "run", "SWEPT"]

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
_RUN = tuple(k for k in sweeping.OPTIONS if k != "seeds")  # the flags of the run's options


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


def _space(args, s: dict) -> tuple[list[dict], int]:
    """`fc_jax.workdir.sweeping.trial_space` of the flags."""
    arg = lambda n, suffix="": getattr(args, _FLAG[n].replace("-", "_") + suffix, None)
    return sweeping.trial_space(
        s,
        lists={n: arg(n) for n in _FLAG if arg(n) is not None},
        ranges={n: arg(n, "_range") for n in _FLAG if arg(n, "_range") is not None},
        spec=args.spec,
        random=args.random,
        random_seed=args.random_seed,
        seeds=args.seeds,
    )


def run(args) -> int:
    if args.sampler is not None:
        require_optuna(args.sampler)
    study_cli.check_flags(args)
    kwargs = {}
    if args.resume is None:
        given = flags.given(args, _NET)
        s = settings.settings(given.get("dataset", "cifar10"), given)
        stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
        out = check_out_dir(
            args.out or f"runs/sweep-{s['dataset']}-{stamp}", data_dir=args.data_dir
        )
        options = {k: getattr(args, k) for k in _RUN}
        trials = None
        if args.sampler is None:
            trials, options["seeds"] = _space(args, s)
        else:
            get = lambda n, suffix: (
                getattr(args, _FLAG[n].replace("-", "_") + suffix, None) if n in _FLAG else None
            )
            kwargs["optuna"] = study_cli.plan(args, s, out, get)
        kwargs.update(trials=trials, options=options)
    else:
        out = resume_dir(args.resume)
        if args.out is not None and Path(args.out).resolve() != out.resolve():
            raise ValueError(f"--resume writes into {out}; drop --out {args.out}")
        extra = [f"--{k.replace('_', '-')}" for k in _SPACE if getattr(args, k, None) is not None]
        if extra:
            raise ValueError(f"--resume continues the saved space; drop {' '.join(extra)}")
        s = flags.given(args, _NET)
        kwargs.update(resume=True, more_trials=args.trials)
    try:
        line = sweeping.sweep_in(
            out,
            s,
            data_dir=args.data_dir,
            checkpoint_every=args.checkpoint_every,
            retrain_best=args.retrain_best,
            top=args.top,
            log=lambda line: print(line, flush=True),
            note=None if args.quiet else lambda m: print(m, file=sys.stderr),
            **kwargs,
        )
    except Diverged as exc:  # every configuration diverged: the summary still comes out
        if exc.line is not None and is_lead():
            print(json.dumps(exc.line), flush=True)
        raise
    if is_lead():
        print(json.dumps(line), flush=True)
    return 0

"""`fc-jax sweep`: many configurations of one net on the run loop; resumable; successive halving.

Contract: the space comes from grid lists (`--learning-rate 1e-4 3e-4 --weight-scale 1e-2 5e-2`,
one flag per `HParams` field plus `--seeds`), from `--random N` with ranges
(`--learning-rate-range 1e-4 1e-2`: log-uniform for learning rates, weight scales, L2 and epsilon,
uniform for probabilities and decay factors, as `fc_jax.runs.space.RANGE_SAMPLING` says; list
flags then become uniform choices), or from `--spec FILE`
(see `fc_jax.runs.space.from_spec`); unswept hyperparameters take the dataset's recipe
(`fc_jax.settings.DEFAULTS`). The net has dropout layers when any trial keeps less than 1
(`--keep-prob 1 0.5` mixes nets without and with dropout). Everything is checked before anything
is created or compiled. `--schedule halving --eta 3 --min-epochs 1` stops all but the best 1/eta
at each rung. With `--out DIR`, a checkpoint of all lanes is written after every epoch
(`checkpoint.npz`, the format of `fc-jax train`) and `fc-jax sweep --resume DIR` continues a
killed sweep to exactly the results of an uninterrupted one. At the end: the ranked table, ONE
final JSON line, and in DIR `results.csv`, `results.json`, `sweep.png`, each trial's best params as
`models/trial-<k>.npz` (`fc-jax eval` reads them); `--retrain-best EPOCHS` trains the winner again,
from scratch, for EPOCHS epochs with `fc-jax train`'s loop into `DIR/retrain/` and reports its
test accuracy. Exit codes as `fc_jax.cli`
(3: every configuration diverged, or the retrained winner did). With several processes only
process 0 prints and writes.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

from fc_jax import settings
from fc_jax.cli import flags
from fc_jax.data.datasets import DATASETS
from fc_jax.hparams import HParams
from fc_jax.precision import precision_notice
from fc_jax.runs import space

__all__ = ["add_parser", "run", "SWEPT"]

SWEPT = space.SWEEPABLE  # every sweepable name: the HParams vocabulary plus lane seeds
_FLAG = {n: ("seeds" if n == "seed" else n.replace("_", "-")) for n in SWEPT}
_NET = ("dataset", "hidden_dims", "normalization", "update_rule", "dtype", "precision", "epochs", "batch_size",
        "sampling", "seed", "num_training", "num_validation", "num_test")  # fmt: skip
_NET += ("lr_schedule", "crop_pad", "flip", "whiten", "whiten_epsilon")  # shared by every lane
_SPACE = ("random", "spec", *(_FLAG[n].replace("-", "_") for n in SWEPT))
_RUN = ("schedule", "eta", "min_epochs", "independent_batches", "max_lanes", "random_seed")


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="train many hyperparameter settings at once (vmap)",
                       description=__doc__.split("\n\n")[0])  # fmt: skip
    flags.add_data(p)
    flags.add_net(p)
    flags.add_schedule(p)
    a = p.add_argument
    for n in SWEPT:
        kind = flags.seed if n == "seed" else float
        a(f"--{_FLAG[n]}", type=kind, nargs="+", metavar="V",
          help=f"{n} values, a grid axis (default: the recipe's value)")  # fmt: skip
        if n != "seed":
            a(f"--{_FLAG[n]}-range", type=float, nargs=2, metavar=("LO", "HI"),
              help=f"with --random: {n} {space.RANGE_SAMPLING[n]} in [LO, HI] (default: not "
                   "random)")  # fmt: skip
    a(
        "--random",
        type=flags.positive_int,
        metavar="N",
        help="random search: N trials (default: a grid)",
    )
    a("--random-seed", type=flags.seed, default=0, help="seed of the random search (default: 0)")
    a(
        "--spec",
        metavar="FILE",
        help='JSON space: {"grid": {...}} or {"random": {...}} (default: none)',
    )
    a("--schedule", choices=("full", "halving"), default="full",
      help="full: every configuration trains --epochs; halving: successive halving (default: full)")  # fmt: skip
    a(
        "--eta",
        type=_eta,
        default=3,
        help="halving: keep the best 1/eta, an integer >= 2 (default: 3)",
    )
    a("--min-epochs", type=flags.positive_int, default=1,
      help="halving: epochs of the first rung (default: 1)")  # fmt: skip
    a("--independent-batches", action="store_true",
      help="each configuration draws its own minibatches (default: shared)")  # fmt: skip
    a("--max-lanes", type=flags.positive_int,
      help="most configurations trained at once (default: all on a GPU, one per device on CPUs)")  # fmt: skip
    a("--retrain-best", type=flags.positive_int, metavar="EPOCHS",
      help="after the sweep, train the winner again from scratch for EPOCHS epochs into "
           "OUT/retrain and report its test accuracy (default: no)")  # fmt: skip
    a("--top", type=flags.positive_int, default=20, help="rows of the printed table (default: 20)")
    a("--resume", metavar="DIR", help="continue the sweep saved in DIR (default: a new sweep)")
    flags.add_output(p, "runs/sweep-<dataset>-<timestamp>")
    p.set_defaults(func=run)


def _eta(s: str) -> int:
    v = flags.positive_int(s)
    if v < 2:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 2 (halving keeps the best 1/eta), got {s}"
        )
    return v


def _trials(args, s: dict) -> list[dict]:
    """The trials from the flags (validated), unswept values filled from the recipe `s`."""
    from fc_jax.runs import space

    arg = lambda n, suffix="": getattr(args, _FLAG[n].replace("-", "_") + suffix, None)
    lists = {n: arg(n) for n in SWEPT if arg(n) is not None}
    ranges = {n: arg(n, "_range") for n in SWEPT if n != "seed" and arg(n, "_range") is not None}
    if args.spec is not None:
        if lists or ranges or args.random is not None:
            raise ValueError(
                "--spec FILE replaces the hyperparameter flags and --random; drop them"
            )
        trials = space.load_spec(args.spec)
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
            raise ValueError("nothing to sweep: give values (e.g. --learning-rate 1e-4 1e-3), "
                             "--random N with ranges, or --spec FILE")  # fmt: skip
        trials = space.grid(lists)
    fill = settings.hparams_of(s)
    trials = space.check_trials(
        [{**{n: v for n, v in fill.items() if n not in t}, **t} for t in trials]
    )
    settings.check_structure(s, trials)
    return trials


def _prepare(args):
    """(settings, trials, run options, out, lanes or None, meta or None); nothing created."""
    if args.resume is None:
        given = flags.given(args, _NET)
        s = settings.settings(given.get("dataset", "cifar10"), given)
        trials = _trials(args, s)
        opts = {k: getattr(args, k) for k in _RUN}
        stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
        out = flags.check_out_dir(
            args.out or f"runs/sweep-{s['dataset']}-{stamp}", data_dir=args.data_dir
        )
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
    return s, meta["sweep"]["trials"], meta["sweep"]["options"], out, lanes, meta


def run(args) -> int:
    import jax

    from fc_jax.runs.placement import is_lead

    s, trials, opts, out, lanes, meta = _prepare(args)
    config = settings.config_of(s, dropout=any(t["keep_prob"] < 1 for t in trials))
    data, data_dir, fingerprint = settings.load_data(s, args.data_dir, meta)
    s["data_dir"] = data_dir
    lead = is_lead()
    note = (lambda m: None) if args.quiet or not lead else (lambda m: print(m, file=sys.stderr))
    say = (lambda line: print(line, flush=True)) if lead else (lambda line: None)
    note(f"{s['dataset']}: {len(trials)} configurations of {list(config.hidden_dims)} "
         f"({s['update_rule']}, {opts['schedule']}) on {len(jax.devices())} device(s) -> {out}")  # fmt: skip
    if notice := precision_notice(config, jax.devices()):
        note(notice)
    from fc_jax.storage.files import lock_folder, remove_stale_temps

    lock = lock_folder(out) if lead else None
    if lock is not None:
        lock.acquire()
    try:
        if lead:
            remove_stale_temps(out)
        new_meta = dict(config=config, update_rule=s["update_rule"], settings=s,
                        data_fingerprint=fingerprint, data_dir=data_dir,
                        sweep={"trials": trials, "options": opts})  # fmt: skip
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
    from fc_jax.report.sweeps import format_table, plot_sweep, write_results
    from fc_jax.runs.sweep import run_sweep
    from fc_jax.storage.checkpoint import save_lanes

    save = (lambda ls: save_lanes(out, ls, meta)) if lead else None
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
        max_lanes=opts["max_lanes"],
        resume=lanes,
        on_epoch_end=save,
        log=say,
        **train_cli.structure_args(s),
    )
    say(format_table(result, args.top))
    best = result.trials[result.best]
    summary = {"settings": dict(s), "options": opts, "lane_epochs": result.lane_epochs}
    line = dict(dataset=s["dataset"], trials=len(trials), schedule=result.schedule,
                best_trial=result.best, best=best,
                best_val_acc=float(result.best_val_acc[result.best]),
                diverged=int(result.diverged.sum()), lane_epochs=result.lane_epochs,
                compile_seconds=round(result.compile_seconds, 3),
                run_seconds=round(result.run_seconds, 3), devices=len(result.devices),
                device=result.devices[0], out_dir=str(out))  # fmt: skip
    code = 0
    if result.diverged.all():
        print(f"error: every one of the {len(trials)} configurations diverged; lower the learning "
              f"rates or weight scales (results written to {out})", file=sys.stderr)  # fmt: skip
        code = 3
    if lead:
        _save_models(result, data, out, s)
        paths = write_results(result, out, summary)
        plot_sweep(result, out / "sweep.png")
        line.update(results=str(paths["json"]))
    if code == 0 and args.retrain_best:
        note(
            f"retraining trial {result.best} {best} for {args.retrain_best} epochs into {out / 'retrain'}"
        )
        retrain = _retrain(
            s, data, meta["data_fingerprint"], best, args.retrain_best, out / "retrain", lead
        )
        if isinstance(retrain, int):
            return retrain
        line.update(test_acc=retrain["test_acc"], retrain_epochs=args.retrain_best)
    say(json.dumps(line))
    return code


def _save_models(result, data: dict, out: Path, s: dict) -> None:
    """Each trial's best params as `out/models/trial-<k>.npz` (skipped for a lane with none)."""
    import jax

    from fc_jax.storage.model import save_model

    for k, trial in enumerate(result.trials):
        if result.best_epoch[k] == 0:
            continue
        pick = lambda t, k=k: jax.tree.map(lambda a: a[k], t)
        save_model(
            out / "models" / f"trial-{k}.npz",
            result.config,
            pick(result.best_params),
            pick(result.best_model_state),
            data["mean_image"],
            meta={"settings": s, "trial": trial, "best_val_acc": float(result.best_val_acc[k])},
            pixel_scale=DATASETS[s["dataset"]].pixel_scale,
            whiten=data.get("whiten"),
        )


def _retrain(s, data, fingerprint, trial, epochs, out: Path, lead):
    """The winner trained `epochs` epochs by `fc-jax train`'s own code, written into `out`."""
    from fc_jax.cli import train as train_cli

    s2 = {**s, **{k: v for k, v in trial.items() if k in HParams._fields}, "seed": int(trial["seed"]),
          "epochs": epochs}  # fmt: skip
    config = settings.config_of(s2)
    flags.check_out_dir(out)
    if not lead:
        return {"test_acc": float("nan")}
    from fc_jax.storage.files import lock_folder

    with lock_folder(out):
        res = train_cli._train_jax(config, s2, data, None, None, out, fingerprint,
                                   s.get("data_dir"), quiet=True)  # fmt: skip
        if isinstance(res, int):
            return res
        train_cli._finish(s2, out, res, data)
    return res

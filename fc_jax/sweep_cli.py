"""`fc-jax sweep`: many configurations of one net in one compiled program (`fc_jax.sweep`).

Contract: `add_parser(subparsers)` registers `sweep` on `fc_jax.cli`'s parser and sets
`func=run`; `run(args) -> int` returns the exit code (0 ok, 2 bad arguments or data, raised as
ValueError for `cli.main` to print, 3 every configuration diverged or the retrained winner did).
The space comes from grid lists (`--learning-rate 1e-4 3e-4 1e-3 --weight-scale 1e-2 5e-2`), from
`--random N` with log-uniform ranges (`--learning-rate-range 1e-4 1e-2`; list flags then become
uniform choices), or from `--spec FILE` (see `fc_jax.space.from_spec`); it is checked before
anything compiles. Unswept hyperparameters take `fc_jax.cli.DEFAULTS[dataset]`. One line per epoch
goes to stdout, then the trials ranked by best validation accuracy, then ONE final JSON line;
`--out DIR` receives results.csv, results.json and sweep.png. `--retrain-best EPOCHS` trains the
winner with `fit` for longer and reports its test accuracy.
"""

import dataclasses
import datetime
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "run", "SWEPT_FLAGS"]

# flag (without --) -> trial name; each takes a list of values (a grid axis)
SWEPT_FLAGS = {
    "learning-rate": "learning_rate",
    "lr-decay": "lr_decay",
    "reg": "reg",
    "weight-scale": "weight_scale",
    "keep-prob": "keep_prob",
    "momentum": "momentum",
    "decay-rate": "decay_rate",
    "beta1": "beta1",
    "beta2": "beta2",
    "epsilon": "epsilon",
    "seeds": "seed",
}
_FROM_DEFAULTS = ("learning_rate", "lr_decay", "reg", "weight_scale")


def _positive_int(s: str) -> int:
    import argparse

    if not s.lstrip("-").isdigit() or int(s) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {s}")
    return int(s)


def add_parser(subparsers):
    """Add the `sweep` subcommand to `subparsers` (an argparse `_SubParsersAction`)."""
    from fc_jax.cli import DEFAULTS, RULES

    p = subparsers.add_parser("sweep", help="train many hyperparameter settings at once (vmap)")
    a = p.add_argument
    a("--dataset", choices=sorted(DEFAULTS), default="cifar10")
    a("--data-dir", help="CIFAR-10 folder (default: $FC_JAX_DATA_DIR or the user cache)")
    a("--hidden-dims", type=_positive_int, nargs="+", help="hidden layer widths, e.g. 100 100")
    a("--normalization", choices=("none", "batchnorm", "layernorm"))
    a("--update-rule", choices=RULES)
    a("--epochs", type=_positive_int)
    a("--batch-size", type=_positive_int)
    a("--dtype", choices=("float32", "float64"))
    a("--num-training", type=_positive_int)
    a("--num-validation", type=_positive_int)
    a("--num-test", type=_positive_int)
    a("--sampling", choices=("replace", "permutation"))
    a("--seed", type=int, help="seed of the shared minibatches and the default lane seed")
    for flag, name in SWEPT_FLAGS.items():
        kind = int if name == "seed" else float
        a(f"--{flag}", type=kind, nargs="+", metavar="V", help=f"{name} values (a grid axis)")
        if name != "seed":
            a(f"--{flag}-range", type=float, nargs=2, metavar=("LO", "HI"),
              help=f"with --random: {name} log-uniform in [LO, HI]")  # fmt: skip
    a("--random", type=_positive_int, metavar="N", help="random search: N trials")
    a("--random-seed", type=int, default=0, help="seed of the random search")
    a("--spec", metavar="FILE", help='JSON space: {"grid": {...}} or {"random": {...}}')
    a("--independent-batches", action="store_true", help="each lane draws its own minibatches")
    a("--max-lanes", type=_positive_int, help="most configurations trained at once")
    a("--retrain-best", type=_positive_int, metavar="EPOCHS", help="train the winner longer")
    a("--top", type=_positive_int, default=20, help="rows of the printed table")
    a("--out", help="output folder (default runs/sweep-<dataset>-<timestamp>)")
    a("--quiet", action="store_true", help="no notes on stderr")
    p.set_defaults(func=run)
    return p


def _trials(args, s: dict) -> list[dict]:
    """The trials from the flags (validated), unswept values filled from the settings `s`."""
    from fc_jax import space

    lists = {n: getattr(args, f.replace("-", "_")) for f, n in SWEPT_FLAGS.items()}
    lists = {n: v for n, v in lists.items() if v is not None}
    ranges = {
        n: getattr(args, f.replace("-", "_") + "_range", None) for f, n in SWEPT_FLAGS.items()
    }
    ranges = {n: v for n, v in ranges.items() if v is not None}
    if args.spec is not None:
        if lists or ranges or args.random is not None:
            raise ValueError(
                "--spec FILE replaces the hyperparameter flags and --random; drop them"
            )
        trials = space.load_spec(args.spec)
    elif args.random is not None:
        if not lists and not ranges:
            raise ValueError("--random N needs ranges (e.g. --learning-rate-range 1e-4 1e-2)")
        both = sorted(set(lists) & set(ranges))
        if both:
            raise ValueError(f"give either a list or a range for {both}, not both")
        dists = {n: space.log_uniform(*r) for n, r in ranges.items()}
        dists.update({n: space.choice(v) for n, v in lists.items()})
        trials = space.random(args.random, dists, args.random_seed)
    else:
        if ranges:
            raise ValueError("--*-range flags need --random N (a grid takes value lists)")
        if not lists:
            raise ValueError("nothing to sweep: give values (e.g. --learning-rate 1e-4 1e-3), "
                             "--random N with ranges, or --spec FILE")  # fmt: skip
        trials = space.grid(lists)
    fill = {n: s[n] for n in _FROM_DEFAULTS}
    return space.check_trials(
        [{**t, **{n: v for n, v in fill.items() if n not in t}} for t in trials]
    )


def _settings(args) -> dict:
    from fc_jax.cli import DEFAULTS

    s = dict(DEFAULTS[args.dataset], dataset=args.dataset)
    for k in list(s):
        if getattr(args, k, None) is not None and k not in ("keep_prob", "seed") + _FROM_DEFAULTS:
            s[k] = getattr(args, k)
    s["seed"] = s["seed"] if args.seed is None else args.seed
    return s


def _retrain(config, s, data, trial, epochs: int, say) -> dict:
    import jax.numpy as jnp

    from fc_jax import fit, train
    from fc_jax.hparams import HParams, make_hparams

    if trial.get("keep_prob", 1.0) >= 1.0:  # a lane without dropout: fit wants a net without it
        config = dataclasses.replace(config, keep_prob=1.0)
    with fit.x64_scope(config):
        hp = make_hparams(s["update_rule"], jnp.dtype(config.dtype),
                          **{k: v for k, v in trial.items() if k in HParams._fields})  # fmt: skip
        run_ = fit.fit(config, data, update_rule=s["update_rule"], hparams=hp, num_epochs=epochs,
                       batch_size=s["batch_size"], seed=int(trial["seed"]),
                       replace=s["sampling"] == "replace", log=say)  # fmt: skip
        evaluate = train.make_evaluate(config)
        X, y = jnp.asarray(data["X_test"], config.dtype), jnp.asarray(data["y_test"], jnp.int32)
        test_acc = float(evaluate(run_.best_params, run_.best_model_state, X, y))
    return {"epochs": epochs, "best_val_acc": run_.best_val_acc, "test_acc": test_acc,
            "history": {k: run_.history[k] for k in ("train_acc", "val_acc", "lr")}}  # fmt: skip


def run(args) -> int:
    """Run `fc-jax sweep` from parsed `args`; returns the exit code (see the module docstring)."""
    import jax

    from fc_jax import data as data_mod
    from fc_jax.fit import DivergedError
    from fc_jax.models import NetConfig
    from fc_jax.sweep import run_sweep
    from fc_jax.sweep_plots import format_table, plot_sweep, write_results

    s = _settings(args)
    trials = _trials(args, s)  # every check on the space happens here, before any compilation
    keep = min([t.get("keep_prob", 1.0) for t in trials])
    config = NetConfig(
        hidden_dims=tuple(s["hidden_dims"]),
        input_dim=64 if s["dataset"] == "digits" else 3 * 32 * 32,
        normalization=None if s["normalization"] == "none" else s["normalization"],
        keep_prob=keep,
        dtype=s["dtype"],
    )
    note = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    sizes = (s["num_training"], s["num_validation"], s["num_test"])
    data = data_mod.get_dataset(s["dataset"], args.data_dir, *sizes, dtype=np.dtype(s["dtype"]))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/sweep-{s['dataset']}-{stamp}")
    note(f"{s['dataset']}: {len(trials)} configurations of {list(config.hidden_dims)} "
         f"({s['update_rule']}) on {len(jax.devices())} device(s); writing to {out}")  # fmt: skip
    lead = jax.process_index() == 0  # with several processes, one reports and writes the files
    say = (lambda line: print(line, flush=True)) if lead else (lambda line: None)
    result = run_sweep(config, data, trials, update_rule=s["update_rule"], num_epochs=s["epochs"],
                       batch_size=s["batch_size"], seed=s["seed"],
                       replace=s["sampling"] == "replace", max_lanes=args.max_lanes,
                       independent_batches=args.independent_batches, log=say)  # fmt: skip
    say(format_table(result, args.top))
    best = result.trials[result.best]
    summary = {"settings": dict(s), "independent_batches": args.independent_batches}
    line = dict(dataset=s["dataset"], trials=len(trials), best_trial=result.best, best=best,
                best_val_acc=float(result.best_val_acc[result.best]),
                diverged=int(result.diverged.sum()),
                compile_seconds=round(result.compile_seconds, 3),
                run_seconds=round(result.run_seconds, 3), devices=len(result.devices),
                device=result.devices[0], out_dir=str(out))  # fmt: skip
    code = 0
    if result.diverged.all():
        print("error: every configuration diverged; lower the learning rates", file=sys.stderr)
        code = 3
    elif args.retrain_best:
        note(f"retraining trial {result.best} {best} for {args.retrain_best} epochs")
        try:
            summary["retrain"] = _retrain(config, s, data, best, args.retrain_best, say)
            line.update(test_acc=summary["retrain"]["test_acc"], retrain_epochs=args.retrain_best)
        except DivergedError as exc:
            print(f"error: retraining the best configuration: {exc}", file=sys.stderr)
            code = 3
    if not lead:
        return code
    paths = write_results(result, out, summary)
    plot_sweep(result, out / "sweep.png")
    line.update(results=str(paths["json"]))
    print(json.dumps(line), flush=True)
    return code

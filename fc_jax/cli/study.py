"""`fc-jax sweep --sampler tpe|random|cmaes --trials N --lanes K`: an Optuna study over lanes.

Contract: the search space is the one `--random N` reads (`--NAME-range LO HI` log-uniform or
uniform as `fc_jax.runs.space.RANGE_SAMPLING` says, value lists as choices) or a `{"random":
...}` `--spec FILE` (its "n" is the default of `--trials`); Optuna's sampler draws from it instead
of `--random`. `fc_jax.runs.optuna_bridge.optimize` asks K trials at a time, trains them as K
lanes of one compiled program, reports each epoch's validation accuracy (`--pruner median` stops
lanes below the median of finished trials) and tells the best validation accuracy, until the
study holds N finished trials. The study lives in `--study URL` (default
`sqlite:///OUT/study.db`, name `--study-name`; watch it with `optuna-dashboard URL`); a killed
sweep continues with `fc-jax sweep --resume OUT` (or the same command when no checkpoint was
written): the interrupted batch is failed and asked again with the same values, from its latest
lane checkpoint. The table, `results.csv`, `results.json` and `sweep.png` cover every trial of the
study run by fc-jax (its number in the "trial" column), `models/trial-<number>.npz` each trial's
best params. Optuna is optional: `pip install -e ".[optuna]"`. This module reads the flags into the
study's plan; `fc_jax.workdir.sweeping` runs it (and imports Optuna only then).
"""

import re
from pathlib import Path

from fc_jax import settings
from fc_jax.cli import flags
from fc_jax.runs import space

__all__ = ["add_flags", "check_flags", "plan"]

_FLAGS = ("trials", "lanes", "study", "study_name", "pruner")


def add_flags(p) -> None:
    a = p.add_argument
    a(
        "--sampler",
        choices=("tpe", "random", "cmaes"),
        help="search with an Optuna sampler over the --NAME-range flags (or a random --spec), K "
        "trials at a time as lanes; needs Optuna (default: no Optuna)",
    )
    a(
        "--trials",
        type=flags.positive_int,
        metavar="N",
        help="with --sampler: finished trials the study should hold (default: the spec's n)",
    )
    a(
        "--lanes",
        type=flags.positive_int,
        default=8,
        metavar="K",
        help="with --sampler: trials asked and trained together per batch (default: 8)",
    )
    a(
        "--study",
        metavar="URL",
        help="with --sampler: Optuna storage; see it with optuna-dashboard URL (default: "
        "sqlite:///OUT/study.db)",
    )
    a("--study-name", default="fc-jax", help="with --sampler: the study's name (default: fc-jax)")
    a(
        "--pruner",
        choices=("median", "none"),
        default="median",
        help="with --sampler: Optuna pruner that stops lanes after an epoch (default: median)",
    )


def check_flags(args) -> None:
    """ValueError for Optuna flags without --sampler, or --sampler with what it replaces."""
    if getattr(args, "sampler", None) is None:
        given = [
            f"--{k.replace('_', '-')}"
            for k in ("trials", "study")
            if getattr(args, k, None) is not None
        ]
        given += ["--lanes"] * (args.lanes != 8) + ["--pruner"] * (args.pruner != "median")
        given += ["--study-name"] * (args.study_name != "fc-jax")
        if given and args.resume is None:
            raise ValueError(f"{' '.join(given)} need --sampler tpe|random|cmaes")
        return
    if args.resume is not None:
        raise ValueError("--resume continues the saved sweep and its study; drop --sampler")
    if args.random is not None:
        raise ValueError(
            "--random N is random search without Optuna; with --sampler give "
            "--trials N (--sampler random for Optuna's random sampler)"
        )
    if args.schedule != "full":
        raise ValueError(
            "--schedule halving does not apply to --sampler: Optuna's --pruner stops lanes"
        )


def _study_url(url: str | None, out: Path) -> str:
    if url is None:
        return f"sqlite:///{out.resolve() / 'study.db'}"
    if not re.match(r"^[a-z][a-z0-9+]*://", url):
        raise ValueError(f"--study {url!r} is not a database URL (e.g. sqlite:///DIR/study.db)")
    if url.startswith("sqlite:///"):
        parent = Path(url[len("sqlite:///") :]).expanduser().resolve().parent
        if not parent.is_dir() and parent != out.resolve():
            raise ValueError(f"--study {url}: no folder {parent}")
    return url


def plan(args, s: dict, out: Path, get) -> dict:
    """The study's plan from the flags (space, fixed values, options); nothing created.

    `get(name, suffix)` reads a hyperparameter's list (suffix "") or range ("_range") flag.
    """
    lists = {n: get(n, "") for n in space.SWEEPABLE if get(n, "") is not None}
    ranges = {
        n: get(n, "_range") for n in space.SWEEPABLE if n != "seed" and get(n, "_range") is not None
    }
    n = None
    if args.spec is not None:
        if lists or ranges:
            raise ValueError("--spec FILE replaces the hyperparameter flags; drop them")
        spec = space.read_spec(args.spec)
        if isinstance(spec, dict) and "grid" in spec:
            raise ValueError(
                f"--sampler needs a random space; {args.spec} is a grid "
                '(give {"random": {"n": N, "params": {...}}})'
            )
        try:
            n, _, dists = space.random_space(spec)
        except ValueError as exc:
            raise ValueError(f"sweep spec {args.spec}: {exc}") from None
    else:
        if not ranges and not lists:
            raise ValueError(
                "--sampler needs a space: ranges (e.g. --learning-rate-range 1e-4 "
                "1e-2), value lists or a random --spec FILE"
            )
        both = sorted(set(lists) & set(ranges))
        if both:
            raise ValueError(f"give either a list or a range for {both}, not both")
        dists = {k: space.range_distribution(k, *r) for k, r in ranges.items()}
        dists.update({k: space.choice(v) for k, v in lists.items()})
    trials = args.trials or n
    if trials is None:
        raise ValueError("--sampler needs --trials N")
    fixed = {k: v for k, v in settings.hparams_of(s).items() if k not in dists}
    from fc_jax.runs.optuna_bridge import check_space

    check_space(dists, fixed)
    spec = {
        k: {"choice": list(d.values)}
        if isinstance(d, space.Choice)
        else {"log_uniform" if isinstance(d, space.LogUniform) else "uniform": [d.lo, d.hi]}
        for k, d in dists.items()
    }
    return dict(
        sampler=args.sampler,
        trials=trials,
        lanes=args.lanes,
        study=_study_url(args.study, out),
        study_name=args.study_name,
        pruner=args.pruner,
        seed=args.random_seed,
        space=spec,
        fixed=fixed,
    )

"""`fc-jax train`: one net, trained with checkpoints (by time, and at the end); `--resume` continues it.

Contract: flags -> `fc_jax.settings.settings` (or, with `--resume DIR`, the flags that change the
saved run) -> `fc_jax.workdir.training.train_in`, which checks everything before it creates
anything, trains into the folder and writes its files -> the test accuracy of the best params and
ONE final JSON line on stdout. One line per epoch on stdout, a progress bar on stderr (TTY only).
`--backend numpy` trains the same net with the numpy reference `Solver`.
"""

import datetime
import json
import sys
from pathlib import Path

from fc_jax import settings
from fc_jax.cli import flags
from fc_jax.hparams import HPARAMS
from fc_jax.workdir import training
from fc_jax.workdir.folders import resume_dir

__all__ = ["add_parser", "run", "SETTING_NAMES"]

SETTING_NAMES = ("dataset", *settings.DEFAULTS["cifar10"], *HPARAMS)


def add_parser(sub) -> None:
    t = sub.add_parser(
        "train",
        help="train a fully-connected net (defaults: fc_jax.settings)",
        description=__doc__.split("\n\n")[0],
    )
    flags.add_data(t)
    flags.add_net(t)
    flags.add_hparams(t)
    flags.add_schedule(t)
    flags.add_checkpoint(t)
    t.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run saved in DIR (or DIR/checkpoint.npz), writing into DIR "
        "(default: a new run)",
    )
    t.add_argument(
        "--backend",
        choices=("jax", "numpy"),
        default="jax",
        help="numpy: the reference Solver, the course's speed, no checkpoints (default: jax)",
    )
    flags.add_output(t, "runs/<dataset>-<timestamp>")
    t.set_defaults(func=run)


def run(args) -> int:
    given = flags.given(args, SETTING_NAMES)
    if args.resume is None:
        s = settings.settings(given.get("dataset", "cifar10"), given)
        stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
        out = args.out or f"runs/{s['dataset']}-{stamp}"
    else:
        s, out = given, args.resume
        if args.out is not None and Path(args.out).resolve() != resume_dir(out).resolve():
            raise ValueError(f"--resume writes into {resume_dir(out)}; drop --out {args.out}")
    show_bar = not args.quiet and sys.stderr.isatty()
    progress, clear = flags.progress_bar(show_bar)

    def log(line: str) -> None:
        clear()
        print(line, flush=True)

    try:
        line = training.train_in(
            out,
            s,
            resume=args.resume is not None,
            backend=args.backend,
            data_dir=args.data_dir,
            checkpoint_every=args.checkpoint_every,
            log=log,
            note=None if args.quiet else lambda m: print(m, file=sys.stderr),
            progress=progress if show_bar else None,
        )
    finally:
        clear()
    print(f"test acc (best params, val acc {line['best_val_acc']:.4f}): {line['test_acc']:.4f}")
    print(json.dumps(line), flush=True)
    return 0

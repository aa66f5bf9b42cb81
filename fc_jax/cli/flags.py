"""Flags shared by the subcommands, each defined once, and the checks on output folders.

Contract: `Parser` is an `argparse.ArgumentParser` whose usage errors raise `UsageError` (one
line, exit 2 in `fc_jax.cli.main`) instead of printing usage and exiting; it takes no abbreviated
flags (`--lr` is not `--lr-decay`), and an unknown flag names the closest real one (or the one a
common alias means: `--lr`, `--dropout`). `add_data`, `add_net`,
`add_hparams`, `add_schedule` and `add_output` add a group of flags whose help shows its default
(per dataset where the recipes differ, from `fc_jax.settings.DEFAULTS`); they default to None so
the recipe (or, with `--resume`, the checkpoint) fills them. `interrupted` is the line after
Ctrl-C; `progress_bar` draws a one-line bar on stderr. Output folders and the `fc-jax train`
command line are library code (`fc_jax.workdir.folders`).
"""

import argparse
import difflib
import math
import shlex
import sys
from pathlib import Path

from fc_jax.hparams import HPARAMS, RULE_DEFAULTS
from fc_jax.lr_schedules import LR_SCHEDULES
from fc_jax.runs.space import MAX_SEED
from fc_jax.settings import DEFAULTS, PRECISIONS, RECIPES, RULES
from fc_jax.workdir.folders import CHECKPOINT_EVERY

__all__ = [
    "Parser",
    "UsageError",
    "add_data",
    "add_net",
    "add_hparams",
    "add_schedule",
    "add_output",
    "given",
    "interrupted",
    "progress_bar",
    "positive_int",
    "add_checkpoint",
    "seconds",
    "seed",
]


class UsageError(ValueError):
    """A command-line mistake (unknown flag, bad value): one line, exit code 2."""


# Names users reach for that are not ours: flag -> (ours, a note on the difference).
_ALIASES = {
    "--lr": ("--learning-rate", ""),
    "--lr-range": ("--learning-rate-range", ""),
    "--dropout": ("--keep-prob", "--keep-prob is the KEEP probability = 1 - dropout rate"),
    "--dropout-range": ("--keep-prob-range", "a range of KEEP probabilities = 1 - dropout rate"),
    "--l2": ("--reg", ""),
    "--num-epochs": ("--epochs", ""),
}


class Parser(argparse.ArgumentParser):
    """No prefix matching (`--lr` is never taken as `--lr-decay`); an unknown flag names the
    closest real one."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # subparsers are built by this class too
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse would print the usage and exit
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self._subparser(namespace)
            parser.error(parser._unknown(extras))
        return namespace

    def _subparser(self, namespace) -> "Parser":
        """The subcommand's parser that read the arguments (itself when there is none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                chosen = action.choices.get(getattr(namespace, action.dest, None))
                if isinstance(chosen, Parser):
                    return chosen._subparser(namespace)
        return self

    def _unknown(self, extras: list[str]) -> str:
        """'unknown flag --lr; did you mean --learning-rate?' for the first unknown flag."""
        flag = next(
            (a for a in extras if a.startswith("--") or a[:1] == "-" and a[1:2].isalpha()), None
        )
        if flag is None:
            return f"unrecognized arguments: {' '.join(extras)}"
        name = flag.split("=", 1)[0]
        options = [o for o in self._option_string_actions if o.startswith("--")]
        alias, note = _ALIASES.get(name, (None, ""))
        if alias not in options:  # a flag it abbreviates, else the closest spelling
            longer = [o for o in options if o.startswith(name)]
            close = difflib.get_close_matches(name, longer or options, n=1, cutoff=0.6)
            alias, note = (close[0], "") if close else (None, "")
        if alias is None:
            return f"unknown flag {name}"
        if alias.startswith("--keep-prob") and name.startswith("--dropout"):
            note += _as_keep_prob(flag, extras[extras.index(flag) + 1 :])
        return f"unknown flag {name}; did you mean {alias}?" + (f" ({note})" if note else "")


def _as_keep_prob(flag: str, rest: list[str]) -> str:
    """': --dropout 0.25 is --keep-prob 0.75' for the dropout rates given after `flag`."""
    values = [flag.split("=", 1)[1]] if "=" in flag else rest
    rates = []
    for v in values:
        try:
            rates.append(float(v))
        except ValueError:
            break
    if not rates or not all(0 <= r < 1 for r in rates):
        return ""
    name = flag.split("=", 1)[0]
    keeps = [1 - r for r in rates]
    keep = " ".join(f"{k:.6g}" for k in (keeps[::-1] if name.endswith("-range") else keeps))
    return f": {name} {' '.join(f'{r:g}' for r in rates)} is {name.replace('dropout', 'keep-prob')} {keep}"


def _default(key: str) -> str:
    show = lambda v: " ".join(map(str, v)) if isinstance(v, list) else str(v)
    values = {name: d[key] for name, d in DEFAULTS.items()}
    if len({show(v) for v in values.values()}) == 1:
        return f"default: {show(values['cifar10'])}"
    return "default: " + ", ".join(f"{show(v)} ({name})" for name, v in values.items())


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {s}")
    return v


def _nonnegative_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {s!r}")
    return v


def _width(s: str) -> int:
    if "," in s:
        raise argparse.ArgumentTypeError(
            f"{s!r}: separate the widths with spaces, e.g. --hidden-dims {s.replace(',', ' ')}"
        )
    return positive_int(s)


def seed(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = -1
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, {MAX_SEED}], got {s!r}")
    return v


def add_data(p) -> None:
    a = p.add_argument
    a(
        "--recipe",
        choices=tuple(RECIPES),
        metavar="NAME",
        help="start from a named recipe (CIFAR-10; the other flags override its values): "
        + "; ".join(f"{name}: {r.reaches}".replace("%", "%%") for name, r in RECIPES.items())
        + " (default: default; fc_jax.settings.RECIPES lists each one's values)",
    )
    a("--dataset", choices=sorted(DEFAULTS), help="default: cifar10")
    a(
        "--data-dir",
        help="CIFAR-10 folder (default: $FC_JAX_DATA_DIR, else the user cache, "
        "where it is downloaded)",
    )
    a(
        "--whiten",
        choices=("none", "zca"),
        help="zca: whiten the images with the training split's ZCA matrix, computed once at load "
        "time and saved with the model (fc-jax eval and predict_raw apply it) "
        f"({_default('whiten')})",
    )
    a(
        "--whiten-epsilon",
        type=float,
        metavar="EPS",
        help="ZCA's damping, relative to the mean pixel variance; > 0 (a data setting, not swept: "
        f"the lanes share one training set) ({_default('whiten_epsilon')})",
    )
    for split in ("training", "validation", "test"):
        a(
            f"--num-{split}",
            type=positive_int,
            help=f"{split} examples (default: the dataset's standard split)",
        )


def add_net(p) -> None:
    a = p.add_argument
    a(
        "--hidden-dims",
        type=_width,
        nargs="+",
        metavar="H",
        help=f"hidden layer widths, e.g. 100 100 ({_default('hidden_dims')})",
    )
    a("--normalization", choices=("none", "batchnorm", "layernorm"), help=_default("normalization"))
    a("--update-rule", choices=RULES, help=_default("update_rule"))
    a("--dtype", choices=("float32", "float64"), help=_default("dtype"))
    a(
        "--precision",
        choices=tuple(PRECISIONS),
        help="bf16: bfloat16 matmuls with float32 accumulation and float32 master weights; faster "
        f"on GPUs and CPUs with AVX-512 BF16 or AMX ({_default('precision')})",
    )


def add_hparams(p) -> None:
    """One flag per `HParams` field, from the vocabulary's table (`fc_jax.hparams.HPARAMS`)."""
    by_rule = {name for rule in RULE_DEFAULTS.values() for name in rule}
    for name, row in HPARAMS.items():
        if name in DEFAULTS["cifar10"]:
            default = _default(name)
        elif name in by_rule:
            default = f"default: the update rule's ({row.default:g} for most)"
        else:
            default = f"default: {row.default:g}"
        help = f"{row.help}; {row.expected} ({default})"
        p.add_argument(f"--{name.replace('_', '-')}", type=float, help=help)


def add_schedule(p) -> None:
    a = p.add_argument
    a("--epochs", type=positive_int, help=f"total epochs ({_default('epochs')})")
    a("--batch-size", type=positive_int, help=_default("batch_size"))
    a(
        "--sampling",
        choices=("replace", "permutation"),
        help=f"minibatches with replacement or not ({_default('sampling')})",
    )
    a(
        "--seed",
        type=seed,
        help=f"seed of initialization, minibatches and dropout ({_default('seed')})",
    )
    a(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        help="step: lr *= --lr-decay after each epoch (the course); cosine, linear: to "
        "--final-lr-fraction after a --warmup-epochs linear warmup; triangle: up from the final "
        "fraction to the rate over the warmup (half the run without one), then down; computed "
        f"per step on the device ({_default('lr_schedule')})",
    )
    a(
        "--crop-pad",
        type=_nonnegative_int,
        metavar="PIXELS",
        help="augmentation: random crops of each image zero-padded by PIXELS on every side "
        f"(a random shift of up to PIXELS); 0 = none ({_default('crop_pad')})",
    )
    a(
        "--flip",
        action=argparse.BooleanOptionalAction,
        help="augmentation: random horizontal flips of half the images (default: off; leave it "
        "off for digits, which are not mirror-symmetric)",
    )


def seconds(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {s!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {s}")
    return v


def add_checkpoint(p) -> None:
    p.add_argument(
        "--checkpoint-every",
        type=seconds,
        default=CHECKPOINT_EVERY,
        metavar="SECONDS",
        help="write the checkpoint (what --resume continues from) when SECONDS have passed since "
        "the last write and at least 10 times that write's duration, so writing takes under about "
        "10%% of the run whatever its size; always after the last epoch and when interrupted "
        "(Ctrl-C, SIGTERM); a resume re-trains the epochs after the last write, bit for bit; "
        f"0: after every epoch (default: {CHECKPOINT_EVERY:g})",
    )


def add_output(p, default: str) -> None:
    p.add_argument("--out", help=f"output folder (default: {default})")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar and no notes on stderr (default: shown)",
    )


def given(args, names) -> dict:
    """{name: value} of the flags among `names` that were given (not None)."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def interrupted(command: str, out: Path, argv) -> str:
    """The line after Ctrl-C: how to resume when a checkpoint exists, else how to start again."""
    if (out / "checkpoint.npz").exists():
        return f"interrupted; continue with: fc-jax {command} --resume {shlex.quote(str(out))}"
    words, skip = [], False
    for a in argv or [command]:  # the same command line, with --out naming the folder now made
        if not skip and a != "--out" and not a.startswith("--out="):
            words.append(a)
        skip = a == "--out"
    again = shlex.join(["fc-jax", *words, "--out", str(out)])
    return f"interrupted before any checkpoint was written: nothing was saved; start again with: {again}"


def progress_bar(enabled: bool):
    """(progress(epoch, epochs, done, total), clear()): a one-line bar on stderr, drawn when
    enabled (`progress` as `fc_jax.workdir.training.train_in` calls it)."""
    width = [0]

    def progress(epoch: int, epochs: int, done: int, total: int) -> None:
        if enabled:
            n = round(30 * done / total)
            line = f"\repoch {epoch}/{epochs} [{'#' * n}{'.' * (30 - n)}] {done}/{total}"
            width[0] = len(line)
            sys.stderr.write(line)
            sys.stderr.flush()

    def clear() -> None:
        if width[0]:
            sys.stderr.write("\r" + " " * width[0] + "\r")
            sys.stderr.flush()
            width[0] = 0

    return progress, clear

"""Run folders: what fc-jax writes into one, which folders can be one, and the command that starts one.

Contract: `check_out_dir(path, flag, data_dir)` refuses an output folder that cannot be one (an
existing file, under a file, a name too long, the data folder or inside it, a folder of other files
that is not an fc-jax run) without creating anything; `resume_dir(path)` accepts a run folder or
its checkpoint file; `train_command(s, out)` is the `fc-jax train` command line that starts a run
with settings `s` into `out`, `command_settings(s)` the settings that command line gives. The run-folder operations raise `Diverged` (exit code 3 on the
command line) and `Interrupted` (130); everything else a user can get wrong is a `ValueError` (2).
"""

import os
import shlex
from pathlib import Path

from fc_jax.hparams import HPARAMS
from fc_jax.settings import recipe_defaults, settings
from fc_jax.storage.files import LOCK_NAME

__all__ = [
    "CHECKPOINT_EVERY",
    "RUN_FILES",
    "Diverged",
    "Interrupted",
    "check_out_dir",
    "resume_dir",
    "train_command",
    "command_settings",
]

# Seconds between checkpoints by default (benchmarks/bench_checkpoint.py, benchmarks/RESULTS.md).
CHECKPOINT_EVERY = 60.0


class Diverged(RuntimeError):
    """A run, or every lane of a sweep, diverged; the message says what was kept and what to do.

    `command` is the `fc-jax train` command that starts the run again with a 10x lower learning
    rate (a run), `line` the sweep's final result dict (a sweep; its files are written).
    """

    def __init__(self, message: str, *, command: str | None = None, line: dict | None = None):
        super().__init__(message)
        self.command, self.line = command, line


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while `fc-jax COMMAND` trained into `out_dir`: its latest finished epoch
    is saved (when a checkpoint was due). `argv` is the command line that started it when it was
    not the one the user typed (a sweep's retrained winner); `lead` is False in the processes of a
    multi-process sweep that write nothing."""

    def __init__(self, out_dir, command: str = "train", *, argv=None, lead: bool = True):
        super().__init__(str(out_dir))
        self.out_dir, self.command, self.argv, self.lead = Path(out_dir), command, argv, lead


# What fc-jax writes into a run or sweep folder: a folder holding one of these is an fc-jax run.
RUN_FILES = (
    "checkpoint.npz",
    "model.npz",
    "history.json",
    "history.csv",
    "curves.png",
    "best_params.npz",
    "results.json",
    "results.csv",
    "sweep.png",
    "best_config.json",
    "models",
    "retrain",
    "study.db",
)


def check_out_dir(path, flag: str = "--out", data_dir=None) -> Path:
    """`path` as an output folder, refused with a ValueError if it cannot be one; creates nothing.

    Refused: an existing file or a path under one, a name too long, a folder without write
    permission, the data folder (`data_dir`, `$FC_JAX_DATA_DIR`) or a folder inside it, and an
    existing folder that holds files but none that fc-jax writes (`RUN_FILES`; the folder lock and
    leftover temporary files do not count).
    """
    out = Path(path).expanduser()
    for part in out.parts:
        if len(os.fsencode(part)) > 255:
            raise ValueError(
                f"{flag} {str(out)[:60]}...: the name {part[:40]!r}... is longer than 255 bytes"
            )
    if len(os.fsencode(str(out.absolute()))) > 4000:
        raise ValueError(f"{flag} {str(out)[:60]}...: the path is too long")
    try:
        if out.exists() and not out.is_dir():
            raise ValueError(f"{flag} {out} is an existing file; give a folder")
    except OSError as exc:
        raise ValueError(f"{flag} {out}: {exc.strerror}") from None
    for parent in out.resolve().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag} {out} lies under {parent}, which is a file")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"{flag} {out}: cannot create it in {parent} (permission denied)")
            break
    _check_not_data(out, flag, data_dir)
    _check_foreign(out, flag)
    return out


def _check_not_data(out: Path, flag: str, data_dir) -> None:
    real = out.resolve()
    for folder, source in (
        (data_dir, "--data-dir"),
        (os.environ.get("FC_JAX_DATA_DIR"), "$FC_JAX_DATA_DIR"),
    ):
        if not folder:
            continue
        data = Path(folder).expanduser().resolve()
        if real == data or data in real.parents:
            where = "is the data folder" if real == data else f"lies inside the data folder {data}"
            raise ValueError(
                f"{flag} {out} {where} ({source}), which fc-jax never writes to; "
                f"give an output folder elsewhere"
            )


def _check_foreign(out: Path, flag: str) -> None:
    try:
        if not out.is_dir():
            return
        entries = sorted(
            e.name + ("/" if e.is_dir() else "")
            for e in out.iterdir()
            if e.name != LOCK_NAME and not (e.name.startswith(".") and e.name.endswith(".tmp"))
        )
    except OSError as exc:
        raise ValueError(f"{flag} {out}: {exc.strerror}") from None
    if entries and not {e.rstrip("/") for e in entries} & set(RUN_FILES):
        shown = ", ".join(entries[:4]) + (
            f" and {len(entries) - 4} more" if len(entries) > 4 else ""
        )
        raise ValueError(
            f"{flag} {out} holds other files ({shown}) and is not an fc-jax run; give "
            f"a new or empty folder, e.g. {flag} {out / 'run'}"
        )


def resume_dir(path) -> Path:
    """The run folder of `--resume PATH`: the folder itself, or the one holding the checkpoint file."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".npz":
        return p.parent
    if p.exists() and not p.is_dir():
        raise ValueError(f"--resume {p} is a file; pass the run's folder")
    if not p.exists():
        raise ValueError(f"--resume {p}: no such folder (no checkpoint at {p / 'checkpoint.npz'})")
    return p


def _command_values(s: dict) -> dict:
    """The settings `train_command(s, out)` writes as flags: those that differ from the recipe,
    every other hyperparameter `s` sets that differs from its default, and the recipe's name."""
    recipe = {**recipe_defaults(s["dataset"], s.get("recipe", "default")), "recipe": "default"}
    return {
        k: v
        for k, v in s.items()
        if not (
            (k not in recipe and k not in HPARAMS)  # HParams values not in the recipe: given
            or v is None
            or v == recipe.get(k, HPARAMS[k].default if k in HPARAMS else None)
            or (isinstance(v, list | tuple) and list(v) == list(recipe.get(k) or []))
        )
    }


def train_command(s: dict, out) -> str:
    """The `fc-jax train` command line that starts a run with settings `s` into `out` (its
    `--recipe`, the flags that differ from that recipe, every other hyperparameter `s` sets, e.g. beta1, and
    the data folder)."""
    words = ["fc-jax", "train", "--dataset", s["dataset"]]
    for k, v in _command_values(s).items():
        if k == "dataset":
            continue
        if isinstance(v, bool):  # --flip / --no-flip
            words.append(f"--{'' if v else 'no-'}{k.replace('_', '-')}")
            continue
        values = v if isinstance(v, list | tuple) else [v]
        words += [
            f"--{k.replace('_', '-')}",
            *(repr(x) if isinstance(x, float) else str(x) for x in values),
        ]
    if s["dataset"] == "cifar10" and s.get("data_dir"):
        words += ["--data-dir", str(s["data_dir"])]
    return shlex.join([*words, "--out", str(out)])


def command_settings(s: dict) -> dict:
    """The settings of the run `train_command(s, out)` starts (`s` as that command line gives it:
    the recipe's values, the flags' types), without `data_dir`."""
    as_flag = lambda k, v: (
        float(v)
        if k in HPARAMS or k == "whiten_epsilon"
        else list(v)
        if isinstance(v, tuple)
        else v
    )
    given = {k: as_flag(k, v) for k, v in _command_values(s).items() if k != "dataset"}
    return settings(s["dataset"], given)

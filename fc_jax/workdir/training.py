"""Train one net into a run folder: flax's `train_and_evaluate(config, workdir)` for fc_jax.

Contract: `prepare_train(out_dir, s)` makes every check (settings, output folder, checkpoint) and
creates nothing; `train_in(out_dir, s)` then loads the data, locks the folder, trains with
`fc_jax.runs.fit.fit`, writing `checkpoint.npz` (`fc_jax.storage.checkpoint.save_run`) every
`checkpoint_every` seconds, after the last epoch and when interrupted, and at the end the outputs,
each atomically: `history.json`, `history.csv` (one row per epoch), `curves.png`, `best_params.npz`
(the cs231n keys) and `model.npz` (what `fc-jax eval` and `fc_jax.storage.model.load_model` read).
It returns the run's summary (the final JSON line of `fc-jax train`). With `resume=True`, `s` holds
only what changes (`epochs`) and the run continues bit for bit. `backend="numpy"` trains the same
net with the numpy reference `Solver` (no checkpoints). Errors are exceptions: `ValueError` (a
user mistake; nothing created), `fc_jax.workdir.folders.Diverged` (carrying the command that starts
again lower), `fc_jax.workdir.folders.Interrupted`, `fc_jax.storage.files.WriteError`. Callable
from a notebook: `train_in("runs/a", settings.settings("digits", {"epochs": 2}))`. `schedule_of(s,
options)` is the one place where settings (and a sweep's options) become a `Schedule`; the
checkpoint stores it as one record and a resumed run or sweep continues on the saved one.
"""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import models, settings
from fc_jax.data.datasets import DATASETS
from fc_jax.hparams import DEFAULTS as HP_DEFAULTS
from fc_jax.hparams import make_hparams
from fc_jax.precision import precision_notice
from fc_jax.reference.fc_net import FullyConnectedNet
from fc_jax.reference.solver import Solver
from fc_jax.report.curves import plot_history, write_history_csv
from fc_jax.runs import fit, loop
from fc_jax.runs.schedule import Halving, Schedule
from fc_jax.runs.sweep import SCHEDULES, pbt_defaults
from fc_jax.storage import checkpoint, files
from fc_jax.storage.model import save_model
from fc_jax.workdir.evaluation import accuracy_on_test
from fc_jax.workdir.folders import (
    CHECKPOINT_EVERY,
    Diverged,
    Interrupted,
    check_out_dir,
    resume_dir,
    train_command,
)

__all__ = [
    "CHUNKS_PER_EPOCH",
    "TrainPlan",
    "prepare_train",
    "train_in",
    "schedule_of",
]

CHUNKS_PER_EPOCH = 20  # compiled calls per epoch (the progress bar's resolution); saved for resume


class TrainPlan(NamedTuple):
    """A checked training run, nothing created yet."""

    settings: dict  # the run's settings (`fc_jax.settings`), data_dir not yet resolved
    out_dir: Path
    run: Any  # the checkpoint's `fc_jax.runs.fit.Run` when resuming, else None
    meta: dict | None  # the checkpoint's meta when resuming, else None


def prepare_train(
    out_dir, s: dict | None = None, *, resume: bool = False, backend: str = "jax", data_dir=None
) -> TrainPlan:
    """Every check of a run into `out_dir`, nothing created.

    Args:
      out_dir: the run folder (with `resume`: the folder or its `checkpoint.npz`).
      s: a new run's settings (`fc_jax.settings.settings`); with `resume`, the settings given
        again (only `epochs` may differ from the checkpoint's), or None.
      resume: continue the run saved in `out_dir`.
      backend: "jax", or "numpy" (the reference Solver: a new run, the course's recipe only).
      data_dir: the CIFAR-10 folder the user named, or None.

    Raises:
      ValueError: the one-line message of the first check that fails.
    """
    if not resume:
        s = dict(s)
        settings.check_settings(s)
        if backend == "numpy" and s["precision"] != "float32":
            raise ValueError("--precision bf16 needs --backend jax (the numpy reference is float)")
        if backend == "numpy":
            _check_numpy_backend(s)
        out = check_out_dir(out_dir, data_dir=data_dir)
        if (out / "checkpoint.npz").exists():
            raise ValueError(
                f"{out} holds a checkpoint already: use --resume {out} or another --out"
            )
        return TrainPlan(s, out, None, None)
    out = resume_dir(out_dir)
    if backend != "jax":
        raise ValueError("--resume needs --backend jax (the numpy backend writes no checkpoints)")
    run, meta = checkpoint.load_run(out)
    if "settings" not in meta:
        raise ValueError(f"{out}/checkpoint.npz was not written by fc-jax train; it cannot resume")
    given = dict(s or {})
    try:
        merged = settings.merge_resume(meta["settings"], given)
    except ValueError as exc:  # a run continues as saved; other settings make a new run
        new = settings.settings(meta["settings"]["dataset"], {**meta["settings"], **given})
        if data_dir is not None:
            new["data_dir"] = str(Path(data_dir).expanduser().resolve())
        lr = new["learning_rate"]
        name = f"{out}-lr{lr:g}" if lr != meta["settings"]["learning_rate"] else f"{out}-new"
        raise ValueError(
            f"{exc} to continue this run, or start a new one with them: {train_command(new, name)}"
        ) from None
    if merged["epochs"] < run.epoch:
        raise ValueError(
            f"the run in {out} has trained {run.epoch} epochs already; --epochs "
            f"{merged['epochs']} is below that (give a larger number to train on)"
        )
    return TrainPlan(merged, out, run, meta)


def _check_numpy_backend(s: dict) -> None:
    """The numpy reference Solver trains the course's recipe only: refuse what it lacks."""
    new = [f"--lr-schedule {s['lr_schedule']}"] if s["lr_schedule"] != "step" else []
    new += [f"--crop-pad {s['crop_pad']}"] if s["crop_pad"] else []
    new += ["--flip"] if s["flip"] else []
    new += [
        f"--{k.replace('_', '-')} {s[k]:g}"
        for k in ("mixup_alpha", "label_smoothing")
        if s.get(k, HP_DEFAULTS[k]) != HP_DEFAULTS[k]
    ]
    if new:
        raise ValueError(
            f"{', '.join(new)} need{'s' if len(new) == 1 else ''} --backend jax (the numpy "
            "reference Solver is the course's)"
        )


def train_in(
    out_dir,
    s: dict | None = None,
    *,
    resume: bool = False,
    backend: str = "jax",
    data_dir=None,
    checkpoint_every: float = CHECKPOINT_EVERY,
    log: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
    progress: Callable[[int, int, int, int], None] | None = None,
) -> dict:
    """Train the net of settings `s` into the run folder `out_dir`; see the module.

    Args:
      out_dir, s, resume, backend, data_dir: as `prepare_train`.
      checkpoint_every: seconds between checkpoints (0: after every epoch); also after the last
        epoch and when interrupted.
      log: called with each epoch's line (default: nothing).
      note: called with the notes `fc-jax train` prints on stderr (the data, the precision, a
        complete run; default: nothing).
      progress: called as `progress(epoch, epochs, done, total)` while an epoch runs.

    Returns:
      {"dataset", "test_acc", "best_val_acc", "train_seconds", "compile_seconds", "epochs",
      "out_dir", "device"}: `test_acc` is the best params' accuracy on the test split.

    Raises:
      ValueError: a check failed (nothing created); `Diverged`; `Interrupted` (Ctrl-C, SIGTERM);
      `fc_jax.storage.files.WriteError`.
    """
    plan = prepare_train(out_dir, s, resume=resume, backend=backend, data_dir=data_dir)
    s, out = plan.settings, plan.out_dir
    note = note or (lambda line: None)
    config = settings.config_of(s)
    data, folder, fingerprint = settings.load_data(s, data_dir, plan.meta)
    s["data_dir"] = folder
    n = [len(data[f"X_{k}"]) for k in ("train", "val", "test")]
    note(f"{s['dataset']}: {n[0]} train, {n[1]} val, {n[2]} test -> {out}")
    if backend == "jax" and (notice := precision_notice(config, jax.devices())):
        note(notice)
    with files.lock_folder(out):  # creates the folder; a second process on it gets a clear error
        files.remove_stale_temps(out)
        try:
            if backend == "numpy":
                res = _train_numpy(config, s, data)
            else:
                context = dict(fingerprint=fingerprint, data_dir=folder, note=note)
                res = _train_jax(config, s, data, plan, context, checkpoint_every, log, progress)
            return _finish(s, out, res, data)
        except KeyboardInterrupt:
            raise Interrupted(out) from None


def _finish(s, out, res, data) -> dict:
    """Write the run's outputs into `out` (each atomically); returns the final JSON line's dict."""
    h, best_val, test_acc = res["history"], res["best_val_acc"], res["test_acc"]
    checkpoint.export_params(out / "best_params.npz", res["best_params"], res["best_state"])
    save_model(
        out / "model.npz",
        settings.config_of(s),
        res["best_params"],
        res["best_state"],
        data["mean_image"],
        meta={"settings": s, "test_acc": test_acc},
        pixel_scale=DATASETS[s["dataset"]].pixel_scale,
        whiten=data.get("whiten"),
    )
    summary = dict(settings=s, best_val_acc=best_val, test_acc=test_acc, history=h)
    files.atomic_write_text(out / "history.json", json.dumps(summary, indent=1))
    write_history_csv(h, out / "history.csv")
    plot_history(h, out / "curves.png", settings=s, test_acc=test_acc)
    return dict(
        dataset=s["dataset"],
        test_acc=test_acc,
        best_val_acc=best_val,
        train_seconds=round(res["train_seconds"], 3),
        compile_seconds=round(h.get("compile_seconds", 0.0), 3),
        epochs=len(h["val_acc"]),
        out_dir=str(out),
        device=res["device"],
    )


def schedule_of(
    s: dict, options: dict | None = None, trials: list[dict] | None = None, **fields
) -> Schedule:
    """The `Schedule` of a run folder: the one place settings and a sweep's options become one.

    Args:
      s: the settings (`fc_jax.settings`): epochs, batch_size, seed, sampling, lr_schedule,
        crop_pad, flip, and the dataset's image shape.
      options: a sweep's options (`fc_jax.workdir.sweeping.OPTIONS`, completed): schedule
        ("full", "halving" with eta and min_epochs, "pbt" with ready and quantile),
        independent_batches, seeds. None: a training run (one lane).
      trials: a PBT sweep's trials: PBT perturbs the values they sweep
        (`fc_jax.runs.sweep.pbt_defaults`).
      fields: any other `Schedule` field (chunks_per_epoch, checkpoint_every, ...); the rest
        keep `Schedule`'s defaults.

    Raises:
      ValueError: an unknown schedule name.
    """
    sweep = {}
    if options is not None:
        kind = options["schedule"]
        if kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
        sweep = dict(
            independent_batches=options["independent_batches"],
            seeds=options["seeds"],
            halving=Halving(options["eta"], options["min_epochs"]) if kind == "halving" else None,
            pbt=pbt_defaults(trials, options["ready"], options["quantile"])
            if kind == "pbt"
            else None,
        )
    return Schedule(
        num_epochs=s["epochs"],
        batch_size=s["batch_size"],
        seed=s["seed"],
        replace=s["sampling"] == "replace",
        lr_schedule=s["lr_schedule"],
        crop_pad=s["crop_pad"],
        flip=s["flip"],
        image_shape=tuple(DATASETS[s["dataset"]].image_shape),
        **sweep,
        **fields,
    )


def _train_jax(config, s, data, plan: TrainPlan, context, every, log, progress) -> dict:
    """fit() with checkpoints every `every` seconds (0: every epoch) and at the end; the results."""
    run, meta, out = plan.run, plan.meta, plan.out_dir
    start = 0 if run is None else run.epoch
    if run is not None and run.epoch >= s["epochs"]:
        context["note"](
            f"the run in {out} is complete ({run.epoch} epochs); nothing to train "
            "(give a larger --epochs to train on)"
        )
    with models.x64_scope(config):
        dtype = jnp.dtype(config.dtype)
        hp_values = settings.hparams_of(s) if meta is None else meta["hparams"]  # exact on resume
        hp = make_hparams(s["update_rule"], dtype, **hp_values)
        if meta is None:
            schedule = schedule_of(s, chunks_per_epoch=CHUNKS_PER_EPOCH, checkpoint_every=every)
        else:  # the saved schedule, so the run continues exactly
            schedule = meta["schedule"]._replace(num_epochs=s["epochs"], checkpoint_every=every)
        new_meta = dict(
            config=config,
            update_rule=s["update_rule"],
            hparams=hp,
            schedule=schedule,
            settings=s,
            data_fingerprint=context["fingerprint"],
            data_dir=context["data_dir"],
        )
        epochs = s["epochs"]
        try:
            run = fit.fit(
                config,
                data,
                hparams=hp,
                schedule=schedule,
                optimizer=s["update_rule"],
                resume=run,
                callbacks=loop.Callbacks(
                    on_epoch_end=lambda r: checkpoint.save_run(out, r, new_meta),
                    progress=None
                    if progress is None
                    else lambda e, d, t: progress(e, epochs, d, t),
                    log=log,
                ),
            )
        except loop.DivergedError as exc:
            lower = {**s, "learning_rate": s["learning_rate"] / 10}
            again = train_command(lower, f"{out}-lr{lower['learning_rate']:g}")
            raise Diverged(
                f"{exc} Start again with a 10x lower learning rate: {again}", command=again
            ) from None
        test_acc = accuracy_on_test(config, run.best_params, run.best_model_state, data)
    return dict(
        history=run.history,
        best_params=run.best_params,
        best_state=run.best_model_state,
        best_val_acc=run.best_val_acc,
        test_acc=test_acc,
        device=str(jax.devices()[0]),
        train_seconds=sum(run.history["epoch_seconds"][start:]),
    )


def _train_numpy(config, s, data) -> dict:
    """The same net trained by the numpy reference Solver (the course's code path)."""
    np.random.seed(s["seed"])
    model = FullyConnectedNet(
        list(config.hidden_dims),
        input_dim=config.input_dim,
        dropout_keep_ratio=s["keep_prob"],
        normalization=config.normalization,
        reg=s["reg"],
        weight_scale=s["weight_scale"],
        dtype=np.dtype(config.dtype),
    )
    opts = dict(update_rule=s["update_rule"], optim_config={"learning_rate": s["learning_rate"]})
    opts.update(lr_decay=s["lr_decay"], batch_size=s["batch_size"], num_epochs=s["epochs"])
    solver = Solver(model, data, **opts, sampling=s["sampling"], print_every=10**9)
    t0 = time.perf_counter()
    solver.train()
    seconds, n = time.perf_counter() - t0, s["epochs"]
    history = {
        "loss": [float(v) for v in solver.loss_history],
        "train_acc": [float(v) for v in solver.train_acc_history[-n:]],
        "val_acc": [float(v) for v in solver.val_acc_history[-n:]],
        "epoch_seconds": [seconds / n] * n,
        "lr": [s["learning_rate"] * s["lr_decay"] ** e for e in range(n)],  # decayed per epoch
    }
    stats = {
        f"{k}{i}": bn[k]
        for i, bn in enumerate(model.bn_params, 1)
        for k in bn
        if k in ("running_mean", "running_var")
    }
    return dict(
        history=history,
        best_params=model.params,
        best_state=stats,
        best_val_acc=float(solver.best_val_acc),
        test_acc=float(solver.check_accuracy(data["X_test"], data["y_test"])),
        device="numpy (host CPU)",
        train_seconds=seconds,
    )

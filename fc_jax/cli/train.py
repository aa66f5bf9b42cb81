"""`fc-jax train`: one net, trained with checkpoints (by time, and at the end); `--resume` continues it.

Contract: flags -> `fc_jax.settings.settings` (or, with `--resume DIR`, the checkpoint's settings
merged with the flags) -> every check (settings, output folder, data) before anything is created ->
lock the output folder -> `fc_jax.runs.fit.fit` with `checkpoint.save_run` every `--checkpoint-every`
seconds, after the last epoch and when interrupted -> the
outputs, each written atomically: `history.json`, `history.csv` (one row per epoch), `curves.png`,
`best_params.npz` (the cs231n keys) and `model.npz` (what `fc-jax eval` and
`fc_jax.storage.model.load_model` read), then the test accuracy of the best params and ONE final
JSON line on stdout. One line per epoch on stdout, a progress bar
on stderr (TTY only). `--backend numpy` trains the same net with the numpy reference `Solver`.
"""

import datetime
import json
import sys
from pathlib import Path

import jax
import numpy as np

from fc_jax import models, settings
from fc_jax.cli import flags
from fc_jax.data.datasets import DATASETS
from fc_jax.hparams import HPARAMS
from fc_jax.precision import precision_notice
from fc_jax.runs import loop

__all__ = ["add_parser", "run", "SETTING_NAMES", "structure_args"]

SETTING_NAMES = ("dataset", *settings.DEFAULTS["cifar10"], *HPARAMS)
CHUNKS_PER_EPOCH = 20  # compiled calls per epoch (the progress bar's resolution); saved for resume
NUM_TRAIN_SAMPLES = 1000  # training subsample for the per-epoch train accuracy


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


def _prepare(args):
    """(settings, out, run or None, meta or None): every check, nothing created."""
    given = flags.given(args, SETTING_NAMES)
    if args.resume is None:
        s = settings.settings(given.get("dataset", "cifar10"), given)
        if args.backend == "numpy" and s["precision"] != "float32":
            raise ValueError("--precision bf16 needs --backend jax (the numpy reference is float)")
        if args.backend == "numpy":
            _check_numpy_backend(s)
        stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
        out = flags.check_out_dir(
            args.out or f"runs/{s['dataset']}-{stamp}", data_dir=args.data_dir
        )
        if (out / "checkpoint.npz").exists():
            raise ValueError(
                f"{out} holds a checkpoint already: use --resume {out} or another --out"
            )
        return s, out, None, None
    from fc_jax.storage.checkpoint import load_run

    out = flags.resume_dir(args.resume)
    if args.backend != "jax":
        raise ValueError("--resume needs --backend jax (the numpy backend writes no checkpoints)")
    if args.out is not None and Path(args.out).resolve() != out.resolve():
        raise ValueError(f"--resume writes into {out}; drop --out {args.out}")
    run, meta = load_run(out)
    if "settings" not in meta:
        raise ValueError(f"{out}/checkpoint.npz was not written by fc-jax train; it cannot resume")
    given = {k: v for k, v in given.items() if k != "data_dir"}
    try:
        s = settings.merge_resume(meta["settings"], given)
    except ValueError as exc:  # a run continues as saved; other settings make a new run
        new = settings.settings(meta["settings"]["dataset"], {**meta["settings"], **given})
        if args.data_dir is not None:
            new["data_dir"] = str(Path(args.data_dir).expanduser().resolve())
        lr = new["learning_rate"]
        name = f"{out}-lr{lr:g}" if lr != meta["settings"]["learning_rate"] else f"{out}-new"
        raise ValueError(
            f"{exc} to continue this run, or start a new one with them: "
            f"{flags.train_command(new, name)}"
        ) from None
    if s["epochs"] < run.epoch:
        raise ValueError(
            f"the run in {out} has trained {run.epoch} epochs already; --epochs "
            f"{s['epochs']} is below that (give a larger number to train on)"
        )
    return s, out, run, meta


def _check_numpy_backend(s: dict) -> None:
    """The numpy reference Solver trains the course's recipe only: refuse what it lacks."""
    from fc_jax.hparams import DEFAULTS as HP_DEFAULTS

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
            f"{', '.join(new)} need{'s' if len(new) == 1 else ''} --backend jax (the numpy reference Solver is the course's)"
        )


def run(args) -> int:
    s, out, run_, meta = _prepare(args)
    config = settings.config_of(s)
    data, data_dir, fingerprint = settings.load_data(s, args.data_dir, meta)
    s["data_dir"] = data_dir
    if not args.quiet:
        n = [len(data[f"X_{k}"]) for k in ("train", "val", "test")]
        print(f"{s['dataset']}: {n[0]} train, {n[1]} val, {n[2]} test -> {out}", file=sys.stderr)
        if args.backend == "jax" and (notice := precision_notice(config, jax.devices())):
            print(notice, file=sys.stderr)
    from fc_jax.storage.files import lock_folder, remove_stale_temps

    with lock_folder(out):  # creates the folder; a second process on it gets a clear error
        remove_stale_temps(out)
        try:
            if args.backend == "numpy":
                res = _train_numpy(config, s, data)
            else:
                res = _train_jax(
                    config,
                    s,
                    data,
                    run_,
                    meta,
                    out,
                    fingerprint,
                    data_dir,
                    args.quiet,
                    args.checkpoint_every,
                )
                if isinstance(res, int):
                    return res
            line = _finish(s, out, res, data)
            print(
                f"test acc (best params, val acc {res['best_val_acc']:.4f}): {res['test_acc']:.4f}"
            )
            print(json.dumps(line), flush=True)
            return 0
        except KeyboardInterrupt:
            print(flags.interrupted("train", out, getattr(args, "argv", None)), file=sys.stderr)
            return 130


def _finish(s, out, res, data) -> dict:
    """Write the run's outputs into `out` (each atomically); returns the final JSON line's dict."""
    from fc_jax.report.curves import plot_history, write_history_csv
    from fc_jax.storage.checkpoint import export_params
    from fc_jax.storage.files import atomic_write_text
    from fc_jax.storage.model import save_model

    h, best_val, test_acc = res["history"], res["best_val_acc"], res["test_acc"]
    export_params(out / "best_params.npz", res["best_params"], res["best_state"])
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
    atomic_write_text(out / "history.json", json.dumps(summary, indent=1))
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


def structure_args(s: dict) -> dict:
    """The schedule's structure for `fit` / `run_sweep` from settings `s` (older runs: defaults)."""
    return dict(
        lr_schedule=s.get("lr_schedule", "step"),
        crop_pad=s.get("crop_pad", 0),
        flip=s.get("flip", False),
        image_shape=list(DATASETS[s["dataset"]].image_shape),
    )


def _train_jax(
    config, s, data, run, meta, out, fingerprint, data_dir, quiet, every=flags.CHECKPOINT_EVERY
):
    """fit() with checkpoints every `every` seconds (0: every epoch) and at the end; returns the
    results, or 3 on divergence."""
    import jax
    import jax.numpy as jnp

    from fc_jax import train
    from fc_jax.hparams import make_hparams
    from fc_jax.runs import fit
    from fc_jax.storage.checkpoint import save_run

    start = 0 if run is None else run.epoch
    if run is not None and run.epoch >= s["epochs"]:
        print(
            f"the run in {out} is complete ({run.epoch} epochs); nothing to train "
            "(give a larger --epochs to train on)",
            file=sys.stderr,
        )
    with models.x64_scope(config):
        dtype = jnp.dtype(config.dtype)
        hp_values = settings.hparams_of(s) if meta is None else meta["hparams"]  # exact on resume
        hp = make_hparams(s["update_rule"], dtype, **hp_values)
        fit_args = dict(
            batch_size=s["batch_size"],
            seed=s["seed"],
            replace=s["sampling"] == "replace",
            chunks_per_epoch=CHUNKS_PER_EPOCH,
            num_train_samples=NUM_TRAIN_SAMPLES,
        )
        fit_args.update(structure_args(s))
        if meta is not None:  # the saved arguments, so the run continues exactly
            fit_args.update(meta["fit"])
        fit_args["num_epochs"] = s["epochs"]
        new_meta = dict(
            config=config,
            update_rule=s["update_rule"],
            hparams=hp,
            fit=fit_args,
            settings=s,
            data_fingerprint=fingerprint,
            data_dir=data_dir,
        )
        show_bar = not quiet and sys.stderr.isatty()
        progress, clear = flags.progress_bar(show_bar, s["epochs"])

        def log(line: str) -> None:
            clear()
            print(line, flush=True)

        try:
            run = fit.fit(
                config,
                data,
                update_rule=s["update_rule"],
                hparams=hp,
                resume=run,
                on_epoch_end=lambda r: save_run(out, r, new_meta),
                checkpoint_every=every,
                progress=progress if show_bar else None,
                log=log,
                **fit_args,
            )
        except loop.DivergedError as exc:
            clear()
            lower = {**s, "learning_rate": s["learning_rate"] / 10}
            again = flags.train_command(lower, f"{out}-lr{lower['learning_rate']:g}")
            print(
                f"error: {exc} Start again with a 10x lower learning rate: {again}", file=sys.stderr
            )
            return 3
        except BaseException:
            clear()
            raise
        X_test, y_test = jnp.asarray(data["X_test"], dtype), jnp.asarray(data["y_test"], jnp.int32)
        test_acc = float("nan")
        if len(X_test):
            evaluate = train.make_evaluate(config)
            test_acc = float(evaluate(run.best_params, run.best_model_state, X_test, y_test))
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
    import time

    from fc_jax.reference.fc_net import FullyConnectedNet
    from fc_jax.reference.solver import Solver

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

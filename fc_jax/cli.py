"""`fc-jax` / `python -m fc_jax`: train a net, resume it, check gradients.

Contract: `main(argv=None) -> int` parses `argv`, runs one subcommand and returns the exit code:
0 ok, 1 a gradient check failed, 2 bad arguments, data or checkpoint (`error: ...` on stderr),
3 training diverged (the last good checkpoint is kept).

* `train`: dataset -> `NetConfig` + `HParams` -> `fc_jax.fit.fit`. One line per epoch on stdout, a
  progress bar on stderr (TTY only), `checkpoint.npz` after every epoch, then `history.json`,
  `curves.png`, `best_params.npz`, the test accuracy of the best params and ONE final JSON line.
  `--resume DIR` continues DIR's run bit for bit as if it had never stopped. `--backend numpy`
  trains the same net with the numpy reference `Solver` (slow; no checkpoints).
* `gradcheck`: float64 central differences against every custom-VJP layer, loss and whole nets.
* `sweep`: added by `fc_jax.sweep_cli.add_parser(subparsers)` when that module exists.

Per-dataset defaults live in `DEFAULTS`; flags override them. jax is imported only when a command
runs, so `--help` is fast.
"""

import argparse
import datetime
import hashlib
import importlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from fc_jax import data as data_mod

__all__ = ["DEFAULTS", "RULES", "main", "build_parser"]

_COMMON = dict(
    keep_prob=1.0,
    update_rule="adam",
    learning_rate=1e-3,
    reg=0.0,
    dtype="float32",
    sampling="replace",
    seed=0,
    num_training=None,  # None: the dataset's default split
    num_validation=None,
    num_test=None,
)
DEFAULTS = {
    # The default recipe: measured in README.md ("fc-jax train" line) and benchmarks/RESULTS.md.
    "cifar10": dict(
        _COMMON,
        hidden_dims=[512, 256],
        normalization="batchnorm",
        keep_prob=0.75,
        learning_rate=2e-3,
        lr_decay=0.9,
        epochs=12,
        batch_size=200,
        weight_scale=2e-2,
        sampling="permutation",
    ),
    # 98% test accuracy in a few seconds on one CPU core.
    "digits": dict(
        _COMMON,
        hidden_dims=[128],
        normalization="none",
        lr_decay=1.0,
        epochs=30,
        batch_size=64,
        weight_scale=1e-1,
    ),
}
RULES = ("sgd", "sgd_momentum", "rmsprop", "adam")
_HP = ("learning_rate", "lr_decay", "reg", "weight_scale", "keep_prob")  # flags that are HParams
CHUNKS_PER_EPOCH = 20  # compiled calls per epoch (the progress bar's resolution); saved for resume
NUM_TRAIN_SAMPLES = 1000  # training subsample for the per-epoch train accuracy


def _positive_int(s: str) -> int:
    if int(s) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {s}")
    return int(s)


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train a fully-connected net (defaults: cli.DEFAULTS)")
    a = t.add_argument
    a("--dataset", choices=sorted(DEFAULTS), help="default: cifar10")
    a("--data-dir", help="CIFAR-10 folder (default: $FC_JAX_DATA_DIR, else the user cache)")
    a("--hidden-dims", type=_positive_int, nargs="+", help="hidden layer widths, e.g. 100 100")
    a("--normalization", choices=("none", "batchnorm", "layernorm"))
    a("--keep-prob", type=float, help="dropout KEEP probability in (0, 1]; 1 = no dropout")
    a("--update-rule", choices=RULES)
    a("--learning-rate", type=float)
    a("--lr-decay", type=float, help="learning rate multiplier after each epoch, in (0, 1]")
    a("--epochs", type=_positive_int, help="total epochs (with --resume: continue up to this)")
    a("--batch-size", type=_positive_int)
    a("--reg", type=float, help="L2 strength")
    a("--weight-scale", type=float, help="std of the initial weights")
    a("--seed", type=int)
    a("--dtype", choices=("float32", "float64"))
    a("--num-training", type=_positive_int)
    a("--num-validation", type=_positive_int)
    a("--num-test", type=_positive_int)
    a("--sampling", choices=("replace", "permutation"), help="minibatches with replacement or not")
    a("--out", help="output folder (default: runs/<dataset>-<timestamp>)")
    a("--resume", metavar="DIR", help="continue the run saved in DIR, writing into DIR")
    a("--backend", choices=("jax", "numpy"), default="jax", help="numpy: the reference Solver")
    a("--quiet", action="store_true", help="no progress bar and no notes on stderr")
    t.set_defaults(func=_run_train)


def _add_sweep(sub) -> None:
    """Hook: `fc_jax.sweep_cli.add_parser(subparsers)` adds `sweep` (its parser sets `func`)."""
    if importlib.util.find_spec("fc_jax.sweep_cli") is not None:
        importlib.import_module("fc_jax.sweep_cli").add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    """The `fc-jax` parser; each subcommand sets `func(args) -> exit code`."""
    p = argparse.ArgumentParser(prog="fc-jax", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    _add_train(sub)
    g = sub.add_parser("gradcheck", help="central differences vs every layer, loss and nets")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_run_gradcheck)
    _add_sweep(sub)
    return p


def main(argv=None) -> int:
    """Run the command line `argv` (default `sys.argv[1:]`); returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except ValueError as exc:  # DataError and CheckpointError are ValueErrors too
        print(f"error: {exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------- train
def _settings(args) -> tuple[dict, Path, object, dict | None]:
    """Merge DEFAULTS, the flags and (with --resume) the checkpoint: (settings, out, run, meta)."""
    flags = [*DEFAULTS["cifar10"], "dataset"]
    given = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    if args.resume is None:
        name = given.get("dataset", "cifar10")
        data_dir = args.data_dir and str(Path(args.data_dir).expanduser().resolve())
        s = {**DEFAULTS[name], **given, "dataset": name, "data_dir": data_dir}
        out = Path(args.out or f"runs/{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
        if (out / "checkpoint.npz").exists():
            raise ValueError(
                f"{out} holds a checkpoint already: use --resume {out} or another --out"
            )
        return s, out, None, None
    from fc_jax.checkpoint import load_run

    out = Path(args.resume)
    if args.backend != "jax":
        raise ValueError("--resume needs --backend jax (the numpy backend writes no checkpoints)")
    if args.out is not None and Path(args.out).resolve() != out.resolve():
        raise ValueError(f"--resume writes into {out}; drop --out {args.out}")
    run, meta = load_run(out)
    saved = meta["cli"]
    clash = [f"--{k.replace('_', '-')} {v!r} (checkpoint: {saved.get(k)!r})"
             for k, v in given.items() if k != "epochs" and v != saved.get(k)]  # fmt: skip
    if clash:
        raise ValueError(f"conflicts with the checkpoint in {out}: {', '.join(clash)}; omit them")
    s = {**saved, "epochs": given.get("epochs", saved["epochs"])}
    s["data_dir"] = args.data_dir or saved["data_dir"]
    return s, out, run, meta


def _fingerprint(data: dict) -> str:
    """A cheap identity of the train/val data: shapes and up to 1000 strided rows of each."""
    h = hashlib.sha256()
    for k in ("X_train", "y_train", "X_val", "y_val"):
        h.update(f"{k}{data[k].shape}{data[k].dtype}".encode())
        h.update(data[k][:: max(1, len(data[k]) // 1000)].tobytes())
    return h.hexdigest()


def _run_train(args) -> int:
    from fc_jax.hparams import validate_hparams
    from fc_jax.models import NetConfig

    s, out, run, meta = _settings(args)
    config = NetConfig(
        hidden_dims=tuple(s["hidden_dims"]),
        input_dim=64 if s["dataset"] == "digits" else 3 * 32 * 32,
        normalization=None if s["normalization"] == "none" else s["normalization"],
        keep_prob=float(s["keep_prob"]),
        dtype=s["dtype"],
    )
    validate_hparams({k: s[k] for k in _HP})
    if args.backend == "numpy" and s["sampling"] != "replace":
        raise ValueError("--backend numpy samples with replacement only: use --sampling replace")
    sizes = s["num_training"], s["num_validation"], s["num_test"]
    data = data_mod.get_dataset(s["dataset"], s["data_dir"], *sizes, dtype=np.dtype(s["dtype"]))
    fingerprint = _fingerprint(data)
    if meta is not None and meta.get("data_fingerprint") != fingerprint:
        raise ValueError(f"these data differ from those {out} was trained on (check --data-dir)")
    if not args.quiet:
        n = [len(data[f"X_{k}"]) for k in ("train", "val", "test")]
        print(f"{s['dataset']}: {n[0]} train, {n[1]} val, {n[2]} test -> {out}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    if args.backend == "numpy":
        res = _train_numpy(config, s, data)
    else:
        res = _train_jax(config, s, data, run, meta, out, fingerprint, args.quiet)
        if isinstance(res, int):
            return res
    from fc_jax.checkpoint import export_params
    from fc_jax.plots import plot_history

    h, best_val, test_acc = res["history"], res["best_val_acc"], res["test_acc"]
    export_params(out / "best_params.npz", res["best_params"], res["best_state"])
    summary = dict(settings=s, best_val_acc=best_val, test_acc=test_acc, history=h)
    (out / "history.json").write_text(json.dumps(summary, indent=1))
    plot_history(h, out / "curves.png", title=f"{s['dataset']} {s['hidden_dims']}")
    print(f"test acc (best params, val acc {best_val:.4f}): {test_acc:.4f}")
    line = dict(
        dataset=s["dataset"],
        test_acc=test_acc,
        best_val_acc=best_val,
        train_seconds=round(res["train_seconds"], 3),
        compile_seconds=round(h.get("compile_seconds", 0.0), 3),
        epochs=len(h["val_acc"]),
        out_dir=str(out),
        device=res["device"],
    )
    print(json.dumps(line), flush=True)
    return 0


def _progress_bar(enabled: bool, epochs: int):
    """(progress(epoch, done, total), clear()): a one-line bar on stderr, drawn when enabled."""
    width = [0]

    def progress(epoch: int, done: int, total: int) -> None:
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


def _train_jax(config, s, data, run, meta, out, fingerprint, quiet):
    """fit() with a checkpoint after every epoch; returns the results, or 3/130 on failure."""
    import jax
    import jax.numpy as jnp

    from fc_jax import fit, train
    from fc_jax.checkpoint import save_run
    from fc_jax.hparams import make_hparams

    start = 0 if run is None else run.epoch
    with fit.x64_scope(config):
        dtype = jnp.dtype(config.dtype)
        hp_values = {k: s[k] for k in _HP} if meta is None else meta["hparams"]  # exact on resume
        hp = make_hparams(s["update_rule"], dtype, **hp_values)
        fit_args = dict(
            batch_size=s["batch_size"],
            seed=s["seed"],
            replace=s["sampling"] == "replace",
            chunks_per_epoch=CHUNKS_PER_EPOCH,
            num_train_samples=NUM_TRAIN_SAMPLES,
        )
        if meta is not None:  # the saved arguments, so the run continues exactly
            fit_args.update(meta["fit"])
        fit_args["num_epochs"] = s["epochs"]
        new_meta = dict(config=config, update_rule=s["update_rule"], hparams=hp, fit=fit_args)
        new_meta.update(cli=s, data_fingerprint=fingerprint)
        show_bar = not quiet and sys.stderr.isatty()
        progress, clear = _progress_bar(show_bar, s["epochs"])

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
                progress=progress if show_bar else None,  # a bar waits for each chunk
                log=log,
                **fit_args,
            )
        except fit.DivergedError as exc:
            clear()
            print(f"error: {exc}", file=sys.stderr)
            return 3
        except KeyboardInterrupt:
            clear()
            print(f"interrupted; continue with: fc-jax train --resume {out}", file=sys.stderr)
            return 130
        X_test, y_test = jnp.asarray(data["X_test"], dtype), jnp.asarray(data["y_test"], jnp.int32)
        test_acc = train.make_evaluate(config)(
            run.best_params, run.best_model_state, X_test, y_test
        )
    return dict(
        history=run.history,
        best_params=run.best_params,
        best_state=run.best_model_state,
        best_val_acc=run.best_val_acc,
        test_acc=float(test_acc),
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
        dropout_keep_ratio=config.keep_prob,
        normalization=config.normalization,
        reg=s["reg"],
        weight_scale=s["weight_scale"],
        dtype=np.dtype(config.dtype),
    )
    opts = dict(update_rule=s["update_rule"], optim_config={"learning_rate": s["learning_rate"]})
    opts.update(lr_decay=s["lr_decay"], batch_size=s["batch_size"], num_epochs=s["epochs"])
    solver = Solver(model, data, **opts, print_every=10**9)
    t0 = time.perf_counter()
    solver.train()
    seconds, n = time.perf_counter() - t0, s["epochs"]
    history = {
        "loss": [float(v) for v in solver.loss_history],
        "train_acc": [float(v) for v in solver.train_acc_history[-n:]],
        "val_acc": [float(v) for v in solver.val_acc_history[-n:]],
        "epoch_seconds": [seconds / n] * n,
    }
    stats = {f"{k}{i}": bn[k] for i, bn in enumerate(model.bn_params, 1) for k in bn
             if k in ("running_mean", "running_var")}  # fmt: skip
    return dict(
        history=history,
        best_params=model.params,
        best_state=stats,
        best_val_acc=float(solver.best_val_acc),
        test_acc=float(solver.check_accuracy(data["X_test"], data["y_test"])),
        device="numpy (host CPU)",
        train_seconds=seconds,
    )


# --------------------------------------------------------------------------------- gradcheck
def _run_gradcheck(args) -> int:
    from fc_jax.gradcheck import check_all

    worst = check_all(args.seed)
    print(f"{'check':<20} {'worst rel error':>16} {'tolerance':>10}")
    for name, (err, tol) in worst.items():
        print(f"{name:<20} {err:>16.3e} {tol:>10.0e} {'ok' if err <= tol else 'FAIL'}")
    ok = all(err <= tol for err, tol in worst.values())
    print(json.dumps({"gradcheck": {k: e for k, (e, _) in worst.items()}, "passed": ok}))
    return 0 if ok else 1

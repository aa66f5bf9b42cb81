"""`fc-jax eval`: use a trained model: its test accuracy, or predictions for raw images.

Contract: `fc-jax eval PATH` loads the model of a run folder (`PATH/model.npz`, written by
`fc-jax train` and by a sweep's `--retrain-best` into `OUT/retrain`) or a model file (a sweep's
`OUT/models/trial-<k>.npz`) with `fc_jax.storage.model.load_model`, and prints the test accuracy of the
dataset it was trained on (same split, same preprocessing) as ONE JSON line. With
`--inputs FILE.npy` (raw images as stored: CIFAR-10 pixels 0..255, shape (N, 3, 32, 32)
channels-first, (N, 32, 32, 3) channels-last or (N, 3072); digits 0..16, (N, 8, 8) or (N, 64)) it
applies the saved preprocessing (the training mean image) and prints the predicted classes, or
saves them to `--output FILE.npy` (written atomically). Images scaled to [0, 1] are refused (they
would all land in one class): multiply them by 255 (digits: 16) first.
"""

import io
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    e = sub.add_parser(
        "eval",
        help="test accuracy or predictions of a trained model",
        description=__doc__.split("\n\n")[0],
    )
    e.add_argument("path", metavar="PATH", help="a run folder (with model.npz) or a model .npz")
    e.add_argument(
        "--inputs",
        metavar="FILE.npy",
        help="raw images to classify, as stored: CIFAR-10 (N, 3, 32, 32) channels-first, "
        "(N, 32, 32, 3) channels-last or (N, 3072), pixel values 0..255 (not "
        "scaled to [0, 1]: multiply such images by 255); digits (N, 1, 8, 8), "
        "(N, 8, 8) or (N, 64), values 0..16 (default: none; report the test "
        "accuracy)",
    )
    e.add_argument(
        "--output",
        metavar="FILE.npy",
        help="save the predictions here instead of printing them (default: print)",
    )
    e.add_argument("--data-dir", help="CIFAR-10 folder (default: the one the model was trained on)")
    e.set_defaults(func=run)


def _model_path(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir() and not (p / "model.npz").exists():
        if (p / "models").is_dir():
            raise ValueError(
                f"{p} is a sweep folder: pass {p / 'models'}/trial-<k>.npz or, after "
                f"--retrain-best, {p / 'retrain'}"
            )
        raise ValueError(f"{p} holds no model.npz (a finished fc-jax train run writes one)")
    if not p.exists():
        raise ValueError(f"{p}: no such run folder or model file")
    return p


def _load_inputs(path: str) -> np.ndarray:
    p = Path(path).expanduser()
    try:
        return np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"--inputs {p}: no such file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"--inputs {p} is not a readable .npy array ({exc})") from None


def run(args) -> int:
    from fc_jax.storage.model import load_model, predict_raw

    if args.output is not None and args.inputs is None:
        raise ValueError("--output saves predictions: give --inputs FILE.npy too")
    path = _model_path(args.path)
    model = load_model(path)
    if args.inputs is not None:
        X = _load_inputs(args.inputs)
        try:
            pred = predict_raw(model, X)
        except ValueError as exc:
            raise ValueError(f"--inputs {args.inputs}: {exc}") from None
        if args.output is not None:
            from fc_jax.storage.files import atomic_write_bytes

            buf = io.BytesIO()
            np.save(buf, pred)
            atomic_write_bytes(Path(args.output).expanduser(), buf.getvalue())
        else:
            print(" ".join(map(str, pred.tolist())))
        counts = np.bincount(pred, minlength=model.config.num_classes).tolist()
        print(
            json.dumps(
                {
                    "model": str(path),
                    "inputs": args.inputs,
                    "num_inputs": len(pred),
                    "class_counts": counts,
                    "output": args.output,
                }
            )
        )
        return 0
    s = model.meta.get("settings")
    if not s:
        raise ValueError(f"{path} does not say which dataset it was trained on; use --inputs")
    from fc_jax.data import datasets
    from fc_jax.models import x64_scope
    from fc_jax.train import make_evaluate

    data_dir = args.data_dir or s.get("data_dir")
    sizes = s["num_training"], s["num_validation"], s["num_test"]
    data = datasets.get_dataset(s["dataset"], data_dir, *sizes, dtype=np.dtype(s["dtype"]))
    if len(data["X_test"]) == 0:
        raise ValueError("the model was trained with --num-test 0: there is no test split to score")
    with x64_scope(model.config):
        X, y = data["X_test"].reshape(len(data["X_test"]), -1), data["y_test"].astype(np.int32)
        if model.whiten is not None:  # the training preprocessing, as predict_raw applies it
            X = (X.astype(np.float64) @ model.whiten).astype(X.dtype)
        acc = float(make_evaluate(model.config)(model.params, model.model_state, X, y))
    print(
        json.dumps(
            {"model": str(path), "dataset": s["dataset"], "num_test": len(y), "test_acc": acc}
        )
    )
    sys.stdout.flush()
    return 0

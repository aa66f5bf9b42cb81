"""`fc-jax eval`: use a trained model: its test accuracy, or predictions for raw images.

Contract: `fc-jax eval PATH` loads the model of a run folder (`PATH/model.npz`, written by
`fc-jax train` and by a sweep's `--retrain-best` into `OUT/retrain`) or a model file (a sweep's
`OUT/models/trial-<k>.npz`) and prints its test accuracy on the dataset it was trained on (same
split, same preprocessing; `fc_jax.workdir.evaluation.evaluate_model`) as ONE JSON line. With
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
    from fc_jax.workdir.evaluation import evaluate_model, model_path

    if args.output is not None and args.inputs is None:
        raise ValueError("--output saves predictions: give --inputs FILE.npy too")
    path = model_path(args.path)
    if args.inputs is not None:
        model = load_model(path)
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
    print(json.dumps(evaluate_model(path, args.data_dir)))
    sys.stdout.flush()
    return 0

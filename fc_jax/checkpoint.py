"""Checkpoints of a training run: one safe `checkpoint.npz`, written atomically, restored exactly.

Contract: `save_run(out_dir, run, meta)` writes `out_dir/checkpoint.npz` and `load_run(out_dir)`
returns `(run, meta)` with every array bit-identical, in its saved dtype, inside the exact tree
structure `fc_jax.fit.fit` resumes from (the optimizer's NamedTuple state is rebuilt from
`get_optimizer(update_rule).init` as a template). The file is a plain `np.savez` archive, read with
`allow_pickle=False`: one array per leaf under a path-like name (`params/W1`,
`model_state/running_mean1`, `opt_state/m/W1`, `ts/key` (the raw key data), `ts/step`,
`ts/diverged`, `best_params/...`, `best_model_state/...`) plus `meta`, a uint8 array of UTF-8 JSON:
the format version, the `NetConfig` fields, the update rule, the hyperparameter values, the
caller's fit arguments (seed, batch size, ...), epoch, history, best validation accuracy and a
sha256 over the arrays. A save goes to a temporary file in the same folder (flushed, fsynced) that
`os.replace` moves into place, so a crash or a failed save never leaves a half-written or modified
checkpoint. Every problem on load (missing file, truncated or corrupt archive, bad JSON, checksum
mismatch, wrong format version, another architecture than the one asked for) raises
`CheckpointError`.
`export_params(path, params)` writes the params with their cs231n keys for `np.load`.
"""

import dataclasses
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import models
from fc_jax.fit import Run, x64_scope
from fc_jax.optim import get_optimizer
from fc_jax.train import TrainState

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "save_run",
    "load_run",
    "export_params",
]

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.npz"
_RESERVED = (
    "format_version",
    "config",
    "update_rule",
    "hparams",
    "key_impl",
    "epoch",
    "history",
    "best_val_acc",
    "sha256",
)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, of another format version or of another architecture."""


def _key_name(entry) -> str:
    for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    raise TypeError(f"unsupported pytree path entry {entry!r}")


def _flatten(prefix: str, tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join([prefix, *map(_key_name, p)]): np.asarray(v) for p, v in leaves}


def _digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over every array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez into a temporary file next to `path`, fsync, then os.replace; no leftovers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _checkpoint_path(out_dir) -> Path:
    p = Path(out_dir).expanduser()
    return p if p.suffix == ".npz" else p / CHECKPOINT_NAME


def save_run(out_dir: os.PathLike | str, run: Run, meta: dict) -> Path:
    """Write `run` to `out_dir/checkpoint.npz` atomically (the folder is created if needed).

    Args:
      out_dir: the run's folder.
      run: a `fc_jax.fit.Run` (as passed to `fit`'s `on_epoch_end`); must not be diverged.
      meta: a dict with "config" (a `NetConfig`), "update_rule" (str) and "hparams" (an `HParams`
        or a dict of its fields), plus any JSON-serializable fit arguments needed to resume (seed,
        batch_size, num_epochs, ...), stored as given.

    Returns:
      The path written.

    Raises:
      CheckpointError: meta lacks a required entry, uses a reserved name, is not JSON-serializable,
        or the run has diverged. Nothing on disk changes then.
    """
    for k in ("config", "update_rule", "hparams"):
        if k not in meta:
            raise CheckpointError(f"meta must contain {k!r}; got keys {sorted(meta)}")
    config, hp = meta["config"], meta["hparams"]
    if not isinstance(config, models.NetConfig):
        raise CheckpointError(f"meta['config'] must be a NetConfig, got {type(config).__name__}")
    get_optimizer(meta["update_rule"])  # validates the name
    clash = sorted(set(meta) & set(_RESERVED) - {"config", "update_rule", "hparams"})
    if clash:
        raise CheckpointError(f"meta uses reserved name(s) {clash}")
    if bool(np.asarray(run.ts.diverged)):
        raise CheckpointError("refusing to save a diverged run (its loss became non-finite)")
    hp = hp._asdict() if hasattr(hp, "_asdict") else dict(hp)
    ts = run.ts
    arrays = {
        **_flatten("params", ts.params),
        **_flatten("model_state", ts.model_state),
        **_flatten("opt_state", ts.opt_state),
        "ts/key": np.asarray(jax.random.key_data(ts.key)),
        "ts/step": np.asarray(ts.step),
        "ts/diverged": np.asarray(ts.diverged),
        **_flatten("best_params", run.best_params),
        **_flatten("best_model_state", run.best_model_state),
    }
    doc = {k: v for k, v in meta.items() if k not in ("config", "hparams")}
    doc.update(
        format_version=FORMAT_VERSION,
        config=dataclasses.asdict(config),
        hparams={k: float(np.asarray(v)) for k, v in hp.items()},
        key_impl=str(jax.random.key_impl(ts.key)),
        epoch=int(run.epoch),
        history=run.history,
        best_val_acc=float(run.best_val_acc),
        sha256=_digest(arrays),
    )
    try:
        text = json.dumps(doc)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"meta is not JSON-serializable: {exc}") from exc
    path = _checkpoint_path(out_dir)
    _atomic_savez(path, {**arrays, "meta": np.frombuffer(text.encode(), np.uint8)})
    return path


def _restore(prefix: str, template, arrays: dict, path: Path):
    """Fill `template`'s structure with `arrays[prefix/...]`, checking shape and dtype."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for p, t in leaves:
        name = "/".join([prefix, *map(_key_name, p)])
        if name not in arrays:
            raise CheckpointError(f"checkpoint {path} lacks array {name!r}: it is corrupt")
        a = arrays.pop(name)
        if a.shape != tuple(t.shape) or a.dtype != t.dtype:
            raise CheckpointError(
                f"checkpoint {path}: array {name!r} is {a.dtype}{list(a.shape)}, expected "
                f"{t.dtype}{list(t.shape)} for the saved architecture: it is corrupt"
            )
        out.append(jnp.asarray(a))
    return jax.tree.unflatten(treedef, out)


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:  # fh: closed on errors
            arrays = {n: z[n] for n in z.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("meta is not a JSON object")
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({exc})") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {meta.get('format_version')!r}; this fc_jax "
            f"reads version {FORMAT_VERSION}"
        )
    if meta.get("sha256") != _digest(arrays):
        raise CheckpointError(f"checkpoint {path} is corrupt: its sha256 checksum does not match")
    return arrays, meta


def load_run(
    out_dir: os.PathLike | str, *, config: models.NetConfig | None = None
) -> tuple[Run, dict]:
    """Read `out_dir/checkpoint.npz` (or a `.npz` path) into a `Run` ready for `fit(resume=...)`.

    Args:
      out_dir: the run's folder, or the checkpoint file itself.
      config: if given, the architecture the caller expects; a checkpoint of another raises.

    Returns:
      (run, meta): meta is the saved JSON dict with "config" turned back into a `NetConfig`;
      "hparams" is a dict of floats, "update_rule" a str, plus the caller's saved entries.

    Raises:
      CheckpointError: missing, truncated or corrupt file, checksum mismatch, another format
        version, or an architecture that differs from `config` (the differing fields are named).
    """
    path = _checkpoint_path(out_dir)
    arrays, meta = _read(path)
    try:
        cfg = dict(meta["config"])
        cfg["hidden_dims"] = tuple(cfg["hidden_dims"])
        saved = models.NetConfig(**cfg)
        optimizer = get_optimizer(meta["update_rule"])
        epoch, history, best = int(meta["epoch"]), meta["history"], float(meta["best_val_acc"])
        key_impl = str(meta["key_impl"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has invalid metadata ({exc})") from exc
    if config is not None and config != saved:
        names = [f.name for f in dataclasses.fields(models.NetConfig)]
        diff = [
            f"{k}: checkpoint {getattr(saved, k)!r}, requested {getattr(config, k)!r}"
            for k in names
            if getattr(saved, k) != getattr(config, k)
        ]
        raise CheckpointError(f"checkpoint {path} holds another architecture: {'; '.join(diff)}")
    with x64_scope(saved):
        p_tpl = jax.eval_shape(lambda: models.init_params(jax.random.key(0), saved))
        s_tpl = jax.eval_shape(lambda: models.init_state(saved))
        params = _restore("params", p_tpl, arrays, path)
        ts = TrainState(
            params=params,
            model_state=_restore("model_state", s_tpl, arrays, path),
            opt_state=_restore("opt_state", jax.eval_shape(optimizer.init, p_tpl), arrays, path),
            key=jax.random.wrap_key_data(jnp.asarray(arrays.pop("ts/key")), impl=key_impl),
            step=jnp.asarray(arrays.pop("ts/step")),
            diverged=jnp.asarray(arrays.pop("ts/diverged")),
        )
        best_params = _restore("best_params", p_tpl, arrays, path)
        best_state = _restore("best_model_state", s_tpl, arrays, path)
    if arrays:
        raise CheckpointError(f"checkpoint {path} holds unexpected arrays {sorted(arrays)}")
    meta["config"] = saved
    return Run(ts, epoch, history, best_params, best_state, best), meta


def export_params(path: os.PathLike | str, params: Any, model_state: Any = None) -> Path:
    """Write `params` (cs231n keys `W1, b1, gamma1, ...`) and optionally the batchnorm statistics
    (`running_mean1, running_var1, ...`) to an `.npz` for `np.load(path)`, atomically.

    Returns:
      The path written.
    """
    arrays = {k: np.asarray(v) for k, v in dict(params).items()}
    for k, v in dict(model_state or {}).items():
        if k in arrays:
            raise ValueError(f"model_state key {k!r} clashes with a parameter name")
        arrays[k] = np.asarray(v)
    path = Path(path).expanduser()
    _atomic_savez(path, arrays)
    return path

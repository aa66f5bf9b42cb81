"""Checkpoints of a training run, on top of the checked archives of `fc_jax.archive`.

Contract: `save_run(out_dir, run, meta)` writes `out_dir/checkpoint.npz` atomically and
`load_run(out_dir)` returns `(run, meta)` with every array bit-identical, in its saved dtype,
inside the exact tree structure `fc_jax.fit.fit` resumes from (the optimizer's NamedTuple state is
rebuilt from `get_optimizer(update_rule).init` as a template). Arrays: `params/W1`,
`model_state/running_mean1`, `opt_state/m/W1`, `ts/key` (the raw key data), `ts/step`,
`ts/diverged`, `best_params/...`, `best_model_state/...`; meta: `kind: "run"`, the `NetConfig`
fields, the update rule, the hyperparameter values, the caller's fit arguments (seed, batch size,
...), epoch, history and best validation accuracy. The expected names, shapes and dtypes follow
from the meta's architecture, so `fc_jax.archive.read_checkpoint` checks every header against them
before reading: every problem (missing file, truncated or corrupt archive, bad JSON, checksum
mismatch, wrong format version, another architecture than the one asked for) is one line of
`CheckpointError`. `flatten_tree` / `tree_spec` / `restore_tree` map pytrees to named arrays and
back; `export_params(path, params)` writes the params with their cs231n keys for `np.load`.
"""

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import models
from fc_jax.archive import (
    CHECKPOINT_NAME,
    FORMAT_VERSION,
    RESERVED,
    CheckpointError,
    Spec,
    checkpoint_path,
    read_checkpoint,
    write_checkpoint,
)
from fc_jax.files import atomic_savez
from fc_jax.fit import Run, x64_scope
from fc_jax.optim import get_optimizer
from fc_jax.train import TrainState

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "checkpoint_path",
    "write_checkpoint",
    "read_checkpoint",
    "flatten_tree",
    "tree_spec",
    "restore_tree",
    "config_from_meta",
    "save_run",
    "load_run",
    "export_params",
]

_RUN_RESERVED = ("kind", "config", "update_rule", "hparams", "key_impl", "epoch", "history")
_RUN_RESERVED += ("best_val_acc",)


def _key_name(entry) -> str:
    for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    raise TypeError(f"unsupported pytree path entry {entry!r}")


def _named_leaves(prefix: str, tree):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [("/".join([prefix, *map(_key_name, p)]), v) for p, v in leaves], treedef


def flatten_tree(prefix: str, tree) -> dict[str, np.ndarray]:
    """{'prefix/key/...': numpy leaf} for a pytree of arrays (dicts, NamedTuples, tuples)."""
    return {name: np.asarray(v) for name, v in _named_leaves(prefix, tree)[0]}


def tree_spec(prefix: str, template) -> Spec:
    """The `read_checkpoint` spec {name: (shape, dtype)} of a template tree (e.g. `eval_shape`)."""
    return {n: (tuple(t.shape), np.dtype(t.dtype)) for n, t in _named_leaves(prefix, template)[0]}


def restore_tree(prefix: str, template, arrays: dict[str, np.ndarray]):
    """Rebuild `template`'s tree from `arrays[prefix/...]` (already checked) as jax arrays."""
    names, treedef = _named_leaves(prefix, template)
    return jax.tree.unflatten(treedef, [jnp.asarray(arrays[n]) for n, _ in names])


def config_from_meta(fields: dict, path: Path, wanted: models.NetConfig | None = None):
    """`NetConfig(**fields)` (hidden_dims as a tuple); raise CheckpointError if it is not `wanted`."""
    saved = models.NetConfig(**{**fields, "hidden_dims": tuple(fields["hidden_dims"])})
    if wanted is not None and wanted != saved:
        diff = [
            f"{f.name}: checkpoint {getattr(saved, f.name)!r}, requested {getattr(wanted, f.name)!r}"
            for f in dataclasses.fields(models.NetConfig)
            if getattr(saved, f.name) != getattr(wanted, f.name)
        ]
        raise CheckpointError(f"checkpoint {path} holds another architecture: {'; '.join(diff)}")
    return saved


@functools.cache
def _run_templates(config: models.NetConfig, update_rule: str, key_impl: str):
    with x64_scope(config):
        p = jax.eval_shape(lambda: models.init_params(jax.random.key(0), config))
        s = jax.eval_shape(lambda: models.init_state(config))
        o = jax.eval_shape(get_optimizer(update_rule).init, p)
        k = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=key_impl)))
    return p, s, o, k


def save_run(out_dir: os.PathLike | str, run: Run, meta: dict) -> Path:
    """Write `run` to `out_dir/checkpoint.npz` (or a `.npz` path) atomically.

    Args:
      out_dir: the run's folder (created if needed), or the file.
      run: a `fc_jax.fit.Run` (as passed to `fit`'s `on_epoch_end`); must not be diverged.
      meta: a dict with "config" (a `NetConfig`), "update_rule" (str) and "hparams" (an `HParams`
        or a dict of its fields), plus any JSON-serializable fit arguments needed to resume (seed,
        batch_size, num_epochs, ...), stored as given.

    Returns:
      The path written.

    Raises:
      CheckpointError: meta lacks a required entry, uses a reserved name, is not JSON-serializable,
        or the run has diverged. Nothing on disk changes then.
      fc_jax.files.WriteError: the write failed; the previous checkpoint is untouched.
    """
    for k in ("config", "update_rule", "hparams"):
        if k not in meta:
            raise CheckpointError(f"meta must contain {k!r}; got keys {sorted(meta)}")
    config, hp = meta["config"], meta["hparams"]
    if not isinstance(config, models.NetConfig):
        raise CheckpointError(f"meta['config'] must be a NetConfig, got {type(config).__name__}")
    get_optimizer(meta["update_rule"])  # validates the name
    clash = sorted(set(meta) & {*_RUN_RESERVED, *RESERVED} - {"config", "update_rule", "hparams"})
    if clash:
        raise CheckpointError(f"meta uses reserved name(s) {clash}")
    if bool(np.asarray(run.ts.diverged)):
        raise CheckpointError("refusing to save a diverged run (its loss became non-finite)")
    hp = hp._asdict() if hasattr(hp, "_asdict") else dict(hp)
    ts = run.ts
    arrays = {
        **flatten_tree("params", ts.params),
        **flatten_tree("model_state", ts.model_state),
        **flatten_tree("opt_state", ts.opt_state),
        "ts/key": np.asarray(jax.random.key_data(ts.key)),
        "ts/step": np.asarray(ts.step),
        "ts/diverged": np.asarray(ts.diverged),
        **flatten_tree("best_params", run.best_params),
        **flatten_tree("best_model_state", run.best_model_state),
    }
    doc = {k: v for k, v in meta.items() if k not in ("config", "hparams")}
    doc.update(
        kind="run",
        config=dataclasses.asdict(config),
        hparams={k: float(np.asarray(v)) for k, v in hp.items()},
        key_impl=str(jax.random.key_impl(ts.key)),
        epoch=int(run.epoch),
        history=run.history,
        best_val_acc=float(run.best_val_acc),
    )
    return write_checkpoint(checkpoint_path(out_dir), arrays, doc)


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
        version, not a run checkpoint, or an architecture that differs from `config` (the
        differing fields are named).
    """
    path = checkpoint_path(out_dir)
    found = {}

    def expect(meta: dict) -> Spec:
        if meta.get("kind") != "run":
            raise CheckpointError(f"checkpoint {path} holds a {meta.get('kind')!r}, not a run")
        saved = config_from_meta(meta["config"], path, config)
        tpl = _run_templates(saved, str(meta["update_rule"]), str(meta["key_impl"]))
        int(meta["epoch"]), float(meta["best_val_acc"]), dict(meta["history"])  # types checked
        found.update(config=saved, tpl=tpl)
        p, s, o, k = tpl
        spec = {"ts/key": (k.shape, k.dtype), "ts/step": ((), np.int32), "ts/diverged": ((), bool)}
        for prefix, t in [("params", p), ("model_state", s), ("opt_state", o)]:
            spec.update(tree_spec(prefix, t))
        return {**spec, **tree_spec("best_params", p), **tree_spec("best_model_state", s)}

    arrays, meta = read_checkpoint(path, expect)
    saved, (p, s, o, _) = found["config"], found["tpl"]
    with x64_scope(saved):
        ts = TrainState(
            params=restore_tree("params", p, arrays),
            model_state=restore_tree("model_state", s, arrays),
            opt_state=restore_tree("opt_state", o, arrays),
            key=jax.random.wrap_key_data(jnp.asarray(arrays["ts/key"]), impl=meta["key_impl"]),
            step=jnp.asarray(arrays["ts/step"]),
            diverged=jnp.asarray(arrays["ts/diverged"]),
        )
        run = Run(
            ts,
            int(meta["epoch"]),
            meta["history"],
            restore_tree("best_params", p, arrays),
            restore_tree("best_model_state", s, arrays),
            float(meta["best_val_acc"]),
        )
    meta["config"] = saved
    return run, meta


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
    return atomic_savez(Path(path).expanduser(), arrays)

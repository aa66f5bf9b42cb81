"""Pytrees as named arrays and back, for the checked archives of `fc_jax.storage.archive`.

Contract: `flatten_tree(prefix, tree)` names every leaf `prefix/key/...` (dict keys, NamedTuple
fields, tuple indices); `tree_spec(prefix, template)` gives the `read_checkpoint` spec
{name: (shape, dtype)} of a template (e.g. from `jax.eval_shape`), so every header is checked
before any array is read; `restore_tree(prefix, template, arrays)` rebuilds the tree.
`config_from_meta` rebuilds a `NetConfig` from a file's meta and refuses another architecture by
name. Used by checkpoints (`fc_jax.storage.checkpoint`) and the model file
(`fc_jax.storage.model`); imports nothing from the run loop.
"""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fc_jax import models
from fc_jax.storage.archive import CheckpointError, Spec

__all__ = ["flatten_tree", "tree_spec", "restore_tree", "config_from_meta"]


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

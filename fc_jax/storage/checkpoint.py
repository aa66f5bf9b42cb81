"""Checkpoints of the run loop, on top of the checked archives of `fc_jax.storage.archive`.

Contract: ONE format for a training run and a sweep. `save_lanes(out_dir, lanes, meta)` writes the
K lanes of a `fc_jax.runs.lanes.Lanes` to `out_dir/checkpoint.npz` atomically and `load_lanes(out_dir)`
returns `(lanes, meta)` with every array bit-identical, ready for the run loop's `resume=`. A
training run is one lane: `save_run` / `load_run` are the K = 1 view (`fc_jax.runs.fit.Run`), through
the same code. Arrays, each with a leading lane axis: `params/W1`, `model_state/running_mean1`,
`opt_state/m/W1` (the optimizer's NamedTuple state is rebuilt from `get_optimizer(rule).init` as a
template), `ts/key` (raw key data), `ts/step`, `ts/diverged`, `best_params/...`,
`best_model_state/...`, `lanes/epoch`, `lanes/budget`, `lanes/best_val_acc`, `lanes/best_epoch`,
and with population-based training the lanes' current hyperparameters `lanes/hparams/<name>`;
meta: `kind: "lanes"`, `num_lanes`, the `NetConfig` fields, the update rule, the `Schedule` as one
record (`fc_jax.runs.schedule.schedule_record`: a run and a sweep alike), the key implementation,
each lane's history, timings, PBT's lineage, plus the caller's entries (settings, trials,
hyperparameters). Since format version 3 (`fc_jax.storage.archive.FORMAT_VERSION`) the schedule
is one record; an older checkpoint is refused in one line naming both versions. The expected
names, shapes and dtypes follow from the meta, so
`fc_jax.storage.archive.read_checkpoint` checks every header against them before reading: every problem
(missing file, truncated or corrupt archive, bad JSON, checksum mismatch over arrays and meta, wrong
format version, another architecture than the one asked for) is one line of `CheckpointError`.
`flatten_tree` / `tree_spec` / `restore_tree` map pytrees to named arrays and back;
`export_params(path, params)` writes the params with their cs231n keys for `np.load`.
"""

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fc_jax import models
from fc_jax.hparams import HParams
from fc_jax.optim import get_optimizer
from fc_jax.runs.fit import Run, lanes_of, run_of
from fc_jax.runs.lanes import Lanes
from fc_jax.runs.schedule import Schedule, schedule_from_record, schedule_record
from fc_jax.storage.archive import (
    RESERVED,
    CheckpointError,
    Spec,
    checkpoint_path,
    read_checkpoint,
    write_checkpoint,
)
from fc_jax.storage.files import atomic_savez
from fc_jax.storage.trees import config_from_meta, flatten_tree, restore_tree, tree_spec
from fc_jax.train import TrainState

__all__ = [
    "save_lanes",
    "load_lanes",
    "save_run",
    "load_run",
    "export_params",
]

_REQUIRED = ("config", "update_rule", "schedule")
_RUN_RESERVED = ("kind", "num_lanes", "config", "update_rule", "hparams", "key_impl", "history")
_RUN_RESERVED += ("compile_seconds", "run_seconds", "lane_hparams", "lineage", "schedule")


@functools.cache
def _run_templates(config: models.NetConfig, update_rule: str, key_impl: str):
    with models.x64_scope(config):
        p = jax.eval_shape(lambda: models.init_params(jax.random.key(0), config))
        s = jax.eval_shape(lambda: models.init_state(config))
        o = jax.eval_shape(get_optimizer(update_rule).init, p)
        k = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=key_impl)))
    return p, s, o, k


def _lane_spec(tpl, K: int, hparams_dtype: str | None = None) -> Spec:
    """The arrays of K stacked lanes, from one lane's templates (params, state, opt state, key),
    plus the lanes' own hyperparameters (`lanes/hparams/<name>`) when they have changed (PBT)."""
    p, s, o, k = tpl
    stack = lambda spec: {n: ((K, *shape), dt) for n, (shape, dt) in spec.items()}
    spec = {
        "ts/key": ((K, *k.shape), k.dtype),
        "ts/step": ((K,), np.int32),
        "ts/diverged": ((K,), bool),
        "lanes/epoch": ((K,), np.int64),
        "lanes/budget": ((K,), np.int64),
        "lanes/best_val_acc": ((K,), np.float64),
        "lanes/best_epoch": ((K,), np.int64),
    }
    for prefix, t in [("params", p), ("model_state", s), ("opt_state", o)]:
        spec.update(stack(tree_spec(prefix, t)))
    if hparams_dtype is not None:
        spec.update(
            {f"lanes/hparams/{f}": ((K,), np.dtype(hparams_dtype)) for f in HParams._fields}
        )
    return {**spec, **stack(tree_spec("best_params", p)), **stack(tree_spec("best_model_state", s))}


def save_lanes(out_dir: os.PathLike | str, lanes: Lanes, meta: dict) -> Path:
    """Write K lanes of the run loop to `out_dir/checkpoint.npz` (or a `.npz` path) atomically.

    The one checkpoint format of fc_jax: a training run is K = 1 (`save_run`), a sweep K lanes.

    Args:
      out_dir: the run's folder (created if needed), or the file.
      lanes: a `fc_jax.runs.lanes.Lanes` (as passed to `on_epoch_end`).
      meta: a dict with "config" (a `NetConfig`), "update_rule" (str) and "schedule" (the
        `Schedule` the lanes train on), plus any JSON-ready entries needed to resume
        (settings, trials, ...), stored as given; an "hparams" entry may be an `HParams`
        (stored as floats, or lists of floats).

    Returns:
      The path written.

    Raises:
      CheckpointError: meta lacks a required entry, uses a reserved name or is not JSON-ready.
        Nothing on disk changes then.
      fc_jax.storage.files.WriteError: the write failed; the previous checkpoint is untouched.
    """
    for k in _REQUIRED:
        if k not in meta:
            raise CheckpointError(f"meta must contain {k!r}; got keys {sorted(meta)}")
    config, schedule = meta["config"], meta["schedule"]
    if not isinstance(config, models.NetConfig):
        raise CheckpointError(f"meta['config'] must be a NetConfig, got {type(config).__name__}")
    if not isinstance(schedule, Schedule):
        raise CheckpointError(f"meta['schedule'] must be a Schedule, got {type(schedule).__name__}")
    get_optimizer(meta["update_rule"])  # validates the name
    clash = sorted(set(meta) & {*_RUN_RESERVED, *RESERVED} - {*_REQUIRED, "hparams"})
    if clash:
        raise CheckpointError(f"meta uses reserved name(s) {clash}")
    ts = lanes.ts
    arrays = {
        **flatten_tree("params", ts.params),
        **flatten_tree("model_state", ts.model_state),
        **flatten_tree("opt_state", ts.opt_state),
        "ts/key": np.asarray(ts.key),
        "ts/step": np.asarray(ts.step, np.int32),
        "ts/diverged": np.asarray(ts.diverged, bool),
        **flatten_tree("best_params", lanes.best_params),
        **flatten_tree("best_model_state", lanes.best_model_state),
        "lanes/epoch": np.asarray(lanes.epoch, np.int64),
        "lanes/budget": np.asarray(lanes.budget, np.int64),
        "lanes/best_val_acc": np.asarray(lanes.best_val_acc, np.float64),
        "lanes/best_epoch": np.asarray(lanes.best_epoch, np.int64),
    }
    lane_hp = None
    if lanes.hparams is not None:  # PBT: each lane's current values, bit for bit
        lane_hp = str(np.asarray(lanes.hparams.learning_rate).dtype)
        arrays.update(
            {
                f"lanes/hparams/{f}": np.asarray(v, lane_hp)
                for f, v in lanes.hparams._asdict().items()
            }
        )
    doc = {k: v for k, v in meta.items() if k not in ("config", "schedule")}
    if "hparams" in doc:
        hp = doc["hparams"]
        hp = hp._asdict() if hasattr(hp, "_asdict") else dict(hp)
        doc["hparams"] = {k: np.asarray(v, np.float64).tolist() for k, v in hp.items()}
    doc.update(
        kind="lanes",
        num_lanes=lanes.num_lanes,
        config=dataclasses.asdict(config),
        schedule=schedule_record(schedule),
        key_impl=str(jax.random.key_impl(jax.random.key(0))),
        history=lanes.history,
        compile_seconds=float(lanes.compile_seconds),
        run_seconds=float(lanes.run_seconds),
        lane_hparams=lane_hp,
        lineage=list(lanes.lineage),
    )
    return write_checkpoint(checkpoint_path(out_dir), arrays, doc)


def load_lanes(
    out_dir: os.PathLike | str, *, config: models.NetConfig | None = None
) -> tuple[Lanes, dict]:
    """Read `out_dir/checkpoint.npz` (or a `.npz` path) into `Lanes` for the run loop's `resume=`.

    Returns:
      (lanes, meta): numpy `Lanes` (keys as raw key data); meta is the saved JSON dict with
      "config" turned back into a `NetConfig` and "schedule" into a `Schedule`, plus the
      caller's saved entries.

    Raises:
      CheckpointError: missing, truncated or corrupt file, checksum mismatch, another format
        version, or an architecture that differs from `config` (the differing fields named).
    """
    path = checkpoint_path(out_dir)
    found = {}

    def expect(meta: dict) -> Spec:
        if meta.get("kind") != "lanes":
            raise CheckpointError(f"checkpoint {path} holds a {meta.get('kind')!r}, not a run")
        saved = config_from_meta(meta["config"], path, config)
        K = int(meta["num_lanes"])
        if K < 1 or not isinstance(meta["history"], list) or len(meta["history"]) != K:
            raise ValueError(f"num_lanes {K} does not match its {len(meta['history'])} histories")
        float(meta["compile_seconds"]), float(meta["run_seconds"])  # types checked
        found["schedule"] = schedule_from_record(meta["schedule"])
        tpl = _run_templates(saved, str(meta["update_rule"]), str(meta["key_impl"]))
        found.update(config=saved, tpl=tpl)
        return _lane_spec(tpl, K, meta.get("lane_hparams"))

    arrays, meta = read_checkpoint(path, expect)
    saved, (p, s, o, _) = found["config"], found["tpl"]
    np_tree = lambda prefix, t: jax.tree.map(np.asarray, restore_tree(prefix, t, arrays))
    with models.x64_scope(saved):
        ts = TrainState(
            params=np_tree("params", p),
            model_state=np_tree("model_state", s),
            opt_state=np_tree("opt_state", o),
            key=arrays["ts/key"],
            step=arrays["ts/step"],
            diverged=arrays["ts/diverged"],
        )
        lanes = Lanes(
            ts=ts,
            epoch=arrays["lanes/epoch"],
            budget=arrays["lanes/budget"],
            history=meta["history"],
            best_params=np_tree("best_params", p),
            best_model_state=np_tree("best_model_state", s),
            best_val_acc=arrays["lanes/best_val_acc"],
            best_epoch=arrays["lanes/best_epoch"],
            compile_seconds=float(meta["compile_seconds"]),
            run_seconds=float(meta["run_seconds"]),
        )
        if meta.get("lane_hparams"):
            hp = HParams(*(arrays[f"lanes/hparams/{f}"] for f in HParams._fields))
            lanes = lanes._replace(hparams=hp, lineage=tuple(meta.get("lineage", ())))
    meta["config"], meta["schedule"] = saved, found["schedule"]
    return lanes, meta


def save_run(out_dir: os.PathLike | str, run: Run, meta: dict) -> Path:
    """Write one training run (`fc_jax.runs.fit.Run`) as a one-lane checkpoint (`save_lanes`).

    Raises:
      CheckpointError: as `save_lanes`, or the run has diverged (nothing on disk changes).
    """
    if bool(np.asarray(run.ts.diverged)):
        raise CheckpointError(
            "refusing to save a diverged run (its loss or gradient became non-finite)"
        )
    for k in (*_REQUIRED, "hparams"):
        if k not in meta:
            raise CheckpointError(f"meta must contain {k!r}; got keys {sorted(meta)}")
    return save_lanes(out_dir, lanes_of(run), meta)


def load_run(
    out_dir: os.PathLike | str, *, config: models.NetConfig | None = None
) -> tuple[Run, dict]:
    """Read a one-lane checkpoint into a `Run` ready for `fit(resume=...)` (see `load_lanes`).

    meta["hparams"] is a dict of floats. A sweep's checkpoint (K > 1) is refused.
    """
    lanes, meta = load_lanes(out_dir, config=config)
    if lanes.num_lanes != 1:
        raise CheckpointError(
            f"checkpoint {checkpoint_path(out_dir)} holds a sweep of {lanes.num_lanes} "
            "configurations, not one run: use fc-jax sweep --resume"
        )
    if "hparams" in meta:
        meta["hparams"] = {k: float(np.ravel(v)[0]) for k, v in meta["hparams"].items()}
    with models.x64_scope(meta["config"]):
        return run_of(lanes), meta


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

"""fc_jax.storage.checkpoint: exact round trips, atomic writes, clear errors that change nothing on disk."""

import functools
import json
import resource
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax import models, train
from fc_jax.data.datasets import synthetic
from fc_jax.hparams import make_hparams
from fc_jax.optim import AdamState, get_optimizer
from fc_jax.runs import fit
from fc_jax.runs.schedule import Schedule
from fc_jax.storage import archive, checkpoint
from fc_jax.storage.archive import CheckpointError
from fc_jax.storage.checkpoint import export_params, load_run, save_run


def _config(dtype="float32", **kw):
    kw = {"normalization": "batchnorm", "dropout": True, **kw}
    return models.NetConfig((6, 5), input_dim=4, num_classes=3, dtype=dtype, **kw)


def _data(dtype):
    X, y = synthetic(96, 4, 3, seed=0, dtype=dtype)
    return {"X_train": X[:64], "y_train": y[:64], "X_val": X[64:], "y_val": y[64:]}


def _train(config, epochs, resume=None):
    """A short real run: adam state, batchnorm statistics, a dropout key."""
    hp = make_hparams("adam", jnp.dtype(config.dtype), learning_rate=1e-2, keep_prob=0.8)
    data = _data(config.dtype)
    schedule = SCHEDULE._replace(num_epochs=epochs)
    return fit.fit(config, data, hparams=hp, schedule=schedule, resume=resume), hp


_fit = functools.cache(_train)  # runs are immutable, so tests can share them


SCHEDULE = Schedule(batch_size=16, seed=3, num_train_samples=None)


def _meta(config, hp, rule="adam"):
    return {
        "config": config,
        "update_rule": rule,
        "hparams": hp,
        "schedule": SCHEDULE,
        "seed": 3,
        "batch_size": 16,
    }


def _leaves_with_paths(tree):
    return [(jax.tree_util.keystr(p), v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _assert_same_bits(a, b):
    """Same tree structure (NamedTuple types included), dtypes, shapes and bytes."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (pa, va), (pb, vb) in zip(_leaves_with_paths(a), _leaves_with_paths(b), strict=True):
        assert pa == pb
        va, vb = np.asarray(va), np.asarray(vb)
        assert va.dtype == vb.dtype and va.shape == vb.shape, pa
        assert va.tobytes() == vb.tobytes(), pa


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    if request.param == "float64":
        request.getfixturevalue("x64")
    return request.param


@pytest.mark.slow
def test_round_trip_is_bit_exact(tmp_path, dtype):
    config = _config(dtype)
    run, hp = _fit(config, 1)
    path = save_run(tmp_path, run, _meta(config, hp))
    assert path == tmp_path / "checkpoint.npz"
    loaded, meta = load_run(tmp_path, config=config)

    ts, ts2 = run.ts, loaded.ts
    assert isinstance(ts2.opt_state, AdamState) and int(ts2.opt_state.t) == int(ts.opt_state.t) > 0
    _assert_same_bits(ts._replace(key=None), ts2._replace(key=None))
    assert np.array_equal(jax.random.key_data(ts.key), jax.random.key_data(ts2.key))
    assert jax.random.key_impl(ts.key) == jax.random.key_impl(ts2.key)
    _assert_same_bits(run.best_params, loaded.best_params)
    _assert_same_bits(run.best_model_state, loaded.best_model_state)
    assert ts2.params["W1"].dtype == jnp.dtype(dtype)
    assert (loaded.epoch, loaded.best_val_acc) == (run.epoch, run.best_val_acc)
    assert loaded.history == json.loads(json.dumps(run.history))
    assert meta["config"] == config and meta["update_rule"] == "adam"
    assert (meta["seed"], meta["batch_size"]) == (3, 16) and meta["schedule"] == SCHEDULE
    assert meta["hparams"]["learning_rate"] == float(hp.learning_rate)


@pytest.mark.slow
def test_resuming_from_a_loaded_checkpoint_equals_an_uninterrupted_fit(tmp_path):
    config = _config()
    straight, _ = _fit(config, 2)
    first, hp = _fit(config, 1)
    save_run(tmp_path, first, _meta(config, hp))
    resumed, _ = _train(config, 2, resume=load_run(tmp_path)[0])
    _assert_same_bits(straight.ts._replace(key=None), resumed.ts._replace(key=None))
    _assert_same_bits(straight.best_params, resumed.best_params)


@pytest.mark.parametrize("rule", ["sgd", "sgd_momentum", "rmsprop", "adam"])
@pytest.mark.slow
def test_every_optimizer_state_round_trips(tmp_path, rule):
    config = _config(normalization=None, dropout=False)
    opt = get_optimizer(rule)
    ts = train.init_train_state(jax.random.key(5), config, opt, 0.1)
    # Non-zero state: one update with random gradients.
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), ts.params)
    params, opt_state = opt.update(grads, ts.opt_state, ts.params, make_hparams(rule))
    ts = ts._replace(params=params, opt_state=opt_state)
    run = fit.Run(ts, 1, {"loss": [1.0]}, ts.params, ts.model_state, 0.25)
    save_run(tmp_path, run, _meta(config, make_hparams(rule), rule))
    loaded, _ = load_run(tmp_path)
    assert type(loaded.ts.opt_state) is type(opt_state)
    _assert_same_bits(ts._replace(key=None), loaded.ts._replace(key=None))


@pytest.mark.slow
def test_file_is_a_plain_npz_without_pickles(tmp_path):
    config = _config()
    run, hp = _fit(config, 1)
    save_run(tmp_path, run, _meta(config, hp))
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert all(a.dtype != object for a in arrays.values())
    assert {"params/W1", "model_state/running_mean1", "opt_state/t", "opt_state/m/W1"} <= set(
        arrays
    )
    assert {"ts/key", "ts/step", "ts/diverged", "best_params/gamma2", "meta"} <= set(arrays)
    np.testing.assert_array_equal(
        arrays["params/W1"][0], np.asarray(run.ts.params["W1"])
    )  # lane axis
    meta = json.loads(arrays["meta"].tobytes().decode())
    assert meta["format_version"] == archive.FORMAT_VERSION == 3
    assert meta["config"]["hidden_dims"] == [6, 5] and len(meta["sha256"]) == 64
    assert meta["schedule"] == {**SCHEDULE._asdict(), "num_train_samples": None}


def test_atomic_write_leaves_only_the_checkpoint(tmp_path):
    config = _config()
    run, hp = _fit(config, 1)
    save_run(tmp_path, run, _meta(config, hp))
    save_run(tmp_path, run._replace(epoch=2), _meta(config, hp))  # overwrite
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]
    assert load_run(tmp_path)[0].epoch == 2


def test_a_failed_save_changes_nothing(tmp_path, monkeypatch):
    config = _config()
    run, hp = _fit(config, 1)
    save_run(tmp_path, run, _meta(config, hp))
    before = _snapshot(tmp_path)

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_run(tmp_path, run._replace(epoch=2), _meta(config, hp))
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="JSON"):
        save_run(tmp_path, run, {**_meta(config, hp), "extra": object()})
    no_schedule = {k: v for k, v in _meta(config, hp).items() if k != "schedule"}
    with pytest.raises(CheckpointError, match="meta must contain 'schedule'"):
        save_run(tmp_path, run, no_schedule)
    with pytest.raises(CheckpointError, match="must be a Schedule"):
        save_run(tmp_path, run, {**_meta(config, hp), "schedule": SCHEDULE._asdict()})
    with pytest.raises(CheckpointError, match="diverged"):
        diverged = run._replace(ts=run.ts._replace(diverged=jnp.ones((), bool)))
        save_run(tmp_path, diverged, _meta(config, hp))
    assert _snapshot(tmp_path) == before
    assert load_run(tmp_path)[0].epoch == 1


@pytest.fixture
def saved(tmp_path):
    config = _config()
    run, hp = _fit(config, 1)
    save_run(tmp_path, run, _meta(config, hp))
    return tmp_path, config


def _expect_error(folder, match, **kw):
    before = _snapshot(folder)
    with pytest.raises(CheckpointError, match=match):
        load_run(folder, **kw)
    assert _snapshot(folder) == before


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*checkpoint.npz"):
        load_run(tmp_path)


def test_truncated_file(saved):
    folder, _ = saved
    path = folder / "checkpoint.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _expect_error(folder, "truncated or corrupt")


def test_flipped_bytes(saved):
    folder, _ = saved
    path = folder / "checkpoint.npz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    _expect_error(folder, "corrupt")


def _rewrite(path, change_array=None, change_meta=None):
    """Rebuild a valid npz with one array or the meta altered (so only our own checks can fail)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    if change_array:
        arrays[change_array] = arrays[change_array] + 1
    if change_meta:
        change_meta(meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    assert zipfile.is_zipfile(path)


def test_checksum_mismatch(saved):
    folder, _ = saved
    _rewrite(folder / "checkpoint.npz", change_array="params/W2")
    _expect_error(folder, "sha256 checksum does not match")


def test_bad_json(saved):
    folder, _ = saved
    path = folder / "checkpoint.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta"] = np.frombuffer(b'{"format_version": 1, "sha', np.uint8)
    np.savez(path, **arrays)
    _expect_error(folder, "truncated or corrupt")


def test_wrong_format_version(saved):
    folder, _ = saved
    _rewrite(folder / "checkpoint.npz", change_meta=lambda m: m.update(format_version=99))
    _expect_error(folder, "format version 99")


def test_a_version_2_checkpoint_is_refused_naming_both_versions(saved, monkeypatch):
    """Version 2 stored a run's `fit` arguments (a sweep's options) where 3 stores the schedule."""
    folder, _ = saved
    path = folder / "checkpoint.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(z["meta"].tobytes().decode())
    old = {k: v for k, v in meta.items() if k not in ("format_version", "sha256", "schedule")}
    monkeypatch.setattr(archive, "FORMAT_VERSION", 2)
    archive.write_checkpoint(path, arrays, {**old, "fit": {"batch_size": 16}})
    monkeypatch.undo()
    _expect_error(
        folder, r"^checkpoint .*checkpoint.npz has format version 2; this fc_jax reads version 3$"
    )


def test_different_architecture_names_the_fields(saved):
    folder, config = saved
    other = models.NetConfig((6, 7), input_dim=4, num_classes=3, normalization="layernorm")
    before = _snapshot(folder)
    with pytest.raises(CheckpointError) as err:
        load_run(folder, config=other)
    msg = str(err.value)
    assert "hidden_dims: checkpoint (6, 5), requested (6, 7)" in msg
    assert "normalization: checkpoint 'batchnorm', requested 'layernorm'" in msg
    assert "dropout" in msg and "input_dim" not in msg
    assert _snapshot(folder) == before
    assert load_run(folder, config=config)[0].epoch == 1


def test_meta_config_inconsistent_with_arrays(saved):
    folder, _ = saved
    _rewrite(
        folder / "checkpoint.npz", change_meta=lambda m: m["config"].update(hidden_dims=[6, 9])
    )
    # refused at the npy headers, before any array is read (the checksum would refuse it too)
    _expect_error(
        folder,
        r"array 'best_model_state/running_mean2' is float32\[1, 5\], expected float32\[1, 9\]",
    )


def test_export_params(tmp_path):
    config = _config()
    run, _ = _fit(config, 1)
    path = export_params(tmp_path / "best.npz", run.best_params, run.best_model_state)
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == set(run.best_params) | set(run.best_model_state)
        for k, v in {**run.best_params, **run.best_model_state}.items():
            assert z[k].tobytes() == np.asarray(v).tobytes() and z[k].dtype == v.dtype
    assert [p.name for p in tmp_path.iterdir()] == ["best.npz"]


# ---------------------------------------------------------------- fuzzing the zip and npy headers
def _structure_offsets(raw: bytes) -> list[int]:
    """Every byte offset of each local header, central directory entry, npy header, and the EOCD."""
    eocd = raw.rindex(b"PK\x05\x06")
    (count,) = struct.unpack_from("<H", raw, eocd + 10)
    (cd_offset,) = struct.unpack_from("<I", raw, eocd + 16)
    offsets, pos = list(range(eocd, len(raw))), cd_offset
    for _ in range(count):
        assert raw[pos : pos + 4] == b"PK\x01\x02"
        n, m, k = struct.unpack_from("<HHH", raw, pos + 28)
        (local,) = struct.unpack_from("<I", raw, pos + 42)
        offsets += range(pos, pos + 46 + n + m + k)
        pos += 46 + n + m + k
        assert raw[local : local + 4] == b"PK\x03\x04"
        ln, lm = struct.unpack_from("<HH", raw, local + 26)
        data = local + 30 + ln + lm
        offsets += range(local, data)
        assert raw[data : data + 8] == b"\x93NUMPY\x01\x00"
        offsets += range(data, data + 10 + struct.unpack_from("<H", raw, data + 8)[0])
    return sorted(set(offsets))


@pytest.mark.slow
def test_fuzz_every_header_byte(tmp_path):
    """Flip each byte of every zip and npy header: a one-line CheckpointError, or (a harmless byte,
    e.g. a timestamp) the exact same arrays; never another exception, never a big allocation."""
    config = models.NetConfig((3,), input_dim=4, num_classes=2)
    ts = train.init_train_state(jax.random.key(1), config, get_optimizer("sgd"), 0.1)
    run = fit.Run(ts, 1, {"loss": [0.5]}, ts.params, ts.model_state, 0.5)
    path = save_run(tmp_path, run, _meta(config, make_hparams("sgd"), "sgd"))
    raw = path.read_bytes()
    good = _leaves_with_paths(
        (run.ts._replace(key=jax.random.key_data(run.ts.key)), run.best_params)
    )
    offsets = _structure_offsets(raw)
    assert len(offsets) > 1000
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused = harmless = 0
    for i in offsets:
        for flip in (0xFF, 0x01, 0x20):
            bad = bytearray(raw)
            bad[i] ^= flip
            path.write_bytes(bad)
            try:
                loaded, _ = load_run(path)
            except CheckpointError as exc:
                msg = str(exc)
                assert "\n" not in msg and str(path) in msg, (i, flip, msg)
                assert "MemoryError" not in msg, (i, flip, msg)
                refused += 1
                continue
            harmless += 1
            got = (loaded.ts._replace(key=jax.random.key_data(loaded.ts.key)), loaded.best_params)
            for (pa, a), (pb, b) in zip(good, _leaves_with_paths(got), strict=True):
                assert pa == pb and np.asarray(a).tobytes() == np.asarray(b).tobytes(), (i, flip)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grown_mib < 200, grown_mib
    assert refused > 0.5 * (refused + harmless), (refused, harmless)
    print(f"{len(offsets)} offsets x 3 flips: {refused} refused, {harmless} harmless")

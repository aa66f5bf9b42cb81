"""fc_jax.storage.archive: the generic checked archive. Round trips, a sha256 that covers the meta, and
every header checked against `expect` before any array is read or allocated."""

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

from fc_jax.storage import archive
from fc_jax.storage.archive import CheckpointError, read_checkpoint, write_checkpoint

ARRAYS = {
    "params/W1": np.arange(12, dtype=np.float32).reshape(3, 4),
    "ts/step": np.asarray(7, np.int32),  # 0-d stays 0-d
    "ts/diverged": np.asarray(False),
    "ts/key": np.asarray([1, 2], np.uint32),
    "f64/fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),  # stored C order
}
META = {"config": {"hidden_dims": [3]}, "hparams": {"learning_rate": 0.01}, "history": [1.5]}


def _spec(arrays):
    return lambda meta: {k: (a.shape, a.dtype) for k, a in arrays.items()}


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _rezip(path, members: dict[str, bytes]) -> None:
    """A valid zip with the given members (stored), so only our own checks can refuse it."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _npy(a) -> bytes:
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


def _error(path, expect=None, match=None) -> str:
    with pytest.raises(CheckpointError, match=match) as err:
        read_checkpoint(path, expect or _spec(ARRAYS))
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_round_trip_folder_or_file(tmp_path):
    path = write_checkpoint(tmp_path, ARRAYS, META)
    assert path == tmp_path / "checkpoint.npz" and [p.name for p in tmp_path.iterdir()] == [
        path.name
    ]
    seen = []
    for where in (tmp_path, path):
        arrays, meta = read_checkpoint(where, lambda m: seen.append(m) or _spec(ARRAYS)(m))
        assert meta == META and seen[-1] == META  # format_version and sha256 are the layer's own
        assert arrays.keys() == ARRAYS.keys()
        for k, a in ARRAYS.items():
            assert arrays[k].dtype == a.dtype and arrays[k].shape == a.shape, k
            assert arrays[k].tobytes() == a.tobytes(order="C") and arrays[k].flags.writeable
    other = write_checkpoint(tmp_path / "b.npz", {}, {})
    assert read_checkpoint(other, lambda m: {}) == ({}, {})


def test_write_refusals_change_nothing(tmp_path):
    for arrays, meta, phrase in [
        ({"meta": np.zeros(1)}, {}, "reserved name"),
        ({"x": np.array([object()])}, {}, "object dtype"),
        ({}, {"sha256": "x"}, r"reserved name\(s\) \['sha256'\]"),
        ({}, {"format_version": 1}, "reserved name"),
        ({}, {"lr": object()}, "not JSON-serializable"),
    ]:
        with pytest.raises(CheckpointError, match=phrase):
            write_checkpoint(tmp_path, arrays, meta)
    assert list(tmp_path.iterdir()) == []


def test_an_edited_meta_is_refused(tmp_path):
    """The learning rate changed in the JSON, the arrays untouched: the checksum covers both."""
    path = write_checkpoint(tmp_path, ARRAYS, META)
    members = _members(path)
    doc = json.loads(np.load(io.BytesIO(members["meta.npy"])).tobytes())
    doc["hparams"]["learning_rate"] = 0.1
    members["meta.npy"] = _npy(np.frombuffer(json.dumps(doc).encode(), np.uint8))
    _rezip(path, members)
    _error(path, match="^corrupt checkpoint .*: its sha256 checksum does not match its contents$")


def test_an_edited_array_is_refused(tmp_path):
    path = write_checkpoint(tmp_path, ARRAYS, META)
    members = _members(path)
    members["params/W1.npy"] = _npy(ARRAYS["params/W1"] + 1)
    _rezip(path, members)
    _error(path, match="sha256 checksum does not match")


def test_headers_are_checked_before_any_array_is_read(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path, ARRAYS, META)
    read = []  # members whose data past the npy header was read
    real_open = zipfile.ZipFile.open

    def spy(zf, info, *a, **kw):
        f = real_open(zf, info, *a, **kw)
        real_read = f.read
        name = getattr(info, "filename", info)

        def read_(n=-1):
            out = real_read(n)
            if (n < 0 or n > 8192) and name not in read:
                read.append(name)
            return out

        f.read = read_
        return f

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    spec = {**_spec(ARRAYS)(None), "ts/step": ((), np.dtype(np.int64))}  # the last in name order
    msg = _error(path, lambda m: spec)
    assert msg.endswith("array 'ts/step' is int32[], expected int64[]")
    assert read == ["meta.npy"]  # only the meta was read; no array data before the headers pass


@pytest.mark.parametrize(
    "change, phrase",
    [
        (
            lambda s: s.pop("ts/key"),
            r"it lacks arrays \[\] and holds unexpected arrays \['ts/key'\]",
        ),
        (lambda s: s.update(extra=((1,), np.dtype("f4"))), r"lacks arrays \['extra'\]"),
        (
            lambda s: s.update({"params/W1": ((4, 3), np.dtype("f4"))}),
            r"is float32\[3, 4\], expected float32\[4, 3\]",
        ),
        (
            lambda s: s.update({"ts/key": ((2,), np.dtype(">u4"))}),
            r"'ts/key' is uint32\[2\], expected >u4\[2\]",
        ),
    ],
)
def test_names_shapes_and_dtypes_must_match_exactly(tmp_path, change, phrase):
    path = write_checkpoint(tmp_path, ARRAYS, META)
    spec = _spec(ARRAYS)(None)
    change(spec)
    _error(path, lambda m: spec, match="^corrupt checkpoint .*" + phrase)


def test_a_header_claiming_51_terabytes_is_refused_without_allocating(tmp_path):
    path = write_checkpoint(tmp_path, {"x": np.zeros(2)}, {})
    members = _members(path)
    huge = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        huge, {"descr": "<f8", "fortran_order": False, "shape": (6_400_000_000_000,)}
    )
    members["x.npy"] = huge.getvalue() + b"\0" * 16
    _rezip(path, members)
    tracemalloc.start()
    try:
        msg = _error(path, lambda m: {"x": ((2,), np.float64)})
        assert msg.endswith("array 'x' is float64[6400000000000], expected float64[2]")
        # Even if the caller expects that shape, the zip member's size gives it away.
        msg = _error(path, lambda m: {"x": ((6_400_000_000_000,), np.float64)})
        assert msg.endswith("array 'x' holds 16 data bytes, not (6400000000000,)")
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_compressed_members_and_garbage_are_refused(tmp_path):
    path = tmp_path / "checkpoint.npz"
    np.savez_compressed(path, x=np.zeros(2), meta=np.zeros(3, np.uint8))
    _error(path, match="member 'x.npy' is compressed or encrypted")
    path.write_bytes(b"not a zip at all")
    _error(path, match=r"the file is truncated or corrupt \(BadZipFile: File is not a zip file\)$")
    with pytest.raises(CheckpointError, match="^no checkpoint at .*nowhere.npz$"):
        read_checkpoint(tmp_path / "nowhere.npz", _spec(ARRAYS))


def test_expect_errors(tmp_path):
    path = write_checkpoint(tmp_path, ARRAYS, META)
    _error(path, lambda m: m["missing"], match=r"its meta is invalid \(KeyError: 'missing'\)$")
    with pytest.raises(CheckpointError, match="^mine$"):  # a CheckpointError passes unchanged

        def mine(meta):
            raise CheckpointError("mine")

        read_checkpoint(path, mine)


def test_format_version(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path, ARRAYS, META)
    monkeypatch.setattr(archive, "FORMAT_VERSION", 4)
    _error(path, match=r"^checkpoint .* has format version 3; this fc_jax reads version 4$")
    with pytest.raises(CheckpointError, match=r"has format version 3; .* reads version 1 or 2$"):
        read_checkpoint(path, lambda meta: {}, versions=(1, 2))

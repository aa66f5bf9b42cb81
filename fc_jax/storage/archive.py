"""Checked `.npz` archives: written atomically, read only after every header checks out.

Contract: `write_checkpoint(path, arrays, meta)` writes a plain `np.savez` archive (one C-order
array per name, plus `meta`, a uint8 array of canonical UTF-8 JSON holding the caller's meta,
`format_version` and a `sha256` over every array's name, dtype, shape and bytes AND the canonical
meta text, so an edited learning rate is refused like a flipped weight) through
`fc_jax.storage.files.atomic_savez`: a crash or a failed save never leaves a half-written or modified file.
`read_checkpoint(path, expect)` reads and validates the meta, calls `expect(meta) -> {name: (shape,
dtype)}`, and checks the zip directory and every npy header against it (exactly those names,
stored uncompressed, exact shape and dtype, C order, byte size equal to the zip member's) BEFORE
reading any array, so a header that claims a 51 TB array is refused without allocating; then it
reads the arrays and checks the sha256. Every fault raises `CheckpointError` (a ValueError) with
one line: `no checkpoint at FILE`, `corrupt checkpoint FILE: <reason>` (whatever the parser raised:
zipfile, zlib, struct, tokenize, Unicode, Overflow, Memory, ...), or `checkpoint FILE has format
version N; this fc_jax reads version M` (M: `FORMAT_VERSION`, or the versions the caller reads).
A path may be a folder (then `checkpoint.npz` in it) or the `.npz` file itself. This layer knows
nothing of runs or models (see `fc_jax.storage.checkpoint`, `fc_jax.storage.model`); numpy only,
never jax.
"""

import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fc_jax.storage.files import atomic_savez

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "Spec",
    "checkpoint_path",
    "read_checkpoint",
    "write_checkpoint",
]

# 2: the sha256 covers the meta too; the npy headers are checked before reading. 3: a run
# checkpoint stores its schedule as one record (a model file is the same in 2 and 3)
FORMAT_VERSION = 3
CHECKPOINT_NAME = "checkpoint.npz"
RESERVED = ("format_version", "sha256")  # meta entries this layer writes
Spec = dict[str, tuple[tuple[int, ...], np.dtype]]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, of another format version or of another architecture."""


class _Corrupt(Exception):
    """Internal: a specific reason, reported as `corrupt checkpoint FILE: <reason>`."""


def checkpoint_path(path: os.PathLike | str, name: str = CHECKPOINT_NAME) -> Path:
    """`path` itself if it ends in `.npz`, else `path/name`."""
    p = Path(path).expanduser()
    return p if p.suffix == ".npz" else p / name


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _digest(arrays: dict[str, np.ndarray], meta_text: bytes) -> str:
    """sha256 over every array's name, dtype, shape and bytes, in name order, then the meta text."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes(order="C"))
    h.update(b"meta|" + meta_text)
    return h.hexdigest()


def write_checkpoint(path: os.PathLike | str, arrays: dict[str, Any], meta: dict) -> Path:
    """Write `arrays` and the JSON-ready `meta` to `path` (a folder or a `.npz`) atomically.

    Returns:
      The file written.

    Raises:
      CheckpointError: a name is "meta" or empty, an array holds Python objects, meta uses
        "format_version" or "sha256", or meta is not JSON-serializable. Nothing on disk changes.
      fc_jax.storage.files.WriteError: the file system refused the write; the old file is untouched.
    """
    arrays = {str(k): np.asarray(v, order="C") for k, v in arrays.items()}  # 0-d stays 0-d
    bad = [k for k, a in arrays.items() if k in ("", "meta") or a.dtype.hasobject]
    if bad:
        raise CheckpointError(f"cannot checkpoint arrays {bad}: reserved name or object dtype")
    if clash := sorted(set(meta) & set(RESERVED)):
        raise CheckpointError(f"meta uses reserved name(s) {clash}")
    try:
        doc = {**meta, "format_version": FORMAT_VERSION}
        doc["sha256"] = _digest(arrays, _canonical(doc))
        text = _canonical(doc)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"meta is not JSON-serializable: {exc}") from exc
    path = checkpoint_path(path)
    return atomic_savez(path, {**arrays, "meta": np.frombuffer(text, np.uint8)})


def _directory(zf: zipfile.ZipFile, size: int) -> dict[str, zipfile.ZipInfo]:
    infos, out = zf.infolist(), {}
    for info in infos:
        name = info.filename
        if not name.endswith(".npy") or name[:-4] in out:
            raise _Corrupt(f"unexpected or repeated member {name!r}")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise _Corrupt(f"member {name!r} is compressed or encrypted; fc_jax stores it plain")
        if info.file_size != info.compress_size or info.header_offset + info.file_size > size:
            raise _Corrupt(f"member {name!r} claims {info.file_size} bytes the file does not hold")
        out[name[:-4]] = info
    return out


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, shape, dtype: np.dtype) -> int:
    """Check one member's npy header against (shape, dtype); return the header's length.

    `shape` (None,) accepts any 1-D length. The member size must equal header + data exactly.
    """
    name = info.filename[:-4]
    with zf.open(info) as f:
        head = f.read(12)
        n_len = 2 if head[6:7] == b"\x01" else 4
        total = 8 + n_len + int.from_bytes(head[8 : 8 + n_len], "little")
        if head[:6] != b"\x93NUMPY" or head[6] not in (1, 2) or total > 8192:
            raise _Corrupt(f"array {name!r} has no valid npy header")
        head += f.read(total - len(head))
    bio = io.BytesIO(head)
    read = (
        np.lib.format.read_array_header_1_0 if head[6] == 1 else np.lib.format.read_array_header_2_0
    )
    np.lib.format.read_magic(bio)
    got_shape, fortran, got_dtype = read(bio)
    if bio.tell() != total or len(head) != total:
        raise _Corrupt(f"array {name!r} has a truncated npy header")
    want = tuple(got_shape) if shape == (None,) and len(got_shape) == 1 else tuple(shape)
    if got_dtype != dtype or tuple(got_shape) != want or fortran:
        raise _Corrupt(
            f"array {name!r} is {got_dtype}{list(got_shape)}{' (Fortran order)' if fortran else ''}"
            f", expected {dtype}{list(want)}"
        )
    if total + got_dtype.itemsize * math.prod(got_shape) != info.file_size:
        raise _Corrupt(f"array {name!r} holds {info.file_size - total} data bytes, not {want}")
    return total


def _array(zf: zipfile.ZipFile, info: zipfile.ZipInfo, shape, dtype: np.dtype) -> np.ndarray:
    total = _header(zf, info, shape, dtype)
    with zf.open(info) as f:
        f.read(total)
        buf = f.read()  # bounded: the member size was checked against the file's
    count = len(buf) // dtype.itemsize
    return np.frombuffer(buf, dtype).reshape(shape if shape != (None,) else (count,)).copy()


def read_checkpoint(
    path: os.PathLike | str, expect: Callable[[dict], Spec], *, versions: tuple[int, ...] = ()
) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by `write_checkpoint`, validating everything first.

    Args:
      path: the folder (then `checkpoint.npz` in it) or the `.npz` file.
      expect: called with the (validated) meta; returns {name: (shape tuple, np.dtype)}, the
        arrays the file must hold, exactly. It may raise CheckpointError itself (e.g. another
        architecture); any other exception it raises means the meta is corrupt.
      versions: the format versions read (default: `FORMAT_VERSION` only).

    Returns:
      (arrays, meta): every expected array (numpy, writable), and the caller's meta (without
      "format_version" and "sha256").

    Raises:
      CheckpointError: one line; see the module docstring.
    """
    path = checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
            members = _directory(zf, os.fstat(fh.fileno()).st_size)
            if "meta" not in members:
                raise _Corrupt("it has no meta")
            text = _array(zf, members.pop("meta"), (None,), np.dtype(np.uint8)).tobytes()
            try:
                doc = json.loads(text.decode("utf-8"))
                sha = doc.pop("sha256") if isinstance(doc, dict) else None
            except Exception as exc:
                raise _Corrupt(f"its meta is truncated or corrupt ({_why(exc)})") from exc
            if not isinstance(sha, str):
                raise _Corrupt("its meta is truncated or corrupt (no sha256)")
            versions = versions or (FORMAT_VERSION,)
            if doc.get("format_version") not in versions:
                which = " or ".join(map(str, versions))
                raise CheckpointError(
                    f"checkpoint {path} has format version {doc.get('format_version')!r}; this "
                    f"fc_jax reads version {which}"
                )
            meta = {k: v for k, v in doc.items() if k not in RESERVED}
            try:
                spec = {n: (tuple(s), np.dtype(d)) for n, (s, d) in expect(meta).items()}
            except CheckpointError:
                raise
            except Exception as exc:
                raise _Corrupt(f"its meta is invalid ({_why(exc)})") from exc
            if set(members) != set(spec):
                missing, extra = sorted(set(spec) - set(members)), sorted(set(members) - set(spec))
                raise _Corrupt(f"it lacks arrays {missing} and holds unexpected arrays {extra}")
            for name in sorted(spec):  # every header first: nothing is allocated before
                _header(zf, members[name], *spec[name])
            arrays = {name: _array(zf, members[name], *spec[name]) for name in sorted(spec)}
        if _digest(arrays, _canonical(doc)) != sha:
            raise _Corrupt("its sha256 checksum does not match its contents")
    except CheckpointError:
        raise
    except _Corrupt as exc:
        raise CheckpointError(f"corrupt checkpoint {path}: {exc}") from None
    except Exception as exc:  # zipfile, zlib, struct, tokenize, Unicode, Overflow, Memory, OS...
        raise CheckpointError(
            f"corrupt checkpoint {path}: the file is truncated or corrupt ({_why(exc)})"
        ) from exc
    return arrays, meta


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__

"""CIFAR-10 on disk: where it lives, how one batch file is read safely, how it gets there.

Contract: ``cifar10_dir(data_dir)`` resolves the folder that holds ``data_batch_1..5`` and
``test_batch``; ``read_cifar10_batch(path)`` parses one file with an unpickler that builds numpy
arrays and nothing else, and checks its keys, shape and labels; ``download_cifar10(dest_parent)``
fetches the official archive, checks its md5, extracts it safely and moves
``cifar-10-batches-py`` into place with one atomic ``os.replace``; ``ensure_cifar10(data_dir)``
returns a complete folder, downloading only when it is missing. Every failure is a
``DataError`` naming the file, the fault, and which files to put where. A failed download
removes its temporaries and leaves existing files untouched. Host side: numpy, never jax.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

__all__ = [
    "CIFAR10_FILES",
    "CIFAR10_FOLDER",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DataError",
    "cifar10_dir",
    "download_cifar10",
    "ensure_cifar10",
    "fix_hint",
    "read_cifar10_batch",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CHUNK = 1 << 20


class DataError(ValueError):
    """A data file is missing, incomplete or corrupt, or could not be downloaded."""


def fix_hint(folder: os.PathLike | str) -> str:
    """The instructions every DataError ends with: which files to put where."""
    return (
        f"To fix it, run `python scripts/get_cifar10.py`, or download {CIFAR10_URL} "
        f"(md5 {CIFAR10_MD5}) by hand and extract it so that {Path(folder)} holds "
        f"{', '.join(CIFAR10_FILES)}; or set FC_JAX_DATA_DIR to a folder that contains "
        f"{CIFAR10_FOLDER}/."
    )


def cifar10_dir(data_dir: os.PathLike | str | None = None) -> Path:
    """Resolve the CIFAR-10 batches folder (it need not exist yet).

    Args:
      data_dir: a folder that either is the batches folder (it is named ``cifar-10-batches-py``
        or holds ``data_batch_1``) or contains ``cifar-10-batches-py/``. If None:
        ``$FC_JAX_DATA_DIR/cifar-10-batches-py`` when that variable is set, else the user cache,
        ``${XDG_CACHE_HOME:-~/.cache}/fc_jax/cifar-10-batches-py``.

    Returns:
      The path of the folder that holds (or will hold) ``data_batch_1..5`` and ``test_batch``.
    """
    if data_dir is not None:
        p = Path(data_dir).expanduser()
        if p.name == CIFAR10_FOLDER or (p / CIFAR10_FILES[0]).is_file():
            return p
        return p / CIFAR10_FOLDER
    env = os.environ.get("FC_JAX_DATA_DIR")
    if env:
        return Path(env).expanduser() / CIFAR10_FOLDER
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "fc_jax" / CIFAR10_FOLDER


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


def _latin1_encode(text, encoding="latin1"):
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, 'latin1').
    if encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("codecs", "encode"): _latin1_encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays; any other global is refused."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def read_cifar10_batch(
    path: os.PathLike | str, rows: int | None = 10000
) -> tuple[np.ndarray, np.ndarray]:
    """Parse and check one python-pickle batch file with the restricted unpickler.

    Args:
      path: e.g. ``.../cifar-10-batches-py/data_batch_1``.
      rows: the number of images the file must hold (10000 in the real data); None: any.

    Returns:
      (data (rows, 3072) uint8, channel-planar R|G|B rows of 32x32; labels (rows,) int64).

    Raises:
      DataError: the file is missing, truncated, corrupt, refused, or has the wrong content.
    """
    path = Path(path)

    def bad(what: str) -> DataError:
        return DataError(f"CIFAR-10 file {path} {what}. " + fix_hint(path.parent))

    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
            trailing = f.read(1)
    except FileNotFoundError:
        raise bad("is missing") from None
    except _Refused as exc:
        raise bad(
            f"is not a CIFAR-10 batch: it references {exc}, which was refused "
            "(only numpy array globals are allowed; never unpickle untrusted files)"
        ) from None
    except Exception as exc:
        raise bad(f"is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    if trailing:
        raise bad("has data after the end of the pickle (corrupt)")
    if not isinstance(obj, dict):
        raise bad(f"holds a {type(obj).__name__}, expected a dict")
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if missing := {"data", "labels"} - obj.keys():
        raise bad(f"lacks the keys {sorted(missing)} (it has {sorted(map(str, obj))})")
    data, labels = obj["data"], np.asarray(obj["labels"])
    want = f"({rows if rows else 'N'}, 3072)"
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        raise bad(f"has data of shape {np.shape(data)}, expected {want}")
    if rows is not None and data.shape[0] != rows:
        raise bad(f"has {data.shape[0]} rows of data, expected {want}")
    if data.dtype != np.uint8:
        ok = data.dtype.kind in "iu" and (data.size == 0 or (data.min() >= 0 and data.max() <= 255))
        if not ok:
            raise bad(f"has data of dtype {data.dtype} that is not uint8 pixels in 0..255")
        data = data.astype(np.uint8)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise bad(
            f"has labels of shape {labels.shape} dtype {labels.dtype}, expected "
            f"{len(data)} integers"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise bad(f"has labels in {labels.min()}..{labels.max()}, expected 0..9")
    return data, labels.astype(np.int64)


def _missing(folder: Path) -> list[str]:
    return [name for name in CIFAR10_FILES if not (folder / name).is_file()]


def _progress(done: int, total: int | None, *, final: bool = False) -> None:
    line = f"\rcifar-10-python.tar.gz {done / 2**20:6.1f} MiB"
    if total:
        frac = min(done / total, 1.0)
        line += f" of {total / 2**20:.1f} [{'#' * int(30 * frac):<30}] {100 * frac:5.1f}%"
    sys.stderr.write(line + ("\n" if final else ""))
    sys.stderr.flush()


def _fetch(url: str, dest: Path, md5: str, progress: bool) -> None:
    """Stream ``url`` into the open path ``dest``; raise DataError unless its md5 is ``md5``."""
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress:
                _progress(done, total)
        if progress:
            _progress(done, total, final=True)
    if digest.hexdigest() != md5.lower():
        raise DataError(
            f"checksum mismatch for {url}: got md5 {digest.hexdigest()}, expected {md5} "
            f"({done} bytes received; the download is incomplete or the file has changed)."
        )


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Refuse absolute paths, '..' components, links and special files."""
    members = tar.getmembers()
    for m in members:
        path = PurePosixPath(m.name)
        if path.is_absolute() or m.name.startswith(("/", "\\")) or ".." in path.parts:
            raise DataError(f"refusing unsafe path {m.name!r} in the archive.")
        if not (m.isfile() or m.isdir()):
            raise DataError(f"refusing archive member {m.name!r}: not a regular file or folder.")
    return members


def download_cifar10(
    dest_parent: os.PathLike | str,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    progress: bool = True,
) -> Path:
    """Download, verify and extract CIFAR-10 into ``dest_parent/cifar-10-batches-py``.

    The archive streams to a temporary file in ``dest_parent`` (a text progress bar on stderr),
    its md5 is checked, it is extracted into a temporary folder beside the destination, and the
    folder is moved into place with one ``os.replace``. On any failure the temporaries are
    removed, nothing existing is touched, and a DataError says what to do.

    Args:
      dest_parent: the folder that will contain ``cifar-10-batches-py/``; created if missing.
      url: the archive's URL (``file://`` works, which the tests use).
      md5: the archive's expected md5 hex digest.
      progress: whether to draw the progress bar on stderr.

    Returns:
      The path of the new ``cifar-10-batches-py`` folder.

    Raises:
      DataError: the destination already exists, or the download, checksum or extraction failed.
    """
    parent = Path(dest_parent).expanduser()
    target = parent / CIFAR10_FOLDER
    if target.exists():
        raise DataError(
            f"{target} already exists (missing files: {_missing(target) or 'none'}); it was "
            f"left untouched. Delete it to download again. " + fix_hint(target)
        )
    archive = workdir = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".cifar-10-python.", suffix=".tar.gz.part", dir=parent)
        os.close(fd)
        archive = Path(name)
        _fetch(url, archive, md5, progress)
        workdir = Path(tempfile.mkdtemp(prefix=f".{CIFAR10_FOLDER}.", dir=parent))
        with tarfile.open(archive, "r:gz") as tar:
            members = _safe_members(tar)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(workdir, members=members, filter="data")
            else:  # Python < 3.11.4: the members were checked above
                tar.extractall(workdir, members=members)
        extracted = workdir / CIFAR10_FOLDER
        if missing := _missing(extracted):
            raise DataError(f"the archive from {url} lacks {CIFAR10_FOLDER}/{missing}.")
        os.replace(extracted, target)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
        raise DataError(
            f"Could not install CIFAR-10 from {url} into {target}: {reason} " + fix_hint(target)
        ) from exc
    finally:
        if archive is not None:
            archive.unlink(missing_ok=True)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    return target


def ensure_cifar10(
    data_dir: os.PathLike | str | None = None,
    download: bool = True,
    *,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    progress: bool = True,
) -> Path:
    """Return a complete CIFAR-10 batches folder, downloading it when it is missing.

    Args:
      data_dir: as in ``cifar10_dir``; None means ``$FC_JAX_DATA_DIR`` or the user cache.
      download: download into the resolved folder's parent when the folder does not exist.
      url, md5, progress: passed to ``download_cifar10``.

    Returns:
      The folder holding ``data_batch_1..5`` and ``test_batch``.

    Raises:
      DataError: files are missing and ``download`` is False, the folder exists but is
        incomplete (it is never modified), or the download failed.
    """
    folder = cifar10_dir(data_dir)
    missing = _missing(folder)
    if not missing:
        return folder
    if folder.exists() or not download:
        raise DataError(f"CIFAR-10 files {missing} are missing from {folder}. " + fix_hint(folder))
    return download_cifar10(folder.parent, url, md5, progress)

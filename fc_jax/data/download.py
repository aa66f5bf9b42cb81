"""CIFAR-10 on disk: where it lives, where it came from, how it gets there.

Contract: ``cifar10_dir(data_dir)`` resolves the folder that holds ``data_batch_1..5`` and
``test_batch`` (``data_dir`` or ``$FC_JAX_DATA_DIR`` may name that folder or its parent; else the
user cache ``${XDG_CACHE_HOME:-~/.cache}/fc_jax``). A folder the user names is never written to:
``ensure_cifar10(data_dir)`` returns it when it is complete, else a complete cache, else downloads
into the cache (saying so on stderr). ``provenance(data_dir)`` says which folder that is and why,
for ``--resume`` to remember. ``download_cifar10(dest_parent)`` fetches the official archive,
checks its md5, extracts it safely and moves ``cifar-10-batches-py`` into place with one atomic
``os.replace``; a failed download removes its temporaries and leaves existing files untouched.
Reading and checking one batch file is ``fc_jax.data.cifar10`` (re-exported here). Every failure is a
``DataError`` naming the file, the fault, and which files to put where. Host side: numpy, never jax.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath

from fc_jax.data.cifar10 import (
    CIFAR10_FILES,
    CIFAR10_FOLDER,
    CIFAR10_MD5,
    CIFAR10_URL,
    DataError,
    fix_hint,
)

__all__ = [
    "cache_dir",
    "cifar10_dir",
    "download_cifar10",
    "ensure_cifar10",
    "provenance",
]

_CHUNK = 1 << 20


def _batches(p: Path) -> Path:
    """``p`` if it is the batches folder (so named, or holding data_batch_1), else p/cifar-10-batches-py."""
    p = p.expanduser()
    if p.name == CIFAR10_FOLDER or (p / CIFAR10_FILES[0]).is_file():
        return p
    return p / CIFAR10_FOLDER


def cache_dir() -> Path:
    """The user cache's batches folder: ``${XDG_CACHE_HOME:-~/.cache}/fc_jax/cifar-10-batches-py``."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "fc_jax" / CIFAR10_FOLDER


def _named(data_dir) -> tuple[Path, str] | None:
    if data_dir is not None:
        return _batches(Path(data_dir)), "argument"
    if env := os.environ.get("FC_JAX_DATA_DIR"):
        return _batches(Path(env)), "FC_JAX_DATA_DIR"
    return None


def cifar10_dir(data_dir: os.PathLike | str | None = None) -> Path:
    """Resolve the CIFAR-10 batches folder the user names (it need not exist yet).

    Args:
      data_dir: a folder that either is the batches folder (it is named ``cifar-10-batches-py``
        or holds ``data_batch_1``) or contains ``cifar-10-batches-py/``. If None:
        ``$FC_JAX_DATA_DIR`` (by the same rule) when that variable is set, else ``cache_dir()``.

    Returns:
      The path of the folder that holds (or will hold) ``data_batch_1..5`` and ``test_batch``.
    """
    named = _named(data_dir)
    return named[0] if named else cache_dir()


def _resolve(data_dir) -> tuple[Path, str]:
    """(folder, source): the named folder when complete (or when the cache is not), else the cache."""
    named = _named(data_dir)
    if named is None:
        return cache_dir(), "cache"
    if not _missing(named[0]) or _missing(cache_dir()):
        return named
    return cache_dir(), "cache"


def provenance(data_dir: os.PathLike | str | None = None) -> dict:
    """Where ``ensure_cifar10(data_dir)`` reads CIFAR-10 from, for a run to record and resume.

    Returns:
      {"folder": absolute path of the batches folder, "source": "argument" (``data_dir``),
      "FC_JAX_DATA_DIR" or "cache", "complete": whether all six files are there now}.
      Passing "folder" back as ``data_dir`` reads the same files.
    """
    folder, source = _resolve(data_dir)
    return {"folder": str(folder.absolute()), "source": source, "complete": not _missing(folder)}


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
    """Return a complete CIFAR-10 batches folder, downloading into the user cache if needed.

    A folder the user names (``data_dir`` or ``$FC_JAX_DATA_DIR``) is never written to: when it
    is incomplete, a complete ``cache_dir()`` is used instead, else (``download``) CIFAR-10 is
    downloaded into the cache; either is said in one line on stderr. ``provenance(data_dir)``
    reports the same choice.

    Args:
      data_dir: as in ``cifar10_dir``; None means ``$FC_JAX_DATA_DIR`` or the user cache.
      download: allow downloading into the cache when no complete folder is found.
      url, md5, progress: passed to ``download_cifar10``.

    Returns:
      The folder holding ``data_batch_1..5`` and ``test_batch``.

    Raises:
      DataError: files are missing and ``download`` is False or the cache folder exists but is
        incomplete (no folder is ever modified), or the download failed.
    """
    folder, source = _resolve(data_dir)
    named = _named(data_dir)
    if not _missing(folder):
        if named and source == "cache":
            print(f"fc_jax: {named[0]} lacks CIFAR-10 files; using {folder}", file=sys.stderr)
        return folder
    cache = cache_dir()
    if not download or cache.exists():
        raise DataError(
            f"CIFAR-10 files {_missing(folder)} are missing from {folder}. " + fix_hint(folder)
        )
    if named:
        print(
            f"fc_jax: {folder} lacks CIFAR-10 files and is left untouched; downloading into {cache}",
            file=sys.stderr,
        )
    return download_cifar10(cache.parent, url, md5, progress)

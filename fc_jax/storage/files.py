"""Files that are never half-written, and folders that one process at a time may write.

Contract: `atomic_open(path)` yields a binary file object whose bytes replace `path` only when the
`with` block ends without error: they go to a temporary file in the same folder, named
`.<name>.<random>.tmp`, which is flushed, fsynced and moved onto `path` with `os.replace` (then the
folder is fsynced, so the rename survives a power cut). On any failure the temporary file is
removed and the previous `path` is untouched. `atomic_write_bytes`, `atomic_write_text` and
`atomic_savez` are the one-call forms. A failing write raises `WriteError`, an `OSError` (so
existing `except OSError` handlers still catch it, and `.errno` is kept) whose message is one line
naming the final file and the cause with its errno name, e.g.
`cannot write runs/x/history.json: File too large (EFBIG)`. A process killed mid-write (kill -9)
can leave a temporary file behind; `remove_stale_temps(folder)` deletes exactly those, and should
be called only while holding the folder's lock.

`lock_folder(folder)` (or `FolderLock(folder)`) takes an OS advisory lock (`fcntl.flock`,
exclusive, non-blocking) on `folder/.lock` and records the holder's pid and command line there. The
kernel releases it when the process ends, however it ends, so a stale `.lock` file never blocks
anyone. A second holder (another process, or a second lock in the same process) gets
`FolderBusyError`, a `ValueError`, naming the folder and the holder. Host side: numpy, never jax.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import fcntl
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = [
    "LOCK_NAME",
    "FolderBusyError",
    "FolderLock",
    "WriteError",
    "atomic_open",
    "atomic_savez",
    "atomic_write_bytes",
    "atomic_write_text",
    "lock_folder",
    "remove_stale_temps",
]

LOCK_NAME = ".lock"
# tempfile.mkstemp's random part: 8 characters of [a-z0-9_].
_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class WriteError(OSError):
    """A file could not be written; the previous file (if any) is untouched.

    The message is one line: `cannot write <path>: <strerror> (<ERRNO NAME>)`. `.errno` and
    `.filename` are set as on any OSError.
    """

    def __init__(self, path: os.PathLike | str, cause: BaseException):
        code = getattr(cause, "errno", None)
        if code in errno_mod.errorcode:
            why = f"{getattr(cause, 'strerror', None) or os.strerror(code)} ({errno_mod.errorcode[code]})"
        else:
            why = _one_line(cause) or type(cause).__name__
        self.message = f"cannot write {path}: {_one_line(why)}"
        super().__init__(self.message)
        self.errno, self.filename = code, str(path)

    def __str__(self) -> str:  # OSError's own would print "[Errno 27] ...: 'path'"
        return self.message


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable; folders that cannot be fsynced (some filesystems) are skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: os.PathLike | str) -> Iterator[BinaryIO]:
    """A binary file whose content replaces `path` atomically when the block succeeds.

    The folder is created if missing. Use as `with atomic_open(p) as f: fig.savefig(f, format="png")`.

    Raises:
      WriteError: creating, writing, flushing, syncing or renaming failed with an OSError (an
        OSError raised inside the block is converted too). Other exceptions pass unchanged. In
        both cases the temporary file is removed and `path` is untouched.
    """
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise WriteError(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(path, exc) from exc
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> Path:
    """Replace `path` with `data` atomically (see `atomic_open`); returns the path."""
    with atomic_open(path) as f:
        f.write(data)
    return Path(path).expanduser()


def atomic_write_text(path: os.PathLike | str, text: str, encoding: str = "utf-8") -> Path:
    """Replace `path` with `text` atomically (see `atomic_open`); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_savez(path: os.PathLike | str, arrays: dict[str, np.ndarray]) -> Path:
    """`np.savez(path, **arrays)` atomically (see `atomic_open`); returns the path."""
    with atomic_open(path) as f:
        np.savez(f, **arrays)
    return Path(path).expanduser()


def remove_stale_temps(folder: os.PathLike | str) -> list[str]:
    """Delete the `.<name>.<random>.tmp` files an interrupted atomic write left in `folder`.

    Only names of exactly that pattern are touched. Call it while holding `lock_folder(folder)`:
    another process's write in progress has a temporary file of the same form.

    Returns:
      The removed names, sorted (empty when the folder does not exist).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if _TEMP.match(entry.name) and entry.is_file() and not entry.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry.name)
    return removed


class FolderBusyError(ValueError):
    """Another fc-jax process (or another lock in this one) holds the folder's lock."""


def _command_line() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    name = (
        "fc-jax" if name in ("__main__.py", "fc-jax") else name
    )  # python -m fc_jax, or the script
    argv = [name, *sys.argv[1:]]
    line = _one_line(" ".join(argv))
    return line if len(line) <= 120 else line[:117] + "..."


class FolderLock:
    """An exclusive advisory lock on `folder/.lock`, held from `acquire()` (or `with`) to `release()`.

    The lock file records `{"pid": ..., "command": ...}` of the holder while it is held. The
    folder is created if missing.
    """

    def __init__(self, folder: os.PathLike | str):
        self.folder = Path(folder).expanduser()
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock or raise `FolderBusyError` at once (it never waits).

        Raises:
          FolderBusyError: another holder has it.
          WriteError: the folder or the lock file cannot be created or opened.
        """
        if self._fd is not None:
            raise FolderBusyError(f"{self.folder} is already locked by this FolderLock")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise WriteError(self.path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno not in (errno_mod.EWOULDBLOCK, errno_mod.EAGAIN):
                raise WriteError(self.path, exc) from exc
            raise FolderBusyError(
                f"{self.folder} is in use by another fc-jax process ({holder}); wait for it or "
                "choose another --out"
            ) from None
        try:
            record = json.dumps({"pid": os.getpid(), "command": _command_line()}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, record + b"\n", 0)
        except OSError:
            pass  # the lock itself is what matters; the record is a courtesy
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (idempotent). The `.lock` file stays; its record is cleared."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _holder(fd: int) -> str:
    """'pid 1234: fc-jax train ...' from the lock file, or a placeholder if unreadable."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {int(record['pid'])}: {_one_line(record['command'])}"
    except Exception:  # empty (being written) or damaged: the lock is still held
        return "pid unknown"


def lock_folder(folder: os.PathLike | str) -> FolderLock:
    """`with lock_folder(out): ...`: hold `out/.lock` for the block (see `FolderLock`)."""
    return FolderLock(folder)

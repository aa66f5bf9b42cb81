"""fc_jax.storage.files: atomic writes that keep the old file on any failure, one-line write errors, stale
temporaries, and a folder lock that a killed process never leaves held. Real child processes."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fc_jax.storage import files
from fc_jax.storage.files import FolderBusyError, WriteError

ROOT = Path(__file__).resolve().parents[1]


def _child(code: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_atomic_writes_round_trip_and_leave_no_temporaries(tmp_path):
    files.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    files.atomic_write_text(tmp_path / "sub" / "b.txt", "h\u00e9")  # creates the folder
    files.atomic_savez(tmp_path / "c.npz", {"x": np.arange(3)})
    with files.atomic_open(tmp_path / "d.png") as f:
        f.write(b"png")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "h\u00e9"
    with np.load(tmp_path / "c.npz") as z:
        np.testing.assert_array_equal(z["x"], np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "c.npz", "d.png", "sub"]
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def test_an_exception_inside_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "h.json"
    path.write_text("old")
    with pytest.raises(KeyError, match="boom"):  # not an OSError: passes unchanged
        with files.atomic_open(path) as f:
            f.write(b"new, half written")
            raise KeyError("boom")
    with pytest.raises(WriteError, match=r"^cannot write .*h\.json: disk full$"):
        with files.atomic_open(path) as f:
            raise OSError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["h.json"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EACCES, errno.EROFS, errno.EIO])
@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_write_errors_name_the_file_and_the_errno(tmp_path, monkeypatch, code, where):
    path = tmp_path / "runs" / "x" / "history.json"
    files.atomic_write_text(path, "old")

    def fail(*args):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.os, where, fail)
    with pytest.raises(WriteError) as err:
        files.atomic_write_text(path, "new")
    monkeypatch.undo()
    msg = str(err.value)
    assert msg == f"cannot write {path}: {os.strerror(code)} ({errno.errorcode[code]})"
    assert isinstance(err.value, OSError) and err.value.errno == code
    assert err.value.filename == str(path)
    assert path.read_text() == "old" and os.listdir(path.parent) == ["history.json"]


def test_name_too_long(tmp_path):
    with pytest.raises(WriteError, match=r"^cannot write .*: File name too long \(ENAMETOOLONG\)$"):
        files.atomic_write_bytes(tmp_path / ("x" * 300), b"1")
    assert os.listdir(tmp_path) == []


def test_file_size_limit_in_a_child_keeps_the_old_file(tmp_path):
    """A real EFBIG: the child's RLIMIT_FSIZE is below the new content's size."""
    path = tmp_path / "history.json"
    path.write_bytes(b"old content")
    child = _child(f"""
        import resource, signal, sys
        from fc_jax.storage import files
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            files.atomic_write_bytes({str(path)!r}, b"n" * 100_000)
        except files.WriteError as exc:
            print(exc)
            sys.exit(3)
    """)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 3, err
    assert out == f"cannot write {path}: File too large (EFBIG)\n"
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["history.json"]


def test_remove_stale_temps_after_a_kill_9_mid_write(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"old")
    child = _child(f"""
        import os, signal
        from fc_jax.storage import files
        with files.atomic_open({str(tmp_path / "checkpoint.npz")!r}) as f:
            f.write(b"half")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[1] == "checkpoint.npz"
    assert files._TEMP.match(left[0]) and left[0].startswith(".checkpoint.npz.")
    for name in (".x.tmp", "notes.tmp", ".y.ABCDEFGH.tmp", ".y.abcdefgh.tmp.bak", "z.abcdefgh.tmp"):
        (tmp_path / name).write_text("keep")  # not ours: never touched
    (tmp_path / ".h.json.abc_1234.tmp").write_text("ours")
    assert files.remove_stale_temps(tmp_path) == sorted([left[0], ".h.json.abc_1234.tmp"])
    assert (tmp_path / "checkpoint.npz").read_bytes() == b"old"
    assert len(list(tmp_path.iterdir())) == 6
    assert files.remove_stale_temps(tmp_path / "missing") == []


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    with files.lock_folder(tmp_path / "run") as lock:
        assert lock.held and (tmp_path / "run" / ".lock").is_file()
        with pytest.raises(FolderBusyError) as err:
            files.FolderLock(tmp_path / "run").acquire()
        msg = str(err.value)
        assert "\n" not in msg
        assert msg.startswith(
            f"{tmp_path / 'run'} is in use by another fc-jax process (pid {os.getpid()}: "
        )
        assert msg.endswith("); wait for it or choose another --out")
    assert not lock.held
    with files.lock_folder(tmp_path / "run"):  # released: free again
        pass


def test_lock_held_by_a_child_then_freed_by_kill_9(tmp_path):
    folder = tmp_path / "run"
    child = _child(f"""
        import sys, time
        from fc_jax.storage import files
        sys.argv = ["fc-jax", "train", "--out", "run"]
        lock = files.FolderLock({str(folder)!r}).acquire()
        print("locked", flush=True)
        time.sleep(120)
    """)
    try:
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(FolderBusyError) as err:
            files.lock_folder(folder).acquire()
        assert str(err.value) == (
            f"{folder} is in use by another fc-jax process (pid {child.pid}: fc-jax train --out "
            "run); wait for it or choose another --out"
        )
    finally:
        child.kill()  # SIGKILL: no cleanup code runs in the child
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert (folder / ".lock").read_text()  # the stale record is still there...
    start = time.perf_counter()
    with files.lock_folder(folder):  # ...yet the lock is free at once
        pass
    assert time.perf_counter() - start < 1.0

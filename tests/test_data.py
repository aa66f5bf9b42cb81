"""Tests for fc_jax.data.datasets, fc_jax.data.download and fc_jax.cs231n.data_utils. Nothing is downloaded:
archives are written here and served from file:// URLs. The real CIFAR-10 is read once."""

import ast
import codecs
import functools
import hashlib
import importlib.util
import io
import os
import pickle
import shutil
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from fc_jax.cs231n import data_utils
from fc_jax.data import cifar10, datasets, download
from fc_jax.data.cifar10 import DataError
from tests.helpers import SHARED_DATA, real_cifar10_dir

ROOT = Path(__file__).resolve().parents[1]
REAL = download.cifar10_dir(os.environ.get("FC_JAX_DATA_DIR") or SHARED_DATA).resolve()
FILES = cifar10.CIFAR10_FILES


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets an empty user cache: nothing here may touch ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


# ---------------------------------------------------------------- fake batches, real format
def _s(b: bytes) -> bytes:  # a Python 2 str: SHORT_BINSTRING or BINSTRING
    return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b


def _i(i: int) -> bytes:  # BININT
    return b"J" + struct.pack("<i", i)


def _array(a: np.ndarray) -> bytes:  # what Python 2 cPickle wrote for an ndarray
    dtype = (
        b"cnumpy\ndtype\n"
        + _s(a.dtype.str[1:].encode())
        + _i(0)
        + _i(1)
        + b"\x87R("
        + _i(3)
        + _s(a.dtype.str[:1].encode())
        + b"NNN"
        + _i(-1)
        + _i(-1)
        + _i(0)
        + b"tb"
    )
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        + _i(0)
        + b"\x85"
        + _s(b"b")
        + b"\x87R("
        + _i(1)
        + b"("
        + b"".join(map(_i, a.shape))
        + b"t"
        + dtype
        + b"\x89"
        + _s(a.tobytes())
        + b"tb"
    )


def py2_pickle(batch: dict) -> bytes:
    """Protocol 2 with py2 str keys and numpy.core globals, as the CIFAR-10 files are written."""
    out = b"\x80\x02}("
    for k, v in batch.items():
        if isinstance(v, bytes):
            out += _s(k) + _s(v)
        elif isinstance(v, list):
            out += _s(k) + b"](" + b"".join(map(_i, v)) + b"e"
        else:
            out += _s(k) + _array(v)
    return out + b"u."


def write_cifar(folder: Path, n: int = 4, seed: int = 0, **override) -> dict:
    """Six fake batches of n images; returns {file name: (data (n, 3072) uint8, labels list)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in FILES:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        (folder / name).write_bytes(py2_pickle(batch))
        out[name] = (batch[b"data"], batch[b"labels"])
    (folder / "cifar10.meta").write_bytes(py2_pickle({b"num_cases_per_batch": b"n"}))
    return out


def test_py2_writer_is_a_valid_pickle():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    got = pickle.loads(py2_pickle({b"k": b"v", b"l": [1, 300], b"a": a}), encoding="bytes")
    assert got[b"k"] == b"v" and got[b"l"] == [1, 300]
    np.testing.assert_array_equal(got[b"a"], a)


def test_load_cifar10_fake_batches(tmp_path):
    src = write_cifar(tmp_path, n=4)
    Xtr, ytr, Xte, yte = datasets.load_cifar10(tmp_path, rows_per_file=4)
    assert Xtr.shape == (20, 3, 32, 32) and Xtr.dtype == np.float32
    assert Xte.shape == (4, 3, 32, 32) and ytr.dtype == yte.dtype == np.int64
    d2, l2 = src["data_batch_2"]
    # channel-planar rows: pixel (c, r, col) of image k is data[k, 1024 c + 32 r + col]
    assert Xtr[4 + 1, 2, 5, 7] == d2[1, 2 * 1024 + 5 * 32 + 7]
    expected = np.concatenate([src[f][0] for f in FILES[:5]]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(Xtr, expected.astype(np.float32))
    np.testing.assert_array_equal(ytr, sum((src[f][1] for f in FILES[:5]), []))
    np.testing.assert_array_equal(yte, src["test_batch"][1])
    Xtr8, _, Xte8, _ = datasets.load_cifar10(tmp_path, dtype=np.uint8, rows_per_file=None)
    assert Xtr8.dtype == np.uint8
    np.testing.assert_array_equal(Xte8, src["test_batch"][0].reshape(-1, 3, 32, 32))
    with pytest.raises(DataError, match="rows"):  # the real files hold 10000 rows each
        datasets.load_cifar10(tmp_path)
    with pytest.raises(TypeError, match="dtype"):
        datasets.load_cifar10(tmp_path, dtype=np.int32, rows_per_file=None)


def test_python3_protocol2_pickle_loads(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (3, 3072), dtype=np.uint8)
    (tmp_path / "b").write_bytes(pickle.dumps({b"data": a, b"labels": [0, 9, 3]}, protocol=2))
    got, labels = cifar10.read_cifar10_batch(tmp_path / "b", rows=3)
    np.testing.assert_array_equal(got, a)
    np.testing.assert_array_equal(labels, [0, 9, 3])


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _break(folder: Path, how: str) -> str:
    """Damage data_batch_3 in one way; return a phrase the error must contain."""
    f, rng = folder / "data_batch_3", np.random.default_rng(5)
    good = {
        b"batch_label": b"x",
        b"labels": [1] * 4,
        b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
    }
    if how == "missing":
        f.unlink()
        return "is missing"
    if how == "truncated":
        f.write_bytes(f.read_bytes()[:5000])
        return "truncated or corrupt"
    if how == "garbage":
        f.write_bytes(b"\x00not a pickle at all")
        return "truncated or corrupt"
    if how == "trailing":
        f.write_bytes(f.read_bytes() + b"extra")
        return "after the end"
    bad = dict(good)
    if how == "shape":
        bad[b"data"] = bad[b"data"][:, :3071].copy()
    elif how == "label10":
        bad[b"labels"] = [0, 10, 1, 1]
    elif how == "labelcount":
        bad[b"labels"] = [0, 1, 1]
    elif how == "nokey":
        del bad[b"labels"]
    elif how == "float":
        bad[b"data"] = bad[b"data"].astype(np.float32)
    elif how == "evil":
        bad[b"data"] = _Evil(folder / "PWNED")
        f.write_bytes(pickle.dumps(bad, protocol=2))
        return "references posix.system, which was refused"
    elif how == "notdict":
        f.write_bytes(pickle.dumps([1, 2], protocol=2))
        return "expected a dict"
    f.write_bytes(py2_pickle(bad))
    return {
        "shape": "has data of shape",
        "label10": "expected 0..9",
        "labelcount": "expected 4 integers",
        "nokey": "lacks the keys ['labels']",
        "float": "has data of dtype float32",
    }[how]


@pytest.mark.parametrize(
    "how",
    [
        "missing",
        "truncated",
        "garbage",
        "trailing",
        "shape",
        "label10",
        "labelcount",
        "nokey",
        "float",
        "evil",
        "notdict",
    ],
)
def test_broken_file_raises_clear_error(tmp_path, how):
    write_cifar(tmp_path, n=4)
    phrase = _break(tmp_path, how)
    with pytest.raises(DataError) as info:
        datasets.load_cifar10(tmp_path, rows_per_file=4)
    msg = str(info.value)
    assert phrase in msg
    assert str(tmp_path / "data_batch_3") in msg  # names the file
    assert "get_cifar10.py" in msg and cifar10.CIFAR10_URL in msg and "FC_JAX_DATA_DIR" in msg
    assert isinstance(info.value, ValueError)
    assert not (tmp_path / "PWNED").exists()  # the malicious pickle never ran


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.mark.parametrize(
    "payload",
    [
        (eval, ("1+1",)),
        (getattr, ("abc", "upper")),
        (np.load, ("x.npy",)),
        (codecs.encode, (b"x", "zlib_codec")),
    ],  # codecs.encode is allowed for latin1 only
)
def test_other_globals_are_refused(tmp_path, payload):
    (tmp_path / "b").write_bytes(pickle.dumps({b"data": _Reduce(*payload)}, protocol=2))
    with pytest.raises(DataError, match="which was refused"):
        cifar10.read_cifar10_batch(tmp_path / "b")


def test_load_cifar10_points_at_subfolder(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py", n=4)
    with pytest.raises(DataError, match="; pass .*cifar-10-batches-py"):
        datasets.load_cifar10(tmp_path, rows_per_file=4)


# ---------------------------------------------------------------- locating and downloading
def test_cifar10_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("FC_JAX_DATA_DIR", str(tmp_path / "env"))
    assert download.cifar10_dir(tmp_path / "p") == tmp_path / "p" / "cifar-10-batches-py"
    assert (
        download.cifar10_dir(tmp_path / "cifar-10-batches-py") == tmp_path / "cifar-10-batches-py"
    )
    write_cifar(tmp_path / "mine", n=1)
    assert download.cifar10_dir(tmp_path / "mine") == tmp_path / "mine"  # holds data_batch_1
    assert download.cifar10_dir() == tmp_path / "env" / "cifar-10-batches-py"
    monkeypatch.delenv("FC_JAX_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.cifar10_dir() == tmp_path / "xdg" / "fc_jax" / "cifar-10-batches-py"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert download.cifar10_dir() == tmp_path / "home" / ".cache" / "fc_jax" / "cifar-10-batches-py"


def make_archive(tmp_path: Path, members=None) -> tuple[str, str, dict]:
    """A small cifar-10-python.tar.gz; returns (file:// url, md5, {name: bytes})."""
    src = tmp_path / "src" / "cifar-10-batches-py"
    write_cifar(src, n=3, seed=7)
    (src / "readme.html").write_text("<p>fake</p>")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
        for info, payload in members or []:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    return archive.as_uri(), md5, {p.name: p.read_bytes() for p in src.iterdir()}


def test_download_success_is_atomic_and_complete(tmp_path, capsys):
    url, md5, files = make_archive(tmp_path)
    dest = tmp_path / "dest"
    got = download.download_cifar10(dest, url=url, md5=md5, progress=True)
    assert got == dest / "cifar-10-batches-py"
    assert sorted(os.listdir(dest)) == ["cifar-10-batches-py"]  # no temporaries left
    for name, payload in files.items():
        assert (got / name).read_bytes() == payload
    assert "100.0%" in capsys.readouterr().err
    Xtr, *_ = datasets.load_cifar10(got, rows_per_file=3)
    assert Xtr.shape == (15, 3, 32, 32)


def test_download_moves_the_folder_in_one_rename(tmp_path, monkeypatch):
    url, md5, files = make_archive(tmp_path)
    dest, calls, real_replace = tmp_path / "dest", [], os.replace

    def spy(src, dst):  # the target appears complete, in one step, or not at all
        calls.append(sorted(os.listdir(src)))
        assert Path(dst) == dest / "cifar-10-batches-py" and not Path(dst).exists()
        if len(calls) == 2:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(download.os, "replace", spy)
    download.download_cifar10(dest, url=url, md5=md5, progress=False)
    assert calls == [sorted(files)]
    shutil.rmtree(dest / "cifar-10-batches-py")
    with pytest.raises(DataError, match="disk full"):
        download.download_cifar10(dest, url=url, md5=md5, progress=False)
    assert os.listdir(dest) == []


def _snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def test_download_bad_md5_leaves_everything_untouched(tmp_path):
    url, md5, _ = make_archive(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    before = _snapshot(dest)
    with pytest.raises(DataError) as info:
        download.download_cifar10(dest, url=url, md5="0" * 32, progress=False)
    msg = str(info.value)
    assert "checksum" in msg and url in msg and md5 in msg and "0" * 32 in msg
    assert cifar10.CIFAR10_URL in msg and cifar10.CIFAR10_MD5 in msg
    assert str(dest / "cifar-10-batches-py") in msg and "FC_JAX_DATA_DIR" in msg
    assert _snapshot(dest) == before


def test_download_refuses_existing_destination(tmp_path):
    url, md5, _ = make_archive(tmp_path)
    partial = tmp_path / "dest" / "cifar-10-batches-py"
    partial.mkdir(parents=True)
    (partial / "data_batch_1").write_bytes(b"old")
    before = _snapshot(tmp_path / "dest")
    with pytest.raises(DataError, match="already exists"):
        download.download_cifar10(tmp_path / "dest", url=url, md5=md5, progress=False)
    assert _snapshot(tmp_path / "dest") == before


def _member(name, kind=tarfile.REGTYPE, payload=b"x", link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(payload) if kind == tarfile.REGTYPE else 0
    return info, payload if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize(
    "member",
    [
        _member("../evil"),
        _member("/tmp/fc_jax_evil_abs"),
        _member("cifar-10-batches-py/../../evil"),
        _member("cifar-10-batches-py/ln", tarfile.SYMTYPE, link="/etc/passwd"),
        _member("cifar-10-batches-py/hl", tarfile.LNKTYPE, link="cifar-10-batches-py/test_batch"),
    ],
)
def test_download_rejects_unsafe_archives(tmp_path, member):
    url, md5, _ = make_archive(tmp_path, [member])
    dest = tmp_path / "a" / "b"
    with pytest.raises(DataError, match="refusing"):
        download.download_cifar10(dest, url=url, md5=md5, progress=False)
    assert os.listdir(dest) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path / "a" / "evil").exists()
    assert not Path("/tmp/fc_jax_evil_abs").exists()


def test_download_incomplete_archive_and_bad_url(tmp_path):
    archive = tmp_path / "empty.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info, payload = _member("cifar-10-batches-py/data_batch_1")
        tar.addfile(info, io.BytesIO(payload))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="lacks"):
        download.download_cifar10(tmp_path / "d", url=archive.as_uri(), md5=md5, progress=False)
    assert os.listdir(tmp_path / "d") == []
    missing = (tmp_path / "nope.tar.gz").as_uri()
    with pytest.raises(DataError, match="URLError"):
        download.download_cifar10(tmp_path / "d", url=missing, md5=md5, progress=False)
    assert os.listdir(tmp_path / "d") == []


def test_ensure_cifar10(tmp_path, monkeypatch):
    url, md5, _ = make_archive(tmp_path)
    monkeypatch.delenv("FC_JAX_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="are missing from"):
        download.ensure_cifar10(download=False)
    got = download.ensure_cifar10(url=url, md5=md5, progress=False)  # downloads into the cache
    assert got == tmp_path / "cache" / "fc_jax" / "cifar-10-batches-py"

    def no_download(*args, **kwargs):
        raise AssertionError("must not download when the files are there")

    monkeypatch.setattr(download, "download_cifar10", no_download)
    assert download.ensure_cifar10() == got
    (got / "test_batch").unlink()  # incomplete: reported, never modified
    with pytest.raises(DataError, match=r"\[.test_batch.\] are missing"):
        download.ensure_cifar10()
    assert sorted(os.listdir(got)) == sorted(["cifar10.meta", "readme.html", *FILES[:5]])


def test_get_cifar10_script(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("get_cifar10", ROOT / "scripts/get_cifar10.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(
        script, "load_cifar10", functools.partial(datasets.load_cifar10, rows_per_file=None)
    )
    url, md5, _ = make_archive(tmp_path)
    args = ["--data-dir", str(tmp_path / "d"), "--url", url, "--quiet"]
    assert script.main([*args, "--md5", "f" * 32]) == 1
    assert "checksum" in capsys.readouterr().err
    assert script.main([*args, "--md5", md5]) == 0
    assert "OK" in capsys.readouterr().out
    assert script.main(["--data-dir", str(tmp_path / "other"), "--check"]) == 1


def test_loaders_do_not_import_jax():
    for module in (datasets, download, cifar10):
        tree = ast.parse(Path(module.__file__).read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.split(".")[0] == "jax"], module.__name__


def test_env_var_may_name_the_batches_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FC_JAX_DATA_DIR", str(tmp_path / "x" / "cifar-10-batches-py"))
    assert download.cifar10_dir() == tmp_path / "x" / "cifar-10-batches-py"
    write_cifar(tmp_path / "mine", n=1)  # another name, but it holds data_batch_1
    monkeypatch.setenv("FC_JAX_DATA_DIR", str(tmp_path / "mine"))
    assert download.cifar10_dir() == tmp_path / "mine"
    assert download.provenance() == {
        "folder": str(tmp_path / "mine"),
        "source": "FC_JAX_DATA_DIR",
        "complete": True,
    }


def _listing(folder: Path) -> dict:
    """Every path under folder with its size and mtime: any write shows."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in [folder, *folder.rglob("*")]}


def test_a_named_folder_is_never_written_downloads_go_to_the_cache(tmp_path, monkeypatch, capsys):
    _, _, files = make_archive(tmp_path)
    archive = (tmp_path / "cifar-10-python.tar.gz").read_bytes()
    cache = tmp_path / "xdg-cache" / "fc_jax" / "cifar-10-batches-py"
    named = tmp_path / "shared" / "cifar-10-batches-py"
    write_cifar(named, n=3)
    (named / "test_batch").unlink()  # incomplete: must be left exactly as it is
    before = _listing(tmp_path / "shared")
    fetched = []

    def fake_fetch(url, dest, md5, progress):  # no network, ever
        assert Path(dest).parent == cache.parent, dest
        assert _listing(tmp_path / "shared") == before  # nothing, not even a temporary file
        fetched.append(url)
        Path(dest).write_bytes(archive)

    monkeypatch.setattr(download, "_fetch", fake_fetch)
    monkeypatch.setenv("FC_JAX_DATA_DIR", str(named.parent))
    assert download.provenance() == {
        "folder": str(named),
        "source": "FC_JAX_DATA_DIR",
        "complete": False,
    }
    assert download.ensure_cifar10(progress=False) == cache
    assert "left untouched; downloading into" in capsys.readouterr().err
    assert (
        fetched == [cifar10.CIFAR10_URL]
        and (cache / "test_batch").read_bytes() == files["test_batch"]
    )
    assert _listing(tmp_path / "shared") == before
    assert download.provenance() == {"folder": str(cache), "source": "cache", "complete": True}
    # Now the cache is complete: it is used without downloading, for the variable or an argument.
    assert download.ensure_cifar10() == cache
    assert download.ensure_cifar10(named, download=False) == cache
    assert f"{named} lacks CIFAR-10 files; using {cache}" in capsys.readouterr().err
    assert download.provenance(named)["source"] == "cache" and len(fetched) == 1
    # A complete named folder wins over the cache and is read, not written.
    (named / "test_batch").write_bytes(files["test_batch"])
    before = _listing(tmp_path / "shared")
    assert download.ensure_cifar10() == named and download.provenance(named)["source"] == "argument"
    datasets.load_cifar10(named, rows_per_file=3)
    assert _listing(tmp_path / "shared") == before and len(fetched) == 1


def test_no_cache_and_no_download_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_fetch", lambda *a: pytest.fail("must not download"))
    with pytest.raises(DataError, match=r"^CIFAR-10 files \[.*\] are missing from .*elsewhere"):
        download.ensure_cifar10(tmp_path / "elsewhere", download=False)
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "xdg-cache").exists()


# ---------------------------------------------------------------- the official content
def test_fake_batches_are_not_verified_unless_asked(tmp_path):
    write_cifar(tmp_path, n=4)
    cifar10.read_cifar10_batch(tmp_path / "data_batch_1", rows=4)  # not the official layout
    with pytest.raises(
        DataError,
        match=r"data_batch_1 is corrupt: its md5 [0-9a-f]{32} is not the official c99cafc1",
    ):
        cifar10.read_cifar10_batch(tmp_path / "data_batch_1", rows=4, verify=True)
    (tmp_path / "data_batch_1").rename(tmp_path / "mine")
    with pytest.raises(DataError, match="mine has no official checksum"):
        cifar10.read_cifar10_batch(tmp_path / "mine", rows=4, verify=True)


@pytest.fixture
def real_files():
    return real_cifar10_dir("test_batch")


def test_16_flipped_pixel_bytes_in_a_copy_are_refused(real_files, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in FILES:
        (folder / name).symlink_to(real_files / name)
    (folder / "data_batch_3").unlink()
    raw = bytearray((real_files / "data_batch_3").read_bytes())
    pixels, _ = cifar10.read_cifar10_batch(real_files / "data_batch_3", verify=True)
    start = raw.find(pixels[:2].tobytes())
    assert start > 0
    for i in range(start + 5000, start + 5016):
        raw[i] ^= 0x01  # still valid pixels: only the checksum can tell
    (folder / "data_batch_3").write_bytes(raw)
    with pytest.raises(DataError) as err:
        datasets.load_cifar10(folder, dtype=np.uint8)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{folder / 'data_batch_3'} is corrupt: its md5 ")
    assert "is not the official 54ebc095f3ab1f0389bbae665268c751" in msg
    assert f"delete {folder} to download it again" in msg
    flipped, _ = cifar10.read_cifar10_batch(
        folder / "data_batch_3", verify=False
    )  # documented escape
    assert (flipped != pixels).sum() == 16


def test_the_real_files_are_verified(real_files, monkeypatch):

    cifar10.read_cifar10_batch(real_files / "test_batch", verify=True)
    monkeypatch.setitem(cifar10.CIFAR10_CONTENT_MD5, "test_batch", "0" * 32)
    with pytest.raises(DataError, match="test_batch is corrupt"):
        cifar10.read_cifar10_batch(real_files / "test_batch")  # verify=None: the official layout


# ---------------------------------------------------------------- digits
# np.bincount(sklearn.datasets.load_digits().target), as printed in scikit-learn tutorials.
DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
FIRST_FOUR = [
    [0, 0, 0, 1, 11, 0, 0, 0],
    [0, 0, 0, 7, 8, 0, 0, 0],
    [0, 0, 1, 13, 6, 2, 2, 0],
    [0, 0, 7, 15, 0, 9, 8, 0],
    [0, 5, 16, 10, 0, 16, 6, 0],
    [0, 4, 15, 16, 13, 16, 1, 0],
    [0, 0, 0, 3, 15, 10, 0, 0],
    [0, 0, 0, 2, 16, 4, 0, 0],
]


def test_load_digits():
    X, y = datasets.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 16 and np.all(X == np.round(X))
    np.testing.assert_array_equal(np.bincount(y), DIGIT_COUNTS)
    np.testing.assert_array_equal(X[y == 4][0].reshape(8, 8), FIRST_FOUR)
    assert datasets.load_digits(dtype=np.uint8)[0].dtype == np.uint8


def test_get_dataset_digits():
    d = datasets.get_dataset("digits")
    sizes = {k: v.shape for k, v in d.items()}
    assert sizes == {
        "X_train": (1197, 64),
        "y_train": (1197,),
        "X_val": (300, 64),
        "y_val": (300,),
        "X_test": (300, 64),
        "y_test": (300,),
        "mean_image": (64,),
    }
    assert all(
        d[f"X_{s}"].dtype == np.float32 and d[f"y_{s}"].dtype == np.int64
        for s in ("train", "val", "test")
    )
    np.testing.assert_allclose(d["X_train"].mean(axis=0), 0, atol=1e-6)
    # adding the mean back gives pixels/16, and the three splits partition the 1797 images
    X, y = datasets.load_digits(dtype=np.uint8)
    rows = [
        np.column_stack([np.rint((d[f"X_{s}"] + d["mean_image"]) * 16), d[f"y_{s}"]])
        for s in ("train", "val", "test")
    ]
    ours = np.concatenate(rows).astype(np.int64)
    assert np.abs((d["X_val"] + d["mean_image"]) * 16 - rows[1][:, :64]).max() < 1e-4
    full = np.column_stack([X, y]).astype(np.int64)
    np.testing.assert_array_equal(ours[np.lexsort(ours.T)], full[np.lexsort(full.T)])
    raw = datasets.get_dataset("digits", subtract_mean=False, flatten=False, dtype=np.float64)
    assert raw["X_train"].shape == (1197, 1, 8, 8) and raw["X_train"].dtype == np.float64
    assert raw["X_train"].min() == 0 and raw["X_train"].max() == 1
    assert raw["mean_image"].shape == (1, 8, 8) and not raw["mean_image"].any()


def test_get_dataset_digits_split_semantics():
    kw = dict(subtract_mean=False, num_test=20)
    a = datasets.get_dataset("digits", num_training=100, num_validation=50, **kw)
    b = datasets.get_dataset("digits", num_training=150, num_validation=0, **kw)
    np.testing.assert_array_equal(a["X_val"], b["X_train"][100:])  # val = the next ones
    np.testing.assert_array_equal(a["X_test"], b["X_test"])  # test does not move
    assert a["X_train"].shape == (100, 64) and a["X_test"].shape == (20, 64)
    c = datasets.get_dataset("digits", seed=1, **kw)
    assert not np.array_equal(c["y_train"], datasets.get_dataset("digits", **kw)["y_train"])
    np.testing.assert_array_equal(
        c["X_test"], datasets.get_dataset("digits", seed=1, **kw)["X_test"]
    )


@pytest.mark.parametrize(
    "kwargs, error, phrase",
    [
        (dict(name="mnist"), ValueError, "cifar10, digits"),
        (dict(num_training=1400, num_validation=98), ValueError, "too many"),
        (dict(num_test=301), ValueError, "too many"),
        (dict(num_training=0), ValueError, "num_training"),
        (dict(num_validation=-1), ValueError, "num_validation"),
        (dict(num_training=1.5), TypeError, "num_training"),
        (dict(num_test=True), TypeError, "num_test"),
        (dict(dtype=np.int32), TypeError, "dtype"),
        (dict(name="cifar10", num_training=49001), ValueError, "too many"),
    ],
)
def test_get_dataset_rejects_bad_requests(kwargs, error, phrase):
    kwargs = {"name": "digits", **kwargs}
    with pytest.raises(error, match=phrase):
        datasets.get_dataset(**kwargs)


# ---------------------------------------------------------------- the course split
def course_get_CIFAR10_data(
    X_train, y_train, X_test, y_test, num_training, num_validation, num_test, subtract_mean=True
):
    """cs231n data_utils.get_CIFAR10_data after load_CIFAR10 (NHWC float64), verbatim."""
    mask = list(range(num_training, num_training + num_validation))
    X_val = X_train[mask]
    y_val = y_train[mask]
    mask = list(range(num_training))
    X_train = X_train[mask]
    y_train = y_train[mask]
    mask = list(range(num_test))
    X_test = X_test[mask]
    y_test = y_test[mask]
    if subtract_mean:
        mean_image = np.mean(X_train, axis=0)
        X_train -= mean_image
        X_val -= mean_image
        X_test -= mean_image
    X_train = X_train.transpose(0, 3, 1, 2).copy()
    X_val = X_val.transpose(0, 3, 1, 2).copy()
    X_test = X_test.transpose(0, 3, 1, 2).copy()
    return {
        "X_train": X_train,
        "y_train": y_train,
        "X_val": X_val,
        "y_val": y_val,
        "X_test": X_test,
        "y_test": y_test,
    }


def _course_batch(data_rows, labels):
    """cs231n load_CIFAR_batch: reshape, transpose to NHWC, astype('float')."""
    return data_rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype("float"), np.array(labels)


def _course_load(src):
    parts = [_course_batch(*src[f]) for f in FILES]
    Xtr, Ytr = np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]])
    return Xtr, Ytr, parts[5][0], parts[5][1]


def _assert_split_equal(ours, course, dtype=np.float32):
    for k, v in course.items():
        assert ours[k].dtype == (dtype if k.startswith("X") else np.int64), k
        np.testing.assert_array_equal(ours[k], v.astype(ours[k].dtype), err_msg=k)


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    """Fake batches of 20 images, with the 10000-row check relaxed."""
    src = write_cifar(tmp_path / "cifar-10-batches-py", n=20, seed=3)
    relaxed = functools.partial(datasets.load_cifar10, rows_per_file=None)
    monkeypatch.setattr(datasets, "load_cifar10", relaxed)
    return tmp_path / "cifar-10-batches-py", src


@pytest.mark.parametrize("subtract_mean", [True, False])
def test_get_dataset_cifar10_matches_course(fake_cifar, subtract_mean):
    folder, src = fake_cifar
    course = course_get_CIFAR10_data(*_course_load(src), 60, 30, 15, subtract_mean)
    ours = datasets.get_dataset("cifar10", folder, 60, 30, 15, subtract_mean, flatten=False)
    _assert_split_equal(ours, course)
    flat = datasets.get_dataset("cifar10", folder.parent, 60, 30, 15, subtract_mean)
    np.testing.assert_array_equal(flat["X_val"], ours["X_val"].reshape(30, 3072))
    assert flat["mean_image"].shape == (3072,) and flat["mean_image"].dtype == np.float64
    with pytest.raises(ValueError, match="100 train/val"):
        datasets.get_dataset("cifar10", folder, 80, 21, 15)


def test_facade_matches_course(fake_cifar):
    folder, src = fake_cifar
    course = course_get_CIFAR10_data(*_course_load(src), 50, 40, 20)
    ours = data_utils.get_CIFAR10_data(50, 40, 20, cifar10_dir=folder)
    assert sorted(ours) == sorted(course)
    _assert_split_equal(ours, course)
    for got, want in zip(data_utils.load_CIFAR10(folder), _course_load(src), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    with pytest.raises(DataError, match="are missing from"):
        data_utils.get_CIFAR10_data(cifar10_dir=folder.parent / "elsewhere")


# ---------------------------------------------------------------- the real CIFAR-10
@pytest.fixture(scope="module")
def real():
    assert real_cifar10_dir("test_batch") == REAL
    start = time.perf_counter()
    arrays = datasets.load_cifar10(REAL)
    print(f"load_cifar10({REAL}) took {time.perf_counter() - start:.2f} s")
    return arrays


@pytest.mark.slow
def test_real_cifar10(real):
    Xtr, ytr, Xte, yte = real
    assert Xtr.shape == (50000, 3, 32, 32) and Xte.shape == (10000, 3, 32, 32)
    assert Xtr.dtype == Xte.dtype == np.float32 and ytr.dtype == yte.dtype == np.int64
    assert ytr[0] == 6 and yte[0] == 3  # frog, cat (SOURCE.md)
    np.testing.assert_array_equal(Xtr[0].reshape(-1)[:3], [59, 43, 50])  # data_batch_1 row 0
    np.testing.assert_array_equal(Xtr[0].reshape(-1)[-3:], [140, 84, 72])
    np.testing.assert_array_equal(np.bincount(ytr), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(yte), [1000] * 10)
    mean = Xtr.mean(axis=(0, 2, 3), dtype=np.float64)  # the published per-channel mean
    np.testing.assert_allclose(
        mean, [125.306918046875, 122.950394140625, 113.86538318359375], rtol=1e-12
    )


@pytest.mark.slow
def test_real_course_split(real, monkeypatch):
    Xtr, ytr, Xte, yte = real
    as_uint8 = tuple(a.astype(np.uint8) if a.dtype == np.float32 else a for a in real)
    monkeypatch.setattr(datasets, "load_cifar10", lambda root, dtype=None: as_uint8)  # read once
    nhwc = lambda X: X.transpose(0, 2, 3, 1).astype(np.float64)
    course = course_get_CIFAR10_data(
        nhwc(Xtr[:3000]), ytr[:3000], nhwc(Xte[:500]), yte[:500], 2000, 1000, 500
    )
    _assert_split_equal(data_utils.get_CIFAR10_data(2000, 1000, 500, cifar10_dir=REAL), course)
    full = data_utils.get_CIFAR10_data(cifar10_dir=REAL)
    assert {k: v.shape for k, v in full.items()} == {
        "X_train": (49000, 3, 32, 32),
        "y_train": (49000,),
        "X_val": (1000, 3, 32, 32),
        "y_val": (1000,),
        "X_test": (1000, 3, 32, 32),
        "y_test": (1000,),
    }
    np.testing.assert_array_equal(full["y_val"], ytr[49000:])
    np.testing.assert_allclose(full["X_train"].mean(axis=0, dtype=np.float64), 0, atol=1e-3)


# ---------------------------------------------------------------- synthetic data and guards
def test_synthetic_is_learnable_and_seeded():
    X, y = datasets.synthetic(300, 20, 5, seed=3)
    assert X.shape == (300, 20) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [60] * 5)
    centroids = np.stack([X[y == c].mean(axis=0) for c in range(5)])
    nearest = np.argmin(((X[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == y).mean() > 0.95
    X2, y2 = datasets.synthetic(300, 20, 5, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(X, datasets.synthetic(300, 20, 5, seed=4)[0])
    assert datasets.synthetic(4, 3, 2, dtype=np.float64)[0].dtype == np.float64
    with pytest.raises(ValueError, match="num_classes"):
        datasets.synthetic(10, 3, 0)
    with pytest.raises(TypeError, match="dtype"):
        datasets.synthetic(10, 3, 2, dtype=np.int32)


def test_check_finite():
    datasets.check_finite(np.ones((2, 3)), "X")
    X = np.ones((2, 3))
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"X_train holds 1 NaN and 0 inf .*\(1, 2\)"):
        datasets.check_finite(X, "X_train")
    with pytest.raises(ValueError, match="1 inf"):
        datasets.check_finite(np.array([1.0, -np.inf]), "X")
    with pytest.raises(TypeError, match="numeric"):
        datasets.check_finite(np.array(["a"]), "X")


def test_check_labels():
    import jax.numpy as jnp

    datasets.check_labels(np.array([0, 2, 1]), 3, "y")
    datasets.check_labels(jnp.array([0, 1], dtype=jnp.int32), 2, "y")
    with pytest.raises(TypeError, match="y_train .*float"):
        datasets.check_labels(np.array([0.0, 1.0]), 3, "y_train")
    with pytest.raises(TypeError, match="bool"):
        datasets.check_labels(np.array([True, False]), 3, "y")
    with pytest.raises(ValueError, match="1-D"):
        datasets.check_labels(np.zeros((2, 2), np.int64), 3, "y")
    with pytest.raises(ValueError, match="0..2"):
        datasets.check_labels(np.array([0, 3]), 3, "y")
    with pytest.raises(ValueError, match="0..2"):
        datasets.check_labels(np.array([-1, 0]), 3, "y")

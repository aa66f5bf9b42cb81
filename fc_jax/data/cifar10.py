"""One CIFAR-10 batch file, read safely and checked to be the official one.

Contract: ``read_cifar10_batch(path)`` parses a python-pickle batch with an unpickler that builds
numpy arrays and nothing else, checks its keys, shape and labels, and (for the official files:
``data_batch_1..5`` and ``test_batch`` of 10000 rows, or whenever ``verify=True``) checks that
it is the official content: either the file's md5 is the official one (torchvision's table, the
files inside the archive whose md5 is ``CIFAR10_MD5``), or the md5 of its pixels and labels is
(``CIFAR10_CONTENT_MD5``, which also accepts a pixel-exact copy pickled differently). Every fault
is one line of ``DataError`` naming the file, the fault and the fix. Host side: numpy, never jax.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct

__all__ = [
    "CIFAR10_CONTENT_MD5",
    "CIFAR10_FILE_MD5",
    "CIFAR10_FILES",
    "CIFAR10_FOLDER",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DataError",
    "fix_hint",
    "read_cifar10_batch",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
# md5 of each file in the official archive, as listed by torchvision's CIFAR10 class.
CIFAR10_FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
# md5 of data.tobytes() (10000, 3072) uint8 followed by labels as little-endian int64: the
# content, whatever pickle wrote it. Computed from a pixel-exact copy (its per-channel training
# mean equals the published [125.306918046875, 122.950394140625, 113.86538318359375] exactly).
CIFAR10_CONTENT_MD5 = {
    "data_batch_1": "6be289d59adb90df5477a9061ec43be9",
    "data_batch_2": "467f3258faa85906966f752a9844e326",
    "data_batch_3": "bdb9ee9156c06067a92dcf507d563ad5",
    "data_batch_4": "04595ffefc9c7f5294f24734f6418a2b",
    "data_batch_5": "daad72ced81990e45a20b1c319bec2e2",
    "test_batch": "935da9278896be86f011e7b07552559f",
}


class DataError(ValueError):
    """A data file is missing, incomplete or corrupt, or could not be downloaded."""


def fix_hint(folder: os.PathLike | str) -> str:
    """The instructions every DataError ends with: which files to put where."""
    return (
        f"To fix it, run `python scripts/get_cifar10.py`, or download {CIFAR10_URL} "
        f"(md5 {CIFAR10_MD5}) by hand and extract it so that {Path(folder)} holds "
        f"{', '.join(CIFAR10_FILES)}; or set FC_JAX_DATA_DIR to a {CIFAR10_FOLDER} folder or "
        "its parent."
    )


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
    path: os.PathLike | str, rows: int | None = 10000, verify: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Parse and check one python-pickle batch file with the restricted unpickler.

    Args:
      path: e.g. ``.../cifar-10-batches-py/data_batch_1``.
      rows: the number of images the file must hold (10000 in the real data); None: any.
      verify: check the content is the official one (see the module docstring). None (default):
        when the file has an official name and ``rows`` is 10000, the official layout; small
        test files in the same format (``rows=4``) are then not checked. False: never.

    Returns:
      (data (rows, 3072) uint8, channel-planar R|G|B rows of 32x32; labels (rows,) int64).

    Raises:
      DataError: the file is missing, truncated, corrupt, refused, or has the wrong content.
    """
    path = Path(path)

    def bad(what: str) -> DataError:
        return DataError(f"CIFAR-10 file {path} {what}. " + fix_hint(path.parent))

    if verify is None:
        verify = path.name in CIFAR10_FILE_MD5 and rows == 10000
    if verify and path.name not in CIFAR10_FILE_MD5:
        raise bad(f"has no official checksum: its name is not one of {', '.join(CIFAR10_FILES)}")
    try:
        raw = path.read_bytes()
        f = io.BytesIO(raw)
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
        why = " ".join(str(exc).split())[:200]
        raise bad(f"is truncated or corrupt ({type(exc).__name__}: {why})") from exc
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
    labels = labels.astype(np.int64)
    if verify:
        _verify(path, raw, data, labels)
    return data, labels


def _verify(path: Path, raw: bytes, data: np.ndarray, labels: np.ndarray) -> None:
    """Raise DataError unless the file or its content has the official md5."""
    got = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if got == CIFAR10_FILE_MD5[path.name]:
        return
    content = hashlib.md5(np.ascontiguousarray(data).tobytes(), usedforsecurity=False)
    content.update(labels.astype("<i8").tobytes())
    if content.hexdigest() == CIFAR10_CONTENT_MD5[path.name]:
        return
    raise DataError(
        f"{path} is corrupt: its md5 {got} is not the official {CIFAR10_FILE_MD5[path.name]}, "
        f"nor are its pixels and labels the official ones; delete {path.parent} to download it "
        "again (or pass verify=False to read it anyway)"
    )

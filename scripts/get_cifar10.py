"""Download CIFAR-10 (python version), check its md5 and unpack it: the only networked code.

Usage:
  python scripts/get_cifar10.py                 # into $FC_JAX_DATA_DIR, else ~/.cache/fc_jax
  python scripts/get_cifar10.py --data-dir DIR  # into DIR/cifar-10-batches-py
  python scripts/get_cifar10.py --check         # only parse and check the files already there
"""

import argparse
import sys

from fc_jax.data.cifar10 import CIFAR10_MD5, CIFAR10_URL, DataError
from fc_jax.data.datasets import load_cifar10
from fc_jax.data.download import cifar10_dir, download_cifar10, ensure_cifar10


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder to hold cifar-10-batches-py/")
    parser.add_argument("--url", default=CIFAR10_URL, help="archive URL (file:// works)")
    parser.add_argument("--md5", default=CIFAR10_MD5, help="expected md5 of the archive")
    parser.add_argument("--check", action="store_true", help="do not download, only verify")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        target = cifar10_dir(args.data_dir)  # this script downloads where it is told
        if not args.check and not target.exists():
            download_cifar10(target.parent, args.url, args.md5, progress=not args.quiet)
        folder = ensure_cifar10(args.data_dir, download=False)
        Xtr, ytr, Xte, yte = load_cifar10(folder, dtype="uint8")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"CIFAR-10 OK in {folder}: train {Xtr.shape}, test {Xte.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

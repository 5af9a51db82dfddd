r"""Readers of data files that need no torch: the IDX format of MNIST and Fashion-MNIST.

Used by the neural data sets (:mod:`kdtheory.neural.data`) and by the theory on real images
(:mod:`kdtheory.realdata`).  Every reader checks what it reads: a missing file raises
:class:`DatasetNotFoundError`, a truncated, padded or corrupt one :class:`DataError` naming the file.
A gzipped IDX file is decompressed only up to the size its header declares (plus one byte, to
notice padding): a small ``.gz`` that expands to gigabytes costs no more than the declared array.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_FASHION_MNIST_ROOT",
    "MAX_IDX_BYTES",
    "DataError",
    "DatasetNotFoundError",
    "fashion_mnist_arrays",
    "find_file",
    "read_bytes",
    "read_idx",
    "read_idx_pair",
]

DEFAULT_FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
#: the largest IDX data block :func:`read_idx` accepts by default (Fashion-MNIST's is 47 MB)
MAX_IDX_BYTES = 2**30


class DataError(ValueError):
    """A data file exists but is truncated, corrupt or inconsistent with its companions."""


class DatasetNotFoundError(FileNotFoundError):
    """The files of a data set are absent (the message says where they were looked for)."""


_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _reading(path: Path, action):
    """``action(file object)`` on ``path`` (gunzipped for ``.gz``), with read errors mapped to
    :class:`DatasetNotFoundError` / :class:`DataError`."""
    try:
        with _open(path) as fh:
            return action(fh)
    except (EOFError, gzip.BadGzipFile, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DatasetNotFoundError(f"{path}: file not found") from exc
        raise DataError(f"{path}: cannot read ({exc}); the file is truncated or corrupt") from exc


def read_bytes(path: str | Path) -> bytes:
    """All bytes of ``path``, transparently gunzipped when the name ends in ``.gz``."""
    return _reading(Path(path), lambda fh: fh.read())


def read_idx(path: str | Path, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read one IDX file (the MNIST / Fashion-MNIST format), gzipped or not.

    The format: two zero bytes, a type code (0x08 uint8 … 0x0E float64), the number of
    dimensions d, then d big-endian uint32 sizes, then the data in C order.  The header is read
    first; then exactly the declared number of data bytes and one more (which must not exist), so
    that decompression stops at the declared size.

    Parameters
    ----------
    path : str or Path
        The file; a ``.gz`` suffix means gzip.
    max_bytes : int
        Refuse a header that declares more data bytes than this (default :data:`MAX_IDX_BYTES`).

    Returns
    -------
    numpy.ndarray
        The array with the stored shape and dtype (native byte order).

    Raises
    ------
    DataError
        Bad magic, unknown type code, a declared size above ``max_bytes``, or a data length
        different from the product of the sizes (a truncated or padded file).
    DatasetNotFoundError
        The file does not exist.
    """
    path = Path(path)

    def action(fh):
        head = fh.read(4)
        if len(head) < 4:
            raise DataError(f"{path}: truncated IDX header ({len(head)} bytes)")
        if head[0] != 0 or head[1] != 0:
            raise DataError(
                f"{path}: not an IDX file (magic starts {head[:2]!r}, expected b'\\x00\\x00')"
            )
        code, ndim = head[2], head[3]
        if code not in _IDX_DTYPES:
            raise DataError(f"{path}: unknown IDX type code 0x{code:02x}")
        sizes = fh.read(4 * ndim)
        if len(sizes) < 4 * ndim:
            raise DataError(
                f"{path}: truncated IDX header (needs {4 + 4 * ndim} bytes, has {4 + len(sizes)})"
            )
        shape = struct.unpack(f">{ndim}I", sizes)
        dtype = _IDX_DTYPES[code]
        expected = math.prod(shape) * dtype.itemsize
        if expected > max_bytes:
            raise DataError(
                f"{path}: header declares shape {shape}, {expected} data bytes, above the limit "
                f"of {max_bytes} (max_bytes)"
            )
        raw = fh.read(expected + 1)  # at most one byte past the declared end
        if len(raw) != expected:
            found = f"more than {expected}" if len(raw) > expected else str(len(raw))
            raise DataError(
                f"{path}: shape {shape} needs {expected} data bytes but the file has {found} "
                "(truncated or corrupt)"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))

    return _reading(path, action)


def find_file(root: Path, stem: str) -> Path:
    """``root/stem.gz`` or ``root/stem``; raises :class:`DatasetNotFoundError` if neither."""
    for cand in (root / f"{stem}.gz", root / stem):
        if cand.is_file():
            return cand
    raise DatasetNotFoundError(f"{root}: missing {stem}[.gz]")


def read_idx_pair(root: Path, prefix: str, least: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, n × H × W) and labels (int64 in 0…9) of ``prefix`` (train / t10k) in
    ``root``; the images file must hold at least ``least`` images."""
    image_file = find_file(root, f"{prefix}-images-idx3-ubyte")
    images = read_idx(image_file)
    labels = read_idx(find_file(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{root}: {prefix} images must be uint8 n×H×W, got {images.dtype} {images.shape}"
        )
    if images.shape[0] < least:
        raise DataError(
            f"{image_file}: holds {images.shape[0]} images; at least {least} are needed"
            + (" (the validation split is taken from them)" if least > 1 else "")
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{root}: {prefix} has {images.shape[0]} images but labels of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{root}: {prefix} labels outside 0…9")
    return images, labels.astype(np.int64)


def fashion_mnist_arrays(
    root: str | Path | None = None, *, least: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The Fashion-MNIST training and test images and labels as uint8 / int64 arrays.

    Parameters
    ----------
    root : str, Path or None
        Folder with ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``; default
        ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
    least : int
        The training file must hold at least this many images.

    Returns
    -------
    x_train, y_train, x_test, y_test : numpy.ndarray
        Images n × H × W (uint8) and labels (int64).
    """
    root = Path(root) if root is not None else DEFAULT_FASHION_MNIST_ROOT
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found: {root} is not a folder (apt-get install dataset-fashion-mnist, "
            "or pass --data-root to a folder with the IDX files)"
        )
    x_train, y_train = read_idx_pair(root, "train", least=least)
    x_test, y_test = read_idx_pair(root, "t10k", least=1)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{root}: train images {x_train.shape[1:]} vs test {x_test.shape[1:]}")
    return x_train, y_train, x_test, y_test

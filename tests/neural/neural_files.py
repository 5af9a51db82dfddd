"""Writers of small IDX and CIFAR files in the standard formats (for the neural tests)."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, arr: np.ndarray) -> Path:
    """Write ``arr`` (uint8) as an IDX file (gzipped when the name ends in .gz)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if path.suffix == ".gz":
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def write_fashion_folder(
    root: Path, n_train: int = 40, n_test: int = 20, hw: int = 6, seed: int = 0
):
    """A Fashion-MNIST-like folder with random images of hw×hw pixels; returns the arrays."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    xtr = rng.integers(0, 256, (n_train, hw, hw), dtype=np.uint8)
    ytr = (np.arange(n_train) % 10).astype(np.uint8)
    xte = rng.integers(0, 256, (n_test, hw, hw), dtype=np.uint8)
    yte = (np.arange(n_test) % 10).astype(np.uint8)
    write_idx(root / "train-images-idx3-ubyte.gz", xtr)
    write_idx(root / "train-labels-idx1-ubyte.gz", ytr)
    write_idx(root / "t10k-images-idx3-ubyte.gz", xte)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", yte)
    return xtr, ytr, xte, yte


def cifar_batch_bytes(
    n: int, seed: int, *, legacy_numpy_name: bool = False
) -> tuple[bytes, np.ndarray, list]:
    """A pickled CIFAR-10 batch dict (bytes keys, as Python 2 wrote them) with n images.

    ``legacy_numpy_name`` rewrites the array constructor's module to ``numpy.core.multiarray``,
    the name in the real batches (written by numpy 1.x under Python 2).
    """
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(i % 10) for i in range(n)]
    batch = {
        b"batch_label": b"training batch",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    raw = pickle.dumps(batch, protocol=3)
    if legacy_numpy_name:
        assert b"numpy._core.multiarray\n_reconstruct" in raw
        raw = raw.replace(
            b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct"
        )
    return raw, data, labels


def write_cifar_folder(root: Path, per_batch: int = 20, legacy: bool = True) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(
            cifar_batch_bytes(per_batch, i, legacy_numpy_name=legacy)[0]
        )
    (folder / "test_batch").write_bytes(
        cifar_batch_bytes(per_batch, 99, legacy_numpy_name=legacy)[0]
    )
    return folder


def python2_cifar_batch_bytes(n: int, seed: int) -> tuple[bytes, np.ndarray, list[int]]:
    """A CIFAR-10 batch pickled opcode by opcode as Python 2's ``cPickle.dump(batch, f, 2)`` with
    numpy 1.x wrote the official ``cifar-10-batches-py`` files.

    Protocol 2; a dict filled by one MARK … SETITEMS in the order batch_label, labels, data,
    filenames; Python 2 ``str`` as SHORT_BINSTRING / BINSTRING; memo indices from 1 (BINPUT, then
    LONG_BINPUT past 255); lists appended in batches of 1000; the array as
    ``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b')`` filled by BUILD with
    ``(1, (n, 3072), dtype('u1', 0, 1) + BUILD (3, '|', None, None, None, -1, -1, 0), False,
    raw)``.
    """
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    out = bytearray(b"\x80\x02")  # PROTO 2
    memo = [0]

    def put() -> None:
        memo[0] += 1
        i = memo[0]
        out.extend(b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i))

    def string(s: bytes) -> None:  # a Python 2 str
        if len(s) < 256:
            out.extend(b"U" + bytes([len(s)]) + s)
        else:
            out.extend(b"T" + struct.pack("<i", len(s)) + s)
        put()

    def integer(v: int) -> None:
        if 0 <= v < 256:
            out.extend(b"K" + bytes([v]))
        elif 0 <= v < 65536:
            out.extend(b"M" + struct.pack("<H", v))
        else:
            out.extend(b"J" + struct.pack("<i", v))

    def glob(module: bytes, name: bytes) -> None:
        out.extend(b"c" + module + b"\n" + name + b"\n")
        put()

    def str_list(items: list, write) -> None:
        out.extend(b"]")  # EMPTY_LIST
        put()
        for start in range(0, len(items), 1000):
            out.extend(b"(")  # MARK
            for item in items[start : start + 1000]:
                write(item)
            out.extend(b"e")  # APPENDS

    out.extend(b"}")  # EMPTY_DICT
    put()
    out.extend(b"(")  # MARK for SETITEMS
    string(b"batch_label")
    string(b"training batch 1 of 5")
    string(b"labels")
    str_list(labels, integer)
    string(b"data")
    glob(b"numpy.core.multiarray", b"_reconstruct")
    glob(b"numpy", b"ndarray")
    out.extend(b"K\x00\x85")  # (0,)
    string(b"b")
    out.extend(b"\x87R")  # TUPLE3, REDUCE
    put()
    out.extend(b"(K\x01")  # MARK, version 1
    integer(n)
    integer(3072)
    out.extend(b"\x86")  # shape (n, 3072)
    glob(b"numpy", b"dtype")
    string(b"u1")
    out.extend(b"K\x00K\x01\x87R")  # ('u1', 0, 1), REDUCE
    put()
    out.extend(b"(K\x03")  # dtype state (3, '|', None, None, None, -1, -1, 0)
    string(b"|")
    out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")  # TUPLE, BUILD
    out.extend(b"\x89")  # NEWFALSE: C order
    string(data.tobytes())
    out.extend(b"tb")  # TUPLE, BUILD
    string(b"filenames")
    str_list([f"img_{i:05d}.png".encode() for i in range(n)], string)
    out.extend(b"u.")  # SETITEMS, STOP
    return bytes(out), data, labels

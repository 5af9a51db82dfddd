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

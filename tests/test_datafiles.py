"""The torch-free IDX reader: decompression stops at the size the header declares."""

import gzip
import struct
import tracemalloc

import numpy as np
import pytest

from kdtheory.datafiles import DataError, DatasetNotFoundError, fashion_mnist_arrays, read_idx


def _idx_header(shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def test_gzip_bomb_is_read_only_to_the_declared_size(tmp_path):
    # a header declaring 10 data bytes, followed by 64 MiB of zeros: the .gz is ~64 kB
    bomb = tmp_path / "bomb-idx1-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as fh:
        fh.write(_idx_header((10,)))
        chunk = bytes(2**20)
        for _ in range(64):
            fh.write(chunk)
    assert bomb.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"needs 10 data bytes but the file has more than 10"):
            read_idx(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # reading the whole stream would allocate ≥ 64 MiB; the reader holds the 11 declared bytes
    # plus gzip's own read buffers (well under 4 MiB)
    assert peak < 4 * 2**20


def test_declared_size_above_the_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(_idx_header((60000, 1000, 1000)) + bytes(100))
    with pytest.raises(DataError, match=r"above the limit .*max_bytes"):
        read_idx(path)
    small = tmp_path / "small-idx1-ubyte"
    small.write_bytes(_idx_header((100,)) + bytes(100))
    with pytest.raises(DataError, match="max_bytes"):
        read_idx(small, max_bytes=99)
    assert read_idx(small, max_bytes=100).shape == (100,)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_roundtrip_and_padding(tmp_path, suffix):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx_header(arr.shape) + arr.tobytes()
    good, pad = tmp_path / f"good{suffix}", tmp_path / f"pad{suffix}"
    write = gzip.compress if suffix else bytes
    good.write_bytes(write(raw))
    pad.write_bytes(write(raw + b"\x00"))
    out = read_idx(good)
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable
    with pytest.raises(DataError, match="more than 24"):
        read_idx(pad)


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist"):
        fashion_mnist_arrays(tmp_path / "absent")
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte"):
        fashion_mnist_arrays(tmp_path)

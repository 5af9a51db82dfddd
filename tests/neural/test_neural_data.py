"""kdtheory.neural.data: IDX and CIFAR readers on generated files, the restricted unpickler,
truncated files, the synthetic set's definition and seeded splits."""

import codecs
import gzip
import os
import pickle
import pickletools
import shlex
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from neural_files import (  # noqa: E402
    cifar_batch_bytes,
    python2_cifar_batch_bytes,
    write_cifar_folder,
    write_idx,
)
from numpy._core.multiarray import _reconstruct  # noqa: E402
from numpy._core.numeric import _frombuffer  # noqa: E402

from kdtheory.neural.data import (  # noqa: E402
    DataError,
    DatasetNotFoundError,
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    make_synthetic,
    read_cifar_batch,
    read_idx,
    restricted_loads,
)

# ------------------------------------------------------------------------------------ IDX ---


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_roundtrip(tmp_path, suffix):
    arr = np.arange(60, dtype=np.uint8).reshape(5, 4, 3)
    path = write_idx(tmp_path / f"a-idx3-ubyte{suffix}", arr)
    out = read_idx(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


def test_read_idx_big_endian_int32(tmp_path):
    # type code 0x0C: big-endian int32 — values must come back in native order
    vals = np.array([1, -2, 70000], dtype=">i4")
    raw = bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + vals.tobytes()
    (tmp_path / "x").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), [1, -2, 70000])


def test_read_idx_truncated_raw_and_gz(tmp_path):
    arr = np.ones((4, 5, 5), dtype=np.uint8)
    raw = (write_idx(tmp_path / "full", arr)).read_bytes()
    (tmp_path / "cut").write_bytes(raw[:-7])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut")
    (tmp_path / "head").write_bytes(raw[:6])
    with pytest.raises(DataError, match="header"):
        read_idx(tmp_path / "head")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(tmp_path / "cut.gz")
    # a padded file is as wrong as a truncated one
    (tmp_path / "pad").write_bytes(raw + b"\0")
    with pytest.raises(DataError):
        read_idx(tmp_path / "pad")


def test_read_idx_bad_magic(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x00\x08\x01" + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(DataError, match="not an IDX"):
        read_idx(tmp_path / "bad")


def test_fashion_mnist_loader_on_generated_files(fashion_root):
    root, (_, ytr, _, yte) = fashion_root
    d = load_fashion_mnist(root, seed=3, val_size=8)
    assert d.input_shape == (1, 6, 6) and d.num_classes == 10
    assert (len(d.train), len(d.val), len(d.test)) == (32, 8, 20)
    # the test split keeps the file order; its labels are the file's labels
    np.testing.assert_array_equal(d.test.y.numpy(), yte)
    # standardisation with the train statistics: train pixels have mean 0, std 1
    assert float(d.train.x.mean()) == pytest.approx(0.0, abs=1e-5)  # float32 sums of 1152 values
    assert float(d.train.x.std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
    # train ∪ val is a permutation of the training file: label counts add up
    counts = np.bincount(np.concatenate([d.train.y.numpy(), d.val.y.numpy()]), minlength=10)
    np.testing.assert_array_equal(counts, np.bincount(ytr, minlength=10))
    # same seed → same split, other seed → other split
    d2 = load_fashion_mnist(root, seed=3, val_size=8)
    assert torch.equal(d.val.x, d2.val.x)
    d3 = load_fashion_mnist(root, seed=4, val_size=8)
    assert not torch.equal(d.val.x, d3.val.x)


def test_fashion_mnist_mismatched_and_missing(tmp_path, fashion_root):
    root, _ = fashion_root
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(39, dtype=np.uint8))  # 40 images
    with pytest.raises(DataError, match="40 images"):
        load_fashion_mnist(root)
    with pytest.raises(DatasetNotFoundError):
        load_fashion_mnist(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="train-images"):
        load_fashion_mnist(empty)


def test_fashion_mnist_file_without_images(fashion_root):
    root, _ = fashion_root
    write_idx(root / "train-images-idx3-ubyte.gz", np.zeros((0, 6, 6), np.uint8))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: holds 0 images") as exc:
        load_fashion_mnist(root)
    assert "val_size" not in str(exc.value)
    write_idx(root / "train-images-idx3-ubyte.gz", np.zeros((1, 6, 6), np.uint8))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(1, np.uint8))
    with pytest.raises(DataError, match="holds 1 images; at least 2 are needed"):
        load_fashion_mnist(root)


# ---------------------------------------------------------------------------------- CIFAR ---


@pytest.mark.parametrize("legacy", [False, True])
def test_read_cifar_batch(tmp_path, legacy):
    raw, data, labels = cifar_batch_bytes(12, seed=0, legacy_numpy_name=legacy)
    (tmp_path / "data_batch_1").write_bytes(raw)
    x, y = read_cifar_batch(tmp_path / "data_batch_1")
    assert x.shape == (12, 3, 32, 32) and x.dtype == np.uint8
    # channel-major layout: the first 1024 values of a row are the red plane
    np.testing.assert_array_equal(x[5, 0].ravel(), data[5, :1024])
    np.testing.assert_array_equal(x[5, 2].ravel(), data[5, 2048:])
    np.testing.assert_array_equal(y, labels)


def test_official_cifar_format_python2_protocol_2(tmp_path):
    # a byte-faithful replica of data_batch_1: Python 2 cPickle, protocol 2, 10 000 × 3072 uint8
    raw, data, labels = python2_cifar_batch_bytes(10_000, seed=1)
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(raw)]
    assert raw[:6] == b"\x80\x02}q\x01(" and ops[0] == ("PROTO", 2)
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops
    # Python 2 str, never unicode: keys, file names and the 30 MB of pixels are BINSTRINGs
    names = {name for name, _ in ops}
    assert "BINSTRING" in names and not names & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES"}
    # the stdlib reads the replica as Python 3 reads the real files (encoding="bytes")
    ref = pickle.loads(raw, encoding="bytes")
    assert list(ref) == [b"batch_label", b"labels", b"data", b"filenames"]
    (tmp_path / "data_batch_1").write_bytes(raw)
    x, y = read_cifar_batch(tmp_path / "data_batch_1")
    assert x.shape == (10_000, 3, 32, 32) and x.dtype == np.uint8
    np.testing.assert_array_equal(x.reshape(10_000, 3072), ref[b"data"])
    np.testing.assert_array_equal(x.reshape(10_000, 3072), data)
    np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_batch_written_by_python3_numpy(tmp_path, protocol):
    # protocol 2 writes bytes through _codecs.encode, protocol 5 arrays through _frombuffer
    _, data, labels = cifar_batch_bytes(7, seed=protocol)
    batch = {b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"a"] * 7}
    (tmp_path / "b").write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y = read_cifar_batch(tmp_path / "b")
    np.testing.assert_array_equal(x.reshape(7, 3072), data)
    np.testing.assert_array_equal(y, labels)
    # other layouts and dtypes come back as the unrestricted stdlib unpickler builds them
    obj = {
        "f": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "t": np.arange(24, dtype=">i4").reshape(2, 3, 4).transpose(2, 0, 1),
        "e": np.zeros((0, 5), np.float32),
        "b": b"\xff\x00",
    }
    raw = pickle.dumps(obj, protocol=protocol)
    out, ref = restricted_loads(raw), pickle.loads(raw)
    for k in ("f", "t", "e"):
        assert out[k].dtype == ref[k].dtype and out[k].shape == obj[k].shape
        assert out[k].flags.f_contiguous == ref[k].flags.f_contiguous
        np.testing.assert_array_equal(out[k], obj[k])
    assert out["b"] == b"\xff\x00"


_HUGE = 2**62


@pytest.mark.parametrize(
    ("proto", "opcode"),
    [
        (4, b"\x8e" + struct.pack("<Q", _HUGE)),  # BINBYTES8
        (4, b"\x8d" + struct.pack("<Q", _HUGE)),  # BINUNICODE8
        (5, b"\x96" + struct.pack("<Q", _HUGE)),  # BYTEARRAY8
        (4, b"\x95" + struct.pack("<Q", _HUGE)),  # FRAME
        (3, b"B" + struct.pack("<I", 2**32 - 1)),  # BINBYTES
        (2, b"T" + struct.pack("<i", 2**31 - 1)),  # BINSTRING
        (2, b"X" + struct.pack("<I", 2**32 - 1)),  # BINUNICODE
        (2, b"\x8b" + struct.pack("<i", 2**31 - 1)),  # LONG4
    ],
)
def test_cifar_size_fields_checked_before_allocation(tmp_path, proto, opcode):
    (tmp_path / "data_batch_1").write_bytes(bytes([0x80, proto]) + opcode + b"abc.")
    with pytest.raises(DataError, match=r"data_batch_1: .*bad size field") as exc:
        read_cifar_batch(tmp_path / "data_batch_1")
    assert not isinstance(exc.value.__cause__, MemoryError)


class _Reduced:
    """Pickles as ``func(*args)``, then BUILD with ``state`` if given (crafted numpy pickles)."""

    def __init__(self, func, args, state=None):
        self.value = (func, args) if state is None else (func, args, state)

    def __reduce__(self):
        return self.value


_EMPTY = (np.ndarray, (0,), b"b")
_CRAFTED = {
    # numpy's own setstate raises MemoryError for this shape
    "state-larger-than-its-bytes": (_reconstruct, _EMPTY, (1, (2**62, 4), np.dtype("u1"), 0, b"")),
    "state-with-fewer-bytes": (_reconstruct, _EMPTY, (1, (10,), np.dtype("u1"), False, b"x")),
    "ndarray-called-directly": (np.ndarray, ((2**40,), "u1")),
    "reconstruct-with-a-large-shape": (_reconstruct, (np.ndarray, (2**40,), b"b")),
    "another-codec": (codecs.encode, ("x", "rot13")),
    "frombuffer-with-a-list": (_frombuffer, ([1, 2], np.dtype("u1"), (2,), "C")),
}


@pytest.mark.parametrize("case", list(_CRAFTED))
def test_unpickler_checks_the_arguments_of_allowed_globals(case):
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(pickle.dumps(_Reduced(*_CRAFTED[case]), protocol=2))


def test_unpickler_refuses_object_arrays_and_build_on_functions():
    with pytest.raises(pickle.UnpicklingError, match="holds Python objects"):
        restricted_loads(pickle.dumps(np.array([1, None], dtype=object), protocol=2))
    # BUILD may fill arrays and dtypes only, never set attributes on the allowed functions
    with pytest.raises(pickle.UnpicklingError, match="BUILD of a function"):
        restricted_loads(b"\x80\x02c_codecs\nencode\n}U\x01xK\x01sb.")


def test_cifar_loader_full_and_reduced(tmp_path):
    write_cifar_folder(tmp_path, per_batch=40)
    full = load_cifar10(tmp_path, val_size=20, seed=1)
    assert (len(full.train), len(full.val), len(full.test)) == (180, 20, 40)
    assert full.input_shape == (3, 32, 32)
    np.testing.assert_array_equal(np.bincount(full.val.y.numpy()), [2] * 10)  # class-balanced
    red = load_cifar10(tmp_path, val_size=20, seed=1, reduced=True, reduced_size=50)
    assert len(red.train) == 50 and red.name == "cifar10-reduced"
    np.testing.assert_array_equal(np.bincount(red.train.y.numpy()), [5] * 10)
    # same validation draw from the same seed; the images differ only by the per-channel affine
    # standardisation (train statistics differ), so per channel they correlate perfectly
    assert torch.equal(red.val.y, full.val.y)
    for c in range(3):
        r = np.corrcoef(red.val.x[:, c].ravel().numpy(), full.val.x[:, c].ravel().numpy())[0, 1]
        assert r == pytest.approx(1.0, abs=1e-6)  # float32 rounding of an exact affine map
    with pytest.raises(DatasetNotFoundError):
        load_cifar10(tmp_path / "absent")
    with pytest.raises(DatasetNotFoundError):
        load_dataset("cifar10", data_root=None)


class _Evil:
    """A pickle whose loading would run a shell command (touch a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Evil(marker)}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        restricted_loads(payload)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="eval"):
        restricted_loads(pickle.dumps(_EvalEvil()))
    # as a batch file: a DataError naming the file, and still no side effect
    (tmp_path / "data_batch_1").write_bytes(payload)
    with pytest.raises(DataError, match="refused"):
        read_cifar_batch(tmp_path / "data_batch_1")
    assert not marker.exists()
    # control: the payload is live — the standard unpickler does run it
    pickle.loads(payload)
    assert marker.exists()


def test_restricted_unpickler_accepts_plain_values():
    obj = {b"a": [1, 2, b"x", "y", 3.5], "n": np.arange(4, dtype=np.uint8)}
    out = restricted_loads(pickle.dumps(obj, protocol=4))
    assert out[b"a"] == [1, 2, b"x", "y", 3.5]
    np.testing.assert_array_equal(out["n"], np.arange(4))


def test_cifar_truncated_and_inconsistent(tmp_path):
    raw, _, _ = cifar_batch_bytes(10, seed=0)
    (tmp_path / "cut").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_cifar_batch(tmp_path / "cut")
    bad = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}
    (tmp_path / "short_labels").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match="labels"):
        read_cifar_batch(tmp_path / "short_labels")
    bad = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    (tmp_path / "narrow").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match="3072"):
        read_cifar_batch(tmp_path / "narrow")


# ------------------------------------------------------------------------ synthetic, digits ---


def test_synthetic_definition():
    d = make_synthetic(seed=0, n_teacher=3000, n_student=50, n_val=40, n_test=500, noise=0.0)
    assert len(d.teacher_split) == 3000 and len(d.train) == 50 and len(d.val) == 40
    x, y = d.teacher_split.x.numpy(), d.teacher_split.y.numpy()
    # x₃ = [sign x₁ + sign x₂ > 0] is 1 exactly when both are positive
    np.testing.assert_array_equal(x[:, 2], ((x[:, 0] > 0) & (x[:, 1] > 0)).astype(np.float32))
    # without noise y = [x₁x₂ > 0]
    np.testing.assert_array_equal(y, (x[:, 0] * x[:, 1] > 0).astype(np.int64))
    # x₁, x₂ standard normal: mean within 4 standard errors (4/√3000 ≈ 0.07)
    assert np.abs(x[:, :2].mean(0)).max() < 0.075
    noisy = make_synthetic(seed=0, n_teacher=3000, noise=1.0)
    xn, yn = noisy.teacher_split.x.numpy(), noisy.teacher_split.y.numpy()
    flips = np.mean(yn != (xn[:, 0] * xn[:, 1] > 0))
    # P(flip) = E Φ(−|x₁x₂|/s) ≈ 0.314 at s = 1 (quadrature by hand); 3000 draws → ± 0.034 at
    # 4 standard errors
    assert 0.28 < flips < 0.348
    again = make_synthetic(seed=0, n_teacher=3000, n_student=50, n_val=40, n_test=500, noise=0.0)
    assert torch.equal(again.train.x, d.train.x)
    with pytest.raises(ValueError, match="noise"):
        make_synthetic(noise=-1.0)


def test_digits_splits():
    d = load_digits(seed=0)
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    assert d.input_shape == (1, 8, 8)
    # the three splits partition the data: per-class counts add up to sklearn's
    from sklearn.datasets import load_digits as sk_digits

    counts = np.bincount(torch.cat([d.train.y, d.val.y, d.test.y]).numpy(), minlength=10)
    np.testing.assert_array_equal(counts, np.bincount(sk_digits().target, minlength=10))
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("mnist")


def test_student_subset_is_balanced_and_keeps_the_teacher_set():
    d = load_digits(seed=0)
    s = d.student_subset(50, seed=1)
    # the teacher keeps every training example, the student 5 per class drawn from them
    assert s.teacher_split is d.train and len(s.train) == 50
    np.testing.assert_array_equal(np.bincount(s.train.y.numpy(), minlength=10), np.full(10, 5))
    rows = {tuple(r) for r in d.train.x.flatten(1).numpy().round(6).tolist()}
    assert all(tuple(r) in rows for r in s.train.x.flatten(1).numpy().round(6).tolist())
    assert s.val is d.val and s.test is d.test
    assert s.info["n_teacher"] == len(d.train) and s.info["n_train"] == 50
    # seeded: same seed, same subset; another seed, another subset
    assert torch.equal(s.train.x, d.student_subset(50, seed=1).train.x)
    assert not torch.equal(s.train.x, d.student_subset(50, seed=2).train.x)
    with pytest.raises(ValueError, match="student_size must be a multiple of K = 10"):
        d.student_subset(55)
    with pytest.raises(ValueError, match=r"student_size must be an integer in \[10, "):
        d.student_subset(5)

r"""Data sets as whole tensors: readers, fixed seeded splits, and the synthetic set of
Gorpinich, Bakhteev & Strijov (2021–2022).

Every loader returns a :class:`DataSplits` holding train / validation / test tensors (and, for the
synthetic set, a separate larger teacher training set). Images are float32 scaled to [0, 1] and
then standardised per channel with the mean and standard deviation of the *training* split;
labels are int64 class indices 0 … K−1. Splits are drawn from ``np.random.default_rng(seed)``,
so the same seed gives the same split on any machine.

Data sets (``DATASETS``):

``digits``
    scikit-learn's bundled 8×8 digits (1797 images, K = 10); the embedded default, no files.
``synthetic``
    the set of Gorpinich et al.: x₁, x₂ ~ N(0, 1), x₃ = [sign x₁ + sign x₂ > 0],
    y = [x₁x₂ + δ > 0] with
    label noise δ ~ N(0, s²); the teacher's training set is much larger than the student's.
``fashion-mnist``
    the standard IDX files (``train-images-idx3-ubyte[.gz]`` …) from ``data_root``, by default
    the Debian package's folder ``/usr/share/datasets/fashion-mnist``.
``cifar10``, ``cifar10-reduced``
    the standard python batches (``cifar-10-batches-py``) in ``data_root``, read with a
    restricted unpickler; the reduced set keeps 12 800 class-balanced training images.

Missing files raise :class:`DatasetNotFoundError`; truncated or inconsistent files raise
:class:`DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from kdtheory.datafiles import (
    DEFAULT_FASHION_MNIST_ROOT,
    DataError,
    DatasetNotFoundError,
    fashion_mnist_arrays,
    read_bytes,
    read_idx,
)

__all__ = [
    "DATASETS",
    "DEFAULT_FASHION_MNIST_ROOT",
    "DataError",
    "DataSplits",
    "DatasetNotFoundError",
    "ForbiddenGlobalError",
    "Split",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "make_synthetic",
    "read_cifar_batch",
    "read_idx",
    "restricted_loads",
]

DATASETS = ("digits", "synthetic", "fashion-mnist", "cifar10", "cifar10-reduced")
CIFAR_REDUCED_TRAIN = 12_800


@dataclass(frozen=True)
class Split:
    """One split: inputs ``x`` (n × …, float32) and labels ``y`` (n, int64 class indices)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"split has {self.x.shape[0]} inputs but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        """The same split on ``device``."""
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class DataSplits:
    """A data set ready for training: fixed train / val / test splits as tensors.

    Attributes
    ----------
    name : str
        Data set name (one of ``DATASETS``).
    train, val, test : Split
        The student's training set, the validation set (for L_val and model selection) and the
        held-out test set.
    num_classes : int
        K, the number of classes.
    input_shape : tuple of int
        Shape of one input, e.g. ``(1, 28, 28)`` or ``(3,)``.
    teacher_train : Split or None
        The teacher's training set when it differs from the student's (the synthetic set,
        :meth:`student_subset`).
    info : dict
        Provenance: sizes, seed, file locations, generator parameters.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    teacher_train: Split | None = None
    info: dict | None = None

    @property
    def teacher_split(self) -> Split:
        """The split the teacher is trained on (``teacher_train`` if set, else ``train``)."""
        return self.teacher_train if self.teacher_train is not None else self.train

    @property
    def is_image(self) -> bool:
        """True for (C, H, W) inputs, False for feature vectors."""
        return len(self.input_shape) == 3

    def student_subset(self, size: int, seed: int = 0) -> DataSplits:
        """The student keeps a class-balanced random ``size`` of the training split; the teacher
        keeps all of it (``teacher_train``), as in Gorpinich et al. ("the student's data set is much
        smaller than the teacher's"). ``size`` must be a multiple of K in [K, len(train)]."""
        n, k = len(self.train), self.num_classes
        size = _check_size("student_size", size, k, n)
        if size % k:
            raise ValueError(f"student_size must be a multiple of K = {k}; got {size}")
        idx = _balanced_subset(self.train.y.cpu().numpy(), size // k, np.random.default_rng(seed))
        sub = torch.from_numpy(idx).to(self.train.y.device)
        info = {**(self.info or {}), "n_teacher": n, "n_train": size, "student_seed": seed}
        return replace(
            self,
            train=Split(self.train.x[sub], self.train.y[sub]),
            teacher_train=self.teacher_split,
            info=info,
        )

    def to(self, device: torch.device | str) -> DataSplits:
        """All splits moved to ``device`` (the whole data set lives on the device)."""
        tt = self.teacher_train.to(device) if self.teacher_train is not None else None
        return replace(
            self,
            train=self.train.to(device),
            val=self.val.to(device),
            test=self.test.to(device),
            teacher_train=tt,
        )


# ----------------------------------------------------------------------------------- CIFAR ---


class ForbiddenGlobalError(pickle.UnpicklingError):
    """A pickle refers to a global (a function or class) that the data readers do not allow."""


def _refuse(what: str, args: tuple) -> None:
    shown = ", ".join(type(a).__name__ for a in args)
    raise pickle.UnpicklingError(f"{what} called with ({shown}), not as a numpy pickle calls it")


def _latin1_bytes(text, encoding="utf-8") -> bytes:
    """``_codecs.encode(text, "latin1")``: how a protocol-2 pickle from Python 3 writes bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        _refuse("_codecs.encode", (text, encoding))
    return text.encode("latin-1")


def _dtype(spec, align=False, copy=True) -> np.dtype:
    """``numpy.dtype(spec, align, copy)`` for a plain type code; always a fresh copy (the
    pickle's BUILD then sets its byte order on it, never on numpy's shared instances)."""
    if not isinstance(spec, str | bytes) or not isinstance(align, int):  # Python 2 wrote 0/1
        _refuse("numpy.dtype", (spec, align))
    dt = np.dtype(spec.decode("ascii") if isinstance(spec, bytes) else spec, bool(align), True)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"numpy.dtype {dt} holds Python objects; not allowed")
    return dt


def _empty_bytes(*args) -> bytes:
    """``bytes()``: how a protocol-2 pickle from Python 3 writes ``b""``."""
    if args:
        _refuse("bytes", args)
    return b""


class _NdarrayName:
    """``numpy.ndarray`` as a pickle names it: an argument of ``_reconstruct``, never called."""

    def __call__(self, *args):
        _refuse("numpy.ndarray", args)


_NDARRAY = _NdarrayName()
_B = (b"b", "b")  # the type code numpy's __reduce__ passes (bytes from Python 2, str otherwise)


def _reconstruct(subtype, shape, code) -> np.ndarray:
    """``_reconstruct(ndarray, (0,), b'b')``, the empty array that BUILD then fills."""
    if subtype is not _NDARRAY or type(shape) is not tuple or shape != (0,) or code not in _B:
        _refuse("numpy _reconstruct", (subtype, shape, code))
    return np.empty(0, dtype=np.int8)


def _check_shape(shape) -> tuple[int, ...]:
    if type(shape) is not tuple or not all(type(s) is int and s >= 0 for s in shape):
        raise pickle.UnpicklingError(f"array shape must be a tuple of ints ≥ 0, got {shape!r}")
    return shape


def _frombuffer(buf, dtype, shape, order, axis_order=None) -> np.ndarray:
    """Protocol 5's ``numpy.core.numeric._frombuffer``: a view of the in-band buffer."""
    if (
        not isinstance(buf, bytes | bytearray)
        or not isinstance(dtype, np.dtype)
        or dtype.hasobject
        or order not in ("C", "F", "K")
        or not (axis_order is None or type(axis_order) is tuple)
    ):
        _refuse("numpy _frombuffer", (buf, dtype, shape, order))
    array = np.frombuffer(buf, dtype=dtype)
    if order == "K" and axis_order is not None:
        return array.reshape(_check_shape(shape), order="C").transpose(axis_order)
    return array.reshape(_check_shape(shape), order=order)


def _check_array_state(state) -> None:
    """ndarray's BUILD state ``(version, shape, dtype, is_fortran, raw bytes)``: the raw bytes
    must hold exactly prod(shape) · itemsize bytes (checked before numpy allocates)."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise pickle.UnpicklingError("array state must be a 4- or 5-tuple")
    shape, dtype, _, raw = state[-4:]
    shape = _check_shape(shape)
    if not isinstance(dtype, np.dtype) or not isinstance(raw, bytes | bytearray):
        raise pickle.UnpicklingError("array state must hold a dtype and raw bytes")
    need = math.prod(shape) * dtype.itemsize
    if need != len(raw):
        raise pickle.UnpicklingError(
            f"array of shape {shape} and dtype {dtype} needs {need} bytes, the pickle holds "
            f"{len(raw)}"
        )


def _check_sizes(data: bytes) -> None:
    """Walk the opcodes without building anything (``pickletools.genops``), so that every size
    field (BINSTRING, BINBYTES8, BINUNICODE8, BYTEARRAY8, LONG4, FRAME, …) is checked against
    the bytes that remain before the unpickler allocates for it."""
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name == "FRAME" and arg > len(data) - pos - 9:
                raise ValueError(
                    f"FRAME at byte {pos} says {arg} bytes but only {len(data) - pos - 9} remain"
                )
    except ValueError as exc:  # genops: "expected N bytes in a bytes8, but only M remain", …
        raise pickle.UnpicklingError(f"bad size field: {exc}") from None


class _RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves only the globals a pickled numpy array needs.

    Lists, dicts, bytes, str, int and float are built by pickle opcodes without any global. Of
    globals it allows exactly the calls numpy and Python write — ``_reconstruct(ndarray, (0,),
    b'b')``, ``dtype(code, align, copy)``, protocol 5's ``_frombuffer(buffer, dtype, shape,
    order)``, protocol 2's ``_codecs.encode(text, 'latin1')`` and ``bytes()`` — each through a
    wrapper that checks its arguments; BUILD only fills arrays (whose raw bytes must match their
    shape) and dtypes. Any other global (``os.system``, ``builtins.eval``, …) raises
    :class:`ForbiddenGlobalError` before anything is called. It is the pure-Python unpickler,
    whose opcodes can be overridden (BUILD); the C one cannot.
    """

    _GLOBALS: ClassVar[dict[tuple[str, str], object]] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1.x (the real batches)
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2.x
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5, numpy 1.x
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,  # protocol 5, numpy 2.x
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _dtype,
        ("_codecs", "encode"): _latin1_bytes,  # protocol 2 from Python 3 writes bytes so
        ("__builtin__", "bytes"): _empty_bytes,  # … and b"" so
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._GLOBALS:
            raise ForbiddenGlobalError(f"global {module}.{name} is not allowed in a data file")
        return self._GLOBALS[module, name]

    def load_build(self) -> None:
        inst, state = self.stack[-2], self.stack[-1]
        if isinstance(inst, np.ndarray):
            _check_array_state(state)
        elif not isinstance(inst, np.dtype):
            raise pickle.UnpicklingError(f"BUILD of a {type(inst).__name__} is not allowed")
        super().load_build()

    dispatch: ClassVar[dict] = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: load_build}


def restricted_loads(data: bytes) -> object:
    """Unpickle ``data`` allowing only plain containers, scalars, bytes/str and numpy arrays.

    Every size field is checked against the length of ``data`` before anything is allocated.

    Parameters
    ----------
    data : bytes
        A pickle stream (any protocol). Python 2 strings are returned as ``bytes``.

    Raises
    ------
    ForbiddenGlobalError
        (a :class:`pickle.UnpicklingError`) the stream refers to any global other than the numpy
        array constructors; nothing has been called.
    pickle.UnpicklingError, EOFError
        A truncated or corrupt stream, or a size field larger than the bytes that remain.
    """
    _check_sizes(data)
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch with the restricted unpickler.

    Parameters
    ----------
    path : str or Path
        A batch file (``data_batch_1`` … ``test_batch``): a pickled dict with ``b'data'`` (uint8,
        n × 3072, channel-major 3×32×32) and ``b'labels'`` (list of n ints in 0…9).

    Returns
    -------
    images : numpy.ndarray
        uint8, n × 3 × 32 × 32.
    labels : numpy.ndarray
        int64, n.

    Raises
    ------
    DataError
        Truncated or corrupt pickle, a size field beyond the end of the file, a forbidden global,
        or missing / inconsistent fields.
    """
    path = Path(path)
    raw = read_bytes(path)
    try:
        batch = restricted_loads(raw)
    except ForbiddenGlobalError as exc:
        raise DataError(f"{path}: refused pickle ({exc})") from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        OverflowError,
    ) as exc:
        raise DataError(
            f"{path}: truncated or corrupt pickle ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: b'data' must be a uint8 n×3072 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: b'data' has {data.shape[1]} columns, expected 3072")
    if not isinstance(labels, list) or len(labels) != data.shape[0]:
        n_lab = len(labels) if isinstance(labels, list) else type(labels).__name__
        raise DataError(f"{path}: {data.shape[0]} images but labels: {n_lab}")
    y = np.asarray(labels)
    if y.size and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() > 9):
        raise DataError(f"{path}: labels must be ints in 0…9")
    return data.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _cifar_dir(root: Path) -> Path:
    for cand in (root / "cifar-10-batches-py", root):
        if (cand / "data_batch_1").is_file():
            return cand
    raise DatasetNotFoundError(
        f"CIFAR-10 not found: no cifar-10-batches-py/data_batch_1 under {root} "
        "(it cannot be downloaded here; pass --data-root to a folder holding the python batches)"
    )


# --------------------------------------------------------------------------------- helpers ---


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    """Scale uint8 images to [0, 1] and standardise per channel with the train mean / std."""
    x = train.astype(np.float32) / 255.0
    axes = (0, 2, 3)
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True) + 1e-6
    out = [torch.from_numpy((x - mean) / std)]
    for o in others:
        out.append(torch.from_numpy((o.astype(np.float32) / 255.0 - mean) / std))
    return out


def _check_size(name: str, value: int, low: int, high: int | None = None) -> int:
    if (
        not isinstance(value, int | np.integer)
        or value < low
        or (high is not None and value > high)
    ):
        upper = f", {high}]" if high is not None else ", ∞)"
        raise ValueError(f"{name} must be an integer in [{low}{upper}, got {value!r}")
    return int(value)


def _split_train_val(
    n: int, val_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def _balanced_subset(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    idx = []
    for k in np.unique(y):
        members = np.flatnonzero(y == k)
        if members.size < per_class:
            raise DataError(f"class {k} has {members.size} images, fewer than {per_class} required")
        idx.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(idx))


# -------------------------------------------------------------------------------- loaders ---


def load_digits(
    *, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> DataSplits:
    """scikit-learn's bundled 8×8 digits as 1×8×8 images, split at random by ``seed``.

    Parameters
    ----------
    seed : int
        Seed of the split permutation.
    val_fraction, test_fraction : float
        Fractions of the 1797 images in the validation and test splits (each in (0, 0.5)).
    """
    from sklearn.datasets import load_digits as _sk_digits

    for nm, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < v < 0.5:
            raise ValueError(f"{nm} must be in (0, 0.5), got {v!r}")
    d = _sk_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_test, n_val = round(test_fraction * len(y)), round(val_fraction * len(y))
    te, va, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    xtr, xva, xte = _standardise(images[tr], images[va], images[te])
    yt = torch.from_numpy(y)
    return DataSplits(
        name="digits",
        train=Split(xtr, yt[tr]),
        val=Split(xva, yt[va]),
        test=Split(xte, yt[te]),
        num_classes=10,
        input_shape=(1, 8, 8),
        info={"seed": seed, "n_train": len(tr), "n_val": len(va), "n_test": len(te)},
    )


def load_fashion_mnist(
    root: str | Path | None = None,
    *,
    seed: int = 0,
    val_size: int = 5000,
    train_size: int | None = None,
) -> DataSplits:
    """Fashion-MNIST from the standard IDX files, as 1×28×28 images.

    Parameters
    ----------
    root : str, Path or None
        Folder with ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``; default
        ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
    seed : int
        Seed of the train / validation split.
    val_size : int
        Images moved from the 60 000 training images to the validation split.
    train_size : int or None
        Keep only this many (random) training images for the student and teacher (None: all).
    """
    root = Path(root) if root is not None else DEFAULT_FASHION_MNIST_ROOT
    xtr_all, ytr_all, xte, yte = fashion_mnist_arrays(root, least=2)
    n = len(ytr_all)
    val_size = _check_size("val_size", val_size, 1, n - 1)
    rng = np.random.default_rng(seed)
    tr, va = _split_train_val(n, val_size, rng)
    if train_size is not None:
        train_size = _check_size("train_size", train_size, 1, len(tr))
        tr = np.sort(rng.choice(tr, size=train_size, replace=False))
    xtr, xva, xtt = _standardise(xtr_all[tr][:, None], xtr_all[va][:, None], xte[:, None])
    h, w = xte.shape[1:]
    return DataSplits(
        name="fashion-mnist",
        train=Split(xtr, torch.from_numpy(ytr_all[tr])),
        val=Split(xva, torch.from_numpy(ytr_all[va])),
        test=Split(xtt, torch.from_numpy(yte)),
        num_classes=10,
        input_shape=(1, h, w),
        info={
            "root": str(root),
            "seed": seed,
            "n_train": len(tr),
            "n_val": len(va),
            "n_test": len(yte),
        },
    )


def load_cifar10(
    root: str | Path | None,
    *,
    seed: int = 0,
    val_size: int = 5000,
    reduced: bool = False,
    reduced_size: int = CIFAR_REDUCED_TRAIN,
) -> DataSplits:
    """CIFAR-10 from the standard python batches, as 3×32×32 images.

    Parameters
    ----------
    root : str, Path or None
        Folder holding ``cifar-10-batches-py/`` (or the batch files themselves).
    seed : int
        Seed of the splits.
    val_size : int
        Images taken from the 50 000 training images for validation (class-balanced).
    reduced : bool
        Keep ``reduced_size`` class-balanced training images (Gorpinich et al.'s reduced
        CIFAR-10); the
        test split is the full official test batch either way.
    reduced_size : int
        Training images of the reduced set, a multiple of 10 (default 12 800, as there).
    """
    if root is None:
        raise DatasetNotFoundError("CIFAR-10 needs --data-root (a folder with cifar-10-batches-py)")
    folder = _cifar_dir(Path(root))
    parts = []
    for i in range(1, 6):
        f = folder / f"data_batch_{i}"
        if not f.is_file():
            raise DatasetNotFoundError(f"{folder}: missing data_batch_{i}")
        parts.append(read_cifar_batch(f))
    if not (folder / "test_batch").is_file():
        raise DatasetNotFoundError(f"{folder}: missing test_batch")
    xte, yte = read_cifar_batch(folder / "test_batch")
    x_all = np.concatenate([p[0] for p in parts])
    y_all = np.concatenate([p[1] for p in parts])
    n_classes = 10
    rng = np.random.default_rng(seed)
    val_size = _check_size("val_size", val_size, n_classes, len(y_all) - n_classes)
    va = _balanced_subset(y_all, val_size // n_classes, rng)
    rest = np.setdiff1d(np.arange(len(y_all)), va)
    if reduced:
        if reduced_size % n_classes or reduced_size < n_classes:
            raise ValueError(
                f"reduced_size must be a positive multiple of 10, got {reduced_size!r}"
            )
        sub = _balanced_subset(y_all[rest], reduced_size // n_classes, rng)
        tr = rest[sub]
    else:
        tr = rest
    xtr, xva, xtt = _standardise(x_all[tr], x_all[va], xte)
    return DataSplits(
        name="cifar10-reduced" if reduced else "cifar10",
        train=Split(xtr, torch.from_numpy(y_all[tr])),
        val=Split(xva, torch.from_numpy(y_all[va])),
        test=Split(xtt, torch.from_numpy(yte)),
        num_classes=n_classes,
        input_shape=(3, 32, 32),
        info={
            "root": str(folder),
            "seed": seed,
            "n_train": len(tr),
            "n_val": len(va),
            "n_test": len(yte),
        },
    )


def make_synthetic(
    *,
    seed: int = 0,
    n_teacher: int = 10_000,
    n_student: int = 200,
    n_val: int = 200,
    n_test: int = 10_000,
    noise: float = 0.5,
) -> DataSplits:
    r"""Gorpinich et al.'s synthetic set, with a large teacher set and a small student set.

    x₁, x₂ ~ N(0, 1) independent, x₃ = [sign x₁ + sign x₂ > 0] (= 1 iff both are positive), and
    the class y = [x₁x₂ + δ > 0] with label noise δ ~ N(0, s²), s = ``noise``; inputs are the
    vectors (x₁, x₂, x₃) and K = 2. The Bayes classifier is [x₁x₂ > 0]; its accuracy is
    E Φ(|x₁x₂|/s).

    Parameters
    ----------
    seed : int
        Seed of the generator (all splits are drawn from it in a fixed order).
    n_teacher, n_student, n_val, n_test : int
        Sizes of the teacher's training set, the student's training and validation sets and the
        common test set.
    noise : float
        s ≥ 0, the standard deviation of δ.
    """
    for nm, v in (
        ("n_teacher", n_teacher),
        ("n_student", n_student),
        ("n_val", n_val),
        ("n_test", n_test),
    ):
        _check_size(nm, v, 1)
    if not (isinstance(noise, int | float) and noise >= 0.0 and math.isfinite(noise)):
        raise ValueError(f"noise must be a finite number ≥ 0, got {noise!r}")
    rng = np.random.default_rng(seed)

    def draw(n: int) -> Split:
        x12 = rng.standard_normal((n, 2))
        x3 = (np.sign(x12[:, 0]) + np.sign(x12[:, 1]) > 0).astype(np.float64)
        delta = noise * rng.standard_normal(n)
        y = (x12[:, 0] * x12[:, 1] + delta > 0).astype(np.int64)
        x = np.column_stack([x12, x3]).astype(np.float32)
        return Split(torch.from_numpy(x), torch.from_numpy(y))

    teacher, train, val, test = draw(n_teacher), draw(n_student), draw(n_val), draw(n_test)
    return DataSplits(
        name="synthetic",
        train=train,
        val=val,
        test=test,
        num_classes=2,
        input_shape=(3,),
        teacher_train=teacher,
        info={
            "seed": seed,
            "n_teacher": n_teacher,
            "n_train": n_student,
            "n_val": n_val,
            "n_test": n_test,
            "noise": noise,
        },
    )


def load_dataset(
    name: str, *, data_root: str | Path | None = None, seed: int = 0, **options
) -> DataSplits:
    """Load data set ``name`` (one of ``DATASETS``) with splits fixed by ``seed``.

    Parameters
    ----------
    name : str
        ``digits``, ``synthetic``, ``fashion-mnist``, ``cifar10`` or ``cifar10-reduced``.
    data_root : str, Path or None
        Folder with the files (Fashion-MNIST: default ``/usr/share/datasets/fashion-mnist``;
        CIFAR-10: required). Ignored by ``digits`` and ``synthetic``.
    seed : int
        Seed of the splits (and of the synthetic generator).
    **options
        Passed to the loader (e.g. ``val_size``, ``train_size``, ``n_student``, ``noise``).

    Raises
    ------
    ValueError
        Unknown name or option.
    DatasetNotFoundError, DataError
        Absent or malformed files.
    """
    if name == "digits":
        return load_digits(seed=seed, **options)
    if name == "synthetic":
        return make_synthetic(seed=seed, **options)
    if name == "fashion-mnist":
        return load_fashion_mnist(data_root, seed=seed, **options)
    if name in ("cifar10", "cifar10-reduced"):
        return load_cifar10(data_root, seed=seed, reduced=name == "cifar10-reduced", **options)
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")

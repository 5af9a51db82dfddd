"""Append-only journals of finished work and atomic file writes (stdlib only: cheap to import).

Used by the theory sweeps (:mod:`kdtheory.sweep`) and the neural table (:mod:`kdtheory.neural.experiments.table`):
a rerun reads the journal and skips what it holds.  A journal never lies: every line is validated
before use and a bad one is skipped (with a warning), never applied; an append starts on a new line;
a lock keeps a second writer out.  Every output file is written to a temporary file beside its
target and renamed over it, so nothing half-written is ever left behind.  ``check_output_dir`` and
``check_name`` check the CLIs' ``--out`` and ``--name`` before any work.  :func:`check_values` is
the one check of a record's values (finite, in the ranges of :data:`QUANTITY_RANGES`, consistent
with the record's status) that every journal's ``validate`` calls.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "QUANTITY_RANGES",
    "Journal",
    "JournalLockedError",
    "JournalMismatchError",
    "JournalWarning",
    "Range",
    "check_name",
    "check_output_dir",
    "check_values",
    "one_line_warnings",
    "quantity_range",
    "write_atomic",
]


class JournalLockedError(ValueError):
    """Another process holds the journal's lock (two runs of one computation into one folder)."""


class JournalMismatchError(ValueError):
    """The journal at this path records a different computation (another fingerprint)."""


class JournalWarning(UserWarning):
    """Lines of a journal were skipped: undecodable, truncated or not a valid record."""


class Journal:
    """Append-only record of finished points: JSON lines, the first naming what is computed.

    Parameters
    ----------
    path : path
        The journal file (JSON lines).
    fingerprint : str
        Identifies the computation; a journal with another fingerprint is refused with
        ``JournalMismatchError`` (a ``ValueError``) ending in ``fix`` (the remedy the calling
        command offers).
    header : dict
        Written with the fingerprint on the first line.
    validate : callable, optional
        ``validate(record)`` raises ``ValueError`` if a record ``{"index": [...], "values": {...}}``
        cannot belong to this computation (index out of the grid, unknown field, wrong type).
    lock : bool
        Hold an exclusive advisory lock (``fcntl.flock`` on ``<path>.lock``) until :meth:`close`
        (or the end of a ``with`` block), so that a second process cannot write the same journal.
    wait : bool
        If another process holds the lock, wait for it (default: raise ``JournalLockedError``, a
        ``ValueError``).
    fix : str
        What to do about a journal of a different computation (appended to the refusal).
    superseded : callable, optional
        ``superseded(values)`` is true for a record that a later record of the same index replaces
        (a failed cell that a rerun computed again); by default the first valid record wins.

    Notes
    -----
    Every record is checked before use: its index is a list of ints and its values a dict (then
    ``validate``).  Lines that are not UTF-8, not JSON, not a valid record or cut short by a kill
    are skipped with one ``JournalWarning`` that counts them; their points are computed again.
    An append always starts on a new line, so a cut line never swallows the next record.  The
    first valid record of an index wins, unless ``superseded`` says it is a failure.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fingerprint: str,
        header: dict,
        *,
        validate: Callable[[dict], None] | None = None,
        lock: bool = False,
        wait: bool = False,
        fix: str = "choose another --out or delete it",
        superseded: Callable[[dict], bool] | None = None,
    ):
        self.path, self.fingerprint, self.header = Path(path), fingerprint, header
        self.validate, self.fix, self.superseded = validate, fix, superseded
        self.done: dict[tuple[int, ...], dict] = {}
        self.skipped = 0
        self._fresh = True  # no complete header line yet: the first append (re)writes the file
        self._lock = _lock(self.path.with_name(self.path.name + ".lock"), wait) if lock else None
        try:
            if self.path.exists():
                self._load()
        except BaseException:
            self.close()
            raise

    def _load(self):
        data = self.path.read_bytes()
        head, newline, rest = data.partition(b"\n")
        if not newline:  # killed while writing the header: nothing was journalled
            return
        try:
            fingerprint = json.loads(head.decode("utf-8")).get("fingerprint")
        except (ValueError, AttributeError, RecursionError):
            fingerprint = None
        if fingerprint != self.fingerprint:
            raise JournalMismatchError(
                f"{self.path} is the journal of a different computation; {self.fix}"
            )
        self._fresh = False
        lines = rest.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()  # the file ends with a newline
        for line in lines:
            try:
                index, values = self._parse(line)
            except (ValueError, TypeError, KeyError, RecursionError):
                self.skipped += 1
                continue
            if index not in self.done or (
                self.superseded is not None and self.superseded(self.done[index])
            ):
                self.done[index] = values
        if self.skipped:
            warnings.warn(
                f"{self.path}: skipped {self.skipped} invalid or truncated line(s); their points "
                "are computed again",
                JournalWarning,
                stacklevel=3,
            )

    def _parse(self, line: bytes) -> tuple[tuple[int, ...], dict]:
        record = json.loads(line.decode("utf-8"))
        if not isinstance(record, dict) or set(record) != {"index", "values"}:
            raise ValueError("a record has exactly the keys index and values")
        index, values = record["index"], record["values"]
        if not isinstance(index, list) or not index or not all(_is_int(i) for i in index):
            raise ValueError("index must be a non-empty list of ints")
        if not isinstance(values, dict):
            raise ValueError("values must be a dict")
        if self.validate is not None:
            self.validate(record)
        return tuple(index), values

    def append(self, results: list[tuple[tuple[int, ...], dict]]):
        """Append records ``(index, values)`` (flushed and fsync'd) and add them to ``done``."""
        lines = [json.dumps({"index": list(index), "values": values}) for index, values in results]
        if self._fresh:
            lines.insert(0, json.dumps({"fingerprint": self.fingerprint, **self.header}))
        text = "\n".join(lines) + "\n"
        mode = "wb" if self._fresh else "ab"
        if not self._fresh and self.path.stat().st_size:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a line cut short by a kill: end it first
                    text = "\n" + text
        with open(self.path, mode) as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        self._fresh = False
        for index, values in results:
            self.done[tuple(index)] = values

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _lock(path: Path, wait: bool):
    """An exclusive advisory lock on ``path`` (an open file; closing it releases the lock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    fh = open(path, "a+")  # held open while the journal is in use
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if not wait:
            fh.close()
            raise JournalLockedError(
                f"another run is writing {path.with_suffix('')} (lock {path.name} is held); "
                "wait for it to finish"
            ) from None
        sys.stderr.write(f"waiting for the other run writing {path.with_suffix('')} …\n")
        fcntl.flock(fh, fcntl.LOCK_EX)
    except BaseException:
        fh.close()
        raise
    return fh


def failed_cell(values: dict, default: str | None = None) -> bool:
    """For a cell's record: True if it is a failure (``status`` "error" with its ``error``
    message), False if ``status`` is "ok" (``default`` where it is missing); else ValueError."""
    status = values.get("status", default)
    if status == "error":
        if not isinstance(values.get("error"), str):
            raise ValueError("a failed cell needs its error message")
        return True
    if status != "ok":
        raise ValueError(f"status must be ok or error, got {values.get('status')!r}")
    return False


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp)`` to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_name(name: str, flag: str = "--name") -> str:
    """A file stem given by the user: non-empty, no path separator, no leading dot, ≤ 120 chars.

    Raises ``ValueError`` naming ``flag``; called before any work so that nothing is computed for
    outputs that could not be written (``--name a/b`` or ``../x`` would leave the output folder).
    """
    seps = {os.sep, "/", *([os.altsep] if os.altsep else [])}
    if not isinstance(name, str) or not name:
        raise ValueError(f"{flag} must be a non-empty file stem, got {name!r}")
    if any(s in name for s in seps) or name.startswith(".") or "\0" in name or len(name) > 120:
        raise ValueError(
            f"{flag} must be a plain file stem (no path separator, no leading dot, at most 120 "
            f"characters), got {name!r}; choose the folder with --out"
        )
    return name


def check_output_dir(out: str | os.PathLike, flag: str = "--out") -> Path:
    """Make sure files can be written in the folder ``out`` before any work starts.

    Creates the folder if needed and writes (then removes) a probe file in it; raises
    ``ValueError`` naming ``flag`` if ``out`` is a file, lies under a file, or is not writable.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} is a file, not a folder; give a folder path")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(
                    f"{flag} {out} lies under {parent}, which is a file; give a folder path"
                )
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{flag} {out} is not a writable folder ({exc.strerror or exc})") from None
    return out


@contextlib.contextmanager
def one_line_warnings(prog: str):
    """Show warnings (e.g. a journal's skipped lines) as ``prog: warning: …`` on one line."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_args, **_kw: sys.stderr.write(
            f"{prog}: warning: {message}\n"
        )
        yield


# ----------------------------------------------------------------------------- record values


@dataclass(frozen=True)
class Range:
    """The values a journalled quantity may take: the closed interval [lo, hi] of the extended
    reals (``lo_open``: (lo, hi]); ``integer``: an int (not a bool) in it."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    integer: bool = False

    def __contains__(self, v) -> bool:
        if self.integer and not (isinstance(v, int) and not isinstance(v, bool)):
            return False
        return (self.lo < v if self.lo_open else self.lo <= v) and v <= self.hi

    def __str__(self) -> str:
        def f(x):
            return "∞" if x == math.inf else "−∞" if x == -math.inf else f"{x:g}"

        kind = "an integer" if self.integer else "a number"
        return f"{kind} in {'(' if self.lo_open else '['}{f(self.lo)}, {f(self.hi)}]"


PROBABILITY = Range(0.0, 1.0)
NONNEGATIVE = Range(0.0)
POSITIVE = Range(0.0, lo_open=True)
REAL = Range()
COUNT = Range(0, integer=True)
SIZE = Range(1, integer=True)
FLAG = Range(0, 1, integer=True)

#: the range of every quantity that the package journals, by name (``kdtheory.sweep`` suffixes
#: such as ``_nokd`` are stripped by :func:`quantity_range`): errors, agreements and fractions in
#: [0, 1], norms, susceptibility, losses, residuals, λ and standard errors ≥ 0, T > 0, χ ∈ [0, 1],
#: counts ints ≥ 0, ``converged`` 0 or 1; overlaps, biases and V_c are any real
QUANTITY_RANGES: dict[str, Range] = {
    **dict.fromkeys(("eg", "eg_teacher", "eg_bayes", "eg_ridge", "eg_kd", "eg_teacher_kd",
                     "agreement", "train_error", "test_acc", "chi", "chi_opt", "chi_kd"),
                    PROBABILITY),
    **dict.fromkeys(("q", "q_teacher", "V", "train_loss", "residual", "eg_se", "lam", "lam_opt",
                     "lam_t", "lam_ridge", "lam_t_kd", "lam_kd", "seconds"), NONNEGATIVE),
    **dict.fromkeys(("temperature", "temperature_opt"), POSITIVE),
    **dict.fromkeys(("m", "b", "r", "Vc", "m_teacher", "b_teacher"), REAL),
    **dict.fromkeys(("iterations", "solves", "solves_kd"), COUNT),
    **dict.fromkeys(("converged", "converged_ridge", "converged_kd"), FLAG),
    "gain": Range(-1.0, 1.0),
}  # fmt: skip


def quantity_range(name: str, suffixes: Iterable[str] = ()) -> Range:
    """The :data:`QUANTITY_RANGES` entry of ``name``, or of ``name`` less one of ``suffixes``
    (e.g. ``eg_nokd`` with suffix ``_nokd``); ``KeyError`` if neither is known."""
    if name in QUANTITY_RANGES:
        return QUANTITY_RANGES[name]
    for s in suffixes:
        if s and name.endswith(s) and name.removesuffix(s) in QUANTITY_RANGES:
            return QUANTITY_RANGES[name.removesuffix(s)]
    raise KeyError(name)


def check_values(values: Mapping, ranges: Mapping[str, Range], *, ok: bool) -> None:
    """Raise ``ValueError`` unless every field named in ``ranges`` is in ``values`` and is a number,
    or a list of numbers, each in its :class:`Range` or NaN — NaN only where ``ok`` is false.

    ``ok`` says that the record claims a result (``converged`` = 1, ``status`` "ok"): then every
    value must be finite.  A failed point may hold NaN (not computed) or, where its range reaches
    ±∞, an infinite value (a diverging norm); a value outside its range (ε = 5, q = −1, ε = ∞) is
    refused either way.  The one record check of every journal (figure sets, phase-diagram grids,
    neural experiments), called by their ``validate``.
    """
    for name, allowed in ranges.items():
        if name not in values:
            raise ValueError(f"{name} is missing")
        v = values[name]
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, bool) or not isinstance(x, int | float):
                raise ValueError(f"{name} must be {allowed}, got {x!r}")
            if x != x:  # NaN
                if ok:
                    raise ValueError(f"{name} is NaN in a record that claims a result")
                continue
            if x not in allowed:
                raise ValueError(f"{name} must be {allowed}, got {x!r}")
            if ok and not math.isfinite(x):
                raise ValueError(f"{name} = {x!r} in a record that claims a result")

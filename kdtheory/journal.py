"""Append-only journals of finished work and atomic file writes (stdlib only: cheap to import).

Used by the theory sweeps (:mod:`kdtheory.sweep`) and the neural table (:mod:`kdtheory.neural.experiments.table`):
a rerun reads the journal and skips what it holds.  A journal never lies: every line is validated
before use and a bad one is skipped (with a warning), never applied; an append starts on a new line;
a lock keeps a second writer out.  Every output file is written to a temporary file beside its
target and renamed over it, so nothing half-written is ever left behind.  ``check_output_dir`` and
``check_name`` check the CLIs' ``--out`` and ``--name`` before any work.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "Journal",
    "JournalLockedError",
    "JournalMismatchError",
    "JournalWarning",
    "check_name",
    "check_output_dir",
    "one_line_warnings",
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

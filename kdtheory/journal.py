"""Append-only journals of finished work and atomic file writes (stdlib only: cheap to import).

Used by the theory sweeps (:mod:`kdtheory.sweep`) and the neural table (:mod:`kdtheory.neural.table`):
a rerun reads the journal and skips what it holds; every output file is written to a temporary
file beside its target and renamed over it, so nothing half-written is ever left behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["Journal", "check_name", "check_output_dir", "write_atomic"]


class Journal:
    """Append-only record of finished points: JSON lines, the first naming what is computed.

    ``fingerprint`` identifies the computation; a journal with another fingerprint is refused.
    A trailing line cut short by a kill is ignored (its points are simply computed again).
    """

    def __init__(self, path: str | os.PathLike, fingerprint: str, header: dict):
        self.path, self.fingerprint, self.header = Path(path), fingerprint, header
        self.done: dict[tuple[int, ...], dict] = {}
        if self.path.exists():
            self._load()

    def _load(self):
        with open(self.path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        if not lines:
            return
        try:
            head = json.loads(lines[0])
        except json.JSONDecodeError:
            head = {}
        if head.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"{self.path} belongs to a different computation; choose another --out/--name or "
                "delete it"
            )
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.done[tuple(entry["index"])] = entry["values"]

    def append(self, results: list[tuple[tuple[int, ...], dict]]):
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", encoding="utf-8") as fh:
            if new:
                fh.write(json.dumps({"fingerprint": self.fingerprint, **self.header}) + "\n")
            for index, values in results:
                fh.write(json.dumps({"index": list(index), "values": values}) + "\n")
                self.done[index] = values
            fh.flush()
            os.fsync(fh.fileno())


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

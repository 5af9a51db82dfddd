"""Conventions shared by the neural command-line tools.

One-line errors: a bad flag prints ``prog: error: ...`` on stderr and exits with code 2
(:class:`Parser` for what argparse finds, :func:`fail` for the checks after it). The flags that
several tools share (``--device``, ``--threads``, ``--cache-dir``, ``--quiet``) are added here once,
and the KD loss's ``--tempered``, with one help text each.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from kdtheory.neural.losses import TEMPERED
from kdtheory.neural.timing import DEFAULT_THREADS, THREADS_HELP

__all__ = [
    "Parser",
    "add_cache_dir",
    "add_device",
    "add_quiet",
    "add_tempered",
    "add_threads",
    "fail",
]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def fail(prog: str, msg: str) -> NoReturn:
    """Print ``prog: error: msg`` on one line and exit with code 2."""
    sys.stderr.write(f"{prog}: error: {msg}\n")
    raise SystemExit(2)


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device`` (default ``auto``), resolved by :func:`kdtheory.neural.device.resolve_device`."""
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads``, set by :func:`kdtheory.neural.timing.set_threads` before any torch work."""
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP)


def add_cache_dir(p: argparse.ArgumentParser) -> None:
    """``--cache-dir``: the teacher cache (None: :func:`~kdtheory.neural.checkpoints.default_cache_dir`)."""
    p.add_argument(
        "--cache-dir",
        default=None,
        help="folder of teacher checkpoints (default: "
        "$XDG_CACHE_HOME/kdtheory/teachers, else ~/.cache/kdtheory/teachers)",
    )


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bar."""
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_tempered(p: argparse.ArgumentParser) -> None:
    """``--tempered`` (default ``both``): which softmaxes of the KD soft term are tempered."""
    p.add_argument(
        "--tempered",
        default="both",
        choices=TEMPERED,
        help="which outputs the KD soft term tempers: both, H(σ(f/T), σ(g/T)) (default), or the "
        "teacher only, H(σ(f/T), σ(g)) (Takanami et al. 2025)",
    )

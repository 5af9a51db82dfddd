"""Conventions shared by the neural command-line tools.

One-line errors: a bad flag prints ``prog: error: ...`` on stderr and exits with code 2
(:class:`Parser` for what argparse finds, :func:`fail` for the checks after it). The flags that
several tools share (``--device``, ``--threads``, ``--cache-dir``, ``--quiet``,
``--jobs`` and ``--scheduler``) are added here once,
and the KD loss's ``--tempered``, with one help text each.

Resources are checked before any work (one-line exit 2 naming the flag): counts against the caps
:data:`MAX_SEEDS`, :data:`MAX_EPOCHS`, :data:`MAX_STEPS`, :data:`MAX_FITS` (:func:`check_count`,
:func:`check_fits`), and every model's size — its parameters counted on PyTorch's ``meta`` device
(nothing allocated) times 4 bytes × :data:`TRAINING_COPIES` — against the memory available
(:func:`available_memory`; :func:`check_model_memory`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from kdtheory.neural.losses import TEMPERED
from kdtheory.neural.timing import DEFAULT_THREADS, THREADS_HELP

__all__ = [
    "MAX_EPOCHS",
    "MAX_FITS",
    "MAX_SEEDS",
    "MAX_STEPS",
    "TRAINING_COPIES",
    "DefaultsHelpFormatter",
    "Parser",
    "ResourceError",
    "add_cache_dir",
    "add_device",
    "add_quiet",
    "add_tempered",
    "add_threads",
    "add_workers",
    "available_memory",
    "check_count",
    "check_fits",
    "check_model_memory",
    "check_workers",
    "fail",
]

#: most seeds (or runs) per cell: the standard error falls as 1/√seeds (1000 seeds: 3 % of one
#: seed's spread) while the time grows linearly
MAX_SEEDS = 1000
#: most epochs of one fit (10 000 passes over even the 8×8 digits take hours on a CPU core)
MAX_EPOCHS = 10_000
#: most optimiser steps (or trials, repeats) of one fit or measurement
MAX_STEPS = 10_000_000
#: most models one command trains (cells × seeds × stages): at a second per fit, over a day
MAX_FITS = 100_000
#: float32 tensors per parameter while training: weights, gradients and two Adam moments
#: (SGD with momentum needs three); activations come on top and are not counted
TRAINING_COPIES = 4


class ResourceError(ValueError):
    """A command would exceed a cap or the memory available (raised before any work)."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` with each option's default, said once: "(default: X)" is added to a help text
    that does not already name its default, unless the default is None or a flag's False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2) and each default said once in ``--help``
    (:class:`DefaultsHelpFormatter`)."""

    def __init__(self, *args, formatter_class=DefaultsHelpFormatter, **kwargs) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

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


def add_quiet(p: argparse.ArgumentParser, table: bool = False) -> None:
    """``--quiet``: no progress bars (and, for a tool that prints its ``table.md``, not that
    either); the closing line that names the written files is always printed."""
    extra = ", no copy of table.md on the terminal" if table else ""
    p.add_argument("--quiet", action="store_true",
                   help=f"no progress bars{extra}; the closing result line is still printed")  # fmt: skip


def add_tempered(p: argparse.ArgumentParser) -> None:
    """``--tempered`` (default ``both``): which softmaxes of the KD soft term are tempered."""
    p.add_argument(
        "--tempered",
        default="both",
        choices=TEMPERED,
        help="which outputs the KD soft term tempers: both, H(σ(f/T), σ(g/T)) (default), or the "
        "teacher only, H(σ(f/T), σ(g)) (Takanami et al. 2025)",
    )


def check_count(flag: str, value: int | None, cap: int, low: int = 1) -> None:
    """``ResourceError`` (a ``ValueError``) naming ``flag`` unless ``value`` (None: not given)
    is an int in [low, cap]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= cap:
        raise ResourceError(
            f"{flag} must be an integer in [{low}, {cap:_}] (a cap on the work of one command), "
            f"got {value}"
        )


def check_fits(n_fits: int, what: str) -> None:
    """``ResourceError`` if one command would train more than :data:`MAX_FITS` models."""
    if n_fits > MAX_FITS:
        raise ResourceError(
            f"{what} make {n_fits:_} fits, more than the cap of {MAX_FITS:_} per command; "
            "split the work into several runs"
        )


def available_memory() -> int | None:
    """Bytes of memory available for new allocations: ``MemAvailable`` of ``/proc/meminfo``
    (Linux: free plus reclaimable cache), else ``os.sysconf`` free pages × page size; None where
    neither is known (the check is then skipped)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_memory(
    flag: str, label: str, build: Callable[[], object], *, available: int | None = None
) -> int:
    """The parameter count P of the model that ``build()`` makes, built on PyTorch's ``meta``
    device (no memory used); ``ResourceError`` naming ``flag`` and ``label`` if training it needs
    more than the memory available, P × 4 bytes × :data:`TRAINING_COPIES` > ``available``
    (default :func:`available_memory`).  A bad option raises the model's own ``ValueError``."""
    import torch

    from kdtheory.neural.models import count_parameters

    with torch.device("meta"):
        n = count_parameters(build())
    need = n * 4 * TRAINING_COPIES
    available = available_memory() if available is None else available
    if available is not None and need > available:
        raise ResourceError(
            f"{flag} {label}: {n:_} parameters need about {need / 2**30:.3g} GiB to train "
            f"(float32 weights, gradients, two Adam moments), more than the {available / 2**30:.3g} "
            "GiB of memory available"
        )
    return n


WORKERS_HELP = (
    "Cells (independent training runs) run on --jobs local worker processes with one torch "
    "thread each, or on the Dask cluster at --scheduler; the journal, the resume and "
    "the results are those of a serial run. With CUDA, local worker slot k uses cuda:(k mod "
    "GPUs): give --jobs the number of GPUs; a Dask worker uses its own devices (start one "
    "worker per GPU, each with CUDA_VISIBLE_DEVICES set, e.g. dask-cuda's `dask cuda worker`)."
)


def add_workers(p: argparse.ArgumentParser) -> None:
    """``--jobs`` (default 1) and ``--scheduler``: where the cells of a grid run
    (:func:`kdtheory.sweep.map_points`)."""
    g = p.add_argument_group("workers", WORKERS_HELP)
    g.add_argument("--jobs", type=int, default=1,
                   help="local worker processes for the cells (≥ 1; default: %(default)s)")  # fmt: skip
    g.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                   help="run the cells on this Dask distributed scheduler instead "
                   "(default: local)")  # fmt: skip


def check_workers(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a bad ``--jobs`` or ``--scheduler`` with a one-line error (exit 2)."""
    if args.jobs < 1:
        p.error(f"--jobs must be an integer ≥ 1; got {args.jobs}")
    if args.scheduler is not None and not args.scheduler.startswith(
        ("tcp://", "tls://", "inproc://")
    ):
        p.error(f"--scheduler must look like tcp://host:port; got {args.scheduler!r}")

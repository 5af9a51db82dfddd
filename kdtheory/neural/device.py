"""Device choice: ``--device`` resolution, CUDA autocast, and the synchronisation before a clock.

Mixed precision is used on CUDA only (bfloat16 where supported, else float16 with a gradient
scaler in :func:`kdtheory.neural.training.fit`); the CPU always runs float32.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["resolve_device", "slot_device"]


def resolve_device(spec: str = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise ``torch.device(spec)``.

    Raises
    ------
    ValueError
        A CUDA device was asked for but none is available, or the spec is not a device.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as exc:
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N; got {spec!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {spec}: CUDA is not available on this machine (use auto or cpu)"
        )
    return dev


def slot_device(device: torch.device, slot: int, count: int | None = None) -> torch.device:
    """The device of a grid's task in worker slot ``slot`` (:func:`kdtheory.sweep.worker_slot`).

    An unindexed ``cuda`` becomes ``cuda:(slot mod count)``, ``count`` the visible CUDA devices
    (``torch.cuda.device_count()`` when None): with ``--jobs`` equal to the number of GPUs every
    running cell has a GPU of its own.  An indexed ``cuda:i`` and the CPU are kept as given.
    """
    if device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count() if count is None else count
    if count < 1:
        raise ValueError("no CUDA device is visible in this worker")
    return torch.device("cuda", slot % count)


def _autocast(device: torch.device, enabled: bool):
    """Autocast context: mixed precision on CUDA only (bfloat16 if supported, else float16)."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

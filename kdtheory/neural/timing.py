r"""How fast the CPU runs the neural recipes: the torch thread count, and inference time.

Thread count
    ``DEFAULT_THREADS`` is the default of every neural CLI's ``--threads``; :func:`set_threads`
    applies it before any torch work. One intra-op thread was the fastest for every recipe measured
    on a shared 2-core CPU (``benchmarks/neural_threads.py``): the models are small, so an op is
    split into pieces of microseconds, and when another process holds the second core every
    parallel op waits for a thread that is not scheduled. With the four configurations (1 or 2
    intra-op) × (1 or 2 inter-op threads) run back to back in every round, at load average ≈ 6,
    2 intra-op threads took 3.2× (the CNN teacher on 28×28 inputs) to 15× (λ-path steps) as
    long as 1, medians of 10 pairs; the inter-op pool, unused by these recipes, changed nothing
    beyond the noise (0.7–1.1×).

Inference time
    :func:`inference_times` measures several models on the same inputs with
    :class:`torch.utils.benchmark.Timer`: a warm-up, then in each of ``rounds`` rounds every
    model's batched call g(x[:B]) and single-input call g(x[:1]) is timed by
    ``blocked_autorange`` (blocks of many calls, each block one time per call). The block times
    of all rounds are pooled into a median and an interquartile range (IQR = q₇₅ − q₂₅); the
    rounds interleave the models, so a drift of the machine's load affects every model alike.

    The clock: on the CPU the process's CPU time (``time.process_time``), the time the cores
    worked on the call; on CUDA the wall time with the device synchronised. Wall time on a shared
    CPU counts the time other processes held the cores: on 2 cores with ~8 runnable processes the
    teacher/student ratio of wall-time medians was 105× in one run and 369× in the next, while
    the CPU-time ratio repeats within a few per cent. With one thread and an idle machine the
    two clocks agree; with several threads CPU time adds up the threads (the work, not the
    latency) — ask for ``clock="wall"`` to measure latency on a quiet machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.benchmark import Timer
from torch.utils.benchmark.utils.timer import timer as _wall_synchronised

__all__ = [
    "CLOCKS",
    "DEFAULT_THREADS",
    "THREADS_HELP",
    "InferenceTime",
    "Timing",
    "inference_time",
    "inference_times",
    "set_threads",
    "time_call",
]

CLOCKS = ("auto", "cpu", "wall")
DEFAULT_THREADS = 1
THREADS_HELP = (
    "torch intra-op CPU threads (≥ 1; default %(default)s). Measured on a shared 2-core CPU "
    "(benchmarks/neural_threads.py): 1 thread was the fastest for every recipe, teachers, "
    "students and λ-path steps; 2 threads took 3-15x as long when other processes were running"
)


def set_threads(threads: int) -> None:
    """Set torch's intra-op thread count (``--threads``); call it before any torch work.

    Raises
    ------
    ValueError
        ``threads`` is not an integer ≥ 1.
    """
    if not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"threads must be an integer ≥ 1; got {threads!r}")
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median and interquartile range over ``blocks`` timed blocks."""

    median: float
    iqr: float
    blocks: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class InferenceTime:
    """Inference time of one model (eval mode, no autograd, ``threads`` intra-op threads).

    Attributes
    ----------
    batch : Timing
        One forward pass on a batch of ``batch_size`` inputs.
    single : Timing
        One forward pass on one input (latency).
    batch_size : int
        Inputs per batched call.
    threads : int
        torch intra-op threads during the measurement.
    clock : str
        ``"cpu"`` (process CPU time) or ``"wall"`` (wall time, CUDA synchronised).
    """

    batch: Timing
    single: Timing
    batch_size: int
    threads: int
    clock: str

    @property
    def per_input(self) -> float:
        """Seconds per input when batched: median(batch) / batch_size."""
        return self.batch.median / self.batch_size

    def as_dict(self) -> dict:
        return {**asdict(self), "per_input": self.per_input}


def _check_min_run_time(min_run_time: float) -> None:
    if not (isinstance(min_run_time, int | float) and 0 < min_run_time < math.inf):
        raise ValueError(f"min_run_time must be a finite number > 0 seconds; got {min_run_time!r}")


def _check_int(name: str, value: int) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name} must be an integer ≥ 1; got {value!r}")


def _stats(times: list[float]) -> Timing:
    q25, q50, q75 = np.percentile(times, [25, 50, 75])
    return Timing(median=float(q50), iqr=float(q75 - q25), blocks=len(times))


def _resolve_clock(clock: str, device: torch.device) -> str:
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}; got {clock!r}")
    if clock == "auto":
        return "cpu" if device.type == "cpu" else "wall"
    if clock == "cpu" and device.type != "cpu":
        raise ValueError(f"clock='cpu' measures CPU work only; use 'wall' on {device.type}")
    return clock


def _timer(fn: Callable[[], object], threads: int, clock: str) -> Timer:
    # num_threads is set for the measurement only; the wall clock synchronises the accelerator
    tick = time.process_time if clock == "cpu" else _wall_synchronised
    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads, timer=tick)


def time_call(
    fn: Callable[[], object],
    *,
    min_run_time: float = 0.2,
    threads: int | None = None,
    clock: str = "wall",
) -> Timing:
    """Seconds per call of ``fn()``: a warm-up, then ``Timer.blocked_autorange(min_run_time)``.

    Parameters
    ----------
    fn : callable
        The call to time, without arguments.
    min_run_time : float
        Seconds of timed blocks at least (> 0).
    threads : int or None
        torch intra-op threads during the measurement (default: the current count).
    clock : str
        ``"wall"`` (synchronising an accelerator), ``"cpu"`` (process CPU time) or ``"auto"``
        (= ``"cpu"``: the callable's device is unknown).
    """
    _check_min_run_time(min_run_time)
    threads = torch.get_num_threads() if threads is None else threads
    _check_int("threads", threads)
    clock = _resolve_clock(clock, torch.device("cpu"))
    fn()
    m = _timer(fn, threads, clock).blocked_autorange(min_run_time=min_run_time)
    return _stats(list(m.times))


def inference_times(
    models: Mapping[str, nn.Module],
    x: torch.Tensor,
    *,
    batch_size: int = 1024,
    rounds: int = 5,
    min_run_time: float = 0.05,
    warmup: int = 3,
    device: torch.device | str | None = None,
    clock: str = "auto",
) -> dict[str, InferenceTime]:
    """Inference time of each model on the same inputs, the models interleaved in ``rounds``.

    Each model runs in eval mode under ``torch.inference_mode`` on ``x[:batch_size]`` (batched)
    and on ``x[:1]`` (single input); after ``warmup`` calls of each, every round times every
    (model, call) with ``blocked_autorange(min_run_time)``, and the block times of all rounds
    are pooled into :class:`Timing` (median, IQR). The models' training mode is restored.

    Parameters
    ----------
    models : mapping of str to nn.Module
        Models to time, by name (at least one).
    x : Tensor
        Inputs, shape (n, …), n ≥ 1; values do not matter.
    batch_size : int
        Inputs per batched call (≥ 1; capped at n).
    rounds : int
        Interleaved rounds (≥ 1).
    min_run_time : float
        Seconds of timed blocks per (model, call) and round (> 0).
    warmup : int
        Untimed calls of each before the first round (≥ 0).
    device : torch.device, str or None
        Where to run (default: where each model's parameters are).
    clock : str
        ``"auto"`` (CPU time when every model runs on the CPU, else wall time), ``"cpu"`` or
        ``"wall"``; see the module docstring.

    Returns
    -------
    dict of str to InferenceTime
        Same keys as ``models``.
    """
    if not models:
        raise ValueError("models must hold at least one model")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(
            f"x must hold at least one input (shape (n, …), n ≥ 1); got {tuple(x.shape)}"
        )
    _check_int("batch_size", batch_size)
    _check_int("rounds", rounds)
    _check_min_run_time(min_run_time)
    if not (isinstance(warmup, int) and warmup >= 0):
        raise ValueError(f"warmup must be an integer ≥ 0; got {warmup!r}")
    threads = torch.get_num_threads()
    batch = min(batch_size, int(x.shape[0]))
    devices = {
        name: torch.device(device) if device is not None else next(m.parameters()).device
        for name, m in models.items()
    }
    on_cpu = all(d.type == "cpu" for d in devices.values())
    clock = _resolve_clock(clock, torch.device("cpu" if on_cpu else "cuda"))
    calls: dict[tuple[str, str], Callable[[], object]] = {}
    modes = {}
    for name, model in models.items():
        dev = devices[name]
        modes[name] = model.training
        model.eval().to(dev)
        xb, x1 = x[:batch].to(dev), x[:1].to(dev)
        calls[name, "batch"] = lambda m=model, v=xb: m(v)
        calls[name, "single"] = lambda m=model, v=x1: m(v)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    try:
        with torch.inference_mode():
            for fn in calls.values():
                for _ in range(warmup):
                    fn()
            for _ in range(rounds):
                for key, fn in calls.items():
                    m = _timer(fn, threads, clock).blocked_autorange(min_run_time=min_run_time)
                    times[key] += list(m.times)
    finally:
        for name, model in models.items():
            model.train(modes[name])
    return {
        name: InferenceTime(
            batch=_stats(times[name, "batch"]),
            single=_stats(times[name, "single"]),
            batch_size=batch,
            threads=threads,
            clock=clock,
        )
        for name in models
    }


def inference_time(model: nn.Module, x: torch.Tensor, **options) -> InferenceTime:
    """:func:`inference_times` of one model (same options)."""
    return inference_times({"model": model}, x, **options)["model"]

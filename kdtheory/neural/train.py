r"""Training loop on whole-data tensors, teacher cache, and the ``train`` CLI.

The data set lives on the device as tensors; an epoch is a seeded permutation and index slices
(no DataLoader, no per-batch Python data pipeline). The student minimises

    L_train = λ₁ CE(y, σ(g)) + (1 − λ₁) CE(σ(f/T), σ(g/T)),   λ₁ = 1 − χ,

with the teacher's logits f computed once (:func:`predict_logits`) and indexed per batch. On CUDA
the forward pass runs under autocast (bfloat16 where supported, else float16 with a gradient
scaler); on the CPU everything is float32.

CLI::

    python -m kdtheory.neural.train --dataset fashion-mnist --teacher cnn --student mlp \
        --chi 0.5 --temperature 4 --epochs 5 --teacher-epochs 3 --out results/fmnist

trains (or loads from ``--cache-dir``) the teacher, trains the student with KD (λ₁ = 1 − χ, T)
and without (λ₁ = 1) from the same initial weights, and writes ``metrics.json`` and
``learning_curves.png`` to ``--out``. Run with ``--help`` for every flag.

Teacher checkpoints are cached per user, never in the working directory: by default in
``$XDG_CACHE_HOME/kdtheory/teachers``, or ``~/.cache/kdtheory/teachers`` when that variable is
unset (:func:`default_cache_dir`). A cached checkpoint that cannot be used (unreadable, not a
checkpoint, weights of another shape, non-finite weights) raises :class:`DataError` naming the
file; ``--retrain-teacher`` trains the teacher again and overwrites it.

The teacher/student inference-time ratio is measured by
:func:`kdtheory.neural.timing.inference_times` (median of CPU time per call on the CPU, so that it
repeats on a shared machine).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # the plain bar: no notebook widget (and no IProgress warning)

from kdtheory.journal import check_output_dir, write_atomic
from kdtheory.neural.data import (
    DATASETS,
    DataError,
    DatasetNotFoundError,
    DataSplits,
    Split,
    load_dataset,
)
from kdtheory.neural.losses import kd_loss, validation_loss
from kdtheory.neural.models import MODELS, build_model, count_parameters
from kdtheory.neural.timing import DEFAULT_THREADS, THREADS_HELP, inference_times, set_threads

__all__ = [
    "FitConfig",
    "History",
    "atomic_write_bytes",
    "default_cache_dir",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_or_train_teacher",
    "main",
    "predict_logits",
    "resolve_device",
    "save_checkpoint",
]


# ---------------------------------------------------------------------------------- device ---


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


def _autocast(device: torch.device, enabled: bool):
    """Autocast context: mixed precision on CUDA only (bfloat16 if supported, else float16)."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------ checkpoints ---


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (parents created) via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def save_png(fig, path: str | Path) -> None:
    """Save a matplotlib figure as PNG at ``path`` atomically and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def save_checkpoint(
    path: str | Path, state_dict: dict, config: dict, extra: dict | None = None
) -> None:
    """Atomically save ``{"state_dict", "config", "extra"}`` with ``torch.save``.

    ``config`` and ``extra`` must hold only JSON-like values (so that loading with
    ``weights_only=True`` accepts them); a ``.json`` copy of ``config`` is written alongside.
    """
    import io

    buf = io.BytesIO()
    cpu_state = {k: v.detach().cpu() for k, v in state_dict.items()}
    torch.save({"state_dict": cpu_state, "config": config, "extra": extra or {}}, buf)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_bytes(Path(path).with_suffix(".json"), json.dumps(config, indent=2).encode())


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------- training ---


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings of :func:`fit`.

    Attributes
    ----------
    epochs : int
        Passes over the training split (≥ 1).
    batch_size : int
        Minibatch size (≥ 1); the last batch of an epoch may be smaller.
    lr : float
        Learning rate γ > 0.
    momentum : float
        SGD momentum in [0, 1) (ignored by Adam).
    weight_decay : float
        L2 coefficient ≥ 0.
    optimizer : str
        ``"sgd"`` or ``"adam"``.
    seed : int
        Seed of the minibatch order.
    amp : bool
        Mixed precision (CUDA only; the CPU always runs float32).
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    seed: int = 0
    amp: bool = True

    def __post_init__(self) -> None:
        _range("epochs", self.epochs, 1, None, integer=True)
        _range("batch_size", self.batch_size, 1, None, integer=True)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not self.weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be ≥ 0, got {self.weight_decay!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be sgd or adam, got {self.optimizer!r}")


def _range(name: str, value, low, high, *, integer: bool = False) -> None:
    ok = isinstance(value, int | np.integer) if integer else isinstance(value, int | float)
    if not ok or value < low or (high is not None and value > high):
        hi = f"{high}]" if high is not None else "∞)"
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} in [{low}, {hi}, got {value!r}")


@dataclass
class History:
    """Per-epoch learning curve of :func:`fit` (``train_time`` excludes evaluation)."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    train_time: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _make_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


def fit(
    model: nn.Module,
    train: Split,
    *,
    config: FitConfig,
    val: Split | None = None,
    teacher_logits: torch.Tensor | None = None,
    lambda1: float = 1.0,
    temperature: float = 1.0,
    t2_scaling: bool = False,
    t_val: float = 1.0,
    device: torch.device | str = "cpu",
    desc: str = "train",
    quiet: bool = False,
) -> History:
    """Train ``model`` in place on whole-data tensors with the KD loss.

    Minimises L_train = λ₁ CE(y, σ(g)) + (1 − λ₁) CE(σ(f/T), σ(g/T)) over minibatches of a seeded
    permutation; after each epoch records the running training loss and accuracy and, when
    ``val`` is given, L_val = CE(y, σ(g/T_val)) and the validation accuracy.

    Parameters
    ----------
    model : nn.Module
        Trained in place (moved to ``device``).
    train : Split
        Training inputs and labels (moved to ``device`` once, if not already there).
    config : FitConfig
        Epochs, batch size, optimiser, seed, AMP.
    val : Split or None
        Validation split for the learning curve.
    teacher_logits : Tensor or None
        f on the training inputs, shape (n, K), computed once; required when λ₁ < 1.
    lambda1 : float
        λ₁ = 1 − χ ∈ [0, 1].
    temperature : float
        T > 0.
    t2_scaling : bool
        Multiply the soft term by T².
    t_val : float
        T_val of the validation loss.
    device : torch.device or str
        Where to train.
    desc : str
        Progress-bar label.
    quiet : bool
        Disable the progress bar.

    Returns
    -------
    History
        Learning curve and training wall time in seconds.
    """
    device = torch.device(device)
    if lambda1 < 1.0 and teacher_logits is None:
        raise ValueError("teacher_logits are required when lambda1 < 1")
    model.to(device)
    x, y = train.x.to(device), train.y.to(device)
    f = teacher_logits.to(device) if teacher_logits is not None else None
    n = int(y.shape[0])
    opt = _make_optimizer(model, config)
    use_amp = device.type == "cuda" and config.amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    gen = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(n / config.batch_size)
    hist = History()
    bar = tqdm(
        total=config.epochs * steps_per_epoch, desc=desc, disable=quiet, leave=False, unit="step"
    )
    every = max(1, steps_per_epoch // 10)
    try:
        for epoch in range(1, config.epochs + 1):
            model.train()
            _sync(device)
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            perm = torch.randperm(n, generator=gen).to(device)
            for step, start in enumerate(range(0, n, config.batch_size)):
                idx = perm[start : start + config.batch_size]
                xb, yb = x[idx], y[idx]
                with _autocast(device, config.amp):
                    g = model(xb)
                loss = kd_loss(
                    g,
                    f[idx] if f is not None else None,
                    yb,
                    lambda1,
                    temperature,
                    t2_scaling=t2_scaling,
                )
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                loss_sum += loss.detach() * idx.numel()
                correct += (g.detach().argmax(dim=1) == yb).sum()
                bar.update(1)
                if not quiet and (step + 1) % every == 0:
                    bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}", refresh=False)
            _sync(device)
            hist.train_time += time.perf_counter() - t0
            hist.epoch.append(epoch)
            hist.train_loss.append(float(loss_sum) / n)
            hist.train_acc.append(float(correct) / n)
            if val is not None:
                vl, va = evaluate(model, val, t_val=t_val, device=device, amp=config.amp)
                hist.val_loss.append(vl)
                hist.val_acc.append(va)
            if not quiet:
                post = {
                    "epoch": epoch,
                    "loss": f"{hist.train_loss[-1]:.4f}",
                    "acc": f"{hist.train_acc[-1]:.3f}",
                }
                if val is not None:
                    post["val_acc"] = f"{hist.val_acc[-1]:.3f}"
                bar.set_postfix(post)
            if not math.isfinite(hist.train_loss[-1]):
                raise FloatingPointError(
                    f"{desc}: training loss is {hist.train_loss[-1]} at epoch {epoch}"
                )
    finally:
        bar.close()
    return hist


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int = 2048,
    device: torch.device | str | None = None,
    amp: bool = True,
) -> torch.Tensor:
    """Logits of ``model`` on all of ``x`` in eval mode, as float32 (computed once, then cached).

    Parameters
    ----------
    model : nn.Module
        Any model of :mod:`kdtheory.neural.models`.
    x : Tensor
        Inputs, shape (n, …).
    batch_size : int
        Evaluation batch size (memory only; the result does not depend on it).
    device : torch.device, str or None
        Where to run (default: where the model's parameters are).
    amp : bool
        Autocast on CUDA.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval().to(device)
    out = []
    for start in range(0, x.shape[0], batch_size):
        with _autocast(device, amp):
            out.append(model(x[start : start + batch_size].to(device)).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, device=device)


def evaluate(
    model: nn.Module,
    split: Split,
    *,
    t_val: float = 1.0,
    device: torch.device | str | None = None,
    amp: bool = True,
) -> tuple[float, float]:
    """(L_val, accuracy) of ``model`` on ``split``: CE(y, σ(g/T_val)) and mean [argmax g = y]."""
    g = predict_logits(model, split.x, device=device, amp=amp)
    y = split.y.to(g.device)
    return float(validation_loss(g, y, t_val)), float((g.argmax(dim=1) == y).float().mean())


# -------------------------------------------------------------------------------- teacher ---


def _config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    """The per-user folder of teacher checkpoints: ``$XDG_CACHE_HOME/kdtheory/teachers``, or
    ``~/.cache/kdtheory/teachers`` when ``XDG_CACHE_HOME`` is unset or not an absolute path."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "kdtheory" / "teachers"


_RETRAIN = "; rerun with --retrain-teacher (retrain=True) to train the teacher again over it"


def _short(exc: BaseException) -> str:
    """``Type: the first sentence that says what is wrong``. torch's messages run to many lines;
    its weights-only refusal opens by advising ``weights_only=False``, which is not repeated."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    prefix = ""
    if lines and lines[0].startswith(("Weights only load failed", "Error(s) in loading")):
        prefix = "refused by the safe loader: " if lines[0].startswith("Weights") else ""
        skip = ("Please file an issue", "Check the documentation")
        lines = [ln for ln in lines[1:] if not ln.startswith(skip)] or lines[:1]
    first = lines[0].split(". ")[0][:200] if lines else ""
    return f"{type(exc).__name__}: {prefix}{first}" if first else type(exc).__name__


def _load_cached_teacher(path: Path, model: nn.Module, cfg: dict) -> dict | None:
    """Load the checkpoint ``path`` into ``model``; its ``extra`` dict, or None if it was saved
    for another configuration. Raises :class:`DataError` naming the file when it is unreadable,
    not a checkpoint, or its weights do not fit ``model`` or are not finite."""
    try:
        ckpt = load_checkpoint(path)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, … by case
        raise DataError(f"{path}: unreadable teacher checkpoint ({_short(exc)}){_RETRAIN}") from exc
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        what = f"dict with keys {list(ckpt)[:5]}" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise DataError(f"{path}: not a teacher checkpoint (a {what}){_RETRAIN}")
    if ckpt.get("config") != cfg:
        return None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:  # keys, shapes, non-tensors
        raise DataError(
            f"{path}: its weights do not fit the {cfg['model']} teacher ({_short(exc)}){_RETRAIN}"
        ) from exc
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DataError(f"{path}: non-finite teacher weights in {', '.join(bad[:3])}{_RETRAIN}")
    extra = ckpt.get("extra")
    return extra if isinstance(extra, dict) else {}


def load_or_train_teacher(
    data: DataSplits,
    name: str,
    *,
    config: FitConfig,
    cache_dir: str | Path | None,
    data_config: dict,
    device: torch.device | str = "cpu",
    model_options: dict | None = None,
    retrain: bool = False,
    quiet: bool = False,
) -> tuple[nn.Module, dict]:
    """Train teacher ``name`` on ``data.teacher_split``, or load it from ``cache_dir``.

    The checkpoint ``teacher-<dataset>-<name>-<hash>.pt`` stores the state dict and the full
    configuration (data set and its options, model, :class:`FitConfig`, torch version); it is
    reused only if the stored configuration equals the requested one, and loaded with
    ``weights_only=True``. ``cache_dir`` None: no cache (see :func:`default_cache_dir`).

    Raises
    ------
    DataError
        The cached checkpoint cannot be used (unreadable, not a checkpoint, weights of another
        shape, non-finite weights) and ``retrain`` is False; the message names the file.

    Returns
    -------
    model : nn.Module
        The teacher on ``device``, in eval mode.
    info : dict
        ``loaded`` (bool), ``train_time_s`` (of the original training), ``history``, ``config``,
        ``checkpoint`` path.
    """
    device = torch.device(device)
    model_options = model_options or {}
    cfg = {
        "kind": "teacher",
        "data": data_config,
        "model": name,
        "model_options": model_options,
        "fit": asdict(config),
        "device_type": device.type,
    }
    model = build_model(name, data.input_shape, data.num_classes, seed=config.seed, **model_options)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"teacher-{data.name}-{name}-{_config_hash(cfg)}.pt"
        extra = None if retrain or not path.is_file() else _load_cached_teacher(path, model, cfg)
        if extra is not None:
            model.to(device).eval()
            return model, {
                "loaded": True,
                "checkpoint": str(path),
                "train_time_s": extra.get("train_time_s"),
                "history": extra.get("history"),
                "config": cfg,
            }
    split = data.teacher_split
    hist = fit(
        model,
        split,
        config=config,
        val=data.val,
        device=device,
        desc=f"teacher {name}",
        quiet=quiet,
    )
    model.eval()
    if path is not None:
        save_checkpoint(
            path,
            model.state_dict(),
            cfg,
            {"train_time_s": hist.train_time, "history": hist.as_dict()},
        )
    return model, {
        "loaded": False,
        "checkpoint": str(path) if path else None,
        "train_time_s": hist.train_time,
        "history": hist.as_dict(),
        "config": cfg,
    }


# ------------------------------------------------------------------------------------- CLI ---


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _fail(msg: str) -> None:
    sys.stderr.write(f"kdtheory.neural.train: error: {msg}\n")
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``train`` CLI's argument parser."""
    p = _Parser(
        prog="python -m kdtheory.neural.train",
        description=(
            "Train (or load) a teacher, then a student with knowledge distillation "
            "L = λ₁ CE(y, σ(g)) + (1 − λ₁) CE(σ(f/T), σ(g/T)) with λ₁ = 1 − χ, and the same student "
            "without distillation (λ₁ = 1) from the same initial weights. Writes metrics.json "
            "(accuracies, losses, train and inference times) and learning_curves.png to --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        default="digits",
        choices=DATASETS,
        help="data set (digits is embedded; no files needed)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="folder with the data files (fashion-mnist: IDX files, default /usr/share/datasets/fashion-mnist; "
        "cifar10*: a folder holding cifar-10-batches-py)",
    )
    p.add_argument(
        "--teacher",
        default=None,
        choices=tuple(MODELS),
        help="teacher model (default: cnn for images, mlp-large for synthetic)",
    )
    p.add_argument("--student", default="mlp", choices=tuple(MODELS), help="student model")
    p.add_argument(
        "--student-hidden",
        type=int,
        default=100,
        help="hidden units of an mlp / cnn-small student (≥ 1)",
    )
    p.add_argument(
        "--chi", type=float, default=0.5, help="χ ∈ [0, 1], weight of the teacher term; λ₁ = 1 − χ"
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=4.0,
        help="T > 0, distillation temperature (dimensionless)",
    )
    p.add_argument(
        "--t2-scaling", action="store_true", help="multiply the soft term by T² (Hinton et al.)"
    )
    p.add_argument(
        "--t-val",
        type=float,
        default=1.0,
        help="T_val > 0, temperature of the validation loss CE(y, σ(g/T_val))",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=5,
        help="student epochs (passes over the student's training split, ≥ 1)",
    )
    p.add_argument("--teacher-epochs", type=int, default=5, help="teacher epochs (≥ 1)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="minibatch size in examples (≥ 1), teacher and student",
    )
    p.add_argument(
        "--lr", type=float, default=0.05, help="student learning rate γ > 0 (SGD with --momentum)"
    )
    p.add_argument(
        "--teacher-lr",
        type=float,
        default=0.05,
        help="teacher learning rate > 0 (SGD with --momentum)",
    )
    p.add_argument(
        "--momentum", type=float, default=0.9, help="SGD momentum in [0, 1), teacher and student"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data split, the initial weights and the minibatch order",
    )
    p.add_argument(
        "--val-size",
        type=int,
        default=None,
        help="validation images taken from the training files (fashion-mnist, cifar10*; default 5000)",
    )
    p.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="keep only this many training images (fashion-mnist; default all)",
    )
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N"
    )
    p.add_argument(
        "--no-amp",
        action="store_true",
        help="disable mixed precision on CUDA (the CPU always runs float32)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="folder of teacher checkpoints, reused when the configuration matches (default: "
        "$XDG_CACHE_HOME/kdtheory/teachers, else ~/.cache/kdtheory/teachers)",
    )
    p.add_argument(
        "--retrain-teacher",
        action="store_true",
        help="ignore a cached teacher (also an unusable one) and train it again",
    )
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=THREADS_HELP)
    p.add_argument(
        "--out",
        default="results/neural/train",
        help="output folder for metrics.json and learning_curves.png",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _validate(args: argparse.Namespace) -> None:
    checks = [
        ("--seed", args.seed >= 0, "must be an integer ≥ 0"),
        ("--chi", 0.0 <= args.chi <= 1.0, "must be in [0, 1]"),
        ("--temperature", args.temperature > 0 and math.isfinite(args.temperature), "must be > 0"),
        ("--t-val", args.t_val > 0 and math.isfinite(args.t_val), "must be > 0"),
        ("--epochs", args.epochs >= 1, "must be an integer ≥ 1"),
        ("--teacher-epochs", args.teacher_epochs >= 1, "must be an integer ≥ 1"),
        ("--batch-size", args.batch_size >= 1, "must be an integer ≥ 1"),
        ("--lr", args.lr > 0 and math.isfinite(args.lr), "must be > 0"),
        ("--teacher-lr", args.teacher_lr > 0 and math.isfinite(args.teacher_lr), "must be > 0"),
        ("--momentum", 0.0 <= args.momentum < 1.0, "must be in [0, 1)"),
        ("--student-hidden", args.student_hidden >= 1, "must be an integer ≥ 1"),
        ("--val-size", args.val_size is None or args.val_size >= 1, "must be an integer ≥ 1"),
        ("--train-size", args.train_size is None or args.train_size >= 1, "must be an integer ≥ 1"),
        ("--threads", args.threads >= 1, "must be an integer ≥ 1"),
    ]
    for flag, ok, why in checks:
        if not ok:
            _fail(f"{flag} {why}; got {getattr(args, flag[2:].replace('-', '_'))}")
    if args.train_size is not None and args.dataset != "fashion-mnist":
        _fail("--train-size applies to --dataset fashion-mnist only")
    if args.val_size is not None and args.dataset not in (
        "fashion-mnist",
        "cifar10",
        "cifar10-reduced",
    ):
        _fail("--val-size applies to fashion-mnist and cifar10* only")


def _data_options(args: argparse.Namespace) -> dict:
    opts = {}
    if args.val_size is not None:
        opts["val_size"] = args.val_size
    if args.train_size is not None:
        opts["train_size"] = args.train_size
    return opts


def _student_options(name: str, hidden: int) -> dict:
    return {"hidden": hidden} if name in ("mlp", "mlp-large", "cnn-small") else {}


def plot_learning_curves(curves: dict[str, dict], path: str | Path, title: str = "") -> None:
    """Save a two-panel PNG: training loss and validation accuracy per epoch for each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for label, h in curves.items():
        if not h:
            continue
        ax1.plot(h["epoch"], h["train_loss"], marker="o", label=label)
        if h.get("val_acc"):
            ax2.plot(h["epoch"], h["val_acc"], marker="o", label=label)
    ax1.set(xlabel="epoch", ylabel="training loss (its own L_train)", title="training loss")
    ax2.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)


def _student_run(
    data: DataSplits,
    name: str,
    options: dict,
    cfg: FitConfig,
    *,
    f_train: torch.Tensor | None,
    lambda1: float,
    temperature: float,
    t2: bool,
    t_val: float,
    device: torch.device,
    desc: str,
    quiet: bool,
) -> tuple[nn.Module, dict]:
    model = build_model(name, data.input_shape, data.num_classes, seed=cfg.seed + 1, **options)
    hist = fit(
        model,
        data.train,
        config=cfg,
        val=data.val,
        teacher_logits=f_train,
        lambda1=lambda1,
        temperature=temperature,
        t2_scaling=t2,
        t_val=t_val,
        device=device,
        desc=desc,
        quiet=quiet,
    )
    test_loss, test_acc = evaluate(model, data.test, t_val=t_val, device=device, amp=cfg.amp)
    val_loss, val_acc = evaluate(model, data.val, t_val=t_val, device=device, amp=cfg.amp)
    return model, {
        "model": name,
        "model_options": options,
        "params": count_parameters(model),
        "lambda1": lambda1,
        "temperature": temperature,
        "train_time_s": hist.train_time,
        "final_train_loss": hist.train_loss[-1],
        "val_loss": val_loss,
        "val_acc": val_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "history": hist.as_dict(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m kdtheory.neural.train`` (returns the exit code)."""
    args = build_parser().parse_args(argv)
    _validate(args)
    set_threads(args.threads)  # before any torch work
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        _fail(str(exc))
    data_opts = _data_options(args)
    try:
        data = load_dataset(args.dataset, data_root=args.data_root, seed=args.seed, **data_opts)
    except DatasetNotFoundError as exc:
        _fail(f"--dataset {args.dataset}: data files absent: {exc}")
    except (DataError, ValueError) as exc:
        _fail(f"--dataset {args.dataset}: {exc}")
    teacher_name = args.teacher or ("cnn" if data.is_image else "mlp-large")
    s_opts = _student_options(args.student, args.student_hidden)
    for flag, nm, opts in (("--teacher", teacher_name, {}), ("--student", args.student, s_opts)):
        try:
            build_model(nm, data.input_shape, data.num_classes, **opts)
        except ValueError as exc:
            _fail(f"{flag} {nm}: {exc}")
    try:  # before any training; the cache first, so that a bad one leaves no empty --out behind
        args.cache_dir = str(check_output_dir(args.cache_dir or default_cache_dir(), "--cache-dir"))
        out = check_output_dir(args.out, flag="--out")
    except ValueError as exc:
        _fail(str(exc))
    lambda1 = 1.0 - args.chi
    amp = not args.no_amp
    t_cfg = FitConfig(
        epochs=args.teacher_epochs,
        batch_size=args.batch_size,
        lr=args.teacher_lr,
        momentum=args.momentum,
        seed=args.seed,
        amp=amp,
    )
    s_cfg = FitConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        seed=args.seed,
        amp=amp,
    )
    data_cfg = {"dataset": args.dataset, "seed": args.seed, "options": data_opts, "info": data.info}
    data = data.to(device)

    try:
        teacher, t_info = load_or_train_teacher(
            data,
            teacher_name,
            config=t_cfg,
            cache_dir=args.cache_dir,
            data_config=data_cfg,
            device=device,
            retrain=args.retrain_teacher,
            quiet=args.quiet,
        )
    except DataError as exc:  # an unusable cached checkpoint
        _fail(str(exc))
    t_test_loss, t_test_acc = evaluate(teacher, data.test, t_val=args.t_val, device=device, amp=amp)
    _sync(device)
    t0 = time.perf_counter()
    f_train = predict_logits(teacher, data.train.x, device=device, amp=amp)  # cached once
    _sync(device)
    logits_time = time.perf_counter() - t0

    common = dict(t2=args.t2_scaling, t_val=args.t_val, device=device, quiet=args.quiet)
    student_kd, kd = _student_run(
        data, args.student, s_opts, s_cfg, f_train=f_train, lambda1=lambda1,
        temperature=args.temperature, desc="student KD", **common,
    )  # fmt: skip
    student_plain, plain = _student_run(
        data, args.student, s_opts, s_cfg, f_train=None, lambda1=1.0,
        temperature=args.temperature, desc="student no KD", **common,
    )  # fmt: skip
    inf = inference_times({"teacher": teacher, "student": student_kd}, data.test.x, device=device)
    inf_t, inf_s = inf["teacher"].as_dict(), inf["student"].as_dict()
    kd["inference"] = plain["inference"] = inf_s
    metrics = {
        "command": "python -m kdtheory.neural.train "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {**vars(args), "lambda1": lambda1, "teacher": teacher_name},
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "data": {k: v for k, v in (data.info or {}).items()},
        "teacher": {
            "model": teacher_name,
            "params": count_parameters(teacher),
            "loaded_from_cache": t_info["loaded"],
            "checkpoint": t_info["checkpoint"],
            "train_time_s": t_info["train_time_s"],
            "test_loss": t_test_loss,
            "test_acc": t_test_acc,
            "logits_time_s": logits_time,
            "inference": inf_t,
            "history": t_info["history"],
        },
        "student_kd": kd,
        "student_no_kd": plain,
        "inference_time_ratio_teacher_over_student": {
            "batch": inf_t["batch"]["median"] / inf_s["batch"]["median"],
            "per_sample": inf_t["single"]["median"] / inf_s["single"]["median"],
        },
    }
    atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=2).encode())
    plot_learning_curves(
        {
            f"teacher {teacher_name}": t_info["history"],
            f"student KD (λ₁={lambda1:g}, T={args.temperature:g})": kd["history"],
            "student no KD": plain["history"],
        },
        out / "learning_curves.png",
        title=f"{args.dataset}: teacher {teacher_name}, student {args.student}",
    )
    del student_plain
    if not args.quiet:
        t_state = "loaded" if t_info["loaded"] else "{:.1f} s".format(t_info["train_time_s"])
        print(
            f"{args.dataset} on {device}: teacher {teacher_name} acc {t_test_acc:.4f} "
            f"({t_state}); "
            f"student {args.student} KD acc {kd['test_acc']:.4f} ({kd['train_time_s']:.1f} s), "
            f"no KD acc {plain['test_acc']:.4f} ({plain['train_time_s']:.1f} s); "
            f"inference ratio teacher/student {metrics['inference_time_ratio_teacher_over_student']['batch']:.1f} "
            f"(batch), {metrics['inference_time_ratio_teacher_over_student']['per_sample']:.1f} (per sample); "
            f"wrote {out / 'metrics.json'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

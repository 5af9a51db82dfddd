r"""The one training loop on whole-data tensors, and evaluation.

The data set lives on the device as tensors; an epoch is a seeded permutation and index slices
(no DataLoader, no per-batch Python data pipeline). The student minimises

    L_train = λ₁ CE(y, σ(g)) + (1 − λ₁) CE(σ(f/T), σ(g/T_s)),   λ₁ = 1 − χ,

(T_s = T, or 1 when only the teacher's output is tempered) with the teacher's logits f computed once (:func:`predict_logits`) and indexed per batch. On CUDA
the forward pass runs under autocast (bfloat16 where supported, else float16 with a gradient
scaler); on the CPU everything is float32.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # the plain bar: no notebook widget (and no IProgress warning)

from kdtheory.neural.data import Split
from kdtheory.neural.device import _autocast, _sync
from kdtheory.neural.losses import kd_loss, student_temperature, validation_loss

__all__ = ["FitConfig", "History", "evaluate", "fit", "predict_logits"]


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
    soft: str = "cross-entropy",
    tempered: str = "both",
) -> History:
    """Train ``model`` in place on whole-data tensors with the KD loss.

    Minimises L_train = λ₁ CE(y, σ(g)) + (1 − λ₁) CE(σ(f/T), σ(g/T_s)) over minibatches of a seeded
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
    soft : str
        The soft term D of :func:`~kdtheory.neural.losses.kd_loss` (``SOFT_TARGETS``): the
        cross-entropy (default) or the forward or reverse KL divergence.
    tempered : str
        ``"both"`` (T_s = T, default) or ``"teacher"`` (T_s = 1), see
        :data:`~kdtheory.neural.losses.TEMPERED`.

    Returns
    -------
    History
        Learning curve and training wall time in seconds.
    """
    device = torch.device(device)
    student_temperature(temperature, tempered)  # a bad convention fails before any work
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
                    soft=soft,
                    tempered=tempered,
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

r"""The λ-path optimiser: gradient-based KD metaparameters and Algorithm 1 of
Gorpinich, Bakhteev & Strijov (2021–2022).

The student's weights w follow plain SGD on L_train(w, λ) = λ₁ CE(y, σ(g)) +
(1 − λ₁) CE(σ(f/T), σ(g/T)); the metaparameters λ = (λ₁, T), kept in unconstrained coordinates
θ (λ₁ = sigmoid θ₁, T = exp θ₂), follow one of three schedules (``mode``):

``fixed``
    λ never changes (the baselines: without distillation λ₁ = 1, naive, random, Hyperopt trials).
``gradient``
    every step is a hypergradient step, the greedy rule (2) of Gorpinich et al.:
    θ ← θ − γ_λ ∇_θ L_val(w − γ ∇_w L_train(w, λ)), then w ← w − γ ∇_w L_train(w, λ)
    (the same one step that was unrolled, so it is not recomputed).
``proposed``
    Algorithm 1: e₁ hypergradient steps (joint w, λ), a least-squares line θ ≈ c₁ z + c₂ through
    the e₁ values of θ (z = 1 … e₁), then e₂ plain w-steps with θ(z) = c₁ z + c₂ predicted for
    z = e₁ + 1 … e₁ + e₂; repeat until the step budget is spent. e₁ = e₂ = 10 by default.

An iteration is one minibatch step. The meta-optimiser is plain gradient descent as in rule (2)
(``meta_optimizer="sgd"``) or Adam (``"adam"``, the default: the hypergradient's scale changes by
orders of magnitude between data sets and during training, and Adam's step is scale-free). After
each update θ is projected onto the box λ₁ ∈ [sigmoid(−6), sigmoid(6)] ≈ [0.0025, 0.9975] and
T ∈ [0.1, 10] (the random / Hyperopt search box), so that sigmoid and exp do not saturate.

Usage (any student without batch norm, cached teacher logits, whole-tensor splits)::

    opt = LambdaPathOptimizer(student, f_train, data.train, data.val, mode="proposed")
    result = opt.run(steps=2000)
    result.lambda1, result.temperature, result.record.lambda1   # final values and trajectory
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
from kdtheory.neural.lambda_path.hypergrad import hypergradient, raw_from_lambda, weight_penalty
from kdtheory.neural.losses import kd_loss, student_temperature
from kdtheory.neural.training import evaluate

__all__ = [
    "MODES",
    "LambdaPathOptimizer",
    "LambdaPathResult",
    "LinearTrajectory",
    "PathRecord",
]

MODES = ("fixed", "gradient", "proposed")
THETA1_BOX = (-6.0, 6.0)
TEMPERATURE_BOX = (0.1, 10.0)


@dataclass(frozen=True)
class LinearTrajectory:
    r"""The locally linear model of the metaparameter path, θ(z) ≈ c₁ z + c₂ per coordinate.

    Attributes
    ----------
    c1, c2 : numpy.ndarray
        Slope and intercept, one entry per coordinate of θ.
    """

    c1: np.ndarray
    c2: np.ndarray

    @classmethod
    def fit(cls, z: np.ndarray, traj: np.ndarray) -> LinearTrajectory:
        """Least squares ĉ = argmin_c ‖traj − (c₁ z + c₂)‖² for each column of ``traj``.

        Parameters
        ----------
        z : array, shape (n,)
            Iteration indices (Algorithm 1: 1 … e₁).
        traj : array, shape (n,) or (n, d)
            Metaparameter values at those iterations.
        """
        z = np.asarray(z, dtype=np.float64)
        t = np.asarray(traj, dtype=np.float64)
        t2 = t[:, None] if t.ndim == 1 else t
        if z.ndim != 1 or t2.shape[0] != z.shape[0] or z.shape[0] < 1:
            raise ValueError(
                f"need z of shape (n,) and traj of shape (n, d); got {z.shape}, {t.shape}"
            )
        if z.shape[0] == 1 or np.ptp(z) == 0:
            return cls(np.zeros(t2.shape[1]), t2.mean(axis=0))
        design = np.column_stack([z, np.ones_like(z)])
        coef, *_ = np.linalg.lstsq(design, t2, rcond=None)
        return cls(coef[0], coef[1])

    def predict(self, z: np.ndarray | float) -> np.ndarray:
        """c₁ z + c₂, shape (len(z), d) (or (d,) for a scalar z)."""
        z = np.asarray(z, dtype=np.float64)
        if z.ndim == 0:
            return self.c1 * z + self.c2
        return z[:, None] * self.c1[None, :] + self.c2[None, :]


@dataclass
class PathRecord:
    """The metaparameter trajectory, one entry per step (values used by that step)."""

    step: list[int] = field(default_factory=list)
    lambda1: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)
    phase: list[str] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)


@dataclass
class LambdaPathResult:
    """Outcome of :meth:`LambdaPathOptimizer.run`.

    Attributes
    ----------
    mode : str
        ``fixed``, ``gradient`` or ``proposed``.
    lambda1, temperature : float
        Final λ₁ and T.
    train_steps : int
        Minibatch steps of w (every mode: the budget).
    hyper_steps : int
        Steps that computed a hypergradient (gradient: all; proposed: e₁ of every e₁ + e₂).
    wall_time_s : float
        Wall time of the steps (evaluation excluded).
    val_loss, val_acc : float
        L_val = CE(y, σ(g/T_val)) and accuracy on the whole validation split at the end.
    record : PathRecord
        Trajectory of (λ₁, T) and the training loss per step.
    """

    mode: str
    lambda1: float
    temperature: float
    train_steps: int
    hyper_steps: int
    wall_time_s: float
    val_loss: float
    val_acc: float
    record: PathRecord

    def as_dict(self) -> dict:
        return asdict(self)


class _Minibatches:
    """Indices of full minibatches of min(size, n) from a seeded random permutation of n, reshuffled
    when fewer than that remain: every step sees a full minibatch (a short remainder batch, e.g. 8
    of 5 000 with batches of 128, would make the final iterate as noisy as that batch)."""

    def __init__(self, n: int, size: int, seed: int, device: torch.device) -> None:
        self.n, self.size, self.device = n, min(size, n), device
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.size > self.perm.numel():
            self.perm = torch.randperm(self.n, generator=self.gen).to(self.device)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.size]
        self.pos += self.size
        return idx


class LambdaPathOptimizer:
    """Train a student with KD while optimising λ = (λ₁, T) along the λ-path of Gorpinich et al.

    Parameters
    ----------
    student : nn.Module
        The student g(·, w) (no batch norm / running buffers); trained in place.
    teacher_logits : Tensor
        f on the training inputs, shape (n, K), computed once.
    train, val : Split
        Training and validation splits (whole tensors; moved to ``device`` once).
    mode : str
        ``"fixed"``, ``"gradient"`` or ``"proposed"`` (see the module docstring).
    lambda1 : float
        Initial λ₁ ∈ [0, 1] (exact, including 0 and 1, in ``fixed`` mode).
    temperature : float
        Initial T > 0.
    lr : float
        γ, the SGD learning rate of w (also the step unrolled by the hypergradient).
    meta_lr : float
        γ_λ, the learning rate of θ.
    meta_optimizer : str
        ``"adam"`` (default) or ``"sgd"`` (rule (2) literally).
    batch_size, val_batch_size : int
        Minibatch sizes of L_train and of L_val in the hypergradient (None: ``batch_size``; a
        size ≥ the validation split uses all of it).
    e1, e2 : int
        Algorithm 1's numbers of gradient steps and of linearly predicted steps per cycle.
    t_val : float
        T_val of L_val.
    t2_scaling : bool
        Multiply the soft term by T².
    tempered : str
        Which softmaxes the soft term tempers, ``"both"`` (default) or ``"teacher"``
        (:data:`~kdtheory.neural.losses.TEMPERED`), in the plain and the unrolled steps alike.
    weight_decay : float
        μ ≥ 0: L_train gains (μ/2)‖W‖² over the weight matrices (biases not decayed), in the plain
        and in the unrolled steps alike.
    seed : int
        Seed of the minibatch order (training and validation).
    device : torch.device, str or None
        Where to run (default: where the student's parameters are).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher_logits: torch.Tensor,
        train: Split,
        val: Split,
        *,
        mode: str = "proposed",
        lambda1: float = 0.5,
        temperature: float = 1.0,
        lr: float = 0.1,
        meta_lr: float = 0.02,
        meta_optimizer: str = "adam",
        batch_size: int = 128,
        val_batch_size: int | None = None,
        e1: int = 10,
        e2: int = 10,
        t_val: float = 1.0,
        t2_scaling: bool = False,
        weight_decay: float = 0.0,
        seed: int = 0,
        device: torch.device | str | None = None,
        tempered: str = "both",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        if meta_optimizer not in ("adam", "sgd"):
            raise ValueError(f"meta_optimizer must be adam or sgd; got {meta_optimizer!r}")
        for name, v in (("lr", lr), ("meta_lr", meta_lr), ("t_val", t_val)):
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number > 0; got {v!r}")
        if not (weight_decay >= 0 and math.isfinite(weight_decay)):
            raise ValueError(f"weight_decay must be a finite number ≥ 0; got {weight_decay!r}")
        for name, v in (("e1", e1), ("e2", e2), ("batch_size", batch_size)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"{name} must be an integer ≥ 1; got {v!r}")
        if teacher_logits.shape[0] != len(train):
            raise ValueError(
                f"teacher_logits has {teacher_logits.shape[0]} rows for {len(train)} training examples"
            )
        self.device = (
            torch.device(device) if device is not None else next(student.parameters()).device
        )
        self.model = student.to(self.device)
        self.f = teacher_logits.to(self.device).float()
        self.train_split = train.to(self.device)
        self.val_split = val.to(self.device)
        self.mode = mode
        self.lr = lr
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.e1, self.e2 = e1, e2
        self.t_val, self.t2_scaling = t_val, t2_scaling
        student_temperature(temperature, tempered)  # refuses an unknown convention
        self.tempered = tempered
        self.weight_decay = float(weight_decay)
        self._fixed = (float(lambda1), float(temperature))  # exact values for fixed mode
        self.raw = raw_from_lambda(lambda1, temperature, device=self.device)
        self.raw.requires_grad_(False)
        self._meta_param = torch.nn.Parameter(self.raw.clone())
        opt_cls = torch.optim.Adam if meta_optimizer == "adam" else torch.optim.SGD
        self._meta_opt = opt_cls([self._meta_param], lr=meta_lr)
        self._train_batches = _Minibatches(len(self.train_split), batch_size, seed, self.device)
        self._val_batches = _Minibatches(
            len(self.val_split), self.val_batch_size, seed + 7919, self.device
        )
        self._cycle = 0  # position in the e₁ + e₂ cycle of Algorithm 1
        self._traj: list[np.ndarray] = []
        self._line: LinearTrajectory | None = None
        self.train_steps = 0
        self.hyper_steps = 0
        self.record = PathRecord()
        self.fits: list[dict] = []  # proposed mode: per cycle, the θ values fitted and the line
        self._params = {k: p for k, p in self.model.named_parameters() if p.requires_grad}

    # ------------------------------------------------------------------------- state ---
    @property
    def lambda1(self) -> float:
        """Current λ₁."""
        if self.mode == "fixed":
            return self._fixed[0]
        return float(torch.sigmoid(self.raw[0]))

    @property
    def temperature(self) -> float:
        """Current T."""
        if self.mode == "fixed":
            return self._fixed[1]
        return float(torch.exp(self.raw[1]))

    def _set_raw(self, raw: torch.Tensor) -> None:
        lo, hi = math.log(TEMPERATURE_BOX[0]), math.log(TEMPERATURE_BOX[1])
        r = raw.detach().clone()
        r[0] = r[0].clamp(*THETA1_BOX)
        r[1] = r[1].clamp(lo, hi)
        self.raw = r
        with torch.no_grad():
            self._meta_param.copy_(r)

    # ----------------------------------------------------------------------- batches ---
    def _next_train_idx(self) -> torch.Tensor:
        return self._train_batches.next()

    def _next_val_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.val_batch_size >= len(self.val_split):
            return self.val_split.x, self.val_split.y
        idx = self._val_batches.next()
        return self.val_split.x[idx], self.val_split.y[idx]

    # ------------------------------------------------------------------------- steps ---
    def _apply(self, grads: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, p in self._params.items():
                p.sub_(self.lr * grads[k])

    def _plain_step(self, lambda1: float, temperature: float) -> float:
        idx = self._next_train_idx()
        x, y = self.train_split.x[idx], self.train_split.y[idx]
        loss = kd_loss(
            self.model(x),
            self.f[idx],
            y,
            lambda1,
            temperature,
            t2_scaling=self.t2_scaling,
            tempered=self.tempered,
        ) + weight_penalty(self._params, self.weight_decay)
        grads = torch.autograd.grad(loss, list(self._params.values()))
        self._apply(dict(zip(self._params, grads, strict=True)))
        return float(loss.detach())

    def _hyper_step(self) -> float:
        idx = self._next_train_idx()
        tb = (self.train_split.x[idx], self.train_split.y[idx], self.f[idx])
        hs = hypergradient(
            self.model, self.raw, tb, self._next_val_batch(), lr=self.lr,
            t_val=self.t_val, t2_scaling=self.t2_scaling, weight_decay=self.weight_decay,
            tempered=self.tempered,
        )  # fmt: skip
        self._apply(hs.weight_grads)  # w ← U(w, λ): the step that was unrolled
        self._meta_opt.zero_grad(set_to_none=True)
        self._meta_param.grad = hs.grad_raw.clone()
        self._meta_opt.step()
        self._set_raw(self._meta_param.detach())
        self.hyper_steps += 1
        return hs.train_loss

    def step(self) -> str:
        """One minibatch step according to ``mode``; returns its phase (fixed/gradient/linear)."""
        lam, temp = self.lambda1, self.temperature
        if self.mode == "fixed":
            phase, loss = "fixed", self._plain_step(lam, temp)
        elif self.mode == "gradient":
            phase, loss = "gradient", self._hyper_step()
        elif self._cycle < self.e1:
            phase, loss = "gradient", self._hyper_step()
            self._traj.append(self.raw.cpu().numpy().astype(np.float64))
        else:
            if self._cycle == self.e1:  # fit the line through the e₁ gradient-phase values
                z = np.arange(1, len(self._traj) + 1, dtype=np.float64)
                traj = np.stack(self._traj)
                self._line = LinearTrajectory.fit(z, traj)
                self.fits.append({"step": self.train_steps + 1, "traj": traj, "line": self._line})
                self._traj = []
            pred = self._line.predict(float(self._cycle + 1))  # z = e₁ + 1 … e₁ + e₂
            self._set_raw(torch.as_tensor(pred, dtype=self.raw.dtype, device=self.device))
            lam, temp = self.lambda1, self.temperature
            phase, loss = "linear", self._plain_step(lam, temp)
        if self.mode == "proposed":
            self._cycle = (self._cycle + 1) % (self.e1 + self.e2)
        self.train_steps += 1
        rec = self.record
        rec.step.append(self.train_steps)
        rec.lambda1.append(lam)
        rec.temperature.append(temp)
        rec.phase.append(phase)
        rec.train_loss.append(loss)
        return phase

    def evaluate(self, split: Split) -> tuple[float, float]:
        """(CE(y, σ(g/T_val)), accuracy) of the current student on ``split`` (whole tensors)."""
        return evaluate(self.model, split, t_val=self.t_val, device=self.device, amp=False)

    def run(self, steps: int, *, quiet: bool = True, desc: str | None = None) -> LambdaPathResult:
        """Take ``steps`` minibatch steps and return the result (final λ, costs, trajectory)."""
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"steps must be an integer ≥ 1; got {steps!r}")
        bar = tqdm(total=steps, desc=desc or self.mode, disable=quiet, leave=False, unit="step")
        self.model.train()
        t0 = time.perf_counter()
        try:
            for i in range(steps):
                self.step()
                bar.update(1)
                if not quiet and (i + 1) % 50 == 0:
                    bar.set_postfix(
                        lam1=f"{self.lambda1:.3f}", T=f"{self.temperature:.2f}",
                        loss=f"{self.record.train_loss[-1]:.4f}", refresh=False,
                    )  # fmt: skip
        finally:
            bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall = time.perf_counter() - t0
        if not math.isfinite(self.record.train_loss[-1]):
            raise FloatingPointError(f"{self.mode}: training loss is {self.record.train_loss[-1]}")
        val_loss, val_acc = self.evaluate(self.val_split)
        return LambdaPathResult(
            mode=self.mode,
            lambda1=self.lambda1,
            temperature=self.temperature,
            train_steps=self.train_steps,
            hyper_steps=self.hyper_steps,
            wall_time_s=wall,
            val_loss=val_loss,
            val_acc=val_acc,
            record=self.record,
        )

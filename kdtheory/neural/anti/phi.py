r"""φ by optimisation: the section-4 objective of anti-distillation (Petrushina et al.).

    φ(û) = argmin_w  λ₁ L_f(w, D₁*) + λ₂ ‖û − w[û]‖² + λ₃ L₃^δ(w, D₁*) + λ₄ ‖∂²L_f/∂w²‖²,

with λ on the simplex (λᵢ ≥ 0, Σ λᵢ = 1) and λ₂ > 0 for anti-distillation.

* L_f(w, D₁*) — mean cross-entropy of the student on D₁* = {(ψ(x), y)}, the teacher's data mapped
  into the student's input space (:func:`kdtheory.neural.anti.growth.psi`); its labels are the first c₁
  of the student's classes.
* ‖û − w[û]‖² — squared distance, on the teacher's places (the mask of
  :func:`kdtheory.neural.anti.growth.grow`), between w and the grown start w₁ (there the teacher's
  weights, rescaled where Net2Net or ψ replicated them).
* L₃^δ — the loss expected under input perturbations, by Monte Carlo over ``n_mc`` draws
  (:func:`perturbed_loss`): ``uniform`` x' = x + U[−δ, δ]^n (the L∞ ball U_δ(x) of the work) or
  ``pixels`` (a fraction δ of the pixels replaced by uniform noise over the data range, the
  corruption of the work's result 2).  The work writes L₃^δ(w, D₁); the student reads n₂ inputs, so
  it is taken on D₁*.
* ‖∂²L_f/∂w²‖² — the work writes ‖·‖₂², for a matrix the spectral norm.  Both are offered, from
  Hessian–vector products Hv = jvp(∇L_f, v) (``torch.func``), never the N × N Hessian:
  ``spectral``: ‖H‖₂² = max|eig H|², power iteration on the detached weights, then ‖H(w) v‖² at
  the converged unit v, whose gradient is 2λ vᵀ(∂H)v — the exact gradient of λ² at a simple top
  eigenvalue (first-order perturbation theory), so no differentiation through the iteration;
  ``frobenius`` (the default: smooth in w, unbiased, cheaper): ‖H‖_F² = tr H² = E_z ‖Hz‖² over
  Rademacher z (Hutchinson), estimated by ``probes`` draws; its standard error is
  √(2 Σ_{i≠j} (H²)_{ij}² / probes).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

__all__ = [
    "PhiObjective",
    "fit_phi",
    "hessian_frobenius_sq",
    "hessian_spectral_sq",
    "hvp",
    "perturb",
    "perturbed_loss",
]

HESSIAN_NORMS = ("frobenius", "spectral")
PERTURBATIONS = ("uniform", "pixels")


def hvp(f: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor, v: torch.Tensor):
    """H(w) v with H = ∂²f/∂w², as the forward derivative of ∇f along v (differentiable in w).

    oneDNN's CPU LSTM kernel has no forward-mode derivative, so it is switched off here (the
    native kernel is used).
    """
    with warnings.catch_warnings():  # torch's own: TF32 on Intel GPUs, jit in its jvp rules
        warnings.filterwarnings("ignore", message="TF32 acceleration", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*torch.jit.script", category=DeprecationWarning)
        with torch.backends.mkldnn.flags(enabled=False):
            return jvp(grad(f), (w,), (v,))[1]


def hessian_spectral_sq(
    f: Callable[[torch.Tensor], torch.Tensor],
    w: torch.Tensor,
    *,
    iters: int = 20,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """‖H‖₂² = max|eig H|² by ``iters`` steps of power iteration (see the module text)."""
    v = torch.randn(w.shape, generator=generator, dtype=w.dtype)
    v = v / v.norm()
    wd = w.detach()
    for _ in range(iters):
        hv = hvp(f, wd, v).detach()
        v = hv / hv.norm().clamp_min(torch.finfo(w.dtype).tiny)
    return hvp(f, w, v).pow(2).sum()


def hessian_frobenius_sq(
    f: Callable[[torch.Tensor], torch.Tensor],
    w: torch.Tensor,
    *,
    probes: int = 8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """‖H‖_F² ≈ (1/P) Σ_p ‖H z_p‖², z_p Rademacher (Hutchinson; unbiased)."""
    total = w.new_zeros(())
    for _ in range(probes):
        z = torch.randint(0, 2, w.shape, generator=generator).to(w.dtype) * 2 - 1
        total = total + hvp(f, w, z).pow(2).sum()
    return total / probes


def perturb(
    x: torch.Tensor,
    kind: str,
    delta: float,
    *,
    low: float,
    high: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One draw x' ∈ U_δ(x): ``uniform`` x + U[−δ, δ]; ``pixels`` a fraction δ ∈ [0, 1] of the
    entries replaced by U[low, high]; ``gaussian`` x + N(0, δ²)."""
    if kind == "uniform":
        return x + (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1) * delta
    if kind == "gaussian":
        return x + torch.randn(x.shape, generator=generator, dtype=x.dtype) * delta
    if kind == "pixels":
        if not 0.0 <= delta <= 1.0:
            raise ValueError(f"the corrupted fraction delta must be in [0, 1], got {delta!r}")
        hit = torch.rand(x.shape, generator=generator) < delta
        noise = low + (high - low) * torch.rand(x.shape, generator=generator, dtype=x.dtype)
        return torch.where(hit, noise, x)
    raise ValueError(f"perturbation must be uniform, pixels or gaussian; got {kind!r}")


def perturbed_loss(
    loss: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    kind: str,
    delta: float,
    *,
    n_mc: int = 4,
    low: float = -1.0,
    high: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L₃^δ ≈ (1/M) Σ_m loss(x'_m), x'_m drawn by :func:`perturb` (M = ``n_mc``)."""
    if not (isinstance(n_mc, int) and n_mc >= 1):
        raise ValueError(f"n_mc must be an integer ≥ 1, got {n_mc!r}")
    total = 0.0
    for _ in range(n_mc):
        total = total + loss(perturb(x, kind, delta, low=low, high=high, generator=generator))
    return total / n_mc


def _check_lambdas(lambdas) -> tuple[float, float, float, float]:
    lam = tuple(float(v) for v in lambdas)
    if len(lam) != 4 or any(not (v >= 0 and math.isfinite(v)) for v in lam):
        raise ValueError(f"lambdas must be four numbers ≥ 0, got {lambdas!r}")
    if abs(sum(lam) - 1.0) > 1e-9:
        raise ValueError(f"lambdas must sum to 1 (the simplex), got sum {sum(lam)!r}")
    if lam[1] <= 0:
        raise ValueError("lambdas[1] = λ₂ must be > 0 for anti-distillation")
    return lam  # type: ignore[return-value]


@dataclass
class PhiObjective:
    """The section-4 objective as a function of the flat weight vector w of ``model``.

    Parameters
    ----------
    model : nn.Module
        The grown student (its parameters give the shapes; it is called functionally).
    start : Tensor
        w₁, the grown start as a flat vector (``torch.nn.utils.parameters_to_vector``).
    mask : Tensor
        Flat bool vector: the teacher's places w[û].
    x, y : Tensor
        D₁* (inputs already mapped by ψ) and labels.
    lambdas : sequence of 4 floats
        (λ₁, λ₂, λ₃, λ₄) on the simplex, λ₂ > 0.
    perturbation, delta, n_mc, low, high
        L₃^δ (:func:`perturbed_loss`).
    hessian, probes, iters, hessian_batch
        The Hessian term: norm, Hutchinson probes or power iterations, and the number of
        D₁* points its L_f uses.
    seed : int
        Every call draws the same perturbations and probes (a deterministic function of w).
    """

    model: nn.Module
    start: torch.Tensor
    mask: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    lambdas: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)
    perturbation: str = "uniform"
    delta: float = 0.1
    n_mc: int = 2
    low: float = -1.0
    high: float = 1.0
    hessian: str = "frobenius"
    probes: int = 2
    iters: int = 10
    hessian_batch: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        self.lambdas = _check_lambdas(self.lambdas)
        if self.hessian not in HESSIAN_NORMS:
            raise ValueError(f"hessian must be frobenius or spectral; got {self.hessian!r}")
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(f"perturbation must be uniform or pixels; got {self.perturbation!r}")
        if not (self.delta >= 0 and math.isfinite(self.delta)):
            raise ValueError(f"delta must be a finite number ≥ 0, got {self.delta!r}")
        self._shapes = [(n, p.shape, p.numel()) for n, p in self.model.named_parameters()]

    def params(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for name, shape, k in self._shapes:
            out[name] = w[i : i + k].view(shape)
            i += k
        return out

    def loss_f(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean CE of the student with weights w on (x, y)."""
        logits = functional_call(self.model, self.params(w), (x,))
        return nn.functional.cross_entropy(logits, y)

    def terms(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """The four terms L_f, ‖û − w[û]‖², L₃^δ, ‖H‖² at w (each differentiable in w)."""
        gen = torch.Generator().manual_seed(self.seed)
        xh, yh = self.x[: self.hessian_batch], self.y[: self.hessian_batch]
        lam = self.lambdas
        out = {
            "L_f": self.loss_f(w, self.x, self.y),
            "L_2": ((w - self.start) * self.mask).pow(2).sum(),
        }
        out["L_3"] = (
            perturbed_loss(
                lambda xx: self.loss_f(w, xx, self.y),
                self.x,
                self.perturbation,
                self.delta,
                n_mc=self.n_mc,
                low=self.low,
                high=self.high,
                generator=gen,
            )
            if lam[2] > 0
            else w.new_zeros(())
        )
        if lam[3] > 0:
            f = lambda v: self.loss_f(v, xh, yh)  # noqa: E731
            if self.hessian == "frobenius":
                out["L_4"] = hessian_frobenius_sq(f, w, probes=self.probes, generator=gen)
            else:
                out["L_4"] = hessian_spectral_sq(f, w, iters=self.iters, generator=gen)
        else:
            out["L_4"] = w.new_zeros(())
        return out

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        t = self.terms(w)
        return sum(
            lam * t[k] for lam, k in zip(self.lambdas, ("L_f", "L_2", "L_3", "L_4"), strict=True)
        )


def fit_phi(objective: PhiObjective, *, steps: int = 50, lr: float = 1e-2) -> torch.Tensor:
    """Minimise the objective from w₁ by ``steps`` of Adam; returns the flat weights φ(û)."""
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be an integer ≥ 0, got {steps!r}")
    w = objective.start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        objective(w).backward()
        opt.step()
    return w.detach()

r"""Population losses of the asymptotic teacher and student: the cross-entropy on fresh data.

A linear classifier h(x) = w·x/√N + b on a fresh sample of the mixture has h | y ~ N(y m + b, Δq),
so its expected loss against the hard (clean, cluster) label, Σ_y P(y) E log(1 + e^{−y h}) — also
under label noise θ, which affects training only — depends on (m, q, b) only
(:meth:`kdtheory.problem.GaussianMixture.cross_entropy`). At the replica fixed point these are the
order parameters of the solution.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import expit, ndtr

from kdtheory.problem import GaussianMixture, _expected_softplus, _softplus_rules
from replica.solver import Solution

__all__ = ["PopulationLoss", "cross_entropy_partials", "population_loss"]


class PopulationLoss(NamedTuple):
    """Population cross-entropy CE = Σ_y P(y) E log(1 + e^{−y h}) of the teacher and the student."""

    teacher: float
    student: float


def population_loss(solution: Solution) -> PopulationLoss:
    r"""CE(m, q, b) of the teacher (m̃, q̃, b̃) and of the student (m, q, b) of ``solution``.

    The validation loss of the λ path at T_val = 1 on an infinite validation set.
    """
    if not isinstance(solution, Solution):
        raise ValueError(f"solution must be a replica Solution, got {type(solution).__name__}")
    data, t, s = solution.problem.data, solution.teacher, solution.student
    return PopulationLoss(
        teacher=float(data.cross_entropy(t.m, t.q, t.b)),
        student=float(data.cross_entropy(s.m, s.q, s.b)),
    )


def cross_entropy_partials(data: GaussianMixture, m: float, q: float, b: float) -> dict[str, float]:
    r"""∂CE/∂(m, q, b, ρ, Δ) of CE = Σ_y P(y) E softplus(u), u = −y h ~ N(μ_y, s²), μ_y = −(m + y b),
    s = √(Δq) (``GaussianMixture.cross_entropy``), at q > 0.

    With S₁ = E sig(u) and S₂ = E sig(u)(1 − sig(u)) (∂_μ E softplus(u) = S₁, and by Stein's
    identity ∂_s E softplus(μ + sξ) = E[ξ sig(u)] = s S₂):
    ∂CE/∂m = −Σ_y P(y) S₁,  ∂CE/∂b = −Σ_y P(y) y S₁,  ∂CE/∂q = (Δ/2) Σ_y P(y) S₂,
    ∂CE/∂Δ = (q/2) Σ_y P(y) S₂,  ∂CE/∂ρ = E softplus(u₊) − E softplus(u₋).
    """
    if not q > 0.0:
        raise ValueError(f"cross_entropy_partials: q must be > 0, got {q!r}")
    s = math.sqrt(data.delta * q)
    out = dict.fromkeys(("m", "q", "b", "rho", "delta"), 0.0)
    for y, p_y in ((1.0, data.rho), (-1.0, 1.0 - data.rho)):
        s1, s2 = _sigmoid_moments(-(m + y * b), s)
        out["m"] -= p_y * s1
        out["b"] -= p_y * y * s1
        out["q"] += 0.5 * data.delta * p_y * s2
        out["delta"] += 0.5 * q * p_y * s2
    out["rho"] = float(_expected_softplus(-(m + b), s) - _expected_softplus(-(m - b), s))
    return out


def _sigmoid_moments(mu: float, s: float) -> tuple[float, float]:
    r"""(E sig(u), E sig(u)(1 − sig(u))) for u ~ N(μ, s²), on the rules of the cross-entropy
    (``kdtheory.problem._expected_softplus``): Gauss–Hermite for s ≤ 1 (the poles of sig at ±iπ
    are ≥ π away in the standardised variable); for s > 1, sig(u) = 1[u > 0] − sign(u) sig(−|u|)
    gives E sig(u) = Φ(μ/s) + ∫_0^∞ sig(−x)[φ((x + μ)/s) − φ((x − μ)/s)]/s dx and, sig′ being
    even, E sig′(u) = ∫_0^∞ sig′(x)[φ((x − μ)/s) + φ((x + μ)/s)]/s dx, by composite
    Gauss–Legendre on [0, 37] (sig(−37) ~ 1e-16)."""
    z, wz, x, wx = _softplus_rules()
    if s <= 1.0:
        sg = expit(mu + s * z)
        return float(sg @ wz), float((sg * (1.0 - sg)) @ wz)
    g_minus = np.exp(-0.5 * ((x - mu) / s) ** 2)
    g_plus = np.exp(-0.5 * ((x + mu) / s) ** 2)
    c = 1.0 / (s * math.sqrt(2.0 * math.pi))
    tail = expit(-x)
    s1 = float(ndtr(mu / s)) + c * float((tail * (g_plus - g_minus)) @ wx)
    s2 = c * float((tail * (1.0 - tail) * (g_minus + g_plus)) @ wx)
    return s1, s2

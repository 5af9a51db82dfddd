r"""Linear separability threshold α_c(ρ, Δ) of the Gaussian mixture (Gardner's capacity with a bias).

A direction w (‖w‖² = N) with normalised overlap m̄ = w·v/N ∈ [0, 1) and a bias b separates the
training set with probability → 1 as N → ∞ iff α < α_c(m̄, b), where
    1/α_c(m̄, b) = E_{y,G}[((G − (m̄ + y b)/√Δ)_+)²] / (1 − m̄²),   G ~ N(0, 1),
because the component of the noise along w splits into a part fixed by v (variance m̄²) and a free
part that the N − 1 orthogonal directions can tune.  With E[(G − c)_+²] = (1 + c²)Φ(−c) − cφ(c),
    α_c(ρ, Δ) = max_{m̄, b} α_c(m̄, b).
For a sparse student that trains ηN weights the threshold is η α_c(ρ, Δ/η) (same mixture in ηN
dimensions with a signal of norm √η).  At Δ → ∞ this is Cover's α_c = 2.
"""

from __future__ import annotations

import math
from functools import lru_cache

from scipy.optimize import minimize_scalar
from scipy.special import ndtr

from kdtheory.problem import check_real


def _excess(c: float) -> float:
    """E[(G − c)_+²] = (1 + c²)Φ(−c) − c φ(c)."""
    return (1.0 + c * c) * ndtr(-c) - c * math.exp(-0.5 * c * c) / math.sqrt(2.0 * math.pi)


def _inverse_capacity(mbar: float, rho: float, delta: float) -> float:
    """min_b E_{y,G}[((G − (m̄ + y b)/√Δ)_+)²] / (1 − m̄²)."""
    s = math.sqrt(delta)

    def cost(b: float) -> float:
        return rho * _excess((mbar + b) / s) + (1.0 - rho) * _excess((mbar - b) / s)

    span = 10.0 * (1.0 + s)
    best = minimize_scalar(cost, bounds=(-span, span), method="bounded", options={"xatol": 1e-12})
    return float(best.fun) / (1.0 - mbar * mbar)


def separability_threshold(rho: float, delta: float, eta: float = 1.0) -> float:
    """α_c: the training set (ηN trained features) is linearly separable iff α < α_c.

    ``rho`` ∈ (0, 1), ``delta`` ∈ (0, ∞), ``eta`` ∈ (0, 1]; anything else raises ``ValueError``.
    """
    return _threshold(
        check_real("rho", rho, 0.0, 1.0, True, True),
        check_real("delta", delta, 0.0, math.inf, True, True),
        check_real("eta", eta, 0.0, 1.0, True, False),
    )


@lru_cache(maxsize=256)
def _threshold(rho: float, delta: float, eta: float) -> float:
    d = delta / eta
    best = minimize_scalar(
        lambda t: _inverse_capacity(math.sin(t), rho, d),
        bounds=(0.0, 0.5 * math.pi - 1e-9),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return eta / float(best.fun)

r"""Linear separability threshold α_c(ρ, Δ, θ) of the Gaussian mixture (Gardner's capacity with a bias).

A direction w (‖w‖² = N) with normalised overlap m̄ = w·v/N ∈ [0, 1) and a bias b separates the
training set with probability → 1 as N → ∞ iff α < α_c(m̄, b), where
    1/α_c(m̄, b) = E_{y,ŷ,G}[((G − ŷ(y m̄ + b)/√Δ)_+)²] / (1 − m̄²),   G ~ N(0, 1),
because the component of the noise along w splits into a part fixed by v (variance m̄²) and a free
part that the N − 1 orthogonal directions can tune.  The training label ŷ is the cluster label y
flipped with probability θ (``GaussianMixture.flip``): a point's margin ŷ h has mean ŷ(y m̄ + b),
so with c_y = (m̄ + y b)/√Δ and E[(G − c)_+²] = (1 + c²)Φ(−c) − cφ(c),
    1/α_c(m̄, b) = Σ_y P(y) [(1 − θ) E[(G − c_y)_+²] + θ E[(G + c_y)_+²]] / (1 − m̄²),
    α_c(ρ, Δ, θ) = max_{m̄, b} α_c(m̄, b).
The map (θ, m̄, b) → (1 − θ, −m̄, −b) leaves the cost unchanged, so α_c(θ) = α_c(1 − θ); for
θ ≤ ½ the maximum has m̄ ≥ 0.  α_c decreases from its noiseless value at θ = 0 to Cover's α_c = 2
at θ = ½ (labels independent of x: m̄ = b = 0 is optimal).  For a sparse student that trains ηN
weights the threshold is η α_c(ρ, Δ/η, θ) (same mixture in ηN dimensions with a signal of norm
√η).  At Δ → ∞ this is Cover's α_c = 2.

With a covariance Σ (``GaussianMixture.covariance``) the threshold is that of the whitened mixture
Σ^{-1/2}x = y Σ^{-1/2}v/√N + z: linear separability (with a bias) is invariant under an invertible
linear map of x, and rescaling to a signal of unit norm per feature gives the isotropic model with
Δ_eff = N/(vᵀΣ⁻¹v) = 1/⟨μ²/σ⟩ (:func:`mixture_threshold`).
"""

from __future__ import annotations

import math
from functools import lru_cache

from scipy.optimize import minimize_scalar
from scipy.special import ndtr

from kdtheory.problem import GaussianMixture, check_real


def _excess(c: float) -> float:
    """E[(G − c)_+²] = (1 + c²)Φ(−c) − c φ(c)."""
    return (1.0 + c * c) * ndtr(-c) - c * math.exp(-0.5 * c * c) / math.sqrt(2.0 * math.pi)


def _noisy_excess(c: float, flip: float) -> float:
    """(1 − θ) E[(G − c)_+²] + θ E[(G + c)_+²]: a point's cost with its label flipped w.p. θ."""
    out = (1.0 - flip) * _excess(c)
    return out + flip * _excess(-c) if flip > 0.0 else out


def _inverse_capacity(mbar: float, rho: float, delta: float, flip: float) -> float:
    """min_b Σ_y P(y)[(1 − θ)E(G − c_y)_+² + θE(G + c_y)_+²] / (1 − m̄²), c_y = (m̄ + y b)/√Δ."""
    s = math.sqrt(delta)

    def cost(b: float) -> float:
        return rho * _noisy_excess((mbar + b) / s, flip) + (1.0 - rho) * _noisy_excess(
            (mbar - b) / s, flip
        )

    span = 10.0 * (1.0 + s)
    best = minimize_scalar(cost, bounds=(-span, span), method="bounded", options={"xatol": 1e-12})
    return float(best.fun) / (1.0 - mbar * mbar)


def separability_threshold(rho: float, delta: float, eta: float = 1.0, flip: float = 0.0) -> float:
    """α_c: the training set (ηN trained features, labels flipped w.p. θ = ``flip``) is linearly
    separable iff α < α_c.

    ``rho`` ∈ (0, 1), ``delta`` ∈ (0, ∞), ``eta`` ∈ (0, 1], ``flip`` ∈ [0, 1]; anything else
    raises ``ValueError``.
    """
    flip = check_real("flip", flip, 0.0, 1.0, False, False)
    return _threshold(
        check_real("rho", rho, 0.0, 1.0, True, True),
        check_real("delta", delta, 0.0, math.inf, True, True),
        check_real("eta", eta, 0.0, 1.0, True, False),
        min(flip, 1.0 - flip),
    )


def mixture_threshold(data: GaussianMixture, eta: float = 1.0) -> float:
    """α_c of the mixture ``data`` (ρ, θ, and Δ or, with a covariance, Δ_eff = 1/⟨μ²/σ⟩)."""
    cov = data.covariance
    delta = data.delta if cov is None else 1.0 / cov.whitened_signal
    return separability_threshold(data.rho, delta, eta, data.flip)


@lru_cache(maxsize=256)
def _threshold(rho: float, delta: float, eta: float, flip: float) -> float:
    d = delta / eta
    best = minimize_scalar(
        lambda t: _inverse_capacity(math.sin(t), rho, d, flip),
        bounds=(0.0, 0.5 * math.pi - 1e-9),
        method="bounded",
        options={"xatol": 1e-10},
    )
    cost = float(best.fun)  # underflows to 0 (or a rounding error below it) for Δ/η ≲ 1e-4
    return eta / cost if cost > 0.0 else math.inf

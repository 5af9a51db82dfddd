r"""The prior part of the fixed point for a generic covariance Σ: sums over its spectrum.

With a covariance (``GaussianMixture.covariance``, docs/theory.md, "A generic covariance") the
channel is that of the isotropic model with Δ = tr Σ/N and the overlaps m = w·v/N,
q = wᵀΣw/(NΔ), r = wᵀΣw̃/(NΔ); the ridge's closed form is replaced by averages ⟨·⟩ = (1/N)Σ_i over
the eigenvalues, written with s_i = σ_i/Δ (mean 1) and μ_i² (the mean's projections squared).
Teacher, with Ã_i = λ̃ + V̂_t s_i:
    m̃ = ⟨μ² m̂_t/Ã⟩,  q̃ = ⟨s(m̂_t² μ² + q̂_t s)/Ã²⟩,  Ṽ = ⟨s/Ã⟩.
Student, with A_i = λ + V̂ s_i, ν_i = V̂_c s_i/Ã_i, u_i = m̂ + ν_i m̂_t:
    m = ⟨μ² u/A⟩,  q = ⟨s(μ² u² + s(q̂ + 2ν r̂ + ν² q̂_t))/A²⟩,
    r = ⟨s(μ² u m̂_t + s(r̂ + ν q̂_t))/(Ã A)⟩,  V = ⟨s/A⟩,  V_c = ⟨s² V̂_c/(A Ã)⟩.
At s_i = μ_i² = 1 these are the isotropic updates (η = 1).  Each function returns the values and
their partial derivatives in its inputs, which :func:`chain` turns into ``Dual`` numbers.
"""

from __future__ import annotations

import functools

import numpy as np

from kdtheory.problem import Spectrum
from replica.dual import Dual


@functools.lru_cache(maxsize=8)
def weights(spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray]:
    """(s_i, μ_i²) = (σ_i/(tr Σ/N), μ_i²) of ``spectrum`` (cached by its digest)."""
    s = spectrum.eigenvalues / spectrum.mean_eigenvalue
    return s, spectrum.mean_projections**2


def teacher_prior(spectrum: Spectrum, m_hat, q_hat, v_hat, lam) -> tuple[np.ndarray, np.ndarray]:
    """(m̃, q̃, Ṽ) and their partials in (m̂_t, q̂_t, V̂_t, λ̃) (3 × 4)."""
    s, mu2 = weights(spectrum)
    a = 1.0 / (lam + v_hat * s)
    a2 = a * a
    p = m_hat * m_hat * mu2 + q_hat * s  # q̃'s numerator over s
    rows = np.stack(
        [
            m_hat * mu2 * a,  # m̃ and its partials
            mu2 * a,
            -m_hat * mu2 * s * a2,
            -m_hat * mu2 * a2,
            s * p * a2,  # q̃
            2.0 * m_hat * s * mu2 * a2,
            s * s * a2,
            -2.0 * s * s * p * a2 * a,
            -2.0 * s * p * a2 * a,
            s * a,  # Ṽ
            -s * s * a2,
            -s * a2,
        ]
    )
    r = rows.mean(axis=1)
    values = r[[0, 4, 9]]
    partials = np.array(
        [[r[1], 0.0, r[2], r[3]], [r[5], r[6], r[7], r[8]], [0.0, 0.0, r[10], r[11]]]
    )
    return values, partials


def student_prior(
    spectrum: Spectrum, m_hat, q_hat, v_hat, r_hat, vc_hat, lam, teacher_hats
) -> tuple[np.ndarray, np.ndarray]:
    """(m, q, r, V, V_c) and their partials in (m̂, q̂, V̂, r̂, V̂_c, λ) (5 × 6), given the
    teacher's (m̂_t, q̂_t, V̂_t, λ̃) = ``teacher_hats``."""
    s, mu2 = weights(spectrum)
    mt, qt, vt, lt = teacher_hats
    at = 1.0 / (lt + vt * s)
    a = 1.0 / (lam + v_hat * s)
    a2 = a * a
    nu = vc_hat * s * at
    dnu = s * at  # ∂ν/∂V̂_c
    u = m_hat + nu * mt
    noise = q_hat + 2.0 * nu * r_hat + nu * nu * qt
    p = mu2 * u * u + s * noise  # q = ⟨s p a²⟩
    rr = at * (mu2 * u * mt + s * (r_hat + nu * qt))  # r = ⟨s rr a⟩
    zero = np.zeros_like(s)
    rows = np.stack(
        [
            # m: value, ∂m̂, ∂q̂, ∂V̂, ∂r̂, ∂V̂_c, ∂λ
            mu2 * u * a, mu2 * a, zero, -mu2 * u * s * a2, zero, mu2 * mt * dnu * a,
            -mu2 * u * a2,
            # q
            s * p * a2, 2.0 * s * mu2 * u * a2, s * s * a2, -2.0 * s * s * p * a2 * a,
            2.0 * s * s * nu * a2,
            s * a2 * (2.0 * mu2 * u * mt * dnu + 2.0 * s * (r_hat + nu * qt) * dnu),
            -2.0 * s * p * a2 * a,
            # r
            s * rr * a, s * a * at * mu2 * mt, zero, -s * s * rr * a2, s * s * a * at,
            s * a * at * (mu2 * mt * mt * dnu + s * qt * dnu), -s * rr * a2,
            # V
            s * a, zero, zero, -s * s * a2, zero, zero, -s * a2,
            # V_c
            s * s * vc_hat * a * at, zero, zero, -s * s * s * vc_hat * a2 * at, zero,
            s * s * a * at, -s * s * vc_hat * a2 * at,
        ]
    )  # fmt: skip
    r = rows.mean(axis=1).reshape(5, 7)
    return r[:, 0], r[:, 1:]


def chain(values: np.ndarray, partials: np.ndarray, inputs: list) -> list[Dual]:
    """``Dual`` outputs from the values and partials of a prior and its ``Dual`` inputs."""
    grads = np.array([x.d for x in inputs])
    return [Dual(v, p @ grads) for v, p in zip(values, partials, strict=True)]

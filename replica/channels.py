r"""Channel integrals of the replica fixed point (numba, float64), notation of docs/theory.md.

E[·] averages over y (P(+1) = ρ) and standard Gaussians ξ̃, ξ, with the composite rules of
``replica.quadrature`` (rebuilt inside the kernels because their breakpoints move with the state).

Teacher channel (logistic loss, prox variance ΔṼ):
    ω̃ = y m̃ + b̃ + √(Δq̃) ξ̃,  h̃ = prox(ω̃),  f̃ = (h̃ − ω̃)/(ΔṼ) = −ℓ'(h̃),
    f̃' = ∂f̃/∂ω̃ = −ℓ''/(1 + ΔṼ ℓ''),  h̃' = ∂h̃/∂ω̃ = 1/(1 + ΔṼ ℓ'').

Student channel (KD loss, prox variance ΔV), with the teacher-reaction shift ΔV_c f̃:
    ω = y m + b + √Δ (r/√q̃ ξ̃ + √(q − r²/q̃) ξ),  ω' = ω + ΔV_c f̃,
    h = prox_{ΔV, ℓ_KD(y, h̃, ·)}(ω'),  f = (h − ω')/(ΔV) = −∂_h ℓ_KD,  ∂_ω f = −ℓ''/(1 + ΔV ℓ''),
    dh/dω̃ = (ΔV_c f̃' − ΔV κ h̃')/(1 + ΔV ℓ''),  df/dω̃ = −ℓ'' dh/dω̃ − κ h̃',  κ = −(χ/T²) p̃(1 − p̃).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kdtheory.losses import _d1_p, _d2_p, _loss_p, _prox_curv_p, _prox_p, sigmoid
from replica.quadrature import composite_rule, feature_breaks


@njit(cache=True)
def _phi(z):
    """Standard normal CDF Φ(z)."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


#: where |h − ω| < _CANCEL |ω|, (h − ω)/(ΔV) has lost more than 3 of its 16 digits
_CANCEL = 1e-3


@njit(cache=True)
def _output(y, pt, h, om, var, chi, temperature):
    """f = (h − ω)/(ΔV) at h = prox(ω), which equals −∂_hℓ(h) there.  The difference quotient is
    cheaper but loses digits when h ≈ ω (small ΔV, or a saturated loss with f ≈ 0: its rounding
    error ε|ω|/(ΔV) left a 1e-11 noise in E[f] that stalled the bias of a teacher with ρ = 1e-4
    at Δ = 1e-3); there −∂_hℓ(h) is used, accurate to rounding."""
    d = h - om
    if abs(d) < _CANCEL * abs(om):
        return -_d1_p(y, pt, h, chi, temperature)
    return d / var


# moments returned by ``teacher_moments`` (expectations, α and Δ not applied)
T_F, T_YF, T_FF, T_DF, T_LOSS, T_ERR = range(6)
# moments returned by ``student_moments``
S_F, S_YF, S_FF, S_DF, S_FFT, S_DFT, S_LOSS, S_ERR = range(8)


@njit(cache=True)
def teacher_moments(
    rho, m_t, q_t, b_t, v_t, delta, hk, gap, base, glx, glw, xs, ws, ext, h_buf, metrics
):  # fmt: skip
    """E[f̃], E[y f̃], E[f̃²], E[f̃'], E[ℓ(y, h̃)], E[1{y h̃ ≤ 0}] for the logistic teacher.

    ``h_buf[0 or 1, k]`` keeps the prox solutions of the last call as warm starts; the last two
    moments are computed only if ``metrics``.
    """
    mom = np.zeros(6)
    var = delta * v_t
    s = math.sqrt(delta * q_t)
    for iy in range(2):
        y = 1.0 if iy == 0 else -1.0
        p_y = rho if iy == 0 else 1.0 - rho
        centre = y * m_t + b_t
        ne = feature_breaks(hk, y, 0.5, var, 0.0, 1.0, centre, s, gap, ext)
        n = composite_rule(base, ext, ne, glx, glw, xs, ws)
        if metrics:  # y h̃ ≤ 0 ⇔ y(ω̃ − ω̃₀) ≤ 0, ω̃₀ = ΔṼ ℓ'(y, 0): prox is increasing
            mom[T_ERR] += p_y * _phi(y * (var * _d1_p(y, 0.5, 0.0, 0.0, 1.0) - centre) / s)
        for k in range(n):
            om = centre + s * xs[k]
            h, d2 = _prox_curv_p(y, 0.5, om, var, 0.0, 1.0, h_buf[iy, k])
            h_buf[iy, k] = h
            f = _output(y, 0.5, h, om, var, 0.0, 1.0)
            w = p_y * ws[k]
            mom[T_F] += w * f
            mom[T_YF] += w * y * f
            mom[T_FF] += w * f * f
            mom[T_DF] += w * (-d2 / (1.0 + var * d2))
            if metrics:
                mom[T_LOSS] += w * _loss_p(y, 0.5, h, 0.0, 1.0)
    return mom


@njit(cache=True)
def teacher_nodes(y, xt, m_t, q_t, b_t, v_t, delta, ht, ft, dft, dht):
    """Logistic teacher at given nodes (y_o, ξ̃_o): fill h̃, f̃, f̃', h̃'."""
    var = delta * v_t
    s = math.sqrt(delta * q_t)
    for o in range(y.shape[0]):
        om = y[o] * m_t + b_t + s * xt[o]
        h = _prox_p(y[o], 0.5, om, var, 0.0, 1.0, om)
        d2 = _d2_p(h, 0.0, 1.0)
        ht[o] = h
        ft[o] = _output(y[o], 0.5, h, om, var, 0.0, 1.0)
        dft[o] = -d2 / (1.0 + var * d2)
        dht[o] = 1.0 / (1.0 + var * d2)


@njit(cache=True)
def student_moments(
    y, w, xt, ht, ft, dft, dht, m, q, r, v, vc, b, q_t, delta, chi, temperature,
    hk, gap, base, glx, glw, xs, ws, ext, h_buf, metrics,
):  # fmt: skip
    """E[f], E[y f], E[f²], E[∂_ω f], E[f f̃], E[df/dω̃], E[ℓ_KD], E[1{y h ≤ 0}] for the student.

    Outer nodes o carry (y, weight incl. P(y), ξ̃) and the teacher's h̃, f̃, f̃', h̃'; the inner
    rule over ξ is rebuilt per outer node with breakpoints at the student's feature points.
    ``xs``, ``ws``, ``ext`` are per-row work arrays; ``h_buf[o, j]`` keeps the prox solutions of
    the last call as warm starts; the last two moments are computed only if ``metrics``.
    """
    n_out = y.shape[0]
    rows = np.zeros((n_out, 6))
    var = delta * v
    sd = math.sqrt(delta)
    a = r / math.sqrt(q_t)
    spread = sd * math.sqrt(max(q - r * r / q_t, 0.0))
    t2 = temperature * temperature
    for o in range(n_out):
        yo = y[o]
        pt = sigmoid(ht[o] / temperature)
        kappa = -(chi / t2) * pt * (1.0 - pt)
        centre = yo * m + b + sd * a * xt[o] + delta * vc * ft[o]
        ne = feature_breaks(hk, yo, pt, var, chi, temperature, centre, spread, gap, ext[o])
        n = composite_rule(base, ext[o], ne, glx, glw, xs[o], ws[o])
        a_f = a_ff = a_df = a_dft = a_loss = a_err = 0.0
        if metrics:  # y h ≤ 0 ⇔ y(ω' − ω'₀) ≤ 0 with ω'₀ = ΔV ∂_hℓ_KD(y, p̃, 0): prox is increasing
            gap0 = var * _d1_p(yo, pt, 0.0, chi, temperature) - centre
            if spread > 0.0:
                a_err = _phi(yo * gap0 / spread)
            elif yo * gap0 >= 0.0:
                a_err = 1.0
        for j in range(n):
            om = centre + spread * xs[o, j]
            h, d2 = _prox_curv_p(yo, pt, om, var, chi, temperature, h_buf[o, j])
            h_buf[o, j] = h
            f = _output(yo, pt, h, om, var, chi, temperature)
            den = 1.0 + var * d2
            dh_dt = (delta * vc * dft[o] - var * kappa * dht[o]) / den
            wj = ws[o, j]
            a_f += wj * f
            a_ff += wj * f * f
            a_df -= wj * d2 / den
            a_dft += wj * (-d2 * dh_dt - kappa * dht[o])
            if metrics:
                a_loss += wj * _loss_p(yo, pt, h, chi, temperature)
        rows[o, 0] = a_f
        rows[o, 1] = a_ff
        rows[o, 2] = a_df
        rows[o, 3] = a_dft
        rows[o, 4] = a_loss
        rows[o, 5] = a_err
    mom = np.zeros(8)
    for o in range(n_out):
        wo = w[o]
        mom[S_F] += wo * rows[o, 0]
        mom[S_YF] += wo * y[o] * rows[o, 0]
        mom[S_FF] += wo * rows[o, 1]
        mom[S_DF] += wo * rows[o, 2]
        mom[S_FFT] += wo * ft[o] * rows[o, 0]
        mom[S_DFT] += wo * rows[o, 3]
        mom[S_LOSS] += wo * rows[o, 4]
        mom[S_ERR] += wo * rows[o, 5]
    return mom

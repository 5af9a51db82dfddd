r"""The KD loss of docs/theory.md, its derivatives and its proximal operator (numba, float64).

    ℓ_KD(y, h̃, h) = (1 − χ) ℓ(y, h) + χ H(sig(h̃/T), sig(h/T)),
    ℓ(y, h) = log(1 + e^{−yh}),   H(p, s) = −p log s − (1 − p) log(1 − s).

With p̃ = sig(h̃/T) and softplus(x) = log(1 + eˣ), written without cancellation:

    ℓ_KD  = (1 − χ) softplus(−yh) + χ [p̃ softplus(−h/T) + (1 − p̃) softplus(h/T)]
    ∂_h   = −(1 − χ) y sig(−yh) + (χ/T)(sig(h/T) − p̃)
    ∂²_h  = (1 − χ) sig(h) sig(−h) + (χ/T²) sig(h/T) sig(−h/T)
    ∂_h∂_h̃ = κ = −(χ/T²) p̃ (1 − p̃)

χ = 0 is the plain logistic loss.  The ``_p`` kernels take p̃ precomputed, so the temperature they
receive is the student's own, T_s: for ``Student.tempered == "teacher"`` (H(sig(h̃/T), sig(h))) pass
p̃ = sig(h̃/T) and temperature T_s = 1; then κ = ∂_h∂_h̃ ℓ_KD = −χ p̃(1 − p̃)/(T·T_s).  The
label y here is the training label (flipped with probability θ under label noise).  ``prox(y, h̃, ω, V) = argmin_h (h − ω)²/(2V) + ℓ_KD(y, h̃, h)`` is
found by Newton's method safeguarded by bisection on the bracket ω ± V B, B = (1 − χ) + χ/T ≥ |∂_h ℓ_KD|.
All functions are stable for |h/T| up to 1e3 and beyond (no overflow, no warnings).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "kd_cross",
    "kd_d1",
    "kd_d2",
    "kd_loss",
    "kd_prox",
    "kd_prox_scalar",
    "sigmoid",
    "softplus",
]


@njit(cache=True)
def softplus(x: float) -> float:
    """softplus(x) = log(1 + eˣ), stable for any x."""
    if x > 0.0:
        return x + math.log1p(math.exp(-x))
    return math.log1p(math.exp(x))


@njit(cache=True)
def sigmoid(x: float) -> float:
    """sig(x) = 1/(1 + e^{−x}), stable for any x."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def _loss_p(y, pt, h, chi, temperature):
    """ℓ_KD given p̃ = sig(h̃/T)."""
    out = 0.0
    if chi < 1.0:
        out += (1.0 - chi) * softplus(-y * h)
    if chi > 0.0:
        x = h / temperature
        out += chi * (pt * softplus(-x) + (1.0 - pt) * softplus(x))
    return out


@njit(cache=True)
def kd_loss(y: float, ht: float, h: float, chi: float, temperature: float) -> float:
    """ℓ_KD(y, h̃, h) = (1−χ) softplus(−yh) + χ [p̃ softplus(−h/T) + (1−p̃) softplus(h/T)]."""
    return _loss_p(y, sigmoid(ht / temperature), h, chi, temperature)


@njit(cache=True)
def _d1_p(y, pt, h, chi, temperature):
    """∂_h ℓ_KD given p̃ = sig(h̃/T)."""
    return -(1.0 - chi) * y * sigmoid(-y * h) + (chi / temperature) * (
        sigmoid(h / temperature) - pt
    )


@njit(cache=True)
def _d2_p(h, chi, temperature):
    """∂²_h ℓ_KD (independent of y and h̃)."""
    s = sigmoid(h)
    st = sigmoid(h / temperature)
    return (1.0 - chi) * s * (1.0 - s) + (chi / (temperature * temperature)) * st * (1.0 - st)


@njit(cache=True)
def kd_d1(y: float, ht: float, h: float, chi: float, temperature: float) -> float:
    """∂_h ℓ_KD = −(1−χ) y sig(−yh) + (χ/T)(sig(h/T) − sig(h̃/T))."""
    return _d1_p(y, sigmoid(ht / temperature), h, chi, temperature)


@njit(cache=True)
def kd_d2(y: float, ht: float, h: float, chi: float, temperature: float) -> float:
    """∂²_h ℓ_KD = (1−χ) sig(h) sig(−h) + (χ/T²) sig(h/T) sig(−h/T)."""
    return _d2_p(h, chi, temperature)


@njit(cache=True)
def kd_cross(y: float, ht: float, h: float, chi: float, temperature: float) -> float:
    """κ = ∂_h ∂_h̃ ℓ_KD = −(χ/T²) p̃(1−p̃), p̃ = sig(h̃/T)."""
    pt = sigmoid(ht / temperature)
    return -(chi / (temperature * temperature)) * pt * (1.0 - pt)


@njit(cache=True)
def _d1_d2_p(y, pt, h, chi, temperature):
    """(∂_h ℓ_KD, ∂²_h ℓ_KD) given p̃, sharing the two sigmoids."""
    s = sigmoid(h)
    st = sigmoid(h / temperature) if temperature != 1.0 else s
    sy = s if y > 0 else 1.0 - s  # sig(y h)
    d1 = -(1.0 - chi) * y * (1.0 - sy) + (chi / temperature) * (st - pt)
    d2 = (1.0 - chi) * s * (1.0 - s) + (chi / (temperature * temperature)) * st * (1.0 - st)
    return d1, d2


@njit(cache=True)
def _prox_p(y, pt, omega, v, chi, temperature, h0):
    """prox given p̃, from the starting point h0 (see ``_prox_curv_p``)."""
    return _prox_curv_p(y, pt, omega, v, chi, temperature, h0)[0]


@njit(cache=True)
def _prox_grad_curv_p(y, pt, omega, v, chi, temperature, h0):
    """Solve g(h) = (h − ω)/V + ∂_h ℓ_KD(h) = 0 from h0: Newton safeguarded as in ``rtsafe``.
    Returns (h, ∂_h ℓ_KD(h), ∂²_h ℓ_KD): the gradient at h itself (after a Newton step from h′,
    ∂ℓ(h′) − ∂²ℓ(h′)·step, exact to O(step²)), the curvature of the last Newton step (at h to
    within the tolerance).

    g is increasing; the root lies in ω ± V·B.  A Newton step is replaced by bisection of the
    bracket when it leaves the bracket or fails to halve the previous step (Newton can cycle on
    the S-shaped ∂_h ℓ when V is large), so the bracket shrinks geometrically.
    """
    bound = (1.0 - chi) + chi / temperature  # ≥ |∂_h ℓ_KD|, so the root is within ω ± V·bound
    lo = omega - v * bound
    hi = omega + v * bound
    tol = 1e-14 * (1.0 + abs(omega) + v * bound)  # g is known to ~ε|ω|/V only
    h = h0
    if not (lo < h < hi):
        h = omega
    dx_old = hi - lo
    for _ in range(200):
        d1, d2 = _d1_d2_p(y, pt, h, chi, temperature)
        g = (h - omega) / v + d1
        step = g / (1.0 / v + d2)
        if abs(step) <= tol:
            return h - step, d1 - d2 * step, d2
        if g > 0.0:
            hi = h
        else:
            lo = h
        h_new = h - step
        if not (lo < h_new < hi) or abs(step) > 0.5 * dx_old:
            dx_old = 0.5 * (hi - lo)
            h_new = lo + dx_old
            if dx_old <= tol:
                return h_new, _d1_p(y, pt, h_new, chi, temperature), d2
        else:
            dx_old = abs(step)
        h = h_new
    return h, _d1_p(y, pt, h, chi, temperature), d2


@njit(cache=True)
def _prox_curv_p(y, pt, omega, v, chi, temperature, h0):
    """(h, ∂²_h ℓ_KD) of ``_prox_grad_curv_p``."""
    h, _, d2 = _prox_grad_curv_p(y, pt, omega, v, chi, temperature, h0)
    return h, d2


@njit(cache=True)
def kd_prox_scalar(
    y: float, ht: float, omega: float, v: float, chi: float, temperature: float
) -> float:
    """prox_{V, ℓ_KD(y, h̃, ·)}(ω) = argmin_h (h − ω)²/(2V) + ℓ_KD(y, h̃, h)."""
    return _prox_p(y, sigmoid(ht / temperature), omega, v, chi, temperature, omega)


@njit(cache=True)
def _prox_array(y, ht, omega, v, chi, temperature, out):
    for i in range(omega.shape[0]):
        out[i] = _prox_p(
            y[i], sigmoid(ht[i] / temperature), omega[i], v, chi, temperature, omega[i]
        )
    return out


def kd_prox(y, ht, omega, v: float, chi: float, temperature: float) -> np.ndarray:
    """Vectorised prox over arrays y, h̃, ω of one shape (scalars broadcast)."""
    y, ht, omega = np.broadcast_arrays(
        np.asarray(y, dtype=np.float64),
        np.asarray(ht, dtype=np.float64),
        np.asarray(omega, dtype=np.float64),
    )
    shape = omega.shape
    flat = [np.ascontiguousarray(a).ravel() for a in (y, ht, omega)]
    out = np.empty(flat[2].shape[0])
    _prox_array(flat[0], flat[1], flat[2], float(v), float(chi), float(temperature), out)
    return out.reshape(shape)

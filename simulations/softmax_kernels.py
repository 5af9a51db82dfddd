r"""Numba kernels for the K-class softmax KD loss per sample, and their numpy twins (tests).

For a sample with training label y ∈ {0, …, K−1}, teacher soft label p̃ ∈ Δ^{K−1} (p̃ = softmax(h̃/T))
and student logits h ∈ R^K the loss is

    ℓ(y, p̃, h) = (1 − χ) CE(e_y, softmax(h)) + χ CE(p̃, softmax(h/T_s))
               = (1 − χ) [lse(h) − h_y] + χ [lse(h/T_s) − Σ_k p̃_k h_k/T_s],

lse the log-sum-exp, T_s the student's temperature (T for ``tempered="both"``, 1 for
``"teacher"``). With p = softmax(h), p_s = softmax(h/T_s):

    ∇_h ℓ  = (1 − χ)(p − e_y) + (χ/T_s)(p_s − p̃),
    ∇²_h ℓ = (1 − χ)(diag p − p pᵀ) + (χ/T_s²)(diag p_s − p_s p_sᵀ).

The kernels work on whole (M, K) arrays of logits, one row per sample; the passes over the M×N data
(h = s X Wᵀ + b and s Gᵀ X) are matrix products done by BLAS in :mod:`simulations.multiclass`.
Every quantity is written without overflow (the max is subtracted before exponentiating).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.special import logsumexp, softmax

__all__ = [
    "kd_softmax_grad",
    "kd_softmax_hess_apply",
    "kd_softmax_hess_apply_numpy",
    "kd_softmax_line",
    "kd_softmax_line_numpy",
    "kd_softmax_numpy",
]


@njit(cache=True)
def _softmax_row(h, scale, out):
    """out = softmax(scale·h); returns lse(scale·h)."""
    k = h.shape[0]
    mx = scale * h[0]
    for j in range(1, k):
        mx = max(mx, scale * h[j])
    z = 0.0
    for j in range(k):
        e = math.exp(scale * h[j] - mx)
        out[j] = e
        z += e
    for j in range(k):
        out[j] /= z
    return mx + math.log(z)


@njit(cache=True)
def _row_loss(y, pt, h, chi, ts, p, ps):
    """ℓ of one row; fills p = softmax(h) (if χ < 1) and p_s = softmax(h/T_s) (if χ > 0)."""
    loss = 0.0
    if chi < 1.0:
        loss += (1.0 - chi) * (_softmax_row(h, 1.0, p) - h[y])
    if chi > 0.0:
        lse = _softmax_row(h, 1.0 / ts, ps)
        dot = 0.0
        for j in range(h.shape[0]):
            dot += pt[j] * h[j]
        loss += chi * (lse - dot / ts)
    return loss


@njit(cache=True)
def kd_softmax_grad(y, pt, h, chi, ts, grad, p, ps):
    r"""Returns Σ_μ ℓ(y_μ, p̃_μ, h_μ); fills grad (M, K) = ∇_h ℓ per row, p = softmax(h) and
    p_s = softmax(h/T_s) per row (kept for Hessian products; the one not used by χ is left as is).

    y : int64 (M,); pt, h, grad, p, ps : float64 (M, K).
    """
    m, k = h.shape
    total = 0.0
    for mu in range(m):
        total += _row_loss(y[mu], pt[mu], h[mu], chi, ts, p[mu], ps[mu])
        for j in range(k):
            g = 0.0
            if chi < 1.0:
                g += (1.0 - chi) * p[mu, j]
            if chi > 0.0:
                g += (chi / ts) * (ps[mu, j] - pt[mu, j])
            grad[mu, j] = g
        if chi < 1.0:
            grad[mu, y[mu]] -= 1.0 - chi
    return total


@njit(cache=True)
def _hess_row(p, ps, a, chi, ts, out):
    """out = ∇²_h ℓ a for one row."""
    k = a.shape[0]
    pa = 0.0
    sa = 0.0
    for j in range(k):
        pa += p[j] * a[j]
        sa += ps[j] * a[j]
    c1 = 1.0 - chi
    c2 = chi / (ts * ts)
    for j in range(k):
        v = 0.0
        if chi < 1.0:
            v += c1 * p[j] * (a[j] - pa)
        if chi > 0.0:
            v += c2 * ps[j] * (a[j] - sa)
        out[j] = v


@njit(cache=True)
def kd_softmax_hess_apply(p, ps, a, chi, ts, out):
    r"""out_μ = ∇²_h ℓ_μ a_μ for every row (the Hessian from p, p_s of :func:`kd_softmax_grad`);
    returns ``out``."""
    for mu in range(a.shape[0]):
        _hess_row(p[mu], ps[mu], a[mu], chi, ts, out[mu])
    return out


@njit(cache=True)
def kd_softmax_line(y, pt, h, dh, t, chi, ts):
    r"""Along h + t·dh: returns (φ, φ', φ'') = (Σ ℓ, Σ ∇ℓ·dh, Σ dhᵀ ∇²ℓ dh) at step t (O(MK))."""
    m, k = h.shape
    hh = np.empty(k)
    p = np.empty(k)
    ps = np.empty(k)
    hd = np.empty(k)
    f = 0.0
    d1 = 0.0
    d2 = 0.0
    for mu in range(m):
        for j in range(k):
            hh[j] = h[mu, j] + t * dh[mu, j]
        f += _row_loss(y[mu], pt[mu], hh, chi, ts, p, ps)
        for j in range(k):
            g = 0.0
            if chi < 1.0:
                g += (1.0 - chi) * p[j]
            if chi > 0.0:
                g += (chi / ts) * (ps[j] - pt[mu, j])
            d1 += g * dh[mu, j]
        if chi < 1.0:
            d1 -= (1.0 - chi) * dh[mu, y[mu]]
        _hess_row(p, ps, dh[mu], chi, ts, hd)
        for j in range(k):
            d2 += hd[j] * dh[mu, j]
    return f, d1, d2


# ----------------------------------------------------------------------------------------------
# numpy twins: the same quantities with whole-array numpy operations


def kd_softmax_numpy(y, pt, h, chi, ts):
    """(ℓ per row, ∇_h ℓ per row, softmax(h), softmax(h/T_s)) with numpy/scipy."""
    m = h.shape[0]
    onehot = np.zeros_like(h)
    onehot[np.arange(m), y] = 1.0
    p, ps = softmax(h, axis=1), softmax(h / ts, axis=1)
    loss = (1 - chi) * (logsumexp(h, axis=1) - h[np.arange(m), y]) + chi * (
        logsumexp(h / ts, axis=1) - (pt * h).sum(1) / ts
    )
    grad = (1 - chi) * (p - onehot) + (chi / ts) * (ps - pt)
    return loss, grad, p, ps


def kd_softmax_hess_apply_numpy(p, ps, a, chi, ts):
    """∇²_h ℓ_μ a_μ per row, numpy."""
    return (1 - chi) * p * (a - (p * a).sum(1, keepdims=True)) + (chi / ts**2) * ps * (
        a - (ps * a).sum(1, keepdims=True)
    )


def kd_softmax_line_numpy(y, pt, h, dh, t, chi, ts):
    """(φ, φ', φ'') along h + t·dh, numpy."""
    loss, grad, p, ps = kd_softmax_numpy(y, pt, h + t * dh, chi, ts)
    hd = kd_softmax_hess_apply_numpy(p, ps, dh, chi, ts)
    return loss.sum(), (grad * dh).sum(), (hd * dh).sum()

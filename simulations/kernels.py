r"""Numba kernels for the empirical KD risk, and their numpy twins (used in the tests).

For inputs x (M×k, rows x_μ), labels y, teacher outputs h̃ and weights (w, b) the data term is

    L(w, b) = Σ_μ ℓ_KD(y_μ, h̃_μ, h_μ),   h_μ = s x_μ·w + b,

with ℓ_KD(y, h̃, h) = (1−χ) log(1 + e^{−yh}) + χ H(sig(h̃/T), sig(h/T_s)) from
:mod:`kdtheory.losses` (χ = 0 is the logistic loss ℓ; T_s = T when both outputs are tempered, T_s = 1
when only the teacher's is) and s = 1/√N the feature scale (N the full dimension, also for a sparse
student that only sees k = ηN columns). The kernels take the teacher temperature T (of the soft
label p̃ = sig(h̃/T)) and the student temperature T_s separately. Gradients and
Hessian–vector products are over θ = (w, b), stored as one vector of length k + 1 with b last:

    ∇L = (s Σ_μ ℓ'_μ x_μ,  Σ_μ ℓ'_μ),        H u = (s Σ_μ ℓ''_μ a_μ x_μ,  Σ_μ ℓ''_μ a_μ),
    a_μ = s x_μ·u_w + u_b,

ℓ' = ∂_h ℓ_KD and ℓ'' = ∂²_h ℓ_KD. Each kernel streams over the rows of x once (the dot product and
the rank-one update of a row share one trip from memory), so a gradient or a Hessian–vector
product costs one pass over the M×k data. The ridge term (λ/2)‖w‖² is added by the solver.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy.special import expit

from kdtheory.losses import _d1_p, _loss_p, kd_d2, sigmoid

__all__ = [
    "hess_vec",
    "hess_vec_numpy",
    "kd_pointwise_numpy",
    "line_derivs",
    "line_derivs_numpy",
    "loss_grad",
    "loss_grad_numpy",
    "preact",
    "preact_numpy",
    "row_combination",
    "row_combination_numpy",
]

# Reassociation lets LLVM vectorise the row reductions; no NaN/Inf assumptions are made.
_FAST = {"reassoc", "contract"}


@njit(cache=True, fastmath=_FAST)
def _row_dot(x, mu, u):
    """x_μ·u over the k = x.shape[1] columns (u may be longer: the bias slot is ignored)."""
    s = 0.0
    for i in range(x.shape[1]):
        s += x[mu, i] * u[i]
    return s


@njit(cache=True, fastmath=_FAST)
def _row_axpy(c, x, mu, out):
    """out[:k] += c x_μ."""
    for i in range(x.shape[1]):
        out[i] += c * x[mu, i]


@njit(cache=True)
def _pointwise(y, ht, h, chi, temperature, student_temperature):
    """(ℓ_KD, ∂_h ℓ_KD, ∂²_h ℓ_KD) at one sample: p̃ = sig(h̃/T), student output sig(h/T_s)."""
    pt = sigmoid(ht / temperature)
    return (
        _loss_p(y, pt, h, chi, student_temperature),
        _d1_p(y, pt, h, chi, student_temperature),
        kd_d2(y, ht, h, chi, student_temperature),  # independent of y and h̃
    )


@njit(cache=True, fastmath=_FAST)
def preact(x, w, b, scale, out):
    """h_μ = s x_μ·w + b into ``out``; returns ``out``."""
    for mu in range(x.shape[0]):
        out[mu] = scale * _row_dot(x, mu, w) + b
    return out


@njit(cache=True, fastmath=_FAST)
def row_combination(x, c, scale, out):
    """out = s Σ_μ c_μ x_μ (length k); returns ``out``."""
    out[:] = 0.0
    for mu in range(x.shape[0]):
        _row_axpy(scale * c[mu], x, mu, out)
    return out


@njit(cache=True, fastmath=_FAST)
def loss_grad(x, y, ht, w, b, scale, chi, temperature, student_temperature, grad, h, curv):
    r"""Fused data term: returns L = Σ_μ ℓ_KD(y_μ, h̃_μ, h_μ) (temperatures T, T_s); fills
    grad = ∇L (length k+1, bias last), h_μ = s x_μ·w + b and curv_μ = ℓ''(h_μ) for later
    Hessian–vector products."""
    k = x.shape[1]
    grad[:] = 0.0
    total = 0.0
    for mu in range(x.shape[0]):
        hm = scale * _row_dot(x, mu, w) + b
        h[mu] = hm
        f, g, c = _pointwise(y[mu], ht[mu], hm, chi, temperature, student_temperature)
        total += f
        curv[mu] = c
        grad[k] += g
        _row_axpy(scale * g, x, mu, grad)
    return total


@njit(cache=True, fastmath=_FAST)
def hess_vec(x, curv, u, scale, out, hu):
    r"""out = H u of the data term (H = Aᵀ diag(ℓ'') A, A = [s x, 1]); u and out have length k+1
    (bias last). Also returns the direction in h-space, hu_μ = s x_μ·u_w + u_b."""
    k = x.shape[1]
    out[:] = 0.0
    for mu in range(x.shape[0]):
        a = scale * _row_dot(x, mu, u) + u[k]
        hu[mu] = a
        c = curv[mu] * a
        out[k] += c
        _row_axpy(scale * c, x, mu, out)
    return out


@njit(cache=True)
def line_derivs(y, ht, h, dh, t, chi, temperature, student_temperature):
    r"""Along the line h + t·dh: returns (Σ ℓ_KD, Σ ℓ' dh, Σ ℓ'' dh²), i.e. φ, φ', φ'' of the data
    term as a function of the step t (O(M), no pass over x)."""
    f = 0.0
    d1 = 0.0
    d2 = 0.0
    for mu in range(h.shape[0]):
        hm = h[mu] + t * dh[mu]
        a, b, c = _pointwise(y[mu], ht[mu], hm, chi, temperature, student_temperature)
        f += a
        d1 += b * dh[mu]
        d2 += c * dh[mu] * dh[mu]
    return f, d1, d2


# ----------------------------------------------------------------------------------------------
# numpy twins: the same quantities written with whole-array numpy operations (tests, baselines)


def kd_pointwise_numpy(y, ht, h, chi, temperature, student_temperature=None):
    """(ℓ_KD, ∂_h ℓ_KD, ∂²_h ℓ_KD) elementwise, numpy; the formulas of :mod:`kdtheory.losses` with
    p̃ = sig(h̃/T) and the student's output sig(h/T_s) (T_s = ``student_temperature``, default T)."""
    ts = temperature if student_temperature is None else student_temperature
    pt = expit(ht / temperature)
    st = expit(h / ts)
    loss = (1 - chi) * np.logaddexp(0.0, -y * h) + chi * (
        pt * np.logaddexp(0.0, -h / ts) + (1 - pt) * np.logaddexp(0.0, h / ts)
    )
    d1 = -(1 - chi) * y * expit(-y * h) + (chi / ts) * (st - pt)
    d2 = (1 - chi) * expit(h) * expit(-h) + (chi / ts**2) * st * (1 - st)
    return loss, d1, d2


def preact_numpy(x, w, b, scale):
    """h = s x w + b."""
    return scale * (x @ w[: x.shape[1]]) + b


def row_combination_numpy(x, c, scale):
    """s Σ_μ c_μ x_μ."""
    return scale * (x.T @ c)


def loss_grad_numpy(x, y, ht, w, b, scale, chi, temperature, student_temperature=None):
    """Returns (L, ∇L, h, ℓ''(h)) as :func:`loss_grad` does (T_s defaults to T)."""
    h = preact_numpy(x, w, b, scale)
    loss, d1, d2 = kd_pointwise_numpy(y, ht, h, chi, temperature, student_temperature)
    grad = np.append(scale * (x.T @ d1), d1.sum())
    return loss.sum(), grad, h, d2


def hess_vec_numpy(x, curv, u, scale):
    """Returns (H u, h-space direction) as :func:`hess_vec` does."""
    hu = preact_numpy(x, u, u[-1], scale)
    c = curv * hu
    return np.append(scale * (x.T @ c), c.sum()), hu


def line_derivs_numpy(y, ht, h, dh, t, chi, temperature, student_temperature=None):
    """(φ, φ', φ'') along h + t·dh as :func:`line_derivs` does (T_s defaults to T)."""
    loss, d1, d2 = kd_pointwise_numpy(y, ht, h + t * dh, chi, temperature, student_temperature)
    return loss.sum(), (d1 * dh).sum(), (d2 * dh * dh).sum()

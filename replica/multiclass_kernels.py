r"""numba kernel of the K-class channel: the proximal step of the KD softmax loss at each node and the
moments it contributes (numpy twin: ``replica.multiclass._channel_numpy``).

In reduced fields η ∈ R^d (h = Uη, d = K − 1) the loss is
    ℓ(η) = (1 − χ) CE(e_y, softmax(Uη)) + χ CE(p̃, softmax(Uη/T_s)),  p̃ = softmax(Uη̃/T),
and the node's proximal point η = argmin ℓ(η) + ½(η − ω')ᵀP(η − ω'), ω' = ω + ΔV_c f̃, is found by
Newton's method (steps capped at 4 in max norm, then backtracking on the objective; H + P is
positive definite, solved by Cholesky).
Per node: f = P(η − ω'), ∂η/∂ω = (H + P)⁻¹P, ∂f/∂ω = P(∂η/∂ω − I), and the total derivative in ω̃
    dη/dω̃ = (H + P)⁻¹(PΔV_c f̃' − κ η̃'),  df/dω̃ = P(dη/dω̃ − ΔV_c f̃'),
    κ = ∂²ℓ/∂η∂η̃ = −(χ/(T_s T)) Uᵀ(diag p̃ − p̃p̃ᵀ)U.
The teacher is the case χ = 0 with no teacher fields (η̃ = f̃ = 0, η̃' = f̃' = 0, V_c = 0).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Newton steps shorter than this (times min(1, T_s)) skip the line search
NEWTON_ZONE = 1e-3
#: layout of the accumulator: E[f] (d), E[ffᵀ], E[∂f/∂ω], E[f f̃ᵀ], E[df/dω̃] (d² each), loss, error
N_SCALARS = 2


def acc_size(d: int) -> int:
    return d + 4 * d * d + N_SCALARS


@njit(cache=True)
def _softmax(z, out):
    m = z.max()
    s = 0.0
    for k in range(z.size):
        out[k] = math.exp(z[k] - m)
        s += out[k]
    for k in range(z.size):
        out[k] /= s
    return m + math.log(s)  # log Σ exp z


@njit(cache=True)
def _cholesky_solve(a, b, L, x):
    """Solve a x = b (a symmetric positive definite, small) into x; L is scratch."""
    n = a.shape[0]
    for i in range(n):
        for j in range(i + 1):
            s = a[i, j]
            for k in range(j):
                s -= L[i, k] * L[j, k]
            if i == j:
                L[i, i] = math.sqrt(max(s, 1e-300))
            else:
                L[i, j] = s / L[j, j]
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= L[i, k] * x[k]
        x[i] = s / L[i, i]
    for i in range(n - 1, -1, -1):
        s = x[i]
        for k in range(i + 1, n):
            s -= L[k, i] * x[k]
        x[i] = s / L[i, i]


@njit(cache=True)
def _objective(e, om, U, y, chi, Ts, pt, P, z, p):
    """ℓ(η) + ½(η − ω')ᵀP(η − ω') at one node (z, p: scratch of length K)."""
    K, d = U.shape
    for k in range(K):
        v = 0.0
        for a in range(d):
            v += U[k, a] * e[a]
        z[k] = v
    out = (1.0 - chi) * (_softmax(z, p) - z[y])
    if chi > 0.0:
        for k in range(K):
            z[k] /= Ts
        lse = _softmax(z, p)
        for k in range(K):
            out += chi * pt[k] * (lse - z[k])
    for a in range(d):
        v = 0.0
        for b in range(d):
            v += P[a, b] * (e[b] - om[b])
        out += 0.5 * (e[a] - om[a]) * v
    return out


@njit(cache=True)
def kd_channel(omega, eta_t, f_t, dh_t, df_t, w, U, y, chi, T, Ts, P, dlVc, eta, out, acc,
               max_iter, tol):  # fmt: skip
    """Proximal points and moments of the nodes (see the module docstring).

    omega (n, d): ω; eta_t, f_t (n, d) and dh_t, df_t (n, d, d): the teacher's η̃, f̃, η̃', f̃';
    w (n): weights (probabilities of class and label included); y: the training label; P = (ΔV)⁻¹;
    dlVc = ΔV_c; eta (n, d): warm start in, proximal points out; out (n, d, d + d + d): per node
    [f | ∂η/∂ω | ∂f/∂ω] for later use (the teacher's); acc: accumulated moments (``acc_size``).
    Returns the largest number of Newton iterations used (−1 if a node did not converge).
    """
    n, d = omega.shape
    K = U.shape[0]
    z = np.empty(K)
    p = np.empty(K)
    s = np.empty(K)
    pt = np.empty(K)
    ce = np.empty(K)  # (1 − χ)(p − e_y) + (χ/T_s)(s − p̃): ∇_h ℓ
    diag = np.empty(K)
    pu = np.empty(d)
    su = np.empty(d)
    H = np.empty((d, d))
    A = np.empty((d, d))
    L = np.empty((d, d))
    g = np.empty(d)
    step = np.empty(d)
    om = np.empty(d)
    col = np.empty(d)
    sol = np.empty(d)
    kap = np.empty((d, d))
    shift = np.empty((d, d))
    rhs = np.empty((d, d))
    dh = np.empty((d, d))
    dtot = np.empty((d, d))
    f = np.empty(d)
    cur = np.empty(d)
    cand = np.empty(d)
    worst = 0
    i_ff = d
    i_df = d + d * d
    i_fft = d + 2 * d * d
    i_dft = d + 3 * d * d
    i_loss = d + 4 * d * d
    for i in range(n):
        # ω' = ω + ΔV_c f̃ and the soft label p̃ = softmax(Uη̃/T)
        for a in range(d):
            v = omega[i, a]
            for b in range(d):
                v += dlVc[a, b] * f_t[i, b]
            om[a] = v
        for k in range(K):
            v = 0.0
            for a in range(d):
                v += U[k, a] * eta_t[i, a]
            z[k] = v / T
        _softmax(z, pt)
        it = 0
        last = np.inf
        size = 1.0
        loss = 0.0
        while True:
            # loss, ∇ and ∇² at η (in h = Uη), and f = −Uᵀ∇_h ℓ
            for k in range(K):
                v = 0.0
                for a in range(d):
                    v += U[k, a] * eta[i, a]
                z[k] = v
            lse = _softmax(z, p)
            loss = (1.0 - chi) * (lse - z[y])
            if chi > 0.0:
                for k in range(K):
                    z[k] /= Ts
                lse_s = _softmax(z, s)
                for k in range(K):
                    loss += chi * pt[k] * (lse_s - z[k])
            else:
                for k in range(K):
                    s[k] = 0.0
            for k in range(K):
                ce[k] = (1.0 - chi) * p[k] + (chi / Ts) * (s[k] - pt[k])
            ce[y] -= 1.0 - chi
            # ∇²_h ℓ = diag(r) − (1 − χ)ppᵀ − (χ/T_s²)ssᵀ with r = (1 − χ)p + (χ/T_s²)s, so
            # H = Uᵀ diag(r) U − (1 − χ)(Uᵀp)(Uᵀp)ᵀ − (χ/T_s²)(Uᵀs)(Uᵀs)ᵀ (O(K d²), not O(K² d²))
            for k in range(K):
                diag[k] = (1.0 - chi) * p[k] + (chi / (Ts * Ts)) * s[k]
            for a in range(d):
                v = 0.0
                vp = 0.0
                vs = 0.0
                for k in range(K):
                    v += U[k, a] * ce[k]
                    vp += U[k, a] * p[k]
                    vs += U[k, a] * s[k]
                pu[a] = vp
                su[a] = vs
                f[a] = -v
                for b in range(d):
                    v += P[a, b] * (eta[i, b] - om[b])
                g[a] = v
            for a in range(d):
                for b in range(a + 1):
                    h = 0.0
                    for k in range(K):
                        h += U[k, a] * diag[k] * U[k, b]
                    h -= (1.0 - chi) * pu[a] * pu[b] + (chi / (Ts * Ts)) * su[a] * su[b]
                    H[a, b] = h
                    H[b, a] = h
            if last < tol * size:
                break
            if it >= max_iter:
                worst = -1
                break
            for a in range(d):
                for b in range(d):
                    A[a, b] = H[a, b] + P[a, b]
            _cholesky_solve(A, g, L, step)
            big = 0.0
            for a in range(d):
                big = max(big, abs(step[a]))
            # backtracking (Armijo) on the strictly convex objective: a full Newton step can
            # cycle where the tempered softmax is sharp (small T_s)
            t = 4.0 / big if big > 4.0 else 1.0
            for a in range(d):
                cur[a] = eta[i, a]
            f0 = _objective(cur, om, U, y, chi, Ts, pt, P, z, p)
            slope = 0.0
            for a in range(d):
                slope += g[a] * step[a]
            # near the minimum (a step below ``NEWTON_ZONE``·min(1, T_s), the scale on which the
            # softmax changes) the full step is taken: there the objective's rounding error
            # (~1e-16 |z|) exceeds its decrease and the test below would be noise
            for _ in range(60):
                for a in range(d):
                    cand[a] = cur[a] - t * step[a]
                if big < NEWTON_ZONE * min(1.0, Ts):
                    break
                f1 = _objective(cand, om, U, y, chi, Ts, pt, P, z, p)
                if f1 <= f0 - 1e-4 * t * slope + 1e-13 * (abs(f0) + size):
                    break
                t *= 0.5
            size = 1.0
            for a in range(d):
                eta[i, a] = cand[a]
                size = max(size, abs(eta[i, a]))
            big *= t
            last = big
            it += 1
        if worst >= 0:
            worst = max(worst, it)
        # A = H + P; ∂η/∂ω = A⁻¹P (column by column)
        for a in range(d):
            for b in range(d):
                A[a, b] = H[a, b] + P[a, b]
        for b in range(d):
            for a in range(d):
                col[a] = P[a, b]
            _cholesky_solve(A, col, L, sol)
            for a in range(d):
                dh[a, b] = sol[a]
        # κ = −(χ/(T_s T)) Uᵀ(diag p̃ − p̃p̃ᵀ)U, ΔV_c f̃', rhs = PΔV_c f̃' − κ η̃'
        for a in range(d):
            for b in range(d):
                v = 0.0
                if chi > 0.0:
                    for k in range(K):
                        v += U[k, a] * pt[k] * U[k, b]
                    ua = 0.0
                    ub = 0.0
                    for k in range(K):
                        ua += U[k, a] * pt[k]
                        ub += U[k, b] * pt[k]
                    v = -(chi / (Ts * T)) * (v - ua * ub)
                kap[a, b] = v
                v = 0.0
                for c in range(d):
                    v += dlVc[a, c] * df_t[i, c, b]
                shift[a, b] = v
        for a in range(d):
            for b in range(d):
                v = 0.0
                for c in range(d):
                    v += P[a, c] * shift[c, b] - kap[a, c] * dh_t[i, c, b]
                rhs[a, b] = v
        for b in range(d):
            for a in range(d):
                col[a] = rhs[a, b]
            _cholesky_solve(A, col, L, sol)
            for a in range(d):
                dtot[a, b] = sol[a] - shift[a, b]  # dη/dω̃ − ΔV_c f̃'
        wi = w[i]
        for a in range(d):
            out[i, a, 0] = f[a]
            acc[a] += wi * f[a]
            for b in range(d):
                out[i, a, 1 + b] = dh[a, b]
                dfab = 0.0
                dtab = 0.0
                for c in range(d):
                    dfab += P[a, c] * (dh[c, b] - (1.0 if c == b else 0.0))
                    dtab += P[a, c] * dtot[c, b]
                out[i, a, 1 + d + b] = dfab
                acc[i_ff + a * d + b] += wi * f[a] * f[b]
                acc[i_df + a * d + b] += wi * dfab
                acc[i_fft + a * d + b] += wi * f[a] * f_t[i, b]
                acc[i_dft + a * d + b] += wi * dtab
        acc[i_loss] += wi * loss
        # training error: argmax_k (Uη)_k ≠ y
        best = 0
        for k in range(K):
            v = 0.0
            for a in range(d):
                v += U[k, a] * eta[i, a]
            z[k] = v
            if z[k] > z[best]:
                best = k
        if best != y:
            acc[i_loss + 1] += wi
    return worst

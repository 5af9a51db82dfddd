r"""Channel integrals of the replica fixed point (numba, float64), notation of docs/theory.md.

E[·] averages over the cluster label y (P(+1) = ρ), the training label ŷ (= y with probability
1 − θ, −y with probability θ: label noise, ``GaussianMixture.flip``) and standard Gaussians ξ̃, ξ,
with the composite rules of ``replica.quadrature`` (rebuilt inside the kernels because their
breakpoints move with the state).  The fields are centred on the cluster label (y m̃ + b̃, y m + b),
the losses see the training label ŷ; at θ = 0 only the pairs ŷ = y are summed.

Teacher channel (logistic loss ℓ(ŷ, ·), prox variance ΔṼ):
    ω̃ = y m̃ + b̃ + √(Δq̃) ξ̃,  h̃ = prox(ω̃),  f̃ = (h̃ − ω̃)/(ΔṼ) = −ℓ'(h̃),
    f̃' = ∂f̃/∂ω̃ = −ℓ''/(1 + ΔṼ ℓ''),  h̃' = ∂h̃/∂ω̃ = 1/(1 + ΔṼ ℓ'').

Student channel (KD loss, prox variance ΔV), with the teacher-reaction shift ΔV_c f̃:
    ω = y m + b + √Δ (r/√q̃ ξ̃ + √(q − r²/q̃) ξ),  ω' = ω + ΔV_c f̃,
    h = prox_{ΔV, ℓ_KD(ŷ, h̃, ·)}(ω'),  f = (h − ω')/(ΔV) = −∂_h ℓ_KD,  ∂_ω f = −ℓ''/(1 + ΔV ℓ''),
    dh/dω̃ = (ΔV_c f̃' − ΔV κ h̃')/(1 + ΔV ℓ''),  df/dω̃ = −ℓ'' dh/dω̃ − κ h̃',
    κ = −χ p̃(1 − p̃)/(T T_s),  p̃ = sig(h̃/T),
with T_s the student's own temperature (T if ``tempered == "both"``, 1 if ``"teacher"``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from kdtheory.losses import _d1_p, _d2_p, _loss_p, _prox_curv_p, _prox_p, sigmoid, softplus
from replica.quadrature import composite_rule, feature_breaks, prune


@njit(cache=True)
def _phi(z):
    """Standard normal CDF Φ(z)."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


#: a warm start is moved to first order only for moves up to this times min(1, T_s): the
#: polish's steps; larger (far-field) steps keep the plain warm start of before (the map's
#: rounding noise at stiff corners, T ≲ 1e-3, then follows the same path)
_SMALL_MOVE = 1e-3
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


@njit(cache=True)
def _prox_warm(y, pt, omega, var, chi, t_s, h0):
    """h = prox(ω) from h0 and (ℓ′, ℓ″, 1/(1 + ΔVℓ″)) there (y: the training label ŷ, p̃ given,
    T_s = ``t_s``): ``kdtheory.losses._prox_curv_p`` (Newton safeguarded by bisection on
    ω ± ΔV·B, the same tolerance) with one division per step, and one step shorter from a close
    start: a Newton step s at h leaves an error ≈ |ℓ‴| s²/(2(1/ΔV + ℓ″)) (quadratic
    convergence); where that is below 1e-3 of the tolerance it returns h − s with ℓ′, ℓ″ and
    1/D moved to h − s to first order (errors O(s²)).  From a start within ~1e-7 (a warm start,
    ``student_moments``) this is one evaluation of the sigmoids instead of two."""
    bound = (1.0 - chi) + chi / t_s
    lo = omega - var * bound
    hi = omega + var * bound
    tol = 1e-14 * (1.0 + abs(omega) + var * bound)
    h = h0
    if not (lo < h < hi):
        h = omega
    dx_old = hi - lo
    c = 1.0 - chi
    k = chi / t_s
    d1 = d2 = 0.0
    idn = 1.0
    for _ in range(200):
        s = sigmoid(h)
        st = sigmoid(h / t_s) if t_s != 1.0 else s
        sy = s if y > 0 else 1.0 - s  # sig(ŷh)
        a2 = s * (1.0 - s)
        b2 = st * (1.0 - st)
        d1 = -c * y * (1.0 - sy) + k * (st - pt)
        d2 = c * a2 + (k / t_s) * b2
        idn = 1.0 / (1.0 + var * d2)
        g = h - omega + var * d1  # ΔV·(the prox equation), increasing in h
        step = g * idn
        if abs(step) <= tol:
            return h - step, d1 - step * d2, d2, idn
        if abs(step) < 1e-6 * (1.0 + abs(h)):
            d3 = c * a2 * (1.0 - 2.0 * s) + (k / (t_s * t_s)) * b2 * (1.0 - 2.0 * st)
            if abs(d3) * step * step * var * idn <= 2e-3 * tol:
                d2_new = d2 - step * d3
                return h - step, d1 - step * d2, d2_new, idn * (1.0 + var * step * d3 * idn)
        if g > 0.0:
            hi = h
        else:
            lo = h
        h_new = h - step
        if not (lo < h_new < hi) or abs(step) > 0.5 * dx_old:
            dx_old = 0.5 * (hi - lo)
            h_new = lo + dx_old
            if dx_old <= tol:
                return h_new, d1, d2, idn
        else:
            dx_old = abs(step)
        h = h_new
    return h, d1, d2, idn


@njit(cache=True)
def _loss_fast(y, pt, h, chi, t_s):
    """ℓ_KD(ŷ, p̃, h) as ``kdtheory.losses._loss_p`` (the same softplus terms), sharing
    e^{−|h|} between softplus(−ŷh) and softplus(±h/T_s) when T_s = 1: one exp and one log1p."""
    e = math.log1p(math.exp(-abs(h)))
    out = 0.0
    if chi < 1.0:
        out += (1.0 - chi) * (max(-y * h, 0.0) + e)
    if chi > 0.0:
        z = h / t_s
        if t_s != 1.0:
            e = math.log1p(math.exp(-abs(z)))
        out += chi * (pt * (max(-z, 0.0) + e) + (1.0 - pt) * (max(z, 0.0) + e))
    return out


@njit(cache=True)
def _kd_partials(y, ht, pt, h, chi, temperature, t_s, dts, loss):
    """ℓ_KD(ŷ, h̃, h) = (1 − χ) softplus(−ŷh) + χ [softplus(h/T_s) − p̃ h/T_s], p̃ = sig(h̃/T): the
    h-derivatives ℓ, ℓ′, ℓ″, ℓ‴ and the partials of ℓ, ℓ′, ℓ″ in h̃, χ and T at fixed h, then
    κ = ∂_h∂_h̃ ℓ_KD = −χ p̃(1 − p̃)/(T T_s) and its partials in h̃, χ, T (a 17-tuple, in that
    order).  ``y`` is the training label ŷ, ``pt`` must be sig(h̃/T), ``t_s`` is the student's
    temperature T_s and ``dts`` = dT_s/dT (1 if T_s = T, 0 if T_s = 1); ℓ and its partials are 0
    unless ``loss``.

    With s = sig(−ŷh), z = h/T_s, σ = sig(z), z̃ = h̃/T: the label part (ℓ, ℓ′, ℓ″, ℓ‴) is
    (softplus(−ŷh), −ŷs, s(1 − s), −ŷs(1 − s)(1 − 2s)), the KD part per unit χ is
    (softplus(z) − p̃z, (σ − p̃)/T_s, σ(1 − σ)/T_s², σ(1 − σ)(1 − 2σ)/T_s³); its T-partials follow
    from ∂z/∂T = −z dT_s/dT /T_s and ∂p̃/∂T = −z̃ p̃(1 − p̃)/T.
    """
    s = sigmoid(-y * h)
    t = temperature
    z = h / t_s
    zt = ht / t
    sg = (1.0 - s if y > 0 else s) if t_s == 1.0 else sigmoid(z)
    ps = pt * (1.0 - pt)
    ss = sg * (1.0 - sg)
    lab0 = softplus(-y * h) if loss else 0.0
    kd0 = softplus(z) - pt * z if loss else 0.0
    lab1, lab2 = -y * s, s * (1.0 - s)
    lab3 = -y * s * (1.0 - s) * (1.0 - 2.0 * s)
    kd1, kd2 = (sg - pt) / t_s, ss / (t_s * t_s)
    kd3 = ss * (1.0 - 2.0 * sg) / (t_s * t_s * t_s)
    c = 1.0 - chi
    dz = -z * dts / t_s  # ∂z/∂T
    dpt = -zt * ps / t  # ∂p̃/∂T
    kap = -chi * ps / (t * t_s)
    return (
        c * lab0 + chi * kd0,
        c * lab1 + chi * kd1,
        c * lab2 + chi * kd2,
        c * lab3 + chi * kd3,
        -chi * z * ps / t if loss else 0.0,  # ∂_h̃ ℓ
        kap,  # ∂_h̃ ℓ′ = κ
        0.0,  # ∂_h̃ ℓ″
        kd0 - lab0,  # ∂_χ ℓ, ℓ′, ℓ″
        kd1 - lab1,
        kd2 - lab2,
        chi * ((sg - pt) * dz - z * dpt) if loss else 0.0,  # ∂_T ℓ, ℓ′, ℓ″
        chi * ((ss * dz - dpt) - (sg - pt) * dts / t_s) / t_s,
        chi * ss * ((1.0 - 2.0 * sg) * dz - 2.0 * dts / t_s) / (t_s * t_s),
        kap,  # κ and its partials in h̃, χ, T
        kap * (1.0 - 2.0 * pt) / t,
        -ps / (t * t_s),
        chi * ps * (1.0 + dts + zt * (1.0 - 2.0 * pt)) / (t * t * t_s),
    )


@njit(cache=True, fastmath=True)  # (fastmath: the zero directions fold away when inlined)
def _node_derivative(f, var, cs, dft, dht, lp, d_om, d_var, d_ht, d_chi, d_t, d_cs, d_dft, d_dht):
    """Derivatives of the integrands (f, f², ∂_ω f, ℓ_KD, df/dω̃) at one node along a direction
    that moves ω′ by d_om, ΔV by d_var, h̃ by d_ht, χ, T, ΔV_c by d_cs, f̃′ and h̃′ (``lp`` from
    ``_kd_partials`` at h = prox(ω′), f = −ℓ′(h)).  The prox moves by its implicit derivative:
    h + ΔV ℓ′(h) = ω′ gives dh = (dω′ + f dΔV − ΔV ∂ℓ′)/D, D = 1 + ΔV ℓ″, with ∂ℓ′ the partial
    at fixed h; then df = −ℓ″ dh − ∂ℓ′, dℓ″ = ℓ‴ dh + ∂ℓ″, d(−ℓ″/D) = −(dℓ″ − ℓ″² dΔV)/D², and
    df/dω̃ = −ℓ″ ḣ − κh̃′ with ḣ = (ΔV_c f̃′ − ΔVκh̃′)/D."""
    l1, l2, l3 = lp[1], lp[2], lp[3]
    dl0 = lp[4] * d_ht + lp[7] * d_chi + lp[10] * d_t
    dl1 = lp[5] * d_ht + lp[8] * d_chi + lp[11] * d_t
    dl2 = lp[6] * d_ht + lp[9] * d_chi + lp[12] * d_t
    kap = lp[13]
    dkap = lp[14] * d_ht + lp[15] * d_chi + lp[16] * d_t
    iden = 1.0 / (1.0 + var * l2)
    dh = (d_om + f * d_var - var * dl1) * iden
    df = -l2 * dh - dl1
    dl2 = l3 * dh + dl2
    dden = l2 * d_var + var * dl2
    hdot = (cs * dft - var * kap * dht) * iden
    dhdot = (
        d_cs * dft
        + cs * d_dft
        - d_var * kap * dht
        - var * dkap * dht
        - var * kap * d_dht
        - hdot * dden
    ) * iden
    return (
        df,
        2.0 * f * df,
        -(dl2 - l2 * l2 * d_var) * iden * iden,
        l1 * dh + dl0,
        -dl2 * hdot - l2 * dhdot - dkap * dht - kap * d_dht,
    )


@njit(cache=True)
def _accumulate(acc, o, k, w, d):
    """acc[o, i, k] += w·d[i] for the five integrands."""
    for i in range(5):
        acc[o, i, k] += w * d[i]


# integrands whose derivatives the kernels accumulate (``acc[., i, .]``), and the primitives
# they are taken in (``acc[., ., k]``; P_SPREAD is ω′'s derivative times ξ: the spread's)
I_F, I_FF, I_DF, I_LOSS, I_DFT = range(5)
P_OM, P_SPREAD, P_VAR, P_HT, P_CHI, P_T, P_CS, P_DFT, P_DHT = range(9)


# moments returned by ``teacher_moments`` (expectations, α and Δ not applied)
T_F, T_YF, T_FF, T_DF, T_LOSS, T_ERR = range(6)
# moments returned by ``student_moments``
S_F, S_YF, S_FF, S_DF, S_FFT, S_DFT, S_LOSS, S_ERR = range(8)


#: at θ = 0 sum over the two clean pairs only (False: all four, the flipped ones with weight 0)
SKIP_FLIPPED = True


def label_pairs(rho: float, flip: float, every: bool = False):
    """The (y, ŷ) pairs a channel sums over: (cluster labels y, training labels ŷ, P(y, ŷ),
    ∂P/∂ρ, ∂P/∂θ) as arrays (``pair_probability``).  At θ = 0 only the two clean pairs
    (y = ŷ = ±1), with weights ρ and 1 − ρ, unless ``every`` (or ``SKIP_FLIPPED`` is False): then
    all four, the flipped ones with weight 0 (for derivatives in θ)."""
    n = 2 if flip == 0.0 and SKIP_FLIPPED and not every else 4
    y = np.array([1.0, -1.0, 1.0, -1.0])[:n]
    y_hat = np.array([1.0, -1.0, -1.0, 1.0])[:n]
    return (y, y_hat, *pair_probability(y, y_hat, rho, flip))


def pair_probability(y, y_hat, rho: float, flip: float):
    """P(y, ŷ) = P(y)(1 − θ) if ŷ = y, P(y)θ if ŷ = −y (P(+1) = ρ), with ∂P/∂ρ and ∂P/∂θ
    (elementwise over arrays of labels)."""
    p_y = np.where(y > 0, rho, 1.0 - rho)
    clean = y == y_hat
    p_flip = np.where(clean, 1.0 - flip, flip)
    return p_y * p_flip, np.sign(y) * p_flip, np.where(clean, -p_y, p_y)


@njit(cache=True)
def teacher_moments(
    rho, flip, n_pairs, m_t, q_t, b_t, v_t, delta, hk, gap, base, glx, glw, xs, ws, ext, h_buf, metrics,
    n_ext, freeze, rows, acc,
):  # fmt: skip
    """E[f̃], E[y f̃], E[f̃²], E[f̃'], E[ℓ(ŷ, h̃)], E[1{ŷ h̃ ≤ 0}] for the logistic teacher.

    The expectation runs over the first ``n_pairs`` pairs (y, ŷ) of ``label_pairs`` (pair i has
    y = ±1 for i even/odd and ŷ = −y for i ≥ 2).  ``h_buf[i, k]`` keeps the prox solutions of
    the last call as warm starts; the last two moments are computed only if ``metrics``.
    ``ext[i]``/``n_ext[i]`` receive the breakpoints of pair i (``freeze``: reuse those of the last
    call instead, a fixed rule).  ``rows[i]`` receives the conditional moments E[g | y, ŷ] of
    g ∈ (f̃, f̃², f̃', ℓ) and, if ``acc`` has rows, ``acc[i, g, k]`` their derivatives
    (``_node_derivative``) at fixed ξ̃-nodes with respect to k ∈ (ω̃ centre, spread √(Δq̃), ΔṼ).
    """
    mom = np.zeros(6)
    var = delta * v_t
    s = math.sqrt(delta * q_t)
    deriv = acc.shape[0] > 0
    for iy in range(n_pairs):
        y = 1.0 if iy % 2 == 0 else -1.0
        yl = y if iy < 2 else -y  # the training label ŷ
        p_y = (rho if iy % 2 == 0 else 1.0 - rho) * (1.0 - flip if iy < 2 else flip)
        centre = y * m_t + b_t
        if not freeze:
            n_ext[iy] = feature_breaks(hk, yl, 0.5, var, 0.0, 1.0, centre, s, gap, ext[iy])
        n = composite_rule(base, ext[iy], n_ext[iy], glx, glw, xs, ws)
        for i in range(4):
            rows[iy, i] = 0.0
        if deriv:
            for i in range(4):
                for k in range(3):
                    acc[iy, i, k] = 0.0
        if metrics:  # ŷ h̃ ≤ 0 ⇔ ŷ(ω̃ − ω̃₀) ≤ 0, ω̃₀ = ΔṼ ℓ'(ŷ, 0): prox is increasing
            mom[T_ERR] += p_y * _phi(yl * (var * _d1_p(yl, 0.5, 0.0, 0.0, 1.0) - centre) / s)
        for k in range(n):
            om = centre + s * xs[k]
            h, d2 = _prox_curv_p(yl, 0.5, om, var, 0.0, 1.0, h_buf[iy, k])
            h_buf[iy, k] = h
            f = _output(yl, 0.5, h, om, var, 0.0, 1.0)
            w = p_y * ws[k]
            mom[T_F] += w * f
            mom[T_YF] += w * y * f
            mom[T_FF] += w * f * f
            mom[T_DF] += w * (-d2 / (1.0 + var * d2))
            rows[iy, 0] += ws[k] * f
            rows[iy, 1] += ws[k] * f * f
            rows[iy, 2] += ws[k] * (-d2 / (1.0 + var * d2))
            if metrics:
                mom[T_LOSS] += w * _loss_p(yl, 0.5, h, 0.0, 1.0)
                rows[iy, 3] += ws[k] * _loss_p(yl, 0.5, h, 0.0, 1.0)
            if deriv:
                lp = _kd_partials(yl, 0.0, 0.5, h, 0.0, 1.0, 1.0, 1.0, metrics)
                d_om = _node_derivative(
                    f, var, 0.0, 0.0, 0.0, lp, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
                )
                d_var = _node_derivative(
                    f, var, 0.0, 0.0, 0.0, lp, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
                )
                for i in range(4):  # the integrands' derivatives in ω̃ and in ΔṼ
                    acc[iy, i, 0] += ws[k] * d_om[i]
                    acc[iy, i, 1] += ws[k] * xs[k] * d_om[i]
                    acc[iy, i, 2] += ws[k] * d_var[i]
    return mom


@njit(cache=True)
def teacher_nodes(y, yl, xt, m_t, q_t, b_t, v_t, delta, ht, ft, dft, dht):
    """Logistic teacher at given nodes (y_o, ŷ_o, ξ̃_o): fill h̃, f̃, f̃', h̃' (centre y_o m̃ + b̃,
    loss ℓ(ŷ_o, ·))."""
    var = delta * v_t
    s = math.sqrt(delta * q_t)
    for o in range(y.shape[0]):
        om = y[o] * m_t + b_t + s * xt[o]
        h = _prox_p(yl[o], 0.5, om, var, 0.0, 1.0, om)
        d2 = _d2_p(h, 0.0, 1.0)
        ht[o] = h
        ft[o] = _output(yl[o], 0.5, h, om, var, 0.0, 1.0)
        dft[o] = -d2 / (1.0 + var * d2)
        dht[o] = 1.0 / (1.0 + var * d2)


@njit(cache=True)
def student_moments(
    y, yl, w, xt, ht, ft, dft, dht, m, q, r, v, vc, b, q_t, delta, chi, temperature, both,
    hk, gap, base, glx, glw, xs, ws, ext, h_buf, metrics, n_ext, freeze, rows, acc, full,
):  # fmt: skip
    """E[f], E[y f], E[f²], E[∂_ω f], E[f f̃], E[df/dω̃], E[ℓ_KD], E[1{ŷ h ≤ 0}] for the student.

    Outer nodes o carry (cluster label y, training label ŷ = ``yl``, weight incl. P(y, ŷ), ξ̃) and
    the teacher's h̃, f̃, f̃', h̃'; p̃ = sig(h̃/T), and the student's own temperature is T_s = T if
    ``both`` else 1 (``Student.tempered``).  The inner
    rule over ξ is rebuilt per outer node with breakpoints at the student's feature points
    (``ext[o, :n_ext[o]]``; ``freeze``: reuse those of the last call, a fixed rule).
    ``xs``, ``ws`` are per-row work arrays; ``h_buf[:, o, j]`` keeps (h, f, 1/(1 + ΔVℓ″)) of the
    prox solutions of the last call for warm starts (NaN: none; the prox starts from the
    previous node's solution or the last call's, moved to first order, whichever moves less);
    the last two moments are computed only if ``metrics``.
    ``rows[o]`` receives the inner expectations of (f, f², ∂_ω f, df/dω̃, ℓ_KD, 1{ŷh ≤ 0}); if
    ``acc`` has rows, ``acc[o, i, k]`` receives the inner expectation of the derivative of
    integrand i (I_F, I_FF, I_DF, I_LOSS, I_DFT) in primitive k (P_OM … P_DHT) at fixed nodes:
    all of them if ``full``, else those the student's state moves (P_OM, P_SPREAD, P_VAR, P_CS).
    """
    n_out = y.shape[0]
    deriv = acc.shape[0] > 0
    var = delta * v
    sd = math.sqrt(delta)
    a = r / math.sqrt(q_t)
    spread = sd * math.sqrt(max(q - r * r / q_t, 0.0))
    t_s = temperature if both else 1.0
    dts = 1.0 if both else 0.0
    cs = delta * vc
    inv_var = 1.0 / var
    small = _SMALL_MOVE * min(1.0, t_s)  # (relative to the loss's scale, T_s where it is < 1)
    n_hk = hk.shape[0]
    s_neg, s_pos, s_kd, xi = np.empty(n_hk), np.empty(n_hk), np.empty(n_hk), np.empty(n_hk)
    for i in range(n_hk):
        s_neg[i] = sigmoid(-hk[i])
        s_pos[i] = sigmoid(hk[i])
        s_kd[i] = sigmoid(hk[i] / t_s)
    n_base = -1
    xs_base, ws_base = np.empty(xs.shape[1]), np.empty(xs.shape[1])
    for o in range(n_out):
        yo = yl[o]  # the training label: the loss sees ŷ, the centre the cluster label y
        pt = sigmoid(ht[o] / temperature)
        kappa = -chi * pt * (1.0 - pt) / (temperature * t_s)
        centre = y[o] * m + b + sd * a * xt[o] + delta * vc * ft[o]
        if not freeze and n_hk > 0 and spread > 0.0:
            # ``replica.quadrature.feature_breaks`` with the sigmoids of h_k computed once
            for i in range(n_hk):
                s_lab = s_neg[i] if yo > 0 else s_pos[i]  # sig(−ŷh_k)
                d1 = -(1.0 - chi) * yo * s_lab + (chi / t_s) * (s_kd[i] - pt)
                xi[i] = (hk[i] + var * d1 - centre) / spread
            n_ext[o] = prune(xi, gap, ext[o])
        elif not freeze:
            n_ext[o] = 0
        if n_ext[o] == 0:  # the base rule, the same for every such row: built once
            if n_base < 0:
                n_base = composite_rule(base, ext[o], 0, glx, glw, xs_base, ws_base)
            n, xr, wr = n_base, xs_base, ws_base
        else:
            n = composite_rule(base, ext[o], n_ext[o], glx, glw, xs[o], ws[o])
            xr, wr = xs[o], ws[o]
        a_f = a_ff = a_df = a_dft = a_loss = a_err = 0.0
        h_prev = om_prev = 0.0
        idn_prev = 1.0
        if deriv:
            for i in range(5):
                for k in range(9):
                    acc[o, i, k] = 0.0
        if metrics:  # ŷh ≤ 0 ⇔ ŷ(ω' − ω'₀) ≤ 0, ω'₀ = ΔV ∂_hℓ_KD(ŷ, p̃, 0): prox is increasing
            gap0 = var * _d1_p(yo, pt, 0.0, chi, t_s) - centre
            if spread > 0.0:
                a_err = _phi(yo * gap0 / spread)
            elif yo * gap0 >= 0.0:
                a_err = 1.0
        for j in range(n):
            om = centre + spread * xr[j]
            # the start: this node's solution of the last call, moved to the new ω and ΔV to
            # first order where that move is small (h + ΔVℓ′(h) = ω: Δh = (ω + ΔV f_old −
            # h_old)/D_old; a near-converged polish step); else the previous node's solution
            # moved by ∂h/∂ω = 1/(1 + ΔVℓ″) if there is none (NaN)
            h_old = h_buf[0, o, j]
            if h_old == h_old:
                h0 = h_old
                dh = (om + var * h_buf[1, o, j] - h_old) * h_buf[2, o, j]
                if abs(dh) <= small:
                    h0 = h_old + dh
            elif j > 0:
                h0 = h_prev + (om - om_prev) * idn_prev
            else:
                h0 = om
            h, d1, d2, idn = _prox_warm(yo, pt, om, var, chi, t_s, h0)
            # f = (h − ω)/(ΔV) = −ℓ′(h) (``_output``: the quotient unless it cancels)
            f = -d1 if abs(h - om) < _CANCEL * abs(om) else (h - om) * inv_var
            h_buf[0, o, j] = h
            h_buf[1, o, j] = f
            h_buf[2, o, j] = idn
            h_prev, om_prev, idn_prev = h, om, idn
            dh_dt = (cs * dft[o] - var * kappa * dht[o]) * idn
            wj = wr[j]
            a_f += wj * f
            a_ff += wj * f * f
            a_df -= wj * d2 * idn
            a_dft += wj * (-d2 * dh_dt - kappa * dht[o])
            if metrics:
                a_loss += wj * _loss_fast(yo, pt, h, chi, t_s)
            if deriv:
                lp = _kd_partials(yo, ht[o], pt, h, chi, temperature, t_s, dts, metrics)
                fo, dfo, dho = f, dft[o], dht[o]
                d = _node_derivative(
                    fo, var, cs, dfo, dho, lp, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
                )
                for i in range(5):
                    acc[o, i, P_OM] += wj * d[i]
                    acc[o, i, P_SPREAD] += wj * xr[j] * d[i]
                d = _node_derivative(
                    fo, var, cs, dfo, dho, lp, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
                )
                _accumulate(acc, o, P_VAR, wj, d)
                d = _node_derivative(
                    fo, var, cs, dfo, dho, lp, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0
                )
                _accumulate(acc, o, P_CS, wj, d)
                if full:
                    d = _node_derivative(
                        fo, var, cs, dfo, dho, lp, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0
                    )
                    _accumulate(acc, o, P_HT, wj, d)
                    d = _node_derivative(
                        fo, var, cs, dfo, dho, lp, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0
                    )
                    _accumulate(acc, o, P_CHI, wj, d)
                    d = _node_derivative(
                        fo, var, cs, dfo, dho, lp, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0
                    )
                    _accumulate(acc, o, P_T, wj, d)
                    d = _node_derivative(
                        fo, var, cs, dfo, dho, lp, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0
                    )
                    _accumulate(acc, o, P_DFT, wj, d)
                    d = _node_derivative(
                        fo, var, cs, dfo, dho, lp, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0
                    )
                    _accumulate(acc, o, P_DHT, wj, d)
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

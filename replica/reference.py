r"""Plain vectorised-numpy twin of the replica equations: slow, simple, independent of numba.

It evaluates the same channel expectations as ``replica.channels`` on a fixed tensor rule (uniform
Gauss–Legendre panels with Gaussian weight over [−L, L], no feature points) with a vectorised
safeguarded-Newton prox, and iterates the fixed point with plain damping (no acceleration).  Used
by the tests (kernels against their twin) and by ``benchmarks/replica_speed.py`` as the "plain
numpy loop" baseline.  Notation of docs/theory.md: y the cluster label (centres the fields), ŷ the
training label (the losses), flipped with probability θ; T_s the student's temperature.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit, log_expit, ndtr

from kdtheory.problem import BayesTeacher, Problem


def gaussian_rule(n_panels: int = 64, p: int = 8, half_width: float = 8.3):
    """Uniform composite Gauss–Legendre rule for E_ξ[·], ξ ~ N(0, 1), on [−L, L]."""
    x, w = np.polynomial.legendre.leggauss(p)
    edges = np.linspace(-half_width, half_width, n_panels + 1)
    c, hw = 0.5 * (edges[1:] + edges[:-1]), 0.5 * np.diff(edges)
    nodes = (c[:, None] + hw[:, None] * x[None, :]).ravel()
    weights = (hw[:, None] * w[None, :]).ravel() * np.exp(-0.5 * nodes**2) / math.sqrt(2 * math.pi)
    return nodes, weights


def dloss(y, pt, h, chi, t):
    """(∂_h ℓ_KD, ∂²_h ℓ_KD) with p̃ = sig(h̃/T), vectorised."""
    s, st = expit(h), expit(h / t)
    d1 = -(1 - chi) * y * expit(-y * h) + (chi / t) * (st - pt)
    d2 = (1 - chi) * s * (1 - s) + (chi / t**2) * st * (1 - st)
    return d1, d2


def loss(y, pt, h, chi, t):
    """ℓ_KD with p̃ = sig(h̃/T), vectorised (log-sigmoid form)."""
    return -(1 - chi) * log_expit(y * h) - chi * (
        pt * log_expit(h / t) + (1 - pt) * log_expit(-h / t)
    )


def prox(y, pt, omega, v, chi, t, iters: int = 400):
    """argmin_h (h − ω)²/(2V) + ℓ_KD: vectorised Newton on the bracket ω ± V B, replaced by
    bisection wherever it leaves the bracket or does not halve the previous step."""
    bound = (1 - chi) + chi / t
    lo, hi = omega - v * bound, omega + v * bound
    h = np.array(omega, dtype=float, copy=True)
    dx_old = hi - lo
    for _ in range(iters):
        d1, d2 = dloss(y, pt, h, chi, t)
        g = (h - omega) / v + d1
        step = g / (1 / v + d2)
        lo = np.where(g <= 0, h, lo)
        hi = np.where(g > 0, h, hi)
        h_new = h - step
        bisect = (h_new <= lo) | (h_new >= hi) | (np.abs(step) > 0.5 * dx_old)
        dx_old = np.where(bisect, 0.5 * (hi - lo), np.abs(step))
        h_new = np.where(bisect, lo + 0.5 * (hi - lo), h_new)
        if np.max(np.abs(h_new - h) / (1 + np.abs(omega) + v * bound)) < 1e-15:
            return h_new
        h = h_new
    return h


def label_pairs(data):
    """[(y, ŷ, P(y, ŷ))]: ŷ = y w.p. 1 − θ, −y w.p. θ (pairs of probability 0 left out)."""
    out = []
    for y, p_y in ((1.0, data.rho), (-1.0, 1 - data.rho)):
        for y_hat, p_f in ((y, 1 - data.flip), (-y, data.flip)):
            if p_f > 0:
                out.append((y, y_hat, p_y * p_f))
    return out


def teacher_channel(problem: Problem, m, q, b, v, rule):
    """Logistic teacher moments E[f̃], E[y f̃], E[f̃²], E[f̃'] and node values on ``rule``."""
    d = problem.data
    x, w = rule
    out = {}
    for y, y_hat, p in label_pairs(d):
        om = y * m + b + math.sqrt(d.delta * q) * x
        h = prox(y_hat, 0.5, om, d.delta * v, 0.0, 1.0)
        _, d2 = dloss(y_hat, 0.5, h, 0.0, 1.0)
        f = (h - om) / (d.delta * v)
        out[y, y_hat] = (p, h, f, -d2 / (1 + d.delta * v * d2), 1 / (1 + d.delta * v * d2))
    mom = np.zeros(4)
    for (y, _), (p, _h, f, df, _) in out.items():
        mom += p * np.array([w @ f, y * (w @ f), w @ f**2, w @ df])
    return mom, out


def teacher_nodes(problem: Problem, teacher, y: float, xt: np.ndarray, y_hat: float | None = None):
    """(h̃, f̃, f̃', h̃') of a solved teacher state at Gaussian nodes ξ̃ for cluster label y and
    training label ŷ (default y)."""
    d = problem.data
    y_hat = y if y_hat is None else y_hat
    om = y * teacher.m + teacher.b + math.sqrt(d.delta * teacher.q) * xt
    if isinstance(problem.teacher, BayesTeacher):
        c = 2 / (d.delta * (d.delta + d.alpha))
        return (
            om + d.delta * c * y_hat,
            np.full_like(om, c * y_hat),
            np.zeros_like(om),
            np.ones_like(om),
        )
    var = d.delta * teacher.V
    h = prox(y_hat, 0.5, om, var, 0.0, 1.0)
    _, d2 = dloss(y_hat, 0.5, h, 0.0, 1.0)
    return h, (h - om) / var, -d2 / (1 + var * d2), 1 / (1 + var * d2)


def student_channel(problem: Problem, teacher, x_state, rule_t, rule_s):
    """Student moments E[f], E[y f], E[f²], E[∂_ω f], E[f f̃], E[df/dω̃], E[ℓ_KD], E[1{ŷh ≤ 0}] on the
    tensor rule rule_t (ξ̃) × rule_s (ξ)."""
    d, st = problem.data, problem.student
    m, q, r, v, vc, b = x_state
    xt, wt = rule_t
    xs, ws = rule_s
    a = r / math.sqrt(teacher.q)
    perp = math.sqrt(max(q - r * r / teacher.q, 0.0))
    var, chi, t_t, t = d.delta * v, st.chi, st.temperature, st.student_temperature
    mom = np.zeros(8)
    for y_c, y, p_y in label_pairs(d):  # (y: the training label, seen by the losses)
        ht, ft, dft, dht = (z[:, None] for z in teacher_nodes(problem, teacher, y_c, xt, y))
        pt = expit(ht / t_t)
        kappa = -(chi / (t_t * t)) * pt * (1 - pt)
        om = (
            y_c * m
            + b
            + math.sqrt(d.delta) * (a * xt[:, None] + perp * xs[None, :])
            + d.delta * vc * ft
        )
        h = prox(y, pt, om, var, chi, t)
        _, d2 = dloss(y, pt, h, chi, t)
        f = (h - om) / var
        den = 1 + var * d2
        dfdt = -d2 * (d.delta * vc * dft - var * kappa * dht) / den - kappa * dht
        w2 = p_y * wt[:, None] * ws[None, :]
        # P_ξ(y h ≤ 0) row by row: h is increasing in ω', and h = 0 at ω' = ΔV ∂_hℓ_KD(y, p̃, 0)
        om0 = (
            var * dloss(y, pt[:, 0], 0.0, chi, t)[0] - om[:, 0] + math.sqrt(d.delta) * perp * xs[0]
        )
        err_rows = ndtr(y * om0 / (math.sqrt(d.delta) * perp)) if perp > 0 else (y * om0 >= 0) * 1.0
        mom += np.array(
            [
                np.sum(w2 * f),
                y_c * np.sum(w2 * f),
                np.sum(w2 * f**2),
                np.sum(w2 * (-d2 / den)),
                np.sum(w2 * f * ft),
                np.sum(w2 * dfdt),
                np.sum(w2 * loss(y, pt, h, chi, t)),
                p_y * np.sum(wt * err_rows),
            ]
        )
    return mom


def student_update(problem: Problem, teacher, x_state, mom):
    """The overlap update of docs/theory.md from the student moments (same as replica.student)."""
    d, st = problem.data, problem.student
    al, de = d.alpha, d.delta
    m_hat, q_hat, v_hat = al * mom[1], al * de * mom[2], -al * de * mom[3]
    r_hat, vc_hat = al * de * mom[4], al * de * mom[5]
    big_a, a_t = st.lam + v_hat, 1.0 / teacher.V
    nu, u = vc_hat / a_t, m_hat + vc_hat * teacher.m
    eta = st.eta
    return np.array(
        [
            eta * u / big_a,
            eta * (u**2 + q_hat + 2 * nu * r_hat + nu**2 * teacher.q_hat) / big_a**2,
            eta * (u * teacher.m + (r_hat + nu * teacher.q_hat) / a_t) / big_a,
            eta / big_a,
            eta * vc_hat / (big_a * a_t),
            x_state[5] + al * de * mom[0] / v_hat,
        ]
    )


def solve_student_plain(problem: Problem, teacher, x0, *, tol=1e-10, damping=0.5, max_iter=5000,
                        rule=None):  # fmt: skip
    """Plain damped iteration x ← (1 − β) x + β G(x) of the student map (the numpy baseline).

    Returns (x, residual, iterations)."""
    rule = gaussian_rule() if rule is None else rule
    x = np.array(x0, dtype=float)
    res = np.inf
    for it in range(1, max_iter + 1):
        gx = student_update(problem, teacher, x, student_channel(problem, teacher, x, rule, rule))
        res = float(np.max(np.abs(gx - x) / np.maximum(1, np.abs(gx))))
        if res <= tol:
            return gx, res, it
        x = (1 - damping) * x + damping * gx
    return x, res, max_iter

r"""The KD student's fixed point (docs/theory.md), given a solved teacher.

Channel moments (``replica.channels``) give the conjugates
    m̂ = α E[y f],  q̂ = αΔ E[f²],  V̂ = −αΔ E[∂_ω f],  r̂ = αΔ E[f f̃],  V̂_c = αΔ E[df/dω̃],
and with A = λ + V̂, ν = V̂_c/Ã, u = m̂ + V̂_c m̃ the order parameters
    V = η/A,  m = η u/A,  q = η(u² + q̂ + 2ν r̂ + ν² q̂_t)/A²,
    r = η(u m̃ + (r̂ + ν q̂_t)/Ã)/A,  V_c = η V̂_c/(A Ã);
the bias solves E[f] = 0 (a Newton step b ← b + αΔ E[f]/V̂ inside each map evaluation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from kdtheory.problem import Problem
from replica.channels import (
    S_DF,
    S_DFT,
    S_ERR,
    S_F,
    S_FF,
    S_FFT,
    S_LOSS,
    S_YF,
    student_moments,
)
from replica.fixed_point import bias_step
from replica.quadrature import Quadrature, composite_rule, prune
from replica.teacher import TeacherState, teacher_at_nodes, teacher_omega_of_h

#: order of the state vector x
FIELDS = ("m", "q", "r", "V", "Vc", "b")


@dataclass(frozen=True)
class StudentState:
    """Student order parameters, conjugates and metrics.

    m = w·v/N, q = ‖w‖²/N, b the bias, r = w·w̃/N, V and V_c the susceptibilities; ``eg`` the test
    error, ``train_loss`` the mean ℓ_KD on the training set, ``train_error`` its misclassification
    rate on the true labels.
    """

    m: float
    q: float
    b: float
    r: float
    V: float
    Vc: float
    m_hat: float
    q_hat: float
    V_hat: float
    r_hat: float
    Vc_hat: float
    eg: float
    train_loss: float
    train_error: float

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, f) for f in FIELDS])


def outer_rule(problem: Problem, teacher: TeacherState, quad: Quadrature):
    """Nodes (y_o, w_o, ξ̃_o) over both labels for the teacher direction, with breakpoints where the
    teacher's training output h̃ crosses the feature points of the soft label p̃ = sig(h̃/T)
    (scale T, if χ > 0) and of its own loss (unit scale, logistic teacher)."""
    data, st = problem.data, problem.student
    spread = math.sqrt(data.delta * teacher.q)
    hk = [quad.features(1.0, st.temperature, spread)] if st.chi > 0.0 else []
    if not _is_bayes(problem):
        hk.append(quad.features(0.0, 1.0, spread))
    hk = np.unique(np.concatenate(hk)) if hk else np.empty(0)
    glx, glw = quad.legendre()
    n = quad.max_nodes()
    ys, ws, xs = [], [], []
    for y, p_y in ((1.0, data.rho), (-1.0, 1.0 - data.rho)):
        om = teacher_omega_of_h(data, problem.teacher, teacher, y, hk)
        ext = np.empty(max(len(hk), 1))
        ne = prune((om - y * teacher.m - teacher.b) / spread, quad.feature_gap, ext)
        x, w = np.empty(n), np.empty(n)
        k = composite_rule(quad.base(), ext, ne, glx, glw, x, w)
        ys.append(np.full(k, y))
        ws.append(p_y * w[:k])
        xs.append(x[:k])
    return np.concatenate(ys), np.concatenate(ws), np.concatenate(xs)


def _is_bayes(problem: Problem) -> bool:
    from kdtheory.problem import BayesTeacher

    return isinstance(problem.teacher, BayesTeacher)


class StudentMap:
    """x = (m, q, r, V, V_c, b) ↦ G(x) for the student of a solved teacher."""

    def __init__(self, problem: Problem, teacher: TeacherState, quad: Quadrature):
        self.problem, self.teacher, self.quad = problem, teacher, quad
        self.y, self.w, self.xt = outer_rule(problem, teacher, quad)
        self.nodes = teacher_at_nodes(problem.data, problem.teacher, teacher, self.y, self.xt)
        self.glx, self.glw = quad.legendre()
        self.base = quad.base()
        n, rows = quad.max_nodes(), len(self.y)
        self.xs, self.ws, self.ext = np.empty((rows, n)), np.empty((rows, n)), np.empty((rows, n))
        self.h_buf = np.zeros((rows, n))

    def moments(self, x: np.ndarray, metrics: bool = False) -> np.ndarray:
        m, q, r, v, vc, b = x
        st, d, q_t = self.problem.student, self.problem.data.delta, self.teacher.q
        spread = math.sqrt(d * max(q - r * r / q_t, 0.0))
        hk = self.quad.features(st.chi, st.temperature, spread)
        return student_moments(
            self.y, self.w, self.xt, *self.nodes, m, q, r, v, vc, b, q_t, d, st.chi,
            st.temperature, hk, self.quad.feature_gap, self.base, self.glx, self.glw,
            self.xs, self.ws, self.ext, self.h_buf, metrics,
        )  # fmt: skip

    def hats(self, mom: np.ndarray) -> tuple[float, float, float, float, float]:
        a, d = self.problem.data.alpha, self.problem.data.delta
        return (
            a * mom[S_YF],
            a * d * mom[S_FF],
            -a * d * mom[S_DF],
            a * d * mom[S_FFT],
            a * d * mom[S_DFT],
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        mom = self.moments(x)
        m_hat, q_hat, v_hat, r_hat, vc_hat = self.hats(mom)
        t, st = self.teacher, self.problem.student
        eta, a_t = st.eta, t.A
        big_a = st.lam + v_hat
        if not big_a > 0.0:  # λ = 0 and a flat loss (V̂ = 0): V = η/A is infinite
            return np.full(6, np.inf)
        nu = vc_hat / a_t
        u = m_hat + vc_hat * t.m
        d = self.problem.data
        b_new = x[5] + bias_step(d.alpha * d.delta * mom[S_F], v_hat, d.delta * x[1])
        return np.array(
            [
                eta * u / big_a,
                eta * (u * u + q_hat + 2.0 * nu * r_hat + nu * nu * t.q_hat) / big_a**2,
                eta * (u * t.m + (r_hat + nu * t.q_hat) / a_t) / big_a,
                eta / big_a,
                eta * vc_hat / (big_a * a_t),
                b_new,
            ]
        )

    def state(self, x: np.ndarray) -> StudentState:
        mom = self.moments(x, metrics=True)
        m_hat, q_hat, v_hat, r_hat, vc_hat = self.hats(mom)
        m, q, r, v, vc, b = (float(t) for t in x)
        return StudentState(
            m=m, q=q, b=b, r=r, V=v, Vc=vc, m_hat=m_hat, q_hat=q_hat, V_hat=v_hat, r_hat=r_hat,
            Vc_hat=vc_hat, eg=float(self.problem.data.error(m, q, b)),
            train_loss=float(mom[S_LOSS]), train_error=float(mom[S_ERR]),
        )  # fmt: skip


def valid(x: np.ndarray) -> bool:
    """q > 0 and V > 0 (the map clips q − r²/q̃ at 0 itself)."""
    return bool(x[1] > 0.0 and x[3] > 0.0)


def initial(g: StudentMap, lam: float) -> np.ndarray:
    """The state with w = 0 and its optimal bias: E[∂_h ℓ_KD(y, p̃, b)] = 0 over the teacher's
    training outputs (for small T this is b ≈ T·logit ρ, not the teacher's bias, where ℓ'' ≈ 0),
    and V = η/(λ + αΔ E[ℓ''(b)]).  One map step from here gives the large-λ solution."""
    d, st = g.problem.data, g.problem.student
    chi, t = st.chi, st.temperature
    pt = expit(g.nodes[0] / t)

    def mean_d1(b: float) -> float:
        return float(g.w @ (-(1 - chi) * g.y * expit(-g.y * b) + (chi / t) * (expit(b / t) - pt)))

    span = 50.0 * max(1.0, t)
    b = brentq(mean_d1, -span, span, xtol=1e-12) if mean_d1(-span) < 0 < mean_d1(span) else 0.0
    s, st_ = expit(b), expit(b / t)
    curvature = (1 - chi) * s * (1 - s) + (chi / t**2) * st_ * (1 - st_)
    v = st.eta / (lam + d.alpha * d.delta * curvature)
    return np.array([0.0, 0.0, 0.0, v, 0.0, b])

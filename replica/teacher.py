r"""Teacher fixed points: the logistic (L2) teacher and the Bayes-optimal teacher (closed form).

Logistic teacher (docs/theory.md), with E over the labels (y, ŷ) (cluster and training label, ŷ = −y
with probability θ) and ξ̃; the field is centred on y m̃ + b̃, the loss is ℓ(ŷ, ·):
    m̂_t = α E[y f̃],  q̂_t = αΔ E[f̃²],  V̂_t = −αΔ E[f̃'],  E[f̃] = 0 fixes b̃,
    Ã = λ̃ + V̂_t,  Ṽ = 1/Ã,  m̃ = m̂_t/Ã,  q̃ = (m̂_t² + q̂_t)/Ã².
Bayes-optimal teacher: the ERM with constant output function f̃ = c y, c = 2/(Δ(Δ + α)), λ̃ = 1,
V̂_t = 0, so m̃ = cα, q̃ = c²α(α + Δ), b̃ = log(ρ/(1 − ρ)), Ṽ = 1, h̃ = ω̃ + Δ c y on training points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.special import expit, ndtr

from kdtheory.problem import BayesTeacher, GaussianMixture, LogisticTeacher
from replica.channels import (
    T_DF,
    T_ERR,
    T_F,
    T_FF,
    T_LOSS,
    T_YF,
    label_pairs,
    teacher_moments,
    teacher_nodes,
)
from replica.dual import Dual
from replica.fixed_point import bias_step, continuation, describe, iterate, newton
from replica.quadrature import DEFAULT_QUADRATURE, Quadrature, gauss_hermite
from replica.separability import mixture_threshold
from replica.spectral import chain, teacher_prior


@dataclass(frozen=True)
class TeacherState:
    """Teacher order parameters (m̃, q̃, b̃, Ṽ), conjugates (m̂_t, q̂_t, V̂_t) and metrics.

    ``eg`` is the test error (on clean labels), ``train_loss`` the mean logistic loss on the
    training set, ``train_error`` the training misclassification rate (both against the training
    labels ŷ, flipped with probability θ).
    """

    m: float
    q: float
    b: float
    V: float
    m_hat: float
    q_hat: float
    V_hat: float
    eg: float
    train_loss: float
    train_error: float

    @property
    def A(self) -> float:
        """Ã = λ̃ + V̂_t = 1/Ṽ (isotropic model; with a covariance Ã_i = λ̃ + V̂_t σ_i/Δ varies
        over the spectrum and 1/Ṽ is not one of them, see ``replica.spectral``)."""
        return 1.0 / self.V


@dataclass(frozen=True)
class TeacherSolution:
    """``teacher``: the state; ``converged``/``residual``/``iterations``/``status``/``message``."""

    teacher: TeacherState
    converged: bool
    residual: float
    iterations: int
    status: str
    message: str = ""


def bayes_constant(data: GaussianMixture) -> float:
    """c = 2/(Δ(Δ + α)): the Bayes teacher's constant output f̃ = c y."""
    return 2.0 / (data.delta * (data.delta + data.alpha))


def bayes_teacher_state(data: GaussianMixture) -> TeacherState:
    """Closed form of the Bayes-optimal teacher (docs/theory.md)."""
    a, d, rho = data.alpha, data.delta, data.rho
    c = bayes_constant(data)
    m, q, b = c * a, c * c * a * (a + d), math.log(rho / (1.0 - rho))
    # training outputs h̃ = y m̃ + b̃ + √(Δq̃) ξ̃ + Δ c y: their loss and error by quadrature / Φ
    x, w = gauss_hermite(120)
    loss, err = 0.0, 0.0
    for y, p_y in ((1.0, rho), (-1.0, 1.0 - rho)):
        margin = m + d * c + y * b  # y·h̃ = margin + √(Δq̃) ξ̃ (in law)
        z = margin + math.sqrt(d * q) * x
        loss += p_y * float(w @ np.logaddexp(0.0, -z))
        err += p_y * float(ndtr(-margin / math.sqrt(d * q)))
    return TeacherState(
        m=m, q=q, b=b, V=1.0, m_hat=c * a, q_hat=a * d * c * c, V_hat=0.0,
        eg=float(data.error(m, q, b)), train_loss=loss, train_error=err,
    )  # fmt: skip


#: columns of the teacher map's Jacobian: its state (m̃, q̃, Ṽ, b̃), then (λ̃, α, ρ, Δ)
TEACHER_DIRECTIONS = ("m_t", "q_t", "V_t", "b_t", "lam_t", "alpha", "rho", "delta", "flip")


class _LogisticTeacherMap:
    """x = (m̃, q̃, Ṽ, b̃) ↦ G(x) for the logistic teacher; the bias by a Newton step on E[f̃] = 0.

    ``calls`` counts the kernel evaluations; ``equations`` gives F = G − x with its Jacobian.
    ``every``: sum over all four (y, ŷ) pairs even at θ = 0 (for the derivative in θ)."""

    def __init__(self, data: GaussianMixture, lam: float, quad: Quadrature, every: bool = False):
        self.data, self.lam, self.quad, self.every = data, lam, quad, every
        self.glx, self.glw = quad.legendre()
        self.base = quad.base()
        n = quad.max_nodes()
        k = 4  # the (y, ŷ) pairs (2 of them at θ = 0)
        self.xs, self.ws, self.ext = np.empty(n), np.empty(n), np.empty((k, n))
        self.h_buf = np.zeros((k, n))
        self.n_ext = np.zeros(k, dtype=np.int64)
        self.rows = np.zeros((k, 6))
        self.acc = np.zeros((k, 4, 3))
        self.calls = 0

    def moments(self, x, metrics=False, *, data=None, freeze=False, deriv=False):
        """Moments at x (``data``: other (α, ρ, Δ); ``freeze``: the rule of the last call)."""
        m, q, v, b = x
        data = self.data if data is None else data
        hk = self.quad.features(0.0, 1.0, math.sqrt(data.delta * q))
        self.calls += 1
        return teacher_moments(
            data.rho, data.flip, len(label_pairs(data.rho, data.flip, self.every)[0]), m, q, b, v, data.delta, hk, self.quad.feature_gap, self.base,
            self.glx, self.glw, self.xs, self.ws, self.ext, self.h_buf, metrics,
            self.n_ext, freeze, self.rows, self.acc if deriv else self.acc[:0],
        )  # fmt: skip

    def equations(self, x, *, lam=None, data=None, freeze=False, metrics=False):
        """One kernel call: (G(x), F(x), dF, mom), F = G − x except F_b = αΔE[f̃]/V̂_t (the
        uncapped bias step), dF = ∂F/∂(TEACHER_DIRECTIONS) (4 × 9); with ``metrics`` the
        gradient of E[ℓ] is ``self.loss_gradient``."""
        data = self.data if data is None else data
        lam = self.lam if lam is None else lam
        mom = self.moments(x, metrics, data=data, freeze=freeze, deriv=True)
        with np.errstate(all="ignore"):  # non-finite far from the fixed point: Newton hands over
            return self._equations(x, lam, data, mom, metrics)

    def _equations(self, x, lam, data, mom, metrics):
        m, q, v, b = x
        a, rho, d = data.alpha, data.rho, data.delta
        s = math.sqrt(d * q)
        y, _, p_y, dp_rho, dp_flip = label_pairs(rho, data.flip, self.every)
        k = len(y)
        seeds = np.zeros((k, 3, 9))  # ∂(centre, spread, ΔṼ)/∂(directions) per (y, ŷ) pair
        seeds[:, 0, 0] = y
        seeds[:, 0, 3] = 1.0
        seeds[:, 1, 1], seeds[:, 1, 7] = d / (2 * s), q / (2 * s)
        seeds[:, 2, 2], seeds[:, 2, 7] = d, v
        inner = np.einsum("yik,ykd->yid", self.acc[:k], seeds)  # d E[g | y, ŷ]
        dm = np.einsum("y,yid->id", p_y, inner)  # (f̃, f̃², f̃′, ℓ) × directions
        dm[:, 6] += dp_rho @ self.rows[:k, :4]  # ∂P(y, ŷ)/∂ρ
        dm[:, 8] += dp_flip @ self.rows[:k, :4]  # ∂P(y, ŷ)/∂θ
        dyf = (p_y * y) @ inner[:, 0]
        dyf[6] += (dp_rho * y) @ self.rows[:k, 0]
        dyf[8] += (dp_flip * y) @ self.rows[:k, 0]
        if metrics:
            self.loss_gradient = dm[3]
        state = (m, q, v, b, lam, a, rho, d, data.flip)
        sd = [Dual.seed(val, i, 9) for i, val in enumerate(state)]
        a_, d_ = sd[5], sd[7]
        m_hat, q_hat = a_ * Dual(mom[T_YF], dyf), a_ * d_ * Dual(mom[T_FF], dm[1])
        v_hat = -(a_ * d_ * Dual(mom[T_DF], dm[2]))
        big_a = sd[4] + v_hat
        if not (v_hat.v > 0.0 and big_a.v > 0.0):  # a flat loss: no finite step
            return np.full(4, np.inf), np.full(4, np.inf), np.full((4, 9), np.nan), mom
        if data.covariance is None:
            out = [m_hat / big_a, (m_hat * m_hat + q_hat) / (big_a * big_a), 1.0 / big_a]
        else:  # sums over the spectrum (replica.spectral)
            hats = (m_hat.v, q_hat.v, v_hat.v, sd[4].v)
            out = chain(*teacher_prior(data.covariance, *hats), [m_hat, q_hat, v_hat, sd[4]])
        out.append(a_ * d_ * Dual(mom[T_F], dm[0]) / v_hat)
        f = np.array([o.v for o in out]) - np.append(x[:3], 0.0)
        jac = np.array([o.d for o in out])
        jac[np.arange(3), np.arange(3)] -= 1.0
        if data.covariance is not None:  # Δ = tr Σ/N is not a free parameter then
            jac[:, TEACHER_DIRECTIONS.index("delta")] = np.nan
        g = f + np.append(x[:3], 0.0)
        g[3] = b + bias_step(a * d * mom[T_F], v_hat.v, d * q)
        return g, f, jac, mom

    def __call__(self, x: np.ndarray) -> np.ndarray:
        a, d = self.data.alpha, self.data.delta
        mom = self.mom = self.moments(x)
        m_hat, q_hat, v_hat = a * mom[T_YF], a * d * mom[T_FF], -a * d * mom[T_DF]
        big_a = self.lam + v_hat
        if not big_a > 0.0:  # λ̃ = 0 and a flat loss (V̂_t = 0): Ṽ = 1/Ã is infinite
            return np.full(4, np.inf)
        b_new = x[3] + bias_step(a * d * mom[T_F], v_hat, d * x[1])
        if self.data.covariance is not None:
            prior = teacher_prior(self.data.covariance, m_hat, q_hat, v_hat, self.lam)[0]
            return np.append(prior, b_new)
        return np.array([m_hat / big_a, (m_hat**2 + q_hat) / big_a**2, 1.0 / big_a, b_new])

    def state(self, x: np.ndarray) -> TeacherState:
        a, d = self.data.alpha, self.data.delta
        mom = self.moments(x, metrics=True)
        m, q, v, b = (float(t) for t in x)
        return TeacherState(
            m=m, q=q, b=b, V=v,
            m_hat=a * mom[T_YF], q_hat=a * d * mom[T_FF], V_hat=-a * d * mom[T_DF],
            eg=float(self.data.error(m, q, b)), train_loss=mom[T_LOSS], train_error=mom[T_ERR],
        )  # fmt: skip


def _valid(x: np.ndarray) -> bool:
    return bool(x[1] > 0.0 and x[2] > 0.0)


def _initial(data: GaussianMixture, lam: float) -> np.ndarray:
    """Start from the large-λ̃ limit: w̃ ≈ Σ y x/(2(λ̃ + αΔ/4)) (ℓ' ≈ −y/2, ℓ'' ≈ 1/4 at h = 0)."""
    a, d = data.alpha, data.delta
    big_a = lam + a * d / 4.0
    m_hat, q_hat = a / 2.0, a * d / 4.0
    b = math.log(data.rho / (1.0 - data.rho))
    if data.covariance is not None:
        prior = teacher_prior(data.covariance, m_hat, q_hat, a * d / 4.0, lam)[0]
        return np.append(prior, b)
    return np.array([m_hat / big_a, (m_hat**2 + q_hat) / big_a**2, 1.0 / big_a, b])


def solve_logistic_teacher(
    data: GaussianMixture,
    teacher: LogisticTeacher,
    *,
    init: TeacherState | None = None,
    tol: float = 1e-10,
    max_iter: int = 200,
    quad: Quadrature = DEFAULT_QUADRATURE,
) -> TeacherSolution:
    """Fixed point of the logistic teacher; continuation in λ̃ when a direct solve fails."""
    lam = teacher.lam
    if lam == 0.0:
        a_c = mixture_threshold(data)
        if data.alpha <= a_c:
            return _unbounded(
                f"LogisticTeacher.lam = 0 with alpha = {data.alpha:g} ≤ α_c(ρ, Δ, θ) = {a_c:.6g}: the "
                "training set is linearly separable and the teacher's norm diverges; use lam > 0"
            )

    def solve_at(lam_k: float, x0: np.ndarray | None, jacobian=None):  # (no Jacobian used)
        """Newton on the exact Jacobian; Anderson from x0 if it fails."""
        g = _LogisticTeacherMap(data, lam_k, quad)
        x0 = _initial(data, lam_k) if x0 is None else x0

        def eq(x):
            gx, f, jac, _ = g.equations(x)
            return gx, f, jac[:, :4]

        res = newton(eq, x0, tol=tol, valid=_valid, max_iter=min(30, max_iter))
        if res.status == "converged":
            return replace(res, iterations=g.calls)
        # a fresh map (its prox buffers unset), as before Newton: near a separable training set
        # the residual floor (rounding) depends on the prox's starting points
        g2 = _LogisticTeacherMap(data, lam_k, quad)
        res = iterate(g2, x0, tol=tol, max_iter=max_iter, valid=_valid)
        return replace(res, iterations=g.calls + g2.calls)

    x0 = None if init is None else np.array([init.m, init.q, init.V, init.b])
    res = solve_at(lam, x0)
    total = res.iterations
    if res.status != "converged":  # continuation from λ̃ = max(1, 10 λ̃) down to λ̃
        res, extra = continuation(solve_at, lam, valid=_valid, budget=50 * max_iter)  # cheap maps
        total += extra
    state = _LogisticTeacherMap(data, lam, quad).state(res.x)
    conv = res.status == "converged"
    msg = ""
    if not conv:
        msg = f"logistic teacher did not converge ({describe(res, tol)})"
        a_c = mixture_threshold(data)
        if data.alpha <= a_c:
            msg += (
                f"; the training set is linearly separable (alpha = {data.alpha:g} ≤ α_c(ρ, Δ, θ) = "
                f"{a_c:.6g}), so q̃ grows without bound as λ̃ → 0 and λ̃ = {lam:g} is out of reach"
            )
    return TeacherSolution(state, conv, res.residual, total, res.status, msg)


def _unbounded(message: str) -> TeacherSolution:
    nan = math.nan
    state = TeacherState(nan, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    return TeacherSolution(state, False, math.inf, 0, "unbounded", message)


def solve_teacher_state(data, teacher, **kw) -> TeacherSolution:
    """Dispatch on the teacher type: closed form for Bayes, fixed point for logistic."""
    if isinstance(teacher, BayesTeacher):
        return TeacherSolution(bayes_teacher_state(data), True, 0.0, 0, "converged")
    return solve_logistic_teacher(data, teacher, **kw)


def teacher_at_nodes(data: GaussianMixture, teacher, state: TeacherState, y, y_hat, xt):
    """(h̃, f̃, f̃', h̃') of the trained teacher at training-point nodes (y_o, ŷ_o, ξ̃_o): cluster
    label y, training label ŷ."""
    n = y.shape[0]
    if isinstance(teacher, BayesTeacher):
        c = bayes_constant(data)
        om = y * state.m + state.b + math.sqrt(data.delta * state.q) * xt
        return om + data.delta * c * y_hat, c * y_hat, np.zeros(n), np.ones(n)
    out = [np.empty(n) for _ in range(4)]
    teacher_nodes(y, y_hat, xt, state.m, state.q, state.b, state.V, data.delta, *out)
    return tuple(out)


def teacher_nodes_derivatives(teacher, y, y_hat, xt, nodes, m_t, q_t, v_t, delta, alpha):
    """∂(h̃, f̃, f̃′, h̃′)/∂(m̃, q̃, b̃, Ṽ, Δ, α) at the nodes (y_o, ŷ_o, ξ̃_o): four (n, 6) arrays.

    ω̃ = y m̃ + b̃ + √(Δq̃) ξ̃, the loss ℓ(ŷ, ·).  Logistic: with D̃ = 1 + ΔṼℓ″, dh̃ = (dω̃ + f̃ d(ΔṼ))/D̃ (implicit
    derivative of the prox), df̃ = −ℓ″ dh̃, df̃′ = −(ℓ‴ dh̃ − ℓ″² d(ΔṼ))/D̃²,
    dh̃′ = −(ℓ″ d(ΔṼ) + ΔṼ ℓ‴ dh̃)/D̃².  Bayes: h̃ = ω̃ + Δc y and f̃ = c y with
    c = 2/(Δ(Δ + α)); f̃′ = 0 and h̃′ = 1.
    """
    n = y.shape[0]
    dom = np.zeros((n, 6))
    dom[:, 0] = y
    dom[:, 1] = 0.5 * math.sqrt(delta / q_t) * xt
    dom[:, 2] = 1.0
    dom[:, 4] = 0.5 * math.sqrt(q_t / delta) * xt
    ht, ft = nodes[0], nodes[1]
    if isinstance(teacher, BayesTeacher):
        s = delta + alpha
        dh, df = dom.copy(), np.zeros((n, 6))
        dh[:, 4] -= 2.0 * y_hat / s**2  # d(Δc)/dΔ = d(Δc)/dα = −2/(Δ + α)²
        dh[:, 5] -= 2.0 * y_hat / s**2
        df[:, 4] = -2.0 * (2.0 * delta + alpha) / (delta * s) ** 2 * y_hat
        df[:, 5] = -2.0 / (delta * s**2) * y_hat
        return dh, df, np.zeros((n, 6)), np.zeros((n, 6))
    var = delta * v_t
    dvar = np.zeros(6)
    dvar[3], dvar[4] = delta, v_t
    sg = expit(-y_hat * ht)
    l2 = sg * (1.0 - sg)
    l3 = -y_hat * l2 * (1.0 - 2.0 * sg)
    den = (1.0 + var * l2)[:, None]
    dh = (dom + ft[:, None] * dvar) / den
    df = -l2[:, None] * dh
    ddft = -(l3[:, None] * dh - (l2 * l2)[:, None] * dvar) / den**2
    ddht = -((l2[:, None] * dvar) + var * l3[:, None] * dh) / den**2
    return dh, df, ddft, ddht


def teacher_omega_of_h(data: GaussianMixture, teacher, state: TeacherState, y: float, h):
    """The inverse teacher map h̃ ↦ ω̃ on training points of training label ``y`` (logistic:
    h̃ + ΔṼℓ'(y, h̃); Bayes: h̃ − Δcy)."""
    h = np.asarray(h, dtype=float)
    if isinstance(teacher, BayesTeacher):
        return h - data.delta * bayes_constant(data) * y
    return h - data.delta * state.V * y * expit(-y * h)

r"""``replica.gradient``: exact derivatives of a solved problem by the implicit function theorem.

At a fixed point F(x*, θ) = G(x*; θ) − x* = 0, so dx*/dθ = −(∂F/∂x)⁻¹ ∂F/∂θ.  The teacher is solved
first and does not see the student: its sensitivities dx̃*/dθ come from its own equations (logistic)
or its closed form (Bayes: m̃ = cα, q̃ = c²α(α + Δ), b̃ = log(ρ/(1 − ρ)), Ṽ = 1, c = 2/(Δ(Δ + α)));
the student's total ∂F/∂θ then adds (∂F/∂x̃) dx̃*/dθ.  The Jacobians are the kernels' exact ones
(``StudentMap.equations``), so one extra kernel call per map gives every derivative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from scipy.special import ndtr

from kdtheory.problem import PARAMETERS, BayesTeacher, check_instance, refuse_covariance
from replica.multiclass import MulticlassSolution
from replica.solver import Solution
from replica.student import DIRECTIONS, FIELDS, StudentMap
from replica.teacher import TEACHER_DIRECTIONS, _LogisticTeacherMap

__all__ = ["Gradient", "gradient"]

#: the quantities ``gradient`` differentiates (the teacher's carry a ``_t``)
QUANTITIES = (
    "eg", "m", "q", "b", "r", "V", "Vc", "train_loss", "agreement",
    "eg_t", "m_t", "q_t", "b_t", "V_t", "train_loss_t",
    "ce", "ce_t",
)  # fmt: skip
_TEACHER_X = ("m_t", "q_t", "V_t", "b_t")  # order of the teacher map's state


@dataclass(frozen=True)
class Gradient:
    """Derivatives d(quantity)/d(parameter) at a solution: ``grad["eg"]["lam"]`` = ∂ε_g/∂λ.

    Quantities (``QUANTITIES``): the student's ε_g (``eg``), order parameters m, q, b, r, V, V_c,
    training loss E[ℓ_KD] (``train_loss``), the test-time agreement with the teacher, and the
    teacher's ε̃_g, m̃, q̃, b̃, Ṽ and training loss (``*_t``; ``train_loss_t`` for a logistic
    teacher only); the population cross-entropies of student and teacher (``ce``, ``ce_t``,
    ``replica.population_loss``).  Parameters: the flat names of ``kdtheory.problem.PARAMETERS`` in ``wrt``.
    """

    wrt: tuple[str, ...]
    d: Mapping[str, Mapping[str, float]]

    def __getitem__(self, quantity: str) -> Mapping[str, float]:
        return self.d[quantity]

    def vector(self, quantity: str) -> np.ndarray:
        """d(quantity)/d(wrt) as an array in the order of ``wrt``."""
        return np.array([self.d[quantity][k] for k in self.wrt])


#: parameters ``gradient`` differentiates in (every flat parameter)
DIFFERENTIABLE = tuple(PARAMETERS)


#: the smallest Δq (student) and Δq̃ (teacher) at which ``gradient`` differentiates: below it the
#: spread √(Δq) of the preactivations and its square underflow double precision in dε_g
MIN_SPREAD2 = 1e-100


def check_wrt(wrt, name: str = "wrt") -> tuple[str, ...]:
    """``wrt`` as a tuple of distinct names of ``kdtheory.problem.PARAMETERS`` (not a string), at
    least one; else a ValueError naming ``name``."""
    if isinstance(wrt, (str, bytes)) or not isinstance(wrt, Iterable):
        raise ValueError(f"{name} must be a list of parameter names (e.g. [{wrt!r}]), got {wrt!r}")
    wrt = tuple(wrt)
    for k in wrt:
        if k not in PARAMETERS:
            raise ValueError(f"{name}: unknown parameter {k!r}; allowed: {', '.join(PARAMETERS)}")
    if not wrt:
        raise ValueError(f"{name} must name at least one parameter")
    if len(set(wrt)) != len(wrt):
        raise ValueError(f"{name} must name distinct parameters, got {list(wrt)}")
    return wrt


def gradient(solution: Solution, wrt: Iterable[str] | None = None) -> Gradient:
    r"""Exact derivatives of a converged solution with respect to problem parameters.

    dx*/dθ = −(∂F/∂x)⁻¹ dF/dθ for the teacher, then for the student with
    dF/dθ = ∂F/∂θ + (∂F/∂x̃) dx̃*/dθ.  Derived quantities by the chain rule: ε_g = ρΦ(−u₊) +
    (1 − ρ)Φ(−u₋), u± = (m ± b)/√(Δq); the training loss from the kernel's derivative of E[ℓ_KD];
    the agreement Σ_y P(y)[Φ₂(a, a'; c) + Φ₂(−a, −a'; c)] from ∂/∂a = φ(a)(2Φ(k) − 1),
    k = (a' − ca)/√(1 − c²), and ∂/∂c = 2φ₂(a, a'; c).

    Parameters
    ----------
    solution : Solution
        A converged ``replica.solve`` result (at q > 0).
    wrt : iterable of str, optional
        Distinct flat parameter names (``kdtheory.problem.PARAMETERS``); default: every parameter
        of the problem (``DIFFERENTIABLE``, less ``lam_t`` and ``flip`` for the Bayes teacher,
        which has no ridge and is defined at θ = 0 only; naming them there is refused).  The label noise
        θ = ``flip`` enters the moments as (1 − θ) E_clean + θ E_flipped at fixed state, so its
        partials are E_flipped − E_clean (all four (y, ŷ) pairs are summed, also at θ = 0).

    Returns
    -------
    Gradient
        ``grad[quantity][parameter]`` for every quantity of ``QUANTITIES``.
    """
    if isinstance(solution, MulticlassSolution):
        raise ValueError(
            "solution must be binary for replica.gradient (K classes: not derived yet)"
        )
    check_instance("solution", solution, Solution)
    refuse_covariance(solution.problem.data, "replica.gradient")
    problem = solution.problem
    bayes = isinstance(problem.teacher, BayesTeacher)
    if wrt is None:
        wrt = tuple(k for k in DIFFERENTIABLE if not (bayes and k in ("lam_t", "flip")))
    wrt = check_wrt(wrt)
    if not solution.converged:
        raise ValueError(
            f"gradient: the solution did not converge ({solution.status}); no derivatives"
        )
    if bayes and "lam_t" in wrt:
        raise ValueError(
            "gradient: lam_t is not a parameter of the Bayes teacher (it has no ridge)"
        )
    if bayes and "flip" in wrt:
        raise ValueError(
            "gradient: flip is not a parameter of the Bayes teacher (it exists at flip = 0 only)"
        )
    s, t = solution.student, solution.teacher
    if not (s.q > 0.0 and t.q > 0.0):
        raise ValueError("gradient: q = 0 (a constant classifier): ε_g is not differentiable there")
    d = problem.data.delta
    for who, q in (("student", s.q), ("teacher", t.q)):
        if d * q < MIN_SPREAD2:
            raise ValueError(
                f"gradient: the {who}'s Δq = {d * q:.3g} is below {MIN_SPREAD2:g} (here alpha = "
                f"{problem.data.alpha:g}, delta = {d:g}, eta = {problem.student.eta:g}): its "
                "derivatives underflow double precision"
            )

    every = "flip" in wrt  # the flipped pairs, also at θ = 0
    dxt, dloss_t = _teacher_sensitivities(solution, wrt, bayes, every)  # {_TEACHER_X: vector}
    g = StudentMap(problem, t, solution.quad, every)
    x = s.vector()
    _, _, jac, _ = g.equations(x, metrics=True)
    ix = {k: i for i, k in enumerate(DIRECTIONS)}
    n = len(FIELDS)
    chain = np.stack([dxt[k] for k in ("m_t", "q_t", "b_t", "V_t")])  # 4 × len(wrt)
    dfdt = jac[:, [ix[k] for k in ("m_t", "q_t", "b_t", "V_t")]] @ chain
    direct = np.zeros((n, len(wrt)))
    for j, k in enumerate(wrt):
        if k != "lam_t":
            direct[:, j] = jac[:, ix[k]]
    dx = -np.linalg.solve(jac[:, :n], direct + dfdt)  # 6 × len(wrt): d(m, q, r, V, Vc, b)/dθ
    lg = g.loss_gradient
    dloss = lg[:n] @ dx + lg[[ix[k] for k in ("m_t", "q_t", "b_t", "V_t")]] @ chain
    for j, k in enumerate(wrt):
        if k != "lam_t":
            dloss[j] += lg[ix[k]]

    data = problem.data
    drho = np.array([1.0 if k == "rho" else 0.0 for k in wrt])
    ddelta = np.array([1.0 if k == "delta" else 0.0 for k in wrt])
    d_s = dict(zip(FIELDS, dx, strict=True))
    out: dict[str, np.ndarray] = {f: d_s[f] for f in FIELDS}
    out["train_loss"] = dloss
    out["eg"] = _error_gradient(data, s.m, s.q, s.b, d_s["m"], d_s["q"], d_s["b"], drho, ddelta)
    out.update({k: dxt[k] for k in _TEACHER_X})
    out["eg_t"] = _error_gradient(
        data, t.m, t.q, t.b, dxt["m_t"], dxt["q_t"], dxt["b_t"], drho, ddelta
    )
    if dloss_t is not None:
        out["train_loss_t"] = dloss_t
    out["ce"] = _cross_entropy_gradient(data, s.m, s.q, s.b, d_s, ("m", "q", "b"), drho, ddelta)
    out["ce_t"] = _cross_entropy_gradient(
        data, t.m, t.q, t.b, dxt, ("m_t", "q_t", "b_t"), drho, ddelta
    )
    out["agreement"] = _agreement_gradient(solution, d_s, dxt, drho, ddelta)
    for q, v in out.items():  # a last guard: never a NaN or ∞ derivative
        bad = [k for k, x in zip(wrt, v, strict=True) if not math.isfinite(x)]
        if bad:
            raise ValueError(
                f"gradient: d{q}/d{bad[0]} is not finite at this solution (a state at the edge "
                "of double precision); no derivatives"
            )
    return Gradient(
        wrt,
        MappingProxyType(
            {
                q: MappingProxyType(dict(zip(wrt, map(float, v), strict=True)))
                for q, v in out.items()
            }
        ),
    )


def _teacher_sensitivities(solution: Solution, wrt, bayes: bool, every: bool):
    """d(m̃, q̃, Ṽ, b̃)/dθ and d(train loss)/dθ of the teacher (None for Bayes)."""
    data, t = solution.problem.data, solution.teacher
    a, rho, d = data.alpha, data.rho, data.delta
    out = {k: np.zeros(len(wrt)) for k in _TEACHER_X}
    if bayes:  # closed form
        c = 2.0 / (d * (d + a))
        dc = {"alpha": -2.0 / (d * (d + a) ** 2), "delta": -2.0 * (2 * d + a) / (d * (d + a)) ** 2}
        for j, k in enumerate(wrt):
            if k in dc:
                dm = dc[k] * a + (c if k == "alpha" else 0.0)
                dq = 2 * c * dc[k] * a * (a + d) + c * c * ((2 * a + d) if k == "alpha" else a)
                out["m_t"][j], out["q_t"][j] = dm, dq
            elif k == "rho":
                out["b_t"][j] = 1.0 / (rho * (1.0 - rho))
        return out, None
    g = _LogisticTeacherMap(data, solution.problem.teacher.lam, solution.quad, every)
    _, _, jac, _ = g.equations(np.array([t.m, t.q, t.V, t.b]), metrics=True)
    it = {k: i for i, k in enumerate(TEACHER_DIRECTIONS)}
    direct = np.zeros((4, len(wrt)))
    for j, k in enumerate(wrt):
        if k in it:
            direct[:, j] = jac[:, it[k]]
    dx = -np.linalg.solve(jac[:, :4], direct)
    for i, k in enumerate(_TEACHER_X):
        out[k] = dx[i]
    lg = g.loss_gradient
    dloss = lg[:4] @ dx
    for j, k in enumerate(wrt):
        if k in it:
            dloss[j] += lg[it[k]]
    return out, dloss


def _phi(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _error_gradient(data, m, q, b, dm, dq, db, drho, ddelta) -> np.ndarray:
    """d ε_g for ε_g = ρΦ(−u₊) + (1 − ρ)Φ(−u₋), u± = (m ± b)/s, s = √(Δq)."""
    rho, d = data.rho, data.delta
    s = math.sqrt(d * q)
    ds = (d * dq + q * ddelta) / (2.0 * s)
    out = (float(ndtr(-(m + b) / s)) - float(ndtr(-(m - b) / s))) * drho
    for sign, p_y in ((1.0, rho), (-1.0, 1.0 - rho)):
        u = (m + sign * b) / s
        du = (dm + sign * db) / s - u * ds / s
        out = out - p_y * _phi(u) * du
    return out


def _cross_entropy_gradient(data, m, q, b, dx, names, drho, ddelta) -> np.ndarray:
    """d CE = ∂CE/∂m dm + ∂CE/∂q dq + ∂CE/∂b db + ∂CE/∂ρ dρ + ∂CE/∂Δ dΔ, the partials of
    ``replica.population.cross_entropy_partials``; ``names`` are the keys of (m, q, b) in dx."""
    from replica.population import cross_entropy_partials

    p = cross_entropy_partials(data, m, q, b)
    dm, dq, db = (dx[k] for k in names)
    return p["m"] * dm + p["q"] * dq + p["b"] * db + p["rho"] * drho + p["delta"] * ddelta


def _agreement_gradient(solution, d_s, dxt, drho, ddelta) -> np.ndarray:
    """d of Σ_y P(y)[Φ₂(a, a'; c) + Φ₂(−a, −a'; c)] (``GaussianMixture.agreement``)."""
    from kdtheory.problem import bivariate_normal_cdf

    data, s, t = solution.problem.data, solution.student, solution.teacher
    d, rho = data.delta, data.rho
    st, sq = math.sqrt(d * t.q), math.sqrt(d * s.q)
    dst = (d * dxt["q_t"] + t.q * ddelta) / (2 * st)
    dsq = (d * d_s["q"] + s.q * ddelta) / (2 * sq)
    c = s.r / math.sqrt(t.q * s.q)
    dc = (
        c * (d_s["r"] / s.r - 0.5 * dxt["q_t"] / t.q - 0.5 * d_s["q"] / s.q)
        if s.r
        else (d_s["r"] / math.sqrt(t.q * s.q))
    )
    root = math.sqrt(1.0 - c * c)
    out = np.zeros_like(drho)
    for y, p_y, sign in ((1.0, rho, 1.0), (-1.0, 1.0 - rho, -1.0)):
        a_t = (y * t.m + t.b) / st
        a = (y * s.m + s.b) / sq
        da_t = (y * dxt["m_t"] + dxt["b_t"]) / st - a_t * dst / st
        da = (y * d_s["m"] + d_s["b"]) / sq - a * dsq / sq
        same = bivariate_normal_cdf(a_t, a, c) + bivariate_normal_cdf(-a_t, -a, c)
        dens = math.exp(-(a_t * a_t - 2 * c * a_t * a + a * a) / (2 * root * root)) / (
            2 * math.pi * root
        )
        g_at = _phi(a_t) * (2.0 * float(ndtr((a - c * a_t) / root)) - 1.0)
        g_a = _phi(a) * (2.0 * float(ndtr((a_t - c * a) / root)) - 1.0)
        out = out + p_y * (g_at * da_t + g_a * da + 2.0 * dens * dc) + sign * same * drho
    return out

r"""Derivatives of a self-distillation chain (``replica.solve_chain``) by the implicit function
theorem through its stages, and the joint optimum of all stages' metaparameters.

Stage t's state x_t = (m_t, b_t, Q_{t,1..t}, R_{t,1..t}) is the fixed point of its map,
x_t = G_t(x_t; x_1, …, x_{t−1}, θ_1, …, θ_t) (``replica.chain``), where θ_s = (λ_s, T_s, χ_s) and
the earlier stages enter through their fields at the nodes and through m̂_{<t}, Q̂_{<t}, which at
their fixed points are m̂ = R⁻¹m and Q̂ = R⁻¹Q R⁻ᵀ − m̂m̂ᵀ.  Hence, stage after stage,

    dx_t/dθ = (I − ∂G_t/∂x_t)⁻¹ (∂G_t/∂θ + Σ_{s<t} ∂G_t/∂x_s dx_s/dθ),

the teacher's dx_1/dλ̃ from its own equations (``replica.gradient``'s teacher Jacobian; the Bayes
teacher has no parameter), and dε_t from ε_t = ρΦ(−(m + b)/√(Δq)) + (1 − ρ)Φ(−(m − b)/√(Δq)).
The quadrature rule of each stage is held fixed (it is the one ``solve_chain`` ends on): these are
the derivatives of the integrals it computes, not of its rule-placement heuristics.  The partial
derivatives of G_t are central differences *of the map at fixed nodes* (not of the solve, which
is never repeated; not analytic kernel derivatives either), with steps of 1e-5 in log λ, log T, χ
and of each state entry's natural size (``_scales``).  Where the map is smooth at the rule's
resolution they hold to ~1e-9 (two stages: 4e-10 from ``replica.gradient``'s analytic ones);
where a stage nearly interpolates nearly hard labels it is not, and ``ChainGradient.eg_error``
(the change with a 10× step) says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize

from kdtheory.problem import BayesTeacher, LogisticTeacher, Student, check_instance
from replica.chain import (
    EXACT_STAGES,
    ChainSolution,
    Quadrature,
    _Chain,
    _losses,
    _nested_rule,
    _Nodes,
    _own_features,
)

__all__ = ["ChainGradient", "chain_gradient", "chain_parameters"]

#: the central-difference step of the stage maps (in log λ, log T, χ and relative to the state)
STEP = 1e-5
#: the per-student parameters (stage t ≥ 2 is named "<parameter>_<t>"); the teacher's is "lam_t"
STUDENT_PARAMETERS = ("lam", "temperature", "chi")
_LOG = ("lam", "temperature")


def chain_parameters(solution: ChainSolution) -> tuple[str, ...]:
    """The parameters a chain is differentiable in: "lam_t" (λ̃, logistic teacher only), then for
    each student stage t = 2, 3, …: "lam_t", "temperature_t", "chi_t" with t the stage number."""
    out = [] if isinstance(solution.teacher, BayesTeacher) else ["lam_t"]
    for t in range(2, len(solution.stages) + 1):
        out += [f"{p}_{t}" for p in STUDENT_PARAMETERS]
    return tuple(out)


@dataclass(frozen=True)
class ChainGradient:
    """d(stage quantity)/d(parameter) of a chain: ``eg[t, j]`` = ∂ε_{t+1}/∂``wrt[j]`` (row 0 is the
    teacher, stage 1); ``m``, ``q``, ``b`` likewise (stages × parameters); ``eg_error`` an
    estimate of the difference error of ``eg``."""

    wrt: tuple[str, ...]
    eg: np.ndarray
    m: np.ndarray
    q: np.ndarray
    b: np.ndarray
    #: |change of ``eg``| when stage t's own Jacobian ∂G_t/∂x_t is differenced with 10× the step
    #: (the earlier stages' derivatives kept): ≲ 1e-8 where the map is smooth at the rule's
    #: resolution; large where a stage nearly interpolates nearly hard labels (λ_t ~ 1e-3,
    #: T ~ 0.02, R_tt ~ 60), where these derivatives are not reliable
    eg_error: np.ndarray | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        """∂ε_t/∂``name`` for every stage t."""
        return self.eg[:, self.wrt.index(name)]


def _parse(name: str) -> tuple[int, str]:
    """(stage index s ≥ 0, field) of a parameter name: "lam_t" → (0, "lam"), "chi_3" → (2, "chi")."""
    if name == "lam_t":
        return 0, "lam"
    field, _, stage = name.rpartition("_")
    return int(stage) - 1, field


def _check_wrt(solution: ChainSolution, wrt) -> tuple[str, ...]:
    allowed = chain_parameters(solution)
    if wrt is None:
        return allowed
    if isinstance(wrt, (str, bytes)) or not isinstance(wrt, Iterable):
        raise ValueError(f"wrt must be a list of parameter names, got {wrt!r}")
    wrt = tuple(wrt)
    if not wrt or len(set(wrt)) != len(wrt):
        raise ValueError(f"wrt must name at least one parameter, each once, got {list(wrt)}")
    for k in wrt:
        if k not in allowed:
            raise ValueError(f"wrt: unknown parameter {k!r} of this chain; allowed: {allowed}")
    return wrt


def _teacher_derivative(solution: ChainSolution) -> np.ndarray:
    """d(m̃, b̃, q̃, Ṽ)/d log λ̃ of the logistic teacher from its own fixed-point equations."""
    from replica.quadrature import DEFAULT_QUADRATURE
    from replica.teacher import TEACHER_DIRECTIONS, _LogisticTeacherMap

    st, lam = solution.stages[0], solution.teacher.lam
    g = _LogisticTeacherMap(solution.data, lam, DEFAULT_QUADRATURE)
    _, _, jac, _ = g.equations(np.array([st.m, st.q, st.V, st.b]), metrics=True)
    dx = -np.linalg.solve(jac[:, :4], jac[:, TEACHER_DIRECTIONS.index("lam_t")]) * lam
    m, q, v, b = dx
    return np.array([m, b, q, v])


def _state(solution: ChainSolution, t: int) -> np.ndarray:
    st = solution.stages[t]
    return np.concatenate([[st.m, st.b], solution.Q[t, : t + 1], solution.R[t, : t + 1]])


class _StageMap:
    """G_t(x_t; x_{<t}, losses) on stage t's final rule of ``solution``."""

    def __init__(self, solution: ChainSolution, t: int):
        self.solution, self.t = solution, t
        self.losses = _losses(solution.data, solution.teacher, solution.students)
        chain = _Chain(solution.data, self.losses)
        for s in range(len(solution.stages)):
            chain.restore(solution, s)
        nodes, orders, _ = solution.rule
        if t == 1:  # stage 2's polished rule (``_exact_stage``): twice the order, own features
            fine = min(2 * orders[0], 32)
            x = _state(solution, 1)
            own = x if _own_features(chain, 1, Quadrature(order=fine)) else None
            nd = _nested_rule(chain, 1, nodes[1], fine, own=own, own_order=orders[0])
        else:
            nd = _nested_rule(chain, t, nodes[t], orders[t - 1])
        self.y, self.yhat, self.w, self.xi = nd.y, nd.yhat, nd.w, nd.xi
        self._cache = None

    def __call__(self, x_t: np.ndarray, earlier: Sequence[np.ndarray], losses) -> np.ndarray:
        key = (tuple(map(tuple, earlier)), tuple(losses))
        if self._cache is not None and self._cache[0] == key:  # the earlier stages unchanged
            ch, nd = self._cache[1]
            return ch.update(nd, self.t, x_t)[0]
        t, data = self.t, self.solution.data
        ch = _Chain(data, losses)
        for s, x in enumerate(earlier):
            ch.m[s], ch.b[s] = x[0], x[1]
            ch.Q[s, : s + 1] = ch.Q[: s + 1, s] = x[2 : s + 3]
            ch.R[s, : s + 1] = x[s + 3 :]
            ch.C[s, : s + 1] = ch.cholesky_row(s, x[2 : s + 3])
        inv = np.linalg.inv(ch.R[:t, :t])  # m̂ = R⁻¹m, Q̂ = R⁻¹QR⁻ᵀ − m̂m̂ᵀ at the earlier fixed points
        ch.m_hat[:t] = inv @ ch.m[:t]
        ch.Q_hat[:t, :t] = inv @ ch.Q[:t, :t] @ inv.T - np.outer(ch.m_hat[:t], ch.m_hat[:t])
        nd = _Nodes(self.y, self.yhat, self.w, self.xi)
        ch.replay(nd, t)
        self._cache = (key, (ch, nd))
        return ch.update(nd, t, x_t)[0]


def _moved(losses, s: int, field: str, h: float, both: bool):
    """The losses with stage s's ``field`` moved by h (in log λ, log T, or χ); T_s follows T when
    the student is tempered="both"."""
    out = list(losses)
    loss = out[s]
    if field == "lam":
        out[s] = replace(loss, lam=loss.lam * math.exp(h))
    elif field == "chi":
        out[s] = replace(loss, chi=loss.chi + h)
    else:
        new_t = loss.temperature * math.exp(h)
        out[s] = replace(loss, temperature=new_t, ts=new_t if both else loss.ts)
    return out


def chain_gradient(solution: ChainSolution, wrt: Iterable[str] | None = None) -> ChainGradient:
    r"""Exact-rule derivatives of every stage's ε_t, m_t, q_t, b_t of a converged chain.

    dx_t/dθ = (I − ∂G_t/∂x_t)⁻¹ (∂G_t/∂θ + Σ_{s<t} ∂G_t/∂x_s dx_s/dθ) stage after stage, on the
    rule each stage was solved on (module docstring).

    Parameters
    ----------
    solution : ChainSolution
        A converged ``replica.solve_chain`` result of at most ``EXACT_STAGES`` stages (the QMC
        stages beyond are not differentiated).
    wrt : iterable of str, optional
        Names of ``chain_parameters(solution)`` ("lam_t" for λ̃; "lam_2", "temperature_2",
        "chi_2", … for the students); default all of them.

    Returns
    -------
    ChainGradient
        ``eg[t, j]`` = ∂ε_{t+1}/∂wrt[j] (stage 1 the teacher), and the same for m, q, b;
        ``eg_error``, the estimate of the differences' error (check it is small).
    """
    check_instance("solution", solution, ChainSolution)
    if not solution.converged:
        raise ValueError(f"chain_gradient: the chain did not converge ({solution.message})")
    k = len(solution.stages)
    if k > EXACT_STAGES:
        raise ValueError(f"chain_gradient: at most {EXACT_STAGES} stages (the exact rule), got {k}")
    wrt = _check_wrt(solution, wrt)
    params = [_parse(n) for n in wrt]
    n_p = len(wrt)
    states = [_state(solution, t) for t in range(k)]
    # d x_t / d z, z = log λ, log T, χ
    dx = [np.zeros((len(states[0]), n_p))]
    if not isinstance(solution.teacher, BayesTeacher):
        d0 = _teacher_derivative(solution)
        for j, (s, _) in enumerate(params):
            if s == 0:
                dx[0][:, j] = d0
    dx_coarse = [dx[0]]  # stage t's with its own Jacobian at 10× the step (an error estimate)
    for t in range(1, k):
        g = _StageMap(solution, t)
        base, x = g.losses, states[t]
        n = len(x)
        scale = _scales(x, t, solution.data.delta, np.diag(solution.Q))
        jacs = []
        for step in (STEP, 10 * STEP):  # the second: an estimate of the difference error
            jac = np.empty((n, n))
            for i in range(n):
                h = step * scale[i]
                e = np.zeros(n)
                e[i] = h
                jac[:, i] = (g(x + e, states[:t], base) - g(x - e, states[:t], base)) / (2 * h)
            jacs.append(jac)
        jac = jacs[0]
        rhs = np.zeros((n, n_p))
        for j, (s, field) in enumerate(params):
            if s > t:
                continue
            h = STEP
            up = [states[u] + h * dx[u][:, j] for u in range(t)]
            dn = [states[u] - h * dx[u][:, j] for u in range(t)]
            both = s > 0 and solution.students[s - 1].tempered == "both"
            lu = _moved(base, s, field, h, both) if s > 0 else base
            ld = _moved(base, s, field, -h, both) if s > 0 else base
            rhs[:, j] = (g(x, up, lu) - g(x, dn, ld)) / (2 * h)
        dx.append(np.linalg.solve(np.eye(n) - jac, rhs))
        dx_coarse.append(np.linalg.solve(np.eye(n) - jacs[1], rhs))
    # back from z to θ: d/dθ = (1/θ) d/dz on the log scales
    scale = np.ones(n_p)
    for j, (s, field) in enumerate(params):
        if field in _LOG:
            scale[j] = 1.0 / _value(solution, s, field)
    fine = _pack(solution, wrt, [d * scale for d in dx])
    coarse = _pack(solution, wrt, [d * scale for d in dx_coarse])
    return replace(fine, eg_error=np.abs(fine.eg - coarse.eg))


def _scales(x: np.ndarray, t: int, delta: float, qdiag: np.ndarray) -> np.ndarray:
    """The natural size of each entry of x_t = (m, b, Q_{t,·}, R_{t,·}), for the difference steps:
    the spread √(Q_tt) for m, √(ΔQ_tt) for b, √(Q_tt Q_uu) for Q_tu, R_tt for R_tu (or the entry's
    own size if larger; ``qdiag`` = Q_uu, u ≤ t).  A step relative to 1 instead would be large
    against the tiny states of a strong ridge (q ~ 1/λ²)."""
    q, r = x[2 : t + 3], x[t + 3 :]
    return np.concatenate(
        [
            [max(abs(x[0]), math.sqrt(q[t])), max(abs(x[1]), math.sqrt(delta * q[t]))],
            np.maximum(np.abs(q), np.sqrt(qdiag[: t + 1] * q[t])),
            np.maximum(np.abs(r), abs(r[t])),
        ]
    )


def _value(solution: ChainSolution, s: int, field: str) -> float:
    who = solution.teacher if s == 0 else solution.students[s - 1]
    return float(getattr(who, field))


def _pack(solution: ChainSolution, wrt, dx) -> ChainGradient:
    from replica.gradient import _error_gradient

    k, zero = len(solution.stages), np.zeros(len(wrt))
    eg, m, q, b = (np.zeros((k, len(wrt))) for _ in range(4))
    for t, st in enumerate(solution.stages):
        m[t], b[t], q[t] = dx[t][0], dx[t][1], dx[t][2 + t]
        eg[t] = _error_gradient(solution.data, st.m, st.q, st.b, m[t], q[t], b[t], zero, zero)
    return ChainGradient(tuple(wrt), eg, m, q, b)


def joint_search(
    data,
    teacher: LogisticTeacher,
    students: Sequence[Student],
    box: tuple[float, float, float, float],
    *,
    hard: bool,
    rule: dict,
    max_iter: int = 40,
) -> tuple[LogisticTeacher, tuple[Student, ...], int]:
    r"""The joint optimum of a chain's last-stage error ε_K over λ̃ and every student's (λ_t, T_t)
    (λ_t alone with ``hard`` labels), from the chain (``teacher``, ``students``): L-BFGS-B in
    (log λ̃, log λ_t, log T_t) within ``box`` = (log λ_lo, log λ_hi, log T_lo, log T_hi), on
    ``chain_gradient``'s derivatives, each chain solved on ``rule`` warm-started from the last.
    Returns the optimum's (teacher, students) and the number of chain solves; the start is kept
    if the search does not improve on it."""
    from replica.chain import solve_chain

    k = len(students) + 1
    names = ["lam_t"] + [
        f"{p}_{t}" for t in range(2, k + 1) for p in (("lam",) if hard else ("lam", "temperature"))
    ]

    def unpack(z):
        lam_t, out, i = math.exp(z[0]), [], 1
        for s in students:
            lam = math.exp(z[i])
            temp = s.temperature if hard else math.exp(z[i + 1])
            out.append(replace(s, lam=lam, temperature=temp))
            i += 1 if hard else 2
        return LogisticTeacher(lam_t), out

    z0 = [math.log(teacher.lam)]
    for s in students:
        z0 += [math.log(s.lam)] + ([] if hard else [math.log(s.temperature)])
    bounds = [box[:2]] + [b for _ in students for b in ([box[:2]] if hard else [box[:2], box[2:]])]
    z0 = np.clip(z0, *np.array(bounds).T)
    state = {"solves": 0, "last": None, "cache": {}}

    def evaluate(z):
        key = tuple(np.round(z, 14))
        if key in state["cache"]:
            return state["cache"][key]
        te, st = unpack(z)
        sol = solve_chain(data, te, st, init=state["last"], **rule)
        state["solves"] += 1
        if not sol.converged:
            out = (1.0, np.zeros(len(z)))
        else:
            state["last"] = sol
            g = chain_gradient(sol, names)
            theta = np.exp(z)  # d ε / d log θ = θ d ε / d θ
            out = (float(sol.stages[-1].eg), theta * g.eg[-1])
        state["cache"][key] = out
        return out

    f0 = evaluate(z0)[0]
    res = minimize(
        evaluate, z0, jac=True, method="L-BFGS-B", bounds=bounds,
        options={"maxiter": max_iter, "ftol": 1e-12, "gtol": 1e-8},
    )  # fmt: skip
    z = res.x if evaluate(res.x)[0] < f0 else z0
    te, st = unpack(z)
    return te, tuple(st), state["solves"]

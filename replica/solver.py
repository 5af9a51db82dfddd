r"""``replica.solve``: teacher and KD student at N → ∞, with convergence reported.

The teacher is solved first (it does not see the student), then the student's fixed point given the
teacher.  Each is solved by Newton's iteration on the kernels' exact Jacobian (Anderson iteration as
the fallback of the far field; ``replica.fixed_point``) and falls back to a continuation in the ridge (from max(1, 10λ) down to λ) when a direct solve fails; the student, if
that fails too, to a second path on which T moves from the nearest value in [0.5, 2] to its own
together with λ.  λ = 0 is refused with a clear status where no finite solution exists:
* a logistic fit without KD (teacher, or student with χ = 0) whose training set is linearly
  separable, α ≤ α_c (``replica.separability``): the norm diverges;
* a student with χ > 0 at α ≤ η: it interpolates its targets and V diverges.
A legal problem never raises: a point the solver cannot reach gets ``converged=False``, a status
and a message with the reason (where the continuation stalled, a separable training set, a loss
made flat by saturated labels, a residual stalled at rounding noise, or a numerical exception).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from kdtheory.problem import (
    GaussianMixture,
    LogisticTeacher,
    Problem,
    check_instance,
    check_integer,
    check_real,
    refuse_covariance,
)
from replica.channels import S_F, T_F
from replica.fixed_point import (
    FixedPointResult,
    bias_capped,
    continuation,
    describe,
    iterate,
    newton,
    polish,
)
from replica.quadrature import DEFAULT_QUADRATURE, Quadrature
from replica.separability import mixture_threshold
from replica.student import StudentMap, StudentState, initial, student_map, valid
from replica.teacher import (
    TeacherSolution,
    TeacherState,
    _LogisticTeacherMap,
    bayes_teacher_state,
    solve_teacher_state,
)

__all__ = [
    "ConvergenceError",
    "Solution",
    "agreement",
    "bayes_error",
    "solve",
    "solve_teacher",
]


class ConvergenceError(RuntimeError):
    """Raised by ``solve(..., strict=True)`` when the fixed point was not reached."""

    def __init__(self, message: str, solution: Solution | TeacherSolution):
        super().__init__(message)
        self.solution = solution


@dataclass(frozen=True)
class Solution:
    """Asymptotic teacher and student of one problem.

    ``converged`` is True only if both fixed points were reached to ``tol``; ``residual`` is the
    largest relative change of any order parameter in the last step (teacher or student);
    ``iterations`` counts map evaluations (teacher + student, continuation included); ``status`` is
    "converged", "max_iter", "diverged" (the iterate left the finite domain, or a numerical
    exception), "unbounded" (no finite solution at λ = 0) or "singular" (V diverges at λ = 0, or
    the loss is numerically flat, V̂ ≈ 0, so the bias is undetermined); ``message`` explains any
    status but "converged".
    """

    problem: Problem
    teacher: TeacherState
    student: StudentState
    converged: bool
    residual: float
    iterations: int
    status: str
    message: str = ""
    quad: Quadrature = DEFAULT_QUADRATURE
    #: J = DG − I of the student map at the solution (the full rule's last quasi-Newton Jacobian)
    jacobian: np.ndarray | None = field(default=None, repr=False, compare=False)


def solve_teacher(
    problem: Problem,
    *,
    init: Solution | TeacherSolution | None = None,
    tol: float = 1e-10,
    max_iter: int = 200,
    quad: Quadrature = DEFAULT_QUADRATURE,
    strict: bool = False,
) -> TeacherSolution:
    """Solve the teacher of ``problem`` alone (closed form for ``BayesTeacher``); binary problems
    only (a K-class teacher: ``replica.solve(problem).teacher``)."""
    if isinstance(problem, Problem) and problem.multiclass:
        raise ValueError(
            "problem must be binary for solve_teacher; for a K-class problem use "
            "replica.solve(problem).teacher"
        )
    _check_arguments(problem, init, (Solution, TeacherSolution), tol, max_iter, quad, strict)
    start = None if init is None else init.teacher
    try:
        out = solve_teacher_state(
            problem.data, problem.teacher, init=start, tol=tol, max_iter=max_iter, quad=quad
        )
        why = _runaway_bias(out, problem)
        if why and start is not None:  # a warm start far off: once more from the cold start
            out = solve_teacher_state(
                problem.data, problem.teacher, tol=tol, max_iter=max_iter, quad=quad
            )
            why = _runaway_bias(out, problem)
        if why:
            out = TeacherSolution(out.teacher, False, out.residual, out.iterations, "diverged", why)
    except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
        failed = _numerical_failure(problem, exc, quad)
        out = TeacherSolution(failed.teacher, False, math.inf, 0, failed.status, failed.message)
    if strict and not out.converged:
        raise ConvergenceError(out.message, out)
    return out


def solve(
    problem: Problem,
    *,
    init: Solution | None = None,
    tol: float = 1e-10,
    max_iter: int = 200,
    strict: bool = False,
    quad: Quadrature = DEFAULT_QUADRATURE,
) -> Solution:
    """Solve the replica-symmetric fixed point of docs/theory.md for the teacher and the KD student.

    A K-class problem (a ``MulticlassMixture`` with a ``SoftmaxTeacher`` or ``OracleTeacher``) is
    solved by ``replica.multiclass.solve_multiclass`` and returns a ``MulticlassSolution`` with the
    fields of ``kdtheory.problem.MULTICLASS_FIELDS`` (``init`` and ``quad`` are not used there).

    Parameters
    ----------
    problem : Problem
        Data (α, ρ, Δ), teacher (logistic λ̃ or Bayes) and student (λ, χ, T, η).
    init : Solution, optional
        A neighbouring solution to warm-start from (continuation along a grid).  If its data and
        teacher equal this problem's, its teacher is reused as is.
    tol : float
        Convergence threshold on the relative change of every order parameter in one step.
    max_iter : int
        Map evaluations allowed per fixed-point solve.
    strict : bool
        Raise ``ConvergenceError`` instead of returning ``converged=False``.
    quad : Quadrature
        Composite quadrature settings (``replica.quadrature``); ``quad.refined()`` doubles the order.
    """
    if isinstance(problem, Problem) and problem.multiclass:  # K classes: replica.multiclass
        from replica.multiclass import MulticlassSolution, solve_multiclass

        _check_arguments(problem, init, (MulticlassSolution,), tol, max_iter, quad, strict)
        out = solve_multiclass(problem, tol=tol, max_iter=max_iter)
        if strict and not out.converged:
            raise ConvergenceError(out.message, out)
        return out
    _check_arguments(problem, init, (Solution,), tol, max_iter, quad, strict)
    try:
        out = _solve(problem, init, tol, max_iter, quad)
        why = _runaway_bias(out)
        if why and init is not None:  # a warm start far off: once more from the cold start
            out = _with_iterations(_solve(problem, None, tol, max_iter, quad), out.iterations)
            why = _runaway_bias(out)
        if why:
            out = _failed(problem, out.teacher, "diverged", why, out.residual, quad, out.iterations)
    except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:  # no legal problem raises
        out = _numerical_failure(problem, exc, quad)
    if strict and not out.converged:
        raise ConvergenceError(out.message, out)
    return out


def _runaway_bias(sol: Solution | TeacherSolution, problem: Problem | None = None) -> str:
    """Why a converged solution is not a fixed point ("" if it is, or if it did not converge): a
    bias equation E[f] = 0 that fails where the loss is flat (``fixed_point.bias_capped``)."""
    if not sol.converged:
        return ""
    problem = sol.problem if problem is None else problem
    d = problem.data
    t = sol.teacher
    checks = []
    if isinstance(problem.teacher, LogisticTeacher):
        g = _LogisticTeacherMap(d, problem.teacher.lam, getattr(sol, "quad", DEFAULT_QUADRATURE))
        mom = g.moments(np.array([t.m, t.q, t.V, t.b]))
        checks.append(("teacher", t.b, t.q, d.alpha * d.delta * mom[T_F], t.V_hat))
    if isinstance(sol, Solution):
        s = sol.student
        mom = StudentMap(problem, t, sol.quad).moments(s.vector())
        checks.append(("student", s.b, s.q, d.alpha * d.delta * mom[S_F], s.V_hat))
    for who, b, q, g_b, v_hat in checks:
        if bias_capped(g_b, v_hat, d.delta * q):
            return (
                f"the {who}'s bias ran away: b = {b:.3g} with αΔE[f] = {g_b:.3g} ≠ 0 and "
                f"V̂ = {v_hat:.3g} (the loss is flat where the fields are), not a fixed point"
            )
    return ""


def _check_arguments(problem, init, init_types, tol, max_iter, quad, strict) -> None:
    """ValueError naming the argument and its allowed values (shared by solve and solve_teacher)."""
    check_instance("problem", problem, Problem)
    if init is not None:
        check_instance("init", init, init_types)
    check_real("tol", tol, 0.0, math.inf, True, True)
    check_integer("max_iter", max_iter, 1)
    check_instance("quad", quad, Quadrature)
    check_instance("strict", strict, bool)


def _solve(problem, init, tol, max_iter, quad) -> Solution:
    same_teacher = (
        init is not None
        and init.problem.data == problem.data
        and init.problem.teacher == problem.teacher
        and init.quad == quad
        and init.teacher.q == init.teacher.q  # not NaN
    )
    if same_teacher:
        t_sol = TeacherSolution(init.teacher, True, 0.0, 0, "converged")
    else:
        start = None if init is None else init.teacher
        t_sol = solve_teacher_state(
            problem.data, problem.teacher, init=start, tol=0.1 * tol, max_iter=max_iter, quad=quad
        )
    if not t_sol.converged:
        out = _failed(problem, t_sol.teacher, t_sol.status, t_sol.message, t_sol.residual, quad)
        out = _with_iterations(out, t_sol.iterations)
    else:
        out = _solve_student(problem, t_sol, init, tol, max_iter, quad)
    return out


def _solve_student(problem, t_sol, init, tol, max_iter, quad) -> Solution:
    st, teacher = problem.student, t_sol.teacher
    if st.lam == 0.0:
        refusal = _refuse_zero_ridge(problem)
        if refusal:
            status, message = refusal
            return _failed(problem, teacher, status, message, math.inf, quad, t_sol.iterations)

    def solve_at(
        lam: float, x0: np.ndarray | None, jacobian=None, temperature: float | None = None
    ) -> FixedPointResult:
        """Newton on the coarse rule's exact Jacobian from x0 (a neighbour's state, or the cold
        start; Anderson first, then Newton, if that fails), then quasi-Newton on the full rule
        with the coarse Jacobian at the coarse fixed point (Newton on the full rule's own exact
        Jacobian, then Anderson, if that fails).  ``jacobian`` is not needed (the signature of
        ``continuation``); ``temperature``: solve the student at that T instead of its own (a
        continuation path)."""
        temperature = st.temperature if temperature is None else temperature
        p = problem
        if (lam, temperature) != (st.lam, st.temperature):
            p = problem.replace(lam=lam, temperature=temperature)
        fine = student_map(p, teacher, quad)
        coarse = student_map(p, teacher, quad.coarse())
        x0 = initial(coarse, lam) if x0 is None else x0
        near_tol = max(tol, _COARSE_TOL)
        near = _newton_or_anderson(coarse, x0, near_tol, max_iter)
        if near.status != "converged":
            # the coarse rule may be too rough to have a fixed point near the full rule's (soft
            # labels with a sharp step inside the bulk of h̃, as at label noise θ ≈ ½ and small T):
            # a few Newton steps on the full rule from x0, else leave it to continuation
            res = newton(
                lambda x: fine.equations(x, full=False)[:3],
                x0,
                tol=tol,
                valid=valid,
                max_iter=min(_FINE_NEWTON_ITER, max_iter),
            )
            if res.status == "converged":
                return replace(res, iterations=coarse.calls + fine.calls)
            return replace(near, iterations=coarse.calls + fine.calls)
        # the full rule, from the coarse fixed point with the coarse map's Jacobian there
        jac = near.jacobian
        if jac is None:  # (Anderson reached it)
            jac = coarse.equations(near.x, full=False)[2]
        res = FixedPointResult(near.x, math.inf, 0, "max_iter")
        if np.all(np.isfinite(jac)):
            res = polish(
                fine, near.x, tol=tol, jacobian=jac, valid=valid, max_iter=min(6, max_iter)
            )
        if res.status != "converged":
            res = newton(
                lambda x: fine.equations(x, full=False)[:3],
                near.x,
                tol=tol,
                valid=valid,
                max_iter=min(12, max_iter),
            )
        if res.status != "converged":
            res = iterate(fine, near.x, tol=tol, max_iter=max_iter, valid=valid)
        return replace(res, iterations=coarse.calls + fine.calls)

    x0 = jac0 = None
    if init is not None and init.student.q == init.student.q:
        x0, jac0 = init.student.vector(), init.jacobian
    res = solve_at(st.lam, x0, jac0)
    total = t_sol.iterations + res.iterations
    budget = _CONTINUATION_BUDGET * max_iter
    if res.status != "converged":  # continuation in the ridge
        res, extra = continuation(solve_at, st.lam, floor=_FLOOR, valid=valid, budget=budget)
        total += extra
    t_easy = min(max(st.temperature, 0.5), 2.0)
    if res.status != "converged" and st.temperature != t_easy:
        # continuation in the ridge and the temperature together: T moves log-linearly from
        # t_easy ∈ [0.5, 2] (smooth soft labels) to T while λ goes from max(1, 10λ) to λ
        lam0, lam1 = max(1.0, 10.0 * st.lam), max(st.lam, _FLOOR)

        def along(lam: float, x0: np.ndarray | None, jacobian=None) -> FixedPointResult:
            s = math.log(lam0 / lam) / math.log(lam0 / lam1) if lam > lam1 else 1.0
            temp = st.temperature if s >= 1.0 else t_easy * (st.temperature / t_easy) ** max(s, 0)
            return solve_at(lam, x0, jacobian, temperature=temp)

        res_t, extra = continuation(
            along, st.lam, start=lam0, floor=_FLOOR, valid=valid, budget=budget
        )
        total += extra
        if res_t.status == "converged":
            res = res_t
        elif res_t.note:
            res.note += f"; with T from {t_easy:g} as well: {res_t.note}"
    conv = res.status == "converged"
    if not conv:
        status = res.status
        msg = f"student did not converge ({describe(res, tol)})"
        d = problem.data
        a_c = mixture_threshold(d, st.eta)
        if st.chi < 1.0 and d.alpha <= a_c:
            what = (
                "χ = 0 is plain logistic regression on" if st.chi == 0.0 else "the label term sees"
            )
            msg += (
                f"; {what} a linearly separable training set (alpha = {d.alpha:g} ≤ α_c = "
                f"{a_c:.6g}), which drives q up as λ → 0: λ = {st.lam:g} may be out of reach"
            )
        if np.all(np.isfinite(res.x)) and res.x[1] >= 0 and res.x[3] > 0:
            g = student_map(problem, teacher, quad)
            v_hat = g.hats(g.moments(res.x))[2]
            if v_hat < 1e-10 * (1.0 + st.lam):
                status, msg = "singular", f"{msg}; {_flat_reason(problem, v_hat)}"
        return _failed(problem, teacher, status, msg, res.residual, quad, total, x=res.x)
    state = student_map(problem, teacher, quad).state(res.x)
    return Solution(
        problem, teacher, state, True, max(res.residual, t_sol.residual), total, "converged",
        "", quad, res.jacobian,
    )  # fmt: skip


def _newton_or_anderson(g: StudentMap, x0: np.ndarray, tol: float, max_iter: int):
    """Newton on g's exact Jacobian from x0; if it fails, Anderson to the far-field tolerance
    1e-3 and Newton again; if that fails too, Anderson to ``tol``."""
    eq = lambda x: g.equations(x, full=False)[:3]  # noqa: E731
    res = newton(eq, x0, tol=tol, valid=valid, max_iter=min(_NEWTON_ITER, max_iter))
    if res.status == "converged":
        return res
    far = iterate(g, x0, tol=max(tol, 1e-3), max_iter=max_iter, valid=valid)
    if far.status == "converged":
        res = newton(eq, far.x, tol=tol, valid=valid, max_iter=min(_NEWTON_ITER, max_iter))
        if res.status == "converged":
            return res
        return iterate(g, far.x, tol=tol, max_iter=max_iter, valid=valid)
    return far


#: the coarse rule's fixed point is solved to this tolerance before the full rule takes over
#: (their fixed points differ by the coarse rule's error, ≈ 1e-5, so more is not needed)
_COARSE_TOL = 1e-8
#: Newton steps before falling back to Anderson
_NEWTON_ITER = 30
#: Newton steps on the full rule where the coarse rule failed
_FINE_NEWTON_ITER = 8
#: map evaluations one continuation may spend, in units of ``max_iter``
_CONTINUATION_BUDGET = 10
#: the smallest ridge of a continuation towards λ = 0
_FLOOR = 1e-6


def _flat_reason(problem: Problem, v_hat: float) -> str:
    """Why the student's loss has no curvature left (V̂ ≈ 0): the bias equation is singular."""
    st = problem.student
    head = f"the student's loss is numerically flat there (V̂ = {v_hat:.1e}), so its bias is undetermined: "
    labels = (
        "the training margins y·h of the label term are so large that the logistic's curvature "
        "underflows (the training set is nearly separable at this ridge)"
    )
    soft = (
        f"the soft labels sig(h̃/T) saturate at 0 or 1 (T = {st.temperature:g} is too small for "
        "this teacher's outputs)"
    )
    if st.chi == 0.0:
        return head + "χ = 0 is plain logistic regression on the labels, and " + labels
    if st.chi == 1.0:
        return head + soft
    return head + soft + ", and " + labels


def _refuse_zero_ridge(problem: Problem) -> tuple[str, str] | None:
    d, st = problem.data, problem.student
    if st.chi == 0.0:
        a_c = mixture_threshold(d, st.eta)
        if d.alpha <= a_c:
            return "unbounded", (
                f"Student.lam = 0 with chi = 0 and alpha = {d.alpha:g} ≤ α_c = {a_c:.6g} (η = "
                f"{st.eta:g}, θ = {d.flip:g}): the training set is linearly separable and the norm "
                "diverges; use lam > 0"
            )
    elif d.alpha <= st.eta:
        return "singular", (
            f"Student.lam = 0 with chi > 0 and alpha = {d.alpha:g} ≤ eta = {st.eta:g}: the student "
            "interpolates its targets and V diverges; use lam > 0 (the λ → 0⁺ limit by continuation)"
        )
    return None


def _numerical_failure(problem: Problem, exc: Exception, quad: Quadrature) -> Solution:
    """A Solution for a numerical exception inside the solver (status "diverged")."""
    nan = math.nan
    teacher = TeacherState(nan, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    message = f"numerical failure inside the solver: {type(exc).__name__}: {exc}"
    return _failed(problem, teacher, "diverged", message, math.inf, quad)


def _nan_student() -> StudentState:
    return StudentState(*([math.nan] * 14))


def _failed(problem, teacher, status, message, residual, quad, iterations=0, x=None) -> Solution:
    student = _nan_student()
    if x is not None:  # keep the last iterate for diagnosis; metrics stay NaN
        student = StudentState(*[float(v) for v in x[[0, 1, 5, 2, 3, 4]]], *([math.nan] * 8))
    return Solution(problem, teacher, student, False, residual, iterations, status, message, quad)


def _with_iterations(sol: Solution, n: int) -> Solution:
    return replace(sol, iterations=n)


def bayes_error(data: GaussianMixture, eta: float = 1.0) -> float:
    r"""Bayes-optimal test error: ε = ρΦ(−(m̃ + b̃)/√(Δq̃)) + (1 − ρ)Φ(−(m̃ − b̃)/√(Δq̃)) with
    m̃ = cα, q̃ = c²α(α + Δ), b̃ = log(ρ/(1 − ρ)), c = 2/(Δ(Δ + α)).

    With ``eta`` < 1: the Bayes error of an estimator that sees only ηN of the features (the bound
    for a sparse student).  Those features form the same mixture with α/η samples per feature and
    noise Δ/η (rescale x_S by 1/√η so the signal has unit norm per feature).

    The label noise θ = ``data.flip`` is ignored: this is the Bayes error with clean training
    labels, a lower bound on the test error of any estimator trained on labels flipped with
    probability θ > 0 (whose own Bayes-optimal predictor has no closed form here).
    """
    check_instance("data", data, GaussianMixture)
    refuse_covariance(data, "the Bayes error (no prior on v is defined by a Spectrum)")
    eta = check_real("eta", eta, 0.0, 1.0, True, False)
    return bayes_teacher_state(GaussianMixture(data.alpha / eta, data.rho, data.delta / eta)).eg


def agreement(solution: Solution) -> float:
    """Test-time probability that student and teacher predict the same label (NaN if the
    solution did not converge)."""
    check_instance("solution", solution, Solution)
    t, s = solution.teacher, solution.student
    if not solution.converged:
        return math.nan
    return solution.problem.data.agreement(s.m, s.q, s.b, t.m, t.q, t.b, s.r)

"""Random problems across the whole parameter box converge from a cold start (a regression fuzz).

The box: α ∈ [0.1, 10], ρ ∈ [0.02, 0.98], Δ ∈ [0.1, 5], λ, λ̃ ∈ [1e-3, 10] (log-uniform), χ ∈ {0, 1,
U(0, 1)}, T ∈ [0.05, 20], η ∈ [0.05, 1], 30 % Bayes teachers.  (A 400-point run of this fuzz found
one failure, correctly reported: soft labels saturated at sig(−60) by T = 0.058 make the loss flat.)
"""

import math

import numpy as np
import pytest
from scipy.special import ndtr

import replica
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from replica.fixed_point import residual
from replica.student import StudentMap


def random_problems(n: int, seed: int):
    rng = np.random.default_rng(seed)
    logu = lambda lo, hi: math.exp(rng.uniform(math.log(lo), math.log(hi)))  # noqa: E731
    for _ in range(n):
        data = GaussianMixture(logu(0.1, 10), rng.uniform(0.02, 0.98), logu(0.1, 5))
        teacher = BayesTeacher() if rng.random() < 0.3 else LogisticTeacher(logu(1e-3, 10))
        chi = float(rng.choice([0.0, 1.0, rng.uniform()]))
        yield Problem(data, teacher, Student(logu(1e-3, 10), chi, logu(0.05, 20), logu(0.05, 1)))


def test_random_problems_converge_to_true_fixed_points():
    for p in random_problems(60, seed=7):
        sol = replica.solve(p)
        assert sol.converged, (p.params, sol.message)
        g = StudentMap(p, sol.teacher, sol.quad)
        x = sol.student.vector()
        assert residual(x, g(x)) <= 1e-9, p.params  # re-evaluated outside the solver
        assert (
            0.0 <= sol.student.eg <= 1.0
            and sol.student.q >= sol.student.r**2 / sol.teacher.q - 1e-9
        )


# The hardest corners of ``benchmarks/robustness.py`` (its corner-heavy fuzz), solved in-process.
# pyproject turns RuntimeWarnings from replica and kdtheory into errors, so these also check that
# none leaks.
G, L, S = GaussianMixture, LogisticTeacher, Student
CORNERS = [
    # q = 0: soft labels sig(h̃/T) are 0 to double precision, so w = 0 and ε_g = ρ (the constant −1)
    (Problem(G(2.0, 1e-4, 1.0), L(0.1), S(0.05, 1.0, 1e-3, 0.5)), "converged", ""),
    # ρ = 1e-4 with a huge ridge: E[f̃] cancels between the classes at a spread √(Δq̃) ~ 1e-7
    (Problem(G(7.19, 1e-4, 1e-3), L(1e3), S(1e-6, 0.0, 1e3, 1e-3)), "converged", ""),
    # λ = 0 with saturated soft labels and separated clusters: no curvature left
    (
        Problem(G(637.9, 0.2885, 0.001268), L(0.0021), S(0.0, 0.4686, 0.1232, 0.967)),
        "singular",
        "soft labels sig(h̃/T) saturate",
    ),
    (Problem(G(1e-3, 1e-4, 1e3), L(0.0), S(0.0, 1.0, 1e-3, 1e-3)), "unbounded", "α_c(ρ, Δ, θ) ="),
    (Problem(G(1e-3, 0.5, 1.0), BayesTeacher(), S(0.0, 0.5, 1e3, 1.0)), "singular", "interpolates"),
]


@pytest.mark.parametrize(("problem", "status", "reason"), CORNERS)
def test_corner_problems_solve_or_say_why(problem, status, reason):
    sol = replica.solve(problem)
    assert sol.status == status, sol.message
    assert reason in sol.message
    if status == "converged":
        assert 0.0 <= sol.student.eg <= 1.0 and math.isfinite(replica.agreement(sol))


def test_near_separable_teacher_converges_or_names_rounding_noise():
    # λ̃ = 1.5e-6 at α = 3.26 < α_c = 36.5: the plain teacher iteration cycles until its mixing is
    # damped, and its residual floor is close to tol (the fuzz's corner problem 60, exact values)
    p = Problem(
        G(3.256888483103029, 0.004338209836379525, 1000.0),
        L(1.4865405769224569e-06),
        S(0.1397180599219395, 0.1631013572054839, 889.9631665907915, 0.0043349964900019815),
    )
    sol = replica.solve(p)
    assert sol.converged or ("rounding noise" in sol.message and "separable" in sol.message)


def test_q_zero_corner_is_the_constant_classifier():
    # every training output of the teacher is ≈ −9.4 while T = 1e-3: the soft labels are exactly 0,
    # the student keeps w = 0 and predicts −1 everywhere, wrong exactly on the positive class (ρ)
    p, _, _ = CORNERS[0]
    sol = replica.solve(p)
    assert sol.student.q == 0.0 and sol.student.b < 0.0
    assert sol.student.eg == p.data.rho
    # agreement with a constant −1 = P(h̃ < 0) = Σ_y P(y) Φ(−(y m̃ + b̃)/√(Δq̃))
    t, d = sol.teacher, p.data
    s = math.sqrt(d.delta * t.q)
    below = d.rho * ndtr(-(t.m + t.b) / s) + (1 - d.rho) * ndtr(-(-t.m + t.b) / s)
    assert replica.agreement(sol) == pytest.approx(below, rel=1e-14)  # the same Φ, two routes


def test_flat_loss_message_names_the_true_reason():
    from replica.solver import _flat_reason

    p, _, _ = CORNERS[2]
    plain = _flat_reason(p.replace(chi=0.0), 1e-20)
    assert "χ = 0 is plain logistic regression on the labels" in plain and "soft" not in plain
    assert "label term" not in _flat_reason(p.replace(chi=1.0), 1e-20)
    mixed = _flat_reason(p, 1e-20)
    assert "soft labels" in mixed and "label term" in mixed


def test_bad_arguments_name_the_argument():
    p = CORNERS[1][0]
    for kw, name in [
        ({"tol": "1e-3"}, "tol must be a real number"),
        ({"tol": -1.0}, "tol must be in"),
        ({"max_iter": 1.5}, "max_iter must be an integer"),
        ({"max_iter": 0}, "max_iter must be in"),
        ({"init": "x"}, "init must be a Solution"),
        ({"quad": 3}, "quad must be a Quadrature"),
        ({"strict": 1}, "strict must be a bool"),
    ]:
        with pytest.raises(ValueError, match=name):
            replica.solve(p, **kw)
        with pytest.raises(
            ValueError, match=name.replace("Solution", "Solution or TeacherSolution")
        ):
            replica.solve_teacher(p, **kw)
    with pytest.raises(ValueError, match=r"eta must be in \(0, 1\], got 0"):
        replica.bayes_error(p.data, 0)
    with pytest.raises(ValueError, match="data must be a GaussianMixture"):
        replica.bayes_error(p)
    with pytest.raises(ValueError, match="solution must be a Solution"):
        replica.agreement(p)
    for args, msg in [
        ((math.nan, 1.0), r"rho must be in \(0, 1\), got nan"),
        ((0.3, -1.0), r"delta must be in \(0, ∞\), got -1"),
        ((0.3, 1.0, 0.0), r"eta must be in \(0, 1\], got 0"),
        (("0.3", 1.0), "rho must be a real number"),
    ]:
        with pytest.raises(ValueError, match=msg):
            replica.separability_threshold(*args)


def test_bias_step_is_capped_and_never_warns():
    from replica.fixed_point import bias_step

    # the Newton step g/V̂ inside the trust region 1 + 3√(Δq); its sign when V̂ is 0 or tiny
    assert bias_step(0.5, 2.0, 0.0) == 0.25
    assert bias_step(-5.0, 0.0, 4.0) == -7.0 and bias_step(5.0, 1e-300, 0.0) == 1.0
    assert bias_step(0.0, 0.0, 1.0) == 0.0 and math.isnan(bias_step(math.nan, 1.0, 1.0))


def test_continuation_says_where_it_stalled():
    from replica.fixed_point import FixedPointResult, continuation, describe

    def solve_at(lam, x0, jacobian):  # a toy that has no fixed point below λ = 0.01
        status = "converged" if lam >= 0.01 else "max_iter"
        return FixedPointResult(np.array([lam]), 0.0 if lam >= 0.01 else 0.5, 3, status)

    res, total = continuation(solve_at, 1e-4, budget=100)
    assert res.status == "max_iter" and total > 3
    assert "stalled at 0.01" in res.note and "from 1 to 0.0001" in res.note
    assert describe(res, 1e-10).startswith("max_iter, residual 5.00e-01; the continuation")
    # a residual stuck just above tol is named as rounding noise
    assert "rounding noise" in describe(FixedPointResult(res.x, 3e-10, 9, "max_iter"), 1e-10)

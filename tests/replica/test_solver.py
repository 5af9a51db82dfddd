"""replica.solve as a user meets it: convergence reporting, warm starts, λ = 0, hard corners."""

import math

import numpy as np
import pytest
from scipy.optimize import linprog

import replica
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from replica.fixed_point import residual
from replica.student import StudentMap

P = Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05, 0.8, 1.0, 0.5))


def test_converged_solution_reports_residual_and_iterations():
    sol = replica.solve(P, tol=1e-10)
    assert sol.converged and sol.status == "converged" and sol.message == ""
    assert sol.residual <= 1e-10
    assert 0 < sol.iterations < 200


def test_unconverged_point_is_flagged_never_silently_returned():
    sol = replica.solve(P, max_iter=2)
    assert not sol.converged and sol.status != "converged"
    assert "did not converge" in sol.message and sol.residual > 1e-10
    assert math.isnan(sol.student.eg)  # no metric is reported for an unconverged point
    with pytest.raises(replica.ConvergenceError) as err:
        replica.solve(P, max_iter=2, strict=True)
    assert err.value.solution.status == sol.status


def test_warm_start_reuses_teacher_and_saves_iterations():
    cold = replica.solve(P.replace(lam=0.06))
    warm = replica.solve(P.replace(lam=0.06), init=replica.solve(P))
    assert warm.iterations < cold.iterations
    for f in ("m", "q", "r", "b", "V", "Vc"):  # same fixed point to the iteration tolerance
        assert getattr(warm.student, f) == pytest.approx(getattr(cold.student, f), rel=1e-8)


def test_separability_threshold():
    """Cover's α_c → 2 as Δ → ∞; α_c is symmetric in ρ ↔ 1 − ρ and grows as the classes separate."""
    assert replica.separability_threshold(0.5, 1e8) == pytest.approx(2.0, rel=1e-5)
    assert replica.separability_threshold(0.3, 1.0) == pytest.approx(
        replica.separability_threshold(0.7, 1.0)
    )
    assert 2 < replica.separability_threshold(0.5, 1.0) < replica.separability_threshold(0.5, 0.5)


@pytest.mark.parametrize(
    ("rho", "delta", "flip"), [(0.5, 1.0, 0.0), (0.3, 1.0, 0.0), (0.3, 1.0, 0.2)]
)
def test_separability_threshold_against_linear_programming(rho, delta, flip):
    """At N = 150, datasets at 0.75 α_c are separable and at 1.3 α_c are not (an LP decides); the
    finite-N transition has width O(1/√N) ≈ 0.1 α_c, so these margins are safe.  With label noise
    θ the LP sees the flipped labels ŷ."""
    a_c = replica.separability_threshold(rho, delta, flip=flip)
    rng = np.random.default_rng(3)
    n = 150
    for factor, expected in ((0.75, True), (1.3, False)):
        m = int(factor * a_c * n)
        v = rng.normal(size=n)
        y = np.where(rng.random(m) < rho, 1.0, -1.0)
        x = y[:, None] * v / math.sqrt(n) + math.sqrt(delta) * rng.normal(size=(m, n))
        y = np.where(rng.random(m) < flip, -y, y)  # the training labels ŷ
        a_ub = -(y[:, None] * np.hstack([x, np.ones((m, 1))]))
        lp = linprog(np.zeros(n + 1), A_ub=a_ub, b_ub=-np.ones(m), bounds=[(None, None)] * (n + 1))
        assert (lp.status == 0) == expected


def test_zero_ridge_below_separability_is_reported_unbounded():
    data = GaussianMixture(2.0, 0.3, 1.0)  # α_c(0.3, 1) ≈ 4.1 > 2
    t = replica.solve_teacher(Problem(data, LogisticTeacher(0.0)))
    assert t.status == "unbounded" and not t.converged and "separable" in t.message
    sol = replica.solve(Problem(data, LogisticTeacher(0.0), Student(0.1)))
    assert sol.status == "unbounded" and "α_c" in sol.message
    with pytest.raises(replica.ConvergenceError):
        replica.solve(Problem(data, LogisticTeacher(0.0), Student(0.1)), strict=True)
    no_kd = replica.solve(Problem(data, BayesTeacher(), Student(0.0, chi=0.0)))
    assert no_kd.status == "unbounded"
    interpolating = replica.solve(
        Problem(GaussianMixture(0.4), BayesTeacher(), Student(0.0, 1.0, 1.0, 0.5))
    )
    assert interpolating.status == "singular" and "eta" in interpolating.message


def test_zero_ridge_above_separability_is_the_small_ridge_limit():
    """α = 6 > α_c(0.5, 1) ≈ 3.7: λ̃ = 0 has a finite solution, the limit of λ̃ → 0⁺ (O(λ̃) apart)."""
    data = GaussianMixture(6.0, 0.5, 1.0)
    zero = replica.solve_teacher(Problem(data, LogisticTeacher(0.0)))
    small = replica.solve_teacher(Problem(data, LogisticTeacher(1e-7)))
    assert zero.converged and small.converged
    assert zero.teacher.q == pytest.approx(small.teacher.q, rel=1e-4)
    assert zero.teacher.eg == pytest.approx(small.teacher.eg, abs=1e-6)
    student = replica.solve(Problem(data, LogisticTeacher(0.0), Student(0.0, 0.5, 2.0, 1.0)))
    assert student.converged  # χ > 0 and α > η: a finite λ = 0 student


@pytest.mark.parametrize(
    "student",
    [
        Student(0.1, 0.5, 0.05, 1.0),
        Student(0.1, 1.0, 20.0, 1.0),
        Student(0.05, 0.0, 1.0, 1.0),
        Student(0.05, 1.0, 1.0, 1.0),
        Student(0.1, 0.7, 2.0, 0.05),
        Student(0.003, 0.5, 1.0, 1.0),
    ],
    ids=["T=0.05", "T=20", "chi=0", "chi=1", "eta=0.05", "lam=0.003"],
)
@pytest.mark.parametrize("rho", [0.02, 0.3])
def test_hard_corners_converge(student, rho):
    """The corners named in the issue (T ∈ [0.05, 20], χ ∈ {0, 1}, η ≥ 0.05, ρ ∈ [0.02, 0.98],
    small λ) converge from a cold start, with a logistic teacher at small ridge."""
    p = Problem(GaussianMixture(2.0, rho, 1.0), LogisticTeacher(0.01), student)
    sol, mirror = replica.solve(p), replica.solve(p.replace(rho=1 - rho))
    assert sol.converged and mirror.converged, sol.message + mirror.message
    # the returned state is a fixed point of the map, re-evaluated independently of the solver
    g = StudentMap(p, sol.teacher, sol.quad)
    x = sol.student.vector()
    assert residual(x, g(x)) <= 1e-9
    # ρ ↔ 1 − ρ mirrors the problem: same error, opposite bias (1e-8: two independent solves)
    assert mirror.student.eg == pytest.approx(sol.student.eg, abs=1e-8)
    assert mirror.student.b == pytest.approx(-sol.student.b, rel=1e-7, abs=1e-8)


def test_bad_arguments():
    with pytest.raises(ValueError, match="problem must be a Problem"):
        replica.solve("not a problem")
    with pytest.raises(ValueError, match="tol"):
        replica.solve(P, tol=0)
    with pytest.raises(ValueError, match="max_iter"):
        replica.solve(P, max_iter=0)
    from replica.quadrature import Quadrature

    with pytest.raises(ValueError, match=r"Quadrature\.order"):
        Quadrature(order=1)

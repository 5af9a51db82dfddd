"""The exact identities and closed forms of docs/theory.md, checked on the replica solver."""

import math

import numpy as np
import pytest
from scipy.special import ndtr

import replica
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from replica.quadrature import Quadrature

FINE = Quadrature(
    order=12
)  # doubled order: quadrature error ≪ 1e-10, so identities are tested at 1e-9

POINTS = [(2.0, 0.3, 1.0, 0.1), (0.7, 0.5, 0.5, 0.03), (3.0, 0.1, 2.0, 1.0), (1.5, 0.8, 1.0, 0.01)]


@pytest.mark.parametrize(("alpha", "rho", "delta", "lam"), POINTS)
def test_no_kd_student_equals_its_teacher(alpha, rho, delta, lam):
    """χ = 0, η = 1, λ̃ = λ: the student solves the teacher's problem, so (m, q, b) agree and r = q."""
    p = Problem(
        GaussianMixture(alpha, rho, delta), LogisticTeacher(lam), Student(lam, 0.0, 1.3, 1.0)
    )
    sol = replica.solve(p, quad=FINE)
    t, s = sol.teacher, sol.student
    assert sol.converged
    # 1-D teacher and 2-D student rules differ only by quadrature error (≤ 1e-10 at order 12)
    for a, b in ((s.m, t.m), (s.q, t.q), (s.b, t.b), (s.r, t.q), (s.V, t.V)):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9)
    assert abs(s.Vc) < 1e-12  # no KD term: nothing couples the student to the teacher's weights
    # disagreement grows like the angle √(2(1 − c)), c = r/√(q q̃) = 1 − O(1e-12): ≈ 1e-6
    assert replica.agreement(sol) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("teacher", [LogisticTeacher(0.1), BayesTeacher()])
def test_pure_kd_at_unit_temperature_reproduces_the_teacher(teacher):
    """χ = 1, T = 1, η = 1, λ → 0⁺: h = h̃ is the unregularised optimum, so ε_g → ε̃_g and r → q̃.

    The approach is O(λ): the gap shrinks tenfold per decade of λ."""
    p = Problem(GaussianMixture(2.0, 0.3, 1.0), teacher, Student(1e-4, 1.0, 1.0, 1.0))
    gaps = []
    for lam in (1e-4, 1e-5):
        sol = replica.solve(p.replace(lam=lam))
        assert sol.converged
        gaps.append((sol.student.eg - sol.teacher.eg, sol.student.r - sol.teacher.q))
        assert abs(gaps[-1][0]) < 1e3 * lam  # |Δε_g| = O(λ), constant < 10³ at this point
        assert abs(gaps[-1][1]) < 1e3 * lam * sol.teacher.q
    assert abs(gaps[0][1] / gaps[1][1]) == pytest.approx(10.0, rel=0.05)  # linear in λ


def test_bayes_teacher_closed_form_from_the_posterior():
    """The Bayes teacher's error equals the error of the posterior-mean direction computed here
    independently: v̂·v/N → α/(Δ+α), ‖v̂‖²/N → α/(Δ+α), so its normalised overlap is √(α/(Δ+α)), and
    the optimal offset is b̃ = log(ρ/(1−ρ)) on the log-odds scale 2/(Δ(Δ+α))·√N‖v̂‖."""
    for alpha, rho, delta in ((2.0, 0.3, 1.0), (0.5, 0.5, 0.3), (4.0, 0.1, 2.0)):
        data = GaussianMixture(alpha, rho, delta)
        overlap = math.sqrt(alpha / (delta + alpha))
        # log-odds for class y: y·(2/Δ)·(x·v̂)/(√N) + b̃; x·v̂/√N | y ~ N(y·α/(Δ+α), Δ·α/(Δ+α))
        scale = 2.0 / (delta * (delta + alpha))
        mean = scale * alpha  # = (2/Δ)·α/(Δ+α)
        sd = scale * math.sqrt(delta * alpha * (alpha + delta))
        b = math.log(rho / (1 - rho))
        expected = rho * ndtr(-(mean + b) / sd) + (1 - rho) * ndtr(-(mean - b) / sd)
        assert replica.bayes_error(data) == pytest.approx(expected, rel=1e-13)
        assert mean / sd == pytest.approx(overlap / math.sqrt(delta), rel=1e-13)
        st = replica.solve_teacher(Problem(data, BayesTeacher())).teacher
        assert (st.m, st.q, st.b) == pytest.approx((mean, sd**2 / delta, b), rel=1e-13)


@pytest.mark.parametrize(
    ("alpha", "rho", "delta"), [(2.0, 0.3, 1.0), (1.0, 0.2, 0.5), (3.0, 0.1, 1.0)]
)
def test_nothing_beats_the_bayes_error(alpha, rho, delta):
    """Bayes-optimal is a lower bound for every estimator using the same data: logistic teachers at
    any λ̃ and KD students of any teacher."""
    data = GaussianMixture(alpha, rho, delta)
    bayes = replica.bayes_error(data)
    for lam_t in (0.003, 0.03, 0.3, 3.0, 30.0):
        assert replica.solve_teacher(Problem(data, LogisticTeacher(lam_t))).teacher.eg > bayes
    for teacher in (BayesTeacher(), LogisticTeacher(0.1)):
        for st in (
            Student(0.03, 1.0, 1.0, 1.0),
            Student(0.01, 0.5, 2.0, 1.0),
            Student(0.1, 1.0, 0.5, 0.5),
        ):
            sol = replica.solve(Problem(data, teacher, st))
            assert sol.converged and sol.student.eg > bayes


@pytest.mark.parametrize("teacher", [LogisticTeacher(0.2), BayesTeacher()])
def test_balanced_clusters_have_zero_bias(teacher):
    """ρ = 1/2: the problem is symmetric under (y, x) → (−y, −x), so b = b̃ = 0 (to rounding)."""
    p = Problem(GaussianMixture(1.5, 0.5, 0.8), teacher, Student(0.05, 0.6, 2.0, 0.5))
    sol = replica.solve(p)
    assert abs(sol.teacher.b) < 1e-12 and abs(sol.student.b) < 1e-12


def test_label_flip_symmetry():
    """ρ → 1 − ρ flips the sign of the biases and leaves every error and overlap unchanged."""
    p = Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05, 0.7, 1.5, 0.6))
    a, b = replica.solve(p), replica.solve(p.replace(rho=0.7))
    for f in ("eg", "m", "q", "r", "V", "Vc", "train_loss", "train_error"):
        assert getattr(a.student, f) == pytest.approx(getattr(b.student, f), rel=1e-9, abs=1e-12)
    assert a.student.b == pytest.approx(-b.student.b, rel=1e-9)
    assert a.teacher.b == pytest.approx(-b.teacher.b, rel=1e-9)


def test_theory_md_reference_figures():
    """The independent solver's figures quoted in docs/theory.md, Known phenomena (4 digits)."""
    g = GaussianMixture
    cases = [
        (Problem(g(2, 0.3, 1), BayesTeacher(), Student(0.03, 1.0, 1.0, 1.0)), 0.1803),
        (Problem(g(1, 0.2, 0.5), BayesTeacher(), Student(0.03, 0.5, 1.0, 1.0)), 0.1201),
        (Problem(g(3, 0.1, 1), BayesTeacher(), Student(0.03, 1.0, 1.0, 1.0)), 0.0842),
        (Problem(g(2, 0.3, 1), BayesTeacher(), Student(0.03, 1.0, 2.0, 0.5)), 0.2429),
        (Problem(g(2, 0.3, 1), BayesTeacher(), Student(0.3, 0.0, 1.0, 0.5)), 0.2448),
    ]
    for p, expected in cases:
        assert replica.solve(p).student.eg == pytest.approx(
            expected, abs=6e-5
        )  # quoted to 4 digits
    assert replica.bayes_error(g(2, 0.3, 1)) == pytest.approx(0.1785, abs=6e-5)
    teacher_errors = {0.03: 0.2171, 0.1: 0.2028, 0.3: 0.1967, 1.0: 0.2277}
    for lam_t, expected in teacher_errors.items():
        t = replica.solve_teacher(Problem(g(2, 0.3, 1), LogisticTeacher(lam_t))).teacher
        assert t.eg == pytest.approx(expected, abs=6e-5)


def test_error_and_agreement_are_probabilities():
    sol = replica.solve(
        Problem(GaussianMixture(1.0, 0.2, 1.0), LogisticTeacher(0.05), Student(0.02, 0.5, 3.0, 0.7))
    )
    assert 0 < sol.student.eg < 1 and 0 < sol.student.train_error < 1
    assert 0.5 < replica.agreement(sol) < 1.0
    assert np.isfinite([sol.student.train_loss, sol.teacher.train_loss]).all()

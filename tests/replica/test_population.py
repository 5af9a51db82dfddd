"""Population cross-entropy of the asymptotic teacher and student."""

import pytest

import replica
from kdtheory import GaussianMixture, LogisticTeacher, Problem, Student


def test_student_without_kd_at_the_teachers_ridge_has_the_teachers_loss():
    # χ = 0, η = 1, λ = λ̃: the student solves the teacher's problem, so (m, q, b) and CE agree
    p = Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.1, chi=0.0))
    loss = replica.population_loss(replica.solve(p, tol=1e-12))
    assert loss.student == pytest.approx(loss.teacher, rel=1e-8)  # fixed points to 1e-12


def test_population_loss_is_the_mixtures_cross_entropy_of_the_order_parameters():
    p = Problem(GaussianMixture(1.0, 0.5, 0.5), LogisticTeacher(0.05), Student(0.05, 0.7, 2.0))
    sol = replica.solve(p)
    s, data = sol.student, p.data
    assert replica.population_loss(sol).student == data.cross_entropy(s.m, s.q, s.b)
    # the logistic loss bounds the 0–1 error: log(1 + e^{−yh}) ≥ log 2 · 1[yh ≤ 0]
    assert replica.population_loss(sol).student >= 0.6931 * s.eg


def test_population_loss_refuses_other_objects():
    with pytest.raises(ValueError, match="solution must be a replica Solution"):
        replica.population_loss(object())

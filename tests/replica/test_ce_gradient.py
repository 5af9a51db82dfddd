"""The gradient of the population cross-entropy (``replica.gradient``'s ``ce``, ``ce_t``) and
``replica.optimise(objective="ce")``, against finite differences and a brute-force search."""

from __future__ import annotations

import math

import numpy as np
import pytest

import replica
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from replica.population import cross_entropy_partials

TOL = 1e-13


@pytest.mark.parametrize(
    ("data", "state"),
    [
        (GaussianMixture(2.0, 0.3, 1.0), (0.7, 0.9, -0.2)),  # s = √(Δq) < 1: Gauss–Hermite
        (GaussianMixture(2.0, 0.3, 1.0), (3.0, 12.0, 0.5)),  # s > 1: the panels
        (GaussianMixture(1.0, 0.6, 2.0), (40.0, 900.0, -3.0)),  # far out: s ≈ 42
    ],
)
def test_cross_entropy_partials_match_central_differences(data, state):
    m, q, b = state
    d = cross_entropy_partials(data, m, q, b)

    def ce(m=m, q=q, b=b, rho=data.rho, delta=data.delta):
        return float(GaussianMixture(data.alpha, rho, delta).cross_entropy(m, q, b))

    def central(name, z, h):  # Richardson: truncation O(h⁴) ≈ 1e-15; rounding 1e-16/h ≈ 1e-12
        f = lambda v: ce(**{name: v})  # noqa: E731
        d1, d2 = (f(z + h) - f(z - h)) / (2 * h), (f(z + h / 2) - f(z - h / 2)) / h
        return (4 * d2 - d1) / 3

    for name, z in (("m", m), ("q", q), ("b", b), ("rho", data.rho), ("delta", data.delta)):
        fd = central(name, z, 1e-3 * max(abs(z), 0.1))
        # 1e-8: the rules' error (≈ 1e-13) and the differences' rounding (≈ 1e-12) are far below
        assert d[name] == pytest.approx(fd, rel=1e-8, abs=1e-11), name


def test_cross_entropy_partials_refuse_q_zero():
    with pytest.raises(ValueError, match="q must be > 0"):
        cross_entropy_partials(GaussianMixture(2.0, 0.3, 1.0), 0.0, 0.0, 0.1)


POINTS = [
    Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05, 0.8, 1.5, 0.5)),
    Problem(
        GaussianMixture(2.0, 0.3, 1.0, flip=0.15),
        LogisticTeacher(0.1),
        Student(0.05, 0.8, 0.5, 0.9, tempered="teacher"),
    ),
    Problem(GaussianMixture(3.0, 0.2, 0.5), BayesTeacher(), Student(0.1, 0.5, 2.0, 0.8)),
]


def _ce(problem):
    sol = replica.solve(problem, tol=TOL)
    assert sol.converged
    loss = replica.population_loss(sol)
    return np.array([loss.student, loss.teacher])


@pytest.mark.parametrize("problem", POINTS)
def test_ce_gradient_matches_finite_differences_of_solve(problem):
    bayes = isinstance(problem.teacher, BayesTeacher)
    wrt = ["lam", "chi", "temperature", "eta", "alpha", "rho", "delta"]
    wrt += [] if bayes else ["lam_t"]
    grad = replica.gradient(replica.solve(problem, tol=TOL), wrt)
    for name in wrt:
        v = problem.params[name]
        h = 1e-4 * abs(v)
        f = lambda z, name=name: _ce(problem.replace(**{name: z}))  # noqa: E731
        d1 = (f(v + h) - f(v - h)) / (2 * h)
        d2 = (f(v + h / 2) - f(v - h / 2)) / h
        fd = (4 * d2 - d1) / 3  # Richardson: O(h⁴) ≈ 1e-16; the solver's noise 1e-13/h ≈ 1e-9
        exact = np.array([grad["ce"][name], grad["ce_t"][name]])
        # 1e-6 relative, 1e-8 absolute: the noise of the differences (≈ 1e-9) with a margin
        assert exact == pytest.approx(fd, rel=1e-6, abs=1e-8), name


def test_optimise_ce_finds_the_minimum_of_the_population_cross_entropy():
    p = Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.1, 0.8, 1.0, 0.5))
    res = replica.optimise(p, over=("lam",), objective="ce")
    assert res.objective == "ce" and res.success and not res.active
    assert res.value == pytest.approx(_ce(res.problem)[0], rel=1e-12)  # the value it reports
    assert res.eg == pytest.approx(res.solution.student.eg, rel=1e-12)
    lam = res.problem.student.lam
    # a minimum: CE at λ·(1 ± 1e-2) is not lower (CE is flat to second order, ≈ 1e-4·curvature)
    for z in (0.99 * lam, 1.01 * lam):
        assert _ce(p.replace(lam=z))[0] >= res.value - 1e-12
    # and the ε_g optimum is a different point (the two objectives differ)
    eg_opt = replica.optimise(p, over=("lam",), objective="eg")
    assert not math.isclose(eg_opt.problem.student.lam, lam, rel_tol=1e-3)

"""``replica.optimise`` against a brute-force grid refined by golden section."""

from __future__ import annotations

import math

import numpy as np
import pytest

import replica
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from replica.optimise import DEFAULT_BOUNDS

G = GaussianMixture(2.0, 0.3, 1.0)
LOG = ("lam", "temperature", "lam_t")


def _eg(problem, **theta):
    sol = replica.solve(problem.replace(**theta), tol=1e-12)
    assert sol.converged
    return sol.student.eg


def _golden(f, a, b, tol):
    """Golden-section search for a minimum of f on [a, b] to an interval of width tol."""
    r = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - r * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + r * (b - a)
            fd = f(d)
    return min(fc, fd)


def _brute_1d(problem, name, n=8):
    lo, hi = DEFAULT_BOUNDS[name]
    log = name in LOG
    to = (lambda z: math.exp(z)) if log else (lambda z: z)
    zs = np.linspace(math.log(lo), math.log(hi), n) if log else np.linspace(lo, hi, n)
    vals = [_eg(problem, **{name: to(z)}) for z in zs]
    i = int(np.argmin(vals))
    a, b = zs[max(i - 1, 0)], zs[min(i + 1, n - 1)]
    # 1e-5 of the bracket in z: ε_g is flat to second order at an interior minimum (error ~1e-10)
    return min(vals[i], _golden(lambda z: _eg(problem, **{name: to(z)}), a, b, 1e-5 * (b - a)))


CASES_1D = [
    (Problem(G, LogisticTeacher(0.1), Student(0.1, 0.5, 1.0, 0.5)), "lam"),
    (Problem(G, LogisticTeacher(1.0), Student(0.05, 0.5, 1.0, 1.0)), "chi"),
    (Problem(G, LogisticTeacher(0.1), Student(0.05, 0.7, 1.0, 0.5)), "temperature"),
    (Problem(G, BayesTeacher(), Student(0.1, 0.5, 2.0, 1.0)), "lam"),
    (Problem(GaussianMixture(3.0, 0.1, 1.0), BayesTeacher(), Student(0.03, 0.5, 1.0, 1.0)), "chi"),
]


@pytest.mark.parametrize(("problem", "name"), CASES_1D)
def test_optimise_matches_grid_and_golden_section(problem, name):
    res = replica.optimise(problem, (name,))
    best = _brute_1d(problem, name)
    # 1e-6 in ε_g (the goal); the optimiser must not be worse than the search by more
    assert res.eg <= best + 1e-6, (res.eg, best)
    assert res.eg >= best - 1e-6, (res.eg, best)  # nor better: both search the same box
    assert res.solves < 60  # (the grid + golden section spends ~50)


@pytest.mark.slow
def test_optimise_two_parameters_matches_nested_golden_section():
    problem = Problem(G, LogisticTeacher(0.3), Student(0.1, 0.5, 1.0, 0.5))
    res = replica.optimise(problem, ("lam", "chi"))

    def best_lam(chi):
        return _brute_1d(problem.replace(chi=chi), "lam", n=8)

    best = _golden(best_lam, 0.0, 1.0, 1e-4)
    best = min(best, best_lam(0.0), best_lam(1.0))
    assert abs(res.eg - best) <= 1e-6, (res.eg, best)


def test_optimum_at_a_bound_is_reported_active():
    # the Bayes teacher's student improves as λ → 0 at χ = 1 (table of docs/theory.md): λ sits at
    # its lower bound, with ∂ε_g/∂log λ > 0 there
    p = Problem(G, BayesTeacher(), Student(0.1, 1.0, 1.0, 1.0))
    res = replica.optimise(p, ("lam",), bounds={"lam": (0.01, 1.0)})
    assert res.active == {"lam": "lower"}
    assert res.problem.student.lam == pytest.approx(0.01, rel=1e-9)  # the bound, to rounding
    assert res.gradient_norm == 0.0  # no free parameter left


def test_optimise_refuses_bad_arguments():
    p = Problem(G, BayesTeacher(), Student(0.1, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="objective"):
        replica.optimise(p, ("lam",), objective="ce")
    with pytest.raises(ValueError, match="unknown parameter 'lambda'"):
        replica.optimise(p, ("lambda",))
    with pytest.raises(ValueError, match="lam_t is not a parameter of the Bayes teacher"):
        replica.optimise(p, ("lam_t",))
    with pytest.raises(ValueError, match="bounds must give"):
        replica.optimise(p, ("alpha",))
    with pytest.raises(ValueError, match=r"bounds\['lam'\]\[0\] must be in \(0"):
        replica.optimise(p, ("lam",), bounds={"lam": (0.0, 1.0)})
    with pytest.raises(ValueError, match="not in over: chi"):
        replica.optimise(p, ("lam",), bounds={"chi": (0.0, 1.0)})

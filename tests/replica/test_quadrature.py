"""Quadrature rules and the numba channel kernels against their numpy twin."""

import math

import numpy as np
import pytest

import replica
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from replica import reference as ref
from replica.quadrature import Quadrature, composite_rule
from replica.student import StudentMap


def _moment_errors(order):
    q = Quadrature(order=order)
    glx, glw = q.legendre()
    extra = np.array([-0.3, 0.01, 0.0101, 2.5, 99.0])  # arbitrary breakpoints, one outside [−L, L]
    xs, ws = np.empty(q.max_nodes()), np.empty(q.max_nodes())
    n = composite_rule(q.base(), extra, len(extra), glx, glw, xs, ws)
    xs, ws = xs[:n], ws[:n]
    exact = [0.0 if k % 2 else float(np.prod(np.arange(k - 1, 0, -2))) for k in range(7)]
    return np.array([abs(ws @ xs**k - e) / max(1.0, e) for k, e in enumerate(exact)])


def test_composite_rule_converges_geometrically_in_the_order():
    """E[ξ^k] = (k−1)!! (k even), 0 (k odd), k ≤ 6 (higher k feel the truncation at |ξ| = L = 8.3).

    Panels of width ≤ 2 with p Gauss–Legendre points: relative error ≲ 1e-6 at order 6
    (smooth expectations of the solver come out at ~1e-9, see the doubling test), ≤ 1e-11 at 12."""
    e6, e12 = _moment_errors(6), _moment_errors(12)
    assert e6.max() < 1e-6
    assert e12.max() < 1e-11
    assert e12.max() < 1e-3 * e6.max()


HARD = {
    "typical": Problem(
        GaussianMixture(2, 0.3, 1), LogisticTeacher(0.1), Student(0.05, 0.8, 1.0, 0.5)
    ),
    "small_lam": Problem(
        GaussianMixture(2, 0.3, 1), LogisticTeacher(0.003), Student(0.003, 0.5, 1.0, 1.0)
    ),
    "T=0.05": Problem(
        GaussianMixture(2, 0.3, 1), LogisticTeacher(0.1), Student(0.1, 0.5, 0.05, 1.0)
    ),
    "T=20": Problem(GaussianMixture(2, 0.3, 1), BayesTeacher(), Student(0.01, 1.0, 20.0, 1.0)),
    "rho=0.02": Problem(
        GaussianMixture(3, 0.02, 1), LogisticTeacher(0.1), Student(0.1, 0.5, 1.0, 1.0)
    ),
    "eta=0.05": Problem(GaussianMixture(2, 0.3, 1), BayesTeacher(), Student(0.1, 0.5, 2.0, 0.05)),
}


@pytest.mark.parametrize("name", list(HARD))
def test_order_doubling_changes_results_below_2e9(name):
    """The composite rule converges: doubling the points per panel (7 → 14) moves every order
    parameter and error by < 2e-9 relative to max(1, |value|) (measured ≤ 5e-10; the issue asks for
    1e-8), including at small λ, extreme T, ρ and η."""
    p = HARD[name]
    a, b = replica.solve(p), replica.solve(p, quad=Quadrature().refined())
    assert a.converged and b.converged
    for f in ("m", "q", "r", "b", "eg", "V", "Vc"):
        x, y = getattr(a.student, f), getattr(b.student, f)
        assert abs(x - y) <= 2e-9 * max(1.0, abs(y)), f
    assert abs(a.teacher.eg - b.teacher.eg) <= 2e-9


CASES = [
    Problem(GaussianMixture(2, 0.3, 1), LogisticTeacher(0.1), Student(0.05, 0.8, 1.0, 0.5)),
    Problem(GaussianMixture(1, 0.2, 0.5), BayesTeacher(), Student(0.1, 0.6, 2.0, 1.0)),
    Problem(GaussianMixture(3, 0.5, 2), LogisticTeacher(1.0), Student(0.3, 1.0, 0.7, 0.8)),
    # label noise: the fields centred on the cluster label, the losses on the flipped one
    Problem(GaussianMixture(2, 0.3, 1, 0.2), LogisticTeacher(0.1), Student(0.05, 0.8, 1.5, 0.5)),
    Problem(
        GaussianMixture(3, 0.5, 2, 0.1),
        LogisticTeacher(1.0),
        Student(0.3, 0.7, 0.7, 0.8, tempered="teacher"),
    ),
]


@pytest.mark.parametrize("p", CASES)
def test_student_kernel_matches_numpy_twin(p):
    """Every channel moment of the numba kernel (feature-aware composite rule, warm-started prox)
    equals the numpy twin's on a dense uniform tensor rule.  The states are off the fixed point (a
    perturbed solution) so that V_c, r and the shift all enter.  Tolerance 1e-8: the two rules'
    quadrature errors at these smooth points."""
    sol = replica.solve(p)
    x = sol.student.vector() * np.array([0.9, 1.1, 0.95, 1.2, 1.0, 1.1]) + np.array(
        [0, 0, 0, 0, 0.05, 0.02]
    )
    g = StudentMap(p, sol.teacher, Quadrature())
    rule = ref.gaussian_rule(40, 8)
    twin = ref.student_channel(p, sol.teacher, x, rule, rule)
    kernel = g.moments(x, metrics=True)
    # the six moments of the fixed point: both rules' quadrature error, ≤ 1e-8
    np.testing.assert_allclose(kernel[:6], twin[:6], rtol=0, atol=1e-8)
    # training loss and error: no breakpoints resolve their integrands (the error's is a smoothed
    # step in ξ̃), so the default rule gets them to ~1e-7 only (order 14 agrees with the twin to 1e-15)
    np.testing.assert_allclose(kernel[6:], twin[6:], rtol=0, atol=2e-7)
    # and the overlap update built on top of the moments
    np.testing.assert_allclose(g(x), ref.student_update(p, sol.teacher, x, twin), rtol=1e-7)


def test_cross_susceptibility_is_the_derivative_in_the_teacher_field():
    """V̂_c uses df/dω̃ at fixed ω (through h̃(ω̃) and the shift ΔV_c f̃): compare the analytic
    expectation with a central finite difference of f along ω̃ on the twin (step 1e-5: error ~1e-9)."""
    p = CASES[0]
    sol = replica.solve(p)
    t, (m, _q, _r, v, vc, b) = sol.teacher, sol.student.vector()
    d, st = p.data, p.student
    xi = np.linspace(-3, 3, 13)
    for y in (1.0, -1.0):
        om_t = y * t.m + t.b + math.sqrt(d.delta * t.q) * xi
        omega = y * m + b + 0.3 * xi[::-1]  # any ω: the derivative is at fixed ω

        def f_of(om_tilde, y=y, omega=omega):
            xt = (om_tilde - y * t.m - t.b) / math.sqrt(d.delta * t.q)
            ht, ft, _, _ = ref.teacher_nodes(p, t, y, xt)
            pt = 1 / (1 + np.exp(-ht / st.temperature))
            om = omega + d.delta * vc * ft
            h = ref.prox(y, pt, om, d.delta * v, st.chi, st.temperature)
            return (h - om) / (d.delta * v)

        e = 1e-5
        fd = (f_of(om_t + e) - f_of(om_t - e)) / (2 * e)
        ht, ft, dft, dht = ref.teacher_nodes(p, t, y, xi)
        pt = 1 / (1 + np.exp(-ht / st.temperature))
        kappa = -(st.chi / st.temperature**2) * pt * (1 - pt)
        om = omega + d.delta * vc * ft
        h = ref.prox(y, pt, om, d.delta * v, st.chi, st.temperature)
        _, d2 = ref.dloss(y, pt, h, st.chi, st.temperature)
        var = d.delta * v
        analytic = -d2 * (d.delta * vc * dft - var * kappa * dht) / (1 + var * d2) - kappa * dht
        np.testing.assert_allclose(analytic, fd, rtol=1e-6, atol=1e-9)

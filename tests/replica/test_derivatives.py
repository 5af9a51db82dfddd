"""The kernels' exact Jacobians against central finite differences of the maps on a fixed rule.

The quadrature places breakpoints where the state's feature points fall; moving the state moves
them, which would put kinks of O(quadrature error) inside a difference stencil.  Each difference
is therefore taken on the rule of the centre point (``freeze=True``), the map whose derivative the
kernels compute.
"""

from __future__ import annotations

import numpy as np
import pytest

import replica
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from replica.quadrature import DEFAULT_QUADRATURE
from replica.student import DIRECTIONS, StudentMap
from replica.teacher import TEACHER_DIRECTIONS, _LogisticTeacherMap

# A covering set: T ∈ {0.05, 1, 20}, χ ∈ {0, 0.5, 1}, ρ ∈ {0.05, 0.5}, η ∈ {0.1, 1}, both teachers
POINTS = [
    ((2.0, 0.3, 1.0), 0.1, (0.05, 0.8, 1.0, 0.5)),
    ((2.0, 0.5, 1.0), 0.1, (0.1, 0.5, 0.05, 1.0)),
    ((2.0, 0.05, 1.0), 0.3, (0.1, 1.0, 20.0, 0.1)),
    ((3.0, 0.05, 0.5), 1.0, (0.3, 0.0, 1.0, 1.0)),
    ((1.5, 0.5, 2.0), 0.03, (0.1, 1.0, 0.05, 0.1)),
    ((2.0, 0.3, 1.0), 0.1, (0.2, 0.5, 20.0, 1.0)),
    ((2.0, 0.3, 1.0), None, (0.03, 1.0, 1.0, 1.0)),
    ((2.0, 0.5, 0.5), None, (0.1, 0.0, 1.0, 0.1)),
    ((2.0, 0.05, 1.0), None, (0.1, 0.5, 0.05, 1.0)),
    ((3.0, 0.3, 1.0), None, (0.3, 1.0, 20.0, 0.1)),
    ((2.0, 0.5, 1.0), None, (0.05, 0.5, 1.0, 1.0)),
    ((1.0, 0.2, 0.5), 0.3, (0.1, 0.0, 20.0, 0.1)),
    # label noise θ and the teacher-only temperature
    ((2.0, 0.3, 1.0, 0.2), 0.1, (0.05, 0.8, 1.5, 0.5, "teacher")),
    ((2.0, 0.5, 1.0, 0.1), 0.3, (0.1, 1.0, 0.5, 1.0, "teacher")),
]

# Step: 3e-4 of the coordinate's scale (|z| for the positive q, V, parameters; max(|z|, 0.1) for
# m, r, V_c, b and the teacher's m̃, b̃, which may vanish),
# and Richardson's extrapolation of two central differences (error O(h⁴) ≈ 1e-14 of the scale
# even across the width-T features at T = 0.05), while the prox's own convergence noise
# (≈ 1e-13 of ω) divided by h stays ≤ 1e-8 of the row's scale.  At χ ∈ {0, 1} and θ = 0 (the
# edges of the domain) one-sided three-point differences with a third of the step, divided by T² if T > 1:
# at χ = 1 the label term's curvature (1 − χ)/4 competes with the KD term's χ/(4T²), so the map
# varies on a χ-scale of 1/T² there.
REL_STEP = 3e-4
#: upper ends of the bounded directions
_HI = {"chi": 1.0, "eta": 1.0, "flip": 1.0}


def _derivative(fun, z, k, name, hi=np.inf, temperature=1.0):
    h = REL_STEP * (max(abs(z[k]), 0.1) if name == "signed" else (abs(z[k]) or 1.0))
    lo_edge, hi_edge = z[k] - 2 * h < 0.0 and name in ("chi", "flip"), z[k] + 2 * h > hi
    if lo_edge or hi_edge:
        h /= 3.0 * max(1.0, temperature) ** 2

    def diff(h):
        e = np.zeros_like(z)
        e[k] = h
        if lo_edge:
            return (-3 * fun(z) + 4 * fun(z + e) - fun(z + 2 * e)) / (2 * h)
        if hi_edge:
            return (3 * fun(z) - 4 * fun(z - e) + fun(z - 2 * e)) / (2 * h)
        return (fun(z + e) - fun(z - e)) / (2 * h)

    return (4.0 * diff(h / 2) - diff(h)) / 3.0


def _check(jac, fd):
    # 1e-7 relative, with an absolute floor of 1e-8 of the row's largest derivative where a
    # derivative vanishes (the differences' noise there, see REL_STEP)
    scale = np.max(np.abs(fd), axis=1, keepdims=True)
    bad = np.abs(jac - fd) > 1e-7 * np.abs(fd) + 1e-8 * scale
    assert not bad.any(), (np.argwhere(bad), jac[bad], fd[bad])


def _problem(data, lam_t, st):
    teacher = BayesTeacher() if lam_t is None else LogisticTeacher(lam_t)
    return Problem(GaussianMixture(*data), teacher, Student(*st))


@pytest.mark.parametrize("data, lam_t, st", POINTS)
def test_student_jacobian_matches_finite_differences(data, lam_t, st):
    p = _problem(data, lam_t, st)
    sol = replica.solve(p)
    assert sol.converged
    g = StudentMap(p, sol.teacher, DEFAULT_QUADRATURE, every=True)  # (θ moves off 0)
    x = sol.student.vector()
    params = g.params.copy()
    g.equations(x)  # the rule of the centre point
    _, _, jac, _ = g.equations(x, params=params, freeze=True)
    z = np.concatenate([x, params])

    def fun(zz):
        return g.equations(zz[:6], params=zz[6:], freeze=True)[1]

    fd = np.empty_like(jac)
    for k, name in enumerate(DIRECTIONS):
        kind = "signed" if name in ("m", "r", "Vc", "b", "m_t", "b_t") else name
        fd[:, k] = _derivative(fun, z, k, kind, _HI.get(name, np.inf), p.student.temperature)
    _check(jac, fd)


@pytest.mark.parametrize(
    "data, lam",
    [
        ((2.0, 0.3, 1.0, 0.0), 0.1),
        ((3.0, 0.05, 0.5, 0.0), 1.0),
        ((1.5, 0.5, 2.0, 0.0), 0.01),
        ((2.0, 0.3, 1.0, 0.25), 0.1),
    ],
)
def test_teacher_jacobian_matches_finite_differences(data, lam):
    mixture = GaussianMixture(*data)
    t = replica.solve_teacher(Problem(mixture, LogisticTeacher(lam), Student(0.1))).teacher
    g = _LogisticTeacherMap(mixture, lam, DEFAULT_QUADRATURE, every=True)  # (θ moves off 0)
    x = np.array([t.m, t.q, t.V, t.b])
    _, _, jac, _ = g.equations(x)
    z = np.concatenate([x, [lam, *data]])

    def fun(zz):
        return g.equations(zz[:4], lam=zz[4], data=GaussianMixture(*zz[5:]), freeze=True)[1]

    fd = np.column_stack(
        [
            _derivative(fun, z, k, "signed" if n in ("m_t", "b_t") else n, _HI.get(n, np.inf))
            for k, n in enumerate(TEACHER_DIRECTIONS)
        ]
    )
    _check(jac, fd)


def test_fixed_point_equations_vanish_and_match_the_map():
    """F = G − x at the solution is ~0, and equations() and __call__ give the same G."""
    p = _problem((2.0, 0.3, 1.0), 0.1, (0.05, 0.8, 1.0, 0.5))
    sol = replica.solve(p, tol=1e-12)
    g = StudentMap(p, sol.teacher, DEFAULT_QUADRATURE)
    x = sol.student.vector()
    gx, f, _, _ = g.equations(x)
    # the solve's tolerance 1e-12 on the relative step, times the state's scale (≤ 10)
    assert np.max(np.abs(f)) < 1e-10
    np.testing.assert_allclose(gx[:5], g(x)[:5], rtol=1e-14)  # the same formulas, reordered

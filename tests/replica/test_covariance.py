"""replica with a generic covariance Σ (a ``Spectrum``): identities against the isotropic solver,
the spectral sums' derivatives, and the refusals.  Theory against finite N:
tests/test_covariance_vs_simulation.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import replica
import simulations
from kdtheory import GaussianMixture, LogisticTeacher, Problem, Spectrum, Student
from replica.quadrature import DEFAULT_QUADRATURE
from replica.separability import mixture_threshold, separability_threshold
from replica.spectral import student_prior, teacher_prior
from replica.student import DIRECTIONS, StudentMap
from replica.teacher import TEACHER_DIRECTIONS, _LogisticTeacherMap

TEACHER_FIELDS = ("m", "q", "b", "V", "m_hat", "q_hat", "V_hat", "eg", "train_loss", "train_error")
STUDENT_FIELDS = ("m", "q", "b", "r", "V", "Vc", "m_hat", "q_hat", "V_hat", "r_hat", "Vc_hat")
STUDENT_FIELDS += ("eg", "train_loss", "train_error")

# (α, ρ, Δ, θ), λ̃, Student: both temperature conventions, χ ∈ {0, ½, 0.8, 1}, θ ∈ {0, 0.1, 0.2}
FLAT = [
    ((2.0, 0.3, 0.7, 0.0), 0.1, Student(0.05, 0.8, 2.0)),
    ((1.5, 0.5, 1.3, 0.2), 0.01, Student(0.01, 1.0, 0.5, tempered="teacher")),
    ((4.0, 0.2, 1.0, 0.1), 0.3, Student(0.2, 0.5, 3.0)),
    ((0.8, 0.4, 2.0, 0.0), 1.0, Student(0.3, 0.0, 1.0)),
    ((3.0, 0.3, 0.5, 0.2), 0.05, Student(0.02, 0.7, 4.0, tempered="teacher")),
]


def _close(a, b, fields, rtol):
    for f in fields:
        x, y = getattr(a, f), getattr(b, f)
        assert abs(x - y) <= rtol * max(1.0, abs(y)), (f, x, y)


@pytest.mark.parametrize("data, lam_t, student", FLAT)
def test_flat_spectrum_reproduces_the_isotropic_solver(data, lam_t, student):
    """σ_i = Δ: the spectral sums are the isotropic closed form, whatever the projections as long
    as ⟨μ²⟩ = 1 (here all 1, and ±1 with μ² ∈ {½, 3/2}).  Both fixed points are solved to a
    residual of 1e-10 per step by Newton's iteration, so they agree to ~1e-10 of each value:
    1e-8 leaves room for the condition of the map."""
    alpha, rho, delta, flip = data
    iso = replica.solve(Problem(GaussianMixture(*data), LogisticTeacher(lam_t), student))
    assert iso.converged
    n = 10
    mus = [np.ones(n), np.sqrt(np.tile([0.5, 1.5], n // 2)) * np.tile([1, 1, -1, -1, 1], 2)]
    for mu in mus:
        d = GaussianMixture(alpha, rho, flip=flip, covariance=Spectrum(np.full(n, delta), mu))
        sol = replica.solve(Problem(d, LogisticTeacher(lam_t), student))
        assert sol.converged and sol.residual <= 1e-10
        _close(sol.teacher, iso.teacher, TEACHER_FIELDS, 1e-8)
        _close(sol.student, iso.student, STUDENT_FIELDS, 1e-8)


def test_rescaled_inputs_leave_the_errors_unchanged():
    """x → kx is v → kv, Σ → k²Σ; with the ridges λ → λk² the minimisers are w/k (the bias
    unchanged: λk²‖w/k‖² = λ‖w‖² and the fields are the same), so ε_g, b, m are the same and q = wᵀΣw/(NΔ) scales as 1/k² (Δ → k²Δ)."""
    sigma = np.r_[np.full(5, 2.0), np.full(5, 0.25)]
    mu = np.r_[np.full(5, 0.6), np.full(5, 1.3)]
    k = 1.7
    one = Spectrum(sigma, mu)
    two = Spectrum(k * k * sigma, k * mu)
    st = Student(0.05, 0.8, 2.0)
    a = replica.solve(Problem(GaussianMixture(2.0, 0.3, covariance=one), LogisticTeacher(0.1), st))
    b = replica.solve(
        Problem(
            GaussianMixture(2.0, 0.3, covariance=two),
            LogisticTeacher(0.1 * k**2),
            dataclasses.replace(st, lam=0.05 * k**2),
        )
    )
    assert a.converged and b.converged
    for role in ("teacher", "student"):
        x, y = getattr(a, role), getattr(b, role)
        for f in ("eg", "m", "b", "train_loss", "train_error"):
            assert getattr(y, f) == pytest.approx(getattr(x, f), rel=1e-8, abs=1e-10)  # as above
        assert y.q * k**2 == pytest.approx(x.q, rel=1e-8)


def _fd(fun, z, h):
    """Central difference with Richardson's extrapolation (error O(h⁴))."""
    out = []
    for k in range(z.size):
        e = np.zeros_like(z)
        e[k] = h * max(1.0, abs(z[k]))

        def d(t, e=e):
            return (fun(z + t * e) - fun(z - t * e)) / (2 * t * e[np.nonzero(e)[0][0]])

        out.append((4 * d(0.5) - d(1.0)) / 3)
    return np.column_stack(out)


def test_spectral_sums_partials_match_finite_differences():
    rng = np.random.default_rng(3)
    spec = Spectrum(rng.uniform(0.1, 3.0, 50), rng.normal(size=50))
    z = np.array([0.7, 0.4, 1.3, 0.05])
    _, jac = teacher_prior(spec, *z)
    fd = _fd(lambda t: teacher_prior(spec, *t)[0], z, 1e-4)
    assert np.allclose(jac, fd, rtol=1e-8, atol=1e-10)  # O(h⁴) ≈ 1e-16 and rounding/h ≈ 1e-12
    th = (0.6, 0.3, 0.9, 0.1)
    z = np.array([0.5, 0.2, 1.1, 0.15, 0.4, 0.03])
    _, jac = student_prior(spec, *z, th)
    fd = _fd(lambda t: student_prior(spec, *t, th)[0], z, 1e-4)
    assert np.allclose(jac, fd, rtol=1e-8, atol=1e-10)  # as above
    # at σ = Δ, μ = 1 the isotropic updates (η = 1), written out
    iso = Spectrum.isotropic(1.0, 3)
    m_h, q_h, v_h, r_h, vc_h, lam = z
    mt, qt, vt, lt = th
    a, at = lam + v_h, lt + vt
    nu, u = vc_h / at, m_h + vc_h * mt / at
    want = [
        u / a,
        (u * u + q_h + 2 * nu * r_h + nu * nu * qt) / a**2,
        (u * mt / at + (r_h + nu * qt) / at) / a,
        1 / a,
        vc_h / (a * at),
    ]
    assert np.allclose(student_prior(iso, *z, th)[0], want, rtol=1e-14)  # same arithmetic


def test_jacobians_with_a_covariance_match_finite_differences():
    """The maps' exact Jacobians in the state (what Newton uses) and in λ, α, ρ, χ, T, θ; the
    columns in Δ (not free: Δ = tr Σ/N) and, for the student, in the teacher's state (its hats
    are held fixed) are NaN by design."""
    spec = Spectrum(
        np.r_[np.full(4, 2.0), np.full(4, 0.5)], np.r_[np.full(4, 0.7), np.full(4, 1.2)]
    )
    data = GaussianMixture(2.0, 0.3, flip=0.1, covariance=spec)
    p = Problem(data, LogisticTeacher(0.1), Student(0.05, 0.8, 2.0))
    sol = replica.solve(p)
    assert sol.converged
    t = sol.teacher
    g = _LogisticTeacherMap(data, 0.1, DEFAULT_QUADRATURE)
    x = np.array([t.m, t.q, t.V, t.b])
    _, _, jac, _ = g.equations(x)
    fd = _fd(lambda z: g.equations(z, freeze=True)[1], x, 3e-4)
    # 1e-7 relative, floor 1e-8 of the row's scale: the prox's convergence noise over the step
    assert np.allclose(jac[:, :4], fd, rtol=1e-7, atol=1e-8 * np.abs(fd).max())
    assert np.all(np.isnan(jac[:, TEACHER_DIRECTIONS.index("delta")]))
    s = StudentMap(p, t, DEFAULT_QUADRATURE)
    x = sol.student.vector()
    s.equations(x)
    _, _, jac, _ = s.equations(x, freeze=True)
    params = s.params.copy()

    def fun(z):
        return s.equations(z[:6], params=np.r_[params[:9], z[6], params[10:]], freeze=True)[1]

    fd = _fd(fun, np.r_[x, params[9]], 3e-4)
    cols = [DIRECTIONS.index(k) for k in ("m", "q", "r", "V", "Vc", "b", "lam")]
    assert np.allclose(jac[:, cols], fd, rtol=1e-7, atol=1e-8 * np.abs(fd).max())  # as above
    for k in ("m_t", "q_t", "b_t", "V_t", "delta"):
        assert np.all(np.isnan(jac[:, DIRECTIONS.index(k)]))


def test_separability_of_a_covariance_is_that_of_the_whitened_mixture():
    """Σ^{-1/2}x is the isotropic mixture with Δ_eff = 1/⟨μ²/σ⟩; at λ = 0 without KD the solver
    refuses exactly below that threshold."""
    spec = Spectrum([4.0, 1.0, 0.25, 0.25], [1.0, 1.0, 0.5, 1.5])
    w = np.mean(np.array([1.0, 1.0, 0.25, 2.25]) / np.array([4.0, 1.0, 0.25, 0.25]))
    d = GaussianMixture(1.0, 0.3, flip=0.1, covariance=spec)
    a_c = mixture_threshold(d)
    assert a_c == separability_threshold(0.3, 1.0 / w, flip=0.1)
    below = replica.solve(
        Problem(dataclasses.replace(d, alpha=0.9 * a_c), LogisticTeacher(0.1), Student(0.0, 0.0))
    )
    assert below.status == "unbounded" and "α_c" in below.message


def test_separability_threshold_where_its_cost_underflows():
    """At Δ ≲ 1e-4 the capacity's cost underflows (the samples are separable at any α that
    fits in a float): α_c = ∞, not a division by zero or a negative number; it grows as Δ falls."""
    assert separability_threshold(0.3, 1e-4) == np.inf
    assert separability_threshold(0.3, 1e-6, flip=0.0) == np.inf
    a = [separability_threshold(0.3, d) for d in (1.0, 0.1, 0.01)]
    assert a[0] < a[1] < a[2] < np.inf


def test_refusals_with_a_covariance():
    d = GaussianMixture(2.0, 0.3, covariance=Spectrum.isotropic(1.0, 20))
    p = Problem(d, LogisticTeacher(0.1), Student(0.05, 0.8, 2.0))
    sol = replica.solve(p)
    with pytest.raises(ValueError, match=r"covariance must be None for replica\.gradient"):
        replica.gradient(sol)
    with pytest.raises(ValueError, match=r"covariance must be None for replica\.optimise"):
        replica.optimise(p)
    with pytest.raises(ValueError, match="covariance must be None for a self-distillation chain"):
        replica.solve_chain(d, LogisticTeacher(0.1), [Student(0.05)])
    with pytest.raises(ValueError, match="covariance must be None for a self-distillation chain"):
        simulations.run_chain(d, LogisticTeacher(0.1), [Student(0.05)], n=20, seeds=1)
    with pytest.raises(ValueError, match="covariance must be None for the Bayes error"):
        replica.bayes_error(d)
    with pytest.raises(ValueError, match="n must be the covariance's dimension N = 20"):
        simulations.run(p, n=30, seeds=1)

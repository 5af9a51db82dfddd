"""kdtheory.problem: validation messages and the closed-form test metrics."""

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.special import ndtr
from scipy.stats import norm

from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from kdtheory.problem import bivariate_normal_cdf


@pytest.mark.parametrize(
    ("make", "field", "allowed"),
    [
        (lambda: GaussianMixture(alpha=0.0), "alpha", "(0, ∞)"),
        (lambda: GaussianMixture(alpha=1.0, rho=1.0), "rho", "(0, 1)"),
        (lambda: GaussianMixture(alpha=1.0, delta=-1.0), "delta", "(0, ∞)"),
        (lambda: LogisticTeacher(lam=-0.1), "lam", "[0, ∞)"),
        (lambda: Student(lam=math.nan), "lam", "[0, ∞)"),
        (lambda: Student(lam=0.1, chi=1.5), "chi", "[0, 1]"),
        (lambda: Student(lam=0.1, temperature=0.0), "temperature", "(0, ∞)"),
        (lambda: Student(lam=0.1, eta=0.0), "eta", "(0, 1]"),
        (lambda: Student(lam="abc"), "lam", "[0, ∞)"),
    ],
)
def test_invalid_fields_name_the_field_and_range(make, field, allowed):
    with pytest.raises(ValueError) as err:
        make()
    assert f".{field} must" in str(err.value)
    assert allowed in str(err.value)


def test_problem_type_checked_and_replace():
    with pytest.raises(ValueError, match=r"Problem\.teacher"):
        Problem(data=GaussianMixture(1.0), teacher=Student(0.1), student=Student(0.1))
    p = Problem(GaussianMixture(2.0, 0.3, 0.5), LogisticTeacher(0.1), Student(0.05, 0.8, 2.0, 0.5))
    q = p.replace(alpha=3.0, lam_t=1.0, temperature=4.0)
    assert q.params == {**p.params, "alpha": 3.0, "lam_t": 1.0, "temperature": 4.0}
    with pytest.raises(ValueError, match="unknown parameter 'beta'"):
        p.replace(beta=1.0)
    with pytest.raises(ValueError, match="lam_t"):
        p.replace(lam_t=0.1).__class__(p.data, BayesTeacher(), p.student).replace(lam_t=1.0)
    with pytest.raises(ValueError, match=r"Student\.chi"):
        p.replace(chi=2.0)


def test_error_formula_matches_direct_integral():
    # ε_g = Σ_y P(y) P(y h < 0) with h | y ~ N(y m + b, Δ q); integrate the Gaussian directly.
    data = GaussianMixture(alpha=1.0, rho=0.3, delta=0.7)
    m, q, b = 0.8, 1.7, -0.4
    direct = 0.0
    for y, p in ((1, data.rho), (-1, 1 - data.rho)):
        mu, s = y * m + b, math.sqrt(data.delta * q)
        wrong = integrate.quad(
            lambda h, mu=mu, s=s, y=y: norm.pdf(h, mu, s) * (y * h < 0),
            mu - 40 * s,
            mu + 40 * s,
            points=[0.0],
            epsabs=1e-13,
        )[0]
        direct += p * wrong
    assert data.error(m, q, b) == pytest.approx(direct, abs=1e-10)  # quad's accuracy


def test_bivariate_cdf_against_quadrature():
    rng = np.random.default_rng(1)
    cases = [(0, 0, 0.3), (0, 1, 0.5), (1, 0, -0.4), (0.5, -0.7, -0.99), (2, 3, 0.9999)]
    cases += [(*rng.normal(size=2), rng.uniform(-1, 1)) for _ in range(20)]
    for h, k, c in cases:
        ref = integrate.quad(
            lambda t, k=k, c=c: norm.pdf(t) * ndtr((k - c * t) / math.sqrt(1 - c * c)),
            -np.inf,
            h,
            epsabs=1e-14,
            epsrel=1e-13,
        )[0]
        assert bivariate_normal_cdf(h, k, c) == pytest.approx(ref, abs=1e-12)  # quad's accuracy
    assert bivariate_normal_cdf(0.3, -0.2, 1.0) == pytest.approx(ndtr(-0.2))
    assert bivariate_normal_cdf(0.3, -0.2, -1.0) == pytest.approx(ndtr(0.3) - ndtr(0.2))


def test_agreement_limits_and_monte_carlo():
    data = GaussianMixture(alpha=1.0, rho=0.3, delta=1.0)
    # identical classifiers agree always
    assert data.agreement(0.5, 1.2, 0.1, 0.5, 1.2, 0.1, 1.2) == pytest.approx(1.0, abs=1e-12)
    # against sampling the joint Gaussian (2e6 samples: sem ≈ 3e-4, tolerance 5 sem)
    m, q, b, mt, qt, bt, r = 0.6, 1.1, 0.2, 0.9, 1.5, -0.3, 0.7
    rng = np.random.default_rng(0)
    n = 2_000_000
    y = np.where(rng.random(n) < data.rho, 1.0, -1.0)
    cov = data.delta * np.array([[qt, r], [r, q]])
    z = rng.multivariate_normal([0, 0], cov, size=n)
    ht, h = y * mt + bt + z[:, 0], y * m + b + z[:, 1]
    mc = np.mean(np.sign(ht) == np.sign(h))
    assert data.agreement(m, q, b, mt, qt, bt, r) == pytest.approx(mc, abs=1.5e-3)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: GaussianMixture(alpha="2.0"), "GaussianMixture.alpha"),
        (lambda: GaussianMixture(alpha=2.0, rho=np.bool_(True)), "GaussianMixture.rho"),
        (lambda: Student(lam=0.1, chi=True), "Student.chi"),
        (lambda: Student(lam=None), "Student.lam"),
        (lambda: Student(lam=0.1, temperature=1 + 0j), "Student.temperature"),
        (lambda: LogisticTeacher(lam=True), "LogisticTeacher.lam"),
    ],
)
def test_non_numeric_fields_refused(make, field):
    with pytest.raises(ValueError, match=rf"{field} must be a real number in"):
        make()


def test_numeric_fields_accept_ints_and_numpy_reals():
    s = Student(np.float32(0.25), np.int64(1), 2, np.float64(0.5))
    assert (s.lam, s.chi, s.temperature, s.eta) == (0.25, 1.0, 2.0, 0.5)
    assert all(type(v) is float for v in (s.lam, s.chi, s.temperature, s.eta))


def test_string_fields_checked_against_choices():
    from dataclasses import dataclass
    from typing import ClassVar

    from kdtheory.problem import _Validated

    @dataclass(frozen=True)
    class Mode(_Validated):
        mode: str = "soft"
        _choices: ClassVar = {"mode": ("soft", "hard")}

    assert Mode("hard").mode == "hard"
    for bad in ("x", 1, None):
        with pytest.raises(ValueError, match=r"Mode\.mode must be one of 'soft', 'hard'"):
            Mode(bad)


def test_argument_checks_name_the_argument():
    from kdtheory.problem import check_instance, check_integer, check_real

    assert check_real("tol", 3) == 3.0 and check_integer("n", np.int64(2), 1) == 2
    with pytest.raises(ValueError, match=r"tol must be in \(0, ∞\), got 0"):
        check_real("tol", 0, 0.0, math.inf, True, True)
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, ∞\), got 1.5"):
        check_integer("n", 1.5, 1)
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 5\], got True"):
        check_integer("n", True, 1, 5)
    with pytest.raises(ValueError, match="flag must be a bool, got 1"):
        check_instance("flag", 1, bool)


def test_error_and_agreement_at_q_zero_are_the_constant_classifier_limits():
    # w = 0 (q = 0, hence m = 0): h = b, so ε_g = ρ 1[b < 0] + (1 − ρ) 1[b > 0] (½ at the tie b = 0)
    data = GaussianMixture(alpha=1.0, rho=0.3, delta=0.7)
    assert data.error(0.0, 0.0, -0.2) == 0.3
    assert data.error(0.0, 0.0, 0.2) == pytest.approx(0.7, abs=1e-15)  # 1 − ρ in floating point
    assert data.error(0.0, 0.0, 0.0) == 0.5
    # the limit is continuous: ε_g(m = 0, q → 0⁺, b) → the constant's error (5e-3: Φ(−b/√(Δq)))
    assert data.error(0.0, 1e-6, -0.2) == pytest.approx(0.3, abs=5e-3)
    np.testing.assert_array_equal(
        data.error(np.zeros(2), np.array([0.0, 0.0]), [-1, 1]), [0.3, 0.7]
    )
    # teacher h̃ | y ~ N(y m̃ + b̃, Δq̃), student the constant +1: agreement = Σ_y P(y) P(h̃ > 0 | y)
    m_t, q_t, b_t = 0.8, 1.2, -0.1
    s = math.sqrt(data.delta * q_t)
    expected = 0.3 * ndtr((m_t + b_t) / s) + 0.7 * ndtr((-m_t + b_t) / s)
    assert data.agreement(0.0, 0.0, 0.5, m_t, q_t, b_t, 0.0) == pytest.approx(expected, rel=1e-14)
    # a constant −1 agrees exactly where the teacher says −1
    assert data.agreement(0.0, 0.0, -0.5, m_t, q_t, b_t, 0.0) == pytest.approx(
        1 - expected, rel=1e-14
    )


def _cross_entropy_by_quad(data, m, q, b):
    """Σ_y P(y) ∫ log(1 + e^{−y h}) N(h; y m + b, Δq) dh by adaptive quadrature, split at the kink."""
    s, total = math.sqrt(data.delta * q), 0.0
    for y, p_y in ((1.0, data.rho), (-1.0, 1.0 - data.rho)):
        mu = y * m + b

        def f(z, mu=mu, y=y):
            return np.logaddexp(0.0, -y * (mu + s * z)) * norm.pdf(z)

        total += p_y * integrate.quad(f, -40, 40, points=[-mu / s], epsabs=1e-15, limit=500)[0]
    return total


@pytest.mark.parametrize(
    "m, q, b",
    [(0.5, 1.0, 0.1), (0.5, 0.99, -0.3), (0.5, 1.01, -0.3), (2.0, 5.0, -0.3), (10.0, 100.0, 1.0),
     (40.0, 2500.0, 0.0), (1e-3, 1e-6, 3.0)],
)  # fmt: skip
def test_cross_entropy_against_adaptive_quadrature(m, q, b):
    # both branches (√(Δq) ≤ 1: Gauss–Hermite; > 1: Legendre panels) and the switch at √(Δq) = 1
    data = GaussianMixture(alpha=2.0, rho=0.3, delta=1.0)
    ref = _cross_entropy_by_quad(data, m, q, b)
    assert data.cross_entropy(m, q, b) == pytest.approx(ref, rel=1e-12)  # both near rounding


def test_cross_entropy_against_monte_carlo():
    data = GaussianMixture(alpha=1.0, rho=0.3, delta=0.7)
    m, q, b = 1.3, 2.2, -0.4
    rng = np.random.default_rng(0)
    y = np.where(rng.random(400_000) < data.rho, 1.0, -1.0)
    h = y * m + b + math.sqrt(data.delta * q) * rng.standard_normal(y.size)
    loss = np.logaddexp(0.0, -y * h)
    sem = loss.std(ddof=1) / math.sqrt(loss.size)
    assert abs(data.cross_entropy(m, q, b) - loss.mean()) < 4 * sem  # 4 s.e.: fails ~1 in 16 000


def test_cross_entropy_at_q_zero_is_the_constant_classifier():
    data = GaussianMixture(alpha=1.0, rho=0.2, delta=2.0)
    b = np.array([-3.0, 0.0, 0.7, 30.0])
    closed = data.rho * np.log1p(np.exp(-b)) + (1 - data.rho) * np.log1p(np.exp(b))
    np.testing.assert_allclose(data.cross_entropy(0.0, 0.0, b), closed, rtol=1e-14)  # rounding


def test_cross_entropy_decreases_with_overlap_and_vectorises():
    # ∂CE/∂m = −Σ_y P(y) E sig(−y h) < 0: a larger overlap at fixed q, b lowers the loss
    data = GaussianMixture(alpha=1.0, rho=0.4, delta=1.0)
    m = np.linspace(0.0, 3.0, 31)
    ce = data.cross_entropy(m, 4.0, 0.2)
    assert ce.shape == m.shape and np.all(np.diff(ce) < 0)
    # vectorised and scalar calls may take different SIMD paths of numpy's exp/log: a few ulp
    assert ce[5] == pytest.approx(data.cross_entropy(m[5], 4.0, 0.2), rel=1e-14, abs=0)

"""K-class vocabulary: validation, value equality, the closed-form test error, the sweep fingerprint."""

import math

import numpy as np
import pytest

from kdtheory import (
    GaussianMixture,
    LogisticTeacher,
    MulticlassMixture,
    OracleTeacher,
    Problem,
    SoftmaxTeacher,
    Student,
)
from kdtheory.problem import _orthant, _orthant_qmc
from kdtheory.sweep import Axis, Sweep


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: MulticlassMixture(0.0, np.eye(3)), "alpha"),
        (lambda: MulticlassMixture(1.0, np.eye(3), delta=0.0), "delta"),
        (lambda: MulticlassMixture(1.0, np.eye(3), flip=1.5), "flip"),
        (lambda: MulticlassMixture(1.0, np.eye(1)), "gram"),
        (lambda: MulticlassMixture(1.0, [[1.0, 0.5], [0.4, 1.0]]), "gram"),
        (lambda: MulticlassMixture(1.0, [[1.0, 2.0], [2.0, 1.0]]), "gram"),
        (lambda: MulticlassMixture(1.0, np.eye(3), rho=[0.5, 0.5]), "rho"),
        (lambda: MulticlassMixture(1.0, np.eye(3), rho=[0.5, 0.6, -0.1]), "rho"),
        (lambda: SoftmaxTeacher(-1.0), "lam"),
    ],
)
def test_invalid_fields_name_the_field(make, field):
    with pytest.raises(ValueError, match=rf"\.{field} must"):
        make()


def test_problem_refuses_mixed_parts_and_eta():
    d = MulticlassMixture.orthogonal(2.0, 3)
    with pytest.raises(ValueError, match=r"Problem\.teacher"):
        Problem(d, LogisticTeacher(0.1), Student(0.1))
    with pytest.raises(ValueError, match=r"Problem\.teacher"):
        Problem(GaussianMixture(2.0), SoftmaxTeacher(0.1), Student(0.1))
    with pytest.raises(ValueError, match=r"Student\.eta"):
        Problem(d, SoftmaxTeacher(0.1), Student(0.1, eta=0.5))
    with pytest.raises(ValueError, match="lam_t"):
        Problem(d, OracleTeacher(), Student(0.1)).replace(lam_t=1.0)


def test_value_equality_hash_and_read_only():
    a = MulticlassMixture.simplex(2.0, 3, rho=[0.2, 0.3, 0.5])
    b = MulticlassMixture(2.0, np.array(a.gram), rho=(0.2, 0.3, 0.5))
    assert a == b and hash(a) == hash(b)
    assert a != MulticlassMixture.simplex(2.0, 3)
    with pytest.raises(ValueError):
        a.gram[0, 0] = 2.0
    assert {Problem(a, SoftmaxTeacher(0.1), Student(0.1))} == {
        Problem(b, SoftmaxTeacher(0.1), Student(0.1))
    }
    g = MulticlassMixture.two_close(1.0, 4, s=2.0, c=0.5).gram
    assert g[0, 1] == g[1, 0] == 1.0 and g[2, 2] == 2.0 and g[0, 2] == 0.0
    mu = np.random.default_rng(0).normal(size=(3, 7))
    assert np.allclose(MulticlassMixture.from_class_means(1.0, mu).gram, mu @ mu.T)


def test_two_class_simplex_error_is_the_binary_error():
    # K = 2, G = [[1, −1], [−1, 1]]: h₁ − h₂ = (w₁ − w₂)·x/√N + b₁ − b₂ is the binary field with
    # m = (M₁₁ − M₂₁), q = Q₁₁ + Q₂₂ − 2Q₁₂, ρ = ρ₁ (both closed forms: equal to rounding)
    d = MulticlassMixture.simplex(1.0, 2, rho=[0.3, 0.7], delta=0.7)
    w = np.array([[0.9, 0.2], [-0.4, 0.5]])  # two weight rows in the span of (v, u ⟂ v)
    v = np.array([[1.0, 0.0], [-1.0, 0.0]])  # centroids: v₂ = −v₁
    M, Q, b = w @ v.T, w @ w.T, np.array([0.3, -0.1])
    wd = w[0] - w[1]
    binary = GaussianMixture(1.0, 0.3, 0.7).error(wd[0], wd @ wd, b[0] - b[1])
    assert d.error(M, Q, b) == pytest.approx(binary, abs=1e-14)


def test_error_monte_carlo_and_qmc_agree_with_the_exact_K3():
    rng = np.random.default_rng(1)
    d = MulticlassMixture(1.0, [[1.0, 0.3, 0.0], [0.3, 1.5, 0.2], [0.0, 0.2, 0.8]],
                          rho=[0.2, 0.3, 0.5], delta=0.6)  # fmt: skip
    A = rng.normal(size=(3, 3))
    M, Q, b = A @ d.gram * 0.7, A @ A.T, np.array([0.2, -0.3, 0.1])
    exact = d.error(M, Q, b)
    # plain Monte Carlo on h | c ~ N(M[:, c] + b, ΔQ): within 4 s.e. (n = 4e5, s.e. ≈ 7e-4)
    n, mc = 400_000, 0.0
    L = np.linalg.cholesky(d.delta * Q)
    for c in range(3):
        h = M[:, c] + b + rng.normal(size=(n, 3)) @ L.T
        mc += d.rho[c] * np.mean(h.argmax(1) != c)
    assert abs(mc - exact) < 4 * math.sqrt(exact * (1 - exact) / n)
    # the QMC integrator (used for K > 3) on the K = 3 orthant probabilities: within 5 s.e. + 1e-6
    for c in range(3):
        D = np.eye(3)[c] - np.delete(np.eye(3), c, axis=0)
        mean, cov = D @ (M[:, c] + b), d.delta * D @ Q @ D.T
        p, _ = _orthant(mean, cov, 0)
        pq, var = _orthant_qmc(mean, cov, 0)
        assert abs(pq - p) < 5 * math.sqrt(var) + 1e-6


def test_error_qmc_K5_with_singular_Q_matches_monte_carlo():
    # a ridge solution has Σ_k w_k = 0, so Q is singular: the pivoted factor must cope
    rng = np.random.default_rng(2)
    d = MulticlassMixture.two_close(1.5, 5, c=0.6, rho=[0.1, 0.2, 0.2, 0.2, 0.3])
    A = rng.normal(size=(5, 5))
    A -= A.mean(0)  # Σ_k w_k = 0
    M, Q, b = A @ d.gram, A @ A.T, rng.normal(size=5) * 0.2
    eg, se = d.error(M, Q, b, se=True)
    assert 0 < se < 1e-4  # smooth Genz integrand: far below a plain MC's 1e-3
    n, mc = 400_000, 0.0
    w, u = np.linalg.eigh(d.delta * Q)
    S = u * np.sqrt(np.clip(w, 0, None))
    for c in range(5):
        h = M[:, c] + b + rng.normal(size=(n, 5)) @ S.T
        mc += d.rho[c] * np.mean(h.argmax(1) != c)
    # 4 MC s.e. plus 4 QMC s.e.
    assert abs(mc - eg) < 4 * math.sqrt(eg * (1 - eg) / n) + 4 * se


def test_oracle_is_the_posterior():
    # the oracle logits v_c·x/Δ − |v_c|²/2Δ + log ρ_c equal log ρ_c p(x|c) + const (x-independent)
    rng = np.random.default_rng(3)
    d = MulticlassMixture.two_close(1.0, 3, c=0.5, rho=[0.2, 0.3, 0.5], delta=0.8)
    V = np.linalg.cholesky(d.gram + 1e-12 * np.eye(3))  # rows: centroids in R³ with V Vᵀ = G
    M, Q, b = d.oracle()
    x = rng.normal(size=(5, 3))
    logits = x @ V.T / d.delta + b
    logpost = np.log(d.rho) - ((x[:, None, :] - V[None]) ** 2).sum(-1) / (2 * d.delta)
    diff = logits - logpost
    assert np.allclose(diff - diff[:, :1], 0, atol=1e-12)
    assert np.allclose(M, V @ V.T / d.delta) and np.allclose(Q, V @ V.T / d.delta**2)


def test_sweep_fingerprint_covers_matrix_parameters():
    s = Student(0.1)
    a = Problem(MulticlassMixture.orthogonal(2.0, 3), SoftmaxTeacher(0.1), s)
    b = Problem(MulticlassMixture.two_close(2.0, 3, c=0.1), SoftmaxTeacher(0.1), s)
    c = Problem(MulticlassMixture.orthogonal(2.0, 3, rho=[0.2, 0.3, 0.5]), SoftmaxTeacher(0.1), s)
    axes = (Axis("lam", (0.1, 1.0)),)
    prints = {Sweep(p, axes).fingerprint() for p in (a, b, c)}
    assert len(prints) == 3
    assert Sweep(a, axes).fingerprint() == Sweep(a.replace(alpha=2.0), axes).fingerprint()


def test_sweep_records_a_K_class_grid():
    # the scalar quantities of a K-class point are those of replica.solve at that point (the
    # same solver, the same cold start: equal to rounding); the binary-only scalars are NaN
    import replica
    from kdtheory.sweep import run_sweep

    p = Problem(MulticlassMixture.simplex(2.0, 2, rho=[0.3, 0.7]), SoftmaxTeacher(0.2),
                Student(0.1, chi=0.5, temperature=2.0))  # fmt: skip
    ds = run_sweep(Sweep(p, (Axis("lam", (0.1, 0.2)),), variants={"nokd": {"chi": 0.0}}),
                   progress=False)  # fmt: skip
    for i, lam in enumerate((0.1, 0.2)):
        sol = replica.solve(p.replace(lam=lam))
        assert ds.eg.values[i] == pytest.approx(sol.student.eg, abs=1e-9)
        assert ds.eg_teacher.values[i] == pytest.approx(sol.teacher.eg, abs=1e-9)
        nokd = replica.solve(p.replace(lam=lam, chi=0.0)).student.eg
        assert ds.gain.values[i] == pytest.approx(nokd - sol.student.eg, abs=1e-9)
    assert np.all(np.isnan(ds.m.values)) and np.all(ds.converged.values == 1)

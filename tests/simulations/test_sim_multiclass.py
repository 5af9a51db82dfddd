"""simulations.multiclass: K-class sampling, exact softmax fits, the oracle teacher and the runner."""

import math

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

import simulations
from kdtheory import MulticlassMixture, OracleTeacher, Problem, SoftmaxTeacher, Student
from simulations.fit import newton_cg
from simulations.multiclass import (
    centroids,
    fit_multiclass_student,
    fit_multiclass_teacher,
    fit_softmax,
    oracle_teacher,
    run_multiclass,
    sample_multiclass,
    simulate_multiclass_seed,
)
from simulations.softmax_kernels import kd_softmax_numpy

BINARY_GRAM = [[1.0, -1.0], [-1.0, 1.0]]


def test_centroids_have_the_gram_matrix_even_when_it_is_singular():
    rng = np.random.default_rng(0)
    g = MulticlassMixture.simplex(1.0, 4, s=2.0).gram  # rank 3: Σ_c v_c = 0
    v = centroids(g, 20000, rng)
    # Σ_c v_c = U diag(√e) Z has the null eigenvector's weight √0 = 0: zero to rounding
    assert np.abs(v.sum(0)).max() < 1e-12
    # entry (c, c') of V Vᵀ/N has s.d. √((G_cc G_c'c' + G_cc'²)/N) ≤ √(8/N) = 0.02: 4 s.d.
    np.testing.assert_allclose(v @ v.T / 20000, g, atol=0.08)
    v2 = centroids(np.array(BINARY_GRAM), 50, rng)
    np.testing.assert_allclose(v2[0], -v2[1], atol=1e-14)  # the binary mixture: v₂ = −v₁


def test_label_noise_replaces_a_label_by_a_uniform_other_class():
    k, theta = 4, 0.3
    data = MulticlassMixture.orthogonal(400.0, k, rho=[0.4, 0.3, 0.2, 0.1], flip=theta)
    train = sample_multiclass(data, 50, np.random.default_rng(1))  # M = 20 000 samples
    m = train.m
    changed = train.y_hat != train.c
    # binomial standard errors; 4 s.e. (a false alarm with probability 6e-5 per check)
    assert abs(changed.mean() - theta) <= 4 * math.sqrt(theta * (1 - theta) / m)
    offsets = ((train.y_hat - train.c) % k)[changed]
    for r in range(1, k):  # the new class is uniform over the K − 1 others
        f = np.mean(offsets == r)
        assert abs(f - 1 / (k - 1)) <= 4 * math.sqrt((1 / 3) * (2 / 3) / offsets.size)
    for c in range(k):
        p = data.rho[c]
        assert abs(np.mean(train.c == c) - p) <= 4 * math.sqrt(p * (1 - p) / m)
    clean = sample_multiclass(
        data.__class__(400.0, data.gram, data.rho), 50, np.random.default_rng(1)
    )
    # θ > 0 draws the flips last: the clean draw's (x, c, V) are the same
    np.testing.assert_array_equal(clean.x, train.x)
    np.testing.assert_array_equal(clean.c, train.c)


def _binary_data(seed, flip=0.1):
    data = MulticlassMixture(2.0, BINARY_GRAM, rho=[0.3, 0.7], delta=0.8, flip=flip)
    train = sample_multiclass(data, 200, np.random.default_rng(seed))
    return data, train, np.where(train.y_hat == 0, 1.0, -1.0)


@pytest.mark.parametrize(
    ("chi", "temperature", "tempered"),
    [(0.5, 2.0, "both"), (1.0, 3.0, "teacher"), (1.0, 0.7, "both")],
)
def test_two_classes_are_the_binary_fit_at_half_the_ridge(chi, temperature, tempered):
    # K = 2, G = [[1, −1], [−1, 1]]: h₁ − h₂ = (w₁ − w₂)·x/√N + b₁ − b₂ and Σ_k w_k = 0 at the
    # optimum, so (λ/2)(‖w₁‖² + ‖w₂‖²) = (λ/4)‖w₁ − w₂‖²: the binary fit at λ/2
    data, train, y = _binary_data(3)
    n, lam_t, lam = train.n, 0.3, 0.08
    teacher = fit_multiclass_teacher(SoftmaxTeacher(lam_t), train, data)
    ref_t = newton_cg(train.x, y, None, lam=lam_t / 2, scale=1 / math.sqrt(n))
    # both fits stop at ‖∇F‖ ≤ 1e-10·M; the Hessian's smallest eigenvalue is ≥ λ/2, so each is
    # within 1e-10·M/(λ/2) ≈ 1e-6 of the minimiser in ‖·‖₂, far less per coordinate
    np.testing.assert_allclose(teacher.w[0] - teacher.w[1], ref_t.w, atol=1e-6)
    assert teacher.b[0] - teacher.b[1] == pytest.approx(ref_t.b, abs=1e-6)
    student = fit_multiclass_student(
        Student(lam, chi, temperature, tempered=tempered), train, teacher.h
    )
    ts = temperature if tempered == "both" else 1.0
    ref_s = newton_cg(
        train.x, y, ref_t.h, lam=lam / 2, chi=chi, temperature=temperature,
        student_temperature=ts, scale=1 / math.sqrt(n),
    )  # fmt: skip
    assert student.converged and ref_s.converged
    np.testing.assert_allclose(student.w[0] - student.w[1], ref_s.w, atol=1e-6)
    assert student.b[0] - student.b[1] == pytest.approx(ref_s.b, abs=1e-6)
    np.testing.assert_allclose(student.w[0], -student.w[1], atol=1e-9)  # Σ_k w_k = 0


@pytest.fixture(scope="module")
def four_classes():
    data = MulticlassMixture.two_close(1.5, 4, s=3.0, c=0.7, rho=[0.4, 0.3, 0.2, 0.1], flip=0.1)
    return data, sample_multiclass(data, 150, np.random.default_rng(8))


def test_fit_is_stationary_and_in_the_gauge(four_classes):
    data, train = four_classes
    lam, chi, ts, t = 0.05, 0.6, 2.0, 2.0
    teacher = fit_multiclass_teacher(SoftmaxTeacher(0.1), train, data)
    fit = fit_multiclass_student(Student(lam, chi, t), train, teacher.h)
    # the gradient recomputed with the numpy twin at the returned (W, b)
    s = 1 / math.sqrt(train.n)
    h = s * train.x @ fit.w.T + fit.b
    _, g, _, _ = kd_softmax_numpy(train.y_hat, softmax(teacher.h / t, axis=1), h, chi, ts)
    grad = np.concatenate([(s * g.T @ train.x + lam * fit.w).ravel(), g.sum(0)])
    # the solver's stop ‖∇F‖ ≤ 1e-10·M, and a recomputation differing by rounding (≈ 1e-12·M)
    assert np.linalg.norm(grad) <= 2e-10 * train.m
    assert abs(fit.b.sum()) < 1e-12 and np.abs(fit.w.sum(0)).max() < 1e-9  # Σ b = 0, Σ_k w_k = 0


def test_student_at_the_matched_ridge_is_its_teacher(four_classes):
    # tempered = "both": ∇_h of χ CE(softmax(h̃/T), softmax(h/T)) vanishes at h = h̃, so the
    # teacher's stationarity at λ̃ makes it stationary for the student at λ = (1 − χ)λ̃
    data, train = four_classes
    lam_t, chi = 0.2, 0.7
    teacher = fit_multiclass_teacher(SoftmaxTeacher(lam_t), train, data)
    student = fit_multiclass_student(Student((1 - chi) * lam_t, chi, 2.5), train, teacher.h)
    # both within ≈ 1e-10·M/λ of the minimisers (smallest Hessian eigenvalue ≥ λ = 0.06)
    np.testing.assert_allclose(student.w, teacher.w, atol=1e-6)
    np.testing.assert_allclose(student.b, teacher.b, atol=1e-6)


def test_relabelling_the_classes_permutes_the_fit(four_classes):
    _, train = four_classes
    perm = np.array([2, 0, 3, 1])  # class c is called perm[c]
    fit = fit_softmax(train.x, train.y_hat, None, k=4, lam=0.1)
    fit_p = fit_softmax(train.x, perm[train.y_hat], None, k=4, lam=0.1)
    # a unique minimiser, relabelled: two solves to 1e-10·M, as above
    np.testing.assert_allclose(fit_p.w[perm], fit.w, atol=1e-6)
    np.testing.assert_allclose(fit_p.b[perm], fit.b, atol=1e-6)


def test_oracle_teacher_is_the_posterior(four_classes):
    data, train = four_classes
    fit = oracle_teacher(data, train)
    n = train.n
    # log p(c | x) = log ρ_c − ‖x − v_c/√N‖²/(2Δ) − log Σ_c' (…), written out
    d2 = ((train.x[:, None, :] - train.v[None] / math.sqrt(n)) ** 2).sum(2)
    ref = log_softmax(np.log(data.rho) - d2 / (2 * data.delta), axis=1)
    # ‖x‖² ≈ N Δ = 150 cancels between classes: rounding ≈ 1e-13 relative to it
    np.testing.assert_allclose(log_softmax(fit.h, axis=1), ref, atol=1e-10)
    assert np.abs(fit.w.sum(0)).max() < 1e-12 and abs(fit.b.sum()) < 1e-12  # the fits' gauge


def test_closed_form_error_matches_a_fresh_test_set(four_classes):
    # ε_g from (M, Q, b) against the misclassification rate on 40 000 fresh points of the same
    # centroids: binomial s.e. ≈ 0.0025, 4 s.e.
    data, train = four_classes
    fit = fit_multiclass_teacher(SoftmaxTeacher(0.1), train, data)
    n, v = train.n, train.v
    eg = data.error(fit.w @ v.T / n, fit.w @ fit.w.T / n, fit.b)
    rng = np.random.default_rng(9)
    c = rng.choice(4, size=40000, p=data.rho)
    x = v[c] / math.sqrt(n) + math.sqrt(data.delta) * rng.standard_normal((40000, n))
    rate = np.mean(np.argmax(x @ fit.w.T / math.sqrt(n) + fit.b, axis=1) != c)
    assert abs(rate - eg) <= 4 * math.sqrt(eg * (1 - eg) / 40000)


def test_run_records_each_seed_and_summarises():
    data = MulticlassMixture.orthogonal(1.0, 3, s=2.0, rho=[0.5, 0.3, 0.2])
    p = Problem(data, SoftmaxTeacher(0.2), Student(0.05, 0.5, 2.0, tempered="teacher"))
    res = simulations.run(p, n=60, seeds=3, seed=4)
    assert res.n_failed == 0 and res.table["student_M"].shape == (3, 3, 3)
    children = np.random.SeedSequence(4).spawn(3)
    row = simulate_multiclass_seed(p, 60, children[1])
    # a seed's record depends on (seed, s) only
    np.testing.assert_array_equal(res.table["student_R"].values[1], row["student_R"])
    assert res.table["teacher_eg"].values[1] == row["teacher_eg"]
    eg = res.table["student_eg"].values
    assert res.student.eg.mean == pytest.approx(eg.mean(), rel=1e-14)
    assert res.student.eg.sem == pytest.approx(eg.std(ddof=1) / math.sqrt(3), rel=1e-12)
    q = res.table["student_Q"].values
    np.testing.assert_allclose(res.student.Q.sem, q.std(0, ddof=1) / math.sqrt(3), rtol=1e-12)
    assert float(res.teacher.eg_se.mean) == 0.0  # K = 3: the error is deterministic


def test_bad_input_is_refused_before_any_work():
    data = MulticlassMixture.orthogonal(1.0, 3)
    with pytest.raises(ValueError, match=r"Student\.lam"):
        run_multiclass(Problem(data, SoftmaxTeacher(0.1), Student(0.0)), n=50, seeds=2)
    with pytest.raises(ValueError, match=r"SoftmaxTeacher\.lam"):
        run_multiclass(Problem(data, SoftmaxTeacher(0.0), Student(0.1)), n=50, seeds=2)
    with pytest.raises(ValueError, match="n must be"):
        simulations.run(Problem(data, OracleTeacher(), Student(0.1)), n=5, seeds=2)
    with pytest.raises(ValueError, match="lam"):
        fit_softmax(np.zeros((4, 3)), np.zeros(4, dtype=int), None, k=2, lam=-1.0)
    with pytest.raises(ValueError, match="y must"):
        fit_softmax(np.zeros((4, 3)), np.array([0, 1, 2, 3]), None, k=2, lam=1.0)

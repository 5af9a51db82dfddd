"""simulations.fit: the fits are the exact minimisers of the objectives of docs/theory.md."""

import math
import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal
from sklearn.linear_model import LogisticRegression

from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Student
from simulations import draw_subset, fit_student, fit_teacher, newton_cg, sample
from simulations.kernels import loss_grad_numpy


def _sklearn(train, lam):
    """scikit-learn's solution of the same objective: LogisticRegression on x/√N with C = 1/λ̃,
    by its exact Newton solver (converged far below the 1e-6 that the comparison needs)."""
    clf = LogisticRegression(C=1.0 / lam, solver="newton-cholesky", tol=1e-12, max_iter=1000)
    clf.fit(train.x / np.sqrt(train.n), train.y)
    return clf.coef_[0], clf.intercept_[0]


def _assert_same_weights(w, b, w_ref, b_ref):
    # the brief's agreement criterion: 1e-6 relative (in the max norm) on the weights and the bias
    assert np.abs(w - w_ref).max() <= 1e-6 * np.abs(w_ref).max()
    assert abs(b - b_ref) <= 1e-6 * max(1.0, abs(b_ref))


@pytest.mark.parametrize("lam", [3.0, 0.1, 0.003])
@pytest.mark.parametrize("which", ["train", "train_wide"])
def test_logistic_teacher_equals_sklearn(lam, which, request):
    train = request.getfixturevalue(which)
    fit = fit_teacher(LogisticTeacher(lam=lam), train)
    assert fit.status == "converged"
    assert fit.grad_norm <= 1e-10 * train.m
    _assert_same_weights(fit.w, fit.b, *_sklearn(train, lam))
    # reported training metrics are those of the returned (w, b)
    h = train.x @ fit.w / np.sqrt(train.n) + fit.b
    np.testing.assert_allclose(fit.h, h, rtol=1e-12, atol=1e-12)  # same sums, other order
    assert fit.train_loss == pytest.approx(np.mean(np.logaddexp(0, -train.y * h)), rel=1e-12)
    assert fit.train_error == np.mean(train.y * h <= 0)


def test_student_without_kd_equals_the_teacher_fit(train):
    # χ = 0, η = 1, λ = λ̃: the student's objective is the teacher's, whatever h̃ is
    lam = 0.05
    ht = np.random.default_rng(0).standard_normal(train.m)
    student = fit_student(Student(lam=lam, chi=0.0, temperature=2.0), train, ht)
    teacher = fit_teacher(LogisticTeacher(lam=lam), train)
    assert student.status == teacher.status == "converged"
    _assert_same_weights(student.w, student.b, *_sklearn(train, lam))
    # both stop at ‖∇F‖ ≤ 1e-10·M = 4e-8, which pins θ to ≤ ‖∇F‖/λ ≈ 1e-6 (in practice far better)
    np.testing.assert_allclose(student.w, teacher.w, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("chi", "t"), [(1.0, 1.0), (1.0, 3.0)])
def test_pure_distillation_without_ridge_reproduces_a_linear_teacher(train, mixture, chi, t):
    # χ = 1, λ = 0, η = 1: H(sig(h̃/T), sig(h/T)) is minimal at h = h̃ on every sample, which the
    # teacher's own (w̃, b̃) achieves; M > N + 1 makes that minimiser unique (docs/theory.md)
    teacher = fit_teacher(BayesTeacher(), train, mixture)
    student = fit_student(Student(lam=0.0, chi=chi, temperature=t), train, teacher.h)
    assert student.status == "converged"
    # the residual gradient ≤ 1e-10·M over a curvature ≥ ~1e-2·M leaves ≲ 1e-8 in the weights
    np.testing.assert_allclose(student.w, teacher.w, rtol=0, atol=1e-7 * np.abs(teacher.w).max())
    assert student.b == pytest.approx(teacher.b, abs=1e-6)


@pytest.mark.parametrize(("lam", "chi", "t", "eta"), [(0.1, 0.5, 2.0, 0.5), (0.02, 1.0, 0.7, 1.0)])
def test_kd_student_is_the_minimiser(train, mixture, lam, chi, t, eta):
    teacher = fit_teacher(LogisticTeacher(lam=0.3), train)
    subset = draw_subset(train.n, eta, np.random.default_rng(1))
    fit = fit_student(Student(lam=lam, chi=chi, temperature=t, eta=eta), train, teacher.h, subset)
    assert fit.status == "converged"
    off = np.setdiff1d(np.arange(train.n), subset)
    assert np.all(fit.w[off] == 0.0)
    # independent optimality certificate: the numpy twin's gradient on the columns S
    xs = train.x[:, subset]
    s = 1 / np.sqrt(train.n)
    theta = np.append(fit.w[subset], fit.b)
    loss, grad, _, _ = loss_grad_numpy(xs, train.y, teacher.h, theta, fit.b, s, chi, t)
    grad[:-1] += lam * theta[:-1]
    assert np.linalg.norm(grad) <= 1e-10 * train.m
    assert fit.train_loss == pytest.approx(loss / train.m, rel=1e-12)  # same sum, other order

    # and an independent minimiser (scipy's L-BFGS-B on the numpy objective) lands on it
    def f(th):
        value, g, _, _ = loss_grad_numpy(xs, train.y, teacher.h, th, th[-1], s, chi, t)
        g[:-1] += lam * th[:-1]
        return value + 0.5 * lam * th[:-1] @ th[:-1], g

    ref = minimize(
        f,
        np.zeros(subset.size + 1),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 0.0, "maxiter": 20000},
    )
    assert np.linalg.norm(ref.jac) < 1e-6  # L-BFGS-B stops on its f-reduction test near 1e-7
    # ... which leaves it ~3e-7 from the minimiser here (‖θ − θ*‖ ≲ ‖∇F‖/curvature)
    np.testing.assert_allclose(theta, ref.x, rtol=0, atol=2e-6)


def test_bayes_teacher_equals_the_posterior_log_odds():
    # the posterior of v and the predictive densities computed with generic linear algebra
    data = GaussianMixture(alpha=1.5, rho=0.3, delta=0.8)
    n = 12
    train = sample(data, n, np.random.default_rng(2))
    fit = fit_teacher(BayesTeacher(), train, data)
    assert fit.status == "closed_form" and fit.converged
    # likelihood x_μ | y_μ, v ~ N(y_μ v/√N, Δ I), prior v ~ N(0, I): Gaussian posterior N(μ_v, Σ_v)
    precision = np.eye(n) + (train.m / (n * data.delta)) * np.eye(n)
    cov = np.linalg.inv(precision)
    mean = cov @ (train.x.T @ train.y) / (np.sqrt(n) * data.delta)
    # predictive x | y, D ~ N(y μ_v/√N, Δ I + Σ_v/N); the log-odds of fresh points
    pred_cov = data.delta * np.eye(n) + cov / n
    x_new = np.random.default_rng(3).standard_normal((5, n))
    log_odds = (
        math.log(data.rho / (1 - data.rho))
        + multivariate_normal(mean / np.sqrt(n), pred_cov).logpdf(x_new)
        - multivariate_normal(-mean / np.sqrt(n), pred_cov).logpdf(x_new)
    )
    h = x_new @ fit.w / np.sqrt(n) + fit.b
    np.testing.assert_allclose(
        h, log_odds, rtol=1e-10, atol=1e-12
    )  # 12-dimensional solves: rounding
    assert fit.train_error == np.mean(train.y * fit.h <= 0)


def test_exact_test_error_matches_a_sampled_test_set(mixture):
    # ε_g = problem.data.error(m, q, b) with m = w·v/N, q = ‖w‖²/N is the error on fresh samples
    n = 100
    rng = np.random.default_rng(4)
    train = sample(mixture, n, rng)
    fit = fit_teacher(LogisticTeacher(lam=0.5), train)
    m, q = fit.w @ train.v / n, fit.w @ fit.w / n
    exact = mixture.error(m, q, fit.b)
    wrong, total = 0, 0
    for _ in range(10):
        y = np.where(rng.random(20000) < mixture.rho, 1.0, -1.0)
        x = np.outer(y, train.v) / np.sqrt(n) + np.sqrt(mixture.delta) * rng.standard_normal(
            (20000, n)
        )
        wrong += np.sum(y * (x @ fit.w / np.sqrt(n) + fit.b) <= 0)
        total += 20000
    # 5 binomial standard errors of a 200 000-point test set
    assert abs(wrong / total - exact) < 5 * math.sqrt(exact * (1 - exact) / total)


def test_separable_data_without_ridge_is_unbounded(train_wide, train):
    # M = 120 < N = 200: linearly separable for sure, so min Σ log(1+e^{−yh}) is not attained
    fit = fit_teacher(LogisticTeacher(lam=0.0), train_wide)
    assert fit.status == "unbounded" and not fit.converged
    assert np.all(train_wide.y * fit.h > 0)  # the certificate: a separating (w, b)
    student = fit_student(Student(lam=0.0, chi=0.0), train_wide, np.zeros(train_wide.m))
    assert student.status == "unbounded"


def test_more_weights_than_samples_without_ridge_is_not_unique(train_wide):
    # χ = 1, λ = 0, M = 120 < N + 1: every (w, b) with h = h̃ on the training points is a minimiser
    teacher = fit_teacher(LogisticTeacher(lam=0.5), train_wide)
    fit = fit_student(Student(lam=0.0, chi=1.0), train_wide, teacher.h)
    assert fit.status == "not_unique" and not fit.converged
    # it did reach the minimum: the student interpolates the teacher's outputs (to ~‖∇F‖/curvature)
    np.testing.assert_allclose(fit.h, teacher.h, rtol=0, atol=1e-6)


def test_non_separable_data_without_ridge_converges():
    data = GaussianMixture(alpha=6.0, rho=0.3, delta=1.0)  # α well above the separability threshold
    train = sample(data, 60, np.random.default_rng(0))
    fit = fit_teacher(LogisticTeacher(lam=0.0), train)
    assert fit.status == "converged" and fit.train_error > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that penalty=None ignores C
        clf = LogisticRegression(penalty=None, solver="newton-cholesky", tol=1e-12, max_iter=1000)
        clf.fit(train.x / np.sqrt(train.n), train.y)
    _assert_same_weights(fit.w, fit.b, clf.coef_[0], clf.intercept_[0])


def test_a_fit_that_does_not_converge_is_reported(train):
    fit = fit_teacher(LogisticTeacher(lam=0.01), train, max_iter=2)
    assert fit.status == "max_iter" and not fit.converged
    assert fit.iterations == 2 and fit.grad_norm > 1e-10 * train.m


def test_bad_arguments(train, mixture):
    with pytest.raises(ValueError, match="needs data=GaussianMixture"):
        fit_teacher(BayesTeacher(), train)
    with pytest.raises(ValueError, match="gtol must be a real number in"):
        fit_teacher(LogisticTeacher(lam=1.0), train, gtol=0.0)
    with pytest.raises(ValueError, match="max_iter must be an int ≥ 1"):
        fit_teacher(LogisticTeacher(lam=1.0), train, max_iter=0)
    with pytest.raises(ValueError, match="subset is required"):
        fit_student(Student(lam=1.0, eta=0.5), train, np.zeros(train.m))
    with pytest.raises(ValueError, match="subset must hold 100"):
        fit_student(Student(lam=1.0, eta=0.5), train, np.zeros(train.m), np.arange(99))
    with pytest.raises(ValueError, match="ht must have shape"):
        fit_student(Student(lam=1.0), train, np.zeros(3))
    with pytest.raises(ValueError, match=r"chi must be in \[0, 1\]"):
        newton_cg(train.x, train.y, None, lam=1.0, chi=1.5)
    with pytest.raises(ValueError, match=r"lam must be in \[0, ∞\)"):
        newton_cg(train.x, train.y, None, lam=-1.0)
    with pytest.raises(ValueError, match="y and ht must have shape"):
        newton_cg(train.x, train.y[:-1], None, lam=1.0)


@pytest.mark.parametrize(("lam", "t"), [(0.05, 2.5), (0.3, 0.5)])
def test_tempered_teacher_is_tempered_both_rescaled(train, lam, t):
    # χ = 1: H(p̃, sig(h/T)) + (λ/2)‖w‖² at (w, b) equals H(p̃, sig(h')) + (λT²/2)‖w'‖² at
    # (w', b') = (w, b)/T, so tempered="teacher" at (λT², T) has the minimiser of "both" at (λ, T) / T
    ht = fit_teacher(LogisticTeacher(lam=0.1), train).h
    both = fit_student(Student(lam=lam, chi=1.0, temperature=t), train, ht)
    teacher = fit_student(
        Student(lam=lam * t * t, chi=1.0, temperature=t, tempered="teacher"), train, ht
    )
    assert both.converged and teacher.converged
    # each stops at ‖∇F‖ ≤ 1e-10·M; with curvature ≥ λ that pins θ to ~1e-8 (max norm)
    np.testing.assert_allclose(teacher.w, both.w / t, rtol=0, atol=1e-7 * np.abs(both.w).max())
    assert teacher.b == pytest.approx(both.b / t, rel=1e-7, abs=1e-8)
    # h' = h/T has the signs of h (no training point sits within 1e-7 of the boundary here)
    assert teacher.train_error == both.train_error


def test_bayes_teacher_refuses_label_noise(train):
    with pytest.raises(ValueError, match=r"GaussianMixture\.flip must be 0 for the Bayes teacher"):
        fit_teacher(BayesTeacher(), train, GaussianMixture(alpha=2.0, rho=0.3, flip=0.1))


def test_fits_train_on_the_noisy_labels():
    data = GaussianMixture(alpha=2.0, rho=0.3, delta=1.0, flip=0.3)
    noisy = sample(data, 100, np.random.default_rng(2))
    assert (noisy.y_hat != noisy.y).any()
    fit = fit_teacher(LogisticTeacher(lam=0.1), noisy)
    lam = 0.1
    # the objective on ŷ (scikit-learn on the training labels), not on the clusters y
    clf = LogisticRegression(C=1.0 / lam, solver="newton-cholesky", tol=1e-12, max_iter=1000)
    w_ref = clf.fit(noisy.x / np.sqrt(noisy.n), noisy.y_hat).coef_[0]
    _assert_same_weights(fit.w, fit.b, w_ref, clf.intercept_[0])
    assert fit.train_error == np.mean(noisy.y_hat * fit.h <= 0)  # against ŷ
    student = fit_student(Student(lam=lam, chi=0.0), noisy, np.zeros(noisy.m))  # labels only
    np.testing.assert_allclose(student.w, fit.w, rtol=0, atol=1e-6)  # as in the χ = 0 test above

"""``replica.gradient`` against finite differences of ``replica.solve``, and its exact identities."""

from __future__ import annotations

import math

import pytest

import replica
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from replica.gradient import DIFFERENTIABLE

TOL = 1e-13


def _value(sol, quantity):
    if quantity == "agreement":
        return replica.agreement(sol)
    if quantity.endswith("_t"):
        return getattr(sol.teacher, quantity[:-2])
    return getattr(sol.student, quantity)


def _fd(problem, name, quantities):
    """Richardson-extrapolated central differences of solve at tol 1e-13: step 1e-4·|θ| keeps the
    truncation error O(h⁴) ≈ 1e-16 and the solver's noise (≈ 1e-13 of the state) / h ≈ 1e-9."""
    v = problem.params[name]
    h = 1e-4 * abs(v)

    def f(val):
        sol = replica.solve(problem.replace(**{name: val}), tol=TOL)
        assert sol.converged
        return {q: _value(sol, q) for q in quantities}

    lo2, hi2, lo1, hi1 = f(v - h), f(v + h), f(v - h / 2), f(v + h / 2)
    return {q: (4 * (hi1[q] - lo1[q]) / h - (hi2[q] - lo2[q]) / (2 * h)) / 3 for q in quantities}


POINTS = [
    Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05, 0.8, 1.5, 0.5)),
    Problem(GaussianMixture(3.0, 0.2, 0.5), BayesTeacher(), Student(0.1, 0.5, 2.0, 0.8)),
    # label noise and the teacher-only temperature (T_s = 1: only p̃ = sig(h̃/T) depends on T)
    Problem(
        GaussianMixture(2.0, 0.3, 1.0, flip=0.15),
        LogisticTeacher(0.1),
        Student(0.05, 0.8, 1.5, 0.5, tempered="teacher"),
    ),
]
QUANTITIES = ("eg", "m", "q", "b", "r", "V", "Vc", "train_loss", "agreement", "eg_t", "q_t")


@pytest.mark.parametrize("problem", POINTS)
def test_gradient_matches_finite_differences_of_solve(problem):
    sol = replica.solve(problem, tol=TOL)
    bayes = isinstance(problem.teacher, BayesTeacher)
    # (at θ = 0 the central difference in θ has no room: see the one-sided test below)
    skip = {"lam_t", "flip"} if bayes else {"flip"} if problem.data.flip == 0.0 else set()
    wrt = [k for k in DIFFERENTIABLE if k not in skip]
    grad = replica.gradient(sol, wrt)
    quantities = QUANTITIES + (() if bayes else ("train_loss_t",))
    for name in wrt:
        fd = _fd(problem, name, quantities)
        for q in quantities:
            # 1e-6 relative; absolute floor 1e-9 where a derivative vanishes (FD noise, see _fd)
            assert grad[q][name] == pytest.approx(fd[q], rel=1e-6, abs=1e-9), (q, name)


def test_gradient_in_the_label_noise_at_zero_matches_a_one_sided_difference():
    # at θ = 0 the flipped pairs carry weight 0 but their moments give ∂/∂θ = E_flipped − E_clean
    p = Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05, 0.8, 1.5, 0.5))
    grad = replica.gradient(replica.solve(p, tol=TOL), ("flip", "lam"))
    h = 1e-4
    sols = [replica.solve(p.replace(flip=k * h), tol=TOL) for k in range(3)]
    for q in ("eg", "q", "b", "r", "train_loss", "eg_t", "q_t"):
        f0, f1, f2 = (_value(s, q) for s in sols)
        fd = (-3 * f0 + 4 * f1 - f2) / (2 * h)
        # one-sided second-order difference: truncation O(h²·f‴) ≈ 1e-8 relative at h = 1e-4
        assert grad[q]["flip"] == pytest.approx(fd, rel=1e-6, abs=1e-9), q


def test_no_kd_full_student_has_the_teachers_ridge_derivatives():
    # χ = 0, η = 1: the student is logistic regression on the labels with ridge λ, the teacher's
    # problem at λ̃ = λ, whatever its teacher: ∂ε_g/∂λ = ∂ε̃_g/∂λ̃ there
    data, lam = GaussianMixture(2.5, 0.3, 1.0), 0.2
    sol = replica.solve(Problem(data, LogisticTeacher(0.05), Student(lam, 0.0, 1.0, 1.0)), tol=TOL)
    twin = replica.solve(Problem(data, LogisticTeacher(lam), Student(1.0)), tol=TOL)
    g, gt = replica.gradient(sol, ("lam", "alpha")), replica.gradient(twin, ("lam_t", "alpha"))
    # both are exact derivatives of the same fixed point, solved to 1e-13
    assert g["eg"]["lam"] == pytest.approx(gt["eg_t"]["lam_t"], rel=1e-8)
    assert g["q"]["lam"] == pytest.approx(gt["q_t"]["lam_t"], rel=1e-8)
    assert g["eg"]["alpha"] == pytest.approx(gt["eg_t"]["alpha"], rel=1e-8)


@pytest.mark.parametrize("teacher", [LogisticTeacher(0.1), BayesTeacher()])
def test_without_kd_nothing_depends_on_temperature_or_on_the_teacher_ridge(teacher):
    # χ = 0: ℓ_KD = ℓ(y, h) does not contain T, and V_c = 0, so m, q, b, V and ε_g do not see the
    # teacher; r = w·w̃/N does, but not T
    p = Problem(GaussianMixture(2.0, 0.3, 1.0), teacher, Student(0.1, 0.0, 2.0, 0.7))
    wrt = ("temperature",) if isinstance(teacher, BayesTeacher) else ("temperature", "lam_t")
    g = replica.gradient(replica.solve(p, tol=TOL), wrt)
    for q in ("eg", "m", "q", "b", "V", "Vc", "train_loss"):
        for k in wrt:
            # zero up to the solve's V_c ≈ 1e-14 (not exactly 0) times the sensitivities
            assert abs(g[q][k]) < 1e-8, (q, k)
    assert abs(g["r"]["temperature"]) < 1e-8
    if "lam_t" in wrt:
        assert abs(g["r"]["lam_t"]) > 1e-3  # (a check that can fail: r does see the teacher)


def test_balanced_classes_keep_the_bias_at_zero():
    # ρ = ½: b = b̃ = 0 for every (λ, χ, T, α, Δ, η, λ̃) by the symmetry y → −y
    p = Problem(GaussianMixture(2.0, 0.5, 1.0), LogisticTeacher(0.1), Student(0.05, 0.6, 2.0, 0.5))
    wrt = ("alpha", "delta", "lam_t", "lam", "chi", "temperature", "eta")
    g = replica.gradient(replica.solve(p, tol=TOL), wrt)
    for k in wrt:
        assert abs(g["b"][k]) < 1e-10 and abs(g["b_t"][k]) < 1e-10, k


def test_bayes_teacher_refuses_its_ridge_and_bad_arguments_are_named():
    p = Problem(GaussianMixture(2.0, 0.3, 1.0), BayesTeacher(), Student(0.1, 1.0, 1.0, 1.0))
    sol = replica.solve(p)
    with pytest.raises(ValueError, match="lam_t is not a parameter of the Bayes teacher"):
        replica.gradient(sol, ("lam_t",))
    with pytest.raises(ValueError, match="flip is not a parameter of the Bayes teacher"):
        replica.gradient(sol, ("flip",))
    with pytest.raises(ValueError, match="unknown parameter 'lambda'"):
        replica.gradient(sol, ("lambda",))
    with pytest.raises(ValueError, match="solution must be"):
        replica.gradient(p, ("lam",))
    failed = replica.solve(p.replace(lam=0.0, alpha=0.5, eta=1.0))
    assert not failed.converged
    with pytest.raises(ValueError, match="did not converge"):
        replica.gradient(failed, ("lam",))


def test_bayes_teacher_closed_form_sensitivities():
    # m̃ = cα = 2α/(Δ(Δ + α)): ∂m̃/∂α = 2/(Δ + α)²; b̃ = log(ρ/(1 − ρ)): ∂b̃/∂ρ = 1/(ρ(1 − ρ))
    data = GaussianMixture(2.0, 0.3, 1.0)
    p = Problem(data, BayesTeacher(), Student(0.1, 1.0, 1.0, 1.0))
    g = replica.gradient(replica.solve(p), ("alpha", "rho"))
    a, d = data.alpha, data.delta
    assert g["m_t"]["alpha"] == pytest.approx(2.0 / (d + a) ** 2, rel=1e-12)  # rounding
    assert g["b_t"]["rho"] == pytest.approx(1.0 / (0.3 * 0.7), rel=1e-12)  # rounding
    assert math.isfinite(g["eg"]["alpha"])

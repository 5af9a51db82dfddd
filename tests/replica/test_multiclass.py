"""K-class replica solver: its exact identities (docs/theory.md, section "K classes")."""

import math

import numpy as np
import pytest

import replica
from kdtheory import (
    GaussianMixture,
    LogisticTeacher,
    MulticlassMixture,
    OracleTeacher,
    Problem,
    SoftmaxTeacher,
    Student,
)
from replica.multiclass import _channel_numpy, channel, helmert


def _binary_view(state):
    """(m, q, b) of w = w₁ − w₂, b₁ − b₂ (K = 2, v₂ = −v₁) and r = (w₁ − w₂)·(w̃₁ − w̃₂)/N."""
    M, Q, b = state.M, state.Q, state.b
    out = [M[0, 0] - M[1, 0], Q[0, 0] + Q[1, 1] - 2 * Q[0, 1], b[0] - b[1]]
    if state.R is not None:
        R = state.R
        out.append(R[0, 0] + R[1, 1] - R[0, 1] - R[1, 0])
    return np.array(out)


@pytest.mark.parametrize(
    ("chi", "temperature", "tempered", "flip"),
    [
        (0.0, 1.0, "both", 0.0),
        (0.5, 2.0, "both", 0.0),
        (1.0, 0.7, "both", 0.0),
        (0.5, 2.0, "teacher", 0.0),
        (1.0, 3.0, "teacher", 0.0),
        (0.5, 1.5, "both", 0.1),
    ],
)
def test_two_classes_are_the_binary_model(chi, temperature, tempered, flip):
    # K = 2, G = [[1, −1], [−1, 1]]: w = w₁ − w₂ is the binary estimator at half the ridge
    # (‖W‖²_F = ‖w‖²/2 in the gauge w₁ + w₂ = 0); both solvers reach 1e-10, their rules differ
    # by ≤ 1e-9 here, so 1e-6 is the tolerance with a wide margin
    lam_t, lam, rho, delta, alpha = 0.3, 0.08, 0.3, 0.7, 1.6
    st = dict(chi=chi, temperature=temperature, tempered=tempered)
    k2 = Problem(
        MulticlassMixture.simplex(alpha, 2, rho=[rho, 1 - rho], delta=delta, flip=flip),
        SoftmaxTeacher(2 * lam_t),
        Student(2 * lam, **st),
    )
    b2 = Problem(
        GaussianMixture(alpha, rho, delta, flip), LogisticTeacher(lam_t), Student(lam, **st)
    )
    sk, sb = replica.solve(k2), replica.solve(b2)
    assert sk.converged and sb.converged
    t, s = sb.teacher, sb.student
    assert np.allclose(_binary_view(sk.teacher), [t.m, t.q, t.b], rtol=0, atol=1e-6)
    assert np.allclose(_binary_view(sk.student), [s.m, s.q, s.b, s.r], rtol=0, atol=1e-6)
    assert abs(sk.teacher.eg - t.eg) < 1e-6 and abs(sk.student.eg - s.eg) < 1e-6
    assert sk.teacher.eg_se == 0.0 and sk.student.eg_se == 0.0  # K ≤ 3: deterministic


DATA3 = MulticlassMixture(
    1.8, [[1.0, 0.4, 0.0], [0.4, 1.2, -0.2], [0.0, -0.2, 0.8]], rho=[0.2, 0.3, 0.5], delta=0.8
)


def test_relabelling_permutes_the_order_parameters():
    perm = [2, 0, 1]
    data = DATA3
    moved = MulticlassMixture(data.alpha, data.gram[np.ix_(perm, perm)], rho=data.rho[perm],
                              delta=data.delta)  # fmt: skip
    st = Student(0.1, chi=0.6, temperature=2.0)
    a = replica.solve(Problem(data, SoftmaxTeacher(0.2), st))
    b = replica.solve(Problem(moved, SoftmaxTeacher(0.2), st))
    assert a.converged and b.converged
    # the Gauss–Hermite rules live in the (K−1)-dim reduced fields, whose basis is not permuted
    # with the classes: the two solves differ by the rules' error (measured ≤ 1e-7 here)
    tol = 1e-6
    for x, y in ((a.teacher, b.teacher), (a.student, b.student)):
        assert abs(x.eg - y.eg) < tol
        assert np.allclose(x.M[np.ix_(perm, perm)], y.M, atol=tol)
        assert np.allclose(x.Q[np.ix_(perm, perm)], y.Q, atol=tol)
        assert np.allclose(x.b[perm], y.b, atol=tol)
    assert np.allclose(a.student.R[np.ix_(perm, perm)], b.student.R, atol=tol)


def test_student_without_kd_is_the_teacher_and_tempered_student_at_its_ridge_too():
    # χ = 0 at λ = λ̃ and (tempered "both") χ = 0.5 at λ = (1 − χ)λ̃ both have the teacher's fixed
    # point (the distillation gradient vanishes at h = h̃): the student's nested rule (ω̃ then
    # ω | ω̃) and the teacher's rule differ by ≤ 1e-8 here
    for st in (Student(0.2, chi=0.0), Student(0.1, chi=0.5, temperature=2.0)):
        sol = replica.solve(Problem(DATA3, SoftmaxTeacher(0.2), st))
        assert sol.converged
        t, s = sol.teacher, sol.student
        assert abs(t.eg - s.eg) < 1e-7
        for f in ("M", "Q", "b"):
            assert np.allclose(getattr(t, f), getattr(s, f), atol=1e-7), f
        assert np.allclose(s.R, t.Q, atol=1e-7)  # W = W̃: R = Q̃


def test_uninformative_labels_teach_nothing():
    # θ = (K − 1)/K: P(ŷ | c) = 1/K whatever c, so M̂ = 0 and M = 0; the fields do not depend on
    # the class, so ε_g = 1 − Σ_c ρ_c P(argmax = c) = 1 − 1/K at uniform ρ
    data = MulticlassMixture.two_close(2.0, 3, c=0.5, flip=2 / 3)
    sol = replica.solve(Problem(data, SoftmaxTeacher(0.3), Student(0.3, chi=0.0)))
    assert sol.converged
    for s in (sol.teacher, sol.student):
        assert np.max(np.abs(s.M)) < 1e-10  # zero up to rounding
        assert abs(s.eg - 2 / 3) < 1e-10
        assert np.max(np.abs(s.Q)) > 1e-3  # it does fit the noise


def test_student_of_the_oracle_copies_it_as_the_ridge_vanishes():
    # χ = 1, T = 1, α > 1: the soft labels are the oracle's exact posterior, which the student
    # can reproduce (W = W̃ up to the shift); its distance to the oracle is O(λ)
    data = MulticlassMixture.two_close(3.0, 3, c=0.5, rho=[0.2, 0.3, 0.5], delta=0.8)
    dist = []
    for lam in (1e-2, 1e-3):
        sol = replica.solve(Problem(data, OracleTeacher(), Student(lam, chi=1.0)))
        assert sol.converged
        t, s = sol.teacher, sol.student
        dist.append(max(np.max(np.abs(t.M - s.M)), np.max(np.abs(t.Q - s.Q)),
                        np.max(np.abs(t.b - s.b)), abs(t.eg - s.eg)))  # fmt: skip
    assert dist[1] < 0.2 * dist[0]  # O(λ): a tenfold smaller ridge, ≥ fivefold closer
    assert dist[1] < 2e-2
    assert abs(sol.teacher.eg - data.oracle_error()) == 0.0


def test_zero_ridge_refused_with_a_status():
    p = Problem(DATA3, SoftmaxTeacher(0.0), Student(0.1))
    sol = replica.solve(p)
    assert not sol.converged and sol.status == "unbounded" and "lam" in sol.message
    assert math.isnan(sol.student.eg)
    with pytest.raises(replica.ConvergenceError):
        replica.solve(p, strict=True)
    with pytest.raises(ValueError, match="binary"):
        replica.solve_teacher(p)
    with pytest.raises(ValueError, match="binary"):
        replica.optimise(p.replace(lam_t=0.1))


def test_gradient_of_a_K_class_solution_refused_in_one_line():
    # replica.gradient is derived for the binary model only: a clear refusal, not a repr dump
    sol = replica.solve(Problem(DATA3, SoftmaxTeacher(1.0), Student(0.5)))
    with pytest.raises(ValueError, match="solution must be binary") as err:
        replica.gradient(sol)
    assert "\n" not in str(err.value)


def test_kernel_matches_its_numpy_twin():
    rng = np.random.default_rng(0)
    K, n = 4, 50
    d = K - 1
    U = helmert(K)
    omega = rng.normal(size=(n, d)) * 3
    A = rng.normal(size=(d, d))
    P = A @ A.T + 0.3 * np.eye(d)
    teacher = (rng.normal(size=(n, d)) * 2, rng.normal(size=(n, d)),
               rng.normal(size=(n, d, d)), rng.normal(size=(n, d, d)))  # fmt: skip
    dlVc = rng.normal(size=(d, d)) * 0.3
    w = rng.random(n)
    for chi, T, Ts in ((0.0, 1.0, 1.0), (0.6, 0.4, 0.4), (1.0, 3.0, 1.0)):
        e1, o1, a1 = channel(omega, teacher, w, U, 2, chi, T, Ts, P, dlVc)
        e2, o2, a2 = _channel_numpy(omega, teacher, w, U, 2, chi, T, Ts, P, dlVc, omega.copy())
        # both converge Newton to 1e-13; the moments then agree to rounding
        assert np.allclose(e1, e2, atol=1e-10) and np.allclose(o1, o2, atol=1e-9)
        assert np.allclose(a1, a2, atol=1e-9)


def test_qmc_path_K4_student_at_its_ridge_is_the_teacher():
    # K = 4 runs on scrambled Sobol points (four independent solves): the tempered student at
    # λ = (1 − χ)λ̃ is the teacher; teacher and student use different point sets (d- and
    # 2d-dimensional), so they agree within their standard errors (5 s.e., plus 1e-6 for the
    # spread of four repeats underestimating a tiny s.e.)
    data = MulticlassMixture.two_close(2.0, 4, c=0.5, rho=[0.1, 0.2, 0.3, 0.4])
    sol = replica.solve(Problem(data, SoftmaxTeacher(0.2), Student(0.1, chi=0.5, temperature=2.0)))
    assert sol.converged
    t, s = sol.teacher, sol.student
    assert t.eg_se > 0 and s.eg_se > 0
    assert abs(t.eg - s.eg) < 5 * math.hypot(t.eg_se, s.eg_se) + 1e-6
    assert np.allclose(t.M, s.M, atol=1e-3)  # order parameters: QMC error ~1e-4 at 2^11 points

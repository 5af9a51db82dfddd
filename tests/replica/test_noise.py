"""Label noise θ (``GaussianMixture.flip``) and the teacher-only temperature (``tempered``) in the
replica theory: exact identities and limits."""

from __future__ import annotations

import itertools
import math

import pytest

import replica
import replica.channels
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student

FIELDS = ("m", "q", "b", "r", "V", "Vc", "eg", "train_loss", "train_error")
TEACHER_FIELDS = ("m", "q", "b", "V", "eg", "train_loss", "train_error")


def _close(a, b, fields, rel, abs_=0.0):
    for f in fields:
        assert getattr(a, f) == pytest.approx(getattr(b, f), rel=rel, abs=abs_), f


@pytest.mark.parametrize(
    "problem",
    [
        Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05, 0.7, 2.0, 0.6)),
        Problem(GaussianMixture(1.0, 0.2, 0.5), BayesTeacher(), Student(0.03, 0.5, 1.0)),
    ],
)
def test_noiseless_problem_is_unchanged_by_the_flipped_pairs(problem, monkeypatch):
    # θ = 0 skips the pairs ŷ = −y; summing them with weight 0 adds exact zeros to every moment
    fast = replica.solve(problem, tol=1e-12)
    monkeypatch.setattr(replica.channels, "SKIP_FLIPPED", False)
    every = replica.solve(problem, tol=1e-12)
    assert fast.converged and every.converged
    _close(fast.student, every.student, FIELDS, rel=1e-13)  # rounding only
    _close(fast.teacher, every.teacher, TEACHER_FIELDS, rel=1e-13)


@pytest.mark.parametrize(
    ("rho", "alpha", "lam_t", "student"),
    [
        (0.5, 2.0, 0.1, Student(0.05, 0.7, 2.0)),
        (0.3, 2.0, 0.1, Student(0.05, 0.7, 2.0)),
        # sharp soft labels sig(h̃/0.1) of an uninformative teacher: the coarse rule has no fixed
        # point near the full rule's, which Newton on the full rule finds
        (0.5, 6.0, 1.0, Student(0.1, 0.5, 0.1)),
    ],
)
def test_labels_without_information_give_no_signal(rho, alpha, lam_t, student):
    # θ = ½: ŷ is independent of y, so E[y f] = 0 and m̂ = 0: m = m̃ = 0 (and ε_g = ½ at ρ = ½)
    data = GaussianMixture(alpha, rho, 1.0, flip=0.5)
    sol = replica.solve(Problem(data, LogisticTeacher(lam_t), student))
    assert sol.converged
    # m is a sum of terms ± of equal size: zero to the solve's tolerance (1e-10 of q ≈ 1)
    assert abs(sol.teacher.m) < 1e-9 and abs(sol.student.m) < 1e-9
    if rho == 0.5:
        assert sol.student.eg == pytest.approx(0.5, abs=1e-9)  # Φ(0) at m = b = 0
        assert sol.teacher.eg == pytest.approx(0.5, abs=1e-9)


def test_flipping_every_label_reverses_the_classifier():
    # θ → 1 − θ at ρ = ½ is y → −y in the labels only: w → −w, so m → −m, q, r, V unchanged
    solve = lambda flip: replica.solve(  # noqa: E731
        Problem(
            GaussianMixture(2.0, 0.5, 1.0, flip), LogisticTeacher(0.1), Student(0.05, 0.7, 2.0)
        ),
        tol=1e-12,
    )
    a, b = solve(0.15), solve(0.85)
    assert a.converged and b.converged and a.student.m > 0.1
    # the same fixed point up to a sign, solved to 1e-12 from different starts
    assert b.student.m == pytest.approx(-a.student.m, rel=1e-9)
    assert b.teacher.m == pytest.approx(-a.teacher.m, rel=1e-9)
    _close(a.student, b.student, ("q", "r", "V", "Vc", "train_loss", "train_error"), rel=1e-9)
    assert b.student.eg == pytest.approx(1.0 - a.student.eg, rel=1e-9)


def test_label_noise_hurts_monotonically():
    errs = [
        replica.solve(
            Problem(GaussianMixture(3.0, 0.3, 1.0, f), LogisticTeacher(0.1), Student(0.1, 0.5, 2.0))
        )
        for f in (0.0, 0.1, 0.2, 0.3)
    ]
    assert all(s.converged for s in errs)
    eg = [s.student.eg for s in errs]
    assert eg == sorted(eg) and eg[-1] > eg[0] + 0.05
    train = [s.teacher.train_error for s in errs]  # against the noisy labels: grows with θ
    assert train == sorted(train)


@pytest.mark.parametrize("temperature", [2.0, 0.7])
@pytest.mark.parametrize("flip", [0.0, 0.15])
def test_teacher_only_temperature_is_a_rescaled_ridge(temperature, flip):
    # χ = 1: Σ H(p̃, sig(h/T)) + λ/2‖w‖² with (w, b) = T (w', b') is Σ H(p̃, sig(h')) + λT²/2‖w'‖²:
    # the same classifier, so ε_g, m/√q and b/√q agree, and w' = w/T (m' = m/T, V' = V/T²)
    data, teacher, lam, t = (
        GaussianMixture(2.0, 0.3, 1.0, flip),
        LogisticTeacher(0.1),
        0.05,
        temperature,
    )
    both = replica.solve(Problem(data, teacher, Student(lam, 1.0, t)), tol=1e-12)
    only = replica.solve(
        Problem(data, teacher, Student(lam * t * t, 1.0, t, tempered="teacher")), tol=1e-12
    )
    assert both.converged and only.converged
    s, o = both.student, only.student
    # two fixed points solved to 1e-12 (relative step) on the same rules
    assert o.eg == pytest.approx(s.eg, rel=1e-9)
    assert o.m / math.sqrt(o.q) == pytest.approx(s.m / math.sqrt(s.q), rel=1e-9)
    assert o.b / math.sqrt(o.q) == pytest.approx(s.b / math.sqrt(s.q), rel=1e-9, abs=1e-12)
    assert o.m == pytest.approx(s.m / t, rel=1e-9)
    assert o.V == pytest.approx(s.V / t**2, rel=1e-9)


def test_both_conventions_coincide_at_unit_temperature():
    p = Problem(GaussianMixture(2.0, 0.3, 1.0, 0.1), LogisticTeacher(0.1), Student(0.05, 0.6, 1.0))
    q = Problem(p.data, p.teacher, Student(0.05, 0.6, 1.0, tempered="teacher"))
    a, b = replica.solve(p), replica.solve(q)
    assert a.converged and a.student == b.student  # T = T_s = 1: the same kernels, bit for bit


def test_separability_threshold_with_label_noise():
    base = replica.separability_threshold(0.3, 1.0)
    assert replica.separability_threshold(0.3, 1.0, 1.0, 0.0) == base  # θ = 0: unchanged
    a_c = [replica.separability_threshold(0.3, 1.0, flip=f) for f in (0.0, 0.05, 0.2, 0.4, 0.5)]
    assert all(x > y for x, y in itertools.pairwise(a_c))  # noise: separable for fewer
    # θ = ½: labels independent of x, Cover's 2 (the optimiser's bounded search: 1e-9)
    assert a_c[-1] == pytest.approx(2.0, rel=1e-9)
    # θ ↔ 1 − θ: the same sets up to w → −w
    assert replica.separability_threshold(0.3, 1.0, flip=0.8) == pytest.approx(
        replica.separability_threshold(0.3, 1.0, flip=0.2), rel=1e-9
    )
    with pytest.raises(ValueError, match=r"flip must be in \[0, 1\]"):
        replica.separability_threshold(0.3, 1.0, flip=1.5)


def test_zero_ridge_uses_the_noisy_threshold():
    # α between α_c(θ = 0.2) ≈ 2.29 and α_c(0) ≈ 3.70 (ρ = ½, Δ = 1): separable without noise only
    a_c = replica.separability_threshold(0.5, 1.0, flip=0.2)
    above = GaussianMixture(1.2 * a_c, 0.5, 1.0, 0.2)
    assert 1.2 * a_c < replica.separability_threshold(0.5, 1.0)
    teacher = replica.solve_teacher(Problem(above, LogisticTeacher(0.0)))
    assert teacher.converged and teacher.teacher.q < math.inf
    no_kd = replica.solve(Problem(above, LogisticTeacher(0.1), Student(0.0, 0.0)))
    assert no_kd.converged
    clean = GaussianMixture(1.2 * a_c, 0.5, 1.0, 0.0)
    assert replica.solve_teacher(Problem(clean, LogisticTeacher(0.0))).status == "unbounded"
    below = GaussianMixture(0.9 * a_c, 0.5, 1.0, 0.2)
    sol = replica.solve(Problem(below, LogisticTeacher(0.1), Student(0.0, 0.0)))
    assert sol.status == "unbounded" and "θ = 0.2" in sol.message
    teacher = replica.solve_teacher(Problem(below, LogisticTeacher(0.0)))
    assert teacher.status == "unbounded" and "α_c(ρ, Δ, θ)" in teacher.message


def test_bayes_error_is_the_noiseless_one():
    # the clean-label Bayes error bounds every estimator trained on noisy labels from below
    noisy = GaussianMixture(2.0, 0.3, 1.0, 0.2)
    assert replica.bayes_error(noisy) == replica.bayes_error(GaussianMixture(2.0, 0.3, 1.0))
    sol = replica.solve(Problem(noisy, LogisticTeacher(0.3), Student(0.05, 0.5, 2.0)))
    assert sol.converged and sol.student.eg > replica.bayes_error(noisy)

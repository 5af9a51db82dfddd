"""simulations.run: seeds, aggregation, failure reporting, validation."""

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from simulations import draw_subset, fit_student, run, sample, simulate_seed

PROBLEM = Problem(
    data=GaussianMixture(alpha=2.0, rho=0.3, delta=1.0),
    teacher=LogisticTeacher(lam=0.2),
    student=Student(lam=0.05, chi=0.7, temperature=2.0, eta=0.5),
)


@pytest.fixture(scope="module")
def result():
    return run(PROBLEM, n=150, seeds=5, seed=11)


def test_fields_mirror_the_replica_solution(result):
    for name in ("eg", "m", "q", "b", "train_loss", "train_error"):
        for est in (getattr(result.teacher, name), getattr(result.student, name)):
            assert est.count == 5 and math.isfinite(est.mean) and est.sem > 0
    assert result.student.r.count == 5
    assert result.n_failed == 0 and bool(result.table["converged"].all())
    assert result.table.sizes["seed"] == 5


def test_estimates_are_mean_and_standard_error_of_the_table(result):
    for role, names in (("teacher", ("eg", "q")), ("student", ("eg", "r", "train_loss"))):
        for name in names:
            v = result.table[f"{role}_{name}"].values
            est = getattr(getattr(result, role), name)
            assert est.mean == pytest.approx(np.mean(v), rel=1e-14)  # same numbers, same formula
            assert est.sem == pytest.approx(np.std(v, ddof=1) / np.sqrt(v.size), rel=1e-12)


def test_per_seed_values_are_the_fits_of_that_draw(result):
    # seed s draws (v, y, z), then S, from SeedSequence(seed).spawn(seeds)[s]: redo seed 3 by hand,
    # with scikit-learn for the teacher
    n = 150
    rng = np.random.default_rng(np.random.SeedSequence(11).spawn(5)[3])
    train = sample(PROBLEM.data, n, rng)
    subset = draw_subset(n, PROBLEM.student.eta, rng)
    clf = LogisticRegression(C=1 / PROBLEM.teacher.lam, solver="newton-cholesky", tol=1e-12)
    clf.fit(train.x / np.sqrt(n), train.y)
    w_t, b_t = clf.coef_[0], clf.intercept_[0]
    row = result.table.isel(seed=3)
    m_t, q_t = w_t @ train.v / n, w_t @ w_t / n
    # teacher weights agree to ~1e-9 (see test_sim_fit), so do these smooth functions of them
    assert float(row["teacher_m"]) == pytest.approx(m_t, rel=1e-7)
    assert float(row["teacher_q"]) == pytest.approx(q_t, rel=1e-7)
    assert float(row["teacher_b"]) == pytest.approx(b_t, rel=1e-7)
    # ε_g: the formula of docs/theory.md, written here with erfc
    d = PROBLEM.data
    s = math.sqrt(2 * d.delta * q_t)
    eg = 0.5 * d.rho * math.erfc((m_t + b_t) / s) + 0.5 * (1 - d.rho) * math.erfc((m_t - b_t) / s)
    assert float(row["teacher_eg"]) == pytest.approx(eg, rel=1e-7)  # as above
    student = fit_student(PROBLEM.student, train, train.x @ w_t / np.sqrt(n) + b_t, subset)
    assert float(row["student_q"]) == pytest.approx(student.w @ student.w / n, rel=1e-6)
    assert float(row["student_r"]) == pytest.approx(student.w @ w_t / n, rel=1e-6)  # full-length w
    assert float(row["student_train_error"]) == np.mean(train.y * student.h <= 0)


def test_reproducible_from_seed_alone_and_independent_of_n_jobs(result):
    # seed s does not depend on how many seeds are run, nor on the worker count
    again = run(PROBLEM, n=150, seeds=2, seed=11, n_jobs=2)
    assert again.table.equals(result.table.isel(seed=slice(0, 2)))
    row = simulate_seed(PROBLEM, 150, np.random.SeedSequence(11).spawn(5)[4])
    for key, value in row.items():
        assert result.table[key].values[4] == value
    other = run(PROBLEM, n=150, seeds=2, seed=12)
    assert not np.allclose(other.table["teacher_q"], result.table["teacher_q"].values[:2])


def test_without_kd_the_student_is_the_teacher():
    # an exact identity of docs/theory.md: χ = 0, η = 1, λ = λ̃ gives m = m̃, q = q̃, b = b̃, r = q̃
    p = PROBLEM.replace(chi=0.0, eta=1.0, lam=0.2)
    t = run(p, n=120, seeds=2).table
    for a, b in (("m", "m"), ("q", "q"), ("b", "b"), ("r", "q"), ("eg", "eg")):
        # both fits stop at ‖∇F‖ ≤ 1e-10·M; the remaining error in θ is ≤ ‖∇F‖/λ ≈ 1e-8
        np.testing.assert_allclose(t[f"student_{a}"], t[f"teacher_{b}"], rtol=1e-7)
    np.testing.assert_allclose(t["student_agreement"], 1.0, rtol=1e-9)  # identical classifiers


def test_bayes_teacher_overlaps_have_their_finite_n_means():
    # w̃ = 2v̂/(Δ + s²/N), v̂ = Σ y x/(√N(Δ+α)): E m̃ = 2α/((Δ+α)(Δ+s²/N)) and
    # E q̃ = 4α/((Δ+α)(Δ+s²/N)²) exactly at finite N (docs/theory.md's c α and c²α(α+Δ) as N → ∞)
    data = GaussianMixture(alpha=1.5, rho=0.2, delta=0.5)
    n = 60
    res = run(Problem(data, BayesTeacher(), Student(lam=0.1)), n=n, seeds=40, seed=3)
    a, dl = round(data.alpha * n) / n, data.delta
    s2 = dl / (dl + a)
    assert res.teacher.m.count == 40 and res.n_failed == 0
    # 4 standard errors: a false alarm once in ~16 000 runs
    assert abs(res.teacher.m.mean - 2 * a / ((dl + a) * (dl + s2 / n))) < 4 * res.teacher.m.sem
    assert abs(res.teacher.q.mean - 4 * a / ((dl + a) * (dl + s2 / n) ** 2)) < 4 * res.teacher.q.sem
    np.testing.assert_array_equal(res.table["teacher_b"], math.log(0.2 / 0.8))


def test_failed_fits_are_reported_not_kept():
    # λ̃ = 0 at α = 0.5: every training set is separable, the teacher has no minimiser
    res = run(PROBLEM.replace(alpha=0.5, lam_t=0.0), n=40, seeds=3)
    t = res.table
    assert res.n_failed == 3 and not t["converged"].any()
    assert (t["teacher_status"] == "unbounded").all()
    assert (t["student_status"] == "no_teacher").all()
    assert np.isnan(t["teacher_eg"]).all() and np.isnan(t["student_q"]).all()
    assert res.teacher.eg.count == 0 and math.isnan(res.teacher.eg.mean)
    # fits that run out of iterations: diagnostics kept, values dropped
    res = run(PROBLEM, n=100, seeds=2, max_iter=1)
    assert res.n_failed == 2 and (res.table["teacher_status"] == "max_iter").all()
    assert (res.table["teacher_iterations"] == 1).all()
    assert np.isfinite(res.table["teacher_grad_norm"]).all()


def test_label_noise_trains_on_the_flipped_labels_and_scores_on_clean_ones():
    p = PROBLEM.replace(flip=0.25)
    row = run(p, n=100, seeds=1, seed=5).table.isel(seed=0)
    rng = np.random.default_rng(np.random.SeedSequence(5).spawn(1)[0])
    train = sample(p.data, 100, rng)
    subset = draw_subset(100, p.student.eta, rng)
    assert (train.y_hat != train.y).any()
    clf = LogisticRegression(C=1 / p.teacher.lam, solver="newton-cholesky", tol=1e-12)
    for labels, same in ((train.y_hat, True), (train.y, False)):
        clf.fit(train.x / np.sqrt(100), labels)
        m_t = clf.coef_[0] @ train.v / 100
        # weights agree to ~1e-9 on the right labels; the clean-label fit is another classifier
        assert bool(float(row["teacher_m"]) == pytest.approx(m_t, rel=1e-7)) == same
    w_t, b_t = clf.fit(train.x / np.sqrt(100), train.y_hat).coef_[0], clf.intercept_[0]
    h_t = train.x @ w_t / np.sqrt(100) + b_t
    assert float(row["teacher_train_error"]) == np.mean(train.y_hat * h_t <= 0)  # against ŷ
    # the test error is the clean-label ε_g of (m, q, b): the erfc formula of the test above
    m_t, q_t, d = w_t @ train.v / 100, w_t @ w_t / 100, p.data
    s = math.sqrt(2 * d.delta * q_t)
    eg = 0.5 * d.rho * math.erfc((m_t + b_t) / s) + 0.5 * (1 - d.rho) * math.erfc((m_t - b_t) / s)
    assert float(row["teacher_eg"]) == pytest.approx(eg, rel=1e-7)  # as in that test
    student = fit_student(p.student, train, h_t, subset)
    assert float(row["student_m"]) == pytest.approx(student.w @ train.v / 100, rel=1e-6)
    assert float(row["student_train_error"]) == np.mean(train.y_hat * student.h <= 0)


def test_labels_at_flip_one_half_carry_no_information():
    # θ = ½: ŷ is independent of (x, y) and symmetric, so (w, b) → −(w, b) is a symmetry of the
    # law of every fit and E m = 0 exactly, for the teacher and for the KD student
    res = run(PROBLEM.replace(flip=0.5), n=100, seeds=24, seed=1)
    assert res.n_failed == 0
    for est in (res.teacher.m, res.student.m):
        assert abs(est.mean) < 4 * est.sem  # 4 standard errors: a false alarm once in ~16 000
    # the classifiers are no better than chance on the clean test set: mean ε_g ≥ min(ρ, 1 − ρ)
    # up to 4 standard errors (a biased constant guess is the best an uninformed rule can do)
    assert res.teacher.eg.mean > 0.3 - 4 * res.teacher.eg.sem


def test_tempered_teacher_at_lam_t_squared_is_tempered_both_rescaled():
    # χ = 1: tempered="teacher" at (λT², T) trains (w, b)/T of tempered="both" at (λ, T) on the
    # same draws (test_sim_fit); ε_g depends on (m, q, b) only through m/√q and b/√q
    t, both = 2.0, PROBLEM.replace(chi=1.0, eta=1.0)
    teacher = Problem(
        both.data,
        both.teacher,
        Student(lam=both.student.lam * t * t, chi=1.0, temperature=t, tempered="teacher"),
    )
    a, b = (run(p, n=100, seeds=2, seed=4).table for p in (both, teacher))
    assert a.attrs["tempered"] == "both" and b.attrs["tempered"] == "teacher"
    # fits pinned to ~1e-8 by the gradient tolerance; these are smooth functions of them
    for name, power in (("eg", 0), ("m", 1), ("q", 2), ("b", 1), ("r", 1)):
        np.testing.assert_allclose(b[f"student_{name}"] * t**power, a[f"student_{name}"], rtol=1e-6)
    # T = 1: the two conventions are the same loss, evaluated by the same arithmetic
    one = both.replace(temperature=1.0)
    other = Problem(one.data, one.teacher, dataclasses.replace(one.student, tempered="teacher"))
    a1, b1 = (run(p, n=100, seeds=1).table for p in (one, other))
    for name in ("eg", "m", "q", "b", "r", "train_loss"):
        np.testing.assert_array_equal(b1[f"student_{name}"], a1[f"student_{name}"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 9}, "n must be an int ≥ 10"),
        ({"n": 100.0}, "n must be an int ≥ 10"),
        ({"seeds": 0}, "seeds must be an int ≥ 1"),
        ({"seeds": 2.5}, "seeds must be an int ≥ 1"),
        ({"n_jobs": 0}, "n_jobs must be an int ≥ 1, or -1"),
        ({"n_jobs": -2}, "n_jobs must be an int ≥ 1, or -1"),
        ({"seed": -1}, "seed must be an int ≥ 0"),
        ({"problem": "p"}, "problem must be a Problem"),
    ],
)
def test_bad_input(kwargs, message):
    args = {"problem": PROBLEM, "n": 100, "seeds": 2} | kwargs
    with pytest.raises(ValueError, match=message):
        run(args.pop("problem"), args.pop("n"), args.pop("seeds"), **args)


def test_import_compiles_nothing():
    code = (
        "import simulations, simulations.kernels as k; "
        "print(sum(len(f.signatures) for f in (k.loss_grad, k.hess_vec, k.preact, k.line_derivs)))"
    )
    root = Path(__file__).resolve().parents[2]  # the checkout whose simulations/ is under test
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "0"

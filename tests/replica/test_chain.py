"""The self-distillation chain (replica.solve_chain): identities, limits and the QMC error bar."""

import math

import numpy as np
import pytest

import replica
from kdtheory.problem import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student

# Gauss–Hermite (tensor) vs the composite rules of replica.solve: both ~1e-9 accurate here, and
# both fixed points are converged to 1e-9 relative, so their agreement is bounded by ~1e-8
AGREE = 1e-7


@pytest.mark.parametrize("teacher", [LogisticTeacher(0.1), BayesTeacher()])
@pytest.mark.parametrize("student", [Student(0.05), Student(0.1, chi=0.5, temperature=2.0)])
def test_two_stages_equal_replica_solve(teacher, student):
    """A chain of the teacher and one student is the teacher–student problem: same m, q, b, r and
    the responses R_22 = V, R_21 = V_c (an independent derivation and quadrature)."""
    data = GaussianMixture(2.0, 0.3, 1.0)
    chain = replica.solve_chain(data, teacher, [student])
    sol = replica.solve(Problem(data, teacher, student))
    assert chain.converged and sol.converged
    one, two = chain.stages
    for a, b in ((one.m, sol.teacher.m), (one.q, sol.teacher.q), (one.b, sol.teacher.b)):
        assert a == pytest.approx(b, rel=AGREE, abs=AGREE)
    s = sol.student
    for a, b in ((two.m, s.m), (two.q, s.q), (two.b, s.b), (two.r, s.r), (two.eg, s.eg)):
        assert a == pytest.approx(b, rel=AGREE, abs=AGREE)
    assert chain.R[1, 1] == pytest.approx(s.V, rel=AGREE)
    assert chain.R[1, 0] == pytest.approx(s.Vc, rel=AGREE, abs=AGREE)


@pytest.mark.parametrize("tempered", ["both", "teacher"])
def test_two_stages_with_label_noise_equal_replica_solve(tempered):
    """Label noise θ and either temperature convention: the chain (its own pair sum and rule)
    against replica.solve's channels."""
    data = GaussianMixture(2.5, 0.35, 0.8, flip=0.15)
    student = Student(0.08, chi=0.7, temperature=0.4, tempered=tempered)
    chain = replica.solve_chain(data, LogisticTeacher(0.2), [student])
    sol = replica.solve(Problem(data, LogisticTeacher(0.2), student))
    assert chain.converged and sol.converged
    one, two = chain.stages
    s = sol.student
    assert (one.m, one.q, one.b) == pytest.approx(
        (sol.teacher.m, sol.teacher.q, sol.teacher.b), rel=AGREE
    )
    for a, b in ((two.m, s.m), (two.q, s.q), (two.b, s.b), (two.r, s.r), (two.eg, s.eg)):
        assert a == pytest.approx(b, rel=AGREE, abs=AGREE)
    assert chain.R[1, 0] == pytest.approx(s.Vc, rel=AGREE)


def test_one_stage_is_the_teacher():
    data = GaussianMixture(1.5, 0.4, 0.8)
    chain = replica.solve_chain(data, LogisticTeacher(0.3), [])
    t = replica.solve_teacher(Problem(data, LogisticTeacher(0.3))).teacher
    (one,) = chain.stages
    assert (one.m, one.q, one.b) == pytest.approx((t.m, t.q, t.b), rel=AGREE)
    assert math.isnan(one.r)


def test_chi_zero_restarts_from_the_labels():
    """χ = 0 ignores the previous stage: with the teacher's λ it is the teacher again (same
    weights, so r = q), whatever the stages in between; the labels are the same noisy ones."""
    data = GaussianMixture(2.0, 0.35, 1.0, flip=0.15)
    students = [Student(0.05, temperature=0.5, tempered="teacher"), Student(0.2, chi=0.0)]
    chain = replica.solve_chain(data, LogisticTeacher(0.2), students)
    one, _, three = chain.stages
    # the χ = 0 stage has the same loss as stage 1: equal up to the accuracy of stage 3's rule
    # (order 4 panels in the earlier directions: ~1e-6 relative in q)
    assert (three.m, three.q, three.b) == pytest.approx((one.m, one.q, one.b), rel=1e-5)
    assert chain.Q[2, 0] == pytest.approx(one.q, rel=1e-5)
    assert chain.R[2, 1] == pytest.approx(0.0, abs=1e-12)  # no response to the ignored stage


def test_tempered_conventions_are_rescalings():
    """At χ = 1 the student with tempered="both" at (λ, T) is the tempered="teacher" student at
    (λT², T) with w → w/T: same ε_g, same m/√q and b/√q; at T = 1 the two coincide."""
    data = GaussianMixture(2.0, 0.3, 1.0, flip=0.1)
    teacher, lam, t = LogisticTeacher(0.1), 0.05, 2.5
    both = replica.solve_chain(data, teacher, [Student(lam, temperature=t)]).stages[1]
    only = replica.solve_chain(
        data, teacher, [Student(lam * t * t, temperature=t, tempered="teacher")]
    ).stages[1]
    assert only.eg == pytest.approx(both.eg, rel=AGREE)
    assert only.m * t == pytest.approx(both.m, rel=AGREE)
    assert only.q * t * t == pytest.approx(both.q, rel=AGREE)
    assert only.b * t == pytest.approx(both.b, rel=AGREE)
    one = replica.solve_chain(data, teacher, [Student(lam)]).stages[1]
    two = replica.solve_chain(data, teacher, [Student(lam, tempered="teacher")]).stages[1]
    assert (one.m, one.q, one.b) == (two.m, two.q, two.b)  # the same computation at T = 1


def test_labels_without_information():
    """θ = ½: the labels are independent of x, so m = 0 at every stage, and at ρ = ½ also b = 0
    and ε_g = ½; θ → 1 − θ flips the sign of m (ρ = ½)."""
    students = [Student(0.1, temperature=0.7, tempered="teacher")]
    half = replica.solve_chain(
        GaussianMixture(2.0, 0.5, 1.0, flip=0.5), LogisticTeacher(0.1), students
    )
    for s in half.stages:
        assert abs(s.m) < 1e-8  # E[y f] cancels between the two labels ŷ; 1e-9 solver tolerance
        assert abs(s.b) < 1e-10 and s.eg == pytest.approx(0.5, abs=1e-10)
    a = replica.solve_chain(
        GaussianMixture(2.0, 0.5, 1.0, flip=0.2), LogisticTeacher(0.1), students
    )
    b = replica.solve_chain(
        GaussianMixture(2.0, 0.5, 1.0, flip=0.8), LogisticTeacher(0.1), students
    )
    for s, u in zip(a.stages, b.stages, strict=True):
        assert u.m == pytest.approx(-s.m, rel=1e-9) and u.q == pytest.approx(s.q, rel=1e-9)


def test_noise_hurts_the_teacher():
    """More label noise, worse teacher (θ ∈ {0, 0.1, 0.3}), at fixed λ̃."""
    eg = [
        replica.solve_chain(GaussianMixture(3.0, 0.5, 1.0, flip=f), LogisticTeacher(0.3), [])
        .stages[0]
        .eg
        for f in (0.0, 0.1, 0.3)
    ]
    assert eg[0] < eg[1] < eg[2]


def test_qmc_agrees_with_the_exact_rule():
    """Stages 2 and 3 by randomised QMC (exact_stages=1) agree with the tensor rule within
    4 standard errors plus 1e-6 (the tensor rule's own accuracy at stage 3)."""
    data = GaussianMixture(2.0, 0.5, 1.0, flip=0.2)
    students = [Student(0.1, temperature=0.5, tempered="teacher")] * 2
    exact = replica.solve_chain(data, LogisticTeacher(0.1), students)
    est = replica.solve_chain(data, LogisticTeacher(0.1), students, exact_stages=1, qmc_points=10)
    for e, q in zip(exact.stages[1:], est.stages[1:], strict=True):
        assert q.eg_se > 0.0
        assert abs(q.eg - e.eg) < 4 * q.eg_se + 1e-6


def test_four_stages_use_qmc_with_an_error_bar():
    data = GaussianMixture(2.0, 0.5, 1.0, flip=0.2)
    students = [Student(0.1, temperature=0.5, tempered="teacher")] * 2 + [Student(0.1, chi=0.0)]
    chain = replica.solve_chain(data, LogisticTeacher(0.1), students, qmc_points=10)
    assert chain.converged and len(chain.stages) == 4
    assert [s.eg_se for s in chain.stages[:3]] == [0.0, 0.0, 0.0]
    four, one = chain.stages[3], chain.stages[0]
    assert four.eg_se > 0.0
    # stage 4 (χ = 0, λ = λ̃) is the teacher again: its QMC estimate must cover stage 1's value
    assert abs(four.eg - one.eg) < 4 * four.eg_se + 1e-7


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"students": [Student(0.1, eta=0.5)]}, r"students\[0\]\.eta must be 1"),
        ({"students": [Student(0.0)]}, r"students\[0\]\.lam must be > 0"),
        ({"students": Student(0.1)}, "students must be a sequence"),
        ({"teacher": LogisticTeacher(0.0)}, r"teacher\.lam must be > 0"),
        ({"teacher": BayesTeacher(), "data": GaussianMixture(2.0, flip=0.1)}, "flip must be 0"),
        ({"nodes": (10, 10)}, "nodes must give 3"),
        ({"qmc_points": 40}, "qmc_points must be in"),
        ({"orders": (4,)}, "orders must give 2"),
        ({"exact_stages": 0}, "exact_stages must be in"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, match):
    args = {"data": GaussianMixture(2.0), "teacher": LogisticTeacher(0.1), "students": []}
    args.update(kwargs)
    data, teacher, students = args.pop("data"), args.pop("teacher"), args.pop("students")
    with pytest.raises(ValueError, match=match):
        replica.solve_chain(data, teacher, students, **args)


def test_symmetric_clusters_have_no_bias():
    chain = replica.solve_chain(
        GaussianMixture(1.5, 0.5, 1.0), BayesTeacher(), [Student(0.1), Student(0.1, chi=0.5)]
    )
    assert np.max(np.abs([s.b for s in chain.stages])) < 1e-10  # ρ = ½: b = 0 by symmetry


def test_optimal_self_distillation_beats_its_alternatives_and_not_bayes():
    """The greedy optimum (hard pseudo-labels, two stages) is no worse than a few other students
    on the same optimal teacher, and the noiseless problem's Bayes error bounds every stage."""
    data = GaussianMixture(2.0, 0.4, 1.0, flip=0.2)
    opt = replica.optimise_chain(data, 2, hard=True)
    assert opt.solution.converged
    eg1, eg2 = opt.eg
    for lam in (0.01, 0.3, 10.0):
        other = replica.solve_chain(
            data, opt.teacher, [Student(lam, 1.0, opt.students[0].temperature, tempered="teacher")]
        )
        # the search runs on a coarser rule (~5e-6) and stops at a relative step of 1e-2 in λ
        assert eg2 <= other.stages[1].eg + 1e-5
    for lam_t in (0.03, 1.0):  # and stage 1 is the best teacher
        t = replica.solve_chain(data, LogisticTeacher(lam_t), [])
        assert eg1 <= t.stages[0].eg + 1e-5
    bayes = replica.bayes_error(GaussianMixture(2.0, 0.4, 1.0))
    assert bayes < min(eg1, eg2)  # no stage beats the clean-label Bayes error


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_coarse_start_reaches_the_same_fixed_point(temperature, monkeypatch):
    """Stages 2 and 3 from the coarse rules' fixed point and Jacobian (``_coarse_start``) and from
    the default start (the coarse start switched off) are the same fixed point of the same rule:
    both converged to a relative step of 1e-9 (tol), so they agree to ~1e-9 (1e-8: a margin
    of 10 for the map's conditioning)."""
    from replica import chain as chain_module

    data = GaussianMixture(2.0, 0.5, 1.0, flip=0.2)
    students = [Student(0.1, 1.0, temperature, tempered="teacher")] * 2
    rule = {"nodes": (64, 16, 8), "orders": (3, 2)}
    used, coarse_start = [], chain_module._coarse_start

    def spy(*args):
        out = coarse_start(*args)
        used.append(out is not None)
        return out

    monkeypatch.setattr(chain_module, "_coarse_start", spy)
    fast = replica.solve_chain(data, LogisticTeacher(0.1), students, **rule)
    assert used == [True, True]  # (stages 2 and 3 did start from it)
    monkeypatch.setattr(chain_module, "_coarse_start", lambda *args: None)
    plain = replica.solve_chain(data, LogisticTeacher(0.1), students, **rule)
    assert fast.converged and plain.converged
    for a, b in zip(fast.stages, plain.stages, strict=True):
        for name in ("m", "q", "b", "r", "V", "eg"):
            x, y = getattr(a, name), getattr(b, name)
            assert x == pytest.approx(y, rel=1e-8, abs=1e-8) or (math.isnan(x) and math.isnan(y))


def test_earlier_stages_replayed_once_per_prefix_row():
    """The solved stages depend on ξ_0..ξ_{t−1} only: their values at stage 3's nodes, copied from
    the prefix rows (``_nested_rule``), equal a fresh evaluation at every node (exactly: the
    same arithmetic per node)."""
    from replica.chain import _Chain, _losses, _nested_rule, _Nodes

    data = GaussianMixture(2.0, 0.5, 1.0, flip=0.2)
    teacher, students = LogisticTeacher(0.1), [Student(0.1, 1.0, 0.2, tempered="teacher")] * 2
    sol = replica.solve_chain(data, teacher, students[:1], nodes=(64, 16, 8), orders=(3, 2))
    chain = _Chain(data, _losses(data, teacher, students))
    for t in range(2):
        chain.restore(sol, t)
    nd = _nested_rule(chain, 2, 8, 2)
    fresh = _Nodes(nd.y, nd.yhat, nd.w, nd.xi)
    chain.replay(fresh, 2)
    for name in ("h", "f", "dh", "df"):
        for a, b in zip(getattr(nd, name), getattr(fresh, name), strict=True):
            np.testing.assert_array_equal(a, b)

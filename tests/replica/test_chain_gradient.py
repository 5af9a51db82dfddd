"""Derivatives of the self-distillation chain (replica.chain_gradient) and its joint optimum.

Checks: a two-stage chain's derivatives equal ``replica.gradient``'s analytic ones for the same
teacher–student problem (an independent derivation, kernel and rule); three-stage chains against
central differences of ``solve_chain`` itself (slow); the joint optimum is no worse than the
greedy one and stationary (slow)."""

import math
from dataclasses import replace

import numpy as np
import pytest

import replica
from kdtheory.problem import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from replica.chain import COARSE

# the chain and replica.solve agree to ~1e-8 in the states (test_chain.AGREE); the derivatives,
# IFT on either side with map Jacobians to ~1e-9, agreed to 4e-10 here: 1e-7 leaves margin
AGREE = 1e-7


@pytest.mark.parametrize(
    "teacher, data, student",
    [
        (LogisticTeacher(0.1), GaussianMixture(2.0, 0.3, 1.0, 0.1), Student(0.05, 0.8, 0.7)),
        (
            LogisticTeacher(0.2),
            GaussianMixture(1.5, 0.5, 1.0, 0.2),
            Student(0.1, 1.0, 0.1, tempered="teacher"),
        ),
        (BayesTeacher(), GaussianMixture(2.0, 0.4, 0.8), Student(0.05, 0.5, 2.0)),
    ],
)
def test_two_stages_equal_replica_gradient(teacher, data, student):
    """Stage 2 of a chain is replica.solve's student: dε_2 = dε_g and dε_1 = dε̃_g in every
    parameter (λ̃, λ, T, χ), label noise θ > 0, both temperature conventions, Bayes teacher."""
    chain = replica.solve_chain(data, teacher, [student], **COARSE)
    sol = replica.solve(Problem(data, teacher, student))
    assert chain.converged and sol.converged
    g = replica.chain_gradient(chain)
    names = {"lam_t": "lam_t", "lam_2": "lam", "temperature_2": "temperature", "chi_2": "chi"}
    ref = replica.gradient(sol, [names[k] for k in g.wrt])
    np.testing.assert_allclose(g.eg[1], ref.vector("eg"), atol=AGREE)
    np.testing.assert_allclose(g.eg[0], ref.vector("eg_t"), atol=AGREE)
    np.testing.assert_allclose(g.q[1], ref.vector("q"), rtol=1e-6, atol=AGREE)
    # the step-sensitivity estimate where the map is smooth: ≲ the agreement above
    assert np.max(g.eg_error) < AGREE


def test_chain_gradient_refuses_bad_input():
    data = GaussianMixture(2.0, 0.5, 1.0, 0.1)
    chain = replica.solve_chain(data, LogisticTeacher(0.1), [Student(0.05)], **COARSE)
    with pytest.raises(ValueError, match="unknown parameter 'lam_3'"):
        replica.chain_gradient(chain, ["lam_3"])
    with pytest.raises(ValueError, match="wrt must be a list"):
        replica.chain_gradient(chain, "lam_t")
    with pytest.raises(ValueError, match="each once"):
        replica.chain_gradient(chain, ["lam_2", "lam_2"])
    with pytest.raises(ValueError, match="did not converge"):
        replica.chain_gradient(replace(chain, converged=False, message="x"))
    with pytest.raises(ValueError, match="joint"):
        replica.optimise_chain(data, 2, joint=1)


def _moved(teacher, students, name, z):
    """The chain with parameter ``name`` moved by z in log λ, log T or χ."""
    if name == "lam_t":
        return LogisticTeacher(teacher.lam * math.exp(z)), students
    field, stage = name.rsplit("_", 1)
    s = list(students)
    old = s[int(stage) - 2]
    value = getattr(old, field)
    s[int(stage) - 2] = replace(
        old, **{field: value + z if field == "chi" else value * math.exp(z)}
    )
    return teacher, s


@pytest.mark.slow
@pytest.mark.parametrize(
    "lams, temperatures, tempered",
    [
        ((0.1, 0.05, 0.1), (0.5, 0.5), "teacher"),
        ((0.1, 0.05, 0.1), (0.05, 0.5), "both"),
        ((0.1, 0.05, 0.1), (1.0, 0.05), "teacher"),
        ((100.0, 100.0, 1.0), (0.02, 0.02), "teacher"),  # near the greedy optimum: tiny states
    ],
)
def test_three_stages_against_central_differences(lams, temperatures, tempered):
    """Every stage's ε_t against central differences of solve_chain (step 1e-3 in log λ, log T, χ:
    truncation ~1e-6·ε‴, the rule's re-placement noise ≲ 1e-7/1e-3): soft and nearly hard T."""
    data = GaussianMixture(2.0, 0.5, 1.0, 0.2)
    teacher = LogisticTeacher(lams[0])
    students = [
        Student(lams[1], 1.0, temperatures[0], tempered=tempered),
        Student(lams[2], 0.7, temperatures[1], tempered=tempered),
    ]
    chain = replica.solve_chain(data, teacher, students)
    assert chain.converged
    names = ("lam_t", "temperature_2", "lam_3", "temperature_3", "chi_3")
    g = replica.chain_gradient(chain, names)
    h = 1e-3
    for name in names:
        up = replica.solve_chain(data, *_moved(teacher, students, name, h), init=chain)
        dn = replica.solve_chain(data, *_moved(teacher, students, name, -h), init=chain)
        fd = (up.eg - dn.eg) / (2 * h)
        field, _, stage = name.rpartition("_")
        who = teacher if name == "lam_t" else students[int(stage) - 2]
        scale = 1.0 if field == "chi" else getattr(who, "lam" if name == "lam_t" else field)
        # 1e-5 absolute on dε/dlog θ of order 1e-2: the noise bound above, with margin
        np.testing.assert_allclose(g[name] * scale, fd, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_joint_optimum_no_worse_than_greedy_and_stationary():
    """The joint optimum of ε_3 over (λ̃, λ_2, T_2, λ_3, T_3) is at most the greedy ε_3 (it starts
    there and keeps the start unless it improves), and its gradient vanishes off the box."""
    data = GaussianMixture(2.0, 0.5, 1.0, 0.2)
    opt = replica.optimise_chain(data, 3, joint=True)
    greedy = opt.greedy
    assert opt.solution.converged and greedy is not None
    # the search runs on the COARSE rule (~5e-6 in stage 3), the results on the default one
    assert opt.eg[-1] <= greedy.eg[-1] + 1e-5
    names = ["lam_t"] + [f"{p}_{t}" for t in (2, 3) for p in ("lam", "temperature")]
    values = [opt.teacher.lam] + [v for s in opt.students for v in (s.lam, s.temperature)]
    g = replica.chain_gradient(opt.solution, names).eg[-1] * np.array(values)
    lo, hi = np.log([1e-3, 0.02]), np.log([1e2, 20.0])
    z = np.log(values)
    side = [int(k.startswith("temp")) for k in names]  # 0: a λ, 1: a T
    free = [
        abs(gk) for gk, zk, i in zip(g, z, side, strict=True)
        if not (np.isclose(zk, lo[i]) or np.isclose(zk, hi[i]))
    ]  # fmt: skip
    # stationary to the search's resolution on the coarse rule: |dε/dlog θ| ≲ 1e-4
    assert max(free, default=0.0) < 1e-4


def test_last_stage_of_three_against_central_differences():
    """A three-stage chain with a strong ridge (tiny states, q ~ 1e-5), nearly hard labels, stage 3
    close to the earlier stages (the greedy optimum at α = 2, θ = 0.2): ∂ε_3 in the last stage's
    λ_3 and χ_3 against central differences of solve_chain warm-started from it (stages 1–2
    reused, so stage 3 is re-solved on the same nodes; not T_3: it places the breakpoints of stage
    3's rule along stage 2's direction, so a difference in T_3 also moves the rule)."""
    data = GaussianMixture(2.0, 0.5, 1.0, 0.2)
    teacher = LogisticTeacher(100.0)
    students = [Student(100.0, 1.0, 0.02, tempered="teacher"), Student(1.0, 0.9, 0.02)]
    rule = {"nodes": (64, 16, 8), "orders": (3, 2)}  # a lean rule: the identity holds on any
    chain = replica.solve_chain(data, teacher, students, **rule)
    assert chain.converged
    names = ("lam_3", "chi_3")
    g = replica.chain_gradient(chain, names)
    h = 1e-4
    for name in names:
        eg = [
            replica.solve_chain(data, *_moved(teacher, students, name, z), init=chain, **rule).eg
            for z in (h, -h)
        ]
        fd = (eg[0] - eg[1]) / (2 * h)
        field = name.rsplit("_", 1)[0]
        scale = 1.0 if field == "chi" else getattr(students[1], field)
        # same nodes on both sides: truncation ~h², and the fixed points' tol 1e-9 over h = 1e-4,
        # ~1e-5 relative (measured: 2e-6 relative)
        np.testing.assert_allclose(g[name] * scale, fd, rtol=1e-4, atol=1e-10, err_msg=name)

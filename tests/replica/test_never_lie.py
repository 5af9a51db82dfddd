"""No false fixed points (issue 24): the chain's runaway bias, its cross-check against
``replica.solve``, the same trap in ``replica.solve``, and the argument gaps of ``solve_chain``,
``gradient``, ``optimise`` and ``optimise_chain``."""

import dataclasses
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import replica
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from replica import chain as ch
from replica.quadrature import gauss_hermite

G, L, S = GaussianMixture, LogisticTeacher, Student

_spec = importlib.util.spec_from_file_location(
    "robustness", Path(__file__).resolve().parents[2] / "benchmarks" / "robustness.py"
)
robustness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(robustness)


def test_runaway_bias_is_a_fixed_point_of_the_discretised_map_but_not_of_the_bias_equation():
    """The issue's first reproduction: at b = 1.27e6 every field saturates the logistic loss, so
    E[∂f/∂ω] rounds to 0; the old map kept b there (residual exactly 0).  The state fails the
    bias equation E[f] = 0 by E[f] = −P(ŷ = −1) (all those points pushed down at full force)."""
    data = G(4.0, 0.3, 0.15, flip=0.4)
    chain = ch._Chain(data, ch._losses(data, L(0.1), []))
    x1, w1 = gauss_hermite(96)
    nodes = ch._Nodes.product(data, x1[:, None], w1)
    x = np.array([0.33, 1.27e6, 176.4, 4.6])  # (m, b, q, V) of the reported state
    x_new, extra = chain.update(nodes, 0, x)
    mean_f = float(nodes.w @ extra[1])
    p_minus = data.rho * data.flip + (1 - data.rho) * (1 - data.flip)  # P(ŷ = −1)
    assert mean_f == pytest.approx(-p_minus, rel=1e-12)  # f = −sig(h) = −1 to rounding
    assert float(nodes.w @ extra[3][:, 0]) == 0.0  # the flat loss
    why = ch._not_fixed_point(chain, nodes, 0, x, extra, 1e-9)
    assert "bias equation E[f] = 0 fails" in why
    assert x_new[1] < x[1]  # the capped step moves b back (by 1 + 3√(Δq) = 16.4)


def test_reported_wrong_teachers_now_agree_with_solve_teacher():
    for lam_t in (0.1, 10**-2.5):
        data, teacher = G(4.0, 0.3, 0.15, flip=0.4), L(lam_t)
        sol = replica.solve_chain(data, teacher, [])
        ref = replica.solve_teacher(Problem(data, teacher, S(1.0)))
        assert sol.converged and ref.converged
        # stage 1 is solve_teacher's fixed point (solved to 1e-10)
        assert sol.stages[0].eg == pytest.approx(ref.teacher.eg, abs=1e-12)
        assert abs(sol.stages[0].b) < 1.0  # not the runaway 1.27e6 / −9.6e6


def test_reported_wrong_student_now_agrees_with_solve():
    data, teacher, student = G(3.0, 0.2, 0.2, flip=0.3), L(0.5), S(0.005, chi=0.8)
    sol = replica.solve_chain(data, teacher, [student])
    ref = replica.solve(Problem(data, teacher, student))
    assert sol.converged and ref.converged
    # two solvers, two quadratures (nested product rule vs composite rules): agree to 1e-6
    assert sol.stages[1].eg == pytest.approx(ref.student.eg, abs=1e-6)
    assert sol.stages[1].eg == pytest.approx(0.1433146, abs=1e-6)  # not the reported 0.80


def test_node_and_temperature_caps_are_refused_up_front():
    data, teacher = G(2.0, flip=0.2), L(0.1)
    with pytest.raises(ValueError, match=r"nodes\[0\] must be in \[4, 300\]"):
        replica.solve_chain(data, teacher, [S(0.1)], nodes=[400, 400, 400])
    with pytest.raises(ValueError, match=r"students\[0\]\.temperature must be in \[0\.001"):
        replica.solve_chain(data, teacher, [S(0.1, temperature=1e-9)])
    with pytest.raises(ValueError, match="nodes must be a sequence of 3 ints"):
        replica.solve_chain(data, teacher, [S(0.1)], nodes=5)


def test_gauss_hermite_is_exact_up_to_the_node_cap():
    """At the cap (300 nodes) numpy's rule is finite and integrates E ξ^{2k} = (2k − 1)!!."""
    with pytest.raises(ValueError, match="n = 371 nodes overflow"):
        gauss_hermite(371)
    x, w = gauss_hermite(ch.MAX_NODES)
    assert np.all(np.isfinite(w)) and w.sum() == pytest.approx(1.0, abs=1e-14)
    for k, moment in ((1, 1.0), (2, 3.0), (4, 105.0)):
        # Gaussian moments of low degree: exact up to rounding (relative 1e-12)
        assert w @ x ** (2 * k) == pytest.approx(moment, rel=1e-12)


def test_stage_and_qmc_caps():
    data, teacher = G(2.0, flip=0.2), L(0.1)
    with pytest.raises(ValueError, match="students must have at most 5 entries"):
        replica.solve_chain(data, teacher, [S(0.1)] * 6)
    with pytest.raises(ValueError, match=r"qmc_points = 22 with 4 stages needs ~16\.0 GiB"):
        replica.solve_chain(data, teacher, [S(0.1)] * 3, qmc_points=22, qmc_repeats=64)
    with pytest.raises(ValueError, match=r"qmc_repeats·2\^qmc_points must be ≤ 2\^20"):
        replica.solve_chain(data, teacher, [S(0.1)] * 3, qmc_points=16, qmc_repeats=32)
    # the caps bite only where QMC runs: 3 stages are exact and take any qmc_points
    assert replica.solve_chain(data, teacher, [S(1.0)], qmc_points=22, qmc_repeats=64).converged


def test_solve_does_not_fall_into_the_trap_from_a_runaway_warm_start():
    """A warm start at b = 1e12 made replica.solve's capped bias step 1e-11 of |b| (below tol):
    ε = 0.7 "converged".  Now it restarts cold and finds the cold solution."""
    p = Problem(G(4.0, 0.3, 0.15, flip=0.4), L(0.1), S(0.05, chi=0.8))
    cold = replica.solve(p)
    bad = dataclasses.replace(cold, student=dataclasses.replace(cold.student, b=1e12))
    warm = replica.solve(p.replace(lam=0.06), init=bad)
    ref = replica.solve(p.replace(lam=0.06))
    assert warm.converged
    assert warm.student.eg == pytest.approx(ref.student.eg, abs=1e-9)  # both solved to 1e-10
    assert replica.solver._runaway_bias(cold) == ""
    assert "bias ran away" in replica.solver._runaway_bias(bad)


def test_seeded_chains_agree_with_solve():
    """A seeded slice of ``benchmarks/robustness.py``'s chain fuzz (two stages, the issue's box):
    no stage marked converged disagrees with ``replica.solve`` (ε, m, q, b) by more than 1e-6."""
    params = robustness.random_chains(24, seed=24)
    seen = 0
    for p in params:
        p = {**p, "students": p["students"][:1]}
        out = robustness.chain_one(p, refined=False)
        assert out["status"] != "exception", out["message"]
        assert out["silent"] == 0, (p, out)
        seen += sum(s["converged"] and s["gap"] == s["gap"] for s in out["stages"])
    assert seen >= 40  # most of the 48 stages are checked


def test_gradient_default_wrt_and_argument_checks():
    sol = replica.solve(Problem(G(2.0, 0.3), BayesTeacher(), S(0.1, 0.5)))
    grad = replica.gradient(sol)  # the default: every parameter of a Bayes-teacher problem
    assert grad.wrt == ("alpha", "rho", "delta", "lam", "chi", "temperature", "eta")
    with pytest.raises(ValueError, match=r"wrt must be a list of parameter names"):
        replica.gradient(sol, "lam")
    with pytest.raises(ValueError, match="wrt must name distinct parameters"):
        replica.gradient(sol, ["lam", "lam"])
    with pytest.raises(ValueError, match="lam_t is not a parameter of the Bayes teacher"):
        replica.gradient(sol, ["lam_t"])


@pytest.mark.parametrize(
    "problem",
    [
        Problem(G(1e-300, 0.3), L(0.1), S(0.1)),
        Problem(G(2.0, 0.3, 1e-300), L(0.1), S(0.1)),
        Problem(G(2.0, 0.3), L(0.1), S(0.1, eta=1e-300)),
    ],
)
def test_gradient_refuses_states_that_underflow(problem):
    sol = replica.solve(problem)
    assert sol.converged
    with pytest.raises(ValueError, match=r"Δq = .* is below 1e-100"):
        replica.gradient(sol)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"over": "lam"}, "over must be a list of parameter names"),
        ({"over": ["lam", "lam"]}, "over must name distinct parameters"),
        ({"bounds": {"lam": ("a", "b")}}, r"bounds\['lam'\]\[0\] must be a real number"),
        ({"bounds": {"lam": (1e-3, 1.0, 2.0)}}, r"bounds\['lam'\] must be a pair"),
        ({"bounds": {"lam": 1.0}}, r"bounds\['lam'\] must be a pair"),
        ({"over": ["chi"], "bounds": {"chi": (-1, 2)}}, r"bounds\['chi'\]\[0\] must be in \[0"),
        ({"over": ["flip"], "bounds": {"flip": (0, 2)}}, r"bounds\['flip'\]\[1\] must be in"),
        ({"bounds": {"lam": (0.0, 1.0)}}, r"bounds\['lam'\]\[0\] must be in \(0"),
        ({"bounds": {"lam": (1.0, 0.1)}}, r"bounds\['lam'\] must have lo < hi"),
        ({"bounds": [("lam", (0.1, 1.0))]}, "bounds must be a mapping"),
        ({"max_iter": 0}, r"max_iter must be in \[1"),
    ],
)
def test_optimise_refuses_bad_arguments_before_any_solve(kwargs, match, monkeypatch):
    monkeypatch.setattr(sys.modules["replica.optimise"], "solve", None)  # a solve: TypeError
    p = Problem(G(2.0, 0.3, flip=0.1), L(0.1), S(0.1, 0.5))
    args = {"over": ["lam"], **kwargs}
    with pytest.raises(ValueError, match=match):
        replica.optimise(p, **args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lam_range": (1e-3,)}, "lam_range must be a pair"),
        ({"lam_range": 1.0}, "lam_range must be a pair"),
        ({"temperature_range": (1e-9, 1.0)}, r"temperature_range\[0\] must be in \[0\.001"),
        ({"hard_temperature": 1e-6}, r"hard_temperature must be in \[0\.001"),
    ],
)
def test_optimise_chain_refuses_bad_ranges(kwargs, match):
    with pytest.raises(ValueError, match=match):
        replica.optimise_chain(G(2.0, flip=0.2), 2, **kwargs)


def test_fuzz_helpers_are_legal():
    """The fuzz boxes make legal problems (so a refusal in the fuzz is the solver's, not the box's)."""
    for p in robustness.random_chains(50):
        data, teacher, students = robustness.make_chain(p)
        assert 2 <= len(students) + 1 <= 3 and math.isfinite(data.alpha)
        assert isinstance(teacher, LogisticTeacher) or data.flip == 0.0  # Bayes: clean labels
    assert len(robustness.random_gradient_problems(10)) == 10

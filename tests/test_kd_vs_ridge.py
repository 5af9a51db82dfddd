"""benchmarks/kd_vs_ridge.py: the paired finite-N check of the KD-vs-ridge gain of the limit."""

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import simulations
from kdtheory import LogisticTeacher

_SPEC = importlib.util.spec_from_file_location(
    "kd_vs_ridge", Path(__file__).resolve().parents[1] / "benchmarks" / "kd_vs_ridge.py"
)
kd_vs_ridge = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(kd_vs_ridge)


def test_extrapolation_recovers_an_exact_one_over_n_law():
    ns = np.array([500, 1000, 2000, 4000])
    d_inf, se, c = kd_vs_ridge.extrapolate(ns, 0.002 - 0.3 / ns, np.full(4, 1e-4))
    # exact data: only rounding separates the fit from the law
    assert d_inf == pytest.approx(0.002, abs=1e-12) and c == pytest.approx(-0.3, rel=1e-9)
    # s.e. of the intercept of a weighted fit: below the single-point s.e. here
    assert 0 < se < 2e-4


@pytest.mark.slow
def test_pairing_draws_the_same_data_for_both_students():
    """A χ = 0 student never sees its teacher: with the same seed it must come out identical under a
    logistic and a Bayes teacher — the data depend on the seed and (α, ρ, Δ, N) only."""
    _, ridge, _ = kd_vs_ridge.optimal_problems(0.3, 1.0)
    a = simulations.run(ridge, n=200, seeds=4, seed=3).table["student_eg"].values
    logistic = replace(ridge, teacher=LogisticTeacher(0.5))
    b = simulations.run(logistic, n=200, seeds=4, seed=3).table["student_eg"].values
    np.testing.assert_array_equal(a, b)
    c = simulations.run(ridge, n=200, seeds=4, seed=4).table["student_eg"].values
    assert not np.array_equal(a, c)  # another root seed: other data


@pytest.mark.slow
def test_kd_beats_ridge_at_finite_n_paired_by_seed():
    """N = 400, 40 seeds: the paired difference is positive and near the theory's Δ∞ ≈ 0.002."""
    kd, ridge, theory = kd_vs_ridge.optimal_problems(0.3, 1.0)
    r = kd_vs_ridge.paired_differences(kd, ridge, 400, 40, seed=0, jobs=1)
    mean, sem = kd_vs_ridge.mean_sem(r["d"])
    assert r["failed"] == 0
    assert mean > 4 * sem
    # 4 s.e. plus a finite-N allowance: |c|/N with |c| ≲ 0.2 (measured c ≈ −0.02 at N ≥ 1000)
    assert mean == pytest.approx(theory["gain"], abs=4 * sem + 0.2 / 400)
    # pairing removes most of the noise: the paired s.e. is far below either student's
    assert sem < 0.2 * kd_vs_ridge.mean_sem(r["kd"])[1]


@pytest.mark.slow
def test_benchmark_runs_end_to_end(capsys):
    assert kd_vs_ridge.main(["--n", "200", "400", "--seeds", "6", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "extrapolated d(N) = d∞ + c/N" in out and "best ridge student" in out

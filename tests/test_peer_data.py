"""The peer comparison (Takanami, Takahashi & Sakata 2025): the data read off their figure, the
re-implementation of their Monte-Carlo equations, and the comparison script's command line."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit

import replica
from kdtheory import GaussianMixture, LogisticTeacher, Problem

_ROOT = Path(__file__).resolve().parents[1]
_DATA = json.loads((_ROOT / "benchmarks" / "data" / "takanami2025_bce.json").read_text())


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tc = _load("takanami_comparison", _ROOT / "benchmarks" / "takanami_comparison.py")


def test_data_holds_their_grid_and_parameters():
    # their `range(1.0, 6.0, length = 20)`, stored to 6 decimals
    np.testing.assert_allclose(_DATA["alpha"], np.linspace(1.0, 6.0, 20), atol=1e-6)
    par = _DATA["parameters"]
    assert (par["rho"], par["delta"], par["theta"]) == (0.4, 0.5, 0.2)
    assert len(par["lam"]) == par["stages"] == len(par["beta"]) + 1 == 3
    assert {(p["stage"], p["alpha"]) for p in _DATA["experiment"]} == {
        (k, a) for k in (1, 2, 3) for a in (1.5, 3.0, 5.0)
    }


def test_read_curves_pass_exact_checks():
    """Stage 3 predicts the majority class at small α: ε_g = ρ exactly in their theory, so the
    plateau tests the calibration of the reading; every curve decreases with α."""
    rho = _DATA["parameters"]["rho"]
    alpha = np.array(_DATA["alpha"])
    stage3 = np.array(_DATA["theory"]["3"]["eg"])
    # reading accuracy of the curves (0.7 px of the image), stated in the data's provenance
    assert np.abs(stage3[alpha < 2.4] - rho).max() < 5e-4
    for k in ("1", "2", "3"):
        # a decreasing curve, up to the same reading accuracy
        assert np.diff(_DATA["theory"][k]["eg"]).max() < 5e-4
    # their error bars: std/√20 ≥ 0, zero only on the plateau (every trial gives ρ)
    assert all(p["se"] is None or p["se"] >= 0 for p in _DATA["experiment"])


@pytest.mark.parametrize("dchi", [1e-3, 1.0, 5e3])
def test_prox_solves_its_equation(dchi):
    rng = np.random.default_rng(1)
    omega = rng.uniform(-30, 30, (3, 500))
    target = np.array([[0.0], [1.0], [0.3]])
    z = tc._prox_bce(omega, target, dchi)
    residual = z / dchi + expit(omega + z) - target
    # the solver stops at |g| ≤ 1e-14; rounding of z/(Δχ) and sig adds ~1e-16
    assert np.abs(residual).max() < 1e-13


@pytest.mark.slow
def test_their_one_stage_equations_agree_with_the_exact_teacher():
    """Their estimator for one noiseless stage converges to replica.solve_teacher (the same
    equations, quadrature instead of 4·10⁴ Monte-Carlo samples)."""
    par = dict(_DATA["parameters"], theta=0.0, lam=[1.5], beta=[])
    exact = replica.solve_teacher(Problem(GaussianMixture(3.0, 0.4, 0.5), LogisticTeacher(1.5)))
    mc = tc.peer_monte_carlo(3.0, par, nsamp=40_000, seed=0)
    # Monte-Carlo spread of ε_g at 10⁴ samples is ≈ 0.0009 (measured), so ≈ 0.0005 at 4·10⁴: 4 s.e.
    assert mc["eg"][0] == pytest.approx(exact.teacher.eg, abs=2e-3)
    assert mc["m"][0] == pytest.approx(exact.teacher.m, rel=2e-2)
    assert mc["q"][0] == pytest.approx(exact.teacher.q, rel=2e-2)


@pytest.mark.parametrize(
    "argv", [["--n", "5"], ["--seeds", "1"], ["--peer-mc", "1"], ["--nsamp", "10"]]
)
def test_cli_refuses_bad_arguments_with_one_line(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        tc.main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("takanami_comparison: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing written


def test_cli_needs_the_chain_solver(tmp_path, capsys, monkeypatch):
    monkeypatch.delattr(tc.replica, "solve_chain", raising=False)
    with pytest.raises(SystemExit) as exc:
        tc.main(["--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "replica.solve_chain is missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

"""Joint optimisation of the metaparameters (``optimise_point``, repeated ``--optimise``) and the
``--figures optimal`` set (kdtheory.figures.optimal): the optimum against a brute-force grid, the bound
flags, the journal's fields, bad input, and the set end to end (files, summary lines, resume)."""

import argparse
import contextlib
import io
import math

import numpy as np
import pytest
import xarray as xr
from scipy.optimize import minimize

import replica
from kdtheory import sweep as sweep_module
from kdtheory.figures import optimal
from kdtheory.figures.optimal import MAPS, Grids, run_optimal
from kdtheory.phase_diagram import main
from kdtheory.problem import GaussianMixture, LogisticTeacher, Problem, Student
from kdtheory.sweep import Axis, Optimise, Sweep, _validator, optimise_point, run_sweep

P = Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05, 1.0, 1.0, 0.5))


def test_joint_optimum_equals_a_brute_force_grid_refined_locally():
    """min over (χ, T) at fixed λ: a 7 × 7 grid in (χ, log T), refined by Nelder–Mead from its best
    cell, against optimise_point; they agree to 1e-6 in ε_g (Powell stops at 1e-8 in ε_g and 1e-3
    of each box width, the refinement at 1e-10; at a smooth minimum a 1e-3 step moves ε_g ≪ 1e-6)."""
    opts = (Optimise("chi", 0.0, 1.0), Optimise("temperature", 0.2, 5.0))
    sol, arg = optimise_point(P, opts)

    def eg(x):
        s = replica.solve(P.replace(chi=float(x[0]), temperature=math.exp(x[1])))
        return s.student.eg if s.converged else math.inf

    lo, hi = np.array([0.0, math.log(0.2)]), np.array([1.0, math.log(5.0)])
    grid = [(c, t) for c in np.linspace(lo[0], hi[0], 7) for t in np.linspace(lo[1], hi[1], 7)]
    best = min(grid, key=eg)
    ref = minimize(eg, best, method="Nelder-Mead", bounds=list(zip(lo, hi, strict=True)),
                   options={"xatol": 1e-5, "fatol": 1e-10})  # fmt: skip
    assert (
        sol.converged and sol.student.eg <= eg(best) + 1e-9
    )  # no worse than the grid (solver tol)
    assert sol.student.eg == pytest.approx(ref.fun, abs=1e-6)
    assert (
        sol.problem.student.chi == arg["chi"]
        and sol.problem.student.temperature == arg["temperature"]
    )


def test_an_optimum_outside_the_box_is_flagged_at_its_bound():
    """With λ ∈ [2, 10], far above the best λ (≈ 0.04–0.3 here, larger λ only flattens the student),
    the optimum is λ* = 2 (within Powell's 1e-3 of the log-width) and flagged; its flags are
    those of ``at_bound`` for every optimised parameter."""
    opts = (Optimise("lam", 2.0, 10.0), Optimise("chi", 0.0, 1.0))
    ds = run_sweep(Sweep(P, (Axis("eta", (0.5,)),), optimise=opts), progress=False)
    assert abs(math.log(ds["lam_opt"].values[0] / 2.0)) <= 2e-3 * math.log(5.0)
    assert ds["lam_at_bound"].values[0] == 1
    chi = float(ds["chi_opt"].values[0])
    assert ds["chi_at_bound"].values[0] == int(min(chi, 1 - chi) <= 1e-3)


def test_single_optimise_keeps_its_description_and_several_are_listed():
    one = Sweep(P, (Axis("alpha", (1.0,)),), optimise=Optimise("lam", 1e-4, 10.0))
    assert one.optimise == (Optimise("lam", 1e-4, 10.0),)
    assert one.describe()["optimise"] == ["lam", 1e-4, 10.0]  # the format of earlier journals
    two = Sweep(P, (Axis("alpha", (1.0,)),), {"nokd": {"chi": 0.0}},
                (Optimise("lam", 1e-4, 10.0), Optimise("chi", 0.0, 1.0)))  # fmt: skip
    assert two.describe()["optimise"] == [["lam", 1e-4, 10.0], ["chi", 0.0, 1.0]]
    assert two.fingerprint() != one.fingerprint()
    names = two.quantity_names()
    assert {"lam_opt", "lam_at_bound", "chi_opt", "chi_at_bound", "lam_opt_nokd"} <= set(names)
    assert "chi_opt_nokd" not in names  # the variant fixes χ: only λ is optimised there


def test_the_journal_validator_wants_every_optimised_field():
    sweep = Sweep(P, (Axis("alpha", (1.0,)),), optimise=(Optimise("lam", 1e-4, 10.0),
                                                          Optimise("chi", 0.0, 1.0)))  # fmt: skip
    values = dict.fromkeys(sweep.quantity_names(), 0.5) | {
        "converged": 1, "status": 0, "iterations": 3, "lam_at_bound": 0, "chi_at_bound": 1}  # fmt: skip
    validate = _validator(sweep)
    validate({"index": [0], "values": values})
    with pytest.raises(ValueError, match="not the fields"):
        validate({"index": [0], "values": {k: v for k, v in values.items() if k != "chi_opt"}})
    with pytest.raises(ValueError, match="chi_at_bound = 2 out of range"):
        validate({"index": [0], "values": values | {"chi_at_bound": 2}})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--x", "alpha:1:2:2", "--optimise", "lam", "--optimise", "lam:1e-3:1"], "optimised twice"),
        (["--x", "alpha:1:2:2", "--optimise", "lam", "--optimise", "eta"], "not 'eta'"),
        (["--x", "chi:0:1:2", "--optimise", "lam", "--optimise", "chi"], "cannot both sweep and optimise 'chi'"),
        (["--x", "alpha:1:2:2", "--optimise", "temperature:0:10"], "0 < lo < hi"),
        (["--x", "alpha:1:2:2", "--figures", "optimal"], "take no --x"),
        (["--figures", "optimal", "--map-size", "1"], "--map-size must be ≥ 2"),
        (["--map-size", "3"], "--map-size sets the grids of --figures optimal"),
        (["--figures", "optimal", "--simulate", "100"], "optimal_validation.py"),
        (["--figures", "optimal", "--optimise", "lam"], "need --x"),
    ],
)  # fmt: skip
def test_bad_optimise_and_figures_input_one_line_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_repeated_optimise_on_the_command_line(tmp_path):
    """``--optimise chi --optimise temperature:0.5:4`` at one point: both argmins and flags in the
    data, inside their boxes, at an ε_g no worse than the problem's own (χ, T) = (1, 1) (1e-9:
    solver tolerance); a rerun resumes from the journal and writes the same numbers."""
    args = ["--x", "alpha=2", "--optimise", "chi", "--optimise", "temperature:0.5:4", "--jobs", "1",
            "--out", str(tmp_path), "--name", "m", "--quiet"]  # fmt: skip
    assert main(args) == 0
    ds = xr.load_dataset(tmp_path / "m.nc", engine="scipy")
    assert 0.0 <= ds["chi_opt"].values[0] <= 1.0 and 0.5 <= ds["temperature_opt"].values[0] <= 4.0
    assert {"chi_at_bound", "temperature_at_bound"} <= set(ds)
    assert ds["eg"].values[0] <= replica.solve(P.replace(alpha=2.0)).student.eg + 1e-9
    assert main(args) == 0
    again = xr.load_dataset(tmp_path / "m.nc", engine="scipy")
    assert again["eg"].values[0] == ds["eg"].values[0]


# ----------------------------------------------------------------------------- the figure set


def _args(out):
    return argparse.Namespace(out=out, jobs=1, scheduler=None, tol=1e-10, quiet=True, map_size=None)


def _run(out, grids) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_optimal(_args(out), grids)
    return printed.getvalue()


def test_the_set_writes_its_files_and_findings_and_resumes(tmp_path, monkeypatch):
    """The plumbing on a 2 × 2 grid with a stand-in optimiser (the problem's own values: one solve
    per point); a rerun finds everything in the journals and solves nothing."""
    calls = []

    def at_start(problem, opts, init=None, tol=1e-10, starts=()):
        calls.append(problem)
        return replica.solve(problem, tol=tol), {o.name: problem.params[o.name] for o in opts}

    monkeypatch.setattr(sweep_module, "optimise_point", at_start)
    grids = Grids(n=2, etas=(1.0,))
    printed = _run(tmp_path, grids)
    for stem in MAPS:
        ds = xr.load_dataset(tmp_path / f"{stem}.nc", engine="scipy")
        assert {"chi_opt", "temperature_opt", "lam_opt", "gain", "eg_t1", "lam_opt_nokd"} <= set(ds)
        assert ds["eg"].shape == (1, 2, 2)
        assert (tmp_path / f"{stem}.png").stat().st_size > 20_000  # a drawn figure with its caption
    lines = [line for line in printed.splitlines() if line[:2] in {"1.", "2.", "3.", "4."}]
    assert [line[:2] for line in lines] == ["1.", "2.", "3.", "4."]
    assert all(any(ch.isdigit() for ch in line[2:]) for line in lines)
    n = len(calls)
    assert n == 3 * 4 * 3  # three maps, four points, the point and its two variants
    _run(tmp_path, grids)
    assert len(calls) == n


@pytest.mark.slow
def test_the_best_kd_student_is_no_worse_than_its_faces(tmp_path):
    """On a real 2 × 2 run: ε_g(best KD) ≤ ε_g(best at T = 1) ≤ ε_g(best without KD), since
    χ = 0 and T = 1 are inside the box (1e-8: the solver's tolerance on ε_g with other warm starts)."""
    _run(tmp_path, Grids(n=2, etas=(1.0,)))
    for stem in MAPS:
        ds = xr.load_dataset(tmp_path / f"{stem}.nc", engine="scipy")
        assert (ds["converged"].values == 1).all()
        assert (ds["eg_t1"] - ds["eg"]).values.min() >= -1e-8
        assert (ds["eg_nokd"] - ds["eg_t1"]).values.min() >= -1e-8
        assert optimal.findings({s: ds for s in MAPS})["gain_min"] >= -1e-8

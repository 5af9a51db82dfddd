"""The main job: grids, files, resume after kill -9, Dask, bad input, and the headline's story."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import replica
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from kdtheory.phase_diagram import main
from kdtheory.sweep import Axis, Optimise, Sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def _journal_indices(path: Path) -> list[tuple]:
    lines = path.read_text().splitlines()[1:]
    return [tuple(json.loads(line)["index"]) for line in lines if line.strip()]


def test_small_grid_end_to_end(tmp_path, capsys):
    args = ["--x", "lam:0.01:1:3:log", "--y", "alpha=1,2.5", "--set", "rho=0.4", "--set", "eta=0.7",
            "--quantity", "gain", "--jobs", "1", "--out", str(tmp_path), "--name", "g", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    ds = xr.open_dataset(tmp_path / "g.nc", engine="scipy")
    assert (tmp_path / "g.png").stat().st_size > 10_000
    assert dict(ds.sizes) == {"lam": 3, "alpha": 2}
    assert (ds["converged"].values == 1).all() and (ds["converged_nokd"].values == 1).all()
    for i, lam in enumerate(ds["lam"].values):
        for j, alpha in enumerate(ds["alpha"].values):
            p = Problem(
                GaussianMixture(alpha, 0.4, 1.0), LogisticTeacher(0.1), Student(lam, 1.0, 1.0, 0.7)
            )
            direct, nokd = replica.solve(p), replica.solve(p.replace(chi=0.0))
            # the sweep warm-starts, a direct call does not: equal to the solver's accuracy
            assert ds["eg"].values[i, j] == pytest.approx(direct.student.eg, abs=1e-9)
            assert ds["r"].values[i, j] == pytest.approx(direct.student.r, rel=1e-8)
            assert ds["eg_teacher"].values[i, j] == pytest.approx(direct.teacher.eg, abs=1e-10)
            assert ds["gain"].values[i, j] == pytest.approx(
                nokd.student.eg - direct.student.eg, abs=2e-9
            )
    # the same command again resumes from the journal and recomputes nothing
    before = _journal_indices(tmp_path / "g.journal.jsonl")
    assert main(args) == 0
    assert _journal_indices(tmp_path / "g.journal.jsonl") == before


def test_unconverged_points_are_marked(tmp_path):
    """λ̃ = 0 below the separability threshold: those points are stored as not converged (NaN)."""
    args = ["--x", "lam_t=0,0.1", "--set", "alpha=1", "--jobs", "1", "--out", str(tmp_path),
            "--name", "u", "--quiet"]  # fmt: skip
    assert main(args) == 0
    ds = xr.open_dataset(tmp_path / "u.nc", engine="scipy")
    assert list(ds["converged"].values) == [0, 1]
    assert ds["status"].values[0] == 3  # "unbounded", see STATUS_CODES
    assert np.isnan(ds["eg"].values[0]) and np.isfinite(ds["eg"].values[1])


def test_resume_after_kill_recomputes_nothing_that_finished(tmp_path):
    """kill -9 part-way, rerun the same command: the result equals an uninterrupted run and no
    journalled point is computed twice."""
    cmd = [sys.executable, "-m", "kdtheory.phase_diagram", "--x", "lam:0.003:3:30:log", "--y", "alpha=1,2,3",
           "--jobs", "1", "--quiet", "--name", "k"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], cwd=ROOT, env=env)
    journal = killed / "k.journal.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or len(_journal_indices(journal)) < 16):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _journal_indices(journal)
    assert 16 <= len(partial) < 90, "the run should have been killed part-way"
    assert not (killed / "k.nc").exists()
    subprocess.run([*cmd, "--out", str(killed)], cwd=ROOT, env=env, check=True)
    resumed = _journal_indices(journal)
    assert resumed[: len(partial)] == partial
    assert sorted(resumed) == sorted(set(resumed)) and len(resumed) == 90  # each point exactly once
    fresh = tmp_path / "fresh"
    subprocess.run([*cmd, "--out", str(fresh)], cwd=ROOT, env=env, check=True)
    a = xr.open_dataset(killed / "k.nc", engine="scipy")
    b = xr.open_dataset(fresh / "k.nc", engine="scipy")
    for name in (
        "eg",
        "q",
        "r",
        "b",
        "eg_teacher",
    ):  # warm starts differ after the kill: solver accuracy
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-8, atol=1e-10)


def test_dask_cluster_gives_the_local_result():
    distributed = pytest.importorskip("dask.distributed")
    sweep = Sweep(Problem(GaussianMixture(2.0, 0.3, 1.0), BayesTeacher(), Student(0.05, 1.0, 2.0, 0.5)),
                  (Axis.parse("lam:0.01:1:6:log"), Axis.parse("alpha=1,3")),
                  variants={"nokd": {"chi": 0.0}})  # fmt: skip
    local = run_sweep(sweep, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:  # fmt: skip
        remote = run_sweep(sweep, scheduler=cluster.scheduler_address, progress=False)
    # same chunks, same warm starts, same code: identical up to rounding
    xr.testing.assert_allclose(local, remote, rtol=1e-12, atol=1e-14)


def test_headline_story_bayes_teacher_student_beats_best_no_kd_student():
    """docs/theory.md: for ρ = 0.3, η = 0.5 the KD student of the Bayes-optimal teacher beats the
    best student without KD, and neither beats the Bayes error of its ηN features."""
    sweep = Sweep(Problem(GaussianMixture(2.0, 0.3, 1.0), BayesTeacher(), Student(0.05, 1.0, 1.0, 0.5)),
                  (Axis("eta", (0.5,)),), variants={"nokd": {"chi": 0.0}}, optimise=Optimise("lam", 1e-4, 10))  # fmt: skip
    ds = run_sweep(sweep, progress=False)
    kd, no_kd = float(ds["eg"].values[0]), float(ds["eg_nokd"].values[0])
    bound = replica.bayes_error(GaussianMixture(2.0, 0.3, 1.0), eta=0.5)
    assert bound < kd < no_kd
    assert no_kd == pytest.approx(
        0.2448, abs=3e-4
    )  # docs/theory.md: 0.2448 at λ = 0.3; the optimum is ≤ that


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--x", "beta:0:1:3"], "unknown parameter 'beta'"),
        (["--x", "rho:0.5:1.5:3"], "GaussianMixture.rho must be in (0, 1)"),
        (["--x", "lam:1:2:0"], "num must be ≥ 1"),
        (["--x", "lam:0:1:3:log"], "log range"),
        (["--x", "lam:1:2:3", "--set", "chi=2"], "Student.chi must be in [0, 1]"),
        (["--x", "lam:1:2:3", "--jobs", "0"], "--jobs must be ≥ 1"),
        (["--x", "lam:1:2:3", "--optimise", "lam"], "cannot both sweep and optimise"),
        (["--teacher", "bayes"], "need --x"),
        (["--x", "lam:1:2:3", "--y", "alpha:1:2:2", "--simulate", "100"], "1-D grids only"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_optimised_error_is_no_worse_than_a_brute_force_scan():
    """The optimiser's ε_g(λ*) is ≤ every ε_g on a 25-point λ grid (up to the Brent tolerance,
    1e-3 of the log-range, whose effect on ε_g at a smooth minimum is ≪ 1e-6)."""
    p = Problem(GaussianMixture(1.5, 0.3, 1.0), LogisticTeacher(0.3), Student(0.1, 0.7, 2.0, 0.6))
    sweep = Sweep(p, (Axis("eta", (0.6,)),), optimise=Optimise("lam", 1e-3, 10.0))
    ds = run_sweep(sweep, progress=False)
    scan = [replica.solve(p.replace(lam=lam)).student.eg for lam in np.geomspace(1e-3, 10.0, 25)]
    assert ds["eg"].values[0] <= min(scan) + 1e-6
    assert 1e-3 <= ds["lam_opt"].values[0] <= 10.0 and ds["lam_at_bound"].values[0] == 0


def test_simulation_overlay(tmp_path):
    args = ["--x", "lam_t=0.1,1", "--set", "alpha=1", "--simulate", "150", "--seeds", "3", "--jobs", "1",
            "--out", str(tmp_path), "--name", "s", "--quiet"]  # fmt: skip
    assert main(args) == 0
    ds = xr.open_dataset(tmp_path / "s.nc", engine="scipy")
    assert (ds["sim_failed"].values == 0).all() and (ds["eg_sim_sem"].values > 0).all()
    # N = 150, 3 seeds: loose, but the simulated error must be near the theory (finite-N bias ≲ 0.03)
    np.testing.assert_allclose(
        ds["eg_sim"].values, ds["eg"].values, atol=4 * ds["eg_sim_sem"].values.max() + 0.03
    )
    assert (tmp_path / "s.sim.journal.jsonl").exists()

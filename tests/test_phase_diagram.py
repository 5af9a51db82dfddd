"""The main job: grids, files, resume after kill -9, Dask, bad input, and the headline's story."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import replica
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student, plotting
from kdtheory.journal import Journal
from kdtheory.phase_diagram import explain_failures, main
from kdtheory.sweep import (
    MAX_POINTS,
    STATUS_CODES,
    Axis,
    Optimise,
    Sweep,
    failure_summary,
    run_sweep,
)

ROOT = Path(__file__).resolve().parents[1]


def _journal_indices(path: Path) -> list[tuple]:
    lines = path.read_text().splitlines()[1:]
    return [tuple(json.loads(line)["index"]) for line in lines if line.strip()]


def test_default_stem_says_what_the_files_hold(tmp_path):
    args = ["--x", "alpha=1,2", "--y", "lam=0.1,1", "--quantity", "gain", "--jobs", "1",
            "--out", str(tmp_path), "--quiet"]  # fmt: skip
    assert main(args) == 0
    (nc,) = tmp_path.glob("*.nc")
    assert re.fullmatch(r"gain_vs_alpha_and_lam_[0-9a-f]{8}\.nc", nc.name), nc.name
    assert nc.with_suffix(".png").exists()


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
    # a corrupt line (the reproduction): one warning line, never applied
    clean = xr.open_dataset(tmp_path / "g.nc", engine="scipy").load()
    with (tmp_path / "g.journal.jsonl").open("a") as fh:
        fh.write('{"index":[-1,-1],"values":{"eg":0.999}}\n')
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m kdtheory.phase_diagram: warning: ") and "\n" not in err
    assert "skipped 1 invalid or truncated line(s)" in err
    xr.testing.assert_identical(xr.open_dataset(tmp_path / "g.nc", engine="scipy"), clean)


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
    cmd = [sys.executable, "-m", "kdtheory.phase_diagram", "--x", "lam:0.003:3:20:log", "--y", "alpha=1,3",
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
    assert 16 <= len(partial) < 40, "the run should have been killed part-way"
    assert not (killed / "k.nc").exists()
    subprocess.run([*cmd, "--out", str(killed)], cwd=ROOT, env=env, check=True)
    resumed = _journal_indices(journal)
    assert resumed[: len(partial)] == partial
    assert sorted(resumed) == sorted(set(resumed)) and len(resumed) == 40  # each point exactly once
    fresh = tmp_path / "fresh"
    assert main([*cmd[3:], "--out", str(fresh)]) == 0  # the uninterrupted run, in this process
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
        (["--x", "alpha:5:0.5:3"], "start must be < stop, got 5 ≥ 0.5"),
        (["--x", "alpha:0.5:inf:3"], "start and stop must be finite"),
        (["--x", "alpha:0.5:5:3", "--optimise", "lam:1:0.1"], "needs 0 < lo < hi"),
        (["--x", "alpha:0.5:5:3", "--optimise", "lam:0:1"], "got lo=0, hi=1"),
        (["--x", "alpha:0.5:5:3", "--optimise", "chi:0.5:2"], "0 ≤ lo < hi ≤ 1"),
        (["--x", "alpha:0.5:5:1000000"], f"num must be ≤ {MAX_POINTS}"),
        (["--x", "alpha:0.5:5:1000", "--y", "lam:0.1:1:1000"], "the grid has 1000000 points"),
        (["--x", "alpha:0.5:5:3", "--simulate", "100000000"], "GiB at alpha = 5"),
        (["--x", "alpha:0.5:5:3", "--simulate", "100", "--seeds", "100000"], "--seeds must be"),
        (["--x", "alpha:0.5:5:3", "--name", "a/b"], "--name must be a plain file stem"),
        (["--x", "alpha:0.5:5:3", "--name", "../x"], "--name must be a plain file stem"),
        (["--name", "k"], "need --x"),
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


# ----------------------------------------------------------------------------- up-front checks


def _no_result_files(folder: Path) -> bool:
    return not folder.exists() or not [f for f in folder.iterdir() if not f.name.endswith(".lock")]


@pytest.mark.parametrize("where", ["a file", "under a file", "unwritable"])
def test_bad_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch, where):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    out = {"a file": afile, "under a file": afile / "sub", "unwritable": tmp_path / "ro" / "x"}[
        where
    ]
    if where == "unwritable":
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        if os.geteuid() == 0:  # root writes anyway: make the write probe fail as it would
            monkeypatch.setattr("tempfile.mkstemp", _permission_denied)
    solved = []
    monkeypatch.setattr(replica, "solve", lambda *a, **k: solved.append(1))
    with pytest.raises(SystemExit) as exc:
        main(["--x", "alpha:0.5:5:2", "--jobs", "1", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err and f"--out {out}" in err
    assert solved == [] and afile.read_text() == "keep me"
    assert _no_result_files(tmp_path / "ro" / "x")


def _permission_denied(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def test_grid_validation_is_per_axis_value_not_per_point(monkeypatch):
    """A 500 × 500 grid is checked with 1000 problems, not 250 000."""
    calls = []
    replace = Problem.replace
    monkeypatch.setattr(
        Problem, "replace", lambda self, **kw: calls.append(1) or replace(self, **kw)
    )
    base = Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05))
    sweep = Sweep(base, (Axis.parse("alpha:0.5:5:500"), Axis.parse("lam:0.01:1:500:log")))
    assert sweep.shape == (500, 500) and len(calls) == 1000
    with pytest.raises(ValueError, match=r"Student\.lam must be"):
        Sweep(base, (Axis.parse("alpha:0.5:5:500"), Axis("lam", (0.1, -1.0))))


def test_journal_of_another_grid_with_the_same_name_is_refused(tmp_path, capsys):
    common = ["--jobs", "1", "--out", str(tmp_path), "--name", "k", "--quiet"]
    assert main(["--x", "alpha:0.5:5:2", *common]) == 0
    before = (tmp_path / "k.nc").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--x", "alpha:0.5:5:3", *common])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err
    assert "journal of a different computation; choose another --name or --out" in err
    assert (tmp_path / "k.nc").read_bytes() == before


def test_second_run_into_a_busy_journal_exits_2_or_waits(tmp_path, capsys):
    args = ["--x", "alpha=1,2", "--jobs", "1", "--out", str(tmp_path), "--name", "b", "--quiet"]
    held = Journal(tmp_path / "b.journal.jsonl", "another run", {}, lock=True)
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err
    assert "another run is writing" in err and "--wait" in err
    assert _no_result_files(tmp_path / "none") and not (tmp_path / "b.nc").exists()
    threading.Timer(0.5, held.close).start()
    assert main([*args, "--wait"]) == 0  # queued behind the other run, then computed
    assert (tmp_path / "b.nc").exists()


# ----------------------------------------------------------------------------- point isolation


def _flaky(monkeypatch, bad):
    """replica.solve raising ZeroDivisionError for problems where ``bad(problem)``."""
    solve = replica.solve

    def flaky(p, **kw):
        if bad(p):
            raise ZeroDivisionError("float division by zero")
        return solve(p, **kw)

    monkeypatch.setattr(replica, "solve", flaky)


def test_an_exception_at_one_point_is_recorded_and_the_grid_finishes(tmp_path, capsys, monkeypatch):
    _flaky(monkeypatch, lambda p: p.student.temperature == 1.0)
    args = [
        "--x",
        "temperature=0.5,1,2",
        "--jobs",
        "1",
        "--out",
        str(tmp_path),
        "--name",
        "e",
        "--quiet",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 point raised an exception: ZeroDivisionError: float division by zero" in out
    ds = xr.open_dataset(tmp_path / "e.nc", engine="scipy")
    assert list(ds["status"].values) == [0, STATUS_CODES["error"], 0]
    assert list(ds["message"].values) == ["", "ZeroDivisionError: float division by zero", ""]
    assert np.isnan(ds["eg"].values[1]) and ds["converged"].values[1] == 0
    base = Problem(
        GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05, 1.0, 1.0, 0.5)
    )
    for k in (0, 2):  # the neighbours are unaffected (solver tolerance: warm starts differ)
        direct = replica.solve(base.replace(temperature=float(ds["temperature"].values[k])))
        assert ds["eg"].values[k] == pytest.approx(direct.student.eg, abs=1e-9)


def test_an_exception_in_an_optimised_sweep_is_recorded(monkeypatch):
    _flaky(monkeypatch, lambda p: p.data.alpha == 3.0)
    base = Problem(
        GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05, 1.0, 1.0, 0.5)
    )
    sweep = Sweep(base, (Axis("alpha", (1.0, 3.0)),), optimise=Optimise("lam", 1e-2, 1.0))
    ds = run_sweep(sweep, progress=False)
    assert list(ds["status"].values) == [0, STATUS_CODES["error"]]
    assert np.isfinite(ds["lam_opt"].values[0]) and np.isnan(ds["lam_opt"].values[1])
    assert failure_summary(ds) == [
        "1 point raised an exception: ZeroDivisionError: float division by zero"
    ]


def test_a_failing_simulated_point_is_recorded(tmp_path, capsys, monkeypatch):
    import simulations

    run = simulations.run

    def flaky(p, **kw):
        if p.teacher.lam == 1.0:
            raise MemoryError("simulated")
        return run(p, **kw)

    monkeypatch.setattr(simulations, "run", flaky)
    args = ["--x", "lam_t=0.1,1", "--simulate", "40", "--seeds", "2", "--jobs", "1",
            "--out", str(tmp_path), "--name", "s", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert (
        "1 simulated point raised an exception: MemoryError: simulated" in capsys.readouterr().out
    )
    ds = xr.open_dataset(tmp_path / "s.nc", engine="scipy")
    assert list(ds["sim_status"].values) == [0, STATUS_CODES["error"]]
    assert list(ds["sim_message"].values) == ["", "MemoryError: simulated"]
    assert np.isfinite(ds["eg_sim"].values[0]) and np.isnan(ds["eg_sim"].values[1])
    assert ds["sim_failed"].values[1] == 2


def test_all_failed_grid_says_why(tmp_path, capsys):
    """λ̃ = 0 below the separability threshold at every α: every point is unbounded; the summary
    and the figure give the solver's reason instead of empty axes."""
    args = ["--x", "alpha=0.5,1,1.5", "--set", "lam_t=0", "--jobs", "1", "--out", str(tmp_path),
            "--name", "f", "--quiet"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "(3 points, 3 not converged)" in out
    assert "3 points unbounded: LogisticTeacher.lam = 0 with alpha = 0.5" in out
    ds = xr.open_dataset(tmp_path / "f.nc", engine="scipy")
    _, ax = plotting.plt.subplots()
    assert explain_failures(ax, ds, "eg")
    assert "3 points unbounded" in ax.texts[0].get_text()
    ds["eg"][0] = 0.3
    assert not explain_failures(ax, ds, "eg")  # something to draw: no explanation


def test_failure_summary_counts_by_status_with_one_reason_each():
    codes = [0, 3, 3, 5, -1, 1]
    messages = ["", "", "λ̃ = 0 and separable", "ZeroDivisionError: x", "", "slow"]
    ds = xr.Dataset(
        {
            "status": ("a", np.array(codes, dtype=np.int32)),
            "message": ("a", np.array(messages, dtype=object)),
            "status_nokd": ("a", np.zeros(6, dtype=np.int32)),
            "sim_status": ("a", np.array([0, 0, 0, 0, 0, 5], dtype=np.int32)),
        }
    )
    assert failure_summary(ds) == [
        "1 point not computed",
        "1 point reached max_iter: slow",
        "2 points unbounded: λ̃ = 0 and separable",  # the first non-empty reason
        "1 point raised an exception: ZeroDivisionError: x",
        "1 simulated point raised an exception",  # no sim_message: no reason
    ]
    assert failure_summary(ds.isel(a=[0])) == []


# ----------------------------------------------------------------------------- workers


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (only its parent's wait is missing)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_exit_when_the_driver_is_killed(tmp_path):
    """kill -9 of the driver: its loky workers (and their trackers) are gone within 10 s."""
    cmd = [sys.executable, "-m", "kdtheory.phase_diagram", "--x", "lam:0.003:3:40:log", "--y", "alpha=1,2,3",
           "--jobs", "2", "--quiet", "--name", "w", "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    journal = tmp_path / "w.journal.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or len(_journal_indices(journal)) < 1):
        time.sleep(0.1)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(workers) >= 2, "the driver should have started its workers"
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    left = [w for w in workers if _alive(w)]
    for w in left:  # do not leave them behind if the test fails
        os.kill(w, signal.SIGKILL)
    assert left == []


def test_label_noise_axis_and_teacher_only_temperature(tmp_path, capsys):
    common = ["--set", "alpha=3", "--set", "rho=0.5", "--set", "chi=0.7", "--set", "temperature=2",
              "--jobs", "1", "--out", str(tmp_path), "--quiet"]  # fmt: skip
    assert main(["--x", "flip=0,0.2,0.5", "--name", "f", *common]) == 0
    ds = xr.open_dataset(tmp_path / "f.nc", engine="scipy")
    assert list(ds["flip"].values) == [0.0, 0.2, 0.5] and ds.attrs["tempered"] == "both"
    assert (ds["converged"].values == 1).all()
    # θ = ½ at ρ = ½: the labels carry no information, m = 0 and ε_g = ½ (solver tolerance)
    assert abs(ds["m"].values[2]) < 1e-9 and ds["eg"].values[2] == pytest.approx(0.5, abs=1e-9)
    assert main(["--x", "flip=0,0.2", "--tempered", "teacher", "--name", "t", *common]) == 0
    dt = xr.open_dataset(tmp_path / "t.nc", engine="scipy")
    assert dt.attrs["tempered"] == "teacher"
    for i, flip in enumerate(dt["flip"].values):
        p = Problem(GaussianMixture(3.0, 0.5, 1.0, flip), LogisticTeacher(0.1),
                    Student(0.05, 0.7, 2.0, 0.5, tempered="teacher"))  # fmt: skip
        # the sweep warm-starts, a direct call does not: equal to the solver's accuracy
        assert dt["eg"].values[i] == pytest.approx(replica.solve(p).student.eg, abs=1e-9)
    # the other convention is another computation: its journal is not reused
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--x", "flip=0,0.2", "--name", "t", *common])
    assert exc.value.code == 2 and "journal" in capsys.readouterr().err


def test_sweep_fingerprint_without_noise_or_tempering_is_as_before_they_existed():
    base = Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05))
    sweep = Sweep(base, (Axis.parse("alpha=1,2"),))
    desc = sweep.describe()
    assert "flip" not in desc["base"] and "tempered" not in desc  # journals of old runs stay valid
    noisy = Sweep(base.replace(flip=0.1), sweep.axes)
    tempered = Sweep(
        Problem(base.data, base.teacher, Student(0.05, tempered="teacher")), sweep.axes
    )
    prints = {s.fingerprint() for s in (sweep, noisy, tempered)}
    assert len(prints) == 3
    # the example output in docs/cli/phase_diagram.md, written before θ and tempered existed
    from kdtheory.phase_diagram import build_parser, custom_sweep

    args = build_parser().parse_args(["--x", "alpha=0.5,1,4", "--set", "lam_t=0"])
    assert custom_sweep(args).fingerprint()[:8] == "f68deb80"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--x", "lam:1:2:3", "--set", "flip=1.5"], "GaussianMixture.flip must be in [0, 1]"),
        (["--x", "flip:0:1.2:3"], "GaussianMixture.flip must be in [0, 1]"),
        (["--x", "lam:1:2:3", "--teacher", "bayes", "--set", "flip=0.1"], "use a LogisticTeacher"),
        (["--tempered", "teacher"], "need --x"),
        (["--x", "lam:1:2:3", "--tempered", "hot"], "invalid choice: 'hot'"),
    ],
)
def test_bad_noise_or_tempering_one_line_exit_2_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()

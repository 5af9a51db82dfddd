"""python -m kdtheory.compare: files, contents and bad input (agreement itself is tested in
test_theory_vs_simulation.py)."""

import pytest
import xarray as xr

from kdtheory.compare import main
from kdtheory.journal import Journal
from simulations.runner import MAX_DATA_BYTES, MAX_SEEDS, check_run_arguments


def test_compare_writes_theory_and_simulation(tmp_path, capsys):
    args = ["--x", "lam_t:0.05:1:5:log", "--n", "200", "--seeds", "3", "--points", "2", "--jobs", "1",
            "--out", str(tmp_path), "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert "compare_lam_t.png" in capsys.readouterr().out
    ds = xr.open_dataset(tmp_path / "compare_lam_t_logistic.nc", engine="scipy")
    assert ds.sizes["lam_t"] == 5 and ds.sizes["lam_t_sim"] == 2
    assert (ds["converged"].values == 1).all()
    # simulated points sit at grid values and carry a mean and a standard error over 3 seeds
    assert set(ds["lam_t_sim"].values) <= set(ds["lam_t"].values)
    assert (ds["eg_sim_sem"].values > 0).all() and (ds["sim_failed"].values == 0).all()
    bayes = xr.open_dataset(tmp_path / "compare_lam_t_bayes.nc", engine="scipy")
    assert bayes["eg"].size == 1  # the Bayes teacher does not depend on λ̃
    assert (tmp_path / "compare_lam_t.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--n", "5"], "--n must be an int ≥ 10"), (["--x", "zeta:0:1:3"], "unknown parameter")],
)
def test_compare_bad_input(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "-1"], "--seed must be an int ≥ 0, got -1"),
        (["--n", "100000000"], "GiB at alpha = 2"),
        (["--seeds", "0"], "--seeds must be an int ≥ 1"),
        (["--name", "a/b"], "--name must be a plain file stem"),
        (["--x", "lam_t:10:0.01:5:log"], "start must be < stop"),
    ],
)
def test_compare_refuses_before_writing_anything(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_compare_refuses_a_journal_of_another_computation_naming_its_fix(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    foreign = out / "compare_lam_t_bayes.journal.jsonl"
    foreign.write_text('{"fingerprint": "another compare"}\n')
    with pytest.raises(SystemExit) as exc:
        main(["--n", "40", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err
    assert "different computation; choose another --name or --out" in err
    written = {f.name for f in out.iterdir() if not f.name.endswith(".lock")}
    assert written == {foreign.name}  # nothing computed, nothing else written


def test_compare_name_and_a_failing_simulated_point(tmp_path, capsys, monkeypatch):
    import simulations

    run = simulations.run

    def flaky(p, **kw):
        if getattr(p.teacher, "lam", None) == 1.0:
            raise MemoryError("simulated")
        return run(p, **kw)

    monkeypatch.setattr(simulations, "run", flaky)
    args = ["--x", "lam_t=0.1,1", "--n", "40", "--seeds", "2", "--points", "2", "--jobs", "1",
            "--name", "mine", "--out", str(tmp_path), "--quiet"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "logistic teacher: 1 simulated point raised an exception: MemoryError: simulated" in out
    ds = xr.open_dataset(tmp_path / "mine_logistic.nc", engine="scipy")
    assert list(ds["sim_status"].values) == [0, 5] and ds["sim_message"].values[1] != ""
    assert (ds["converged"].values == 1).all()  # the theory is unaffected
    assert (tmp_path / "mine.png").exists() and (tmp_path / "mine_bayes.nc").exists()


def test_compare_refuses_a_file_as_out_and_a_busy_journal(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        main(["--n", "40", "--out", str(afile), "--quiet"])
    assert exc.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err
    assert afile.read_text() == "keep me"
    out = tmp_path / "o"
    out.mkdir()
    with Journal(out / "compare_lam_t_logistic.sim.journal.jsonl", "other run", {}, lock=True):
        with pytest.raises(SystemExit) as exc:
            main(["--n", "40", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err
    assert "another run is writing" in err and "--wait" in err
    assert [f for f in out.iterdir() if not f.name.endswith(".lock")] == []


def test_simulation_size_cap_is_the_data_matrix_memory():
    """8·round(αN)·N bytes ≤ MAX_DATA_BYTES = 2³¹: at α = 2 the largest N is 11 585
    (8 · 23 170 · 11 585 = 2 147 395 600 ≤ 2 147 483 648 < 8 · 23 172 · 11 586)."""
    assert MAX_DATA_BYTES == 2**31
    check_run_arguments(11_585, 1, alpha=2.0)
    with pytest.raises(
        ValueError, match=r"23172×11586 float64 data matrix of 2.0003 GiB at alpha = 2"
    ):
        check_run_arguments(11_586, 1, alpha=2.0)
    check_run_arguments(10, MAX_SEEDS)
    with pytest.raises(ValueError, match=f"seeds must be an int ≥ 1 and ≤ {MAX_SEEDS}"):
        check_run_arguments(10, MAX_SEEDS + 1)


def test_compare_with_label_noise_draws_the_logistic_teacher_only():
    from kdtheory.compare import build_parser, sweeps

    def plan(*argv):
        return sweeps(build_parser().parse_args([*argv, "--n", "100", "--points", "2"]))

    assert set(plan()) == {"logistic", "bayes"}
    noisy = plan("--set", "flip=0.2", "--tempered", "teacher")
    assert set(noisy) == {"logistic"}  # the Bayes-optimal teacher needs θ = 0
    dense, _ = noisy["logistic"]
    assert dense.base.data.flip == 0.2 and dense.base.student.tempered == "teacher"
    assert set(plan("--x", "flip:0:0.4:3")) == {"logistic"}

"""python -m kdtheory.compare: files, contents and bad input (agreement itself is tested in
test_theory_vs_simulation.py)."""

import pytest
import xarray as xr

from kdtheory.compare import main


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

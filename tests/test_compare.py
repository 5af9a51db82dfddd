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

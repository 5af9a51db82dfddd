"""simulations.run_chain: stages, seeding shared with run(), identities, estimates, validation."""

import math

import numpy as np
import pytest
import xarray as xr

from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from simulations import run, run_chain

DATA = GaussianMixture(alpha=2.0, rho=0.3, delta=1.0, flip=0.2)
TEACHER = LogisticTeacher(lam=0.2)
KD = Student(lam=0.05, chi=1.0, temperature=2.0, tempered="teacher")
METRICS = ("eg", "m", "q", "b", "train_loss", "train_error")


def test_first_stages_are_runs_teacher_and_student_for_the_same_seed():
    # same seeding as run(): stage 1 is run's teacher (whatever run's student subset), stage 2 is
    # run's student when it is the chain's students[0]; same code path, so the same floats
    chain = run_chain(DATA, TEACHER, [KD], n=100, seeds=3, seed=7).table
    sparse = run(Problem(DATA, TEACHER, Student(lam=0.1, eta=0.5)), n=100, seeds=3, seed=7).table
    full = run(Problem(DATA, TEACHER, KD), n=100, seeds=3, seed=7).table
    for name in METRICS:
        np.testing.assert_array_equal(chain[name].sel(stage=1), sparse[f"teacher_{name}"])
        np.testing.assert_array_equal(chain[name].sel(stage=2), full[f"student_{name}"])
    np.testing.assert_array_equal(chain["r"].sel(stage=2), full["student_r"])
    assert np.isnan(chain["r"].sel(stage=1)).all()
    one = run_chain(DATA, TEACHER, [], n=100, seeds=3, seed=7)
    assert one.table.sizes == {"seed": 3, "stage": 1} and len(one.stages) == 1
    for name in METRICS:
        np.testing.assert_array_equal(one.table[name].sel(stage=1), sparse[f"teacher_{name}"])


def test_a_stage_without_kd_restarts_from_the_labels():
    # χ = 0 at λ = λ̃ is the teacher's objective on the same (x, ŷ): stages 2 and 4 equal stage 1,
    # whatever came before; stage 3 (pure KD at T = 2) is another classifier, and since w₄ = w₁,
    # r₄ = w₄·w₃/N = w₃·w₂/N = r₃
    restart = Student(lam=TEACHER.lam, chi=0.0)
    t = run_chain(DATA, TEACHER, [restart, KD, restart], n=120, seeds=2, seed=3).table
    s1 = t.sel(stage=1)
    for stage in (2, 4):
        for name in METRICS:
            # fits stop at ‖∇F‖ ≤ 1e-10·M: θ is pinned to ~‖∇F‖/λ ≈ 1e-8; smooth functions of it
            np.testing.assert_allclose(t[name].sel(stage=stage), s1[name], rtol=1e-7)
    np.testing.assert_allclose(t["r"].sel(stage=2), s1["q"], rtol=1e-7)  # r = w₁·w₁/N = q₁
    np.testing.assert_allclose(t["r"].sel(stage=4), t["r"].sel(stage=3), rtol=1e-7)  # as above
    assert not np.allclose(t["m"].sel(stage=3), s1["m"], rtol=1e-3)


def test_estimates_are_per_stage_mean_and_standard_error():
    res = run_chain(DATA, TEACHER, [KD, KD], n=100, seeds=4, seed=2)
    assert res.n_failed == 0 and bool(res.table["converged"].all())
    np.testing.assert_array_equal(res.table["stage"], [1, 2, 3])
    np.testing.assert_array_equal(res.table["chi"], [0.0, 1.0, 1.0])
    assert list(res.table["tempered"].values) == ["none", "teacher", "teacher"]
    for t, stage in enumerate(res.stages, start=1):
        for name in ("eg", "m", "r"):
            v = res.table[name].sel(stage=t).values
            est = getattr(stage, name)
            if name == "r" and t == 1:
                assert est.count == 0 and math.isnan(est.mean)  # no previous stage
                continue
            assert est.count == 4
            assert est.mean == pytest.approx(v.mean(), rel=1e-14)  # same numbers, same formula
            assert est.sem == pytest.approx(v.std(ddof=1) / 2, rel=1e-12)


def test_failed_stage_stops_the_chain_and_the_table_is_written(tmp_path):
    # λ̃ = 0 at α = 0.5: every training set is separable, stage 1 has no minimiser
    res = run_chain(
        GaussianMixture(alpha=0.5), LogisticTeacher(lam=0.0), [KD, KD], n=40, seeds=2, seed=1
    )
    t = res.table
    assert res.n_failed == 2 and not t["converged"].any()
    assert (t["status"].sel(stage=1) == "unbounded").all()
    assert (t["status"].sel(stage=[2, 3]) == "no_teacher").all()
    assert np.isnan(t["eg"]).all() and res.stages[2].eg.count == 0
    # NetCDF through xarray's scipy engine, as the grids are written
    t.to_netcdf(tmp_path / "chain.nc", engine="scipy")
    back = xr.open_dataset(tmp_path / "chain.nc", engine="scipy")
    assert list(back["tempered"].values) == ["none", "teacher", "teacher"]
    back.close()


def test_bayes_teacher_starts_a_chain_without_label_noise():
    res = run_chain(GaussianMixture(alpha=1.5, rho=0.2), BayesTeacher(), [KD], n=60, seeds=2)
    assert res.n_failed == 0 and (res.table["status"].sel(stage=1) == "closed_form").all()
    assert res.table.attrs["teacher"] == "bayes" and np.isnan(res.table["lam"].sel(stage=1))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"students": [KD, Student(lam=0.1, eta=0.5)]}, r"students\[1\]\.eta must be 1"),
        ({"students": [KD, 0.1]}, r"students\[1\] must be a Student"),
        ({"students": KD}, "students must be a sequence of Student"),
        ({"data": 2.0}, "data must be a GaussianMixture"),
        ({"teacher": KD}, "teacher must be a LogisticTeacher or BayesTeacher"),
        ({"teacher": BayesTeacher()}, r"GaussianMixture\.flip must be 0 with a BayesTeacher"),
        ({"n": 9}, "n must be an int ≥ 10"),
        ({"seeds": 0}, "seeds must be an int ≥ 1"),
        ({"n_jobs": 0}, "n_jobs must be an int ≥ 1, or -1"),
    ],
)
def test_bad_input(args, message):
    kwargs = {"data": DATA, "teacher": TEACHER, "students": [KD], "n": 100, "seeds": 2} | args
    with pytest.raises(ValueError, match=message):
        run_chain(**kwargs)

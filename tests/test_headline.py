"""The main job's story (kdtheory.figures.headline): each finding's direction on the computed data.

One run of the headline on coarse grids (module fixture, ~20 s; with ``-m slow`` also on the main
job's own grids) writes the five data files and figures; the tests read the files back.  Solver tolerance 1e-10 (relative change per step) puts
ε_g to ~1e-9; the optimisers stop at 1e-7 in ε_g, so thresholds of 1e-4 and above are far from
both.
"""

import argparse
import contextlib
import io

import numpy as np
import pytest
import xarray as xr

import replica
from kdtheory import plotting
from kdtheory.figures.headline import ETAS, STORY, STUDENT_LAMS, Grids, run_headline

COARSE = Grids(n_lam_t=7, n_lam=11, alpha_step=0.4, n_map=5, rhos=(0.3, 0.5), limit_etas=(1.0,))
STEMS = ("headline_1_inheritance", "headline_2_limit", "headline_3_bayes_teacher",
         "headline_4_double_descent", "headline_5_gain_map")  # fmt: skip


def _args(out):
    return argparse.Namespace(out=out, jobs=1, scheduler=None, tol=1e-10, quiet=True,
                              simulate=60, seeds=2)  # fmt: skip


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(COARSE, id="coarse"),
        pytest.param(Grids(), id="full", marks=pytest.mark.slow),
    ],
)
def story(request, tmp_path_factory):
    """The job on coarse grids (default suite) or on the main job's own grids (slow, ~2 min)."""
    out = tmp_path_factory.mktemp("headline")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        files = run_headline(_args(out), request.param)
    data = {stem: xr.load_dataset(out / f"{stem}.nc", engine="scipy") for stem in STEMS}
    return {
        "out": out,
        "grids": request.param,
        "files": files,
        "printed": printed.getvalue(),
        **data,
    }


def test_five_data_files_and_figures_named_by_their_finding(story):
    out = story["out"]
    assert sorted(p.name for p in story["files"]) == sorted(
        f"{stem}.{ext}" for stem in STEMS for ext in ("nc", "png")
    )
    for stem in STEMS:
        assert (out / f"{stem}.png").stat().st_size > 20_000  # a drawn figure with its caption


def test_one_summary_line_per_finding_with_numbers(story):
    lines = [
        line for line in story["printed"].splitlines() if line[:2] in {"1.", "2.", "3.", "4.", "5."}
    ]
    assert [line[:2] for line in lines] == ["1.", "2.", "3.", "4.", "5."]
    assert all(any(ch.isdigit() for ch in line[2:]) for line in lines)


def test_inheritance_student_is_best_near_the_teachers_optimum(story):
    inh = story["headline_1_inheritance"]
    star = inh.attrs["lam_t_star"]
    lt = inh["lam_t"].values
    # the optimiser's λ̃* lies within one grid step of the teacher curve's argmin on the grid
    step = lt[1] / lt[0]
    grid_star = lt[np.argmin(inh["eg_teacher"].sel(eta=1.0, lam=STUDENT_LAMS[0]).values)]
    assert grid_star / step <= star <= grid_star * step
    for eta in ETAS:
        for lam in STUDENT_LAMS:
            kd = inh["eg"].sel(eta=eta, lam=lam).values
            mixed = inh["eg_mixed"].sel(eta=eta, lam=lam).values
            best_kd, best_mixed = lt[np.argmin(kd)], lt[np.argmin(mixed)]
            assert star / 3 <= best_kd <= 3 * star, (eta, lam, best_kd, star)
            # a mixed student (χ = 0.5) prefers an over-regularised teacher
            assert best_mixed > star, (eta, lam, best_mixed, star)
            # and the χ = 1 student gains from a good teacher: its best beats a poor teacher's
            assert kd.min() < kd[0] - 0.005 and kd.min() < kd[-1] - 0.03


def test_simulation_overlay_on_the_inheritance_curve(story):
    inh = story["headline_1_inheritance"]
    sim, sem = inh["eg_sim"].values, inh["eg_sim_sem"].values
    theory = inh["eg"].sel(eta=inh.attrs["sim_eta"], lam=inh.attrs["sim_lam"]).values
    assert np.isfinite(sim).all() and (sem > 0).all()
    # N = 60, 2 seeds: the loosest check; finite-N bias and noise are O(0.05) at this size
    assert np.abs(sim - theory).max() < 0.12


def test_limit_kd_beats_ridge_for_unbalanced_clusters_only(story):
    lim = story["headline_2_limit"]
    unbalanced, balanced = lim.sel(rho=0.3, eta=1.0), lim.sel(rho=0.5, eta=1.0)
    # ρ = 0.3: KD better by ≈ 2e-3, far above the optimisers' 1e-7 and the solver's 1e-9
    assert float(unbalanced["gain"]) > 1e-3
    assert float(unbalanced["chi_kd"]) > 0.5  # the gain comes from distillation, not from χ → 0
    # ρ = ½: ridge at λ → ∞ is Bayes-optimal; neither student can beat it, both reach it
    for k in ("eg_kd", "eg_ridge"):
        assert float(balanced[k]) - float(balanced["eg_bayes"]) == pytest.approx(0.0, abs=1e-4)
    assert abs(float(balanced["gain"])) < 1e-4
    # no student beats the Bayes error of its ηN features (1e-9: solver accuracy)
    assert (lim["eg_kd"] >= lim["eg_bayes"] - 1e-9).all()
    assert (lim["eg_ridge"] >= lim["eg_bayes"] - 1e-9).all()


def test_best_ridge_student_is_the_best_teacher_at_full_width(story):
    """At η = 1 the χ = 0 student is the same estimator as the logistic teacher, so two separate
    optimisations (student over λ, teacher over λ̃) must agree."""
    lim, inh = story["headline_2_limit"], story["headline_1_inheritance"]
    ridge = lim.sel(rho=0.3, eta=1.0)
    # Brent stops at 1e-3 (student) and 1e-4 (teacher) in log λ: ε_g agrees to ≪ 1e-6 at a minimum
    assert float(ridge["eg_ridge"]) == pytest.approx(inh.attrs["eg_teacher_star"], abs=1e-6)
    assert float(ridge["lam_ridge"]) == pytest.approx(inh.attrs["lam_t_star"], rel=0.05)


def test_bayes_teacher_closes_most_of_the_gap_of_a_full_student_only(story):
    ds = story["headline_3_bayes_teacher"]
    closed = {}
    for eta in ETAS:
        kd, plain = float(ds["eg_best"].sel(eta=eta)), float(ds["eg_nokd_best"].sel(eta=eta))
        bound = replica.bayes_error(STORY, eta)
        assert bound - 1e-9 <= kd < plain
        closed[eta] = (plain - kd) / (plain - bound)
    assert closed[1.0] > 0.8
    assert closed[0.5] < 0.5 and closed[0.5] < closed[1.0] - 0.3


def test_double_descent_peak_at_alpha_eta_removed_by_the_ridge(story):
    dd = story["headline_4_double_descent"]
    alpha = dd["alpha"].values
    small, large = dd["eg"].sel(lam=1e-4).values, dd["eg"].sel(lam=0.01).values
    k = int(np.argmax(small))
    spacing = max(alpha[k] - alpha[k - 1], alpha[k + 1] - alpha[k])
    assert abs(alpha[k] - 0.5) <= spacing  # η = 0.5
    at_eta = int(np.argmin(np.abs(alpha - 0.5)))
    assert large[at_eta] < small[at_eta] - 0.05
    # the bump left at λ = 0.01 is under a tenth of the peak's rise above the first α
    assert large.max() - large[0] < 0.1 * (small.max() - small[0])
    # without KD: flat (within 0.005) from α = η to below α_c(η), then falling
    nokd = dd["eg_nokd"].sel(lam=1e-4).values
    alpha_c = replica.separability_threshold(STORY.rho, STORY.delta, 0.5)
    flat = (alpha >= 0.5) & (alpha <= alpha_c - 0.2)
    assert np.ptp(nokd[flat]) < 0.005
    assert nokd[-1] < nokd[at_eta] - 0.03


def test_gain_map_is_the_difference_of_the_two_students(story):
    g = story["headline_5_gain_map"]
    np.testing.assert_array_equal(g["gain"].values, g["eg_nokd"].values - g["eg"].values)
    assert (g["gain"] > 0).any() and (g["gain"] < 0).any()  # the zero contour exists


def test_rerun_resumes_from_the_journals(story):
    out = story["out"]
    journals = {p: p.read_bytes() for p in out.glob("*.journal.jsonl")}
    assert len(journals) == 8  # 6 sweeps, the limit, the simulation overlay
    with contextlib.redirect_stdout(io.StringIO()):
        run_headline(_args(out), story["grids"])
    assert {p: p.read_bytes() for p in out.glob("*.journal.jsonl")} == journals


def test_symmetric_colour_limit_ignores_one_extreme_cell():
    z = np.linspace(-0.01, 0.01, 199)
    assert plotting.symmetric_limit(np.append(z, -0.06)) <= 0.01
    assert plotting.symmetric_limit(np.full(4, np.nan)) == 1.0
    assert plotting.symmetric_limit(np.zeros(3)) == 1.0


def test_grids_refuse_an_alpha_grid_without_alpha_eta():
    with pytest.raises(ValueError, match=r"Grids\.alpha_step must divide 0\.4"):
        Grids(alpha_step=0.3)
    with pytest.raises(ValueError, match=r"Grids\.rhos must be values in \(0, 1\)"):
        Grids(rhos=(0.3, 1.0))


def test_phase_diagram_reexports_the_headline():
    from kdtheory import phase_diagram
    from kdtheory.figures import headline

    assert phase_diagram.run_headline is headline.run_headline
    assert phase_diagram.headline_sweeps is headline.headline_sweeps

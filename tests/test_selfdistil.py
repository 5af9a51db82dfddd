"""The ``--figures selfdistil`` set (kdtheory.figures.selfdistil): a one-point, two-stage run end to end
through the CLI (files, resume without recomputing), its values against a direct
``replica.optimise_chain``, the noiseless Bayes bound and the λ → ∞ (Hebbian) limit of the optimal
teacher at ρ = ½, the journal's validation and bad flags."""

import json
import math

import numpy as np
import pytest
import xarray as xr
from scipy.stats import norm

import replica
from kdtheory.figures import selfdistil
from kdtheory.figures.selfdistil import FIGURES, LABELS, Grids, grids_of, selfdistil_journal
from kdtheory.journal import JournalWarning
from kdtheory.phase_diagram import main
from kdtheory.problem import GaussianMixture

FLAGS = ["--figures", "selfdistil", "--map-size", "1", "--stages", "2", "--jobs", "1", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run of the set at the crossing point (α, θ) = (2, 0.2), two stages."""
    out = tmp_path_factory.mktemp("selfdistil")
    assert main([*FLAGS, "--out", str(out)]) == 0
    with xr.open_dataset(out / "selfdistil.nc", engine="scipy") as ds:
        return out, ds.load()


def test_the_run_writes_the_netcdf_and_every_figure(run):
    out, ds = run
    for stem in FIGURES:
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ds.sizes == {"alpha": 1, "theta": 1, "labels": 2, "stage": 2}
    assert (ds["converged"].values == 1).all()
    assert ds.attrs["tempered"] == "teacher" and ds.attrs["stages"] == 2


def test_a_rerun_reads_the_journal_and_computes_nothing(run, monkeypatch, capsys):
    out, ds = run
    journal = (out / "selfdistil_chains.journal.jsonl").read_bytes()
    calls = []
    monkeypatch.setattr(selfdistil, "optimise_point", lambda *a: calls.append(a))
    assert main([*FLAGS, "--out", str(out)]) == 0
    assert calls == []
    assert (out / "selfdistil_chains.journal.jsonl").read_bytes() == journal
    with xr.open_dataset(out / "selfdistil.nc", engine="scipy") as again:
        xr.testing.assert_identical(again.load(), ds)
    assert "1. 2 of 2 optimal chains converged" in capsys.readouterr().out


def test_values_are_those_of_a_direct_optimise_chain(run):
    """The same deterministic search: floats round-trip exactly through JSON and NetCDF."""
    _, ds = run
    opt = replica.optimise_chain(GaussianMixture(2.0, 0.5, 1.0, flip=0.2), 2, hard=True)
    one = ds.sel(alpha=2.0, theta=0.2, labels="hard")
    np.testing.assert_array_equal(one["eg"].values, opt.eg)
    np.testing.assert_array_equal(one["lam"].values, [opt.teacher.lam, opt.students[0].lam])
    np.testing.assert_array_equal(one["temperature"].values[1:], [0.02])
    assert math.isnan(one["temperature"].values[0])


def test_every_stage_lies_above_the_noiseless_bayes_error(run):
    """The Bayes error at ρ = ½ is Φ(−√α / √(Δ(α + Δ))) (the posterior is linear, no bias)."""
    _, ds = run
    alpha, delta = 2.0, 1.0
    bayes = norm.cdf(-math.sqrt(alpha / (delta * (alpha + delta))))
    assert ds["eg_bayes"].item() == pytest.approx(bayes, rel=1e-12)  # closed form, both sides
    assert (ds["eg"].values > bayes).all()


def test_the_optimal_teacher_at_rho_half_is_the_hebbian_limit(run):
    """At ρ = ½ the optimal λ̃ runs to the search bound: the optimum is λ̃ → ∞, where the teacher
    is the mean of its label-weighted inputs, w ∝ Σ ŷ x, with m ∝ (1 − 2θ)α and
    q ∝ (1 − 2θ)²α² + αΔ, so ε = Φ(−(1 − 2θ)α / √(Δ((1 − 2θ)²α² + αΔ)))."""
    _, ds = run
    one = ds.sel(alpha=2.0, theta=0.2)
    assert (one["lam"].sel(stage=1).values >= 0.99 * selfdistil.LAM_RANGE[1]).all()
    k, alpha = 1 - 2 * 0.2, 2.0
    hebb = norm.cdf(-k * alpha / math.sqrt(k**2 * alpha**2 + alpha))
    eg1 = one["eg"].sel(stage=1).values
    # above the limit, which is the λ̃ → ∞ infimum; the gap is O(1/λ̃) at the bound λ̃ = 100
    assert (eg1 > hebb).all() and (eg1 - hebb < 1e-3).all()


def test_the_second_stage_denoises_and_the_stage_counts_agree(run):
    """At θ = 0.2 the student of the optimal teacher is better than its teacher (soft and hard),
    and ``stages_pay`` counts exactly the steps that lower ε by more than PAY."""
    _, ds = run
    eg = ds["eg"].sel(alpha=2.0, theta=0.2)
    assert (eg.sel(stage=2) < eg.sel(stage=1)).all()
    expected = (eg.sel(stage=1) - eg.sel(stage=2) > selfdistil.PAY).astype(float)
    np.testing.assert_array_equal(ds["stages_pay"].sel(alpha=2.0, theta=0.2), expected)


def test_map_size_keeps_the_values_nearest_the_crossing_point():
    class Args:
        map_size, stages = 2, None

    g = grids_of(Args())
    assert g.alphas == (1.0, 2.0) and g.thetas == (0.1, 0.2) and g.stages == 3
    # the two lines share the crossing cell: 3 computed cells of the 2 × 2 grid
    assert g.points == ((0, 1), (1, 0), (1, 1))


def test_the_journal_skips_a_record_that_is_not_of_this_set(tmp_path):
    g = Grids(alphas=(2.0,), thetas=(0.2,), stages=2)
    path = tmp_path / "j.jsonl"
    good = {k: [0.1, 0.2] for k in selfdistil.STAGE_FIELDS}
    good.update(temperature=[math.nan, 0.2], converged=1, solves=3, seconds=1.0)
    with selfdistil_journal(path, g) as j:
        j.append([((0, 0, 0), good)])
    bad = [
        {"index": [0, 0, 1], "values": {**good, "eg": [0.1]}},  # one stage short
        {"index": [0, 0, len(LABELS)], "values": good},  # no such label kind
        {"index": [0, 0, 1], "values": {**good, "converged": 2}},
    ]
    with open(path, "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in bad))
    with pytest.warns(JournalWarning, match="skipped 3"), selfdistil_journal(path, g) as j:
        assert list(j.done) == [(0, 0, 0)]


@pytest.mark.parametrize(
    "argv",
    [
        ["--figures", "selfdistil", "--stages", "4"],
        ["--figures", "selfdistil", "--map-size", "0"],
        ["--figures", "selfdistil", "--tol", "1e-8"],
        ["--figures", "selfdistil", "--simulate", "100"],
        ["--figures", "optimal", "--stages", "2"],
        ["--x", "alpha:1:2:3", "--stages", "2"],
    ],
)
def test_bad_flags_exit_2_with_one_line_and_write_nothing(argv, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.startswith("python -m kdtheory.phase_diagram: error: ") and err.count("\n") == 1
    assert not out.exists()

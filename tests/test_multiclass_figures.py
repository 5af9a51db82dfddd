"""kdtheory.figures.multiclass: the Gram matrices of the structures, the stored Fashion-MNIST Gram
matrix, the grids, and the set on a coarse grid."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from kdtheory import MulticlassMixture
from kdtheory.figures import multiclass as mc


def _distances(g):
    k = g.shape[0]
    d = np.diag(g)[:, None] + np.diag(g)[None, :] - 2 * g
    return np.array([d[i, j] for i, j in itertools.combinations(range(k), 2)])


@pytest.mark.parametrize("structure", list(mc.STRUCTURES))
def test_every_structure_has_the_mean_distance_of_s_times_identity(structure):
    s = 1.7
    g = mc.gram_of(structure, 3, s)
    assert np.allclose(g, g.T) and np.linalg.eigvalsh(g)[0] > -1e-12  # a Gram matrix
    # mean of ‖v_c − v_c'‖²/N over pairs = 2s, as for s·I (rounding of a 3-term mean)
    assert _distances(g).mean() == pytest.approx(2 * s, rel=1e-12)


def test_structures_are_what_they_claim():
    s = 2.0
    np.testing.assert_array_equal(mc.gram_of("orthogonal", 4, s), s * np.eye(4))
    g = mc.gram_of("two_close", 4, s)
    assert g[0, 1] / math.sqrt(g[0, 0] * g[1, 1]) == pytest.approx(0.8, rel=1e-12)
    close, apart = (
        np.sort(_distances(mc.gram_of(st, 3, s))) for st in ("fmnist_close", "fmnist_apart")
    )
    # the ratios of squared distances stated in STRUCTURES (two digits)
    np.testing.assert_allclose(close / close[-1], [0.055, 0.895, 1.0], atol=5e-3)
    np.testing.assert_allclose(apart / apart[-1], [0.785, 0.905, 1.0], atol=5e-3)
    with pytest.raises(ValueError, match="K = 3"):
        mc.gram_of("fmnist_close", 4, s)
    with pytest.raises(ValueError, match="structure must be"):
        mc.gram_of("simplex", 3, s)


def test_stored_fashion_mnist_gram_is_a_centred_gram_matrix():
    g = mc.load_fashion_mnist_gram()
    assert g.shape == (10, 10) and np.allclose(g, g.T)
    w = np.linalg.eigvalsh(g)
    # means centred on the overall mean with ρ = 1/10: G·1 = 0, one zero eigenvalue (to the
    # 1e-10 rounding of the stored digits, relative to the largest eigenvalue ≈ 2500)
    assert abs(w[0]) < 1e-8 * w[-1] and w[1] > 1.0
    np.testing.assert_allclose(g @ np.ones(10), 0.0, atol=1e-7)


@pytest.mark.slow  # reads and reduces 60 000 images: ≈ 4 s idle, 8 s under load
def test_stored_fashion_mnist_gram_is_reproduced_from_the_images():
    root = Path("/usr/share/datasets/fashion-mnist")
    if not (root / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)")
    pytest.importorskip("torch")  # kdtheory.neural.data reads the IDX files
    fresh = mc.fashion_mnist_gram(root)
    stored = json.loads(
        (Path(mc.__file__).parents[2] / "docs/data/fashion_mnist_gram.json").read_text()
    )
    # stored to 10 decimals; entries up to ≈ 830
    np.testing.assert_allclose(fresh["gram"], stored["gram"], atol=1e-9)
    assert fresh["delta"] == pytest.approx(stored["delta"], rel=1e-12)


def test_grids_refuse_bad_values():
    with pytest.raises(ValueError, match="structures"):
        mc.Grids(structures=("nope",))
    with pytest.raises(ValueError, match="alphas"):
        mc.Grids(alphas=(0.0,))
    with pytest.raises(ValueError, match="ks"):
        mc.Grids(ks=(1,))
    g = mc.Grids(structures=("orthogonal", "fmnist_close"), ks=(3, 4), k_structures=("orthogonal",))
    cells = g.cells
    # the triples only at K = 3; the oracle cells after the KD cells
    assert ("kd", "orthogonal", 4, 2.0) in cells and ("kd", "fmnist_close", 4, 2.0) not in cells
    assert cells[-1][0] == "oracle"
    with pytest.raises(ValueError, match="k_alphas"):
        mc.Grids(k_alphas=(-1.0,))
    with pytest.raises(ValueError, match="k_structures"):
        mc.Grids(k_structures=("fmnist_close",))


def test_the_k_axis_is_at_k_alphas_and_k_3_along_alpha():
    both = ("orthogonal", "two_close")
    g = mc.Grids(ks=(3, 4, 5), alphas=(0.5, 2.0), k_alphas=(2.0,), k_structures=both)
    kd = [c for c in g.cells if c[0] == "kd"]
    # K = 3 at every α, K = 4 and 5 at α = 2 only, for orthogonal and two-close centroids only
    for st in ("orthogonal", "two_close"):
        along = [(k, a) for _, s2, k, a in kd if s2 == st]
        assert along == [(3, 0.5), (3, 2.0), (4, 2.0), (5, 2.0)]
    assert {k for _, s2, k, _ in kd if s2 == "fmnist_close"} == {3}
    # the default: the K axis (K = 4 at α = 2) for two-close centroids only
    kd = [c[1:] for c in mc.Grids().cells if c[0] == "kd"]
    assert [c for c in kd if c[1] != 3] == [("two_close", 4, 2.0)]


@pytest.mark.parametrize("text, ks", [("3,4,5", (3, 4, 5)), ("4", (4,))])
def test_grids_of_reads_ks(text, ks):
    from types import SimpleNamespace

    assert mc.grids_of(SimpleNamespace(ks=None)) == mc.Grids()
    g = mc.grids_of(SimpleNamespace(ks=text))
    assert g.ks == ks and g.k_structures == ("orthogonal", "two_close")


@pytest.mark.parametrize("text", ["3,x", "3,3", "1", "7", ""])
def test_grids_of_refuses_bad_ks(text):
    from types import SimpleNamespace

    with pytest.raises(ValueError, match="--ks"):
        mc.grids_of(SimpleNamespace(ks=text))


def _cells_along_k(rows):
    """A hand-made set: rows of (structure, K, gain, s.e. no KD, s.e. KD, T*) at α = 2."""
    import xarray as xr

    n = len(rows)
    nan = [math.nan] * n
    ridge = [0.4] * n
    values = {k: ("cell", nan) for k in mc.FIELDS}
    values |= {
        "eg_ridge": ("cell", ridge),
        "eg_kd": ("cell", [r - row[2] for r, row in zip(ridge, rows, strict=True)]),
        "eg_oracle": ("cell", [0.3] * n),
        "eg_se_ridge": ("cell", [row[3] for row in rows]),
        "eg_se_kd": ("cell", [row[4] for row in rows]),
        "temperature": ("cell", [row[5] for row in rows]),
        "lam_t": ("cell", [10.0] * n),
        "lam_ridge": ("cell", [10.0] * n),
        "eg_t1": ("cell", [0.41] * n),
        "chi": ("cell", [0.9] * n),
    }
    ds = xr.Dataset(values, coords={
        "cell": np.arange(n), "kind": ("cell", ["kd"] * n),
        "structure": ("cell", [row[0] for row in rows]), "K": ("cell", [row[1] for row in rows]),
        "alpha": ("cell", [2.0] * n)})  # fmt: skip
    ds["gain"] = ds.eg_ridge - ds.eg_kd
    ds["gap_closed"] = ds.gain / (ds.eg_ridge - ds.eg_oracle)
    return ds


def test_the_findings_along_k_state_gain_standard_error_and_temperature(tmp_path):
    rows = [("two_close", 3, 1e-3, 0.0, 0.0, 2.5), ("two_close", 4, 5e-4, 3e-6, 4e-6, 3.0),
            ("orthogonal", 3, 0.0, 0.0, 0.0, 4.0)]  # fmt: skip
    ds = _cells_along_k(rows)
    f = mc.findings(ds)
    # only two-close has two K at one α; its rows in K order
    assert list(f["along_k"]) == [("two_close", 2.0)]
    by_k = f["along_k"][("two_close", 2.0)]
    assert list(by_k) == [3, 4]
    four = by_k[4]
    assert mc.gain_se(four) == pytest.approx(5e-6, rel=1e-12)  # √(3² + 4²)·10⁻⁶
    line = mc.summary_lines(ds, f)[4]
    # gain 5e-4 closes 5e-4/(0.4 − 0.3) of the gap; the exact K = 3 gain has no ± term
    assert line.startswith("5. along K: two_close α=2: K=3 gain 0.001 (0.01 of the gap) T* 2.5")
    assert "K=4 gain 0.0005 ± 5e-06 (0.005 of the gap) T* 3" in line
    ds_without = ds.isel(cell=[0, 2])  # no structure at two K: four lines, a one-row figure
    assert len(mc.summary_lines(ds_without, mc.findings(ds_without))) == 4
    mc._figure_gain(ds, f, tmp_path / "gain.png")
    assert (tmp_path / "gain.png").stat().st_size > 0


@pytest.mark.slow  # about 25 QMC solves at K = 4: 58 CPU-seconds measured
def test_a_k4_cell_on_a_coarse_search_has_small_qmc_errors():
    g = mc.Grids(structures=("two_close",), ks=(4,), oracle_structures=(), maxfev=5, tol=1e-6)
    ds = mc.compute(g, progress=False)
    one = ds.isel(cell=0)
    assert int(one.K) == 4 and float(one.alpha) == 2.0
    # 4 independent Sobol solves of 2¹¹ points: standard errors well below the gains of ~1e-4
    # that the figure set reports, and nonzero (QMC, not a deterministic rule)
    for se in (one.eg_se_ridge, one.eg_se_kd):
        assert 0 < float(se) < 2e-5
    assert float(one.eg_oracle) < float(one.eg_kd) < 1 - 1 / 4
    assert float(one.eg_oracle) < float(one.eg_ridge) < 1 - 1 / 4


def test_oracle_cell_on_a_coarse_search_stays_above_the_oracle_error():
    # the oracle classifier is Bayes-optimal given the centroids: no student, however distilled,
    # has a smaller test error (exact quadrature at K = 3: no tolerance beyond the solver's)
    g = mc.Grids(oracle_maxfev=6, tol=1e-6)
    values = mc.compute_cell(g, ("oracle", "orthogonal", 3, 0.6))
    assert set(values) == set(mc.FIELDS)
    oracle = MulticlassMixture(0.6, 2.0 * np.eye(3)).oracle_error()
    assert values["eg_oracle"] == pytest.approx(oracle, rel=1e-12)
    assert oracle < values["eg_kd"] and oracle < values["eg_copy"] < 1 - 1 / 3
    assert 0.01 <= values["chi"] <= 1.0 and values["solves"] <= 6 + 1


def test_summary_lines_state_the_numbers_of_the_stored_run():
    stored = Path(mc.__file__).parents[2] / "docs" / "data" / "multiclass.nc"
    if not stored.exists():
        pytest.skip("no stored run of the figure set (docs/data/multiclass.nc)")
    import xarray as xr

    ds = xr.open_dataset(stored, engine="scipy").load()
    f = mc.findings(ds)
    lines = mc.summary_lines(ds, f)
    assert [line[:2] for line in lines] == ["1.", "2.", "3.", "4.", "5."]
    # the stored run has K = 3, 4, 5 at α = 2 for orthogonal and two-close centroids
    assert {key: list(by_k) for key, by_k in f["along_k"].items()} == {
        ("orthogonal", 2.0): [3, 4, 5], ("two_close", 2.0): [3, 4, 5]}  # fmt: skip
    kd = ds.where(ds.kind == "kd", drop=True)
    # the gain is the difference of the two optima, and no student beats the oracle
    np.testing.assert_allclose(kd.gain, kd.eg_ridge - kd.eg_kd, rtol=0, atol=1e-15)
    assert bool((ds.eg_kd >= ds.eg_oracle).all()) and bool((kd.eg_ridge >= kd.eg_oracle).all())


@pytest.mark.parametrize(
    "argv",
    [
        ["--figures", "multiclass", "--simulate", "100"],
        ["--figures", "multiclass", "--map-size", "2"],
        ["--figures", "multiclass", "--tol", "1e-6"],
        ["--figures", "multiclass", "--scheduler", "tcp://localhost:1"],
        ["--figures", "multiclass", "--ks", "3,9"],
        ["--figures", "optimal", "--ks", "3,4"],
    ],
)
def test_bad_flags_exit_2_before_any_work(argv, capsys, tmp_path):
    from kdtheory.phase_diagram import main

    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "multiclass" in err[0]
    assert not (tmp_path / "out").exists()  # nothing written

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
    cells = mc.Grids(structures=("orthogonal", "fmnist_close"), ks=(3, 4), alphas=(1.0,)).cells
    # the triples only at K = 3; the oracle cells after the KD cells
    assert ("kd", "orthogonal", 4, 1.0) in cells and ("kd", "fmnist_close", 4, 1.0) not in cells
    assert cells[-1][0] == "oracle"


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
    assert [line[:2] for line in lines] == ["1.", "2.", "3.", "4."]
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
    ],
)
def test_bad_flags_exit_2_before_any_work(argv, capsys, tmp_path):
    from kdtheory.phase_diagram import main

    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "multiclass" in err[0]
    assert not (tmp_path / "out").exists()  # nothing written

"""The real-data estimator (kdtheory.realdata) and the ``--figures realdata`` plumbing, on two
classes of scikit-learn's bundled 8×8 digits (no files needed; the pooled covariance of digits 4 vs 8
is rank-deficient, so the ridge's lift is exercised).  Plumbing and identities only: whether the
theory predicts real data is the figure set's question, answered in the docs."""

import json
import math
import types

import numpy as np
import pytest
import xarray as xr

from kdtheory.figures import realdata as figset
from kdtheory.journal import JournalWarning
from kdtheory.phase_diagram import main
from kdtheory.realdata import digits_task, estimate


@pytest.fixture(scope="module")
def task():
    return digits_task(4, 8)


def test_estimate_is_the_model_in_the_eigenbasis(task):
    x, y, spec = task.x_train, task.y_train, task.spectrum
    n = task.n
    assert n == spec.n == x.shape[1] < 64  # constant pixels dropped
    # class means at ±v/√N, v the mean's projections on Σ's eigenvectors (rounding only)
    for sign in (1.0, -1.0):
        np.testing.assert_allclose(
            x[y == sign].mean(axis=0), sign * spec.mean_projections / math.sqrt(n), atol=1e-12
        )
    # the pooled within-class covariance is diagonal in this basis, with the spectrum on it
    centred = x - np.where(y[:, None] > 0, 1.0, -1.0) * spec.mean_projections / math.sqrt(n)
    cov = centred.T @ centred / (len(y) - 2)
    floor = task.info["ridge"] * np.mean(np.maximum(np.diag(cov), 0.0))
    rank = task.info["rank"]
    assert rank < n  # digits 4 vs 8: a rank-deficient Σ
    np.testing.assert_allclose(cov, np.diag(np.diag(cov)), atol=1e-10)  # rounding of eigh
    np.testing.assert_allclose(np.diag(cov)[:rank], spec.eigenvalues[:rank], rtol=1e-9)
    # the zero modes are lifted to ridge·trΣ/N (the lifted trace differs by ≤ ridge)
    np.testing.assert_allclose(spec.eigenvalues[rank:], floor, rtol=1e-6)
    # a rotation keeps the trace: every kept pixel was standardised to unit variance
    assert x.var(axis=0).sum() == pytest.approx(n, rel=1e-12)


def test_estimate_drops_constant_pixels_and_checks_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12))
    x[:, 3] = 7.0  # constant on the training set
    y = np.where(np.arange(40) % 2 == 0, 1.0, -1.0)
    t = estimate("toy", x, y, x[:10], y[:10])
    assert t.n == 11 and 3 not in t.pixels
    with pytest.raises(ValueError, match="y_train must hold one label ±1"):
        estimate("toy", x, np.arange(40), x[:10], y[:10])
    with pytest.raises(ValueError, match="x_test must have 12 pixels"):
        estimate("toy", x, y, x[:10, :5], y[:10])


def test_draw_keeps_the_class_counts_and_flips_at_theta(task):
    rng = np.random.default_rng(1)
    train = task.draw(1.0, 0.3, 0.0, rng)
    m = round(task.n)
    assert train.m == m and (train.y > 0).sum() == round(0.3 * m)
    noisy = task.draw(2.0, 0.5, 0.4, rng)
    flipped = np.mean(noisy.y_hat != noisy.y)
    # binomial(M ≈ 110, 0.4): 4 standard deviations
    assert abs(flipped - 0.4) < 4 * math.sqrt(0.4 * 0.6 / noisy.m)
    top = task.max_alpha(0.3)
    assert task.draw(top, 0.3, 0.0, rng).m == round(top * task.n)  # the whole class of 8s
    with pytest.raises(ValueError, match="alpha ≤"):
        task.draw(top + 1.0 / task.n, 0.3, 0.0, rng)


def test_test_error_is_reweighted_to_rho(task):
    n = task.n
    # w = 0, b > 0 predicts +1 everywhere: wrong exactly on the negatives, weight 1 − ρ
    assert task.test_error(np.zeros(n), 1.0, 0.3) == (pytest.approx(0.7), 0.0)
    assert task.test_error(np.zeros(n), -1.0, 0.3) == (pytest.approx(0.3), 0.0)


DESIGN = figset.Design(
    tasks=("digits-4-8",), alphas=(0.5, 1.0), seeds=2, grid_alpha=1.0, chis=(0.0, 1.0),
    temperatures=(2.0,), curve_alphas=(0.5, 0.7, 1.0),
)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("realdata")
    args = types.SimpleNamespace(out=out, jobs=1, quiet=True, wait=False)
    files = figset.run_realdata(args, DESIGN)
    with xr.open_dataset(out / "realdata.nc", engine="scipy") as ds:
        return out, files, ds.load()


def test_the_set_writes_every_file_and_converges(run):
    _, files, ds = run
    assert [p.name for p in files] == ["realdata.nc", "realdata_digits-4-8.png",
                                       "realdata_kd_gain.png"]  # fmt: skip
    for p in files[1:]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cells = np.isfinite(ds["seconds"].values)
    n_curve = len(DESIGN.tasks) * len(DESIGN.variants) * len(DESIGN.curve_alphas)
    assert cells.sum() + n_curve == len(DESIGN.cells)
    assert (ds["converged"].values[cells] == 1).all()
    assert np.isfinite(ds["eg_curve"].values).all()
    # the curve and the theory cells are the same deterministic solve where their α coincide
    theory = ds.sel(kind="theory", seed=0, alpha=1.0)
    curve = ds["eg_curve"].sel(alpha_curve=1.0)
    for role in ("teacher", "student"):
        np.testing.assert_array_equal(curve.sel(role=role).values, theory[f"eg_{role}"].values)


def test_no_kd_in_the_grid_is_the_teacher_on_the_same_subset(run):
    """χ = 0 at λ = λ̃ is the teacher's own objective: on the same subset the fits coincide (the
    real and surrogate cells pair KD and no KD), and the theory's student equals its teacher."""
    _, _, ds = run
    at = ds.sel(alpha=DESIGN.grid_alpha)
    gain = (at["eg_teacher"] - at["eg_grid"].sel(chi=0.0, temperature=2.0)).sel(task="digits-4-8")
    for kind in ("real", "gaussian"):
        np.testing.assert_array_equal(gain.sel(kind=kind).values, 0.0)  # identical fits
    assert np.abs(gain.sel(kind="theory", seed=0).values).max() < 1e-8  # the solver's tolerance


def test_real_errors_are_test_set_frequencies(run):
    _, _, ds = run
    task = digits_task(4, 8)
    pos, neg = (int((task.y_test == s).sum()) for s in (1, -1))
    real = ds.sel(kind="real", task="digits-4-8")
    for var in DESIGN.variants:
        rho = figset.VARIANTS[var][0]
        eg = real["eg_teacher"].sel(variant=var).values.ravel()
        # ε = ρ k₊/M₊ + (1 − ρ) k₋/M₋ for integers k: some integer pair reproduces every value
        ks = np.arange(pos + 1)[:, None] * rho / pos + np.arange(neg + 1)[None, :] * (1 - rho) / neg
        for e in eg:
            assert np.min(np.abs(ks - e)) < 1e-12


def test_a_rerun_computes_nothing(run, monkeypatch):
    out, _, ds = run
    monkeypatch.setattr(figset, "compute_cell", lambda *a: pytest.fail("recomputed"))
    args = types.SimpleNamespace(out=out, jobs=1, quiet=True, wait=False)
    figset.run_realdata(args, DESIGN)
    with xr.open_dataset(out / "realdata.nc", engine="scipy") as again:
        xr.testing.assert_identical(again.load(), ds)


def test_the_journal_skips_bad_records(run, tmp_path):
    out, _, _ = run
    path = tmp_path / "j.jsonl"
    path.write_bytes((out / "realdata.journal.jsonl").read_bytes())
    lines = path.read_text().splitlines()
    good = json.loads(lines[1])
    bad = [
        {**good, "values": {**good["values"], "eg_teacher": 5.0}},  # not an error rate
        {**good, "values": {**good["values"], "eg_student": float("nan")}},  # NaN, converged
        {**good, "index": [0, 0, 0, 1, 0]},  # theory has one seed
        {**good, "values": {**good["values"], "grid": [0.1, 0.1, 0.1]}},  # grid of 2 (or 0)
        {**good, "values": {**good["values"], "converged": 2}},
        {**good, "values": {**good["values"], "test_se_teacher": float("inf")}},
    ]
    good_index = tuple(good["index"])
    # the bad records are placed before the good ones, so that the first valid record would win
    path.write_text("\n".join([lines[0], *(json.dumps(b) for b in bad), *lines[1:]]) + "\n")
    digests = {"digits-4-8": digits_task(4, 8).spectrum.digest}
    with (
        pytest.warns(JournalWarning, match="skipped 6"),
        figset.realdata_journal(path, DESIGN, digests) as j,
    ):
        assert j.done[good_index] == good["values"]
        assert len(j.done) == len(DESIGN.cells)


def test_missing_fashion_mnist_exits_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--figures", "realdata", "--data-root", str(tmp_path / "absent"),
              "--out", str(tmp_path / "out")])  # fmt: skip
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs Fashion-MNIST" in err
    assert "dataset-fashion-mnist" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"tasks": ("coat-bag",)}, "Design.tasks must name tasks among"),
        ({"tasks": ("digits-3-3",)}, "Design.tasks"),
        ({"alphas": (2.0, 1.0)}, "Design.alphas must be increasing"),
        ({"grid_alpha": 3.0}, "Design.grid_alpha must be one of the alphas"),
        ({"seeds": 0}, "Design.seeds must be an integer in 1…100"),
        ({"lam": -1.0}, "Student.lam"),
    ],
)
def test_design_refuses_bad_values(changes, match):
    import dataclasses

    with pytest.raises(ValueError, match=match):
        dataclasses.replace(DESIGN, **changes)


@pytest.mark.parametrize(
    "argv",
    [
        ["--figures", "realdata", "--simulate", "100"],
        ["--figures", "realdata", "--map-size", "2"],
        ["--figures", "headline", "--data-root", "/tmp"],
    ],
)
def test_bad_flags_exit_2(argv, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_class_covariances_pool_to_sigma_and_reduce_to_the_model(task):
    """(M₊ − 1)Σ₊ + (M₋ − 1)Σ₋ = (M − 2)Σ, and with Σ₊ = Σ₋ = Σ the class-wise Gaussian error
    is the model's ε_g(m, q, b)."""
    import dataclasses

    from simulations.data import overlap

    pos, neg = task.counts
    pooled = ((pos - 1) * task.class_covariances[0] + (neg - 1) * task.class_covariances[1]) / (
        pos + neg - 2
    )
    rank = task.info["rank"]
    sigma = task.spectrum.eigenvalues
    np.testing.assert_allclose(np.diag(pooled)[:rank], sigma[:rank], rtol=1e-9)
    same = dataclasses.replace(task, class_covariances=np.stack([np.diag(sigma)] * 2))
    w = np.random.default_rng(3).normal(size=task.n)
    data = task.mixture(1.0, 0.3)
    m, q = w @ task.spectrum.mean_projections / task.n, overlap(data, w, w)
    assert same.class_gaussian_error(w, 0.2, 0.3) == pytest.approx(
        float(data.error(m, q, 0.2)), rel=1e-12
    )


def test_class_moments_for_three_classes():
    """Means and covariances per class against numpy, the pooled covariance as the weighted sum
    Σ_k (M_k − 1)Σ_k/(M − K) (rounding only), and refusals."""
    from kdtheory.realdata import class_moments

    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 7)) + np.repeat(np.eye(3, 7) * 3.0, 20, axis=0)
    labels = np.repeat([2, 0, 1], 20)
    mom = class_moments(x, labels)
    assert mom.classes.tolist() == [0, 1, 2] and mom.counts.tolist() == [20, 20, 20]
    for k in range(3):
        rows = x[labels == k]
        np.testing.assert_allclose(mom.means[k], rows.mean(axis=0), rtol=1e-14)
        np.testing.assert_allclose(mom.covariances[k], np.cov(rows, rowvar=False), atol=1e-13)
    pooled = sum(19 * mom.covariances[k] for k in range(3)) / (60 - 3)
    np.testing.assert_allclose(mom.pooled, pooled, atol=1e-13)
    with pytest.raises(ValueError, match="no other label"):
        class_moments(x, labels, classes=(0, 1))
    with pytest.raises(ValueError, match="≥ 2 samples"):
        class_moments(x[:21], labels[:21])

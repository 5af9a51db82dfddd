"""kdtheory.Spectrum: a generic covariance Σ in the binary mixture (vocabulary and refusals)."""

import dataclasses
import math
import pickle

import numpy as np
import pytest

from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Spectrum, Student
from kdtheory.sweep import Axis, Sweep


def test_spectrum_is_validated_and_immutable():
    s = Spectrum([2.0, 0.5, 0.5], [1.0, -2.0, 0.0])
    assert s.n == 3 and s.mean_eigenvalue == 1.0
    assert s.signal == pytest.approx(5.0 / 3.0)  # (1 + 4 + 0)/3
    assert s.whitened_signal == pytest.approx((0.5 + 8.0) / 3.0)  # Σ μ²/σ / N
    with pytest.raises(ValueError):
        s.eigenvalues[0] = 1.0  # read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.eigenvalues = np.ones(3)
    bad = [
        (([], []), "length ≥ 1"),
        (([1.0, 0.0], [1.0, 1.0]), r"eigenvalues must be in \(0, ∞\)"),
        (([1.0, math.nan], [1.0, 1.0]), "eigenvalues must be finite"),
        (([1.0, 1.0], [1.0, math.inf]), "mean_projections must be finite"),
        (([1.0, 1.0], [1.0]), "length of eigenvalues"),
        (([[1.0]], [1.0]), "1-D"),
        ((["a"], [1.0]), "real numbers"),
    ]
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            Spectrum(*args)


def test_digest_is_a_content_hash():
    a = Spectrum([1.0, 2.0], [1.0, 1.0])
    b = Spectrum(np.array([1.0, 2.0]), (1, 1))
    assert a == b and hash(a) == hash(b) and a.digest == b.digest
    assert a != Spectrum([2.0, 1.0], [1.0, 1.0])  # order is content
    assert a != Spectrum([1.0, 2.0], [1.0, 1.0 + 1e-15])  # any bit
    c = pickle.loads(pickle.dumps(a))
    assert c == a and not c.eigenvalues.flags.writeable
    # stable across sessions: the digest of a fixed spectrum, by its definition
    import hashlib

    h = hashlib.sha256(b"kdtheory.Spectrum/1")
    h.update(np.int64(2).tobytes())
    h.update(np.array([1.0, 2.0], "<f8").tobytes() + np.array([1.0, 1.0], "<f8").tobytes())
    assert a.digest == h.hexdigest()


def test_isotropic_and_from_covariance():
    iso = Spectrum.isotropic(0.7, 5)
    assert np.all(iso.eigenvalues == 0.7) and np.all(iso.mean_projections == 1.0)
    rng = np.random.default_rng(0)
    n = 6
    basis = np.linalg.qr(rng.standard_normal((n, n)))[0]
    sigma = np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.25])
    v = rng.standard_normal(n)
    s = Spectrum.from_covariance(basis @ np.diag(sigma) @ basis.T, v)
    assert np.allclose(s.eigenvalues, sigma, rtol=1e-12)  # eigh's accuracy, decreasing order
    assert np.allclose(s.mean_projections**2, (basis.T @ v) ** 2, atol=1e-12)  # signs free
    assert s.signal == pytest.approx(v @ v / n, rel=1e-12)  # an orthogonal basis keeps ‖v‖²
    # a singular covariance: the zero modes are lifted to ridge·tr Σ/N
    low = np.outer(basis[:, 0], basis[:, 0]) * 4.0
    s = Spectrum.from_covariance(low, v, ridge=1e-3)
    assert s.eigenvalues[0] == pytest.approx(4.0)
    assert np.allclose(s.eigenvalues[1:], 1e-3 * 4.0 / n, rtol=1e-6)  # rounding of eigh
    with pytest.raises(ValueError, match="symmetric"):
        Spectrum.from_covariance(np.array([[1.0, 0.5], [0.0, 1.0]]), [1.0, 1.0])
    with pytest.raises(ValueError, match="semi-definite"):
        Spectrum.from_covariance(-np.eye(2), [1.0, 1.0])
    with pytest.raises(ValueError, match=r"mean must have shape \(2,\)"):
        Spectrum.from_covariance(np.eye(2), [1.0])
    with pytest.raises(ValueError, match="ridge"):
        Spectrum.from_covariance(np.eye(2), [1.0, 1.0], ridge=0.0)


def test_mixture_with_a_covariance():
    spec = Spectrum([3.0, 1.0], [1.0, 1.0])
    d = GaussianMixture(2.0, 0.3, covariance=spec, flip=0.1)
    assert d.delta == 2.0  # Δ reads tr Σ/N
    assert dataclasses.replace(d, alpha=3.0).delta == 2.0  # copies keep Σ
    assert GaussianMixture(2.0, 0.3, 2.0, covariance=spec) == d.__class__(2.0, 0.3, 2.0, 0.0, spec)
    with pytest.raises(ValueError, match=r"GaussianMixture\.delta must be left at its default"):
        GaussianMixture(2.0, 0.3, 0.5, covariance=spec)
    with pytest.raises(ValueError, match=r"GaussianMixture\.covariance must be a Spectrum"):
        GaussianMixture(2.0, covariance=np.eye(2))
    p = Problem(d, LogisticTeacher(0.1), Student(0.1))
    with pytest.raises(ValueError, match="delta must be left"):
        p.replace(delta=3.0)
    assert p.replace(alpha=1.0).data.covariance == spec
    with pytest.raises(ValueError, match=r"Problem\.teacher must be a LogisticTeacher"):
        Problem(d, BayesTeacher(), Student(0.1))
    with pytest.raises(ValueError, match=r"Student\.eta must be 1 with a covariance"):
        Problem(d, LogisticTeacher(0.1), Student(0.1, eta=0.5))


def test_fingerprint_includes_the_covariance():
    base = Problem(GaussianMixture(2.0, 0.3), LogisticTeacher(0.1), Student(0.1))
    axes = (Axis("alpha", (1.0, 2.0)),)
    iso = Sweep(base, axes)
    assert "covariance" not in iso.describe()  # the isotropic fingerprint is unchanged
    one = Problem(
        GaussianMixture(2.0, 0.3, covariance=Spectrum([1.5, 0.5], [1.0, 1.0])),
        base.teacher,
        base.student,
    )
    two = Problem(
        GaussianMixture(2.0, 0.3, covariance=Spectrum([1.2, 0.8], [1.0, 1.0])),
        base.teacher,
        base.student,
    )
    # the same Δ = tr Σ/N = 1 and parameters: only the hash tells the three apart
    prints = {Sweep(p, axes).fingerprint() for p in (base, one, two)}
    assert len(prints) == 3
    assert Sweep(one, axes).describe()["covariance"] == one.data.covariance.digest

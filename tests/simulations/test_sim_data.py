"""simulations.data: the sampled mixture follows the conventions of docs/theory.md."""

import numpy as np
import pytest

from kdtheory import GaussianMixture
from simulations import draw_subset, sample


def test_shapes_dtype_and_reproducibility():
    data = GaussianMixture(alpha=1.5, rho=0.3, delta=0.7)
    a = sample(data, 101, np.random.default_rng(3))
    b = sample(data, 101, np.random.default_rng(3))
    assert a.x.shape == (152, 101)  # M = round(1.5·101) = round(151.5) = 152
    assert a.x.dtype == a.y.dtype == a.v.dtype == np.float64
    assert a.x.flags.c_contiguous
    assert set(np.unique(a.y)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)


def test_moments_match_the_model():
    # x = y v/√N + √Δ z: the noise z = (x − y v/√N)/√Δ must be standard normal, v too, P(y=1) = ρ
    data = GaussianMixture(alpha=4.0, rho=0.3, delta=0.5)
    n = 300
    s = sample(data, n, np.random.default_rng(0))
    z = (s.x - np.outer(s.y, s.v) / np.sqrt(n)) / np.sqrt(data.delta)
    size = z.size  # 360 000 values
    # 5 standard errors: mean SE 1/√size, variance SE √(2/size), fraction SE √(ρ(1−ρ)/M)
    assert abs(z.mean()) < 5 / np.sqrt(size)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / size)
    assert abs(np.mean(s.y == 1) - data.rho) < 5 * np.sqrt(data.rho * (1 - data.rho) / s.m)
    assert abs(s.v.var() - 1) < 5 * np.sqrt(2 / n)
    # the noise is independent of the label: its projection on v has no class-dependent mean
    proj = z @ s.v / np.linalg.norm(s.v)  # N(0, 1) per sample if independent
    assert abs(proj[s.y == 1].mean() - proj[s.y == -1].mean()) < 5 * np.sqrt(
        1 / (s.y == 1).sum() + 1 / (s.y == -1).sum()
    )


def test_subset():
    rng = np.random.default_rng(1)
    s = draw_subset(100, 0.37, rng)
    assert s.size == 37 and np.unique(s).size == 37 and s.min() >= 0 and s.max() < 100
    assert np.all(np.diff(s) > 0)
    np.testing.assert_array_equal(draw_subset(50, 1.0, rng), np.arange(50))


@pytest.mark.parametrize("n", [9, 10.0, "100", True, -5])
def test_bad_n(n):
    with pytest.raises(ValueError, match="n must be an int ≥ 10"):
        sample(GaussianMixture(alpha=1.0), n, np.random.default_rng(0))


def test_bad_sizes_and_rng():
    with pytest.raises(ValueError, match="alpha·n"):
        sample(GaussianMixture(alpha=0.01), 20, np.random.default_rng(0))
    with pytest.raises(ValueError, match="eta·n"):
        draw_subset(20, 0.01, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"rng must be a numpy\.random\.Generator"):
        sample(GaussianMixture(alpha=1.0), 20, 0)


def test_training_labels_are_flipped_at_rate_flip_and_x_keeps_the_clusters():
    theta = 0.2
    clean = sample(GaussianMixture(alpha=4.0, rho=0.3, delta=0.5), 300, np.random.default_rng(5))
    noisy = sample(
        GaussianMixture(alpha=4.0, rho=0.3, delta=0.5, flip=theta), 300, np.random.default_rng(5)
    )
    # the flips are drawn last: (x, y, v) are those of the θ = 0 draw, so x is placed by the cluster
    # y (test_moments_match_the_model checks that draw), not by the training label ŷ
    for name in ("x", "y", "v"):
        np.testing.assert_array_equal(getattr(noisy, name), getattr(clean, name))
    assert clean.y_hat is clean.y
    assert set(np.unique(noisy.y_hat)) <= {-1.0, 1.0}
    flipped = noisy.y_hat != noisy.y
    # Binomial(M, θ) per cluster and overall: within z = 5 standard errors √(θ(1−θ)/count)
    for mask in (np.ones(noisy.m, bool), noisy.y == 1, noisy.y == -1):
        count = mask.sum()
        assert abs(flipped[mask].mean() - theta) < 5 * np.sqrt(theta * (1 - theta) / count)
    every = sample(GaussianMixture(alpha=1.0, flip=1.0), 50, np.random.default_rng(0))
    np.testing.assert_array_equal(every.y_hat, -every.y)  # θ = 1: every label flipped

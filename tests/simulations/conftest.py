"""Shared small training sets for the simulations tests (N = 200: fast, yet M×N is a real matrix)."""

import numpy as np
import pytest

from kdtheory import GaussianMixture
from simulations import sample


@pytest.fixture(scope="session")
def mixture():
    """Unbalanced clusters, so that the bias matters."""
    return GaussianMixture(alpha=2.0, rho=0.3, delta=1.0)


@pytest.fixture(scope="session")
def train(mixture):
    """One draw with M = 400 > N = 200."""
    return sample(mixture, 200, np.random.default_rng(12345))


@pytest.fixture(scope="session")
def train_wide():
    """One draw with M = 120 < N = 200 (more weights than samples)."""
    return sample(GaussianMixture(alpha=0.6, rho=0.4, delta=0.5), 200, np.random.default_rng(7))

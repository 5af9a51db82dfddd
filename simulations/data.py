r"""Finite-N samples of the binary Gaussian mixture of docs/theory.md.

N features, M = round(αN) samples, cluster labels y_μ = +1 with probability ρ (else −1),

    x_μ = y_μ v/√N + √Δ z_μ,   v ~ N(0, I_N) once per data set,   z_μ ~ N(0, I_N),

and training labels ŷ_μ = −y_μ with probability θ (the label noise ``flip``), independently, else
ŷ_μ = y_μ. Every fit trains on ŷ; test errors are on the clean clusters y.

Everything is drawn from an explicit ``np.random.Generator`` in a fixed order (v, then y, then z,
then, only if θ > 0, the flips), so a sample is reproducible from the generator's seed alone, and
θ > 0 keeps the (x, y, v) of the θ = 0 draw from the same generator.

With a covariance Σ (``GaussianMixture.covariance``, a ``Spectrum`` of length N) the samples are
drawn in Σ's eigenbasis: x_μ = y_μ v/√N + Σ^{1/2} z_μ with Σ = diag(σ_i) and v = (μ_i), the given
projections (v is then fixed, not drawn).  That is enough: the fits (a ridge ‖w‖², an unpenalised
bias) are equivariant under a rotation x → Ox (their solution is w → Ow), and every recorded
quantity (m = w·v/N, q = wᵀΣw/(NΔ), r = wᵀΣw̃/(NΔ), the test error) is invariant under it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from kdtheory.problem import GaussianMixture

__all__ = [
    "TrainingSet",
    "check_n",
    "draw_subset",
    "n_samples",
    "overlap",
    "sample",
    "subset_size",
]

_CHUNK_ROWS = 512  # rows per block when adding the rank-one signal (bounds the temporary)


@dataclass(frozen=True, eq=False)
class TrainingSet:
    r"""One draw of the training set.

    Attributes
    ----------
    x : ndarray, shape (M, N), float64, C-contiguous
        Inputs x_μ = y_μ v/√N + √Δ z_μ (rows).
    y : ndarray, shape (M,), float64
        Cluster labels ±1 (the ones that place x).
    v : ndarray, shape (N,), float64
        The centroid v of this draw (needed for m = w·v/N).
    y_hat : ndarray, shape (M,), float64
        Training labels ŷ ±1, the ones every fit sees: y with a fraction θ flipped (``y`` itself,
        the same array, when omitted or θ = 0).
    """

    x: np.ndarray
    y: np.ndarray
    v: np.ndarray
    y_hat: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.y_hat is None:
            object.__setattr__(self, "y_hat", self.y)

    @property
    def n(self) -> int:
        """Dimension N."""
        return self.x.shape[1]

    @property
    def m(self) -> int:
        """Number of samples M."""
        return self.x.shape[0]


def check_n(n) -> int:
    """Validate the dimension N (an int ≥ 10) and return it as ``int``."""
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 10:
        raise ValueError(f"n must be an int ≥ 10, got {n!r}")
    return int(n)


def n_samples(data: GaussianMixture, n: int) -> int:
    """M = round(αN), at least 1."""
    m = round(data.alpha * n)
    if m < 1:
        raise ValueError(
            f"alpha·n must round to at least one sample, got alpha={data.alpha:g}, n={n}"
        )
    return m


def sample(data: GaussianMixture, n: int, rng: np.random.Generator) -> TrainingSet:
    r"""Draw M = round(αN) training samples of the mixture ``data`` in dimension N = ``n``.

    Parameters
    ----------
    data : GaussianMixture
        α, ρ, Δ, θ (or a covariance Σ, in its eigenbasis, with v its mean's projections).
    n : int
        Dimension N ≥ 10 (with a covariance: its length).
    rng : numpy.random.Generator
        Source of randomness; draws v ~ N(0, I_N) (isotropic model), then y (P(y = +1) = ρ), then z ~ N(0, I_N) per
        sample, then (only if θ > 0) u_μ ~ U(0, 1) and flips the labels with u_μ < θ.

    Returns
    -------
    TrainingSet
        x (M×N, float64; the only O(MN) allocation), y, v, ŷ.
    """
    if not isinstance(data, GaussianMixture):
        raise ValueError(f"data must be a GaussianMixture, got {type(data).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n = check_n(n)
    m = n_samples(data, n)
    cov = data.covariance
    if cov is not None and n != cov.n:
        raise ValueError(f"n must be the covariance's dimension N = {cov.n}, got {n}")
    v = rng.standard_normal(n) if cov is None else np.array(cov.mean_projections)
    y = np.where(rng.random(m) < data.rho, 1.0, -1.0)
    x = rng.standard_normal((m, n))
    if cov is None:
        x *= math.sqrt(data.delta)
    else:  # in Σ's eigenbasis (see the module's docstring)
        x *= np.sqrt(cov.eigenvalues)
    signal = v / math.sqrt(n)
    for lo in range(0, m, _CHUNK_ROWS):
        hi = min(lo + _CHUNK_ROWS, m)
        x[lo:hi] += y[lo:hi, None] * signal
    y_hat = np.where(rng.random(m) < data.flip, -y, y) if data.flip > 0.0 else y
    return TrainingSet(x=x, y=y, v=v, y_hat=y_hat)


def overlap(data: GaussianMixture, a: np.ndarray, b: np.ndarray) -> float:
    """aᵀΣb/(NΔ) in the sampling basis of ``data``: a·b/N for the isotropic model, and
    Σ_i σ_i a_i b_i/(NΔ), Δ = tr Σ/N, with a covariance (q = ``overlap(data, w, w)``)."""
    cov = data.covariance
    if cov is None:
        return float(a @ b) / a.size
    return float((cov.eigenvalues * a) @ b) / (a.size * cov.mean_eigenvalue)


def subset_size(n: int, eta: float) -> int:
    """k = round(ηN), the number of trained student weights, in [1, N]."""
    k = round(eta * n)
    if not 1 <= k <= n:
        raise ValueError(f"eta·n must round to a size in [1, n], got eta={eta:g}, n={n}")
    return k


def draw_subset(n: int, eta: float, rng: np.random.Generator) -> np.ndarray:
    """The student's trained coordinates S: a uniformly random subset of round(ηN) of range(N), sorted
    (all of range(N), drawing nothing, when round(ηN) = N)."""
    k = subset_size(n, eta)
    if k == n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))

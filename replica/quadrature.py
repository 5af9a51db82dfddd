r"""Quadrature for the Gaussian expectations E_ξ[g(ξ)], ξ ~ N(0, 1), of the channel integrals.

The integrands are built from prox_{V,ℓ}(ω): smooth, but with kinks of width ~1 (logistic part) and
~T (distillation part) around h = 0, and nearly linear in between.  When the Gaussian spread of ω is
large (small λ: q ≫ 1) or T is small, those kinks are far narrower than the spread and Gauss–Hermite
converges slowly (at λ = 10⁻³ even 256 nodes err by 10⁻⁴).  We therefore use composite Gauss–Legendre
panels on [−L, L] whose breakpoints are
  * a uniform base grid (panel width ≤ ``BASE_WIDTH``) that resolves the Gaussian weight, and
  * the images of feature points h_k (a geometric set at scale 1 and at scale T) under the explicit
    map h ↦ ξ = (h + V ℓ'(h) − centre)/spread, the inverse of ξ ↦ prox(centre + spread·ξ).
Between breakpoints the integrand is smooth, so the rule converges geometrically in the number p of
Gauss–Legendre points per panel ("order").  The truncation at |ξ| = L = 8.3 drops 2Φ(−8.3) ≈ 1e-16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from numba import njit
from numpy.polynomial.legendre import leggauss

from kdtheory.losses import _d1_p

L = 8.3
BASE_WIDTH = 2.0
#: default Gauss–Legendre points per panel; doubling it changes results by ≤ 5e-10 (tests: < 2e-9)
DEFAULT_ORDER = 7
# feature points at unit scale: a kink of width s around h = 0 is resolved by {0, ±s/4, …, ±36 s}
_UNIT_FEATURES = np.array(
    [0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 36.0]
)
#: a kink narrower than this (the distillation term at T < 0.1) gets the denser point set
#: ``_FINE_FEATURES``: with ``T`` small and a weak ridge, prox's map h ↦ ω = h + V ℓ'(h) stretches
#: the kink over ~Vχ/T, and the panels between {…, 4, 6, 8, 12, …}·T left errors up to 2e-5 in
#: ε_g at T = 0.035, λ = 1e-3 (issue 24); the midpoints bring them to ≤ 1e-9
FINE_WIDTH = 0.1
_FINE_FEATURES = np.unique(
    np.concatenate([_UNIT_FEATURES, 0.5 * (_UNIT_FEATURES[1:] + _UNIT_FEATURES[:-1]), [0.125]])
)
#: where a soft label p̃ = sig(h̃/T) with T < ``FINE_WIDTH`` saturates, a student tempered at T
#: ("both") leaves its KD kink at the h̃ with 1 − p̃ = c or p̃ = c, c ~ T(label slope + |ω − h|/V)/χ
#: set by the student's state: a step of width ≪ T in h̃ that the outer rule cannot place.  At a
#: weak ridge (V ≫ 1; ``replica.student.saturation_band``) it lay between the fine points at
#: |h̃|/T = 4–5 and 7–8 and left errors up to 3e-5 in q (issue 24); breakpoints every T/4 over
#: 2 ≤ |h̃|/T ≤ 16 bring them below 1e-8
SATURATION_BAND = np.arange(2.0, 16.0 + 1e-9, 0.25)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def kink_features(width: float) -> np.ndarray:
    """Feature points h_k/s of a kink of width s: ``_UNIT_FEATURES``, or below ``FINE_WIDTH``
    the denser ``_FINE_FEATURES`` (the midpoints added)."""
    return _FINE_FEATURES if width < FINE_WIDTH else _UNIT_FEATURES


@lru_cache(maxsize=32)
def gauss_legendre(p: int) -> tuple[np.ndarray, np.ndarray]:
    """p-point Gauss–Legendre rule on [−1, 1] (exact for degree ≤ 2p − 1)."""
    x, w = leggauss(p)
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


@lru_cache(maxsize=8)
def gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n-point Gauss–Hermite rule for ξ ~ N(0, 1): E g(ξ) ≈ Σ w_i g(x_i) (Σ w_i = 1 to rounding)."""
    with np.errstate(all="ignore"):
        x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / math.sqrt(2 * math.pi)
    if not (np.all(np.isfinite(x)) and abs(w.sum() - 1.0) < 1e-12):  # numpy's rule from n = 371
        raise ValueError(f"gauss_hermite: n = {n} nodes overflow numpy's rule; use n ≤ 300")
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


@lru_cache(maxsize=8)
def base_breaks(width: float = BASE_WIDTH) -> np.ndarray:
    """Uniform breakpoints on [−L, L] with spacing ≤ width."""
    out = np.linspace(-L, L, math.ceil(2 * L / width) + 1)
    out.setflags(write=False)
    return out


@njit(cache=True)
def composite_rule(base, extra, n_extra, glx, glw, xs, ws):
    """Composite Gauss–Legendre rule with Gaussian weight φ(ξ) on the sorted union of ``base``
    (covering [−L, L]) and ``extra[:n_extra]`` (any order, clipped to the open interval).

    Fills ``xs``, ``ws`` and returns the node count.  The weights are normalised to sum to 1 (the
    Gaussian mass outside [−L, L], 2Φ(−L) ≈ 1e-16, is below rounding), so the rule is exact for
    constants whatever its breakpoints: a difference of two expectations over rules with different
    breakpoints (E[f] = ρE[f|+] + (1 − ρ)E[f|−] at a tiny spread) has no spurious 1e-11 offset.
    """
    lo = base[0]
    hi = base[base.shape[0] - 1]
    brk = np.empty(base.shape[0] + n_extra)
    nb = 0
    for i in range(base.shape[0]):
        brk[nb] = base[i]
        nb += 1
    for i in range(n_extra):
        e = extra[i]
        if lo < e < hi:
            brk[nb] = e
            nb += 1
    brk = np.sort(brk[:nb])
    k = 0
    p = glx.shape[0]
    for i in range(nb - 1):
        a = brk[i]
        b = brk[i + 1]
        if b - a <= 1e-12:
            continue
        c = 0.5 * (a + b)
        hw = 0.5 * (b - a)
        for j in range(p):
            x = c + hw * glx[j]
            xs[k] = x
            ws[k] = hw * glw[j] * math.exp(-0.5 * x * x) / _SQRT_2PI
            k += 1
    total = 0.0
    for j in range(k):
        total += ws[j]
    for j in range(k):  # exact for constants: the rule's error no longer depends on the breakpoints
        ws[j] /= total
    return k


@njit(cache=True)
def prune(xi, gap_max, out):
    """Copy into ``out`` the sorted points of ``xi`` inside (−L, L) that have a neighbour closer than
    ``gap_max`` (a feature narrower than the base panels); return the count."""
    n = xi.shape[0]
    k = 0
    for i in range(n):
        gap = np.inf
        if i > 0:
            gap = xi[i] - xi[i - 1]
        if i < n - 1:
            gap = min(gap, xi[i + 1] - xi[i])
        if gap < gap_max and -L < xi[i] < L:
            out[k] = xi[i]
            k += 1
    return k


@njit(cache=True)
def feature_breaks(hk, y, pt, var, chi, temperature, centre, spread, gap_max, out):
    """Breakpoints ξ_k = (h_k + var·∂_hℓ_KD(y, p̃, h_k) − centre)/spread, where
    prox(centre + spread·ξ) = h_k, pruned by ``prune``; h ↦ ξ is increasing, so they are sorted.

    Fills ``out`` and returns the count (0 if the spread vanishes: the integrand is then constant).
    """
    n = hk.shape[0]
    if spread <= 0.0 or n == 0:
        return 0
    xi = np.empty(n)
    for i in range(n):
        h = hk[i]
        xi[i] = (h + var * _d1_p(y, pt, h, chi, temperature) - centre) / spread
    return prune(xi, gap_max, out)


@dataclass(frozen=True)
class Quadrature:
    """Settings of the composite rules.

    order : Gauss–Legendre points per panel (the rule's order; ``refined`` doubles it).
    feature_ratio : kinks of width s get breakpoints when s/spread < feature_ratio.
    feature_gap : breakpoints whose neighbours are both farther than this (in ξ) are dropped.
    base_width : largest panel width of the base grid on [−L, L].
    """

    order: int = DEFAULT_ORDER
    feature_ratio: float = 0.8
    feature_gap: float = 1.0
    base_width: float = 2.0

    def __post_init__(self):
        if int(self.order) != self.order or self.order < 2:
            raise ValueError(f"Quadrature.order must be an integer ≥ 2, got {self.order!r}")
        for name in ("feature_ratio", "feature_gap", "base_width"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Quadrature.{name} must be > 0, got {getattr(self, name)!r}")

    def coarse(self) -> Quadrature:
        """A cheap rule (order 3, fewer feature points) used to approach the fixed point and to
        model its Jacobian before the final steps with ``self``."""
        return replace(self, order=3, feature_ratio=0.25 * self.feature_ratio)

    def refined(self) -> Quadrature:
        """The same rule with twice the points per panel."""
        return replace(self, order=2 * self.order)

    def features(
        self, chi: float, temperature: float, spread: float, fine: bool = False
    ) -> np.ndarray:
        """Feature points h_k of ℓ_KD that the base grid cannot resolve at this spread.

        The label term (χ < 1) has kinks of width 1, the KD term (χ > 0) of width T; a kink of
        width s spans ≥ s/spread in ξ, so its points are needed only if s/spread < feature_ratio.
        ``fine``: the denser points at every scale (as below T = ``FINE_WIDTH``).
        """
        unit = chi < 1.0 and 1.0 < self.feature_ratio * spread
        kd = chi > 0.0 and temperature < self.feature_ratio * spread
        return _feature_set(1.0 if unit else 0.0, temperature if kd else 0.0, fine)

    def legendre(self) -> tuple[np.ndarray, np.ndarray]:
        return gauss_legendre(self.order)

    def base(self) -> np.ndarray:
        return base_breaks(self.base_width)

    def max_nodes(self) -> int:
        """Upper bound on the nodes of one 1-D rule."""
        return (len(self.base()) + 4 * len(_FINE_FEATURES)) * self.order


@lru_cache(maxsize=256)
def _feature_set(unit_scale: float, kd_scale: float, fine: bool = False) -> np.ndarray:
    """Sorted union of ±s·{0, 1/4, …, 36} for the scales s that are > 0, with the midpoints
    (``kink_features``) at both scales when ``fine`` or the distillation kink is narrower than
    ``FINE_WIDTH`` (read-only, cached)."""
    fine = fine or 0.0 < kd_scale < FINE_WIDTH
    pts = [s * kink_features(0.0 if fine else s) for s in (unit_scale, kd_scale) if s > 0.0]
    out = np.unique(np.concatenate([-p for p in pts] + pts)) if pts else np.empty(0)
    out.setflags(write=False)
    return out


DEFAULT_QUADRATURE = Quadrature()

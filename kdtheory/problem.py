"""The one vocabulary of kdtheory: data model, teachers, student, problem.

Every field is validated on construction; a bad value raises ``ValueError`` naming the field and its
allowed range.  Notation of docs/theory.md: α = M/N, ρ = P(y = +1), Δ the noise variance, λ̃ the
teacher's ridge, λ the student's ridge, χ the KD mixing weight, T the temperature, η the trained
fraction of the student's weights.

The classes also carry the closed-form test metrics of a linear classifier h(x) = w·x/√N + b on the
mixture, which depend on (w, b) only through m = w·v/N, q = ‖w‖²/N and b.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.special import ndtr, owens_t

__all__ = [
    "MULTICLASS_FIELDS",
    "PARAMETERS",
    "BayesTeacher",
    "GaussianMixture",
    "LogisticTeacher",
    "MulticlassMixture",
    "OracleTeacher",
    "Problem",
    "SoftmaxTeacher",
    "Spectrum",
    "Student",
]


def _allowed(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    return f"{left}{lo:g}, {hi:g}{right}".replace("inf", "∞")


def _is_real(value: Any) -> bool:
    """int, float or a numpy real scalar; not bool (nor np.bool_), str, complex or None."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_real(
    name: str,
    value: Any,
    lo: float = -math.inf,
    hi: float = math.inf,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a real number with lo <(=) value <(=) hi.

    Otherwise raise ``ValueError`` naming ``name`` and the allowed range.  NaN is refused, and so
    is ±∞ unless it is a closed end of the range; bools and strings are refused, not coerced.
    """
    allowed = _allowed(lo, hi, lo_open, hi_open)
    if not _is_real(value):
        raise ValueError(f"{name} must be a real number in {allowed}, got {value!r}")
    x = float(value)
    ok = math.isfinite(x) or (x == hi and not hi_open) or (x == lo and not lo_open)
    ok = ok and (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
    if not ok:
        raise ValueError(f"{name} must be in {allowed}, got {value!r}")
    return x


def check_integer(name: str, value: Any, lo: int, hi: float = math.inf) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) in [lo, hi]; else ValueError."""
    allowed = _allowed(lo, hi, False, math.isinf(hi))
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer in {allowed}, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {allowed}, got {value!r}")
    return int(value)


def check_instance(name: str, value: Any, cls: type | tuple[type, ...]) -> Any:
    """Return ``value`` if it is an instance of ``cls`` (``bool``: exactly True or False)."""
    if cls is bool:
        ok = isinstance(value, (bool, np.bool_))
    else:
        ok = isinstance(value, cls)
    if not ok:
        raise ValueError(f"{name} must be a {_names(cls)}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of the strings ``choices``; else ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


class _Validated:
    """Mixin: a frozen dataclass whose float fields are checked against ``_ranges`` and whose
    string fields against ``_choices``."""

    # field -> (lo, hi, lo_open, hi_open)
    _ranges: ClassVar[dict[str, tuple[float, float, bool, bool]]] = {}
    # field -> allowed values
    _choices: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name, bounds in self._ranges.items():
            x = check_real(f"{owner}.{name}", getattr(self, name), *bounds)
            object.__setattr__(self, name, x)
        for name, choices in self._choices.items():
            check_choice(f"{owner}.{name}", getattr(self, name), choices)


_INF = math.inf


@dataclass(frozen=True, eq=False, repr=False)
class Spectrum:
    r"""A covariance Σ of the Gaussian mixture, given by its spectrum and the mean's projections.

    The data are x = y v/√N + Σ^{1/2} z, z ~ N(0, I_N), with Σ = Σ_i σ_i e_i e_iᵀ (orthonormal
    eigenvectors e_i, N = ``n`` the length of the arrays) and μ_i = v·e_i the projections of the
    mean v on them, unscaled: (1/N) Σ_i μ_i² = ‖v‖²/N.  The isotropic model of the package
    (Σ = Δ I, ‖v‖² = N) is σ_i = Δ with every μ_i = 1 (:meth:`isotropic`); only the μ_i² enter
    the theory.  Immutable; equal spectra (same arrays, same order) have the same :attr:`digest`.

    Parameters
    ----------
    eigenvalues : array_like, shape (N,)
        σ_i > 0, finite, N ≥ 1 (zero modes are not allowed: :meth:`from_covariance` lifts them by
        a small ridge).
    mean_projections : array_like, shape (N,)
        μ_i = v·e_i, finite.
    """

    eigenvalues: np.ndarray
    mean_projections: np.ndarray

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("eigenvalues", "mean_projections"):
            raw = getattr(self, name)
            try:
                a = np.array(raw, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Spectrum.{name} must be a 1-D array of real numbers, got {raw!r}"
                ) from None
            if a.ndim != 1 or a.size < 1 or np.iscomplexobj(raw):
                raise ValueError(
                    f"Spectrum.{name} must be a 1-D array of length ≥ 1, got shape {a.shape}"
                )
            if not np.all(np.isfinite(a)):
                raise ValueError(f"Spectrum.{name} must be finite, got a NaN or ±∞ entry")
            a.setflags(write=False)
            arrays[name] = a
        sigma, mu = arrays["eigenvalues"], arrays["mean_projections"]
        if not np.all(sigma > 0.0):
            raise ValueError(
                f"Spectrum.eigenvalues must be in (0, ∞), got min {sigma.min()!r} (lift zero modes "
                "with Spectrum.from_covariance's ridge)"
            )
        if mu.size != sigma.size:
            raise ValueError(
                f"Spectrum.mean_projections must have the length of eigenvalues ({sigma.size}), "
                f"got {mu.size}"
            )
        object.__setattr__(self, "eigenvalues", sigma)
        object.__setattr__(self, "mean_projections", mu)

    @property
    def n(self) -> int:
        """N, the dimension (number of eigenvalues)."""
        return int(self.eigenvalues.size)

    @property
    def mean_eigenvalue(self) -> float:
        """tr Σ/N = (1/N) Σ_i σ_i: the ``delta`` of a mixture with this covariance."""
        return float(np.mean(self.eigenvalues))

    @property
    def signal(self) -> float:
        """‖v‖²/N = (1/N) Σ_i μ_i² (1 in the isotropic model)."""
        return float(np.mean(self.mean_projections**2))

    @property
    def whitened_signal(self) -> float:
        """vᵀΣ⁻¹v/N = (1/N) Σ_i μ_i²/σ_i: the signal after whitening x → Σ^{-1/2} x (1/Δ in the
        isotropic model); linear separability depends on Σ only through it."""
        return float(np.mean(self.mean_projections**2 / self.eigenvalues))

    @functools.cached_property
    def digest(self) -> str:
        """SHA-256 (hex) of N and the float64 bytes of both arrays: a stable content hash."""
        h = hashlib.sha256(b"kdtheory.Spectrum/1")
        h.update(np.int64(self.n).tobytes())
        h.update(np.ascontiguousarray(self.eigenvalues, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(self.mean_projections, dtype="<f8").tobytes())
        return h.hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Spectrum):
            return NotImplemented
        return self is other or self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return (
            f"Spectrum(n={self.n}, mean_eigenvalue={self.mean_eigenvalue:.6g}, "
            f"signal={self.signal:.6g}, digest={self.digest[:12]})"
        )

    def __reduce__(self):  # pickled by value, re-validated (and read-only) on loading
        return (Spectrum, (np.array(self.eigenvalues), np.array(self.mean_projections)))

    @classmethod
    def isotropic(cls, delta: float, n: int) -> Spectrum:
        """Σ = Δ I_N with every projection 1 (‖v‖² = N): the isotropic model in N dimensions."""
        delta = check_real("delta", delta, 0.0, _INF, True, True)
        n = check_integer("n", n, 1)
        return cls(np.full(n, delta), np.ones(n))

    @classmethod
    def from_covariance(cls, covariance: Any, mean: Any, *, ridge: float = 1e-6) -> Spectrum:
        r"""The spectrum of a covariance matrix Σ and the projections of a mean vector v on it.

        Σ is symmetrised, (Σ + Σᵀ)/2, and diagonalised (``numpy.linalg.eigh``); eigenvalues below
        ``ridge``·tr Σ/N (the zero modes of a singular estimate, and negative rounding errors) are
        raised to it.  The eigenvalues come in decreasing order, μ_i = v·e_i.  For data with class
        means c_± (centred at (c₊ + c₋)/2, which an unpenalised bias absorbs) the model's mean is
        v = √N (c₊ − c₋)/2.

        Parameters
        ----------
        covariance : array_like, shape (N, N)
            Symmetric positive semi-definite (asymmetry beyond 1e-8 of its largest entry, or an
            eigenvalue below −1e-8·max σ, is refused), finite, with tr Σ > 0.
        mean : array_like, shape (N,)
            v, finite.
        ridge : float
            Relative floor of the eigenvalues, 0 < ridge ≤ 1.
        """
        ridge = check_real("ridge", ridge, 0.0, 1.0, True, False)
        c = np.array(covariance, dtype=np.float64)
        v = np.array(mean, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 1:
            raise ValueError(f"covariance must be a square N×N matrix, got shape {c.shape}")
        if v.shape != (c.shape[0],):
            raise ValueError(f"mean must have shape ({c.shape[0]},), got {v.shape}")
        if not (np.all(np.isfinite(c)) and np.all(np.isfinite(v))):
            raise ValueError("covariance and mean must be finite, got a NaN or ±∞ entry")
        scale = float(np.max(np.abs(c)))
        if np.max(np.abs(c - c.T)) > 1e-8 * scale:
            raise ValueError("covariance must be symmetric (to 1e-8 of its largest entry)")
        sigma, basis = np.linalg.eigh(0.5 * (c + c.T))
        if not sigma[-1] > 0.0 or sigma[0] < -1e-8 * sigma[-1]:
            raise ValueError(
                f"covariance must be positive semi-definite with tr Σ > 0, got eigenvalues in "
                f"[{sigma[0]:.3g}, {sigma[-1]:.3g}]"
            )
        floor = ridge * float(np.mean(np.maximum(sigma, 0.0)))
        order = np.argsort(sigma)[::-1]
        return cls(np.maximum(sigma[order], floor), basis[:, order].T @ v)


@dataclass(frozen=True)
class GaussianMixture(_Validated):
    r"""Binary Gaussian mixture x = y v/√N + √Δ z, P(y = +1) = ρ, M = αN samples.

    With a ``covariance`` Σ: x = y v/√N + Σ^{1/2} z (v and Σ given by a :class:`Spectrum`).

    Parameters
    ----------
    alpha : float
        Sample ratio α = M/N > 0.
    rho : float
        Fraction of the positive cluster, 0 < ρ < 1.
    delta : float
        Noise variance Δ > 0.  With a ``covariance`` it is not a free parameter but its mean
        eigenvalue Δ = tr Σ/N, set on construction (pass the default 1, or that value).
    flip : float
        Label noise θ, 0 ≤ θ ≤ 1: each training label is flipped, independently, with probability
        θ (the cluster, hence x, is unchanged). Test errors are on clean labels. θ = ½: the
        training labels carry no information.
    covariance : Spectrum, optional
        Σ in place of Δ I (None: the isotropic model).  The overlaps of a classifier are then
        m = w·v/N and q = wᵀΣw/(NΔ) (= ‖w‖²/N in the isotropic model), so that the field
        w·x/√N has variance Δq given the cluster and the metrics below keep their form.
    """

    alpha: float
    rho: float = 0.5
    delta: float = 1.0
    flip: float = 0.0
    covariance: Spectrum | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        cov = self.covariance
        if cov is None:
            return
        check_instance("GaussianMixture.covariance", cov, Spectrum)
        mean = cov.mean_eigenvalue
        if self.delta != 1.0 and not math.isclose(self.delta, mean, rel_tol=1e-12):
            raise ValueError(
                f"GaussianMixture.delta must be left at its default (or tr Σ/N = {mean!r}) when a "
                f"covariance is given, got {self.delta!r}: Σ replaces Δ I"
            )
        object.__setattr__(self, "delta", mean)

    _ranges: ClassVar = {
        "alpha": (0.0, _INF, True, True),
        "rho": (0.0, 1.0, True, True),
        "delta": (0.0, _INF, True, True),
        "flip": (0.0, 1.0, False, False),
    }

    def error(self, m: Any, q: Any, b: Any) -> Any:
        r"""Test error ε_g = ρ Φ(−(m + b)/√(Δq)) + (1 − ρ) Φ(−(m − b)/√(Δq)) (vectorised).

        At q = 0 (w = 0, hence m = 0: |m| ≤ √q) the classifier is the constant sign(b) and the
        limit is ε_g = ρ 1[b < 0] + (1 − ρ) 1[b > 0], with ½ for b = 0 (a tie).
        """
        s = np.sqrt(self.delta * np.asarray(q, dtype=float))
        return self.rho * _phi_over(-(m + b), s) + (1.0 - self.rho) * _phi_over(-(m - b), s)

    def cross_entropy(self, m: Any, q: Any, b: Any) -> Any:
        r"""Population cross-entropy Σ_y P(y) E log(1 + e^{−y h}), h | y ~ N(y m + b, Δq) (vectorised).

        The loss of h(x) = w·x/√N + b on a fresh sample against its hard label: the validation
        loss of the λ path at T_val = 1. With u = −y h ~ N(μ, s²), μ = −(m + y b), s = √(Δq), it is
        E softplus(u), computed by :func:`_expected_softplus`; at q = 0 it is the closed form
        ρ log(1 + e^{−b}) + (1 − ρ) log(1 + e^{b}).
        """
        s = np.sqrt(self.delta * np.asarray(q, dtype=float))
        m, b = np.asarray(m, dtype=float), np.asarray(b, dtype=float)
        plus = _expected_softplus(-(m + b), s)
        minus = _expected_softplus(-(m - b), s)
        return (self.rho * plus + (1.0 - self.rho) * minus)[()]

    def agreement(self, m, q, b, m_t, q_t, b_t, r) -> float:
        r"""Test-time sign agreement Σ_y P(y) P(sign h̃ = sign h) of a student and its teacher.

        Given y, (h̃, h) is Gaussian with means (y m̃ + b̃, y m + b) and covariance Δ[[q̃, r], [r, q]];
        P(same sign) = Φ₂(a, a'; c) + Φ₂(−a, −a'; c), a = (y m̃ + b̃)/√(Δq̃), a' = (y m + b)/√(Δq),
        c = r/√(q̃q).  If q = 0 (or q̃ = 0) that classifier is the constant sign(b) and
        P(same sign) = Φ(sign(b)·a) (½ at b = 0).
        """
        total = 0.0
        for y, p_y in ((1.0, self.rho), (-1.0, 1.0 - self.rho)):
            mean_t, mean = y * m_t + b_t, y * m + b
            if q_t > 0.0 and q > 0.0:
                c = max(-1.0, min(1.0, r / math.sqrt(q_t * q)))
                a_t = mean_t / math.sqrt(self.delta * q_t)
                a = mean / math.sqrt(self.delta * q)
                same = bivariate_normal_cdf(a_t, a, c) + bivariate_normal_cdf(-a_t, -a, c)
            else:  # P(sign h̃ = +) P(sign h = +) + P(−)P(−): one of them is a constant
                up_t = float(_phi_over(mean_t, math.sqrt(self.delta * q_t)))
                up = float(_phi_over(mean, math.sqrt(self.delta * q)))
                same = up_t * up + (1.0 - up_t) * (1.0 - up)
            total += p_y * same
        return total


_HERMITE_NODES = 64  # Gauss–Hermite where s ≤ 1: softplus's poles at u = ±iπ are ≥ π/s ≥ π
# away in the standardised variable, so 64 nodes reach rounding error
_PANELS = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 4.5, 6.0, 8.0, 11.0, 15.0, 20.0, 27.0, 37.0])
_LEGENDRE_NODES = 24  # per panel of the remainder r(x) = log(1 + e^{−x}) on [0, 37] (r(37) ~ 1e-16)


@functools.cache
def _softplus_rules() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(z_i, ω_i): probabilists' Gauss–Hermite rule with Σ ω_i = 1; (x_j, w_j): composite
    Gauss–Legendre on ``_PANELS``."""
    z, wz = np.polynomial.hermite_e.hermegauss(_HERMITE_NODES)
    t, wt = np.polynomial.legendre.leggauss(_LEGENDRE_NODES)
    lo, hi = _PANELS[:-1, None], _PANELS[1:, None]
    x = (0.5 * (hi - lo) * t + 0.5 * (hi + lo)).ravel()
    wx = (0.5 * (hi - lo) * wt).ravel()
    return z, wz / wz.sum(), x, wx


def _expected_softplus(mu: np.ndarray, s: np.ndarray) -> np.ndarray:
    r"""E log(1 + e^u) for u ~ N(μ, s²), s ≥ 0 (vectorised).

    s ≤ 1: Gauss–Hermite, Σ_i ω_i softplus(μ + s z_i). s > 1: softplus(u) = max(u, 0) + r(|u|),
    r(x) = log(1 + e^{−x}), so E = μ Φ(μ/s) + s φ(μ/s) + ∫_0^∞ r(x) [φ((x−μ)/s) + φ((x+μ)/s)]/s dx,
    the last integral by composite Gauss–Legendre (the kink of max(u, 0) and of r(|u|) at u = 0 is
    then a panel end, and the Gaussian factor is smooth on the scale s > 1 of the panels).
    """
    z, wz, x, wx = _softplus_rules()
    mu, s = np.broadcast_arrays(np.asarray(mu, dtype=float), np.asarray(s, dtype=float))
    small = s <= 1.0
    out = np.empty(mu.shape)
    ms, ss = mu[small][:, None], s[small][:, None]
    out[small] = np.logaddexp(0.0, ms + ss * z) @ wz
    mb, sb = mu[~small][:, None], s[~small][:, None]
    a = mb / sb
    relu = mb * ndtr(a) + sb * np.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    gauss = np.exp(-0.5 * ((x - mb) / sb) ** 2) + np.exp(-0.5 * ((x + mb) / sb) ** 2)
    rest = (np.log1p(np.exp(-x)) * gauss) @ wx / (sb[:, 0] * math.sqrt(2.0 * math.pi))
    out[~small] = relu[:, 0] + rest
    return out


def _phi_over(x: Any, s: Any) -> Any:
    """Φ(x/s) for s ≥ 0, with its limit at s = 0: 1[x > 0], ½ at x = 0 (vectorised)."""
    x, s = np.asarray(x, dtype=float), np.asarray(s, dtype=float)
    safe = np.where(s > 0.0, s, 1.0)
    return np.where(s > 0.0, ndtr(x / safe), 0.5 * (1.0 + np.sign(x)))[()]


def bivariate_normal_cdf(h: float, k: float, c: float) -> float:
    r"""Φ₂(h, k; c) = P(X ≤ h, Y ≤ k) for standard normals with correlation c (Owen's T formula).

    Φ₂ = ½Φ(h) + ½Φ(k) − T(h, a_h) − T(k, a_k) − β, a_h = (k − ch)/(h√(1−c²)),
    a_k = (h − ck)/(k√(1−c²)), β = ½ if hk < 0 or (hk = 0 and h + k < 0), else 0.
    """
    if c >= 1.0:
        return float(ndtr(min(h, k)))
    if c <= -1.0:
        return float(max(0.0, ndtr(h) - ndtr(-k)))
    s = math.sqrt(1.0 - c * c)

    def owen(x: float, num: float) -> float:  # T(x, num/(x s)), with T(0, ±∞) = ±1/4
        if x == 0.0:
            return 0.0 if num == 0.0 else math.copysign(0.25, num)
        return float(owens_t(x, num / (x * s)))

    beta = 0.5 if (h * k < 0 or (h * k == 0 and h + k < 0)) else 0.0
    if h == 0.0 and k == 0.0:
        return 0.25 + math.asin(c) / (2 * math.pi)
    return float(0.5 * ndtr(h) + 0.5 * ndtr(k) - owen(h, k - c * h) - owen(k, h - c * k) - beta)


@dataclass(frozen=True)
class LogisticTeacher(_Validated):
    r"""L2-regularised logistic-regression teacher: min Σ_μ log(1 + e^{−y h̃_μ}) + (λ̃/2)‖w̃‖².

    Parameters
    ----------
    lam : float
        Ridge penalty λ̃ ≥ 0 (called ``lam_t`` on the command line); the bias is not penalised.
    """

    lam: float

    _ranges: ClassVar = {"lam": (0.0, _INF, False, True)}


@dataclass(frozen=True)
class BayesTeacher(_Validated):
    r"""Bayes-optimal teacher: the exact posterior log-odds under the prior v ~ N(0, I)."""


@dataclass(frozen=True)
class Student(_Validated):
    r"""KD student: min Σ_μ [(1−χ) ℓ(y, h) + χ H(sig(h̃/T), sig(h/T_s))] + (λ/2)‖w‖² on ηN weights.

    Parameters
    ----------
    lam : float
        Ridge penalty λ ≥ 0; the bias is not penalised.
    chi : float
        KD mixing weight 0 ≤ χ ≤ 1 (χ = 0: plain logistic regression, no KD).
    temperature : float
        Distillation temperature T > 0.
    eta : float
        Fraction of trained weights 0 < η ≤ 1 (η = 1: full student).
    tempered : str
        Which outputs the temperature divides: ``"both"`` (T_s = T, H(sig(h̃/T), sig(h/T)), the
        convention of Saglietti & Zdeborová 2022) or ``"teacher"`` (T_s = 1, H(sig(h̃/T), sig(h)),
        the convention of Takanami, Takahashi & Sakata 2025). At χ = 1 the two are the same
        estimator up to w → w/T, λ → λT²; at T = 1 they coincide.
    """

    lam: float
    chi: float = 1.0
    temperature: float = 1.0
    eta: float = 1.0
    tempered: str = "both"

    _ranges: ClassVar = {
        "lam": (0.0, _INF, False, True),
        "chi": (0.0, 1.0, False, False),
        "temperature": (0.0, _INF, True, True),
        "eta": (0.0, 1.0, True, False),
    }
    _choices: ClassVar = {"tempered": ("both", "teacher")}

    @property
    def student_temperature(self) -> float:
        """T_s, the temperature of the student's own output: T if ``tempered == "both"``, else 1."""
        return self.temperature if self.tempered == "both" else 1.0


Teacher = LogisticTeacher | BayesTeacher

#: Flat parameter names used on the command line and in data files, with their owner and field.
PARAMETERS: dict[str, tuple[str, str]] = {
    "alpha": ("data", "alpha"),
    "rho": ("data", "rho"),
    "delta": ("data", "delta"),
    "flip": ("data", "flip"),
    "lam_t": ("teacher", "lam"),
    "lam": ("student", "lam"),
    "chi": ("student", "chi"),
    "temperature": ("student", "temperature"),
    "eta": ("student", "eta"),
}


@dataclass(frozen=True)
class Problem:
    """A KD problem: data model, teacher and student.

    ``Problem.replace(alpha=3, lam_t=0.1)`` returns a copy with flat parameters changed
    (see ``PARAMETERS``); ``problem.params`` is the flat dictionary.
    """

    data: GaussianMixture | MulticlassMixture
    teacher: LogisticTeacher | BayesTeacher | SoftmaxTeacher | OracleTeacher = field(
        default_factory=BayesTeacher
    )
    student: Student = field(default_factory=lambda: Student(lam=0.1))

    def __post_init__(self) -> None:
        multiclass = isinstance(self.data, MulticlassMixture)
        teachers = (
            (SoftmaxTeacher, OracleTeacher) if multiclass else (LogisticTeacher, BayesTeacher)
        )
        for name, cls in (
            ("data", (GaussianMixture, MulticlassMixture)),
            ("teacher", teachers),
            ("student", Student),
        ):
            if not isinstance(getattr(self, name), cls):
                what = f" with a {type(self.data).__name__}" if name == "teacher" else ""
                raise ValueError(
                    f"Problem.{name} must be a {_names(cls)}{what}, got "
                    f"{type(getattr(self, name)).__name__}"
                )
        if self.data.covariance is not None:
            if isinstance(self.teacher, BayesTeacher):
                raise ValueError(
                    "Problem.teacher must be a LogisticTeacher with a covariance: the Bayes-optimal "
                    "teacher needs a prior on v, which a Spectrum does not define"
                )
            if self.student.eta < 1.0:
                raise ValueError(
                    f"Student.eta must be 1 with a covariance, got {self.student.eta!r}: a sparse "
                    "student's features are not defined by a spectrum alone"
                )
        if multiclass and self.student.eta != 1.0:
            raise ValueError(
                f"Student.eta must be 1 with a MulticlassMixture, got {self.student.eta!r}: the "
                "K-class theory is derived for a full student only"
            )
        if isinstance(self.teacher, BayesTeacher) and self.data.flip > 0.0:
            raise ValueError(
                f"GaussianMixture.flip must be 0 with a BayesTeacher, got {self.data.flip!r}: under "
                "label noise the posterior of v is a mixture of 2^M Gaussians, the Bayes-optimal "
                "teacher is not linear and has no closed form here; use a LogisticTeacher"
            )

    @property
    def multiclass(self) -> bool:
        """True for a K-class problem (a :class:`MulticlassMixture`)."""
        return isinstance(self.data, MulticlassMixture)

    @property
    def params(self) -> dict[str, float]:
        """Flat parameters {alpha, rho, delta, flip, lam_t, lam, chi, temperature, eta}; lam_t is NaN
        for the Bayes and oracle teachers.  For a K-class problem ``rho`` (a vector) is left out:
        the flat parameters are the scalar ones (the Gram matrix and ρ: ``problem.data``)."""
        out = {}
        for key, (owner, name) in PARAMETERS.items():
            if self.multiclass and key == "rho":
                continue
            out[key] = float(getattr(getattr(self, owner), name, math.nan))
        return out

    def replace(self, **changes: float) -> Problem:
        """Copy with flat parameters changed, e.g. ``p.replace(alpha=3.0, lam=0.01)``."""
        parts = {"data": {}, "teacher": {}, "student": {}}
        for key, value in changes.items():
            if key not in PARAMETERS:
                raise ValueError(f"unknown parameter {key!r}; allowed: {', '.join(PARAMETERS)}")
            owner, name = PARAMETERS[key]
            if owner == "teacher" and isinstance(self.teacher, (BayesTeacher, OracleTeacher)):
                raise ValueError(
                    "lam_t applies to a LogisticTeacher or SoftmaxTeacher; this problem has a "
                    f"{type(self.teacher).__name__}"
                )
            parts[owner][name] = value
        return Problem(
            data=dataclasses.replace(self.data, **parts["data"]),
            teacher=dataclasses.replace(self.teacher, **parts["teacher"]),
            student=dataclasses.replace(self.student, **parts["student"]),
        )


def refuse_covariance(data: GaussianMixture, what: str) -> None:
    """ValueError if ``data`` has a covariance: ``what`` (a solver or a quantity) is derived for
    the isotropic model Σ = Δ I only."""
    if data.covariance is not None:
        raise ValueError(
            f"GaussianMixture.covariance must be None for {what}, which is derived for the "
            "isotropic model Σ = Δ I only; replica.solve and simulations.run take a covariance"
        )


def _names(cls: type | tuple[type, ...]) -> str:
    if isinstance(cls, tuple):
        return " or ".join(c.__name__ for c in cls)
    return cls.__name__


# ============================================================================ K classes
#
# The K-class softmax model (docs/theory.md, section "K classes"): class c with probability ρ_c,
# centroids with v_c·v_c'/N → G_cc', x = v_c/√N + √Δ z; linear fields h = W x/√N + b ∈ R^K,
# prediction argmax_k h_k.  Given the class, h | c ~ N(M[:, c] + b, Δ Q) with
# M_kc = w_k·v_c/N and Q_kl = w_k·w_l/N, so every test metric is a function of (M, Q, b).

#: Solution fields of a K-class problem, shared by ``replica.solve`` (N → ∞) and
#: ``simulations.run`` (finite N; each with ``.mean``/``.sem``).  Teacher: W̃, b̃; student: W, b.
#: M, Q, R and b are reported in the gauge Σ_k w_k = 0, Σ_k b_k = 0 (the softmax ignores a common
#: shift): a ridge fit has Σ_k w_k = 0 already, but its unpenalised b and the oracle's W̃ = V/Δ must
#: be centred (w_k − mean_l w_l, b_k − mean_l b_l) before their overlaps are compared; the errors
#: are gauge-invariant.
MULTICLASS_FIELDS: dict[str, dict[str, str]] = {
    "teacher": {
        "eg": "test error P(argmax_k h̃_k ≠ c) on clean labels (MulticlassMixture.error)",
        "eg_se": "standard error of eg: 0 where eg is deterministic (K ≤ 3), the QMC error beyond",
        "M": "K×K overlaps with the centroids, M̃_kc = w̃_k·v_c/N",
        "Q": "K×K self-overlaps, Q̃_kl = w̃_k·w̃_l/N",
        "b": "K biases b̃",
        "train_loss": "mean training cross-entropy CE(ŷ, softmax(h̃)) against the training labels",
        "train_error": "training misclassification rate against the training labels ŷ",
    },
    "student": {
        "eg": "test error P(argmax_k h_k ≠ c) on clean labels",
        "eg_se": "standard error of eg (0 for K ≤ 3)",
        "M": "K×K overlaps with the centroids, M_kc = w_k·v_c/N",
        "Q": "K×K self-overlaps, Q_kl = w_k·w_l/N",
        "b": "K biases b",
        "R": "K×K teacher–student overlaps, R_kl = w_k·w̃_l/N (student row k, teacher row l)",
        "train_loss": "mean training loss (1−χ) CE(ŷ, softmax(h)) + χ CE(softmax(h̃/T), softmax(h/T_s))",
        "train_error": "training misclassification rate against the training labels ŷ",
    },
}

#: K ≤ this: the test error is deterministic (Φ for K = 2, Owen's T bivariate normal for K = 3)
ERROR_EXACT_MAX_K = 3
#: scrambled Sobol points per randomisation, and randomisations, of the test error for K > 3
ERROR_QMC_POINTS = 2**12
ERROR_QMC_REPEATS = 8


def _frozen_array(name: str, value: Any, ndim: int) -> np.ndarray:
    """A read-only float64 copy of ``value`` (finite, ``ndim`` dimensions); else ValueError."""
    try:
        arr = np.array(value, dtype=np.float64, copy=True)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a real array of {ndim} dimension(s), got {value!r}"
        ) from None
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    arr.flags.writeable = False
    return arr


def array_digest(arr: np.ndarray) -> str:
    """A stable hash of a float64 array's shape and bytes (C order): sha256, 16 hex digits."""
    import hashlib

    a = np.ascontiguousarray(arr, dtype=np.float64)
    h = hashlib.sha256(repr(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class MulticlassMixture(_Validated):
    r"""K-class Gaussian mixture x = v_c/√N + √Δ z, P(class c) = ρ_c, M = αN samples.

    The centroids are drawn once per data set with (v_1i, …, v_Ki) ~ N(0, G) independently for
    each coordinate i, so v_c·v_c'/N → G_cc'.

    Parameters
    ----------
    alpha : float
        Sample ratio α = M/N > 0.
    gram : array_like, K×K
        Gram matrix G of the centroids: symmetric positive semi-definite, K ≥ 2.  Stored as a
        read-only float64 array; equality and hash are by value.
    rho : array_like of length K, optional
        Class probabilities ρ_c > 0 summing to 1 (default uniform 1/K).
    delta : float
        Noise variance Δ > 0.
    flip : float
        Label noise θ, 0 ≤ θ ≤ 1: each training label is replaced, with probability θ, by a
        uniformly drawn *other* class. θ = (K − 1)/K: the training labels carry no information.
        Test errors are on clean labels.

    Notes
    -----
    K = 2 with G = [[1, −1], [−1, 1]] is the binary :class:`GaussianMixture` (v₁ = −v₂ = v,
    ρ = ρ₁), with w = w₁ − w₂ and b = b₁ − b₂.  The solution fields of a K-class problem are
    listed in ``MULTICLASS_FIELDS``.
    """

    alpha: float
    gram: Any
    rho: Any = None
    delta: float = 1.0
    flip: float = 0.0

    _ranges: ClassVar = {
        "alpha": (0.0, _INF, True, True),
        "delta": (0.0, _INF, True, True),
        "flip": (0.0, 1.0, False, False),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        g = _frozen_array("MulticlassMixture.gram", self.gram, 2)
        k = g.shape[0]
        if g.shape != (k, k) or k < 2:
            raise ValueError(
                f"MulticlassMixture.gram must be a K×K matrix with K ≥ 2, got shape {g.shape}"
            )
        scale = max(1.0, float(np.max(np.abs(g))))
        if np.max(np.abs(g - g.T)) > 1e-12 * scale:
            raise ValueError("MulticlassMixture.gram must be symmetric (|G − Gᵀ| ≤ 1e-12 max|G|)")
        g = 0.5 * (g + g.T)
        if float(np.linalg.eigvalsh(g)[0]) < -1e-10 * scale:
            raise ValueError(
                "MulticlassMixture.gram must be positive semi-definite (smallest eigenvalue ≥ "
                f"−1e-10 max|G|), got smallest eigenvalue {float(np.linalg.eigvalsh(g)[0]):.3g}"
            )
        g.flags.writeable = False
        if self.rho is None:
            rho = np.full(k, 1.0 / k)
        else:
            rho = np.array(_frozen_array("MulticlassMixture.rho", self.rho, 1))
            if rho.shape != (k,):
                raise ValueError(f"MulticlassMixture.rho must have length K = {k}, got {rho.shape}")
            if np.any(rho <= 0.0) or abs(rho.sum() - 1.0) > 1e-9:
                raise ValueError(
                    "MulticlassMixture.rho must be a probability vector with every ρ_c in (0, 1) "
                    f"and Σρ_c = 1 (to 1e-9), got {self.rho!r}"
                )
            rho = rho / rho.sum()
        rho.flags.writeable = False
        object.__setattr__(self, "gram", g)
        object.__setattr__(self, "rho", rho)

    # value equality and a stable hash (the arrays are read-only)
    def _key(self) -> tuple:
        return (self.alpha, self.delta, self.flip, self.gram.tobytes(), self.rho.tobytes(), self.K)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MulticlassMixture):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def K(self) -> int:
        """Number of classes."""
        return int(self.gram.shape[0])

    @property
    def covariance(self) -> None:
        """None: the noise is isotropic, Δ I (a generic covariance is not derived for K classes)."""
        return None

    # -------------------------------------------------------------- constructors
    @classmethod
    def orthogonal(cls, alpha: float, K: int, s: float = 1.0, **kw: Any) -> MulticlassMixture:
        """Orthogonal centroids of equal norm: G = s I (no class resembles another)."""
        K = check_integer("K", K, 2)
        s = check_real("s", s, 0.0, _INF, True, True)
        return cls(alpha, s * np.eye(K), **kw)

    @classmethod
    def simplex(cls, alpha: float, K: int, s: float = 1.0, **kw: Any) -> MulticlassMixture:
        """Centred simplex: G = s (K I − 11ᵀ)/(K − 1), G_cc = s, G_cc' = −s/(K − 1) (Σ_c v_c = 0).

        K = 2, s = 1 is the binary mixture's G = [[1, −1], [−1, 1]].
        """
        K = check_integer("K", K, 2)
        s = check_real("s", s, 0.0, _INF, True, True)
        return cls(alpha, s * (K * np.eye(K) - np.ones((K, K))) / (K - 1), **kw)

    @classmethod
    def two_close(
        cls, alpha: float, K: int, s: float = 1.0, c: float = 0.8, **kw: Any
    ) -> MulticlassMixture:
        """Two close classes: G = s I except G_01 = G_10 = c s (classes 0 and 1 have cosine c)."""
        K = check_integer("K", K, 2)
        s = check_real("s", s, 0.0, _INF, True, True)
        c = check_real("c", c, -1.0, 1.0)
        g = np.eye(K)
        g[0, 1] = g[1, 0] = c
        return cls(alpha, s * g, **kw)

    @classmethod
    def from_class_means(cls, alpha: float, means: Any, **kw: Any) -> MulticlassMixture:
        """G_cc' = μ_c·μ_c' from class means μ_c (rows of a K×N array) of real data in the units
        x = v_c/√N + √Δ z, i.e. μ_c = v_c/√N."""
        mu = _frozen_array("means", means, 2)
        if mu.shape[0] < 2:
            raise ValueError(f"means must be a K×N array with K ≥ 2 rows, got shape {mu.shape}")
        return cls(alpha, mu @ mu.T, **kw)

    # -------------------------------------------------------------- test metrics
    def oracle(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""(M, Q, b) of the oracle classifier, the true posterior p(c|x) given the centroids:
        W̃ = V/Δ, b̃_c = log ρ_c − G_cc/2Δ, hence M̃ = G/Δ, Q̃ = G/Δ²."""
        d = self.delta
        return self.gram / d, self.gram / (d * d), np.log(self.rho) - np.diag(self.gram) / (2 * d)

    def oracle_error(self) -> float:
        """Test error of the oracle classifier (:meth:`oracle`); exact for K ≤ 3, QMC beyond."""
        return self.error(*self.oracle())

    def error(self, M: Any, Q: Any, b: Any, *, se: bool = False, seed: int = 0) -> Any:
        r"""Test error ε_g = Σ_c ρ_c P(argmax_k h_k ≠ c), h | c ~ N(M[:, c] + b, Δ Q).

        P(argmax = c) is the (K−1)-dimensional orthant probability P(d > 0) of the differences
        d_k = h_c − h_k (k ≠ c), Gaussian with mean m_k = M_cc + b_c − M_kc − b_k and covariance
        Δ(Q_cc − Q_ck − Q_cl + Q_kl).  K = 2: Φ(m/σ); K = 3: the bivariate normal CDF (Owen's T),
        both deterministic (``ERROR_EXACT_MAX_K``).  K > 3: Genz's separation of variables
        (sequential conditioning on a pivoted Cholesky factor of the differences' covariance,
        zero pivots allowed, so a singular Q is fine) integrated by scrambled Sobol points,
        ``ERROR_QMC_REPEATS`` independent scramblings of ``ERROR_QMC_POINTS`` points, seeded by
        ``seed``.  Ties (a degenerate direction with mean 0) count half.

        Returns ε_g, or (ε_g, standard error) with ``se=True`` (standard error 0 for K ≤ 3).
        """
        K = self.K
        M = np.asarray(M, dtype=float)
        Q = np.asarray(Q, dtype=float)
        b = np.asarray(b, dtype=float)
        if M.shape != (K, K) or Q.shape != (K, K) or b.shape != (K,):
            raise ValueError(
                f"M and Q must be {K}×{K} and b of length {K}, got {M.shape}, {Q.shape}, {b.shape}"
            )
        total, var = 0.0, 0.0
        for c in range(K):
            others = [k for k in range(K) if k != c]
            mean = (M[c, c] + b[c]) - (M[others, c] + b[others])
            D = np.zeros((K - 1, K))
            D[:, c] = 1.0
            D[np.arange(K - 1), others] = -1.0
            cov = self.delta * (D @ Q @ D.T)
            p, v = _orthant(mean, 0.5 * (cov + cov.T), seed + c)
            total += self.rho[c] * (1.0 - p)
            var += self.rho[c] ** 2 * v
        if se:
            return float(total), math.sqrt(var)
        return float(total)


def _orthant(mean: np.ndarray, cov: np.ndarray, seed: int) -> tuple[float, float]:
    """P(d > 0) for d ~ N(mean, cov) (cov PSD, possibly singular) and its variance estimate."""
    n = mean.size
    scale = max(float(np.max(np.abs(np.diag(cov)))), 1e-300)
    tiny = 1e-14 * scale
    if n == 1:
        return float(
            _phi_over(mean[0], math.sqrt(max(cov[0, 0], 0.0)) if cov[0, 0] > tiny else 0.0)
        ), 0.0
    if n == 2:
        s = np.sqrt(np.where(np.diag(cov) > tiny, np.diag(cov), 0.0))
        if s[0] > 0 and s[1] > 0:
            c = float(cov[0, 1] / (s[0] * s[1]))
            return bivariate_normal_cdf(mean[0] / s[0], mean[1] / s[1], c), 0.0
        # a degenerate coordinate is the constant mean_i: an indicator (½ at a tie) times the other
        p = 1.0
        for i in range(2):
            p *= float(_phi_over(mean[i], s[i]))
        return p, 0.0
    return _orthant_qmc(mean, cov, seed)


def _pivoted_cholesky(cov: np.ndarray, tiny: float) -> tuple[np.ndarray, np.ndarray]:
    """L and the permutation π with cov[π][:, π] ≈ L Lᵀ; a pivot ≤ ``tiny`` gives a zero column."""
    a = np.array(cov, dtype=float)
    n = a.shape[0]
    perm = np.arange(n)
    L = np.zeros((n, n))
    for j in range(n):
        d = np.diag(a)[j:] - np.sum(L[j:, :j] ** 2, axis=1)
        # choose the smallest remaining conditional variance first (Genz & Bretz's ordering)
        # among the non-degenerate ones; degenerate ones are deterministic, order irrelevant
        i = j + int(np.argmin(np.where(d > tiny, d, np.inf))) if np.any(d > tiny) else j
        if i != j:
            a[[i, j]] = a[[j, i]]
            a[:, [i, j]] = a[:, [j, i]]
            L[[i, j]] = L[[j, i]]
            perm[[i, j]] = perm[[j, i]]
        piv = a[j, j] - L[j, :j] @ L[j, :j]
        if piv <= tiny:
            continue  # column j stays 0: d_j is determined by the previous variables
        L[j, j] = math.sqrt(piv)
        L[j + 1 :, j] = (a[j + 1 :, j] - L[j + 1 :, :j] @ L[j, :j]) / L[j, j]
    return L, perm


def _orthant_qmc(mean: np.ndarray, cov: np.ndarray, seed: int) -> tuple[float, float]:
    r"""Genz's separation of variables for P(d > 0), d = mean + L u, u ~ N(0, I):
    P = E_w Π_j e_j(w), e_j = Φ((mean_j + Σ_{i<j} L_ji u_i)/L_jj), u_i = Φ⁻¹(w_i e_i + 1 − e_i);
    a degenerate row (L_jj = 0) contributes the indicator of mean_j + Σ L_ji u_i > 0."""
    from scipy.special import ndtri
    from scipy.stats import qmc

    n = mean.size
    scale = max(float(np.max(np.abs(np.diag(cov)))), 1e-300)
    L, perm = _pivoted_cholesky(cov, 1e-14 * scale)
    mu = mean[perm]
    estimates = []
    for r in range(ERROR_QMC_REPEATS):
        w = qmc.Sobol(n, scramble=True, seed=np.random.default_rng([seed, r])).random(
            ERROR_QMC_POINTS
        )
        u = np.zeros((ERROR_QMC_POINTS, n))
        prob = np.ones(ERROR_QMC_POINTS)
        for j in range(n):
            x = mu[j] + u[:, :j] @ L[j, :j]
            if L[j, j] > 0.0:
                e = ndtr(x / L[j, j])
                prob *= e
                # u_j | u_j > −x/L_jj: the inverse CDF of the truncated normal at w_j
                t = np.clip(1.0 - e + w[:, j] * e, 1e-300, 1.0 - 1e-16)
                u[:, j] = ndtri(t)
            else:
                prob *= np.where(x > 0.0, 1.0, np.where(x == 0.0, 0.5, 0.0))
        estimates.append(float(prob.mean()))
    est = np.array(estimates)
    return float(est.mean()), float(est.var(ddof=1) / est.size)


@dataclass(frozen=True)
class SoftmaxTeacher(_Validated):
    r"""Softmax (multinomial logistic) teacher: min Σ_μ CE(y_μ, softmax(h̃_μ)) + (λ̃/2)‖W̃‖²_F.

    Parameters
    ----------
    lam : float
        Ridge penalty λ̃ ≥ 0 (``lam_t`` on the command line); the biases are not penalised.
    """

    lam: float

    _ranges: ClassVar = {"lam": (0.0, _INF, False, True)}


@dataclass(frozen=True)
class OracleTeacher(_Validated):
    r"""The oracle teacher: soft labels = the true posterior p(c|x) given the centroids, a linear
    softmax with W̃ = V/Δ, b̃_c = log ρ_c − G_cc/2Δ (:meth:`MulticlassMixture.oracle`).  Its error
    is the *oracle error*, not the Bayes error (it knows the centroids; it does not learn)."""

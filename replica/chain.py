r"""Multi-stage self-distillation: the replica theory of a chain of students (docs/theory.md).

Stage 1 is the teacher trained on the (possibly flipped) labels ŷ; stage t ≥ 2 minimises
Σ_μ ℓ_t(ŷ_μ, h_{t−1,μ}, h_{t,μ}) + (λ_t/2)‖w_t‖², its own KD loss with stage t − 1's preactivation on
the same training inputs as the teacher output (χ_t = 0: the labels only).

Cavity picture.  The cavity fields ω = (ω_1, …, ω_K) of a training point are Gaussian given the
cluster label y, with means y m_t + b_t and covariance Δ Q, Q_{st} = w_s·w_t/N.  Putting the point
back moves every stage, and each stage's move feeds the later ones through their teachers:

    h_t = prox_{ΔR_tt, ℓ_t(ŷ, h_{t−1}, ·)}(ω_t + Δ Σ_{s<t} R_ts f_s),   f_t = −∂_h ℓ_t(ŷ, h_{t−1}, h_t).

The weights solve λ_t w_t = Σ_μ x_μ f_tμ/√N; Stein's lemma on x = y v/√N + √Δ z gives
L w = m̂ v + g with the lower-triangular L = diag(λ) − αΔ E[J], J_ts = ∂f_t/∂ω_s (total derivative,
through every earlier stage), m̂_t = α E[y f_t] and Gaussian g with E[g_s·g_t]/N = q̂_st = αΔ E[f_s f_t].
Hence, with R = L⁻¹ (the response, whose entries are the susceptibilities above),

    m = R m̂,   Q = R (m̂ m̂ᵀ + Q̂) Rᵀ,   E[f_t] = 0 (unpenalised bias).

Two stages give the teacher–student equations of ``replica.solve`` (V = R_22, V_c = R_21).  Stages are
solved in order; stage t needs a t-dimensional Gaussian expectation.  Up to ``EXACT_STAGES`` stages it
is a nested product rule: along each earlier stage's direction a composite Gauss–Legendre rule whose
breakpoints follow that stage's output across the kinks of the soft label sig(h/T) read from it
(so small T, nearly hard labels, is resolved), along the new stage's own direction Gauss–Hermite.
Beyond, randomised quasi-Monte Carlo (scrambled Sobol points): independent scramblings give the
error bar ``eg_se``, the one place where the package estimates an integral by sampling.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from scipy import optimize
from scipy.special import expit, ndtri
from scipy.stats import qmc

from kdtheory.losses import _prox_grad_curv_p, sigmoid
from kdtheory.problem import (
    BayesTeacher,
    GaussianMixture,
    LogisticTeacher,
    Problem,
    Student,
    check_instance,
    check_integer,
    check_real,
    refuse_covariance,
)
from replica.fixed_point import bias_step
from replica.quadrature import (
    FINE_WIDTH,
    L,
    Quadrature,
    composite_rule,
    feature_breaks,
    gauss_hermite,
    gauss_legendre,
    prune,
)
from replica.teacher import bayes_constant

__all__ = [
    "EXACT_STAGES",
    "ChainOptimum",
    "ChainSolution",
    "StageState",
    "optimise_chain",
    "solve_chain",
]

#: chains up to this many stages (teacher included) are integrated by tensor Gauss–Hermite
EXACT_STAGES = 3
#: nodes of the nested rules whose weight (the rule sums to 1) is below this are dropped, and the
#: rest renormalised: at most ~1e-9 of the mass over the ≤ 10⁶ nodes of stage 3
PRUNE = 1e-15
#: grid points along ξ_j, and the most prefix rows, of the search for later stages' kinks; crossings
#: closer than _LATER_MERGE (in ξ) count once; the kinks' feature points h/T
_LATER_GRID, _LATER_ROWS, _LATER_MERGE = 2001, 64, 0.005
_LF = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
LATER_FEATURES = np.concatenate([-_LF[:0:-1], _LF])
#: rules with more nodes than this are released at once after their stage (``gc.collect``)
_COLLECT = 1_000_000
#: relative change below which stage t's damped iteration hands over to the root solver
SWITCH = 1e-3
#: Gauss–Hermite nodes of stage t's own direction (t = 1, 2, 3)
NODES = (96, 48, 24)
#: most stages of a chain (teacher included): each stage past ``EXACT_STAGES`` is a QMC solve in one
#: more dimension (4 stages take ~10 s, 10 took 201 s and 0.5 GB)
MAX_STAGES = 6
#: most memory of a QMC rule: 4 label pairs × 2^qmc_points nodes, ~64 bytes per node and stage²
#: (measured: 0.3 GB more from 2^15 to 2^17 points at 4 stages)
MAX_QMC_BYTES = 2 * 1024**3
#: most QMC samples per stage, qmc_repeats × 2^qmc_points (2^20: a few minutes per QMC stage)
MAX_QMC_SAMPLES = 2**20
#: most Gauss–Hermite nodes per direction (numpy's rule overflows to NaN weights from 371 on)
MAX_NODES = 300
#: smallest student temperature of a chain: below it the soft label sig(h/T) is a step narrower
#: than the rules resolve (at T = 1e-3 stage 2 still agrees with ``replica.solve`` to ~1e-6)
MIN_TEMPERATURE = 1e-3
#: Gauss–Legendre points per panel of the composite rules of the earlier stages' directions, in
#: the rules of stages 2 and 3 (stage 2 to ~1e-9; stage 3, at (order)² the cost, to ~1e-6 in q)
ORDERS = (6, 4)
_F = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 36.0])
#: feature points h_k/s of a kink of width s (a leaner set than the one-stage solver's: with the
#: defaults, stage 2 agrees with ``replica.solve`` to ~1e-8 down to T = 0.02, and stage 3 moves by
#: ≤ 1e-7 when the orders and node counts are raised)
FEATURES = np.concatenate([-_F[:0:-1], _F])
#: the same with the midpoints, for a kink narrower than ``FINE_WIDTH`` (the distillation term at
#: T < 0.1: without them stage 2 erred by up to 5e-6 at T = 0.047, λ = 2e-3; issue 24)
_FF = np.unique(np.concatenate([_F, 0.5 * (_F[1:] + _F[:-1]), [0.125]]))
FINE_FEATURES = np.concatenate([-_FF[:0:-1], _FF])


def _kink_points(width: float) -> np.ndarray:
    """Feature points h_k of a kink of width s: s·``FEATURES``, or s·``FINE_FEATURES`` below
    ``FINE_WIDTH``."""
    return width * (FINE_FEATURES if width < FINE_WIDTH else FEATURES)


@dataclass(frozen=True)
class StageState:
    """One stage of a chain: m = w·v/N, q = ‖w‖²/N, b, r = w_t·w_{t−1}/N (NaN for stage 1), V = R_tt,
    the clean-label test error ``eg`` = ρΦ(−(m + b)/√(Δq)) + (1 − ρ)Φ(−(m − b)/√(Δq)) and its
    quasi-Monte-Carlo standard error ``eg_se`` (0 for the exact rule), ``converged``, ``residual``."""

    m: float
    q: float
    b: float
    r: float
    V: float
    eg: float
    eg_se: float
    converged: bool
    residual: float


@dataclass(frozen=True)
class ChainSolution:
    """Every stage of a chain (``stages[0]`` is the teacher, "stage 1") and the matrices Q (overlaps
    w_s·w_t/N), R (responses; R_ts is stage t's susceptibility to stage s's output), m̂ and Q̂.
    ``status`` is "converged" or names the first failing stage in ``message``."""

    data: GaussianMixture
    teacher: LogisticTeacher | BayesTeacher
    students: tuple[Student, ...]
    stages: tuple[StageState, ...]
    converged: bool
    status: str
    message: str = ""
    Q: np.ndarray = field(default=None, repr=False, compare=False)
    R: np.ndarray = field(default=None, repr=False, compare=False)
    m_hat: np.ndarray = field(default=None, repr=False, compare=False)
    Q_hat: np.ndarray = field(default=None, repr=False, compare=False)
    #: the rule settings (nodes, orders) the stages were integrated with
    rule: tuple = field(default=(), repr=False, compare=False)

    @property
    def eg(self) -> np.ndarray:
        """Test error of every stage, stage 1 first."""
        return np.array([s.eg for s in self.stages])


@dataclass(frozen=True)
class _Loss:
    """Stage loss: 'bayes' (linear, f = cŷ, λ = 1), or ℓ_KD with (χ, T, T_s); the teacher is χ = 0."""

    kind: str
    lam: float
    chi: float = 0.0
    temperature: float = 1.0
    ts: float = 1.0
    c: float = 0.0


@njit(cache=True)
def _stage_nodes(
    y, yhat, xi, c, m, b, shift, f_prev, df_prev, p_soft, dh_prev, var, chi, temperature, ts,
    bayes, bayes_c, delta, h, f, dh, df,
):  # fmt: skip
    """Stage t = len(shift) at every node: ω' = y m + b + Σ_u c_u ξ_u + Σ_{s<t} shift_s f_s,
    h = prox_{var, ℓ_KD(ŷ, p̃, ·)}(ω') with p̃ = sig(h_{t−1}/T) = ``p_soft`` (``_soft_labels``;
    warm start ``h``, NaN: none),
    f = −∂_hℓ_KD(h), and the total derivatives in ω_u, u ≤ t:
    dω' = e_t + Σ_s shift_s df_s,  dh = (dω' − var κ dh_{t−1})/(1 + var ℓ″),
    df = −ℓ″ dh − κ dh_{t−1},  κ = −χ p̃(1 − p̃)/(T T_s).  ``bayes``: h = ω' + Δcŷ, f = cŷ."""
    t = shift.shape[0]
    n = y.shape[0]
    dom = np.empty(t + 1)
    for k in range(n):
        om = y[k] * m + b
        for u in range(t + 1):
            om += c[u] * xi[k, u]
            dom[u] = 0.0
        dom[t] = 1.0
        for s in range(t):
            om += shift[s] * f_prev[s, k]
            for u in range(s + 1):
                dom[u] += shift[s] * df_prev[s, k, u]
        if bayes:
            f[k] = bayes_c * yhat[k]
            h[k] = om + delta * f[k]
            for u in range(t + 1):
                dh[k, u] = dom[u]
                df[k, u] = 0.0
            continue
        pt, kappa = 0.5, 0.0
        if t > 0:
            pt = p_soft[k]
            kappa = -chi * pt * (1.0 - pt) / (temperature * ts)
        h0 = h[k] if h[k] == h[k] else om
        hk, d1, d2 = _prox_grad_curv_p(yhat[k], pt, om, var, chi, ts, h0)
        h[k] = hk
        f[k] = -d1
        den = 1.0 + var * d2
        for u in range(t + 1):
            dprev = dh_prev[k, u] if u < t else 0.0
            dhu = (dom[u] - var * kappa * dprev) / den
            dh[k, u] = dhu
            df[k, u] = -d2 * dhu - kappa * dprev


#: terms per partial sum of ``_moments`` (blocked summation: rounding error ~ like numpy's pairwise)
_BLOCK = 512


@njit(cache=True)
def _moments(w, y, f, f_prev, df):
    """One pass over the nodes for stage t = len(f_prev) (w sums to 1): E[y f_t], E[f_t f_u]
    (u < t, then u = t), E[∂f_t/∂ω_u] (u ≤ t) and E[f_t], in that order; summed in blocks of
    ``_BLOCK`` terms."""
    t, n = f_prev.shape[0], w.shape[0]
    k = 2 * t + 4
    total = np.zeros(k)
    part = np.zeros(k)
    for start in range(0, n, _BLOCK):
        part[:] = 0.0
        for i in range(start, min(start + _BLOCK, n)):
            wf = w[i] * f[i]
            part[0] += wf * y[i]
            for u in range(t):
                part[1 + u] += wf * f_prev[u, i]
            part[1 + t] += wf * f[i]
            for u in range(t + 1):
                part[2 + t + u] += w[i] * df[i, u]
            part[k - 1] += wf
        total += part
    return total


@njit(cache=True)
def _soft_labels(h, temperature):
    """p̃ = sig(h/T) at every node."""
    out = np.empty(h.shape[0])
    for k in range(h.shape[0]):
        out[k] = sigmoid(h[k] / temperature)
    return out


class _Nodes:
    """Nodes (y, ŷ, ξ) with weights P(y) P(ŷ|y) w_ξ, and the stages' (h, f, ∂h/∂ω, ∂f/∂ω) there."""

    def __init__(self, y: np.ndarray, yhat: np.ndarray, w: np.ndarray, xi: np.ndarray):
        self.y, self.yhat, self.w, self.xi = y, yhat, w, xi
        self.h, self.f, self.dh, self.df = [], [], [], []
        self._earlier = None

    def earlier(self, t: int, temperature: float) -> tuple:
        """Stages 0..t−1 stacked for ``_stage_nodes``: f (t, P), ∂f/∂ω (t, P, t) zero-padded,
        p̃ = sig(h_{t−1}/T) (P,) and ∂h_{t−1}/∂ω (P, t) (cached: the earlier stages are fixed)."""
        key = (t, temperature)
        if self._earlier is None or self._earlier[0] != key or len(self.f) < t:
            n = self.w.shape[0]
            f = np.zeros((t, n))
            df = np.zeros((t, n, t))
            for s in range(t):
                f[s] = self.f[s]
                df[s, :, : s + 1] = self.df[s]
            h = self.h[t - 1] if t > 0 else np.zeros(n)
            dh = self.dh[t - 1] if t > 0 else np.zeros((n, 0))
            p_soft = _soft_labels(np.ascontiguousarray(h), temperature)
            self._earlier = (key, (f, df, p_soft, np.ascontiguousarray(dh)))
        return self._earlier[1]

    @classmethod
    def product(cls, data: GaussianMixture, xi: np.ndarray, wxi: np.ndarray) -> _Nodes:
        """The label pairs (y, ŷ) times one rule (ξ_i, w_i) for all of them."""
        pairs = _pairs(data)
        n = xi.shape[0]
        return cls(
            np.repeat([y for y, _, _ in pairs], n),
            np.repeat([s for _, s, _ in pairs], n),
            np.concatenate([p * wxi for _, _, p in pairs]),
            np.tile(xi, (len(pairs), 1)),
        )


def _pairs(data: GaussianMixture) -> list[tuple[float, float, float]]:
    """(y, ŷ, P(y) P(ŷ | y)) for the cluster label y and the training label ŷ (flipped w.p. θ)."""
    return [
        (y, s * y, py * ps)
        for y, py in ((1.0, data.rho), (-1.0, 1.0 - data.rho))
        for s, ps in ((1.0, 1.0 - data.flip), (-1.0, data.flip))
        if ps > 0.0
    ]


@njit(cache=True)
def _expand(yhat, pt, centre, spread, var, chi, ts, hk, gap, base, glx, glw, width, more, n_more):
    """Per prefix node i, the composite Gauss–Legendre rule in the next ξ with breakpoints where
    the stage's output crosses the feature points ``hk`` (``feature_breaks``) and at
    ``more[i, :n_more[i]]``: ``width`` columns of nodes and weights per row (zero weight where a
    row has fewer)."""
    n = yhat.shape[0]
    xs = np.zeros((n, width))
    ws = np.zeros((n, width))
    ext = np.empty(hk.shape[0] + more.shape[1])
    for i in range(n):
        k = feature_breaks(hk, yhat[i], pt[i], var, chi, ts, centre[i], spread, gap, ext)
        for j in range(n_more[i]):
            ext[k + j] = more[i, j]
        composite_rule(base, ext, k + n_more[i], glx, glw, xs[i], ws[i])
    return xs, ws


def _later_features(chain: _Chain, nd: _Nodes, j: int, t: int, quad: Quadrature, own=None):
    """Breakpoints along ξ_j where a later earlier stage s (j < s < t) crosses the kinks of the soft
    label read from it, sig(h_s/T_{s+1}), seen with the directions between held at ξ ∈ {0, ±1.5}:
    when stage s follows its predecessors closely (a small conditional spread C_ss), its kink is a
    feature along ξ_j that the rule along ξ_s cannot resolve.  Given stage t's state ``own``, also
    where stage t crosses its own loss's kinks (width w: 1 for labels, T_s), blurred by its own
    spread to max(w, C_tt).  Found on a grid of ``_LATER_GRID`` points per row (sign changes,
    linear interpolation), pruned like ``feature_breaks``."""
    rows = nd.w.shape[0]
    last = t if own is not None else t - 1  # the last stage whose kinks are searched
    if last - j < 1 or rows > _LATER_ROWS:
        return np.zeros((rows, 0)), np.zeros(rows, dtype=np.int64)
    grid = np.linspace(-L, L, _LATER_GRID)
    inner = (
        np.array(np.meshgrid(*([[-1.5, 0.0, 1.5]] * (last - j)), indexing="ij"))
        .reshape(last - j, -1)
        .T
    )  # (combinations, last − j)
    g, c = grid.shape[0], inner.shape[0]
    xi = np.concatenate(
        [
            np.repeat(nd.xi, g * c, axis=0),
            np.tile(np.repeat(grid, c), rows)[:, None],
            np.tile(inner, (rows * g, 1)),
        ],
        axis=1,
    )
    probe = _Nodes(np.repeat(nd.y, g * c), np.repeat(nd.yhat, g * c), np.ones(rows * g * c), xi)
    chain.replay(probe, t)
    kinks = []  # (stage, its feature points h_k)
    for s in range(j + 1, t):
        reader = chain.losses[s + 1]
        if reader.chi != 0.0:
            kinks.append((probe.h[s], reader.temperature * LATER_FEATURES))
    if own is not None:
        h_own = chain.forward(probe, t, own[0], own[1], own[2 : t + 3], own[t + 3 :])[0]
        loss = chain.losses[t]
        widths = ([1.0] if loss.chi < 1.0 else []) + ([loss.ts] if loss.chi > 0.0 else [])
        for w in widths:
            kinks.append((h_own, max(w, chain.C[t, t]) * LATER_FEATURES))
    found = [[] for _ in range(rows)]
    for h_s, hk in kinks:
        h = h_s.reshape(rows, g, c)
        for k in hk:
            diff = h - k
            cross = np.nonzero(np.sign(diff[:, 1:, :]) != np.sign(diff[:, :-1, :]))
            r, a, b = cross
            x0, x1 = grid[a], grid[a + 1]
            d0, d1 = diff[r, a, b], diff[r, a + 1, b]
            x = x0 + (x1 - x0) * d0 / (d0 - d1)
            for ri, xv in zip(r, x, strict=True):
                found[ri].append(xv)
    width = max((len(f) for f in found), default=0)
    more = np.zeros((rows, width))
    n_more = np.zeros(rows, dtype=np.int64)
    out = np.empty(width)
    for i, f in enumerate(found):
        if f:
            x = np.sort(np.array(f))
            x = x[np.concatenate([[True], np.diff(x) > _LATER_MERGE])]  # near-duplicates: one
            n_more[i] = prune(x, quad.feature_gap, out)
            more[i, : n_more[i]] = out[: n_more[i]]
    return more[:, : max(int(n_more.max(initial=0)), 0)], n_more


def _sobol_rule(dim: int, log2_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scrambled Sobol points mapped to N(0, I_dim) by Φ⁻¹, equal weights."""
    u = qmc.Sobol(d=dim, scramble=True, seed=seed).random_base2(log2_points)
    return ndtri(u), np.full(u.shape[0], 1.0 / u.shape[0])


class _Chain:
    """The state of the stages solved so far: m, b, Q, R, m̂, Q̂, Cholesky factor C of ΔQ."""

    def __init__(self, data: GaussianMixture, losses: list[_Loss]):
        k = len(losses)
        self.data, self.losses = data, losses
        self.m, self.b = np.zeros(k), np.zeros(k)
        self.Q, self.R, self.C = np.zeros((k, k)), np.zeros((k, k)), np.zeros((k, k))
        self.m_hat, self.Q_hat = np.zeros(k), np.zeros((k, k))

    def cholesky_row(self, t: int, q_row: np.ndarray) -> np.ndarray:
        """Row t of the Cholesky factor of ΔQ given Q_{t,0..t} (rows < t fixed); a non-positive
        pivot (Q not positive definite along the way) is clipped to 0."""
        d = self.data.delta
        c = np.zeros(t + 1)
        for u in range(t):
            cuu = self.C[u, u]
            c[u] = (d * q_row[u] - c[:u] @ self.C[u, :u]) / cuu if cuu > 0.0 else 0.0
        c[t] = math.sqrt(max(d * q_row[t] - c[:t] @ c[:t], 0.0))
        return c

    def forward(self, nodes: _Nodes, t: int, m, b, q_row, r_row, h_warm=None):
        """Stage t at the nodes given its (m, b, Q_{t,·}, R_{t,·}) and the earlier stages' values
        there: (h, f, ∂h/∂ω_u, ∂f/∂ω_u for u ≤ t), by ``_stage_nodes``."""
        loss, d = self.losses[t], self.data.delta
        c = self.cholesky_row(t, q_row)
        f_prev, df_prev, p_soft, dh_prev = nodes.earlier(t, loss.temperature)
        n = nodes.w.shape[0]
        h = np.full(n, np.nan) if h_warm is None else h_warm
        f, dh, df = np.empty(n), np.empty((n, t + 1)), np.empty((n, t + 1))
        _stage_nodes(
            nodes.y, nodes.yhat, nodes.xi, c, m, b, d * np.asarray(r_row[:t], dtype=float),
            f_prev, df_prev, p_soft, dh_prev, d * r_row[t], loss.chi, loss.temperature, loss.ts,
            loss.kind == "bayes", loss.c, d, h, f, dh, df,
        )  # fmt: skip
        return h, f, dh, df

    def update(self, nodes: _Nodes, t: int, x: np.ndarray, h_warm=None):
        """One step of stage t's fixed point x = (m, b, Q_{t,0..t}, R_{t,0..t}) → new x."""
        alpha, d, loss = self.data.alpha, self.data.delta, self.losses[t]
        m, b, q_row, r_row = x[0], x[1], x[2 : t + 3], x[t + 3 :]
        h, f, dh, df = self.forward(nodes, t, m, b, q_row, r_row, h_warm)
        f_prev = nodes.earlier(t, loss.temperature)[0]
        mom = _moments(nodes.w, nodes.y, f, f_prev, df)
        m_hat = alpha * mom[0]
        q_hat = alpha * d * mom[1 : t + 2]
        jac = mom[t + 2 : 2 * t + 3]  # E[∂f_t/∂ω_u], u ≤ t
        lrow = -alpha * d * jac
        lrow[t] += loss.lam
        r_new = np.zeros(t + 1)
        r_new[t] = 1.0 / lrow[t]
        for u in range(t):
            r_new[u] = -(lrow[u:t] @ self.R[u:t, u]) / lrow[t]
        mh = np.append(self.m_hat[:t], m_hat)
        qh = np.zeros((t + 1, t + 1))
        qh[:t, :t] = self.Q_hat[:t, :t]
        qh[t, :], qh[:, t] = q_hat, q_hat
        rr = np.zeros((t + 1, t + 1))
        rr[:t, :t] = self.R[:t, :t]
        rr[t] = r_new
        s = mh[:, None] * mh[None, :] + qh
        q_new = rr @ s @ r_new
        if loss.kind == "bayes":
            b_new = math.log(self.data.rho / (1.0 - self.data.rho))
        else:  # Newton on E[f_t] = 0, capped where the loss is flat (E[∂f_t/∂ω_t] ≈ 0)
            b_new = b + bias_step(mom[-1], -jac[t], d * q_row[t])
        x_new = np.concatenate([[r_new @ mh, b_new], q_new, r_new])
        return x_new, (h, f, dh, df, m_hat, q_hat)

    def accept(self, nodes: _Nodes, t: int, x: np.ndarray, extra) -> None:
        """Store stage t's solution x and its node values for the later stages."""
        h, f, dh, df, m_hat, q_hat = extra
        self.m[t], self.b[t] = x[0], x[1]
        self.Q[t, : t + 1] = self.Q[: t + 1, t] = x[2 : t + 3]
        self.R[t, : t + 1] = x[t + 3 :]
        self.C[t, : t + 1] = self.cholesky_row(t, x[2 : t + 3])
        self.m_hat[t] = m_hat
        self.Q_hat[t, : t + 1] = self.Q_hat[: t + 1, t] = q_hat
        nodes.h.append(h)
        nodes.f.append(f)
        nodes.dh.append(dh)
        nodes.df.append(df)

    def restore(self, sol: ChainSolution, t: int) -> None:
        """Copy stage t of a solution (its earlier stages already restored)."""
        self.m[t], self.b[t] = sol.stages[t].m, sol.stages[t].b
        self.Q[t, : t + 1] = self.Q[: t + 1, t] = sol.Q[t, : t + 1]
        self.R[t, : t + 1] = sol.R[t, : t + 1]
        self.C[t, : t + 1] = self.cholesky_row(t, sol.Q[t, : t + 1])
        self.m_hat[t] = sol.m_hat[t]
        self.Q_hat[t, : t + 1] = self.Q_hat[: t + 1, t] = sol.Q_hat[t, : t + 1]

    def guess(self, sol: ChainSolution, t: int) -> np.ndarray:
        """Stage t's values in a related solution, as a starting point."""
        st = sol.stages[t]
        return np.concatenate([[st.m, st.b], sol.Q[t, : t + 1], sol.R[t, : t + 1]])

    def replay(self, nodes: _Nodes, t: int) -> None:
        """Evaluate the solved stages 0..t−1 at new nodes."""
        for s in range(t):
            x = np.concatenate([[self.m[s], self.b[s]], self.Q[s, : s + 1], self.R[s, : s + 1]])
            h, f, dh, df = self.forward(nodes, s, x[0], x[1], x[2 : s + 3], x[s + 3 :])
            nodes.h.append(h)
            nodes.f.append(f)
            nodes.dh.append(dh)
            nodes.df.append(df)


def _nested_rule(
    chain: _Chain, t: int, n_own: int, order: int, own=None, own_order: int | None = None
) -> _Nodes:
    """Stage t's rule, with the solved stages 0..t−1 evaluated at its nodes.

    Axis j < t (stage j's own Gaussian direction, given the earlier ones) gets, per prefix node, the
    composite Gauss–Legendre rule of ``replica.quadrature`` with breakpoints where stage j's output
    h_j crosses its feature points: the soft-label scale T_{j+1} of the stage reading it, its own
    loss's scales (1 for labels, T_s for distillation); so a small temperature (a nearly hard
    label sig(h_j/T)) is resolved.  Axis t, the new stage's own direction: Gauss–Hermite, n_own;
    or, given stage t's state ``own`` = (m, b, Q_{t,·}, R_{t,·}), the composite rule with the
    breakpoints of its own loss's kinks where its fields are at that state (``_own_features``), with
    ``own_order`` points per panel (default ``order``).
    """
    quad = Quadrature(order=order)
    base = quad.base()
    nd = _Nodes.product(chain.data, np.zeros((1, 0)), np.ones(1))
    d = chain.data.delta
    if own is not None:  # stage t's row of the state, read by the loop below as for j < t
        chain.m[t], chain.b[t] = own[0], own[1]
        chain.R[t, : t + 1] = own[t + 3 :]
        chain.C[t, : t + 1] = chain.cholesky_row(t, own[2 : t + 3])
    for j in range(t if own is None else t + 1):
        nd.h, nd.f, nd.dh, nd.df, nd._earlier = [], [], [], [], None
        chain.replay(nd, j)
        loss, spread = chain.losses[j], chain.C[j, j]
        centre = nd.y * chain.m[j] + chain.b[j] + nd.xi[:, :j] @ chain.C[j, :j]
        for s in range(j):
            centre = centre + d * chain.R[j, s] * nd.f[s]
        if j == 0:
            pt = np.full(centre.shape[0], 0.5)
        else:
            pt = expit(nd.h[j - 1] / loss.temperature)
        scales = _own_features(chain, j, quad)
        if j < t:  # the kinks of the soft label that stage j + 1 reads from h_j
            nxt = chain.losses[j + 1]
            if nxt.chi < 1.0 and 1.0 < quad.feature_ratio * spread:
                scales.add(1.0)
            if nxt.chi > 0.0 and nxt.temperature < quad.feature_ratio * spread:
                scales.add(nxt.temperature)
        hk = np.unique(np.concatenate([_kink_points(s_) for s_ in sorted(scales)] + [[]]))
        var = d * chain.R[j, j]
        if loss.kind == "bayes":  # h_j = ω_j + Δcŷ: the features' ξ are (h_k − Δcŷ − centre)/spread
            centre, var = centre + d * loss.c * nd.yhat, 0.0
        more, n_more = _later_features(chain, nd, j, t, quad, own)
        o = own_order if j == t and own_order else order
        gx, gw = gauss_legendre(o)
        width = (len(base) + len(hk) + more.shape[1]) * o
        xs, ws = _expand(
            nd.yhat, pt, centre, spread, var, loss.chi, loss.ts, hk,
            quad.feature_gap, base, gx, gw, width, more, n_more,
        )  # fmt: skip
        keep = nd.w[:, None] * ws > PRUNE  # (the padding has weight 0)
        rows = np.nonzero(keep)[0]
        nd = _Nodes(
            nd.y[rows], nd.yhat[rows], nd.w[rows] * ws[keep],
            np.column_stack([nd.xi[rows], xs[keep]]),
        )  # fmt: skip
    nd.h, nd.f, nd.dh, nd.df, nd._earlier = [], [], [], [], None
    chain.replay(nd, t)  # the solved stages depend on ξ_0..ξ_{t−1} only: once per prefix row
    if own is None:
        x1, w1 = gauss_hermite(n_own)
        w = nd.w[:, None] * w1
        keep = w > PRUNE
        count = keep.sum(axis=1)  # each prefix row's own nodes, in order (np.repeat: no gather)
        prefix = nd
        xi = np.empty((int(count.sum()), t + 1))
        xi[:, :t] = np.repeat(prefix.xi, count, axis=0)
        xi[:, t] = np.broadcast_to(x1, w.shape)[keep]
        nd = _Nodes(
            np.repeat(prefix.y, count), np.repeat(prefix.yhat, count), w[keep], xi
        )  # fmt: skip
        for name in ("h", "f", "dh", "df"):
            setattr(nd, name, [np.repeat(a, count, axis=0) for a in getattr(prefix, name)])
        del prefix
    nd.w = nd.w / nd.w.sum()
    return nd


def _own_features(chain: _Chain, t: int, quad: Quadrature) -> set[float]:
    """Widths of the kinks of stage t's own loss narrower than ``quad.feature_ratio`` times the
    spread C_tt of its own direction: 1 (the label term, χ_t < 1) and T_s (the distillation term,
    χ_t > 0).  Empty: Gauss–Hermite along that direction resolves the loss."""
    loss, spread = chain.losses[t], chain.C[t, t]
    out = set()
    if loss.chi < 1.0 and 1.0 < quad.feature_ratio * spread:
        out.add(1.0)
    if loss.chi > 0.0 and loss.ts < quad.feature_ratio * spread:
        out.add(loss.ts)
    return out


def _initial(chain: _Chain, t: int) -> np.ndarray:
    """Stage t's starting point: stage t − 1's values (a copy of it), or a small classifier."""
    if t == 0:
        return np.array([0.5, 0.0, 1.0, 1.0])
    qr = np.append(chain.Q[t - 1, :t], chain.Q[t - 1, t - 1])
    rr = np.zeros(t + 1)
    rr[t] = chain.R[t - 1, t - 1]
    return np.concatenate([[chain.m[t - 1], chain.b[t - 1]], qr, rr])


def _solve_stage(
    chain: _Chain, nodes: _Nodes, t: int, tol: float, max_iter: int, x0=None, jac=None
):
    """Stage t's fixed point on ``nodes`` (``_iterate_stage``), checked by ``_not_fixed_point``;
    returns (x, extra, residual, converged, why): ``why`` says what failed ("" if converged)."""
    x, extra, res, ok = _iterate_stage(chain, nodes, t, tol, max_iter, x0, jac)
    if not ok:
        return x, extra, res, False, f"residual {res:.2g}"
    why = _not_fixed_point(chain, nodes, t, x, extra, tol)
    return x, extra, res, not why, why


def _not_fixed_point(chain: _Chain, nodes: _Nodes, t: int, x, extra, tol: float) -> str:
    """Why a state x whose step is below ``tol`` is no fixed point of stage t ("" if it is).

    The bias equation E[f_t] = 0 must hold: the uncapped Newton step E[f_t]/E[∂f_t/∂ω_t] within
    10·tol·max(1, |b|) (the map caps that step where the loss is flat, so a small change of x alone
    does not show it: at a runaway bias, |b| ≫ √(ΔQ_tt), every field saturates the loss, E[∂f/∂ω]
    rounds to 0 and the capped step is a tiny fraction of |b|).  Also: every value finite, Q_tt ≥ 0
    and R_tt > 0."""
    if not (np.all(np.isfinite(x)) and x[t + 2] >= 0.0 and x[-1] > 0.0):
        return f"not a finite state with q ≥ 0 and V > 0 (q = {x[t + 2]:.3g}, V = {x[-1]:.3g})"
    if chain.losses[t].kind == "bayes":
        return ""
    _, f, _, df, _, _ = extra
    mean_f, slope = float(nodes.w @ f), float(nodes.w @ df[:, t])
    b = x[1]
    if slope < 0.0 and abs(mean_f) <= 10.0 * tol * max(1.0, abs(b)) * -slope:
        return ""
    return (
        f"the bias equation E[f] = 0 fails (E[f] = {mean_f:.3g}, E[∂f/∂ω] = {slope:.3g} at "
        f"b = {b:.3g}, √(Δq) = {math.sqrt(chain.data.delta * max(x[t + 2], 0.0)):.3g}): a runaway "
        "bias where the loss is flat, not a fixed point"
    )


def _iterate_stage(
    chain: _Chain, nodes: _Nodes, t: int, tol: float, max_iter: int, x0=None, jac=None
):
    """Damped iteration of stage t's map from ``x0`` (default: ``_initial``) to a relative change
    of 1e-3, finished by a Newton-type root solve (MINPACK hybrd); returns (x, extra, residual,
    converged).  Given ``jac`` (the Jacobian of the relative step near ``x0``, from a coarser
    rule): no damped iteration, the root solve starts from it (MINPACK hybrj, Broyden updates)
    and a failure is returned as such (no damped finish)."""
    x = _initial(chain, t) if x0 is None else x0
    h_warm = None
    scale = lambda z: np.maximum(1.0, np.abs(z))  # noqa: E731  (relative change, absolute near 0)
    res = math.inf
    for _ in range(min(max_iter, 40) if jac is None else 0):
        x_new, extra = chain.update(nodes, t, x, h_warm)
        h_warm = extra[0]
        res = float(np.max(np.abs(x_new - x) / scale(x_new)))
        x = 0.5 * x + 0.5 * x_new if res > 1e-2 else x_new
        if not np.all(np.isfinite(x)):
            return x, extra, math.inf, False
        if res < tol:
            return x_new, extra, res, True
        if res < SWITCH:
            break
    warm = [h_warm]
    last = [None, None]  # the last point evaluated and its (x_new, extra)
    seen = {}  # every point evaluated: its relative step (MINPACK asks for x0 twice)

    def residual(z):
        key = z.tobytes()
        if key not in seen:
            z_new, ex = chain.update(nodes, t, z, None if warm[0] is None else warm[0].copy())
            warm[0] = ex[0]
            last[0], last[1] = z.copy(), (z_new, ex)
            seen[key] = (z_new - z) / scale(z)
        return seen[key].copy()

    options = {"xtol": tol * 1e-2, "maxfev": max_iter}
    if jac is None:
        sol = optimize.root(residual, x, method="hybr", options=options)
    else:
        sol = optimize.root(residual, x, jac=lambda z: jac, method="hybr", options=options)
    x = sol.x if np.all(np.isfinite(sol.x)) else x
    if last[0] is not None and np.array_equal(x, last[0]):  # (its pass is done: same values)
        x_new, extra = last[1]
    else:
        x_new, extra = chain.update(nodes, t, x, None if warm[0] is None else warm[0].copy())
    last[1] = None
    res = float(np.max(np.abs(x_new - x) / scale(x_new)))
    if jac is not None:
        return x_new, extra, res, bool(res < tol and np.all(np.isfinite(x_new)))
    damping = 1.0
    for _ in range(max_iter):  # the root solver stalled: finish by the (damped) iteration
        if res < tol or not np.all(np.isfinite(x_new)):
            break
        x = (1.0 - damping) * x + damping * x_new
        x_new, extra = chain.update(nodes, t, x, extra[0])
        new_res = float(np.max(np.abs(x_new - x) / scale(x_new)))
        damping = max(0.1, 0.5 * damping) if new_res > res else min(1.0, 1.5 * damping)
        res = new_res
    return x_new, extra, res, bool(res < tol and np.all(np.isfinite(x_new)))


#: most passes of the quasi-Newton iteration on the coarse composite rule (``_coarse_start``)
BROYDEN_PASSES = 20


def _broyden(chain: _Chain, nodes: _Nodes, t: int, tol: float, passes: int, x, jac):
    """Quasi-Newton on the relative step g(z) = (z_new − z)/max(1, |z|) from x with the initial
    Jacobian ``jac`` (Broyden's update), to a step |z_new − z|/max(1, |z_new|) below tol/10, one
    pass over ``nodes`` per iteration: (z_new, extra at z, residual, converged).  For a start
    only (on the full rule, MINPACK's hybrj, whose xtol converges tiny states, q ~ 1e-5, as
    tightly as before)."""
    scale = lambda z: np.maximum(1.0, np.abs(z))  # noqa: E731
    jac = jac.copy()
    z, h_warm = x.copy(), None
    z_new, extra = chain.update(nodes, t, z, h_warm)
    g = (z_new - z) / scale(z)
    res = math.inf
    for _ in range(passes):
        res = float(np.max(np.abs(z_new - z) / scale(z_new)))
        if not np.all(np.isfinite(z_new)):
            break
        if res < 0.1 * tol:
            return z_new, extra, res, True
        try:
            dz = -np.linalg.solve(jac, g)
        except np.linalg.LinAlgError:  # (a singular Jacobian: the caller's own iteration instead)
            break
        if not (np.all(np.isfinite(dz)) and dz @ dz > 0.0):
            break
        z = z + dz
        z_new, extra = chain.update(nodes, t, z, extra[0].copy())
        g_new = (z_new - z) / scale(z)
        jac += np.outer(g_new - g - jac @ dz, dz) / (dz @ dz)
        g = g_new
    return z_new, extra, res, False


def _losses(data, teacher, students) -> list[_Loss]:
    if isinstance(teacher, BayesTeacher):
        out = [_Loss("bayes", 1.0, c=bayes_constant(data))]
    else:
        out = [_Loss("kd", teacher.lam)]
    for s in students:
        out.append(_Loss("kd", s.lam, s.chi, s.temperature, s.student_temperature))
    return out


def _check(
    data, teacher, students, nodes, orders, qmc_points, qmc_repeats, tol, max_iter, exact_stages
) -> tuple:
    """solve_chain's arguments, each refused with its name and allowed range; returns (students,
    nodes, orders) as tuples with the defaults filled in."""
    check_instance("data", data, GaussianMixture)
    refuse_covariance(data, "a self-distillation chain")
    check_instance("teacher", teacher, (LogisticTeacher, BayesTeacher))
    if isinstance(students, Student) or not isinstance(students, Sequence):
        raise ValueError(f"students must be a sequence of Student, got {students!r}")
    students = tuple(students)
    for i, s in enumerate(students):
        check_instance(f"students[{i}]", s, Student)
        if s.eta != 1.0:
            raise ValueError(
                f"students[{i}].eta must be 1 in a chain (sparse stages are not derived), got {s.eta}"
            )
        if s.lam <= 0.0:
            raise ValueError(f"students[{i}].lam must be > 0 in a chain, got {s.lam}")
    if isinstance(teacher, BayesTeacher) and data.flip > 0.0:
        raise ValueError(
            f"GaussianMixture.flip must be 0 with a BayesTeacher, got {data.flip!r}: use a "
            "LogisticTeacher under label noise"
        )
    if isinstance(teacher, LogisticTeacher) and teacher.lam <= 0.0:
        raise ValueError(f"teacher.lam must be > 0 in a chain, got {teacher.lam}")
    for i, s in enumerate(students):
        check_real(f"students[{i}].temperature", s.temperature, MIN_TEMPERATURE, math.inf)
    if len(students) + 1 > MAX_STAGES:
        raise ValueError(
            f"students must have at most {MAX_STAGES - 1} entries (a chain of ≤ {MAX_STAGES} "
            f"stages), got {len(students)}"
        )
    if nodes is None:
        nodes = NODES
    if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence):
        raise ValueError(f"nodes must be a sequence of {EXACT_STAGES} ints, got {nodes!r}")
    nodes = tuple(check_integer(f"nodes[{i}]", n, 4, MAX_NODES) for i, n in enumerate(nodes))
    if len(nodes) != EXACT_STAGES:
        raise ValueError(
            f"nodes must give {EXACT_STAGES} counts (one per exact stage), got {nodes}"
        )
    check_integer("qmc_points", qmc_points, 6, 22)
    check_integer("qmc_repeats", qmc_repeats, 2, 64)
    check_integer("exact_stages", exact_stages, 1, EXACT_STAGES)
    k = len(students) + 1
    if k > exact_stages:
        need = 4 * 2**qmc_points * k * k * 64
        if need > MAX_QMC_BYTES:
            raise ValueError(
                f"qmc_points = {qmc_points} with {k} stages needs ~{need / 1024**3:.1f} GiB "
                f"(4·2^qmc_points·stages²·64 bytes), more than {MAX_QMC_BYTES / 1024**3:g} GiB: "
                "use fewer qmc_points"
            )
        if qmc_repeats * 2**qmc_points > MAX_QMC_SAMPLES:
            raise ValueError(
                f"qmc_repeats·2^qmc_points must be ≤ 2^{MAX_QMC_SAMPLES.bit_length() - 1} "
                f"(a few minutes per QMC stage), got {qmc_repeats}·2^{qmc_points}"
            )
    check_real("tol", tol, 0.0, 1.0, True, True)
    check_integer("max_iter", max_iter, 1)
    if orders is not None and (
        isinstance(orders, (str, bytes)) or not isinstance(orders, Sequence)
    ):
        raise ValueError(f"orders must be a sequence of {EXACT_STAGES - 1} ints, got {orders!r}")
    orders = ORDERS if orders is None else tuple(orders)
    if len(orders) != EXACT_STAGES - 1:
        raise ValueError(f"orders must give {EXACT_STAGES - 1} counts (stages 2, 3), got {orders}")
    for i, o in enumerate(orders):
        check_integer(f"orders[{i}]", o, 2, 32)
    return students, nodes, orders


def solve_chain(
    data: GaussianMixture,
    teacher: LogisticTeacher | BayesTeacher,
    students: Sequence[Student],
    *,
    nodes: Sequence[int] | None = None,
    qmc_points: int = 13,
    qmc_repeats: int = 8,
    tol: float = 1e-9,
    max_iter: int = 400,
    exact_stages: int = EXACT_STAGES,
    orders: Sequence[int] | None = None,
    init: ChainSolution | None = None,
) -> ChainSolution:
    r"""Solve a self-distillation chain: the teacher (stage 1), then ``students`` in order.

    Parameters
    ----------
    data : GaussianMixture
        α, ρ, Δ and the label noise θ = ``data.flip`` of the training labels.
    teacher : LogisticTeacher or BayesTeacher
        Stage 1, trained on the noisy labels (λ̃ > 0; the Bayes teacher needs θ = 0).
    students : sequence of Student
        Stages 2, 3, …: each trained with its own (λ_t > 0, χ_t, T_t, tempered) on the previous
        stage's preactivations; η = 1.
    nodes : three ints, optional
        Gauss–Hermite nodes of the own direction of stages 1, 2, 3, each in [4, ``MAX_NODES``]
        (default ``NODES``; stage 1's count is not used: stage 1 is ``replica.solve_teacher``'s).
    orders : two ints, optional
        Gauss–Legendre points per panel of the earlier stages' directions in the rules of stages
        2 and 3 (default ``ORDERS``; stage 2 is then polished on twice its order).
    init : ChainSolution, optional
        A solution of a related chain: its leading stages are reused where the data, teacher,
        students and rule are the same, and its later stages start the others' iterations.
    qmc_points, qmc_repeats : int
        Stages beyond ``EXACT_STAGES``: 2^qmc_points scrambled Sobol points, ``qmc_repeats``
        independent scramblings (mean and standard error over them).
    tol, max_iter
        Relative change of every order parameter at convergence; map evaluations per stage.
    exact_stages : int
        Stages integrated by the tensor rule, 1 ≤ … ≤ ``EXACT_STAGES`` (fewer: QMC from earlier on,
        to check the QMC estimate against the exact rule).

    Returns
    -------
    ChainSolution
        A stage is ``converged`` only at a true fixed point: a small step and its bias equation
        E[f_t] = 0 (``_not_fixed_point``); else ``message`` names the first failing stage and why.
        Refused up front (``ValueError``): more than ``MAX_STAGES`` stages, a student temperature
        below ``MIN_TEMPERATURE``, QMC rules over ``MAX_QMC_BYTES`` or ``MAX_QMC_SAMPLES``.
    """
    students, nodes, orders = _check(
        data, teacher, students, nodes, orders, qmc_points, qmc_repeats, tol, max_iter, exact_stages
    )
    if init is not None:
        check_instance("init", init, ChainSolution)
    losses = _losses(data, teacher, students)
    chain = _Chain(data, losses)
    stages: list[StageState] = []
    k = len(losses)
    exact = min(k, exact_stages)
    status, message, ok = "converged", "", True
    reuse = _reusable(init, data, teacher, students, (nodes, orders, tol), exact)
    for t in range(reuse):
        chain.restore(init, t)
        stages.append(init.stages[t])
    for t in range(reuse, exact):
        if t == 0:  # the teacher: its own solver (composite rules, continuation in λ̃)
            ok, res, why = _teacher_stage(chain, teacher, tol, max_iter)
        else:
            pair = Problem(data, teacher, students[0])
            ok, res, why = _exact_stage(
                chain, t, nodes[t], orders[t - 1], init, tol, max_iter, pair
            )
        stages.append(_state(chain, t, 0.0, ok, res))
        if not ok:
            status, message = "max_iter", f"stage {t + 1} did not converge: {why}"
            break
    if ok and k > exact:
        stages += _qmc_stages(chain, exact, k, qmc_points, qmc_repeats, tol, max_iter)
        bad = [i + 1 for i, s in enumerate(stages) if not s.converged]
        if bad:
            status, message = "max_iter", f"stage {bad[0]} did not converge in every QMC replica"
    return ChainSolution(
        data,
        teacher,
        students,
        tuple(stages),
        status == "converged",
        status,
        message,
        chain.Q.copy(),
        chain.R.copy(),
        chain.m_hat.copy(),
        chain.Q_hat.copy(),
        (nodes, orders, tol),
    )


def _teacher_stage(chain: _Chain, teacher, tol: float, max_iter: int) -> tuple[bool, float, str]:
    """Stage 1 from ``replica.solve_teacher`` (the same fixed point, on its composite rules):
    (converged, residual, why)."""
    from replica.solver import solve_teacher

    problem = Problem(chain.data, teacher, Student(1.0))
    sol = solve_teacher(problem, tol=min(0.1 * tol, 1e-10), max_iter=max(max_iter, 200))
    st = sol.teacher
    if sol.converged:
        chain.m[0], chain.b[0], chain.Q[0, 0], chain.R[0, 0] = st.m, st.b, st.q, st.V
        chain.C[0, 0] = math.sqrt(chain.data.delta * st.q)
        chain.m_hat[0], chain.Q_hat[0, 0] = st.m_hat, st.q_hat
    else:
        chain.m[0] = chain.b[0] = chain.Q[0, 0] = chain.R[0, 0] = math.nan
    return sol.converged, sol.residual, sol.message


def _exact_stage(chain: _Chain, t: int, n_own: int, order: int, init, tol, max_iter, pair: Problem):
    """Stage t ≥ 2 on the nested product rule with Gauss–Hermite along its own direction.  Stage 2
    is then polished on the rule of twice the order and, where its own loss has kinks narrower
    than its spread (``_own_features``), with the composite rule along its own direction, its
    breakpoints at the solution, rebuilt (at most thrice) until the state moves by < 1e-7.
    Stage 2, if it fails from its default start, starts again from ``replica.solve`` of ``pair``
    (teacher and first student).  Every stage first solves on coarse rules (``_coarse_start``) and
    then on its own rule from there, in a few passes; if that fails, from its default start as
    before.  Accepts the state into ``chain``; (converged, residual, why)."""
    x0 = chain.guess(init, t) if init is not None and len(init.stages) > t else None
    start = _coarse_start(chain, t, n_own, order, tol, max_iter, x0)
    nd = _nested_rule(chain, t, n_own, order)
    ok = False
    if start is not None:  # from the coarse rules' fixed point and Jacobian: a few full passes
        x, extra, res, ok, why = _solve_stage(chain, nd, t, tol, max_iter, *start)
    if not ok:  # (or it failed: the full rule's own iteration from the default start)
        x, extra, res, ok, why = _solve_stage(chain, nd, t, tol, max_iter, x0)
    if (
        not ok and t == 1
    ):  # the teacher–student problem of ``replica.solve``: start from its student
        x0 = _student_start(pair, tol, max_iter)
        if x0 is not None:
            x, extra, res, ok, why = _solve_stage(chain, nd, t, tol, max_iter, x0)
    fine = min(2 * order, 32)  # stage 2's polish: twice the order (stage 3: ~1e-6, ``ORDERS``)
    for _ in range(3 if t == 1 else 0):
        if not ok:
            break
        chain.C[t, : t + 1] = chain.cholesky_row(t, x[2 : t + 3])
        own = x if _own_features(chain, t, Quadrature(order=fine)) else None
        del nd, extra
        nd = _nested_rule(chain, t, n_own, fine, own=own, own_order=order)
        x_old = x
        x, extra, res, ok, why = _solve_stage(chain, nd, t, tol, max_iter, x_old)
        if own is None or np.max(np.abs(x - x_old) / np.maximum(1.0, np.abs(x))) < 1e-7:
            break
    chain.accept(nd, t, x, extra)
    if nd.w.shape[0] > _COLLECT:  # the root solve's closures form a cycle that holds it
        del nd, extra
        gc.collect()
    return ok, res, why


#: the rule that starts stages 2 and 3: tensor Gauss–Hermite, this many nodes per direction
START_NODES = 16
#: the composite rule between it and the full one: Gauss–Legendre points per panel of the
#: earlier stages' directions, Gauss–Hermite nodes of its own (stage 3 at T = 0.05: 6 % of the
#: full rule's nodes)
COARSE_START = (2, 4)


def _coarse_start(chain: _Chain, t: int, n_own: int, order: int, tol, max_iter, x0):
    """Stage t's start on the full rule: its fixed point on the tensor Gauss–Hermite rule of
    ``START_NODES`` per direction (from x0; it does not resolve small-T kinks, but it is near),
    then, from there by quasi-Newton (``_broyden``), on the composite rule ``COARSE_START``,
    each to max(tol, 1e-7), and the Jacobian there of the relative step by forward differences
    (``_step_jacobian``): (x, Jacobian), or None if a coarse stage does not converge.  The full
    rule's root solve (MINPACK hybrj) then needs ~5 passes over its nodes instead of ~30."""
    x1, w1 = gauss_hermite(START_NODES)
    grid = np.array(np.meshgrid(*([x1] * (t + 1)), indexing="ij")).reshape(t + 1, -1).T
    wg = np.prod(np.array(np.meshgrid(*([w1] * (t + 1)), indexing="ij")).reshape(t + 1, -1), 0)
    nd = _Nodes.product(chain.data, grid, wg)
    nd.w = nd.w / nd.w.sum()
    chain.replay(nd, t)
    x, extra, _, ok, _ = _solve_stage(chain, nd, t, max(tol, 1e-7), max_iter, x0)
    jac = _step_jacobian(chain, nd, t, x, extra[0]) if ok else None
    if jac is None:
        return None
    del nd, extra
    nd = _nested_rule(chain, t, min(n_own, COARSE_START[1]), min(order, COARSE_START[0]))
    x, extra, _, ok = _broyden(chain, nd, t, max(tol, 1e-7), min(max_iter, BROYDEN_PASSES), x, jac)
    jac = _step_jacobian(chain, nd, t, x, extra[0]) if ok else None
    return None if jac is None else (x, jac)


def _step_jacobian(chain: _Chain, nodes: _Nodes, t: int, x: np.ndarray, h_warm: np.ndarray):
    """Forward differences (steps 1e-7·max(1, |x_i|)) of stage t's relative step
    g(z) = (z_new − z)/max(1, |z|) at x on ``nodes``; None if not finite."""

    def g(z):
        return (chain.update(nodes, t, z, h_warm.copy())[0] - z) / np.maximum(1.0, np.abs(z))

    g0, jac = g(x), np.empty((x.shape[0], x.shape[0]))
    for i in range(x.shape[0]):
        z = x.copy()
        z[i] += 1e-7 * max(1.0, abs(x[i]))
        jac[:, i] = (g(z) - g0) / (z[i] - x[i])
    return jac if np.all(np.isfinite(jac)) else None


def _student_start(problem: Problem, tol: float, max_iter: int) -> np.ndarray | None:
    """Stage 2's state from ``replica.solve`` of the teacher–student problem (continuations in λ
    and T; None if it does not converge): (m, b, r, q, V_c, V) = (m, b, Q_21, Q_22, R_21, R_22)."""
    from replica.solver import solve

    sol = solve(problem, tol=min(tol, 1e-10), max_iter=max_iter)
    if not sol.converged:
        return None
    s = sol.student
    return np.array([s.m, s.b, s.r, s.q, s.Vc, s.V])


def _reusable(init, data, teacher, students, rule, exact) -> int:
    """How many leading stages of ``init`` are this chain's own (same problem prefix and rule)."""
    if init is None or init.data != data or init.teacher != teacher or init.rule != rule:
        return 0
    j = 1
    while j < min(exact, len(init.stages)) and j - 1 < len(students):
        if init.students[j - 1] != students[j - 1] or not init.stages[j].converged:
            break
        j += 1
    return j if init.stages[0].converged else 0


def _state(chain: _Chain, t: int, eg_se: float, ok: bool, res: float) -> StageState:
    m, q, b = chain.m[t], chain.Q[t, t], chain.b[t]
    r = chain.Q[t, t - 1] if t > 0 else math.nan
    eg = float(chain.data.error(m, q, b))
    return StageState(
        float(m), float(q), float(b), float(r), float(chain.R[t, t]), eg, eg_se, ok, res
    )


def _qmc_stages(chain, first, k, log2_points, repeats, tol, max_iter) -> list[StageState]:
    """Stages first..k−1 by randomised QMC: each replica solves them on its own scrambled Sobol
    points (earlier stages replayed there); the states are replica means, eg_se the s.e. of eg."""
    runs = []
    for rep in range(repeats):
        sub = _Chain(chain.data, chain.losses)
        for name in ("m", "b", "Q", "R", "C", "m_hat", "Q_hat"):
            setattr(sub, name, getattr(chain, name).copy())
        nd = _Nodes.product(chain.data, *_sobol_rule(k, log2_points, seed=rep))
        sub.replay(nd, first)
        states = []
        for t in range(first, k):
            x, extra, res, ok, _ = _solve_stage(sub, nd, t, tol, max_iter)
            sub.accept(nd, t, x, extra)
            states.append(_state(sub, t, 0.0, ok, res))
        runs.append((sub, states))
    out = []
    for i in range(k - first):
        rows = [states[i] for _, states in runs]
        eg = np.array([s.eg for s in rows])
        mean = {f: float(np.mean([getattr(s, f) for s in rows])) for f in ("m", "q", "b", "r", "V")}
        out.append(
            StageState(
                **mean,
                eg=float(eg.mean()),
                eg_se=float(eg.std(ddof=1) / math.sqrt(len(eg))),
                converged=all(s.converged for s in rows),
                residual=max(s.residual for s in rows),
            )
        )
    for name in ("m", "b", "m_hat"):
        getattr(chain, name)[first:] = np.mean([getattr(s, name)[first:] for s, _ in runs], 0)
    for name in ("Q", "R", "Q_hat"):
        mean = np.mean([getattr(s, name) for s, _ in runs], 0)
        getattr(chain, name)[first:, :] = mean[first:, :]
        getattr(chain, name)[:, first:] = mean[:, first:]
    return out


def _scan_brent(g, a: float, b: float, points: int = 9) -> float:
    """argmin of g on [a, b]: the best of ``points`` equally spaced values, refined by bounded
    Brent between its neighbours (a local search alone can stop in a shallow dip)."""
    grid = np.linspace(a, b, points)
    values = [g(u) for u in grid]
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, points - 1)]
    r = optimize.minimize_scalar(g, bounds=(lo, hi), method="bounded", options={"xatol": 1e-3})
    return float(r.x) if r.fun <= values[i] else float(grid[i])


#: the chain rule used inside ``optimise_chain``'s search (stage 3 to ~5e-6); the optimum is then
#: re-solved with the default rule
COARSE = {"nodes": (64, 32, 16), "orders": (4, 3)}


@dataclass(frozen=True)
class ChainOptimum:
    """Stage-by-stage optimal self-distillation: the teacher's λ̃, each student's (λ_t, T_t), the
    chain solved at them with the default rule, and the number of chain solves of the search."""

    teacher: LogisticTeacher
    students: tuple[Student, ...]
    solution: ChainSolution
    solves: int
    #: with ``joint=True``: the greedy optimum the joint search started from (else None)
    greedy: ChainOptimum | None = field(default=None, repr=False, compare=False)

    @property
    def eg(self) -> np.ndarray:
        return self.solution.eg


def _pair(name: str, pair, lo: float) -> tuple[float, float]:
    """A pair (a, b) of finite reals with lo ≤ a, b (> 0 if lo = 0); else ValueError naming it."""
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise ValueError(f"{name} must be a pair (lo, hi), got {pair!r}")
    a, b = (
        check_real(f"{name}[{i}]", v, lo, math.inf, lo == 0.0, True) for i, v in enumerate(pair)
    )
    return a, b


def optimise_chain(
    data: GaussianMixture,
    stages: int = 3,
    *,
    hard: bool = False,
    hard_temperature: float = 0.02,
    lam_range: tuple[float, float] = (1e-3, 1e2),
    temperature_range: tuple[float, float] = (0.02, 20.0),
    joint: bool = False,
) -> ChainOptimum:
    r"""Optimal self-distillation, greedily: λ̃ = argmin ε_1, then for t = 2, …, ``stages`` the
    student (λ_t, T_t) = argmin ε_t given the optimal earlier stages; every student is χ = 1,
    tempered="teacher" (soft labels sig(h_{t−1}/T_t), the convention of Takanami, Takahashi &
    Sakata 2025).  ``hard``: T_t = ``hard_temperature`` fixed (nearly hard pseudo-labels
    sign h_{t−1}, β = 1/T → ∞), λ_t alone optimised.

    Searches are in log λ, log T, on the ``COARSE`` rule: for λ alone (λ̃, and λ_t of the hard
    labels) a scan of 9 points, then bounded Brent between the neighbours of the best; for
    (λ_t, T_t) Nelder–Mead from the best point of a 3 × 3 grid, kept if it beats the hard-label
    optimum (T_t = ``hard_temperature``): so soft labels never do worse than hard ones.

    ``joint``: then, from the greedy optimum, minimise the last stage's ε_K over λ̃ and all
    students' (λ_t, T_t) together (L-BFGS-B in the same box on the exact chain derivatives,
    ``replica.chain_gradient.joint_search``); ``greedy`` holds the greedy optimum.
    """
    check_instance("data", data, GaussianMixture)
    check_integer("stages", stages, 1, EXACT_STAGES)
    check_instance("hard", hard, bool)
    check_instance("joint", joint, bool)
    check_real("hard_temperature", hard_temperature, MIN_TEMPERATURE, math.inf)
    lo, hi = _pair("lam_range", lam_range, 0.0)
    t_lo, t_hi = _pair("temperature_range", temperature_range, MIN_TEMPERATURE)
    if not (lo < hi and t_lo < t_hi):
        raise ValueError("lam_range and temperature_range must be increasing pairs")
    count = [0]
    v_hard = math.log(hard_temperature)
    box = (math.log(lo), math.log(hi), math.log(t_lo), math.log(t_hi))

    def chain(lam_t, students, init=None):
        count[0] += 1
        return solve_chain(data, LogisticTeacher(lam_t), students, init=init, **COARSE)

    def last_eg(sol: ChainSolution) -> float:
        return sol.stages[-1].eg if sol.converged else 1.0

    lam_t = float(math.exp(_scan_brent(lambda u: last_eg(chain(math.exp(u), [])), *box[:2])))
    students: list[Student] = []
    best = chain(lam_t, [])
    for _ in range(stages - 1):

        def student(u, v):
            return Student(math.exp(u), 1.0, math.exp(v), tempered="teacher")

        def f(z, prefix=tuple(students), init=best):
            u = min(max(z[0], box[0]), box[1])
            v = min(max(z[1], box[2]), box[3])
            return last_eg(chain(lam_t, [*prefix, student(u, v)], init))

        z = (_scan_brent(lambda u: f((u, v_hard)), *box[:2]), v_hard)
        if not hard:  # the soft optimum: Nelder–Mead, kept only if it beats the hard one
            grid = [(u, v) for u in np.log([0.01, 0.1, 1.0]) for v in np.log([0.1, 0.5, 2.0])]
            z0 = min(grid, key=f)
            r = optimize.minimize(
                f, z0, method="Nelder-Mead",
                options={"xatol": 1e-2, "fatol": 1e-7, "initial_simplex": [
                    z0, (z0[0] + 0.7, z0[1]), (z0[0], z0[1] + 0.7)]},
            )  # fmt: skip
            zs = (min(max(r.x[0], box[0]), box[1]), min(max(r.x[1], box[2]), box[3]))
            z = zs if f(zs) < f(z) else z
        students.append(student(*z))
        best = chain(lam_t, students, best)
    teacher = LogisticTeacher(lam_t)
    out = ChainOptimum(teacher, tuple(students), solve_chain(data, teacher, students), count[0])
    if not joint or stages == 1:
        return out
    from replica.chain_gradient import joint_search

    teacher, joint_students, solves = joint_search(
        data, teacher, students, box, hard=hard, rule=COARSE
    )
    sol = solve_chain(data, teacher, joint_students)
    return ChainOptimum(teacher, joint_students, sol, count[0] + solves, greedy=out)

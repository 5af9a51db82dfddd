r"""K-class softmax teacher and KD student at N → ∞ (docs/theory.md, section "K classes").

The softmax ignores a common shift of the K fields, so every estimator lives in the (K − 1)-dimensional
space orthogonal to 1 = (1, …, 1): with U (K × (K−1), orthonormal columns ⟂ 1, the Helmert basis) the
reduced weights are W_r = Uᵀ W and the reduced fields η = Uᵀ h.  Nothing needs a Cholesky factor of
Q or G (both may be singular): Gaussian fields are built from symmetric square roots (eigh, with
negative rounding eigenvalues clipped).  Reduced order parameters (d = K − 1):
    M_r = Uᵀ M (d × K, column c = class c), Q_r = Uᵀ Q U, V_r (d × d), b_r = Uᵀ b,
    student also R_r = Uᵀ R U (student row, teacher column) and V_c (d × d).

Teacher, with E over the class c (prob. ρ_c), the training label ŷ (c with prob. 1 − θ, each other
class with θ/(K − 1)) and ω ~ N(M_r[:, c] + b_r, ΔQ_r):
    η = prox_{ΔV, ℓ(ŷ, ·)}(ω),  f = (ΔV)⁻¹(η − ω) = −∇ℓ(ŷ, η),
    M̂[:, c] = α ρ_c E[f | c],  Q̂ = αΔ E[f fᵀ],  V̂ = −αΔ E[∂f/∂ω],  E[f] = 0 fixes b,
    A = λ I + V̂,  V = A⁻¹,  M = A⁻¹ M̂ G,  Q = A⁻¹ (M̂ G M̂ᵀ + Q̂) A⁻¹.
Student (fields (ω̃, ω) jointly Gaussian, covariance Δ[[Q̃, Rᵀ], [R, Q]]; ω' = ω + ΔV_c f̃):
    M̂, Q̂, V̂ as above,  R̂ = αΔ E[f f̃ᵀ],  V̂_c = αΔ E[df/dω̃],
    A = λ I + V̂,  Ũ = M̂ + V̂_c Ã⁻¹ M̂_t,  N = V̂_c Ã⁻¹,
    V = A⁻¹,  M = A⁻¹ Ũ G,  Q = A⁻¹ (Ũ G Ũᵀ + Q̂ + N R̂ᵀ + R̂ Nᵀ + N Q̂_t Nᵀ) A⁻¹,
    R = A⁻¹ (Ũ G M̂_tᵀ + R̂ + N Q̂_t) Ã⁻¹,  V_c = A⁻¹ V̂_c Ã⁻¹.
The oracle teacher is the fixed linear softmax W̃ = V/Δ: η̃ = ω̃, f̃ = 0, Ã⁻¹M̂_t = Uᵀ/Δ, Q̂_t = 0.

Expectations: tensor Gauss–Hermite rules for K ≤ ``EXACT_MAX_K`` (the teacher's d-dimensional field,
the student's as ω̃ then ω | ω̃), scrambled Sobol points beyond (``QMC_REPEATS`` independent solves,
whose spread gives the standard errors).  The fixed point is found by Anderson-accelerated
iteration (``replica.fixed_point.iterate``) with continuation in the ridge when a direct solve fails.
Reported order parameters are in the gauge Σ_k w_k = 0, Σ_k b_k = 0 (``MULTICLASS_FIELDS``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax, ndtri, softmax
from scipy.stats import qmc

from kdtheory.problem import MulticlassMixture, OracleTeacher, Problem, SoftmaxTeacher
from replica.fixed_point import continuation, describe, iterate, polish
from replica.multiclass_kernels import NEWTON_ZONE, acc_size, kd_channel
from replica.quadrature import gauss_hermite

__all__ = ["MulticlassSolution", "MulticlassState", "helmert", "solve_multiclass"]

#: K ≤ this: tensor Gauss–Hermite rules; beyond, scrambled Sobol
EXACT_MAX_K = 3
#: Gauss–Hermite nodes per dimension: teacher (d = K − 1 dims), student outer ω̃ and inner ω | ω̃
HERMITE = {1: (96, 64, 64), 2: (40, 16, 16)}
#: the coarse rules of the first pass (the full rule then needs a few steps only)
HERMITE_COARSE = {1: (48, 24, 24), 2: (20, 8, 8)}
#: the coarse pass is solved to this tolerance
COARSE_TOL = 1e-7
#: largest state vector polished by quasi-Newton steps from a finite-difference Jacobian
POLISH_MAX_SIZE = 40
#: tensor-rule nodes whose weight is below this fraction of the largest are dropped (their total
#: weight is ~1e-13 of the rule's)
PRUNE = 1e-16
#: Sobol points of one QMC solve (teacher; student), and the number of independent solves
QMC_POINTS = (2**11, 2**11)
QMC_REPEATS = 4
#: Newton iterations of a proximal step, and its tolerance on the step (in the reduced fields)
PROX_ITER = 60
PROX_TOL = 1e-13
#: the smallest ridge of a continuation
_FLOOR = 1e-6


def helmert(K: int) -> np.ndarray:
    """U (K × (K−1)): orthonormal columns ⟂ 1, u_j ∝ (1, …, 1, −j, 0, …) (j ones); K = 2: (1, −1)/√2."""
    U = np.zeros((K, K - 1))
    for j in range(1, K):
        U[:j, j - 1] = 1.0
        U[j, j - 1] = -float(j)
        U[:, j - 1] /= math.sqrt(j * (j + 1))
    return U


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix (negative rounding eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _pinv_sqrt(s: np.ndarray) -> np.ndarray:
    """Pseudo-inverse of a symmetric PSD square root (eigenvalues below 1e-12 max dropped)."""
    w, v = np.linalg.eigh(0.5 * (s + s.T))
    keep = w > 1e-12 * max(float(w.max()), 1e-300)
    inv = np.where(keep, 1.0 / np.where(keep, w, 1.0), 0.0)
    return (v * inv) @ v.T


# ----------------------------------------------------------------------------- states


@dataclass(frozen=True)
class MulticlassState:
    """Order parameters of one K-class estimator (gauge Σ_k w_k = 0, Σ_k b_k = 0).

    ``eg`` test error on clean labels, ``eg_se`` its standard error (0 where everything is
    deterministic: K ≤ 3), ``M`` (K×K, M_kc = w_k·v_c/N), ``Q`` (K×K), ``b`` (K), ``V`` (K×K
    susceptibility, on the space ⟂ 1), ``train_loss`` and ``train_error`` against the training
    labels; student only: ``R`` (K×K, R_kl = w_k·w̃_l/N) and ``Vc`` (K×K cross-susceptibility).
    """

    eg: float
    eg_se: float
    M: np.ndarray
    Q: np.ndarray
    b: np.ndarray
    V: np.ndarray
    train_loss: float
    train_error: float
    R: np.ndarray | None = None
    Vc: np.ndarray | None = None


@dataclass(frozen=True)
class MulticlassSolution:
    """Teacher and student of a K-class problem; convergence reported as by ``replica.solve``:
    ``converged`` only if both fixed points were reached to ``tol``, ``residual`` the largest
    relative change of any order parameter in the last step, ``iterations`` the map evaluations
    (teacher + student, all QMC repeats), ``status`` and ``message`` as for ``replica.Solution``."""

    problem: Problem
    teacher: MulticlassState
    student: MulticlassState
    converged: bool
    residual: float
    iterations: int
    status: str
    message: str = ""


# ----------------------------------------------------------------------------- rules


class _Rule:
    """Standard-normal nodes ξ (n × dim) and weights; tensor Gauss–Hermite or scrambled Sobol."""

    def __init__(self, dim: int, n: int, qmc_seed: int | None):
        if qmc_seed is None:
            x, w = gauss_hermite(n)
            grids = np.meshgrid(*([x] * dim), indexing="ij")
            self.xi = np.stack([g.ravel() for g in grids], axis=1)
            ws = np.meshgrid(*([w] * dim), indexing="ij")
            self.w = np.prod(np.stack([g.ravel() for g in ws], axis=1), axis=1)
            keep = self.w > PRUNE * self.w.max()  # drop the far corners of the tensor grid
            self.xi, self.w = self.xi[keep], self.w[keep] / self.w[keep].sum()
        else:
            u = qmc.Sobol(dim, scramble=True, seed=np.random.default_rng(qmc_seed)).random(n)
            self.xi = ndtri(np.clip(u, 1e-16, 1 - 1e-16))
            self.w = np.full(n, 1.0 / n)


# ----------------------------------------------------------------------------- losses


def _labels(K: int, flip: float) -> np.ndarray:
    """P(ŷ | c) (K × K): 1 − θ on the diagonal, θ/(K − 1) elsewhere."""
    return np.full((K, K), flip / (K - 1)) + (1.0 - flip - flip / (K - 1)) * np.eye(K)


def _ce_parts(eta: np.ndarray, U: np.ndarray, target: np.ndarray, scale: float):
    """CE(target, softmax(Uη/scale)) with its reduced gradient and Hessian in η.

    target: (n, K) probabilities.  Returns loss (n), grad (n, d), hess (n, d, d), p (n, K)."""
    z = eta @ U.T / scale
    logp = log_softmax(z, axis=1)
    p = np.exp(logp)
    loss = -np.sum(target * logp, axis=1)
    grad = (p - target) @ U / scale
    pu = p @ U
    hess = (np.einsum("nk,ki,kj->nij", p, U, U) - pu[:, :, None] * pu[:, None, :]) / scale**2
    return loss, grad, hess, p


def _prox(omega, P, loss_parts, eta0=None, ts=1.0):
    """argmin_η ℓ(η) + ½(η − ω)ᵀP(η − ω) by Newton (batched) with the kernel's safeguards: steps
    capped at 4 in max norm, then halved until the objective decreases (Armijo); ``loss_parts(η)``
    → (loss, grad, hess).  Returns η and the loss parts at η; raises ArithmeticError if not
    converged in ``PROX_ITER`` steps."""
    eta = omega.copy() if eta0 is None else eta0.copy()

    def objective(e):
        r = e - omega
        return loss_parts(e)[0] + 0.5 * np.einsum("ni,ij,nj->n", r, P, r)

    for _ in range(PROX_ITER):
        loss, grad, hess = loss_parts(eta)
        g = grad + (eta - omega) @ P.T
        step = np.linalg.solve(hess + P, g[..., None])[..., 0]
        big = np.max(np.abs(step), axis=1)
        t = np.where(big > 4.0, 4.0 / np.maximum(big, 1e-300), 1.0)
        f0 = objective(eta)
        slope = np.sum(g * step, axis=1)
        todo = np.ones(len(eta), dtype=bool)
        size = np.maximum(1.0, np.max(np.abs(eta), axis=1))
        for _ in range(60):
            cand = eta - t[:, None] * step
            ok = objective(cand) <= f0 - 1e-4 * t * slope + 1e-13 * (np.abs(f0) + size)
            ok |= big < NEWTON_ZONE * min(1.0, ts)  # the kernel's Newton zone
            todo &= ~ok
            if not todo.any():
                break
            t = np.where(todo, 0.5 * t, t)
        eta = eta - t[:, None] * step
        size = max(1.0, float(np.max(np.abs(eta))))
        if float(np.max(big * t)) < PROX_TOL * size:
            loss, grad, hess = loss_parts(eta)
            return eta, loss, grad, hess
    raise ArithmeticError(f"the K-class proximal step did not converge in {PROX_ITER} Newton steps")


def channel(omega, teacher, w, U, y, chi, T, Ts, P, dlVc, eta=None, *, kernel=True):
    """Proximal points of the KD softmax loss at the nodes ω and their moments
    (``replica.multiclass_kernels.kd_channel``; ``kernel=False``: its numpy twin).

    teacher: (η̃, f̃, η̃', f̃') at the nodes, or None (a teacher: χ = 0 and no teacher fields).
    Returns η (n, d), per-node [f | ∂η/∂ω | ∂f/∂ω] (n, d, 1 + 2d) and the accumulator
    [E f, E ffᵀ, E ∂f/∂ω, E f f̃ᵀ, E df/dω̃, loss, error] weighted by w."""
    n, d = omega.shape
    if teacher is None:
        z1, z2 = np.zeros((n, d)), np.zeros((n, d, d))
        teacher = (z1, z1, z2, z2)
    eta = omega.copy() if eta is None else eta.copy()
    if not kernel:
        return _channel_numpy(omega, teacher, w, U, y, chi, T, Ts, P, dlVc, eta)
    out = np.empty((n, d, 1 + 2 * d))
    acc = np.zeros(acc_size(d))
    eta_t, f_t, dh_t, df_t = (np.ascontiguousarray(a) for a in teacher)
    worst = kd_channel(np.ascontiguousarray(omega), eta_t, f_t, dh_t, df_t, np.ascontiguousarray(w),
                       U, int(y), float(chi), float(T), float(Ts), P, dlVc, eta, out, acc,
                       PROX_ITER, PROX_TOL)  # fmt: skip
    if worst < 0:
        raise ArithmeticError(
            f"the K-class proximal step did not converge in {PROX_ITER} Newton steps"
        )
    return eta, out, acc


def _channel_numpy(omega, teacher, w, U, y, chi, T, Ts, P, dlVc, eta):
    """numpy twin of :func:`channel` (the reference the kernel is tested against)."""
    _n, d = omega.shape
    K = U.shape[0]
    eta_t, f_t, dh_t, df_t = teacher
    om = omega + f_t @ dlVc.T
    p_t = softmax(eta_t @ U.T / T, axis=1)
    onehot = np.zeros((1, K))
    onehot[0, y] = 1.0

    def parts(e):
        l1, g1, h1, _ = _ce_parts(e, U, onehot, 1.0)
        l2, g2, h2, _ = _ce_parts(e, U, p_t, Ts)
        return (1 - chi) * l1 + chi * l2, (1 - chi) * g1 + chi * g2, (1 - chi) * h1 + chi * h2

    eta, loss, grad, hess = _prox(om, P, parts, eta, Ts)
    f = -grad
    HP = hess + P
    dh = np.linalg.solve(HP, np.broadcast_to(P, hess.shape))
    df = P @ (dh - np.eye(d))
    pu = p_t @ U
    cov_t = np.einsum("nk,ki,kj->nij", p_t, U, U) - pu[:, :, None] * pu[:, None, :]
    kappa = -(chi / (Ts * T)) * cov_t
    shift = dlVc @ df_t
    dtot = np.linalg.solve(HP, P @ shift - kappa @ dh_t)
    dft = P @ (dtot - shift)
    acc = np.concatenate([
        w @ f,
        np.einsum("n,ni,nj->ij", w, f, f).ravel(),
        np.einsum("n,nij->ij", w, df).ravel(),
        np.einsum("n,ni,nj->ij", w, f, f_t).ravel(),
        np.einsum("n,nij->ij", w, dft).ravel(),
        [w @ loss, w @ (np.argmax(eta @ U.T, axis=1) != y)],
    ])  # fmt: skip
    out = np.concatenate([f[:, :, None], dh, df], axis=2)
    return eta, out, acc


def _unpack(acc, d):
    """The accumulator of :func:`channel` as (E f, E ffᵀ, E ∂f/∂ω, E f f̃ᵀ, E df/dω̃, loss, err)."""
    i = d
    mats = []
    for _ in range(4):
        mats.append(acc[i : i + d * d].reshape(d, d))
        i += d * d
    return (acc[:d], *mats, acc[i], acc[i + 1])


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)


# ----------------------------------------------------------------------------- teacher


@dataclass(frozen=True)
class _Teacher:
    """A solved teacher in reduced coordinates, what the student's map needs."""

    M: np.ndarray  # d × K
    Q: np.ndarray  # d × d
    b: np.ndarray  # d
    V: np.ndarray  # d × d (its prox); unused by the oracle
    A_inv: np.ndarray  # Ã⁻¹
    M_hat: np.ndarray  # M̂_t (d × K)
    Q_hat: np.ndarray  # Q̂_t
    oracle: bool


class _TeacherMap:
    """x = (M_r, Q_r, V_r, b_r) flattened ↦ G(x) for the softmax teacher."""

    def __init__(self, data: MulticlassMixture, lam: float, rule: _Rule):
        self.data, self.lam, self.rule = data, lam, rule
        self.K = data.K
        self.d = self.K - 1
        self.U = helmert(self.K)
        self.labels = _labels(self.K, data.flip)
        self.calls = 0
        self.warm = {}  # (class, label) → the last proximal points (Newton's warm start)

    def split(self, x):
        d, K = self.d, self.K
        i = 0
        M = x[i : i + d * K].reshape(d, K)
        i += d * K
        Q = x[i : i + d * d].reshape(d, d)
        i += d * d
        V = x[i : i + d * d].reshape(d, d)
        i += d * d
        return M, _sym(Q), _sym(V), x[i : i + d]

    @staticmethod
    def join(M, Q, V, b):
        return np.concatenate([M.ravel(), Q.ravel(), V.ravel(), b])

    def moments(self, x):
        """Per-class E[f], and E[f fᵀ], E[∂f/∂ω], loss, training error (all averaged over c)."""
        M, Q, V, b = self.split(x)
        data, U, d = self.data, self.U, self.d
        dl = data.delta
        P = np.linalg.inv(dl * V)
        S = _sqrt_psd(dl * Q)
        xi, w = self.rule.xi, self.rule.w
        Ef = np.zeros((d, self.K))
        Eff, Edf = np.zeros((d, d)), np.zeros((d, d))
        loss_m = err_m = 0.0
        zero = np.zeros((d, d))
        for c in range(self.K):
            omega = M[:, c] + b + xi @ S
            for y in range(self.K):
                p_y = self.labels[c, y]
                if p_y == 0.0:
                    continue
                wy = p_y * data.rho[c] * w
                eta, _, acc = channel(omega, None, wy, U, y, 0.0, 1.0, 1.0, P, zero,
                                      self.warm.get((c, y)))  # fmt: skip
                self.warm[(c, y)] = eta
                ef, eff, edf, _, _, loss, err = _unpack(acc, d)
                Ef[:, c] += ef / data.rho[c]
                Eff += eff
                Edf += edf
                loss_m += loss
                err_m += err
        return Ef, Eff, Edf, float(loss_m), float(err_m)

    def hats(self, x):
        a, dl, rho = self.data.alpha, self.data.delta, self.data.rho
        Ef, Eff, Edf, loss, err = self.moments(x)
        M_hat = a * Ef * rho[None, :]
        return M_hat, a * dl * _sym(Eff), -a * dl * _sym(Edf), Ef @ rho, loss, err

    def __call__(self, x):
        self.calls += 1
        _M, Q, _V, b = self.split(x)
        M_hat, Q_hat, V_hat, Ef, _, _ = self.hats(x)
        A_inv = np.linalg.inv(self.lam * np.eye(self.d) + V_hat)
        G = self.data.gram
        M_new = A_inv @ M_hat @ G
        Q_new = A_inv @ (M_hat @ G @ M_hat.T + Q_hat) @ A_inv
        b_new = b + _bias_step(self.data, V_hat, Ef, Q)
        return self.join(M_new, _sym(Q_new), _sym(A_inv), b_new)

    def initial(self):
        d, K = self.d, self.K
        b0 = self.U.T @ np.log(self.data.rho)
        return self.join(np.zeros((d, K)), 1e-3 * np.eye(d), np.eye(d) / (self.lam + 1.0), b0)


def _bias_step(data, V_hat, Ef, Q):
    """Newton step on E[f](b) = 0: δb = αΔ V̂⁻¹ E[f] (∂E[f]/∂b = −V̂/αΔ), capped in max norm at
    1 + 3√(Δ max Q_kk) (where V̂ ≈ 0 the raw step would throw b far away; at the fixed point the
    step vanishes, so the cap changes no solution)."""
    a, dl = data.alpha, data.delta
    g = a * dl * Ef
    try:
        step = np.linalg.solve(V_hat, g)
    except np.linalg.LinAlgError:
        step = g
    cap = 1.0 + 3.0 * math.sqrt(max(dl * float(np.max(np.diag(Q))), 0.0))
    big = float(np.max(np.abs(step)))
    return step if big <= cap else step * (cap / big)


def _valid_teacher(split):
    def valid(x):
        _M, Q, V, _b = split(x)
        return bool(np.all(np.linalg.eigvalsh(V) > 0) and np.all(np.diag(Q) >= 0))

    return valid


# ----------------------------------------------------------------------------- student


class _StudentMap:
    """x = (M_r, Q_r, V_r, b_r, R_r, V_c) flattened ↦ G(x) for the KD student, given the teacher."""

    def __init__(self, problem: Problem, teacher: _Teacher, rules: tuple[_Rule, _Rule], lam=None):
        self.data, self.st = problem.data, problem.student
        self.lam = self.st.lam if lam is None else lam
        self.t = teacher
        self.outer, self.inner = rules
        self.K = self.data.K
        self.d = self.K - 1
        self.U = helmert(self.K)
        self.labels = _labels(self.K, self.data.flip)
        self.calls = 0
        self.warm = {}  # (class, label) → the last proximal points (Newton's warm start)
        self.teacher_fields = [self._teacher_at(c) for c in range(self.K)]

    def _teacher_at(self, c):
        """ω̃ at the outer nodes of class c, and per training label ŷ: η̃, f̃, ∂η̃/∂ω̃, ∂f̃/∂ω̃."""
        t, U, d, dl = self.t, self.U, self.d, self.data.delta
        S = _sqrt_psd(dl * t.Q)
        omega = t.M[:, c] + t.b + self.outer.xi[:, :d] @ S
        out = []
        for y in range(self.K):
            if self.labels[c, y] == 0.0:
                out.append(None)
                continue
            n = omega.shape[0]
            if t.oracle:
                eye = np.broadcast_to(np.eye(d), (n, d, d))
                out.append((omega, np.zeros_like(omega), eye, np.zeros((n, d, d))))
                continue
            P = np.linalg.inv(dl * t.V)
            eta, per_node, _ = channel(omega, None, np.zeros(n), U, y, 0.0, 1.0, 1.0, P,
                                       np.zeros((d, d)))  # fmt: skip
            f, dh, df = per_node[:, :, 0], per_node[:, :, 1 : 1 + d], per_node[:, :, 1 + d :]
            out.append((eta, f, dh, df))
        return S, omega, out

    def split(self, x):
        d, K = self.d, self.K
        i = 0
        parts = []
        for shape in ((d, K), (d, d), (d, d), (d,), (d, d), (d, d)):
            n = math.prod(shape)
            parts.append(x[i : i + n].reshape(shape))
            i += n
        M, Q, V, b, R, Vc = parts
        return M, _sym(Q), _sym(V), b, R, Vc

    @staticmethod
    def join(M, Q, V, b, R, Vc):
        return np.concatenate([M.ravel(), Q.ravel(), V.ravel(), b, R.ravel(), Vc.ravel()])

    def moments(self, x):
        M, Q, V, b, R, Vc = self.split(x)
        data, st, U, d, K = self.data, self.st, self.U, self.d, self.K
        dl, chi, T, Ts = data.delta, st.chi, st.temperature, st.student_temperature
        P = np.linalg.inv(dl * V)
        Ef = np.zeros((d, K))
        Eff, Edf, Efft, Edft = (np.zeros((d, d)) for _ in range(4))
        loss_m = err_m = 0.0
        xi_in, w_in = self.inner.xi, self.inner.w
        no, ni = self.outer.xi.shape[0], xi_in.shape[0]
        qmc_mode = self.outer is self.inner  # one joint Sobol set: ω̃ and ω from the same point
        for c in range(K):
            S_t, _omega_t, per_label = self.teacher_fields[c]
            B = dl * R @ _pinv_sqrt(S_t)  # Cov(ω, ω̃) = ΔR = B S̃
            C = _sqrt_psd(dl * Q - B @ B.T)
            if qmc_mode:
                base = M[:, c] + b + self.outer.xi[:, :d] @ B.T + self.outer.xi[:, d:] @ C
                idx_t = np.arange(no)
                wts = self.outer.w
            else:
                base = (M[:, c] + b + self.outer.xi @ B.T)[:, None, :] + (xi_in @ C)[None]
                base = base.reshape(no * ni, d)
                idx_t = np.repeat(np.arange(no), ni)
                wts = np.outer(self.outer.w, w_in).ravel()
                keep = wts > PRUNE * wts.max()  # the far corners of the 2d-dimensional grid
                base, idx_t, wts = base[keep], idx_t[keep], wts[keep] / wts[keep].sum()
            for y in range(K):
                p_y = self.labels[c, y]
                if p_y == 0.0:
                    continue
                fields = tuple(a[idx_t] for a in per_label[y])
                wy = p_y * data.rho[c] * wts
                eta, _, acc = channel(base, fields, wy, U, y, chi, T, Ts, P, dl * Vc,
                                      self.warm.get((c, y)))  # fmt: skip
                self.warm[(c, y)] = eta
                ef, eff, edf, efft, edft, loss, err = _unpack(acc, d)
                Ef[:, c] += ef / data.rho[c]
                Eff += eff
                Edf += edf
                Efft += efft
                Edft += edft
                loss_m += loss
                err_m += err
        return Ef, Eff, Edf, Efft, Edft, float(loss_m), float(err_m)

    def __call__(self, x):
        self.calls += 1
        _M, Q, _V, b, _R, _Vc = self.split(x)
        a, dl, rho, G = self.data.alpha, self.data.delta, self.data.rho, self.data.gram
        Ef, Eff, Edf, Efft, Edft, _, _ = self.moments(x)
        M_hat = a * Ef * rho[None, :]
        Q_hat, V_hat = a * dl * _sym(Eff), -a * dl * _sym(Edf)
        R_hat, Vc_hat = a * dl * Efft, a * dl * Edft
        t = self.t
        A_inv = np.linalg.inv(self.lam * np.eye(self.d) + V_hat)
        Nm = Vc_hat @ t.A_inv
        Ut = M_hat + Nm @ t.M_hat
        M_new = A_inv @ Ut @ G
        inner = Ut @ G @ Ut.T + Q_hat + Nm @ R_hat.T + R_hat @ Nm.T + Nm @ t.Q_hat @ Nm.T
        Q_new = A_inv @ inner @ A_inv
        R_new = A_inv @ (Ut @ G @ t.M_hat.T + R_hat + Nm @ t.Q_hat) @ t.A_inv
        Vc_new = A_inv @ Vc_hat @ t.A_inv
        b_new = b + _bias_step(self.data, V_hat, Ef @ rho, Q)
        return self.join(M_new, _sym(Q_new), _sym(A_inv), b_new, R_new, Vc_new)

    def initial(self):
        d, K = self.d, self.K
        z = np.zeros((d, d))
        return self.join(np.zeros((d, K)), 1e-3 * np.eye(d), np.eye(d) / (self.lam + 1.0),
                         self.t.b.copy(), z, z)  # fmt: skip


def _valid_student(split):
    def valid(x):
        _M, Q, V, _b, _R, _Vc = split(x)
        return bool(np.all(np.linalg.eigvalsh(V) > 0) and np.all(np.diag(Q) >= 0))

    return valid


# ----------------------------------------------------------------------------- driver


def _rules(K: int, seed: int | None, coarse: bool = False):
    """(teacher rule, (student outer, student inner)) for K classes; seed: the QMC solve's;
    ``coarse``: the cheap rule of the first pass."""
    d = K - 1
    if K <= EXACT_MAX_K:
        nt, no, ni = (HERMITE_COARSE if coarse else HERMITE)[d]
        return _Rule(d, nt, None), (_Rule(d, no, None), _Rule(d, ni, None))
    nt, ns = (n // 4 for n in QMC_POINTS) if coarse else QMC_POINTS
    joint = _Rule(2 * d, ns, seed)
    return _Rule(d, nt, seed), (joint, joint)


def _solve_fp(make_map, lam, tol, max_iter, valid_of):
    """The fixed point at ridge λ: first with the coarse rule (``make_map(λ, True)``) to
    max(tol, ``COARSE_TOL``), by direct iteration or else by continuation in the ridge from
    max(1, 10λ); then with the full rule from there by quasi-Newton steps (Anderson, then
    continuation on the full rule, if that fails).
    Returns the full rule's result and the number of map evaluations."""
    calls = [0]

    def solver(coarse, tol_):
        def solve_at(lam_, x_start, jacobian=None):
            g = make_map(lam_, coarse)
            start = g.initial() if x_start is None else x_start
            res = iterate(g, start, tol=tol_, max_iter=max_iter, valid=valid_of(g.split))
            calls[0] += g.calls
            return res

        return solve_at

    def reach(solve_at, x0):
        res = solve_at(lam, x0)
        if res.status != "converged":
            res, _ = continuation(solve_at, lam, floor=_FLOOR, budget=10 * max_iter)
        return res

    near = reach(solver(True, max(tol, COARSE_TOL)), None)
    fine = solver(False, tol)
    if near.status == "converged":
        # quasi-Newton on the full rule with the coarse map's Jacobian (forward differences,
        # n + 1 coarse maps: only for small states, K ≤ 3), Broyden-updated; Anderson on the
        # full rule otherwise or if that fails
        res = None
        if near.x.size <= POLISH_MAX_SIZE:
            g, model = make_map(lam, False), make_map(lam, True)
            res = polish(g, near.x, tol=tol, model=model, valid=valid_of(g.split), max_iter=8)
            calls[0] += g.calls + model.calls
        if res is None or res.status != "converged":
            res = fine(lam, near.x)
        if res.status == "converged":
            return res, calls[0]
    return reach(fine, None), calls[0]


def _state(data, U, M, Q, b, V, loss, err, seed, R=None, Vc=None) -> MulticlassState:
    Mf, Qf, bf, Vf = U @ M, U @ Q @ U.T, U @ b, U @ V @ U.T
    eg, se = data.error(Mf, Qf, bf, se=True, seed=seed)
    extra = {}
    if R is not None:
        extra = {"R": U @ R @ U.T, "Vc": U @ Vc @ U.T}
    return MulticlassState(eg, se, Mf, Qf, bf, Vf, loss, err, **extra)


def solve_multiclass(
    problem: Problem, *, tol: float = 1e-10, max_iter: int = 400
) -> MulticlassSolution:
    """The replica-symmetric saddle point of a K-class problem (teacher, then KD student).

    K ≤ 3: deterministic Gauss–Hermite rules.  K > 3: ``QMC_REPEATS`` independent solves on
    scrambled Sobol points; the reported values are their means and ``eg_se`` the standard error
    of the mean error (the spread of the repeats, which includes the test-error integral's own).
    """
    data, teacher, st = problem.data, problem.teacher, problem.student
    K = data.K
    if isinstance(teacher, SoftmaxTeacher) and teacher.lam == 0.0:
        return _refused(problem, "unbounded", "SoftmaxTeacher.lam = 0: the K-class separability "
                        "threshold is not derived here, so a finite solution is not guaranteed; "
                        "use lam > 0 (e.g. 1e-6)")  # fmt: skip
    if st.lam == 0.0:
        return _refused(problem, "unbounded", "Student.lam = 0: the K-class separability threshold "
                        "is not derived here; use lam > 0 (e.g. 1e-6)")  # fmt: skip
    seeds = [None] if K <= EXACT_MAX_K else list(range(QMC_REPEATS))
    runs = []
    total = 0
    for seed in seeds:
        try:
            out = _solve_once(problem, seed, tol, max_iter)
        except (
            ArithmeticError,
            ValueError,
            np.linalg.LinAlgError,
        ) as exc:  # no legal problem raises
            message = f"numerical failure inside the solver: {type(exc).__name__}: {exc}"
            return _failed(problem, "diverged", message, math.inf, total)
        total += out[-1]
        if out[0] is None:  # failed
            _, status, message, residual, _ = out
            return _failed(problem, status, message, residual, total)
        runs.append(out)
    U = helmert(K)
    teachers = [r[0] for r in runs]
    students = [r[1] for r in runs]
    residual = max(r[2] for r in runs)
    t_state = _combine(data, U, teachers)
    s_state = _combine(data, U, students)
    return MulticlassSolution(problem, t_state, s_state, True, residual, total, "converged")


def _combine(data, U, states):
    """One state from the QMC repeats (mean; eg_se from their spread), or the single state."""
    if len(states) == 1:
        return states[0]
    eg = np.array([s.eg for s in states])
    mean = {f: np.mean([getattr(s, f) for s in states], axis=0)
            for f in ("M", "Q", "b", "V", "train_loss", "train_error")}  # fmt: skip
    if states[0].R is not None:
        mean |= {f: np.mean([getattr(s, f) for s in states], axis=0) for f in ("R", "Vc")}
    se = float(eg.std(ddof=1) / math.sqrt(eg.size))
    return MulticlassState(float(eg.mean()), se, **{k: (float(v) if np.ndim(v) == 0 else v)
                                                    for k, v in mean.items()})  # fmt: skip


def _solve_once(problem, seed, tol, max_iter):
    data, teacher = problem.data, problem.teacher
    K, d = data.K, data.K - 1
    U = helmert(K)
    t_rule, s_rules = _rules(K, seed)
    calls = 0
    if isinstance(teacher, OracleTeacher):
        Mo, Qo, bo = data.oracle()
        t = _Teacher(U.T @ Mo, U.T @ Qo @ U, U.T @ bo, np.eye(d), np.eye(d), U.T / data.delta,
                     np.zeros((d, d)), True)  # fmt: skip
        t_state = _oracle_state(data, U, t, t_rule, seed)
        t_res = 0.0
    else:
        rules = {False: t_rule, True: _rules(K, seed, coarse=True)[0]}
        res, c = _solve_fp(lambda lam, coarse: _TeacherMap(data, lam, rules[coarse]), teacher.lam,
                           0.1 * tol, max_iter, _valid_teacher)  # fmt: skip
        calls += c
        if res.status != "converged":
            return (
                None,
                res.status,
                f"teacher did not converge ({describe(res, 0.1 * tol)})",
                res.residual,
                calls,
            )
        g = _TeacherMap(data, teacher.lam, t_rule)
        M, Q, V, b = g.split(res.x)
        M_hat, Q_hat, V_hat, _, loss, err = g.hats(res.x)
        A_inv = np.linalg.inv(teacher.lam * np.eye(d) + V_hat)
        t = _Teacher(M, Q, b, V, A_inv, M_hat, Q_hat, False)
        t_state = _state(data, U, M, Q, b, V, loss, err, seed or 0)
        t_res = res.residual
    s_coarse = _rules(K, seed, coarse=True)[1]
    res, c = _solve_fp(
        lambda lam, coarse: _StudentMap(problem, t, s_coarse if coarse else s_rules, lam),
        problem.student.lam, tol, max_iter, _valid_student,
    )  # fmt: skip
    calls += c
    if res.status != "converged":
        return (
            None,
            res.status,
            f"student did not converge ({describe(res, tol)})",
            res.residual,
            calls,
        )
    g = _StudentMap(problem, t, s_rules)
    M, Q, V, b, R, Vc = g.split(res.x)
    *_, loss, err = g.moments(res.x)
    s_state = _state(data, U, M, Q, b, V, loss, err, seed or 0, R, Vc)
    return t_state, s_state, max(res.residual, t_res), calls


def _oracle_state(data, U, t, rule, seed):
    """The oracle's metrics: test error from (M̃, Q̃, b̃); training loss/error by the rule."""
    Mo, Qo, bo = data.oracle()
    S = _sqrt_psd(data.delta * t.Q)
    labels = _labels(data.K, data.flip)
    loss = err = 0.0
    for c in range(data.K):
        eta = t.M[:, c] + t.b + rule.xi @ S
        logp = log_softmax(eta @ U.T, axis=1)
        for y in range(data.K):
            wy = labels[c, y] * data.rho[c] * rule.w
            loss += wy @ (-logp[:, y])
            err += wy @ (np.argmax(logp, axis=1) != y)
    eg, se = data.error(Mo, Qo, bo, se=True, seed=seed or 0)
    c = U @ U.T  # the gauge Σ_k w_k = 0, Σ_k b_k = 0
    return MulticlassState(eg, se, c @ Mo, c @ Qo @ c, c @ bo, np.full((data.K,) * 2, np.nan),
                           float(loss), float(err))  # fmt: skip


def _nan_state(K):
    nan = np.full((K, K), np.nan)
    return MulticlassState(math.nan, math.nan, nan, nan, np.full(K, np.nan), nan, math.nan,
                           math.nan, nan, nan)  # fmt: skip


def _failed(problem, status, message, residual, iterations):
    K = problem.data.K
    return MulticlassSolution(problem, _nan_state(K), _nan_state(K), False, residual, iterations,
                              status, message)  # fmt: skip


def _refused(problem, status, message):
    return _failed(problem, status, message, math.inf, 0)

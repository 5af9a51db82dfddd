r"""Finite-N simulations of the K-class Gaussian mixture with softmax teachers and KD students.

The model of docs/theory.md (K classes): centroids v_1, …, v_K ∈ R^N drawn once per data set with
(v_1i, …, v_Ki) ~ N(0, G) independently for each coordinate i (G the K×K Gram matrix, positive
semi-definite, possibly singular), classes c_μ with P(c) = ρ_c, inputs

    x_μ = v_{c_μ}/√N + √Δ z_μ,   z_μ ~ N(0, I_N),

and training labels ŷ_μ: with probability θ (``flip``) a uniformly drawn class other than c_μ,
else c_μ. Linear estimators W ∈ R^{K×N}, b ∈ R^K, h = W x/√N + b, prediction argmax_k h_k.

Every fit minimises the strictly convex (λ > 0) risk

    F(W, b) = Σ_μ [(1 − χ) CE(e_{ŷ_μ}, softmax(h_μ)) + χ CE(softmax(h̃_μ/T), softmax(h_μ/T_s))]
              + (λ/2)‖W‖²_F,

b not penalised (the softmax teacher is χ = 0, λ = λ̃), by truncated Newton (:func:`fit_softmax`).
The softmax ignores a common shift of h, so b is defined up to b + c·1: the fits return the
representative with Σ_k b_k = 0, and W has Σ_k w_k = 0 at the optimum (the ridge removes the common
direction).

Each seed records the order parameters M_kc = w_k·v_c/N, Q_kl = w_k·w_l/N, b, the clean-label test
error ε_g of (W, b) on this draw of the centroids (the closed form in (M, Q, b) of
:class:`kdtheory.MulticlassMixture`, the function the theory uses), the training loss and error;
for the student also R_kl = w_k·w̃_l/N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import xarray as xr
from joblib import Parallel, delayed
from scipy.special import softmax
from threadpoolctl import threadpool_limits

from kdtheory.problem import MulticlassMixture, OracleTeacher, Problem, SoftmaxTeacher, Student
from simulations.data import check_n, n_samples
from simulations.fit import CONVERGED
from simulations.runner import Estimate, check_run_arguments
from simulations.softmax_kernels import kd_softmax_grad, kd_softmax_hess_apply, kd_softmax_line

__all__ = [
    "ArrayEstimate",
    "MulticlassFit",
    "MulticlassSimulationResult",
    "MulticlassStudentEstimates",
    "MulticlassTeacherEstimates",
    "MulticlassTrainingSet",
    "centroids",
    "fit_multiclass_student",
    "fit_multiclass_teacher",
    "fit_softmax",
    "oracle_teacher",
    "run_multiclass",
    "sample_multiclass",
    "simulate_multiclass_seed",
    "soft_labels",
]

_CHUNK_ROWS = 512  # rows per block when adding the class means (bounds the temporary)
_FORCING_MAX = 0.5  # CG stops at relative residual min(0.5, √(‖∇F‖/‖∇F₀‖)) (superlinear Newton)
_LINE_C = 0.1  # the line search accepts |φ'(t)| ≤ 0.1 |φ'(0)|
_Q_UNBOUNDED = 1e10  # ‖W‖²_F/N beyond this is reported as a diverging norm


@dataclass(frozen=True, eq=False)
class MulticlassTrainingSet:
    r"""One draw of the K-class training set.

    Attributes
    ----------
    x : ndarray (M, N)
        Inputs x_μ = v_{c_μ}/√N + √Δ z_μ (rows, C-contiguous float64).
    c : ndarray (M,), int64
        The classes that place x (clean labels).
    v : ndarray (K, N)
        The centroids of this draw (for M = W Vᵀ/N).
    y_hat : ndarray (M,), int64
        Training labels ŷ: c with a fraction θ replaced by a uniformly drawn other class (``c``
        itself when θ = 0).
    """

    x: np.ndarray
    c: np.ndarray
    v: np.ndarray
    y_hat: np.ndarray

    @property
    def n(self) -> int:
        """Dimension N."""
        return self.x.shape[1]

    @property
    def m(self) -> int:
        """Number of samples M."""
        return self.x.shape[0]

    @property
    def k(self) -> int:
        """Number of classes K."""
        return self.v.shape[0]


def centroids(gram: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    r"""V (K×N) with columns (v_1i, …, v_Ki) ~ N(0, G), independent over i.

    G = U diag(e) Uᵀ (``numpy.linalg.eigh``; tiny negative eigenvalues from rounding set to 0), and
    V = U diag(√e) Z with Z (K×N) standard normal: Cov(V_{·i}) = G also for a singular G (no
    Cholesky factor needed).
    """
    gram = np.asarray(gram, dtype=np.float64)
    e, u = np.linalg.eigh(gram)
    e = np.clip(e, 0.0, None)
    z = rng.standard_normal((gram.shape[0], n))
    return (u * np.sqrt(e)) @ z


def sample_multiclass(
    data: MulticlassMixture, n: int, rng: np.random.Generator
) -> MulticlassTrainingSet:
    r"""Draw M = round(αN) samples of the K-class mixture ``data`` in dimension N = ``n``.

    Order of the draws (fixed, so a sample is reproducible from the generator's seed): the
    centroids (:func:`centroids`), the classes c_μ ~ Categorical(ρ), z (M×N), then, only if θ > 0,
    u_μ ~ U(0, 1) and r_μ uniform in {1, …, K−1}: ŷ_μ = (c_μ + r_μ) mod K where u_μ < θ (a
    uniformly drawn other class).
    """
    if not isinstance(data, MulticlassMixture):
        raise ValueError(f"data must be a MulticlassMixture, got {type(data).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n = check_n(n)
    m = n_samples(data, n)
    k = data.K
    v = centroids(data.gram, n, rng)
    c = rng.choice(k, size=m, p=data.rho).astype(np.int64)
    x = rng.standard_normal((m, n))
    x *= math.sqrt(data.delta)
    means = v / math.sqrt(n)
    for lo in range(0, m, _CHUNK_ROWS):
        hi = min(lo + _CHUNK_ROWS, m)
        x[lo:hi] += means[c[lo:hi]]
    if data.flip > 0.0:
        flipped = rng.random(m) < data.flip
        other = (c + rng.integers(1, k, size=m)) % k
        y_hat = np.where(flipped, other, c).astype(np.int64)
    else:
        y_hat = c
    return MulticlassTrainingSet(x=x, c=c, v=v, y_hat=y_hat)


@dataclass(frozen=True, eq=False)
class MulticlassFit:
    r"""A fitted linear softmax model h(x) = W x/√N + b and how it was obtained.

    Attributes
    ----------
    w : ndarray (K, N)
        Weights.
    b : ndarray (K,)
        Biases, Σ_k b_k = 0.
    h : ndarray (M, K)
        Logits on the training points.
    status : str
        ``"converged"`` (‖∇F‖ ≤ gtol·M), ``"closed_form"`` (oracle teacher), ``"unbounded"``
        (‖W‖ diverging), ``"max_iter"`` or ``"failed"`` (non-finite values, no descent).
    iterations, cg_iterations : int
        Newton iterations and Hessian–vector products.
    grad_norm : float
        ‖∇F‖ (Frobenius over (W, b), F in sum form); NaN for the closed form.
    train_loss : float
        Per-sample mean of the data term (no ridge).
    train_error : float
        Fraction of training points with argmax_k h_k ≠ ŷ (the labels fitted).
    """

    w: np.ndarray
    b: np.ndarray
    h: np.ndarray
    status: str
    iterations: int
    cg_iterations: int
    grad_norm: float
    train_loss: float
    train_error: float

    @property
    def converged(self) -> bool:
        """True when (W, b) is the minimiser to the requested tolerance (or exact)."""
        return self.status in CONVERGED


def _check_fit_args(x, y, pt, lam, chi, ts, k):
    for name, value, ok, allowed in (
        ("lam", lam, lam > 0.0, "(0, ∞)"),
        ("chi", chi, 0.0 <= chi <= 1.0, "[0, 1]"),
        ("student_temperature", ts, ts > 0.0, "(0, ∞)"),
    ):
        if not (ok and math.isfinite(value)):
            raise ValueError(f"{name} must be in {allowed}, got {value!r}")
    m = x.shape[0]
    if y.shape != (m,) or (m and (y.min() < 0 or y.max() >= k)):
        raise ValueError(f"y must hold {m} class indices in [0, {k})")
    if pt.shape != (m, k):
        raise ValueError(f"pt must have shape ({m}, {k}) (one soft label per sample)")


def fit_softmax(
    x: np.ndarray,
    y: np.ndarray,
    pt: np.ndarray | None,
    *,
    k: int,
    lam: float,
    chi: float = 0.0,
    student_temperature: float = 1.0,
    scale: float | None = None,
    gtol: float = 1e-10,
    max_iter: int = 100,
    cg_max_iter: int = 1000,
) -> MulticlassFit:
    r"""Minimise F(W, b) = Σ_μ ℓ(ŷ_μ, p̃_μ, s W x_μ + b) + (λ/2)‖W‖²_F by truncated Newton.

    ℓ(y, p̃, h) = (1 − χ) CE(e_y, softmax(h)) + χ CE(p̃, softmax(h/T_s))
    (:mod:`simulations.softmax_kernels`). Newton directions by conjugate gradients on
    Hessian–vector products (two M×N×K matrix products each), an exact line search in h-space,
    stop at ‖∇F‖ ≤ gtol·M. The preconditioner is one scalar for all of W and one for all of b, so
    every CG iterate keeps Σ_k b_k and Σ_k w_k fixed: the gauge direction b + c·1 (a null direction
    of the Hessian) is never entered.

    Parameters
    ----------
    x : ndarray (M, N)
        Inputs.
    y : ndarray (M,), int
        Training labels in {0, …, K−1}.
    pt : ndarray (M, K) or None
        Soft labels p̃_μ = softmax(h̃_μ/T) (None allowed when χ = 0).
    k : int
        Number of classes K ≥ 2.
    lam, chi, student_temperature : float
        λ > 0 (λ = 0 is refused: with separable classes the minimiser does not exist), χ ∈ [0, 1],
        T_s > 0.
    scale : float, optional
        s = 1/√N (default: 1/√x.shape[1]).
    gtol, max_iter, cg_max_iter
        Tolerance (‖∇F‖ ≤ gtol·M), Newton iterations, CG iterations per Newton step.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an int ≥ 2, got {k!r}")
    if not (isinstance(gtol, float | int) and 0.0 < gtol < 1.0):
        raise ValueError(f"gtol must be a real number in (0, 1), got {gtol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int ≥ 1, got {max_iter!r}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.int64)
    m, n = x.shape
    pt = np.zeros((m, k)) if pt is None else np.ascontiguousarray(pt, dtype=np.float64)
    lam, chi, ts = float(lam), float(chi), float(student_temperature)
    _check_fit_args(x, y, pt, lam, chi, ts, k)
    s = 1.0 / math.sqrt(n) if scale is None else float(scale)

    w = np.zeros((k, n))
    b = np.zeros(k)
    h = np.zeros((m, k))
    g, p, ps = np.empty((m, k)), np.zeros((m, k)), np.zeros((m, k))
    row_sq = np.einsum("ij,ij->i", x, x)
    tol = gtol * m
    status, cg_total, g0, data, gnorm = "max_iter", 0, None, math.nan, math.nan
    for it in range(max_iter + 1):
        np.matmul(x, w.T, out=h)
        h *= s
        h += b
        data = kd_softmax_grad(y, pt, h, chi, ts, g, p, ps)
        grad_w = s * (g.T @ x) + lam * w
        grad_b = g.sum(0)
        gnorm = math.sqrt(float(np.sum(grad_w * grad_w) + grad_b @ grad_b))
        if not (math.isfinite(gnorm) and math.isfinite(data)):
            status = "failed"
            break
        if gnorm <= tol:
            status = "converged"
            break
        if s * s * float(np.sum(w * w)) > _Q_UNBOUNDED:
            status = "unbounded"
            break
        if it == max_iter:
            break
        g0 = gnorm if g0 is None else g0
        forcing = min(_FORCING_MAX, math.sqrt(gnorm / g0))
        # curvature scale of each block: mean diagonal of the Hessian
        diag = (1.0 - chi) * (p * (1.0 - p)).sum(1) + (chi / ts**2) * (ps * (1.0 - ps)).sum(1)
        prec_w = lam + s * s * float(diag @ row_sq) / (k * n)
        prec_b = max(float(diag.sum()) / k, 1e-300)
        dw, db, dh, n_cg = _pcg(
            x, p, ps, chi, ts, grad_w, grad_b, lam, s, prec_w, prec_b,
            max(forcing * gnorm, 0.1 * tol), cg_max_iter,
        )  # fmt: skip
        cg_total += n_cg
        t = _line_search(y, pt, h, dh, w, dw, lam, chi, ts)
        if t <= 0.0:
            status = "failed"
            break
        w += t * dw
        b += t * db
    shift = b.mean()
    b = b - shift
    h = h - shift
    return MulticlassFit(
        w=w,
        b=b,
        h=h,
        status=status,
        iterations=it,
        cg_iterations=cg_total,
        grad_norm=gnorm,
        train_loss=data / m,
        train_error=float(np.mean(np.argmax(h, axis=1) != y)),
    )


def _pcg(x, p, ps, chi, ts, grad_w, grad_b, lam, s, prec_w, prec_b, tol, max_iter):
    """Preconditioned CG for H (dW, db) = −∇F; returns (dW, db, its h-space image, products)."""
    m, k = x.shape[0], grad_b.shape[0]
    dw, db, dh = np.zeros_like(grad_w), np.zeros(k), np.zeros((m, k))
    rw, rb = -grad_w, -grad_b
    zw, zb = rw / prec_w, rb / prec_b
    pw, pb = zw.copy(), zb.copy()
    rz = float(np.sum(rw * zw) + rb @ zb)
    a = np.empty((m, k))
    c = np.empty((m, k))
    j = 0
    while j < max_iter:
        np.matmul(x, pw.T, out=a)
        a *= s
        a += pb
        kd_softmax_hess_apply(p, ps, a, chi, ts, c)
        hw = s * (c.T @ x) + lam * pw
        hb = c.sum(0)
        j += 1
        php = float(np.sum(pw * hw) + pb @ hb)
        if not php > 0.0:
            break
        step = rz / php
        dw += step * pw
        db += step * pb
        dh += step * a
        rw -= step * hw
        rb -= step * hb
        if math.sqrt(float(np.sum(rw * rw) + rb @ rb)) <= tol:
            break
        zw, zb = rw / prec_w, rb / prec_b
        rz_new = float(np.sum(rw * zw) + rb @ zb)
        pw = zw + (rz_new / rz) * pw
        pb = zb + (rz_new / rz) * pb
        rz = rz_new
    if j == 1 and not (dw.any() or db.any()):  # no curvature: the preconditioned gradient
        dw, db = -grad_w / prec_w, -grad_b / prec_b
        dh = s * (x @ dw.T) + db
    return dw, db, dh, j


def _line_search(y, pt, h, dh, w, dw, lam, chi, ts) -> float:
    r"""Step t along (dW, db) with h-space image dh: safeguarded Newton on φ'(t) = 0,
    φ(t) = Σ ℓ(h + t·dh) + (λ/2)‖W + t dW‖²_F (convex), from t = 1; 0 if not a descent direction."""
    ws = float(np.sum(w * dw))
    ss = float(np.sum(dw * dw))
    _, d0, _ = kd_softmax_line(y, pt, h, dh, 0.0, chi, ts)
    slope0 = d0 + lam * ws
    if not slope0 < 0.0:
        return 0.0
    lo, hi, t = 0.0, math.inf, 1.0
    for _ in range(100):
        _, d1, d2 = kd_softmax_line(y, pt, h, dh, t, chi, ts)
        slope = d1 + lam * (ws + t * ss)
        if abs(slope) <= _LINE_C * abs(slope0) or t > 1e8:
            return t
        if slope < 0.0:
            lo = t
        else:
            hi = t
        curv = d2 + lam * ss
        t_new = t - slope / curv if curv > 0.0 else math.nan
        if not lo < t_new < hi:
            t_new = 2.0 * t if math.isinf(hi) else 0.5 * (lo + hi)
        t = t_new
    return t


def soft_labels(h_teacher: np.ndarray, temperature: float) -> np.ndarray:
    """p̃_μ = softmax(h̃_μ/T) per row."""
    return softmax(np.asarray(h_teacher, dtype=np.float64) / temperature, axis=1)


def _fit_record(w, b, x, y, scale, status) -> MulticlassFit:
    """A closed-form (W, b) as a :class:`MulticlassFit` with its training CE and error."""
    b = b - b.mean()
    h = scale * (x @ w.T) + b
    m, k = h.shape
    g, p, ps = np.empty((m, k)), np.empty((m, k)), np.empty((m, k))
    loss = kd_softmax_grad(y, np.zeros((m, k)), h, 0.0, 1.0, g, p, ps)
    return MulticlassFit(
        w=w,
        b=b,
        h=h,
        status=status,
        iterations=0,
        cg_iterations=0,
        grad_norm=math.nan,
        train_loss=loss / m,
        train_error=float(np.mean(np.argmax(h, axis=1) != y)),
    )


def oracle_teacher(data: MulticlassMixture, train: MulticlassTrainingSet) -> MulticlassFit:
    r"""The oracle teacher on ``train``: its logits are the log-posterior log p(c | x) up to a
    constant, with this draw's centroids V,

        log ρ_c − ‖x − v_c/√N‖²/(2Δ) = w̃_c·x/√N + b̃_c + const,
        W̃ = V/Δ,   b̃_c = log ρ_c − (‖v_c‖²/N)/(2Δ)

    (‖v_c‖²/N → G_cc as N → ∞: the theory's b̃_c = log ρ_c − G_cc/2Δ), so softmax(h̃) is the
    exact posterior p(c | x) of the finite-N model.  Returned in the gauge of every fit,
    Σ_c w̃_c = 0 and Σ_c b̃_c = 0 (a common shift of the K logits, which the softmax ignores).
    """
    n = train.n
    w = train.v / data.delta
    w = w - w.mean(0)
    b = np.log(data.rho) - (train.v * train.v).sum(1) / n / (2.0 * data.delta)
    return _fit_record(w, b, train.x, train.y_hat, 1.0 / math.sqrt(n), "closed_form")


def fit_multiclass_teacher(
    teacher: SoftmaxTeacher | OracleTeacher,
    train: MulticlassTrainingSet,
    data: MulticlassMixture,
    *,
    gtol: float = 1e-10,
    max_iter: int = 100,
) -> MulticlassFit:
    r"""Fit the teacher: ``SoftmaxTeacher``: min Σ_μ CE(e_{ŷ_μ}, softmax(h̃_μ)) + (λ̃/2)‖W̃‖²_F
    (:func:`fit_softmax`, χ = 0); ``OracleTeacher``: :func:`oracle_teacher`."""
    if isinstance(teacher, OracleTeacher):
        return oracle_teacher(data, train)
    if not isinstance(teacher, SoftmaxTeacher):
        raise ValueError(
            f"teacher must be a SoftmaxTeacher or OracleTeacher, got {type(teacher).__name__}"
        )
    if teacher.lam == 0.0:
        raise ValueError(
            "SoftmaxTeacher.lam must be > 0 in the K-class simulations, got 0 (with separable "
            "classes the unregularised softmax fit has no minimiser)"
        )
    return fit_softmax(
        train.x, train.y_hat, None, k=train.k, lam=teacher.lam, gtol=gtol, max_iter=max_iter
    )


def fit_multiclass_student(
    student: Student,
    train: MulticlassTrainingSet,
    h_teacher: np.ndarray,
    *,
    gtol: float = 1e-10,
    max_iter: int = 100,
) -> MulticlassFit:
    r"""Fit the KD student given the teacher's training logits h̃ (M×K):

    min Σ_μ (1 − χ) CE(e_{ŷ_μ}, softmax(h_μ)) + χ CE(softmax(h̃_μ/T), softmax(h_μ/T_s))
        + (λ/2)‖W‖²_F,

    T_s = ``student.student_temperature`` (T for ``tempered="both"``, 1 for ``"teacher"``), η = 1.
    """
    if not isinstance(student, Student):
        raise ValueError(f"student must be a Student, got {type(student).__name__}")
    if student.eta != 1.0:
        raise ValueError(f"Student.eta must be 1 for K classes, got {student.eta!r}")
    if student.lam == 0.0:
        raise ValueError(
            "Student.lam must be > 0 in the K-class simulations, got 0 (no unique minimiser at "
            "λ = 0 when the classes are separable or M < K(N + 1))"
        )
    h_teacher = np.asarray(h_teacher, dtype=np.float64)
    if h_teacher.shape != (train.m, train.k):
        raise ValueError(f"h_teacher must have shape ({train.m}, {train.k})")
    pt = soft_labels(h_teacher, student.temperature) if student.chi > 0.0 else None
    return fit_softmax(
        train.x,
        train.y_hat,
        pt,
        k=train.k,
        lam=student.lam,
        chi=student.chi,
        student_temperature=student.student_temperature,
        gtol=gtol,
        max_iter=max_iter,
    )


# ---------------------------------------------------------------------------------- the runner


@dataclass(frozen=True, eq=False)
class ArrayEstimate:
    """Elementwise mean over the converged seeds of an array-valued quantity, its standard error
    std/√count (NaN when count < 2), and count."""

    mean: np.ndarray
    sem: np.ndarray
    count: int

    @classmethod
    def of(cls, values) -> ArrayEstimate:
        """From per-seed values (seed axis first); seeds with any NaN entry are left out."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.all(np.isfinite(v.reshape(v.shape[0], -1)), axis=1)]
        c = v.shape[0]
        mean = v.mean(0) if c else np.full(v.shape[1:], math.nan)
        sem = v.std(0, ddof=1) / math.sqrt(c) if c > 1 else np.full(v.shape[1:], math.nan)
        return cls(mean, sem, c)


@dataclass(frozen=True)
class MulticlassTeacherEstimates:
    """The teacher's ε̃_g (and the mean QMC error of one seed's ε̃_g), M̃, Q̃, b̃, training loss
    and error over seeds."""

    eg: Estimate
    eg_se: Estimate
    M: ArrayEstimate
    Q: ArrayEstimate
    b: ArrayEstimate
    train_loss: Estimate
    train_error: Estimate


@dataclass(frozen=True)
class MulticlassStudentEstimates:
    """The student's ε_g (and QMC error), M, Q, b, R = W W̃ᵀ/N, training loss and error."""

    eg: Estimate
    eg_se: Estimate
    M: ArrayEstimate
    Q: ArrayEstimate
    b: ArrayEstimate
    R: ArrayEstimate
    train_loss: Estimate
    train_error: Estimate


@dataclass(frozen=True, eq=False)
class MulticlassSimulationResult:
    r"""Result of :func:`run_multiclass` (``simulations.run`` on a K-class problem).

    Attributes
    ----------
    teacher, student : MulticlassTeacherEstimates, MulticlassStudentEstimates
        The fields of ``replica.solve``'s K-class solution (``kdtheory.problem.MULTICLASS_FIELDS``),
        scalars as :class:`~simulations.runner.Estimate`, matrices and vectors as
        :class:`ArrayEstimate` (teacher over the seeds whose teacher converged, student over the
        seeds where both converged).  ``eg_se`` is the mean over seeds of one seed's QMC error
        of ε_g (0 for K ≤ 3); that error is independent across seeds (each seed scrambles its own
        points), so it is already inside ``eg.sem``.
    table : xarray.Dataset
        Every per-seed value: scalars on dim ``seed``, vectors on (``seed``, ``k``), matrices on
        (``seed``, ``k``, ``c``) (row k of W, column c: centroid v_c or teacher row w̃_c), fit
        diagnostics, ``converged``; the Gram matrix ``gram`` (k, c) and ``rho`` (k).
    n_failed : int
        Seeds where the teacher or the student did not converge.
    """

    problem: Problem
    n: int
    seeds: int
    seed: int
    teacher: MulticlassTeacherEstimates
    student: MulticlassStudentEstimates
    table: xr.Dataset
    n_failed: int


_SCALARS = ("eg", "eg_se", "train_loss", "train_error")
_ARRAYS = {"M": ("k", "c"), "Q": ("k", "c"), "b": ("k",), "R": ("k", "c")}


def _record(role: str, fit: MulticlassFit | None, v, data: MulticlassMixture, qmc_seed: int):
    """Per-seed record of one fit: ε_g (closed form in M, Q, b, with its QMC error), M, Q, b,
    training loss and error (NaN unless converged) and diagnostics, keys prefixed ``role_``."""
    k, n = v.shape
    out: dict = {
        "status": "no_teacher" if fit is None else fit.status,
        "converged": False if fit is None else fit.converged,
        "iterations": 0 if fit is None else fit.iterations,
        "cg_iterations": 0 if fit is None else fit.cg_iterations,
        "grad_norm": math.nan if fit is None else fit.grad_norm,
    }
    if fit is not None and fit.converged:
        big_m, big_q = fit.w @ v.T / n, fit.w @ fit.w.T / n
        eg, eg_se = data.error(big_m, big_q, fit.b, se=True, seed=qmc_seed)
        out |= {
            "eg": float(eg),
            "eg_se": float(eg_se),
            "M": big_m,
            "Q": big_q,
            "b": fit.b.copy(),
            "train_loss": fit.train_loss,
            "train_error": fit.train_error,
        }
    else:
        out |= {key: math.nan for key in _SCALARS}
        out |= {"M": np.full((k, k), math.nan), "Q": np.full((k, k), math.nan)}
        out["b"] = np.full(k, math.nan)
    return {f"{role}_{key}": value for key, value in out.items()}


def simulate_multiclass_seed(
    problem: Problem,
    n: int,
    seed_sequence: np.random.SeedSequence,
    *,
    gtol: float = 1e-10,
    max_iter: int = 100,
) -> dict:
    """One draw: sample, fit the teacher and the student, return the per-seed record of
    :func:`run_multiclass`.  The generator draws the training set (:func:`sample_multiclass`),
    then the two seeds of the QMC test errors (teacher, student)."""
    with threadpool_limits(limits=1, user_api="blas"):
        rng = np.random.default_rng(seed_sequence)
        data = problem.data
        train = sample_multiclass(data, n, rng)
        qmc_t, qmc_s = (int(s) for s in rng.integers(0, 2**31, size=2))
        teacher = fit_multiclass_teacher(problem.teacher, train, data, gtol=gtol, max_iter=max_iter)
        row = _record("teacher", teacher, train.v, data, qmc_t)
        student = None
        if teacher.converged:
            student = fit_multiclass_student(
                problem.student, train, teacher.h, gtol=gtol, max_iter=max_iter
            )
        row |= _record("student", student, train.v, data, qmc_s)
        k = data.K
        row["student_R"] = (
            student.w @ teacher.w.T / n
            if student is not None and student.converged
            else np.full((k, k), math.nan)
        )
    row["converged"] = bool(row["teacher_converged"] and row["student_converged"])
    return row


def run_multiclass(
    problem: Problem,
    n: int,
    seeds: int,
    *,
    seed: int = 0,
    n_jobs: int = 1,
    gtol: float = 1e-10,
    max_iter: int = 100,
    progress: bool = False,
) -> MulticlassSimulationResult:
    r"""Train the K-class teacher and KD student of ``problem`` at N = ``n`` for ``seeds`` seeds.

    Seed s draws from ``np.random.default_rng(np.random.SeedSequence(seed).spawn(seeds)[s])``
    (:func:`simulate_multiclass_seed`); a seed's result depends on (seed, s) only, not on
    ``n_jobs``. Arguments as :func:`simulations.run`, which dispatches here for a
    :class:`~kdtheory.MulticlassMixture`; the data matrix cap counts M×N as for two classes (the
    fits hold a few M×K and K×N arrays besides).
    """
    if not (isinstance(problem, Problem) and isinstance(problem.data, MulticlassMixture)):
        raise ValueError("problem must be a Problem with a MulticlassMixture")
    check_run_arguments(n, seeds, seed=seed, n_jobs=n_jobs, alpha=problem.data.alpha)
    n = int(n)
    if isinstance(problem.teacher, SoftmaxTeacher) and problem.teacher.lam == 0.0:
        raise ValueError("SoftmaxTeacher.lam must be > 0 in the K-class simulations, got 0")
    if problem.student.lam == 0.0:
        raise ValueError("Student.lam must be > 0 in the K-class simulations, got 0")
    children = np.random.SeedSequence(int(seed)).spawn(int(seeds))
    jobs = (
        delayed(simulate_multiclass_seed)(problem, n, c, gtol=gtol, max_iter=max_iter)
        for c in children
    )
    rows = Parallel(n_jobs=int(n_jobs), return_as="generator")(jobs)
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, total=int(seeds), desc="seeds", unit="seed")
    table = _table(list(rows), problem, n, int(seed), gtol)
    both = table["converged"].values

    def estimate(role, name, mask):
        values = table[f"{role}_{name}"].values
        if name in _ARRAYS:
            keep = mask.reshape((-1,) + (1,) * (values.ndim - 1))
            return ArrayEstimate.of(np.where(keep, values, np.nan))
        return Estimate.of(np.where(mask, values, np.nan))

    ok_t = table["teacher_converged"].values
    teacher = MulticlassTeacherEstimates(
        **{f.name: estimate("teacher", f.name, ok_t) for f in fields(MulticlassTeacherEstimates)}
    )
    student = MulticlassStudentEstimates(
        **{f.name: estimate("student", f.name, both) for f in fields(MulticlassStudentEstimates)}
    )
    return MulticlassSimulationResult(
        problem=problem,
        n=n,
        seeds=int(seeds),
        seed=int(seed),
        teacher=teacher,
        student=student,
        table=table,
        n_failed=int((~both).sum()),
    )


def _table(rows: list[dict], problem: Problem, n: int, seed: int, gtol: float) -> xr.Dataset:
    data = problem.data
    variables = {}
    for key in rows[0]:
        name = key.split("_", 1)[1] if "_" in key else key
        dims = ("seed",) + (
            _ARRAYS.get(name, ()) if key.startswith(("teacher_", "student_")) else ()
        )
        variables[key] = (dims, np.array([row[key] for row in rows]))
    variables["gram"] = (("k", "c"), np.asarray(data.gram))
    variables["rho"] = (("k",), np.asarray(data.rho))
    ds = xr.Dataset(
        variables,
        coords={"seed": np.arange(len(rows)), "k": np.arange(data.K), "c": np.arange(data.K)},
    )
    ds.attrs = {
        **problem.params,
        "K": data.K,
        "teacher": type(problem.teacher).__name__,
        "tempered": problem.student.tempered,
        "n": n,
        "m": n_samples(data, n),
        "root_seed": seed,
        "gtol": gtol,
    }
    return ds

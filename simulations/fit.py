r"""Exact fits of the teachers and the KD student of docs/theory.md at finite N.

Every fit minimises a strictly convex (for λ > 0) empirical risk of the form

    F(w, b) = Σ_μ ℓ_KD(ŷ_μ, h̃_μ, h_μ) + (λ/2)‖w‖²,   h_μ = x_μ·w/√N + b,   b not penalised,

on the training labels ŷ (:attr:`simulations.data.TrainingSet.y_hat`, the cluster labels y with a
fraction θ flipped) — the logistic teacher is the case χ = 0 (h̃ unused), λ = λ̃ — by a truncated
Newton method
(:func:`newton_cg`): Newton directions from preconditioned conjugate gradients on Hessian–vector
products (one pass over the data each, :mod:`simulations.kernels`), an exact line search along the
direction in h-space (O(M) per trial, no pass over the data), and a stop on the gradient norm
‖∇F‖ ≤ gtol·M. The Hessian–vector product costs O(MN) whichever of M, N is larger, and CG only sees
the non-trivial part of the spectrum (the N − M directions that the data do not reach all have the
eigenvalue λ), so the same primal method serves M < N and M > N; no N×N or M×M matrix is formed.

λ = 0 with χ = 0 (plain logistic regression) has no minimiser when the training set is linearly
separable: the solver then stops at the first iterate that separates the data (y_μ h_μ > 0 for all μ,
a certificate that inf F = 0 is not attained) and reports ``status="unbounded"``. λ = 0 with fewer
samples than parameters (M < k + 1) leaves a whole affine set of minimisers (directions with
x_μ·u/√N + β = 0 for all μ do not change F); such a fit is reported as ``status="not_unique"``
rather than returning an arbitrary member — use a small λ > 0 for the λ → 0⁺ limit.

The Bayes-optimal teacher is closed-form (:func:`bayes_teacher`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from kdtheory.problem import BayesTeacher, GaussianMixture, LogisticTeacher, Student
from simulations.data import TrainingSet, subset_size
from simulations.kernels import hess_vec, line_derivs, loss_grad, preact, row_combination

__all__ = [
    "CONVERGED",
    "Fit",
    "bayes_teacher",
    "fit_gd",
    "fit_student",
    "fit_teacher",
    "newton_cg",
]

#: Status values of a :class:`Fit` that count as a valid minimiser.
CONVERGED = ("converged", "closed_form")

_Q_UNBOUNDED = 1e10  # q = ‖w‖²/N beyond this is reported as a diverging norm
_FORCING_MAX = 0.5  # CG stops at relative residual min(0.5, √(‖∇F‖/‖∇F₀‖)) (superlinear Newton)
_LINE_C = 0.1  # line search accepts |φ'(t)| ≤ 0.1 |φ'(0)| (close to the exact minimiser)


@dataclass(frozen=True, eq=False)
class Fit:
    r"""A fitted linear model h(x) = w·x/√N + b and how it was obtained.

    Attributes
    ----------
    w : ndarray, shape (N,)
        Weights (a sparse student has zeros off its subset S).
    b : float
        Bias.
    h : ndarray, shape (M,)
        Preactivations h_μ on the training points.
    status : str
        ``"converged"`` (‖∇F‖ ≤ gtol·M), ``"closed_form"`` (Bayes teacher), ``"unbounded"`` (the
        minimiser does not exist: separable data at λ = 0, or ‖w‖ diverging), ``"not_unique"``
        (λ = 0 and M < k + 1: a stationary point was reached but the minimiser is not unique),
        ``"max_iter"``, ``"failed"`` (non-finite values or no descent direction) or
        ``"diverged"`` (:func:`fit_gd`: the gradient-descent iterates blew up).
    iterations : int
        Newton iterations (0 for the closed form).
    cg_iterations : int
        Hessian–vector products used in total.
    grad_norm : float
        ‖∇F‖ (Euclidean, over (w, b), F in sum form) at the returned point; NaN for the closed form.
    train_loss : float
        Per-sample mean of the data term (no ridge): logistic loss for a teacher, ℓ_KD for a student.
    train_error : float
        Fraction of training points with y_μ h_μ ≤ 0, y the labels fitted (the noisy ŷ).
    """

    w: np.ndarray
    b: float
    h: np.ndarray
    status: str
    iterations: int
    cg_iterations: int
    grad_norm: float
    train_loss: float
    train_error: float

    @property
    def converged(self) -> bool:
        """True when (w, b) is the minimiser to the requested tolerance (or exact)."""
        return self.status in CONVERGED


def newton_cg(
    x: np.ndarray,
    y: np.ndarray,
    ht: np.ndarray | None,
    *,
    lam: float,
    chi: float = 0.0,
    temperature: float = 1.0,
    student_temperature: float | None = None,
    scale: float | None = None,
    gtol: float = 1e-10,
    max_iter: int = 100,
    cg_max_iter: int = 1000,
) -> Fit:
    r"""Minimise F(w, b) = Σ_μ ℓ_KD(y_μ, h̃_μ, s x_μ·w + b) + (λ/2)‖w‖² by truncated Newton.

    ℓ_KD(y, h̃, h) = (1−χ) log(1 + e^{−yh}) + χ H(sig(h̃/T), sig(h/T_s)).

    Parameters
    ----------
    x : ndarray, shape (M, k)
        Inputs (C-contiguous float64).
    y : ndarray, shape (M,)
        Labels ±1.
    ht : ndarray, shape (M,), or None
        Teacher preactivations h̃_μ (ignored when χ = 0; None is allowed then).
    lam, chi, temperature : float
        λ ≥ 0, χ ∈ [0, 1], T > 0 of ℓ_KD.
    student_temperature : float, optional
        T_s > 0, the temperature of the student's output; defaults to T (both outputs tempered).
    scale : float, optional
        s = 1/√N; defaults to 1/√k.
    gtol : float
        Stop when ‖∇F‖ ≤ gtol·M (the per-sample mean gradient below gtol).
    max_iter, cg_max_iter : int
        Newton iterations; CG iterations per Newton step.

    Returns
    -------
    Fit
        ``w`` of length k.
    """
    _check_solver(gtol, max_iter)
    ts = temperature if student_temperature is None else student_temperature
    for name, value, ok, allowed in (
        ("lam", lam, lam >= 0.0, "[0, ∞)"),
        ("chi", chi, 0.0 <= chi <= 1.0, "[0, 1]"),
        ("temperature", temperature, temperature > 0.0, "(0, ∞)"),
        ("student_temperature", ts, ts > 0.0, "(0, ∞)"),
    ):
        if not (ok and math.isfinite(value)):
            raise ValueError(f"{name} must be in {allowed}, got {value!r}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    m, k = x.shape
    ht = np.zeros(m) if ht is None else np.ascontiguousarray(ht, dtype=np.float64)
    if ht.shape != (m,) or y.shape != (m,):
        raise ValueError(f"y and ht must have shape ({m},), got {y.shape} and {ht.shape}")
    s = 1.0 / math.sqrt(k) if scale is None else float(scale)
    lam, chi, t_, ts = float(lam), float(chi), float(temperature), float(ts)

    theta = np.zeros(k + 1)  # (w, b)
    grad = np.empty(k + 1)
    h = np.empty(m)
    curv = np.empty(m)
    row_sq = np.einsum("ij,ij->i", x, x)  # ‖x_μ‖², for the preconditioner
    tol = gtol * m
    status, cg_total, g0, data, gnorm = "max_iter", 0, None, math.nan, math.nan
    for it in range(max_iter + 1):
        data = loss_grad(x, y, ht, theta, theta[k], s, chi, t_, ts, grad, h, curv)
        grad[:k] += lam * theta[:k]
        gnorm = float(np.linalg.norm(grad))
        if not (math.isfinite(gnorm) and math.isfinite(data)):
            status = "failed"
            break
        if gnorm <= tol:
            status = "converged"
            break
        if (chi == 0.0 and lam == 0.0 and np.all(y * h > 0.0)) or (
            s * s * (theta[:k] @ theta[:k]) > _Q_UNBOUNDED
        ):
            status = "unbounded"
            break
        if it == max_iter:
            break
        g0 = gnorm if g0 is None else g0
        forcing = min(_FORCING_MAX, math.sqrt(gnorm / g0))
        # diagonal preconditioner: exact for the bias (Σ ℓ'' = O(M)), the mean diagonal for w (O(1))
        prec = np.full(k + 1, lam + s * s * (curv @ row_sq) / k)
        prec[k] = max(curv.sum(), 1e-300)
        step, hstep, n_cg = _pcg(
            x, curv, grad, lam, s, prec, max(forcing * gnorm, 0.1 * tol), cg_max_iter
        )
        cg_total += n_cg
        t = _line_search(y, ht, h, hstep, theta[:k], step[:k], lam, chi, (t_, ts))
        if t <= 0.0:
            status = "failed"
            break
        theta += t * step
    if status == "converged" and lam == 0.0 and m < k + 1:
        status = "not_unique"
    return Fit(
        w=theta[:k].copy(),
        b=float(theta[k]),
        h=h,
        status=status,
        iterations=it,
        cg_iterations=cg_total,
        grad_norm=gnorm,
        train_loss=data / m,
        train_error=float(np.mean(y * h <= 0.0)),
    )


def _pcg(x, curv, grad, lam, scale, prec, tol, max_iter):
    """Preconditioned CG for H step = −∇F; returns (step, its h-space image s x·step_w + step_b,
    number of Hessian–vector products)."""
    m, k = x.shape
    step = np.zeros(k + 1)
    hstep = np.zeros(m)
    hp = np.empty(k + 1)
    hu = np.empty(m)
    r = -grad
    z = r / prec
    p = z.copy()
    rz = r @ z
    j = 0
    while j < max_iter:
        hess_vec(x, curv, p, scale, hp, hu)
        hp[:k] += lam * p[:k]
        j += 1
        php = p @ hp
        if not php > 0.0:  # no curvature left along p (only possible at λ = 0)
            break
        a = rz / php
        step += a * p
        hstep += a * hu
        r -= a * hp
        if np.linalg.norm(r) <= tol:
            break
        z = r / prec
        rz_new = r @ z
        p = z + (rz_new / rz) * p
        rz = rz_new
    if j == 1 and not step.any():  # fall back to the preconditioned gradient
        step = -grad / prec
        preact(x, step, step[k], scale, hstep)
    return step, hstep, j


def _line_search(y, ht, h, hstep, w, step_w, lam, chi, temperatures) -> float:
    r"""Step t along the direction with h-space image ``hstep``: safeguarded Newton on φ'(t) = 0,
    φ(t) = Σ ℓ_KD(h + t·hstep) + (λ/2)‖w + t·step_w‖² (convex), starting from the Newton step t = 1.
    ``temperatures`` = (T, T_s). Returns 0 when the direction is not a descent direction."""
    ws = w @ step_w
    ss = step_w @ step_w
    _, d0, _ = line_derivs(y, ht, h, hstep, 0.0, chi, *temperatures)
    slope0 = d0 + lam * ws
    if not slope0 < 0.0:
        return 0.0
    lo, hi, t = 0.0, math.inf, 1.0
    for _ in range(100):
        _, d1, d2 = line_derivs(y, ht, h, hstep, t, chi, *temperatures)
        slope = d1 + lam * (ws + t * ss)
        if abs(slope) <= _LINE_C * abs(slope0) or t > 1e8:
            return t
        if slope < 0.0:
            lo = t
        else:
            hi = t
        t_new = t - slope / (d2 + lam * ss) if d2 + lam * ss > 0.0 else math.nan
        if not lo < t_new < hi:
            t_new = 2.0 * t if math.isinf(hi) else 0.5 * (lo + hi)
        t = t_new
    return t


def bayes_teacher(data: GaussianMixture, train: TrainingSet) -> Fit:
    r"""The Bayes-optimal teacher of docs/theory.md on ``train``, in closed form (clean labels only:
    ``data.flip`` must be 0).

    With α = M/N: posterior mean v̂ = Σ_μ y_μ x_μ /(√N (Δ + α)), posterior variance s² = Δ/(Δ + α) per
    component, and the posterior log-odds h̃(x) = log(ρ/(1−ρ)) + 2 x·v̂/(√N (Δ + s²/N)), i.e.

        w̃ = 2 v̂/(Δ + s²/N),   b̃ = log(ρ/(1−ρ)).
    """
    if data.flip > 0.0:
        raise ValueError(
            f"GaussianMixture.flip must be 0 for the Bayes teacher, got {data.flip!r} (no closed "
            "form under label noise; use a LogisticTeacher)"
        )
    n, m = train.n, train.m
    alpha = m / n
    delta = data.delta
    v_hat = row_combination(train.x, train.y_hat, 1.0 / math.sqrt(n), np.empty(n)) / (delta + alpha)
    s2 = delta / (delta + alpha)
    w = 2.0 * v_hat / (delta + s2 / n)
    b = math.log(data.rho / (1.0 - data.rho))
    h = preact(train.x, w, b, 1.0 / math.sqrt(n), np.empty(m))
    loss, _, _ = line_derivs(train.y_hat, h, h, h, 0.0, 0.0, 1.0, 1.0)  # χ = 0: logistic loss of h
    return Fit(
        w=w,
        b=b,
        h=h,
        status="closed_form",
        iterations=0,
        cg_iterations=0,
        grad_norm=math.nan,
        train_loss=loss / m,
        train_error=float(np.mean(train.y_hat * h <= 0.0)),
    )


def fit_teacher(
    teacher: LogisticTeacher | BayesTeacher,
    train: TrainingSet,
    data: GaussianMixture | None = None,
    *,
    gtol: float = 1e-10,
    max_iter: int = 100,
) -> Fit:
    r"""Fit the teacher on ``train``.

    ``LogisticTeacher``: min Σ_μ log(1 + e^{−ŷ_μ h̃_μ}) + (λ̃/2)‖w̃‖² (:func:`newton_cg`, χ = 0) on
    the training labels ŷ = ``train.y_hat`` — the
    objective of scikit-learn's ``LogisticRegression(C=1/λ̃)`` on x/√N. ``BayesTeacher``: the closed
    form of :func:`bayes_teacher`, which needs the mixture ``data`` (ρ, Δ).
    """
    if isinstance(teacher, BayesTeacher):
        if not isinstance(data, GaussianMixture):
            raise ValueError("the Bayes teacher needs data=GaussianMixture(...) for ρ and Δ")
        return bayes_teacher(data, train)
    if not isinstance(teacher, LogisticTeacher):
        raise ValueError(
            f"teacher must be a LogisticTeacher or BayesTeacher, got {type(teacher).__name__}"
        )
    return newton_cg(
        train.x,
        train.y_hat,
        None,
        lam=teacher.lam,
        scale=1.0 / math.sqrt(train.n),
        gtol=gtol,
        max_iter=max_iter,
    )


def fit_student(
    student: Student,
    train: TrainingSet,
    ht: np.ndarray,
    subset: np.ndarray | None = None,
    *,
    gtol: float = 1e-10,
    max_iter: int = 100,
) -> Fit:
    r"""Fit the KD student on ``train`` given the teacher's training preactivations ``ht``.

    Minimises Σ_μ ℓ_KD(ŷ_μ, h̃_μ, h_μ) + (λ/2)‖w_S‖², h_μ = w_S·x_{μ,S}/√N + b, on the training
    labels ŷ = ``train.y_hat`` with ℓ_KD = (1−χ) log(1 + e^{−ŷh}) + χ H(sig(h̃/T), sig(h/T_s)) (χ, T,
    T_s = ``student.student_temperature``, λ from ``student``), over the coordinates S = ``subset`` (size round(ηN), see
    :func:`simulations.data.draw_subset`; may be omitted when round(ηN) = N). The returned ``w`` has
    length N with zeros off S.
    """
    if not isinstance(student, Student):
        raise ValueError(f"student must be a Student, got {type(student).__name__}")
    n, m = train.n, train.m
    k = subset_size(n, student.eta)
    if subset is None:
        if k != n:
            raise ValueError(
                f"subset is required when round(eta·n) = {k} < n = {n} (see draw_subset)"
            )
        subset = np.arange(n)
    subset = np.asarray(subset)
    if (
        subset.shape != (k,)
        or not np.issubdtype(subset.dtype, np.integer)
        or np.unique(subset).size != k
        or subset.min() < 0
        or subset.max() >= n
    ):
        raise ValueError(f"subset must hold {k} = round(eta·n) distinct indices in [0, {n})")
    ht = np.asarray(ht, dtype=np.float64)
    if ht.shape != (m,):
        raise ValueError(f"ht must have shape ({m},) (one teacher output per sample)")
    x = train.x if k == n else train.x[:, subset]  # a copy of ηMN values for a sparse student
    fit = newton_cg(
        x,
        train.y_hat,
        ht,
        lam=student.lam,
        chi=student.chi,
        temperature=student.temperature,
        student_temperature=student.student_temperature,
        scale=1.0 / math.sqrt(n),
        gtol=gtol,
        max_iter=max_iter,
    )
    if k == n:
        return fit
    w = np.zeros(n)
    w[subset] = fit.w
    return dataclasses.replace(fit, w=w)


def fit_gd(
    x: np.ndarray,
    y: np.ndarray,
    *,
    lam: float,
    steps: int,
    lr: float,
    w0: np.ndarray | None = None,
    b0: float = 0.0,
    scale: float | None = None,
) -> Fit:
    r"""``steps`` of full-batch gradient descent on the L2 logistic risk, from (w₀, b₀).

    θ_{t+1} = θ_t − γ ∇F(θ_t)/M with F(w, b) = Σ_μ log(1 + e^{−y_μ h_μ}) + (λ/2)‖w‖²,
    h_μ = s x_μ·w + b — the objective of :func:`fit_teacher` (:func:`newton_cg` with χ = 0), but
    with a fixed budget.  F is strictly convex for λ > 0, so as steps → ∞ (with γ below 2/L,
    L ≤ (s²‖x‖₂² / 4 + λ)/M + 1/4) every start reaches the same minimiser: only a finite budget can
    make the start matter.  ``status`` is ``"converged"`` if ‖∇F‖ ≤ 1e-10·M at the end,
    ``"diverged"`` if the iteration blew up (F, ∇F or θ non-finite, or s²‖w‖² + b² > 10¹⁰, e.g. γ far
    above 2/L): it stops there, keeps that iterate for diagnosis and reports NaN training loss and
    error; else ``"max_iter"``.

    Parameters
    ----------
    x : ndarray, shape (M, k)
        Inputs (finite).
    y : ndarray, shape (M,)
        Labels ±1 (any other value is refused).
    lam : float
        λ ≥ 0.
    steps : int
        Number of gradient steps (≥ 0).
    lr : float
        γ > 0.
    w0, b0 : ndarray of shape (k,) or None, float
        Start (default: zero).
    scale : float, optional
        s; defaults to 1/√k.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int ≥ 0, got {steps!r}")
    for name, value, ok, allowed in (
        ("lam", lam, lam >= 0.0, "[0, ∞)"),
        ("lr", lr, lr > 0.0, "(0, ∞)"),
    ):
        if not (ok and math.isfinite(value)):
            raise ValueError(f"{name} must be in {allowed}, got {value!r}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (M, k), got shape {x.shape}")
    m, k = x.shape
    if y.shape != (m,):
        raise ValueError(f"y must have shape ({m},), got {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x must be finite (it holds NaN or ±inf)")
    if not np.isin(y, (-1.0, 1.0)).all():
        bad = y[~np.isin(y, (-1.0, 1.0))][0]
        raise ValueError(f"y must hold labels ±1 only, got {float(bad):g}")
    theta = np.zeros(k + 1)
    if w0 is not None:
        w0 = np.asarray(w0, dtype=np.float64)
        if w0.shape != (k,):
            raise ValueError(f"w0 must have shape ({k},), got {w0.shape}")
        if not np.isfinite(w0).all():
            raise ValueError("w0 must be finite (it holds NaN or ±inf)")
        theta[:k] = w0
    if isinstance(b0, bool) or not isinstance(b0, int | float | np.number) or not math.isfinite(b0):
        raise ValueError(f"b0 must be a finite number, got {b0!r}")
    theta[k] = float(b0)
    if scale is not None and not (math.isfinite(scale) and scale > 0.0):
        raise ValueError(f"scale must be in (0, ∞), got {scale!r}")
    s = 1.0 / math.sqrt(k) if scale is None else float(scale)
    grad, h, curv, ht = np.empty(k + 1), np.empty(m), np.empty(m), np.zeros(m)
    diverged = False
    for it in range(steps + 1):
        data = loss_grad(x, y, ht, theta, theta[k], s, 0.0, 1.0, 1.0, grad, h, curv)
        grad[:k] += lam * theta[:k]
        size = s * s * (theta[:k] @ theta[:k]) + theta[k] ** 2
        if not (math.isfinite(data) and np.isfinite(grad).all() and size <= _Q_UNBOUNDED):
            diverged = True
            break
        if it == steps:
            break
        theta -= (lr / m) * grad
    gnorm = float(np.linalg.norm(grad))
    if diverged:
        status = "diverged"
    else:
        status = "converged" if gnorm <= 1e-10 * m else "max_iter"
    return Fit(
        w=theta[:k].copy(),
        b=float(theta[k]),
        h=h,
        status=status,
        iterations=it,
        cg_iterations=0,
        grad_norm=gnorm,
        train_loss=math.nan if diverged else data / m,
        train_error=math.nan if diverged else float(np.mean(y * h <= 0.0)),
    )


def _check_solver(gtol, max_iter) -> None:
    if not (isinstance(gtol, float | int) and 0.0 < gtol < 1.0):
        raise ValueError(f"gtol must be a real number in (0, 1), got {gtol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an int ≥ 1, got {max_iter!r}")

r"""Damped, Anderson-accelerated fixed-point iteration x ← G(x) for the small order-parameter vectors.

The residual of a step is the largest change of any component relative to max(1, |value|):
    res(x) = max_i |G(x)_i − x_i| / max(1, |G(x)_i|).
Anderson mixing (type II, memory m) works in coordinates scaled by max(1, |x_i|) so the least-squares
problem is well conditioned whatever the size of q.  A proposal that leaves the domain (``valid``
false) resets the history; a residual that grows tenfold over the best one so far, or that has not
improved on it for ``stall`` steps, resets it and halves the mixing weight.  ``continuation``
follows the fixed point along a path of ridges (with a secant predictor) when a direct solve fails.
``newton`` iterates x ← x − J⁻¹F(x) on an exact Jacobian (the kernels'), ``polish`` quasi-Newton steps
from a given (e.g. a coarser rule's) Jacobian with Broyden's updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class FixedPointResult:
    """Outcome of ``iterate``: the last iterate, its residual, the number of map evaluations."""

    x: np.ndarray
    residual: float
    iterations: int
    status: str  # "converged", "max_iter", "diverged"
    jacobian: np.ndarray | None = None  # J = DG − I used by ``polish``, for reuse at a neighbour
    note: str = ""  # why a continuation stopped short


def residual(x: np.ndarray, gx: np.ndarray) -> float:
    """max_i |G(x)_i − x_i| / max(1, |G(x)_i|)."""
    return float(np.max(np.abs(gx - x) / np.maximum(1.0, np.abs(gx))))


def iterate(
    g: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    *,
    tol: float,
    max_iter: int,
    valid: Callable[[np.ndarray], bool] = lambda x: True,
    memory: int = 6,
    mixing: float = 1.0,
    max_step: float = 4.0,
    blowup: float = 1e12,
    stall: int = 25,
) -> FixedPointResult:
    """Solve x = G(x) by Anderson-accelerated damped iteration.

    A step is shortened so that no component moves by more than ``max_step``·max(1, |x_i|)
    (a trust region that keeps a poor start from being thrown far away).  The history is also
    restarted with half the mixing weight when the best residual has not improved for ``stall``
    steps (the plain map can cycle between two states where the loss is stiff, e.g. T ≪ 1).
    Stops when the residual of the step is ≤ ``tol`` (status ``converged``; ``x`` is then G(x)),
    when ``max_iter`` maps have been evaluated (``max_iter``), or when the iterate is not finite or
    exceeds ``blowup`` in absolute value (``diverged``).
    """
    x = np.array(x0, dtype=float)
    xs: list[np.ndarray] = []
    fs: list[np.ndarray] = []
    beta = mixing
    best = np.inf
    best_it = 0
    res = np.inf
    for it in range(1, max_iter + 1):
        gx = g(x)
        if not np.all(np.isfinite(gx)) or np.max(np.abs(gx)) > blowup:
            return FixedPointResult(x, res, it, "diverged")
        res = residual(x, gx)
        if res <= tol:
            return FixedPointResult(gx, res, it, "converged")
        stalled = it - best_it >= stall  # no progress for ``stall`` steps (e.g. a 2-cycle)
        if res > 10.0 * best or stalled:  # the acceleration went astray: restart, mix less
            xs.clear()
            fs.clear()
            beta = max(0.5 * beta, 0.05)
            best = res if not stalled else best
            best_it = it
        if res < best:
            best, best_it = res, it
        xs.append(x)
        fs.append(gx - x)
        if len(xs) > memory + 1:
            xs.pop(0)
            fs.pop(0)
        x_new = x + beta * fs[-1]
        if len(xs) > 1:
            dx = np.diff(np.array(xs), axis=0).T
            df = np.diff(np.array(fs), axis=0).T
            w = 1.0 / np.maximum(1.0, np.abs(x))  # weight each component by its relative scale
            gamma = np.linalg.lstsq(w[:, None] * df, w * fs[-1], rcond=1e-12)[0]
            x_new = x_new - (dx + beta * df) @ gamma
        if not valid(x_new):
            xs.clear()
            fs.clear()
            x_new = x + beta * (gx - x)
            if not valid(x_new):
                x_new = gx
        jump = np.max(np.abs(x_new - x) / (max_step * np.maximum(1.0, np.abs(x))))
        if jump > 1.0:
            x_new = x + (x_new - x) / jump
        x = x_new
    return FixedPointResult(x, res, max_iter, "max_iter")


def describe(res: FixedPointResult, tol: float) -> str:
    """Why ``res`` is not converged: status, residual, the continuation's note, and a hint when the
    residual stalled just above ``tol`` (rounding noise in the map exceeds the tolerance there)."""
    out = f"{res.status}, residual {res.residual:.2e}"
    if res.note:
        out += f"; {res.note}"
    if res.status == "max_iter" and res.residual < 1e3 * tol:
        out += (
            f"; the residual stalls within 1000·tol = {1e3 * tol:.0e}: at this corner the map's "
            "own rounding noise exceeds tol, so a larger tol would accept the point"
        )
    return out


def bias_step(g: float, v_hat: float, spread2: float) -> float:
    """Newton step g/V̂ on the bias equation αΔE[f](b) = g = 0 (dg/db = −V̂), capped at
    1 + 3√(Δq), the spread of the preactivations (``spread2`` = Δq): where ℓ'' ≈ 0 (saturated
    labels, h far from 0) V̂ is tiny or 0 and the raw step would throw b far away.  At the fixed
    point the step vanishes, so the cap changes no solution."""
    cap = 1.0 + 3.0 * math.sqrt(max(spread2, 0.0))
    if v_hat > 0.0 and abs(g) < cap * v_hat:
        return g / v_hat
    if g == 0.0 or math.isnan(g):  # NaN passes through: the iteration reports it as diverged
        return g
    return math.copysign(cap, g)


def bias_capped(g: float, v_hat: float, spread2: float) -> bool:
    """Whether ``bias_step`` caps its step at this state (or g is NaN): the loss is flat where the
    fields are (V̂ ≈ 0) while the bias equation g = αΔE[f] = 0 fails.  A runaway bias, |b| ≫ the
    spread, is such a state, and its capped step is a tiny fraction of |b|, so a small relative
    change alone would pass it as converged; no true fixed point is capped (g = 0 there)."""
    cap = 1.0 + 3.0 * math.sqrt(max(spread2, 0.0))
    return g != 0.0 and not (v_hat > 0.0 and abs(g) < cap * v_hat)


def continuation(
    solve_at: Callable[[float, np.ndarray | None, np.ndarray | None], FixedPointResult],
    lam: float,
    *,
    start: float | None = None,
    steps: int = 8,
    floor: float = 1e-6,
    retries: int = 2,
    valid: Callable[[np.ndarray], bool] = lambda x: True,
    budget: float = math.inf,
) -> tuple[FixedPointResult, int]:
    """Reach the fixed point at ridge ``lam`` by geometric continuation from ``start`` (default
    max(1, 10 λ); if that fails, up to ``retries`` times 100× larger).

    ``solve_at(λ, x0, J)`` solves at λ from x0 (None: its own cold start), given the Jacobian
    J = DG − I of the last solution if it has one.  Each solve starts from the secant prediction through the last two solutions (in log λ) when that is ``valid``, else from the
    last; a failed step is halved, a successful one grows 1.5× (up to 1/``steps`` of the way).  λ = 0
    is reached through λ = ``floor``.  The walk gives up when the step falls below 1e-4 of the way
    or after ``budget`` map evaluations; the last result then has status "max_iter" (or its own) and
    a ``note`` saying how far it got.  Returns the last result and the number of map evaluations.
    """
    start = max(1.0, 10.0 * lam) if start is None else start
    target = math.log(max(lam, floor))
    res = solve_at(start, None, None)
    total = res.iterations
    for _ in range(retries):  # a larger ridge is easier (w → 0): start further up
        if res.status == "converged":
            break
        start *= 100.0
        res = solve_at(start, None, None)
        total += res.iterations
    if res.status != "converged":
        res.note = f"no fixed point even at the starting ridge {start:g} of the continuation"
        return res, total
    log_lam, span = math.log(start), target - math.log(start)
    x, jac, prev = res.x, res.jacobian, None  # prev: (log λ, x) of the solution before x
    step = span / steps
    while log_lam > target:
        trial = max(log_lam + step, target)
        x0 = x
        if prev is not None:  # secant predictor
            pred = x + (x - prev[1]) * (trial - log_lam) / (log_lam - prev[0])
            if np.all(np.isfinite(pred)) and valid(pred):
                x0 = pred
        res = solve_at(max(lam, floor) if trial <= target else math.exp(trial), x0, jac)
        total += res.iterations
        if res.status == "converged":
            prev, x, jac, log_lam = (log_lam, x), res.x, res.jacobian, trial
            step = max(1.5 * step, span / steps)  # (negative steps: max is the shorter one)
        else:
            step *= 0.5
            if abs(step) < 1e-4 * max(1.0, abs(span)) or total > budget:
                res.note = (
                    f"the continuation in the ridge stalled at {math.exp(log_lam):.3g} "
                    f"on its way from {start:g} to {lam:g}"
                )
                return res, total
    if lam < floor:  # the last hop from the floor to λ (= 0)
        res = solve_at(lam, x, jac)
        total += res.iterations
        if res.status != "converged":
            res.note = f"the last step of the continuation, from the ridge {floor:g} to 0, failed"
    return res, total


def polish(
    g: Callable[[np.ndarray], np.ndarray],
    x0: np.ndarray,
    *,
    tol: float,
    model: Callable[[np.ndarray], np.ndarray] | None = None,
    jacobian: np.ndarray | None = None,
    max_iter: int = 8,
    valid: Callable[[np.ndarray], bool] = lambda x: True,
    rel_step: float = 1e-7,
) -> FixedPointResult:
    """Quasi-Newton iteration x ← x − J⁻¹F(x) on F(x) = G(x) − x, J refined by Broyden updates.

    J is either given (e.g. from a neighbouring grid point) or DG_model(x0) − I by forward
    differences of a cheaper ``model`` map (n + 1 model evaluations, counted in ``iterations``).
    When J is close to the true DG − I (the model differs from G by a small quadrature error, or
    the neighbour is close), a few evaluations of G reach ``tol``; Broyden's rank-one updates
    J ← J + (y − J s)sᵀ/(sᵀs) make the convergence superlinear.  Status "max_iter" if they do not
    (the caller falls back to ``iterate``).
    """
    x = np.array(x0, dtype=float)
    n = x.shape[0]
    evals = 0
    if jacobian is None:
        g0 = model(x)
        jacobian = np.empty((n, n))
        for i in range(n):
            h = rel_step * max(1.0, abs(x[i]))
            xp = x.copy()
            xp[i] += h
            jacobian[:, i] = (model(xp) - g0) / h
        jacobian -= np.eye(n)
        evals = n + 1
    gx = g(x)
    evals += 1
    res = residual(x, gx) if np.all(np.isfinite(gx)) else np.inf
    for _ in range(max_iter):
        if res <= tol:
            return FixedPointResult(gx, res, evals, "converged", jacobian)
        if not np.isfinite(res):
            break
        f = gx - x
        try:
            dx = np.linalg.solve(jacobian, -f)
        except np.linalg.LinAlgError:
            break
        x_new = x + dx
        if not valid(x_new):
            break
        gx_new = g(x_new)
        evals += 1
        if not np.all(np.isfinite(gx_new)):
            break
        # Broyden's rank-one update: J s = y for the step just taken (superlinear convergence)
        y = (gx_new - x_new) - f
        jacobian = jacobian + np.outer(y - jacobian @ dx, dx) / (dx @ dx)
        x, gx = x_new, gx_new
        res = residual(x, gx)
    if res <= tol:
        return FixedPointResult(gx, res, evals, "converged", jacobian)
    return FixedPointResult(x, res, evals, "max_iter", jacobian)


def newton(
    equations: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
    x0: np.ndarray,
    *,
    tol: float,
    max_iter: int = 12,
    valid: Callable[[np.ndarray], bool] = lambda x: True,
    max_step: float = 4.0,
) -> FixedPointResult:
    """Newton's iteration x ← x − J⁻¹F(x) on the exact Jacobian J = ∂F/∂x.

    ``equations(x)`` returns (G(x), F(x), J): the map (for the residual, as in ``iterate``), the
    equations F = 0 at its fixed point, and their Jacobian.  Converges quadratically from a
    point close enough; a step is shortened to stay ``valid`` and within ``max_step``·max(1, |x_i|)
    per component.  Status "converged" (``x`` is then G(x)), "max_iter" when ``max_iter`` calls did
    not reach ``tol`` or the residual grew tenfold over its best (the caller falls back to
    ``iterate``), "diverged" on a non-finite value or an arithmetic exception in ``equations``.  The returned ``jacobian`` is the last J.
    """
    x = np.array(x0, dtype=float)
    best = np.inf
    res, jac = np.inf, None
    for it in range(1, max_iter + 1):
        try:
            gx, f, jac = equations(x)
        except (
            ArithmeticError,
            ValueError,
        ):  # a state the map cannot take: let the caller fall back
            return FixedPointResult(x, res, it, "diverged", None)
        if not (np.all(np.isfinite(gx)) and np.all(np.isfinite(jac))):
            return FixedPointResult(x, res, it, "diverged", None)
        res = residual(x, gx)
        if res <= tol:
            return FixedPointResult(gx, res, it, "converged", jac)
        if res > 10.0 * best:
            return FixedPointResult(x, res, it, "max_iter", jac)
        best = min(best, res)
        try:
            dx = np.linalg.solve(jac, -f)
        except np.linalg.LinAlgError:
            return FixedPointResult(x, res, it, "max_iter", jac)
        jump = np.max(np.abs(dx) / (max_step * np.maximum(1.0, np.abs(x))))
        if jump > 1.0:
            dx = dx / jump
        for _ in range(30):  # halve into the domain
            if valid(x + dx):
                break
            dx = 0.5 * dx
        x = x + dx
    return FixedPointResult(x, res, max_iter, "max_iter", jac)

r"""``replica.optimise``: the problem parameters that minimise the student's test error ε_g (or
its population cross-entropy, ``objective="ce"``).

Box-constrained quasi-Newton (scipy's L-BFGS-B) on exact gradients (``replica.gradient``), in the
coordinates z = log θ for the positive scales (λ, T, λ̃, α, Δ) and z = θ for the others, so that
dε_g/dz = θ dε_g/dθ there.  Each evaluation is one ``replica.solve`` warm-started from the last
solution (and one extra kernel call per map for the Jacobians).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from kdtheory.problem import (
    PARAMETERS,
    BayesTeacher,
    Problem,
    check_choice,
    check_instance,
    check_integer,
    check_real,
    refuse_covariance,
)
from replica.gradient import check_wrt, gradient
from replica.solver import Solution, solve

__all__ = ["DEFAULT_BOUNDS", "OptimiseResult", "optimise"]

#: bounds used for a parameter of ``over`` that ``bounds`` does not name
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "lam": (1e-4, 10.0),
    "lam_t": (1e-4, 10.0),
    "chi": (0.0, 1.0),
    "temperature": (0.05, 20.0),
    "eta": (0.05, 1.0),
}
_LOG = ("lam", "lam_t", "temperature", "alpha", "delta")
OBJECTIVES = ("eg", "ce")


def _check_bounds(problem: Problem, k: str, pair) -> tuple[float, float]:
    """``bounds[k]`` as (lo, hi): a pair of reals inside the parameter's own range (as the
    dataclasses check it; > 0 on the log scale of λ, T, λ̃, α, Δ) with lo < hi."""
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise ValueError(f"bounds[{k!r}] must be a pair (lo, hi), got {pair!r}")
    owner, name = PARAMETERS[k]
    lo_, hi_, lo_open, hi_open = type(getattr(problem, owner))._ranges[name]
    lo_open = lo_open or k in _LOG
    lo = check_real(f"bounds[{k!r}][0]", pair[0], lo_, hi_, lo_open, hi_open)
    hi = check_real(f"bounds[{k!r}][1]", pair[1], lo_, hi_, lo_open, hi_open)
    if not lo < hi:
        raise ValueError(f"bounds[{k!r}] must have lo < hi, got ({lo!r}, {hi!r})")
    return lo, hi


@dataclass(frozen=True)
class OptimiseResult:
    """Outcome of ``optimise``.

    ``problem``: the optimum; ``solution`` its ``replica.solve`` result; ``eg`` its ε_g;
    ``gradient_norm``: the largest |∂(objective)/∂z| over the parameters not held at a bound
    (z = log θ for λ, T, λ̃, α, Δ, else θ); ``solves``: ``replica.solve`` calls made; ``active``:
    parameter → "lower" or "upper" for those at a bound; ``success``/``message`` from L-BFGS-B;
    ``objective``: what was minimised ("eg" or "ce") and ``value`` its value at the optimum (the
    student's population cross-entropy ``ce`` of ``replica.population_loss`` for "ce").
    """

    problem: Problem
    solution: Solution
    eg: float
    gradient_norm: float
    solves: int
    active: Mapping[str, str]
    success: bool
    message: str
    objective: str = "eg"
    value: float = math.nan


def optimise(
    problem: Problem,
    over: Iterable[str] = ("lam", "chi", "temperature"),
    bounds: Mapping[str, tuple[float, float]] | None = None,
    objective: str = "eg",
    *,
    tol: float = 1e-12,
    max_iter: int = 200,
) -> OptimiseResult:
    r"""Minimise the student's ε_g (or population cross-entropy) over ``over`` within ``bounds``.

    L-BFGS-B on z (log θ for λ, T, λ̃, α, Δ), with ∂ε_g/∂z = θ ∂ε_g/∂θ from ``replica.gradient``
    (the implicit function theorem at the fixed point), starting from ``problem``'s values (clipped
    into the box).

    Parameters
    ----------
    problem : Problem
        The starting point; the parameters not in ``over`` stay fixed.
    over : iterable of str
        Flat names (``kdtheory.problem.PARAMETERS``) to optimise.
    bounds : mapping, optional
        name → (lo, hi); defaults from ``DEFAULT_BOUNDS`` (required for names not there).
    objective : str
        "eg" (the student's test error) or "ce" (its population cross-entropy
        Σ_y P(y) E log(1 + e^{−yh}) on fresh data, ``replica.population_loss``: the objective the
        λ path minimises on a validation set), with the exact gradient of ``replica.gradient``.
    tol : float
        Tolerance of each fixed-point solve.
    max_iter : int
        L-BFGS-B iterations.
    """
    check_instance("problem", problem, Problem)
    refuse_covariance(problem.data, "replica.optimise")
    if problem.multiclass:
        raise ValueError("problem must be binary for replica.optimise (K classes: not derived yet)")
    check_choice("objective", objective, OBJECTIVES)
    over = check_wrt(over, "over")
    check_real("tol", tol, 0.0, math.inf, True, True)
    check_integer("max_iter", max_iter, 1)
    if bounds is not None and not isinstance(bounds, Mapping):
        raise ValueError(f"bounds must be a mapping name → (lo, hi), got {bounds!r}")
    bounds = dict(bounds or {})
    box = []
    for k in over:
        if k == "lam_t" and isinstance(problem.teacher, BayesTeacher):
            raise ValueError("optimise: lam_t is not a parameter of the Bayes teacher")
        pair = bounds.pop(k, None) or DEFAULT_BOUNDS.get(k)
        if pair is None:
            raise ValueError(f"optimise: bounds must give (lo, hi) for {k!r}")
        lo, hi = _check_bounds(problem, k, pair)
        box.append((lo, hi))
    if bounds:
        raise ValueError(f"optimise: bounds name parameters not in over: {', '.join(bounds)}")
    is_log = np.array([k in _LOG for k in over])
    to_z = lambda th: np.where(is_log, np.log(np.where(is_log, th, 1.0)), th)  # noqa: E731
    to_theta = lambda z: np.where(is_log, np.exp(z), z)  # noqa: E731
    zbox = [
        (math.log(lo), math.log(hi)) if lg else (lo, hi)
        for (lo, hi), lg in zip(box, is_log, strict=False)
    ]
    theta0 = np.clip([problem.params[k] for k in over], *np.array(box).T)

    state = {"solves": 0, "last": None, "cache": {}}

    def evaluate(z):
        key = tuple(np.round(z, 15))
        if key in state["cache"]:
            return state["cache"][key]
        theta = to_theta(z)
        # clip into the box: exp(log θ) can leave it by a rounding error
        theta = np.clip(theta, *np.array(box).T)
        p = problem.replace(**dict(zip(over, map(float, theta), strict=False)))
        sol = solve(p, init=state["last"], tol=tol)
        state["solves"] += 1
        if not sol.converged and state["last"] is not None:
            sol = solve(p, tol=tol)
            state["solves"] += 1
        if not sol.converged:
            # worse than any classifier (ε_g = 1; CE = 1e3, a sign error of margin ~1e3): step back
            out = (1.0 if objective == "eg" else 1e3, np.zeros(len(over)), sol)
        else:
            state["last"] = sol
            g = gradient(sol, over).vector(objective)
            s = sol.student
            value = s.eg if objective == "eg" else float(p.data.cross_entropy(s.m, s.q, s.b))
            out = (value, np.where(is_log, theta * g, g), sol)
        state["cache"] = {key: out}
        return out

    res = minimize(
        lambda z: evaluate(z)[:2],
        to_z(theta0),
        jac=True,
        method="L-BFGS-B",
        bounds=zbox,
        options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-10},
    )
    value, g, sol = evaluate(res.x)
    active = {}
    for k, zk, (lo, hi), gk in zip(over, res.x, zbox, g, strict=False):
        if zk <= lo + 1e-10 * max(1.0, abs(lo)) and gk > 0:
            active[k] = "lower"
        elif zk >= hi - 1e-10 * max(1.0, abs(hi)) and gk < 0:
            active[k] = "upper"
    free = [abs(gk) for k, gk in zip(over, g, strict=False) if k not in active]
    return OptimiseResult(
        problem=sol.problem,
        solution=sol,
        eg=float(value if objective == "eg" else sol.student.eg if sol.converged else 1.0),
        gradient_norm=float(max(free, default=0.0)),
        solves=state["solves"],
        active=active,
        success=bool(res.success),
        message=str(res.message),
        objective=objective,
        value=float(value),
    )

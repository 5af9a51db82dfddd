r"""Grids of replica solutions: warm-started, parallel (joblib or Dask), journalled, resumable.

A sweep varies one or two parameters of a base ``Problem`` (names of ``kdtheory.problem.PARAMETERS``)
over an ``Axis`` each, solves every grid point with ``replica.solve`` and collects the quantities of
``QUANTITIES`` into an ``xarray.Dataset`` whose dimensions are the swept parameters.

* Variants: the same grid with some parameters changed, e.g. ``{"nokd": {"chi": 0}}``; their
  quantities carry the suffix ``_nokd``, and with that variant present ``gain = eg_nokd − eg``
  (the KD gain: error without KD minus error with KD).
* Optimisation: ``Optimise("lam", 1e-3, 10)`` (or several, e.g. over lam, chi and temperature)
  replaces each student solve by the minimum of the student's ε_g over them at that grid point
  (:func:`optimise_point`; reported as ``eg``, ``<name>_opt`` and ``<name>_at_bound``); variants
  are optimised separately, over the optimised parameters that they do not fix.
* Work is cut into short chunks of neighbouring points (snake order), each warm-started from its
  predecessor (continuation along the grid).  Chunks run on local joblib workers or, given a
  scheduler address, on a Dask cluster through joblib's dask backend.
* The driver appends every finished chunk to a journal (JSON lines, flushed and fsync'd); a rerun
  of the same sweep skips what the journal holds, so an interrupted run loses at most the chunks in
  flight.  Every journal line is validated before use (see :class:`kdtheory.journal.Journal`).
* A point that did not converge is stored with ``converged = 0``, NaN values, its ``status`` code
  and the solver's ``message``; an exception while solving one point is caught and stored the same
  way with status ``error``, so one bad point never stops a grid.  :func:`failure_summary` lists
  the failures by status with one example reason each.
* At most ``MAX_POINTS`` points per grid (checked before anything is built).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from kdtheory.journal import Journal, write_atomic
from kdtheory.problem import PARAMETERS, BayesTeacher, Problem, array_digest

__all__ = [
    "MAX_POINTS",
    "QUANTITIES",
    "STATUS_CODES",
    "Axis",
    "Optimise",
    "Sweep",
    "failure_summary",
    "open_journals",
    "optimise_point",
    "run_sweep",
    "simulate_points",
    "simulation_journal",
    "write_atomic",
]

#: status strings of ``replica.Solution`` and their integer codes in the data files; "error": the
#: solver raised an exception at that point (its message is stored)
STATUS_CODES = {"converged": 0, "max_iter": 1, "diverged": 2, "unbounded": 3, "singular": 4,
                "error": 5}  # fmt: skip

#: most points per grid: the driver keeps every point's record in memory (measured: ~1.7 KB of
#: Python objects and ~0.5 KB of journal per point and per variant, so ~0.9 GB and ~0.3 GB for
#: 250 000 points with a variant), and at tens of ms per solve that is hours of work on 2 cores;
#: split larger grids into several runs
MAX_POINTS = 250_000

#: per-point quantities: name → (description, function of a converged Solution)
QUANTITIES: dict[str, tuple[str, Callable]] = {
    "eg": ("student test error ε_g", lambda s: s.student.eg),
    "eg_teacher": ("teacher test error ε̃_g", lambda s: s.teacher.eg),
    "m": ("student overlap m = w·v/N", lambda s: s.student.m),
    "q": ("student norm q = ‖w‖²/N", lambda s: s.student.q),
    "b": ("student bias b", lambda s: s.student.b),
    "r": ("teacher–student overlap r = w·w̃/N", lambda s: s.student.r),
    "V": ("student susceptibility V", lambda s: s.student.V),
    "Vc": ("cross susceptibility V_c", lambda s: s.student.Vc),
    "m_teacher": ("teacher overlap m̃", lambda s: s.teacher.m),
    "q_teacher": ("teacher norm q̃", lambda s: s.teacher.q),
    "b_teacher": ("teacher bias b̃", lambda s: s.teacher.b),
    "agreement": ("test-time agreement of student and teacher", None),
    "train_loss": ("student training loss (mean ℓ_KD)", lambda s: s.student.train_loss),
    "train_error": ("student training error", lambda s: s.student.train_error),
}

#: the quantities a K-class point records (the others are matrices or binary-only: NaN there;
#: the matrices are in ``replica.solve``'s ``MulticlassSolution``)
MULTICLASS_QUANTITIES = frozenset({"eg", "eg_teacher", "train_loss", "train_error"})


@dataclass(frozen=True)
class Axis:
    """A swept parameter and its values.

    ``Axis.parse("lam_t:0.01:10:16:log")`` gives 16 log-spaced values from 0.01 to 10;
    ``Axis.parse("alpha:0.5:5:10")`` 10 linear ones; ``Axis.parse("chi=0,0.5,1")`` a list.
    A range needs finite start < stop (a reversed range is refused: give it in increasing order);
    a list is taken in the order given.
    """

    name: str
    values: tuple[float, ...]
    log: bool = False

    def __post_init__(self):
        if self.name not in PARAMETERS:
            raise ValueError(f"unknown parameter {self.name!r}; allowed: {', '.join(PARAMETERS)}")
        if len(self.values) == 0:
            raise ValueError(f"axis {self.name!r} has no values")
        if len(self.values) > MAX_POINTS:
            raise ValueError(
                f"axis {self.name!r} has {len(self.values)} values; at most {MAX_POINTS} points per "
                "grid (memory and time of the journal and the Dataset)"
            )
        if not all(math.isfinite(v) for v in self.values):
            raise ValueError(f"axis {self.name!r} has non-finite values")

    @classmethod
    def parse(cls, spec: str) -> Axis:
        """Parse ``name:start:stop:num[:log|lin]`` or ``name=v1,v2,…``."""
        if "=" in spec:
            name, _, rest = spec.partition("=")
            try:
                values = tuple(float(v) for v in rest.split(","))
            except ValueError:
                raise ValueError(f"bad value list in {spec!r}: expected name=v1,v2,…") from None
            return cls(name.strip(), values)
        parts = spec.split(":")
        if len(parts) not in (4, 5):
            raise ValueError(
                f"bad axis {spec!r}: expected name:start:stop:num[:log|lin] or name=v1,v2,…"
            )
        name, start, stop, num = parts[:4]
        scale = parts[4] if len(parts) == 5 else "lin"
        if scale not in ("log", "lin"):
            raise ValueError(f"bad scale {scale!r} in {spec!r}: expected log or lin")
        try:
            start, stop, num = float(start), float(stop), int(num)
        except ValueError:
            raise ValueError(
                f"bad numbers in {spec!r}: start and stop are reals, num an integer"
            ) from None
        if not (math.isfinite(start) and math.isfinite(stop)):
            raise ValueError(f"axis {name!r}: start and stop must be finite, got {spec!r}")
        if num < 1:
            raise ValueError(f"axis {name!r}: num must be ≥ 1, got {num}")
        if num > MAX_POINTS:
            raise ValueError(
                f"axis {name!r}: num must be ≤ {MAX_POINTS} (points per grid; memory and time of "
                f"the journal and the Dataset), got {num}"
            )
        if num > 1 and not start < stop:
            raise ValueError(
                f"axis {name!r}: start must be < stop, got {start:g} ≥ {stop:g} "
                "(give a range in increasing order)"
            )
        if scale == "log":
            if start <= 0 or stop <= 0:
                raise ValueError(f"axis {name!r}: a log range needs start, stop > 0")
            values = np.geomspace(start, stop, num)
        else:
            values = np.linspace(start, stop, num)
        return cls(name, tuple(float(v) for v in values), scale == "log")


@dataclass(frozen=True)
class Optimise:
    """Minimise the student's ε_g over one student parameter (lam, chi or temperature) in [lo, hi]
    at every grid point; log scale for lam and temperature."""

    name: str
    lo: float
    hi: float

    def __post_init__(self):
        allowed = {"lam": (0.0, math.inf), "chi": (0.0, 1.0), "temperature": (0.0, math.inf)}
        if self.name not in allowed:
            raise ValueError(f"can optimise over {', '.join(allowed)}, not {self.name!r}")
        a, b = allowed[self.name]
        lo_ok = self.lo > 0 if self.log else self.lo >= a
        if not (lo_ok and self.lo < self.hi <= b and math.isfinite(self.hi)):
            need = "0 < lo < hi < ∞ (log scale)" if self.log else f"{a:g} ≤ lo < hi ≤ {b:g}"
            raise ValueError(f"optimisation range {self.name}:lo:hi needs {need}, got "
                             f"lo={self.lo:g}, hi={self.hi:g}")  # fmt: skip

    @property
    def log(self) -> bool:
        return self.name in ("lam", "temperature")

    @classmethod
    def parse(cls, spec: str) -> Optimise:
        """``lam`` (default range 1e-4…10), ``lam:1e-3:1``, ``chi``, ``temperature:0.2:20``."""
        defaults = {"lam": (1e-4, 10.0), "chi": (0.0, 1.0), "temperature": (0.1, 20.0)}
        parts = spec.split(":")
        name = parts[0]
        if name not in defaults:
            raise ValueError(f"can optimise over {', '.join(defaults)}, not {name!r}")
        if len(parts) == 1:
            return cls(name, *defaults[name])
        if len(parts) != 3:
            raise ValueError(f"bad optimisation {spec!r}: expected name or name:lo:hi")
        try:
            lo, hi = float(parts[1]), float(parts[2])
        except ValueError:
            raise ValueError(f"bad numbers in {spec!r}: lo and hi are reals") from None
        return cls(name, lo, hi)


@dataclass(frozen=True)
class Sweep:
    """What to compute: a base problem, one or two axes, variants and optional optimisations
    (one :class:`Optimise` or a tuple of them, stored as a tuple; distinct names, none swept)."""

    base: Problem
    axes: tuple[Axis, ...]
    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    optimise: Optimise | tuple[Optimise, ...] | None = None
    tol: float = 1e-10

    def __post_init__(self):
        if not 1 <= len(self.axes) <= 2:
            raise ValueError(f"a sweep has one or two axes, got {len(self.axes)}")
        names = [a.name for a in self.axes]
        if len(set(names)) != len(names):
            raise ValueError(f"the same parameter appears twice: {names}")
        opts = self.optimise
        opts = () if opts is None else (opts,) if isinstance(opts, Optimise) else tuple(opts)
        object.__setattr__(self, "optimise", opts)
        opt_names = [o.name for o in opts]
        if len(set(opt_names)) != len(opt_names):
            raise ValueError(f"the same parameter is optimised twice: {opt_names}")
        for name in opt_names:
            if name in names:
                raise ValueError(f"cannot both sweep and optimise {name!r}")
        n_points = math.prod(self.shape)
        if n_points > MAX_POINTS:
            raise ValueError(
                f"the grid has {n_points} points; at most {MAX_POINTS} per grid (memory and time "
                "of the journal and the Dataset): split it into several runs"
            )
        # the fields are checked independently, so each axis value and each variant is checked once
        # (not every grid point): every grid point is then a valid Problem
        for a in self.axes:
            for v in sorted(set(a.values)):
                self.base.replace(**{a.name: v})
        for changes in self.variants.values():
            self.base.replace(**changes)

    def optimised(self, variant: str | None = None) -> tuple[Optimise, ...]:
        """The parameters optimised at each point of ``variant`` (those it does not fix)."""
        fixed = self.variants[variant] if variant is not None else {}
        return tuple(o for o in self.optimise if o.name not in fixed)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.values) for a in self.axes)

    def problem(self, index: Sequence[int], variant: str | None = None) -> Problem:
        changes = {a.name: a.values[i] for a, i in zip(self.axes, index, strict=True)}
        if variant is not None:
            changes.update(self.variants[variant])
        return self.base.replace(**changes)

    def problems(self) -> Iterable[Problem]:
        for index in np.ndindex(*self.shape):
            yield self.problem(index)
            for v in self.variants:
                yield self.problem(index, v)

    def fingerprint(self) -> str:
        """A hash of everything that determines the results (used to match a journal)."""
        desc = json.dumps(self.describe(), sort_keys=True)
        return hashlib.sha256(desc.encode()).hexdigest()[:16]

    def describe(self) -> dict:
        """What determines the results.  Label noise θ = 0 (unless swept) and the default
        ``tempered="both"`` are left out, so a sweep without them keeps the fingerprint it had
        before they existed (and its journal stays valid); a covariance enters as its
        ``Spectrum.digest``."""
        base = {k: v for k, v in self.base.params.items() if not math.isnan(v)}
        if base.get("flip") == 0.0:
            del base["flip"]
        out = {
            "teacher": "bayes" if isinstance(self.base.teacher, BayesTeacher) else "logistic",
            "base": base,
            "axes": [[a.name, list(a.values), a.log] for a in self.axes],
            "variants": self.variants,
            "optimise": _describe_optimise(self.optimise),
            "tol": self.tol,
        }  # fmt: skip
        if self.base.student.tempered != "both":
            out["tempered"] = self.base.student.tempered
        if self.base.data.covariance is not None:  # Σ by its content hash (Δ = tr Σ/N is in base)
            out["covariance"] = self.base.data.covariance.digest
        if self.base.multiclass:  # K classes: the matrix and vector parameters by their bytes
            d = self.base.data
            out["teacher"] = type(self.base.teacher).__name__
            out["multiclass"] = {"K": d.K, "gram": array_digest(d.gram), "rho": array_digest(d.rho)}
        return out

    def quantity_names(self) -> list[str]:
        base = [*QUANTITIES, "converged", "status", "residual", "iterations"]
        names = base + _optimised_names(self.optimised())
        for v in self.variants:
            names += [f"{q}_{v}" for q in base + _optimised_names(self.optimised(v))]
        if "nokd" in self.variants:
            names.append("gain")
        return names

    def message_names(self) -> list[str]:
        """Per-point string fields: the solver's message ("" where converged), per variant."""
        return ["message", *[f"message_{v}" for v in self.variants]]

    def journal(
        self, path: str | os.PathLike, *, wait: bool = False, fix: str = "choose another --out"
    ) -> Journal:
        """The journal of this sweep at ``path`` (locked; records validated, see :func:`_validator`)."""
        return Journal(path, self.fingerprint(), {"sweep": self.describe()},
                       validate=_validator(self), lock=True, wait=wait, fix=fix)  # fmt: skip

    def snake(self) -> list[tuple[int, ...]]:
        """Grid indices in snake order: neighbours in the list are neighbours on the grid."""
        if len(self.shape) == 1:
            return [(i,) for i in range(self.shape[0])]
        rows, cols = self.shape
        out = []
        for i in range(rows):
            js = range(cols) if i % 2 == 0 else range(cols - 1, -1, -1)
            out += [(i, j) for j in js]
        return out


def _describe_optimise(opts: tuple[Optimise, ...]) -> list | None:
    """None, ``[name, lo, hi]`` for one optimised parameter (as before several were allowed, so a
    single-optimise sweep keeps its fingerprint), or a list of them."""
    rows = [[o.name, o.lo, o.hi] for o in opts]
    return None if not rows else rows[0] if len(rows) == 1 else rows


def _optimised_names(opts: tuple[Optimise, ...]) -> list[str]:
    return [f"{o.name}{k}" for o in opts for k in ("_opt", "_at_bound")]


# ----------------------------------------------------------------------------- evaluation


def _record(sol, prefix: str = "") -> dict[str, float]:
    """The quantities of one solution (NaN where it did not converge)."""
    import replica

    out = {}
    multiclass = sol.problem.multiclass
    for name, (_, fn) in QUANTITIES.items():
        if not sol.converged or (multiclass and name not in MULTICLASS_QUANTITIES):
            out[name + prefix] = math.nan
        elif name == "agreement":
            out[name + prefix] = replica.agreement(sol)
        else:
            out[name + prefix] = float(fn(sol))
    out["converged" + prefix] = int(sol.converged)
    out["status" + prefix] = STATUS_CODES.get(sol.status, 1)
    out["residual" + prefix] = float(sol.residual)
    out["iterations" + prefix] = int(sol.iterations)
    out["message" + prefix] = "" if sol.converged else (sol.message or sol.status)
    return out


def _error_record(exc: Exception, prefix: str = "") -> dict:
    """The record of a point whose solve raised ``exc``: NaN values, status "error", its message."""
    out: dict = {name + prefix: math.nan for name in QUANTITIES}
    out |= {"converged" + prefix: 0, "status" + prefix: STATUS_CODES["error"],
            "residual" + prefix: math.nan, "iterations" + prefix: 0,
            "message" + prefix: _describe(exc)}  # fmt: skip
    return out


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _solve_optimised(problem: Problem, opt: Optimise, init, tol: float):
    """min over the optimised parameter of the student's ε_g: a coarse scan (9 points, warm-started),
    then a bounded Brent search around the best point.  Returns (solution, argmin).  A value whose
    solve raises counts as +∞; a scan where no warm-started solve converges is repeated cold (so a
    converged solution always comes with its argmin); if none converges, the last attempt is
    returned with a NaN argmin (or raises)."""
    from scipy.optimize import minimize_scalar

    import replica

    to_x = (lambda v: math.log(v)) if opt.log else (lambda v: v)
    from_x = (lambda x: math.exp(x)) if opt.log else (lambda x: x)
    lo, hi = to_x(opt.lo), to_x(opt.hi)
    best = {"eg": math.inf, "sol": None, "x": None}
    cache = {}
    state = {"init": init}

    def eg(x):
        if x in cache:
            return cache[x]
        try:
            sol = replica.solve(
                problem.replace(**{opt.name: from_x(x)}), init=state["init"], tol=tol
            )
        except Exception:  # one bad value of the parameter: not a minimum (the scan goes on)
            cache[x] = math.inf
            return math.inf
        value = sol.student.eg if sol.converged else math.inf
        if sol.converged:
            state["init"] = sol
            if value < best["eg"]:
                best.update(eg=value, sol=sol, x=x)
        cache[x] = value
        return value

    grid = np.linspace(lo, hi, 9)
    values = [eg(x) for x in grid]
    if best["sol"] is None and init is not None:  # a warm start that fails everywhere: scan cold
        cache.clear()
        state["init"] = None
        values = [eg(x) for x in grid]
    k = int(np.argmin(values))
    if math.isfinite(values[k]):
        a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
        xatol = 1e-3 * (hi - lo)
        minimize_scalar(eg, bounds=(a, b), method="bounded", options={"xatol": xatol})
    if best["sol"] is None:  # nothing converged: report the last attempt as it is
        sol = replica.solve(problem.replace(**{opt.name: from_x(grid[k])}), tol=tol)
        return sol, math.nan
    return best["sol"], from_x(best["x"])


def at_bound(value: float, opt: Optimise) -> bool:
    """True if an optimum lies on (within 1e-3 of) the edge of its search range."""
    x = math.log(value) if opt.log else value
    lo, hi = (math.log(opt.lo), math.log(opt.hi)) if opt.log else (opt.lo, opt.hi)
    return min(x - lo, hi - x) <= 1e-3 * (hi - lo)


def optimise_point(
    problem: Problem,
    opts: Sequence[Optimise],
    init=None,
    tol: float = 1e-10,
    starts: Sequence[dict[str, float]] = (),
):
    """min of the student's ε_g over the parameters ``opts`` (each in its box), others fixed.

    One parameter: a coarse scan and bounded Brent (:func:`_solve_optimised`).  Several:
    ``replica.optimise`` where the package has it (exact gradients), else :func:`_solve_jointly`
    (derivative-free), from the best of the problem's own values and ``starts`` (values of the
    parameters, e.g. a known optimum on a face of the box: χ = 0 with its best λ; only those of
    ``opts`` are taken, and a start outside the box is skipped).
    Returns (solution at the optimum, {name: argmin}); NaN argmins if no solve converged (the
    solution is then the last attempt).
    """
    import replica

    opts = tuple(opts)
    if len(opts) == 1:
        sol, arg = _solve_optimised(problem, opts[0], init, tol)
        return sol, {opts[0].name: arg}
    best = math.inf
    inside = [{o.name: x[o.name] for o in opts if o.name in x} for x in starts]
    inside = [x for x in inside if all(o.lo <= x.get(o.name, o.lo) <= o.hi for o in opts)]
    for start in [{}, *inside]:  # the best start in the box (a failing one is skipped)
        candidate = problem.replace(**start)
        with contextlib.suppress(Exception):
            sol = replica.solve(candidate, init=init, tol=tol)
            if sol.converged and sol.student.eg < best:
                best, problem = sol.student.eg, candidate
    joint = getattr(replica, "optimise", None)  # exact-gradient optimiser, where the package has it
    if callable(joint):
        res = joint(problem, over=tuple(o.name for o in opts),
                    bounds={o.name: (o.lo, o.hi) for o in opts}, objective="eg", tol=tol)  # fmt: skip
        if not res.solution.converged:
            return res.solution, dict.fromkeys((o.name for o in opts), math.nan)
        return res.solution, {o.name: float(res.problem.params[o.name]) for o in opts}
    return _solve_jointly(problem, opts, init, tol)


def _solve_jointly(problem: Problem, opts: tuple[Optimise, ...], init, tol: float):
    """Derivative-free joint minimum of ε_g: coordinates x = log v (lam, temperature) or v (chi);
    from the problem's own values (clipped to the box) a coarse scan of 5 points along each
    coordinate in turn (two passes) moves to the best if it improves (a plateau does not move it),
    then bounded Powell (xtol 1e-3 of each box width,
    ftol 1e-8, at most 250 solves) polishes.  Every solve is warm-started from the last converged
    one; a solve that fails or raises counts as ε_g = +∞."""
    from scipy.optimize import minimize

    import replica

    lo = np.array([math.log(o.lo) if o.log else o.lo for o in opts])
    hi = np.array([math.log(o.hi) if o.log else o.hi for o in opts])
    width = hi - lo
    state = {"init": init, "best": None, "x": None}
    cache: dict = {}

    def point(x):
        return problem.replace(**{o.name: (math.exp(v) if o.log else float(v))
                                  for o, v in zip(opts, x, strict=True)})  # fmt: skip

    def eg(u):  # u ∈ [0, 1]^d: the box rescaled, so Powell's tolerances are per coordinate
        x = lo + width * np.clip(u, 0.0, 1.0)
        key = tuple(np.round(x, 12))
        if key in cache:
            return cache[key]
        try:
            sol = replica.solve(point(x), init=state["init"], tol=tol)
        except Exception:  # one bad point: not a minimum
            sol = None
        value = sol.student.eg if sol is not None and sol.converged else math.inf
        if math.isfinite(value):
            state["init"] = sol
            if state["best"] is None or value < state["best"].student.eg:
                state["best"], state["x"] = sol, x.copy()
        cache[key] = value
        return value

    start = np.array([problem.params[o.name] for o in opts], dtype=float)
    start = np.array([math.log(v) if o.log else v for o, v in zip(opts, start, strict=True)])
    u = np.clip((start - lo) / width, 0.0, 1.0)
    for k in [*range(len(opts))] * 2:  # coordinate scans, two passes; move on strict improvement
        here, values = eg(u), []
        for g in np.linspace(0.0, 1.0, 5):
            v = u.copy()
            v[k] = g
            values.append((eg(v), g))
        value, g = min(values)
        if value < here:
            u[k] = g
    if state["best"] is not None:
        u = np.clip((state["x"] - lo) / width, 0.0, 1.0)
        minimize(eg, u, method="Powell", bounds=[(0.0, 1.0)] * len(opts),
                 options={"xtol": 1e-3, "ftol": 1e-8, "maxfev": 250})  # fmt: skip
    if state["best"] is None:  # nothing converged: report the last attempt as it is
        return replica.solve(point(lo + width * u), tol=tol), {o.name: math.nan for o in opts}
    x = state["x"]
    return state["best"], {o.name: (math.exp(v) if o.log else float(v))
                           for o, v in zip(opts, x, strict=True)}  # fmt: skip


def _evaluate(sweep: Sweep, index, inits: dict) -> dict:
    """All quantities at one grid point (with variants); ``inits`` carries the warm starts.

    An exception from the solver is caught and recorded (status "error" and its message)."""
    import replica

    record: dict = {}
    starts: list[dict] = []  # the optima found so far: starts of the next searches
    for variant in [*sweep.variants, None]:
        p = sweep.problem(index, variant)
        suffix = "" if variant is None else f"_{variant}"
        opts = sweep.optimised(variant)
        init = inits.get(variant)
        if init is not None and not init.converged:
            init = None
        try:
            if not opts:
                sol = replica.solve(p, init=init, tol=sweep.tol)
            else:
                sol, args = optimise_point(p, opts, init, sweep.tol, starts)
                for o in opts:
                    record[f"{o.name}_opt{suffix}"] = args[o.name]
                    record[f"{o.name}_at_bound{suffix}"] = int(
                        math.isfinite(args[o.name]) and at_bound(args[o.name], o)
                    )
        except Exception as exc:  # one point must not stop the grid
            record.update(_error_record(exc, suffix))
            for o in opts:
                record[f"{o.name}_opt{suffix}"] = math.nan
                record[f"{o.name}_at_bound{suffix}"] = 0
            inits.pop(variant, None)
            continue
        if sol.converged:
            inits[variant] = sol
            if opts:
                starts.append({o.name: p.params[o.name] for o in sweep.optimise} | args)
        record.update(_record(sol, suffix))
    if "nokd" in sweep.variants:
        record["gain"] = record["eg_nokd"] - record["eg"]
    return record


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_index(index: list, shape: tuple[int, ...]) -> None:
    if len(index) != len(shape) or not all(0 <= i < n for i, n in zip(index, shape, strict=True)):
        raise ValueError(f"index {index} outside the grid of shape {shape}")


def _validator(sweep: Sweep) -> Callable[[dict], None]:
    """``validate(record)`` for the sweep's journal: the index lies on the grid, the values are
    exactly the sweep's quantities (messages optional), numbers where numbers belong, and the
    integer fields (converged, status, iterations, at_bound) are ints in their ranges."""
    numbers = set(sweep.quantity_names())
    strings = set(sweep.message_names())
    allowed = {"converged": {0, 1}, "status": set(STATUS_CODES.values()), "_at_bound": {0, 1}}

    def validate(record: dict) -> None:
        _check_index(record["index"], sweep.shape)
        values = record["values"]
        if not numbers <= set(values) <= numbers | strings:
            raise ValueError("not the fields of this sweep")
        for k, v in values.items():
            if k in strings:
                if not isinstance(v, str):
                    raise ValueError(f"{k} must be a string")
                continue
            if not _is_number(v):
                raise ValueError(f"{k} must be a number")
            kind = "_at_bound" if "_at_bound" in k else k.split("_")[0]
            if kind in allowed and v not in allowed[kind]:
                raise ValueError(f"{k} = {v} out of range")
            if kind == "iterations" and not (isinstance(v, int) and v >= 0):
                raise ValueError(f"{k} must be an int ≥ 0")
        _check_point_values(sweep, values)

    return validate


def _check_point_values(sweep: Sweep, values: dict) -> None:
    """The values of one grid point, per variant (suffix): ``converged`` = 1 exactly where
    ``status`` is "converged" (0), then every quantity in its range (``kdtheory.journal.
    check_values``), finite where converged; ``gain`` = ε_g(nokd) − ε_g where both converged."""
    from kdtheory.journal import check_values, quantity_range

    suffixes = ["", *[f"_{v}" for v in sweep.variants]]
    for suffix, variant in zip(suffixes, [None, *sweep.variants], strict=True):
        converged = values["converged" + suffix] == 1
        if converged != (values["status" + suffix] == STATUS_CODES["converged"]):
            raise ValueError(f"converged{suffix} and status{suffix} disagree")
        names = [*QUANTITIES, "residual", *(f"{o.name}_opt" for o in sweep.optimised(variant))]
        check_values(values, {n + suffix: quantity_range(n) for n in names}, ok=converged)
    if "gain" in values:
        both = values["converged"] == 1 and values["converged_nokd"] == 1
        check_values(values, {"gain": quantity_range("gain")}, ok=both)
        if both and abs(values["gain"] - (values["eg_nokd"] - values["eg"])) > 1e-12:
            raise ValueError("gain is not eg_nokd − eg")  # 1e-12: one rounding of a difference


def _run_chunk(sweep: Sweep, indices: list[tuple[int, ...]]) -> list[tuple[tuple[int, ...], dict]]:
    """Solve a chunk of neighbouring points in order, each warm-started from the previous one."""
    _single_thread()
    inits: dict = {}
    return [(tuple(int(i) for i in index), _evaluate(sweep, index, inits)) for index in indices]


def _exit_with_driver(driver: int, period: float = 0.5) -> None:
    """Worker initializer: a daemon thread ends this worker once its driver (process ``driver``)
    is gone, e.g. after ``kill -9`` (otherwise loky's idle workers linger for minutes)."""

    def watch():
        while os.getppid() == driver:
            time.sleep(period)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-driver").start()


@contextlib.contextmanager
def _local_workers() -> Iterator[None]:
    """Local joblib (loky) workers that exit when the driver dies."""
    from joblib import parallel_config

    with parallel_config(backend="loky", initializer=_exit_with_driver, initargs=(os.getpid(),)):
        yield


def _single_thread():
    """Workers share the machine: keep numba and BLAS to one thread each."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):
        pass


def open_journals(
    stack: contextlib.ExitStack, sweeps: dict[str, Sweep], out: Path, *, wait: bool, fix: str
) -> dict[str, Journal]:
    """The journal ``<out>/<stem>.journal.jsonl`` of every named sweep, opened (locked, records
    validated) before any work and closed when ``stack`` closes."""
    return {
        stem: stack.enter_context(sweep.journal(out / f"{stem}.journal.jsonl", wait=wait, fix=fix))
        for stem, sweep in sweeps.items()
    }


def to_dataset(sweep: Sweep, done: dict) -> xr.Dataset:
    """The journal's records as a Dataset over the swept parameters."""
    names = sweep.quantity_names()
    data = {n: np.full(sweep.shape, np.nan) for n in names}
    data |= {n: np.full(sweep.shape, "", dtype=object) for n in sweep.message_names()}
    for index, values in done.items():
        for n in data:
            v = values.get(n)
            if v is not None:
                data[n][index] = v
    coords = {a.name: list(a.values) for a in sweep.axes}
    dims = [a.name for a in sweep.axes]
    ds = xr.Dataset({n: (dims, arr) for n, arr in data.items()}, coords=coords)
    for n in sweep.message_names():
        ds[n].attrs["long_name"] = "why the point did not converge (empty where it did)"
    for n in list(ds):
        if n.split("_")[0] in ("converged", "status", "iterations") or "_at_bound" in n:
            ds[n] = ds[n].fillna(-1).astype(np.int32)  # −1: not computed
    for n, (desc, _) in QUANTITIES.items():
        for suffix in ["", *[f"_{v}" for v in sweep.variants]]:
            if n + suffix in ds:
                ds[n + suffix].attrs["long_name"] = desc + (
                    "" if not suffix else f" ({suffix[1:]})"
                )
    for n in [k for k in ds if k.startswith("status")]:
        ds[n].attrs.update(
            flag_values=list(STATUS_CODES.values()), flag_meanings=" ".join(STATUS_CODES)
        )
    if "gain" in ds:
        ds["gain"].attrs["long_name"] = "KD gain ε_g(χ = 0) − ε_g"
    desc = sweep.describe()
    ds.attrs.update(
        teacher=desc["teacher"],
        tempered=sweep.base.student.tempered,
        fixed=json.dumps({k: v for k, v in sweep.base.params.items() if not math.isnan(v)}),
        variants=json.dumps(desc["variants"]),
        optimise=json.dumps(desc["optimise"]),
        tol=sweep.tol,
        fingerprint=sweep.fingerprint(),
    )
    return ds


# ----------------------------------------------------------------------------- driver


def run_sweep(
    sweep: Sweep,
    journal_path: str | os.PathLike | Journal | None = None,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    chunk: int = 16,
    progress: bool = True,
    description: str = "grid",
) -> xr.Dataset:
    """Solve every point of ``sweep`` and return the Dataset.

    With ``journal_path`` (a path, or a journal from :meth:`Sweep.journal`, which the caller then
    closes) finished chunks are journalled and a rerun resumes.  ``jobs`` local joblib workers
    (loky; they exit if the driver dies), or the Dask cluster at ``scheduler`` (``tcp://host:port``)
    through joblib's dask backend.  ``chunk`` points per task, warm-started in sequence.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be ≥ 1, got {jobs}")
    if isinstance(journal_path, Journal) and journal_path.fingerprint != sweep.fingerprint():
        raise ValueError(f"{journal_path.path} is not the journal of this sweep")
    if journal_path is None or isinstance(journal_path, Journal):
        return _run_sweep(sweep, journal_path, jobs, scheduler, chunk, progress, description)
    with sweep.journal(journal_path) as journal:
        return _run_sweep(sweep, journal, jobs, scheduler, chunk, progress, description)


def _run_sweep(sweep, journal, jobs, scheduler, chunk, progress, description) -> xr.Dataset:
    from joblib import Parallel, delayed, parallel_backend
    from tqdm import tqdm  # not tqdm.auto: no IProgress warning in notebooks

    done = dict(journal.done) if journal else {}
    order = sweep.snake()
    todo = [i for i in order if i not in done]
    # chunks of neighbours (≤ ``chunk`` points), at least two per worker so the load balances
    n_tasks = max(math.ceil(len(todo) / chunk), min(len(todo), 2 * jobs), 1)
    size = max(math.ceil(len(todo) / n_tasks), 1)
    chunks = [todo[k : k + size] for k in range(0, len(todo), size)]
    bar = tqdm(total=len(order), initial=len(done), desc=description, unit="pt", disable=not progress,
               leave=False)  # fmt: skip

    def collect(results):
        if journal:
            journal.append(results)
        done.update(dict(results))
        bar.update(len(results))

    try:
        if scheduler is not None:
            from dask.distributed import Client

            with Client(scheduler) as client, parallel_backend("dask"):
                client.wait_for_workers(1, timeout=60)
                tasks = (delayed(_run_chunk)(sweep, c) for c in chunks)
                for results in Parallel(n_jobs=-1, return_as="generator_unordered")(tasks):
                    collect(results)
        elif jobs == 1 or len(chunks) <= 1:
            for c in chunks:
                collect(_run_chunk(sweep, c))
        else:
            tasks = (delayed(_run_chunk)(sweep, c) for c in chunks)
            with _local_workers():
                for results in Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks):
                    collect(results)
    finally:
        bar.close()
    return to_dataset(sweep, done)


# ----------------------------------------------------------------------------- simulation overlay

#: simulated quantities stored next to the theory (mean and standard error over seeds)
SIM_FIELDS = (
    ("eg", "student"),
    ("eg_teacher", "teacher"),
    ("r", "student"),
    ("agreement", "student"),
)


SIM_KEYS = (*[f"{q}_sim{s}" for q, _ in SIM_FIELDS for s in ("", "_sem")], "sim_failed")


_NOTHING = object()  # map_points: no ``shared`` object
_WORKER: dict = {"shared": None, "slot": 0}  # this process's shared object and task slot


def worker_slot() -> int:
    """The slot of the task running in this process: on ``jobs`` local workers each running task
    of :func:`map_points` holds its own slot in 0 … jobs − 1 (a device per slot, for example);
    0 in the driver and on a Dask worker (which owns its devices: one worker per GPU)."""
    return _WORKER["slot"]


def _init_worker(driver: int, shared) -> None:
    """Local worker initializer: exit with the driver, one thread, the shared object kept."""
    _exit_with_driver(driver)
    _single_thread()
    _WORKER["shared"] = shared


def _call(task: Callable, item, slot: int, with_shared: bool):
    _WORKER["slot"] = slot
    return task(_WORKER["shared"], item) if with_shared else task(item)


@dataclass(frozen=True)
class _Box:
    """One object for ``client.scatter`` (which would scatter a dict or list item by item)."""

    value: object


def _call_dask(task: Callable, box: _Box | None, item):
    _single_thread()
    return task(item) if box is None else task(box.value, item)


def map_points(
    task: Callable, todo: list, jobs: int = 1, *, scheduler: str | None = None, shared=_NOTHING
) -> Iterator:
    """``task(item)`` for every item of ``todo``, in completion order — the one runner of every
    grid of independent cells (figure sets' points, neural experiments' training runs).

    In this process when ``jobs`` is 1 (or there is one item) and no ``scheduler``; on ``jobs``
    local worker processes (loky; one thread each; they exit if the driver dies); or on the Dask
    distributed cluster at ``scheduler`` (``tcp://host:port``).  With ``shared``, ``task(shared,
    item)`` is called instead, and ``shared`` (a teacher, a data set) travels once per worker —
    in the initializer of a local worker, by ``client.scatter(broadcast=True)`` to a Dask worker —
    instead of once per item.  Local workers run at most ``jobs`` items at once, each under its
    own :func:`worker_slot`.  ``task`` must catch its own errors: an exception ends the map.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be ≥ 1, got {jobs}")
    with_shared = shared is not _NOTHING
    if not todo:  # e.g. a resumed grid that is complete: no workers, no cluster
        return iter(())
    if scheduler is not None:
        return _map_dask(task, todo, scheduler, shared if with_shared else None, with_shared)
    if jobs == 1 or len(todo) <= 1:
        if with_shared:
            return (task(shared, i) for i in todo)
        return map(task, todo)
    if not with_shared:
        from joblib import Parallel, delayed

        return Parallel(n_jobs=jobs, return_as="generator_unordered")(
            delayed(task)(i) for i in todo
        )
    return _map_local(task, todo, jobs, shared)


def _map_local(task: Callable, todo: list, jobs: int, shared) -> Iterator:
    from concurrent.futures import FIRST_COMPLETED, wait

    from joblib.externals.loky import ProcessPoolExecutor

    jobs = min(jobs, len(todo))  # no idle workers to start
    ex = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker,
                             initargs=(os.getpid(), shared))  # fmt: skip
    items, free, pending = iter(todo), list(range(jobs)), {}
    try:
        while True:
            for item in items if free else ():
                slot = free.pop(0)
                pending[ex.submit(_call, task, item, slot, True)] = slot
                if not free:
                    break
            if not pending:
                return
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                free.append(pending.pop(fut))
                yield fut.result()
    finally:
        ex.shutdown(wait=True, kill_workers=bool(pending))


def _map_dask(task: Callable, todo: list, scheduler: str, shared, with_shared: bool) -> Iterator:
    from dask.distributed import Client, as_completed

    with Client(scheduler) as client:
        client.wait_for_workers(1, timeout=60)
        box = client.scatter(_Box(shared), broadcast=True, hash=False) if with_shared else None
        futures = [client.submit(_call_dask, task, box, item, pure=False) for item in todo]
        for fut in as_completed(futures):
            yield fut.result()


def _sim_fingerprint(sweep: Sweep, n: int, seeds: int, seed: int) -> str:
    return f"{sweep.fingerprint()}-sim-n{n}-s{seeds}-seed{seed}"


def simulation_journal(
    sweep: Sweep,
    path: str | os.PathLike,
    *,
    n: int,
    seeds: int,
    seed: int = 0,
    wait: bool = False,
    fix: str = "choose another --out",
) -> Journal:
    """The journal of :func:`simulate_points` for ``sweep`` at (n, seeds, seed); records validated:
    index on the grid, exactly the simulated fields, numbers, ``sim_status`` ∈ {0, 5}."""
    fingerprint = _sim_fingerprint(sweep, n, seeds, seed)
    header = {"sweep": sweep.describe(), "simulate": {"n": n, "seeds": seeds, "seed": seed}}

    def validate(record: dict) -> None:
        _check_index(record["index"], sweep.shape)
        values = record["values"]
        if not set(SIM_KEYS) <= set(values) <= {*SIM_KEYS, "sim_status", "sim_message"}:
            raise ValueError("not the fields of a simulated point")
        if not all(_is_number(values[k]) for k in SIM_KEYS):
            raise ValueError("simulated values must be numbers")
        ok = {STATUS_CODES["converged"], STATUS_CODES["error"]}
        if values.get("sim_status", 0) not in ok or not isinstance(
            values.get("sim_message", ""), str
        ):
            raise ValueError("sim_status must be 0 or 5, sim_message a string")
        if not (isinstance(values["sim_failed"], int) and 0 <= values["sim_failed"] <= seeds):
            raise ValueError(f"sim_failed must be an int in [0, {seeds}]")
        _check_simulated_values(values, seeds)

    return Journal(path, fingerprint, header, validate=validate, lock=True, wait=wait, fix=fix)


def _check_simulated_values(values: dict, seeds: int) -> None:
    """Means and standard errors in their quantity's range (``kdtheory.journal.check_values``;
    r_sim any real, s.e. ≥ 0); the means finite where the simulation ran and some seed converged
    (an s.e. is NaN with fewer than two converged seeds)."""
    from kdtheory.journal import NONNEGATIVE, check_values, quantity_range

    ran = values.get("sim_status", 0) == STATUS_CODES["converged"] and values["sim_failed"] < seeds
    check_values(values, {f"{q}_sim": quantity_range(q) for q, _ in SIM_FIELDS}, ok=ran)
    check_values(values, {f"{q}_sim_sem": NONNEGATIVE for q, _ in SIM_FIELDS}, ok=False)


def simulate_points(
    sweep: Sweep,
    theory: xr.Dataset,
    *,
    n: int,
    seeds: int,
    seed: int = 0,
    jobs: int = 1,
    journal_path: str | os.PathLike | Journal | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """Finite-N simulations (``simulations.run``) at every point of a 1-D sweep.

    Each point is simulated at the theory's parameters (with the optimised parameters at their
    optimum, if the sweep optimises).  Adds ``<q>_sim`` and ``<q>_sim_sem`` for the quantities in
    ``SIM_FIELDS``, ``sim_failed`` (seeds whose fits failed), ``sim_status`` (0, 5 = "error": the
    simulation raised; −1: not simulated because the theory has no optimum there) and
    ``sim_message``.  Journalled like ``run_sweep`` (a path, or a :func:`simulation_journal`).
    """
    if len(sweep.axes) != 1:
        raise ValueError("simulation overlays are drawn on 1-D sweeps only")
    if isinstance(journal_path, Journal) and journal_path.fingerprint != _sim_fingerprint(
        sweep, n, seeds, seed
    ):
        raise ValueError(f"{journal_path.path} is not the journal of these simulations")
    if journal_path is None or isinstance(journal_path, Journal):
        return _simulate_points(sweep, theory, n, seeds, seed, jobs, journal_path, progress)
    with simulation_journal(sweep, journal_path, n=n, seeds=seeds, seed=seed) as journal:
        return _simulate_points(sweep, theory, n, seeds, seed, jobs, journal, progress)


def _simulate_point(problem: Problem, n: int, seeds: int, seed: int, jobs: int) -> dict:
    """One simulated point's record; an exception is recorded (status "error"), not raised."""
    import simulations

    try:
        with _local_workers():
            res = simulations.run(problem, n=n, seeds=seeds, seed=seed, n_jobs=jobs)
    except Exception as exc:  # one point must not stop the overlay
        values: dict = {k: math.nan for k in SIM_KEYS}
        return values | {"sim_failed": seeds, "sim_status": STATUS_CODES["error"],
                         "sim_message": _describe(exc)}  # fmt: skip
    values = {"sim_failed": int(res.n_failed), "sim_status": 0, "sim_message": ""}
    for name, who in SIM_FIELDS:
        est = getattr(getattr(res, who), name.removesuffix("_teacher"))
        values[f"{name}_sim"], values[f"{name}_sim_sem"] = est.mean, est.sem
    return values


def _simulate_points(sweep, theory, n, seeds, seed, jobs, journal, progress) -> xr.Dataset:
    from tqdm import tqdm  # not tqdm.auto: no IProgress warning in notebooks

    done = dict(journal.done) if journal else {}
    order = sweep.snake()
    bar = tqdm(total=len(order), initial=len(done), desc=f"simulate N={n}", unit="pt",
               disable=not progress, leave=False)  # fmt: skip
    try:
        for index in order:
            if index in done:
                continue
            p = sweep.problem(index)
            opt = {o.name: float(theory[f"{o.name}_opt"].values[index]) for o in sweep.optimise}
            if not all(math.isfinite(v) for v in opt.values()):
                continue
            p = p.replace(**opt)
            values = _simulate_point(p, n, seeds, seed, jobs)
            if journal:
                journal.append([(index, values)])
            done[index] = values
            bar.update(1)
    finally:
        bar.close()
    out = theory.copy()
    dim = sweep.axes[0].name
    for key in SIM_KEYS:
        arr = np.full(sweep.shape, np.nan)
        for index, values in done.items():
            arr[index] = values.get(key, np.nan)
        out[key] = (dim, arr)
    status = np.full(sweep.shape, -1, dtype=np.int32)
    message = np.full(sweep.shape, "", dtype=object)
    for index, values in done.items():
        status[index], message[index] = values.get("sim_status", 0), values.get("sim_message", "")
    out["sim_status"], out["sim_message"] = (dim, status), (dim, message)
    out["sim_status"].attrs.update(flag_values=[-1, 0, STATUS_CODES["error"]],
                                   flag_meanings="not_simulated converged error")  # fmt: skip
    out.attrs.update(sim_n=n, sim_seeds=seeds, sim_seed=seed)
    return out


# ----------------------------------------------------------------------------- failures


_FAILURE_LABELS = {"error": "raised an exception", "max_iter": "reached max_iter"}


def failure_summary(ds: xr.Dataset) -> list[str]:
    """One line per (status variable, failing status) of a sweep's Dataset, with a count and one
    example reason, e.g. ``"3 points unbounded: logistic teacher at λ̃ = 0 …"``.

    Reads ``status``/``message``, ``status_<variant>``/``message_<variant>`` and
    ``sim_status``/``sim_message``; an empty list when every point converged.
    """
    names = {code: name for name, code in STATUS_CODES.items()} | {-1: "not computed"}
    lines = []
    for var in ds.data_vars:
        var = str(var)
        if not (var == "status" or var.startswith("status_") or var == "sim_status"):
            continue
        kind = "simulated point" if var == "sim_status" else "point"
        variant = var.removeprefix("status_") if var.startswith("status_") else ""
        codes = np.asarray(ds[var].values).ravel()
        msg_var = var.replace("status", "message")
        messages = np.asarray(ds[msg_var].values).ravel() if msg_var in ds else None
        for code in sorted(set(codes.tolist()) - {STATUS_CODES["converged"]}):
            where = np.flatnonzero(codes == code)
            reason = next(
                (str(messages[i]) for i in where if messages is not None and messages[i]), ""
            )
            count = f"{where.size} {kind}{'s' if where.size != 1 else ''}"
            label = names.get(code, f"status {code}")
            label = _FAILURE_LABELS.get(label, label) + (f" ({variant})" if variant else "")
            lines.append(f"{count} {label}" + (f": {reason}" if reason else ""))
    return lines

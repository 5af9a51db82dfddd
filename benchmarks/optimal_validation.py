r"""Finite-N check of three optimal metaparameters of ``--figures optimal`` (kdtheory.figures.optimal).

At each of three problems the theory's optimum (λ*, χ*, T*) = argmin of the student's ε_g over the
box of :data:`kdtheory.figures.optimal.BOUNDS` (:func:`kdtheory.sweep.optimise_point`) is compared by
simulation with its neighbours in each optimised coordinate that is not at a bound (λ and T times
or divided by ``--factor``, χ ± ``--dchi``, kept in the box).  All students of a problem are trained
on the same training sets seed by seed (``simulations.run(..., seed=root)`` draws the data, the
teacher and the η-subset from the seed and the data model only), so the paired difference
d = ε_g(neighbour) − ε_g(optimum) has a small error bar.  It prints, per neighbour, the theory's
difference and d as mean ± s.e. over the seeds, and whether the optimum beats the neighbour by more
than 2 s.e.

    python benchmarks/optimal_validation.py                      # N = 1000, 40 seeds; ~5 min on 2 cores
    python benchmarks/optimal_validation.py --n 200 --seeds 8    # a quick look
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import replica
import simulations
from kdtheory.figures.headline import STORY
from kdtheory.figures.optimal import BOUNDS
from kdtheory.problem import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student
from kdtheory.sweep import at_bound, optimise_point

#: three problems: the story's sparse student of a logistic and of the Bayes-optimal teacher, and a
#: full student of an under-regularised logistic teacher at small α
PROBLEMS = {
    "logistic λ̃ = 0.1, (α, ρ) = (2, 0.3), η = 0.5": Problem(
        STORY, LogisticTeacher(0.1), Student(0.05, 1.0, 1.0, 0.5)
    ),
    "Bayes teacher, (α, ρ) = (2, 0.3), η = 0.5": Problem(
        STORY, BayesTeacher(), Student(0.05, 1.0, 1.0, 0.5)
    ),
    "logistic λ̃ = 0.001, (α, ρ) = (0.5, 0.3), η = 1": Problem(
        GaussianMixture(0.5, 0.3, 1.0), LogisticTeacher(1e-3), Student(0.05, 1.0, 1.0, 1.0)
    ),
}


def neighbours(p: Problem, factor: float, dchi: float) -> dict[str, Problem]:
    """The optimum's neighbours in each optimised coordinate off its bounds, inside the box."""
    out = {}
    for o in BOUNDS:
        v = p.params[o.name]
        if at_bound(v, o):
            continue
        for sign in (-1, 1):
            w = v * factor**sign if o.log else v + sign * dchi
            w = min(max(w, o.lo), o.hi)
            if w != v:
                out[f"{o.name} = {w:.3g}"] = p.replace(**{o.name: w})
    return out


def errors(p: Problem, n: int, seeds: int, seed: int, jobs: int) -> np.ndarray:
    """Per-seed student test errors (NaN where a fit failed)."""
    t = simulations.run(p, n=n, seeds=seeds, seed=seed, n_jobs=jobs).table
    return np.where(t["converged"].values, t["student_eg"].values, np.nan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="dimension N (1000)")
    ap.add_argument("--seeds", type=int, default=40, help="paired training sets (40)")
    ap.add_argument("--seed", type=int, default=0, help="root seed (0)")
    ap.add_argument("--factor", type=float, default=3.0, help="λ, T neighbours: × and ÷ (3)")
    ap.add_argument("--dchi", type=float, default=0.3, help="χ neighbours: ± (0.3)")
    ap.add_argument("--jobs", type=int, default=2, help="joblib workers over seeds (2)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    for title, problem in PROBLEMS.items():
        sol, arg = optimise_point(problem, BOUNDS)
        opt = sol.problem
        flags = ", ".join(
            f"{o.name}* = {arg[o.name]:.3g}" + (" (at a bound)" if at_bound(arg[o.name], o) else "")
            for o in BOUNDS
        )
        base = errors(opt, args.n, args.seeds, args.seed, args.jobs)
        print(f"{title}: theory ε_g* = {sol.student.eg:.5f} at {flags}; simulated "
              f"{np.nanmean(base):.5f} ± {np.nanstd(base, ddof=1) / math.sqrt(np.isfinite(base).sum()):.5f}")  # fmt: skip
        for name, p in neighbours(opt, args.factor, args.dchi).items():
            th = replica.solve(p).student.eg - sol.student.eg
            d = errors(p, args.n, args.seeds, args.seed, args.jobs) - base
            d = d[np.isfinite(d)]
            mean, sem = float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))
            verdict = (
                "optimum better"
                if mean > 2 * sem
                else "not resolved"
                if mean > -2 * sem
                else "NEIGHBOUR better"
            )
            print(f"    {name:>22}: theory Δε = {th:+.5f}, simulated d = {mean:+.5f} ± {sem:.5f} "
                  f"({d.size} seeds): {verdict}")  # fmt: skip
    print(f"N = {args.n}, {args.seeds} seeds; done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

r"""Solves needed to find the best KD metaparameters: exact gradients against derivative-free search.

    PYTHONPATH=. python benchmarks/replica_optimise.py [--quick]

For each problem, ε_g is minimised over the listed parameters (log coordinates for λ and T) by
* **ours** — ``replica.optimise``: L-BFGS-B on the exact gradients of ``replica.gradient``;
* **L-BFGS-B, FD gradients** — the same method with scipy's two-point finite-difference gradients;
* **Nelder–Mead** and **Powell** — scipy's derivative-free methods (bounded where scipy allows).
Every method evaluates ε_g by one ``replica.solve`` warm-started from the previous one, so the count
of solves is the cost.  Reported: the solves each method needed to come within 1e-6 of the best ε_g
any method found (the first evaluation that did), and its final ε_g.  Our count includes nothing
else: each ``replica.gradient`` call costs one kernel call per map, less than a solve.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import replica  # noqa: E402
from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student  # noqa: E402
from kdtheory.journal import write_atomic  # noqa: E402

ro = importlib.import_module("replica.optimise")  # the module (replica.optimise is the function)

G = GaussianMixture(2.0, 0.3, 1.0)
CASES = [
    ("logistic λ̃=0.3, η=0.5", Problem(G, LogisticTeacher(0.3), Student(0.1, 0.5, 1.0, 0.5)), ("lam", "chi")),
    ("Bayes, η=1", Problem(G, BayesTeacher(), Student(0.1, 0.5, 2.0, 1.0)), ("lam", "chi", "temperature")),
    ("logistic λ̃=1, η=1", Problem(G, LogisticTeacher(1.0), Student(0.1, 0.5, 1.0, 1.0)), ("lam", "chi", "temperature")),
    ("Bayes, α=3, ρ=0.1", Problem(GaussianMixture(3.0, 0.1, 1.0), BayesTeacher(), Student(0.1, 0.5, 1.0, 1.0)), ("lam", "chi")),
]  # fmt: skip
TARGET = 1e-6


class Recorder:
    """ε_g of every solve, in order (warm-started from the previous solve)."""

    def __init__(self, problem, over):
        self.problem, self.over, self.trace, self.last = problem, over, [], None
        self.box = np.array([ro.DEFAULT_BOUNDS[k] for k in over])
        self.log = np.array([k in ("lam", "temperature") for k in over])

    def theta(self, z):
        return np.clip(np.where(self.log, np.exp(z), z), *self.box.T)

    def __call__(self, z):
        p = self.problem.replace(**dict(zip(self.over, map(float, self.theta(z)), strict=False)))
        sol = replica.solve(p, init=self.last, tol=1e-12)
        if sol.converged:
            self.last = sol
        eg = sol.student.eg if sol.converged else 1.0
        self.trace.append(eg)
        return eg

    def zbox(self):
        return [
            (math.log(lo), math.log(hi)) if lg else (lo, hi)
            for (lo, hi), lg in zip(self.box, self.log, strict=False)
        ]

    def z0(self):
        th = np.clip([self.problem.params[k] for k in self.over], *self.box.T)
        return np.where(self.log, np.log(th), th)


def run_ours(problem, over):
    rec = []
    solve = ro.solve

    def counted(p, **kw):  # benchmark-only instrumentation of replica.optimise's solves
        sol = solve(p, **kw)
        rec.append(sol.student.eg if sol.converged else 1.0)
        return sol

    ro.solve = counted
    try:
        t0 = time.perf_counter()
        res = replica.optimise(problem, over)
        wall = time.perf_counter() - t0
    finally:
        ro.solve = solve
    return rec, res.eg, wall


def run_scipy(problem, over, method, max_solves):
    r = Recorder(problem, over)
    t0 = time.perf_counter()
    opts = {"maxfev": max_solves} if method in ("Nelder-Mead", "Powell") else {"maxfun": max_solves}
    if method == "L-BFGS-B":
        opts.update(ftol=1e-15, gtol=1e-10)
    if method == "Nelder-Mead":
        opts.update(xatol=1e-8, fatol=1e-12)
    if method == "Powell":
        opts.update(xtol=1e-8, ftol=1e-12)
    minimize(r, r.z0(), method=method, bounds=r.zbox(), options=opts)
    return r.trace, min(r.trace), time.perf_counter() - t0


def first_within(trace, best):
    for i, v in enumerate(trace, 1):
        if v <= best + TARGET:
            return i
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the first two problems only")
    ap.add_argument("--max-solves", type=int, default=600, help="budget of the scipy methods")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "replica_optimise.json"
    )
    args = ap.parse_args(argv)
    cases = CASES[:2] if args.quick else CASES
    print(f"load average {os.getloadavg()}; target: within {TARGET:g} of the best ε_g found")
    rows = []
    for name, problem, over in cases:
        runs = {"ours (exact gradients)": run_ours(problem, over)}
        for m in ("L-BFGS-B", "Nelder-Mead", "Powell"):
            label = "L-BFGS-B, FD gradients" if m == "L-BFGS-B" else m
            runs[label] = run_scipy(problem, over, m, args.max_solves)
        best = min(min(t) for t, _, _ in runs.values())
        print(f"\n{name}: over {over}, best ε_g = {best:.10f}")
        print(
            f"  {'method':<24}{'solves to 1e-6':>16}{'total solves':>14}{'final ε_g':>16}{'wall':>9}"
        )
        row = {"case": name, "over": over, "best_eg": best, "methods": {}}
        for label, (trace, final, wall) in runs.items():
            n = first_within(trace, best)
            print(f"  {label:<24}{n if n else '—':>16}{len(trace):>14}{final:>16.10f}{wall:>8.1f}s")
            row["methods"][label] = {
                "solves_to_target": n,
                "solves": len(trace),
                "eg": final,
                "wall_s": wall,
            }
        ours = row["methods"]["ours (exact gradients)"]["solves_to_target"]
        others = [
            v["solves_to_target"]
            for k, v in row["methods"].items()
            if k != "ours (exact gradients)"
        ]
        others = [o if o else args.max_solves for o in others]
        if ours:
            print(f"  fewest solves of the others / ours = {min(others) / ours:.1f}×")
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"load": os.getloadavg(), "rows": rows}
    write_atomic(args.out, lambda tmp: tmp.write_text(json.dumps(report, indent=1, default=str)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

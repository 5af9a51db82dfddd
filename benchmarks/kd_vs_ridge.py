r"""Finite-N check of the limit: does the best KD student beat the best ridge student?

The replica theory (``kdtheory.figures.headline``, figure 2 of the main job) finds that at (α, ρ, Δ) =
(2, 0.3, 1), η = 1, T = 1 the best KD student of a logistic teacher (min over λ̃, χ, λ) has a lower
error than the best L2 ("ridge") logistic student (min over λ), by Δ∞ ≈ 0.002 — while the slides of
Saglietti & Zdeborová (MSML 2022) say a KD student "cannot beat an explicit regularization of the same
type".  Finite-N offsets of the errors are of the same size, so this script trains both students
for real, at their theoretical optima, **on the same data**: seed s of ``simulations.run(problem, n,
seeds, seed=root)`` draws its training set from ``SeedSequence(root).spawn(seeds)[s]`` before
anything else, the data depend on (α, ρ, Δ, N) only, and at η = 1 no subset is drawn, so the KD
problem and the ridge problem (χ = 0) see identical training sets seed by seed.  It prints, per N,
the paired differences d = ε_g(ridge) − ε_g(KD) as mean ± s.e., each student's error against the
theory, and a weighted least-squares fit d(N) = d∞ + c/N, whose d∞ ± s.e. is compared with Δ∞.

    python benchmarks/kd_vs_ridge.py                   # N = 1000, 2000, 4000; ~10 min on 2 cores
    python benchmarks/kd_vs_ridge.py --n 200 400 --seeds 8 8 --jobs 1   # a quick look
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import replace

import numpy as np

import replica
import simulations
from kdtheory import BayesTeacher, LogisticTeacher, Problem, Student
from kdtheory.figures.headline import STORY, best_kd_student, best_ridge_student


def optimal_problems(rho: float, eta: float, tol: float = 1e-10) -> tuple[Problem, Problem, dict]:
    """The best KD problem and the best ridge problem (χ = 0) at (2, ρ, 1), η, and the theory."""
    data = replace(STORY, rho=rho)
    ridge = best_ridge_student(data, eta, tol=tol)
    kd = best_kd_student(data, eta, start=ridge["lam_ridge"], tol=tol)
    p_kd = Problem(
        data, LogisticTeacher(kd["lam_t_kd"]), Student(kd["lam_kd"], kd["chi_kd"], 1.0, eta)
    )
    p_ridge = Problem(data, BayesTeacher(), Student(ridge["lam_ridge"], 0.0, 1.0, eta))
    return p_kd, p_ridge, {**kd, **ridge, "gain": ridge["eg_ridge"] - kd["eg_kd"]}


def paired_differences(
    p_kd: Problem, p_ridge: Problem, n: int, seeds: int, *, seed: int = 0, jobs: int = 1
) -> dict:
    """Both students on the same ``seeds`` training sets of dimension ``n``: per-seed errors and
    d = ε_g(ridge) − ε_g(KD) over the seeds where both fits converged."""
    if (p_kd.data, p_kd.student.eta) != (p_ridge.data, p_ridge.student.eta):
        raise ValueError("pairing needs the same data model and η in both problems")
    kd = simulations.run(p_kd, n=n, seeds=seeds, seed=seed, n_jobs=jobs).table
    ridge = simulations.run(p_ridge, n=n, seeds=seeds, seed=seed, n_jobs=jobs).table
    ok = kd["converged"].values & ridge["converged"].values
    e_kd, e_ridge = kd["student_eg"].values[ok], ridge["student_eg"].values[ok]
    return {"kd": e_kd, "ridge": e_ridge, "d": e_ridge - e_kd, "failed": int((~ok).sum())}


def mean_sem(x) -> tuple[float, float]:
    x = np.asarray(x, float)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan


def extrapolate(ns, means, sems) -> tuple[float, float, float]:
    """Weighted least squares of d(N) = d∞ + c/N (weights 1/s.e.²): d∞, its s.e., and c."""
    x = 1.0 / np.asarray(ns, float)
    w = 1.0 / np.asarray(sems, float) ** 2
    a = np.column_stack([np.ones_like(x), x])
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    coef = cov @ (a.T @ (w * np.asarray(means, float)))
    return float(coef[0]), float(math.sqrt(cov[0, 0])), float(coef[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 2000, 4000], help="dimensions N")
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[200, 100, 50],
        help="seeds per N (one number for all, or one per N; default: 200 100 50)",
    )
    ap.add_argument("--rho", type=float, default=0.3, help="fraction of the positive cluster (0.3)")
    ap.add_argument("--eta", type=float, default=1.0, help="trained fraction η (1)")
    ap.add_argument("--seed", type=int, default=0, help="root seed (0)")
    ap.add_argument("--jobs", type=int, default=2, help="joblib workers over seeds (2)")
    args = ap.parse_args(argv)
    seeds = args.seeds * len(args.n) if len(args.seeds) == 1 else args.seeds
    if len(seeds) != len(args.n):
        ap.error("--seeds takes one number or one per --n")
    if args.eta != 1.0:
        ap.error(
            "--eta must be 1: a sparse student draws its subset from the same stream, which "
            "would differ between the two problems only through the draw order (kept simple)"
        )
    t0 = time.perf_counter()
    p_kd, p_ridge, th = optimal_problems(args.rho, args.eta)
    print(f"theory at (α, ρ, Δ) = (2, {args.rho:g}, 1), η = {args.eta:g}, T = 1:")
    print(
        f"  best KD student    ε_g = {th['eg_kd']:.5f} at λ̃ = {th['lam_t_kd']:.4g}, "
        f"χ = {th['chi_kd']:.3g}, λ = {th['lam_kd']:.4g}"
    )
    print(f"  best ridge student ε_g = {th['eg_ridge']:.5f} at λ = {th['lam_ridge']:.4g}")
    print(
        f"  Δ∞ = ε_ridge − ε_KD = {th['gain']:+.5f}; Bayes error "
        f"{replica.bayes_error(p_kd.data, args.eta):.5f}"
    )
    print(f"load average {os.getloadavg()[0]:.1f}; {args.jobs} workers\n")
    print(
        f"{'N':>6} {'seeds':>5}  {'ε_KD − theory':>16}  {'ε_ridge − theory':>16}  "
        f"{'d = ε_ridge − ε_KD':>20}  {'time':>6}"
    )
    rows = []
    for n, s in zip(args.n, seeds, strict=True):
        t = time.perf_counter()
        r = paired_differences(p_kd, p_ridge, n, s, seed=args.seed, jobs=args.jobs)
        (dm, ds), (km, ks), (rm, rs) = mean_sem(r["d"]), mean_sem(r["kd"]), mean_sem(r["ridge"])
        rows.append((n, dm, ds))
        fail = f" ({r['failed']} failed)" if r["failed"] else ""
        print(
            f"{n:>6} {s:>5}  {km - th['eg_kd']:+.5f} ± {ks:.5f}  {rm - th['eg_ridge']:+.5f} ± "
            f"{rs:.5f}  {dm:+.5f} ± {ds:.5f}  {time.perf_counter() - t:5.0f}s{fail}"
        )
        sys.stdout.flush()
    if len(rows) >= 2:
        d_inf, se, c = extrapolate(*zip(*rows, strict=True))
        z = (d_inf - th["gain"]) / se
        print(
            f"\nextrapolated d(N) = d∞ + c/N: d∞ = {d_inf:+.5f} ± {se:.5f} (c = {c:+.3g}); theory "
            f"Δ∞ = {th['gain']:+.5f} ({z:+.1f} s.e.); d∞ > 0 at {d_inf / se:.1f} s.e."
        )
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

r"""Cost of a generic covariance in ``replica.solve``: N = 784 eigenvalues against the isotropic point.

    python benchmarks/spectrum_speed.py            # a few seconds on 2 cores
    python benchmarks/spectrum_speed.py --n 4096   # a larger spectrum

Baseline: ``replica.solve`` of the isotropic model (Σ = Δ I, the closed-form prior).  Against it,
in the same process and in interleaved rounds (medians reported with ``os.getloadavg()``), the
same problems with a ``Spectrum`` of ``--n`` eigenvalues (784, the pixels of Fashion-MNIST):

* **flat** — ``Spectrum.isotropic(Δ, n)``: the same fixed point through the spectral sums (the
  pure overhead of the sums; the iterations are the same);
* **power law** — σ_i ∝ i^{−1} (mean Δ) with projections μ_i ∝ σ_i^{1/2}·(a fixed random sign
  pattern) scaled to ‖v‖² = N: an image-like spectrum, whose fixed point differs.

Every solve is cold (teacher and student from nothing; the student-map cache cleared), with the
residual 1e-10 of the default.  The ratio spectrum/isotropic is the figure to read; the number
of map evaluations is printed too (a spectrum changes the path, not only the cost per step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import replica  # noqa: E402
import replica.student  # noqa: E402
from kdtheory import GaussianMixture, LogisticTeacher, Problem, Spectrum, Student  # noqa: E402

POINTS = {
    "headline": (GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05, 0.8, 1.0)),
    "noisy": (
        GaussianMixture(1.5, 0.5, 1.0, 0.2),
        LogisticTeacher(0.05),
        Student(0.02, 1.0, 0.5, tempered="teacher"),
    ),
    "hot": (GaussianMixture(4.0, 0.2, 1.0, 0.1), LogisticTeacher(0.3), Student(0.2, 0.5, 3.0)),
}


def power_law(delta: float, n: int) -> Spectrum:
    """σ_i ∝ 1/i with mean Δ; μ_i ∝ √σ_i with fixed random signs, ‖v‖² = N."""
    sigma = 1.0 / np.arange(1, n + 1)
    sigma *= delta / sigma.mean()
    signs = np.where(np.random.default_rng(0).random(n) < 0.5, -1.0, 1.0)
    mu = signs * np.sqrt(sigma)
    mu *= np.sqrt(n / (mu @ mu))
    return Spectrum(sigma, mu)


def time_solve(problem: Problem) -> tuple[float, replica.Solution]:
    replica.student._MAPS.clear()
    t0 = time.perf_counter()
    sol = replica.solve(problem)
    return time.perf_counter() - t0, sol


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=784, help="number of eigenvalues (default 784)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    ap.add_argument(
        "--out",
        default=str(ROOT / "benchmarks" / "results" / "spectrum_speed.json"),
        help="JSON file for the results",
    )
    args = ap.parse_args()
    load0 = os.getloadavg()
    rows = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for name, (data, teacher, student) in POINTS.items():
            variants = {
                "isotropic": data,
                "flat": GaussianMixture(
                    data.alpha, data.rho, flip=data.flip,
                    covariance=Spectrum.isotropic(data.delta, args.n),
                ),
                "power law": GaussianMixture(
                    data.alpha, data.rho, flip=data.flip, covariance=power_law(data.delta, args.n)
                ),
            }  # fmt: skip
            problems = {k: Problem(d, teacher, student) for k, d in variants.items()}
            for p in problems.values():  # compile / warm the caches
                time_solve(p)
            times = {k: [] for k in problems}
            sols = {}
            for _ in range(args.rounds):
                for k, p in problems.items():
                    t, sols[k] = time_solve(p)
                    times[k].append(t)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows[name] = {
                k: {
                    "median_s": med[k],
                    "ratio": med[k] / med["isotropic"],
                    "iterations": sols[k].iterations,
                    "converged": sols[k].converged,
                    "student_eg": sols[k].student.eg,
                }
                for k in problems
            }
            print(f"{name}:")
            for k, r in rows[name].items():
                print(
                    f"  {k:10s} {1e3 * r['median_s']:8.1f} ms  ×{r['ratio']:5.2f}  "
                    f"{r['iterations']:4d} maps  converged={r['converged']}  "
                    f"ε_g = {r['student_eg']:.6f}"
                )
    load1 = os.getloadavg()
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f} (2 cores)")
    out = {"n": args.n, "rounds": args.rounds, "load": [load0[0], load1[0]], "points": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

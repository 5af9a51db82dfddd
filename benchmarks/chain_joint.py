"""Joint vs greedy optimal self-distillation: ``replica.optimise_chain(..., joint=True)``.

At points (α, θ) of the self-distillation figure set (ρ = 0.5 or ``--rho``, Δ = 1, 3 stages, its
search boxes), the greedy optimum (λ̃ = argmin ε_1, then each (λ_t, T_t) = argmin ε_t given the
earlier stages) against the joint optimum of ε_3 over (λ̃, λ_2, T_2, λ_3, T_3) (L-BFGS-B on the
exact chain derivatives, started at the greedy optimum), and dε_3/d log θ at the greedy optimum
(the joint problem's optimality conditions: 0 inside the box, pointing out of it on a bound).
Prints one JSON line per point; ``--out`` also writes them to a file.
Usage: ``python benchmarks/chain_joint.py --points 2:0.2 1:0.2 [--hard] [--rho 0.4]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import replica
from kdtheory.figures.selfdistil import HARD_TEMPERATURE, LAM_RANGE, TEMPERATURE_RANGE
from kdtheory.problem import GaussianMixture


def point(alpha: float, theta: float, hard: bool, rho: float = 0.5, stages: int = 3) -> dict:
    t0 = time.perf_counter()
    opt = replica.optimise_chain(
        GaussianMixture(alpha, rho, 1.0, theta), stages, hard=hard,
        hard_temperature=HARD_TEMPERATURE, lam_range=LAM_RANGE,
        temperature_range=TEMPERATURE_RANGE, joint=True,
    )  # fmt: skip
    g = opt.greedy
    names = ["lam_t"] + [f"{p}_{t}" for t in range(2, stages + 1) for p in ("lam", "temperature")]
    values = [g.teacher.lam] + [v for s in g.students for v in (s.lam, s.temperature)]
    slope = replica.chain_gradient(g.solution, names).eg[-1] * values
    return {
        "alpha": alpha, "theta": theta, "rho": rho, "labels": "hard" if hard else "soft",
        "eg_greedy": g.eg.tolist(), "eg_joint": opt.eg.tolist(),
        "gain": float(g.eg[-1] - opt.eg[-1]),
        "lam_t": [g.teacher.lam, opt.teacher.lam],
        "students_greedy": [(s.lam, s.temperature) for s in g.students],
        "students_joint": [(s.lam, s.temperature) for s in opt.students],
        "dlog_greedy": dict(zip(names, slope.tolist(), strict=True)),
        "solves": [g.solves, opt.solves - g.solves],
        "seconds": time.perf_counter() - t0, "load": os.getloadavg()[0],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", nargs="+", default=["2:0.2"], help="alpha:theta pairs")
    ap.add_argument("--hard", action="store_true", help="hard labels (T_t = 0.02 fixed)")
    ap.add_argument("--rho", type=float, default=0.5, help="the mixture's ρ (default 0.5)")
    ap.add_argument("--out", default=None, help="JSON file for the rows (default: none)")
    args = ap.parse_args()
    rows = []
    for p in args.points:
        a, t = map(float, p.split(":"))
        rows.append(point(a, t, args.hard, args.rho))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()

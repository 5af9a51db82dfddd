"""The λ-path optimiser against the exact optimum on the solvable model (issue 15, item 6).

For each problem (α, ρ, Δ) with a logistic teacher λ̃ and a student λ (η = 1), and for each seed:
a finite-N draw (N features, M = αN training and M validation samples), the teacher fitted by
``simulations``, and the linear student trained in torch by ``LambdaPathOptimizer`` — gradient-based
(rule (2) at every step) and Algorithm 1 (``proposed``) — from (λ₁, T) = (0.5, 1), full-batch
gradient descent (``kdtheory.neural.experiments.solvable``). Compared with

* **theory optimum**: the (χ*, T*) that minimise the N → ∞ student's population cross-entropy (the
  λ path's target, T_val = 1), and separately its test error ε_g, by replica solves;
* **oracle**: the exact bilevel optimum on the same draw: (χ, T) minimising the validation
  cross-entropy of the exact minimiser (no one-step truncation), Nelder–Mead from the λ path's start
  (**oracle-local**) and the better of that and a search from the theory's optimum (**oracle**);
* **theory-opt**: the exact minimiser at (χ*, T*) on the same draw (a paired baseline for the test
  error, free of the draw's own finite-N shift).

Prints, per problem and method, mean ± s.e. over seeds of χ, T, the student's test error and
population CE on fresh data (exact given the centroid), their paired differences to theory-opt on
the same draw, the N → ∞ theory at the method's (χ, T), and the wall time; writes ``benchmarks/results/lambda_path_vs_theory.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from kdtheory import GaussianMixture, LogisticTeacher, Problem, Student
from kdtheory.journal import check_output_dir, write_atomic
from kdtheory.neural.experiments.solvable import judge, summarise

PROBLEMS = [(2.0, 0.3, 1.0), (1.0, 0.5, 1.0), (4.0, 0.2, 0.5)]
LAM_T, LAM = 0.5, 0.01  # a well-regularised teacher, a weakly regularised student: KD pays
METHODS = ("gradient", "proposed", "oracle-local", "oracle", "theory-opt")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _fmt(pair: tuple[float, float], digits: int = 3) -> str:
    mean, sem = pair
    return f"{mean:.{digits}f}±{sem:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="lambda_path_vs_theory", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="dimension N (default 500)")
    ap.add_argument("--seeds", type=int, default=5, help="draws per problem (default 5)")
    ap.add_argument("--steps", type=int, default=2000, help="λ-path steps (default 2000)")
    ap.add_argument("--out", default="benchmarks/results", help="folder of the JSON file")
    args = ap.parse_args(argv)
    if args.n < 10 or args.seeds < 2 or args.steps < 1:
        ap.error("--n must be ≥ 10, --seeds ≥ 2 and --steps ≥ 1")
    try:
        out = check_output_dir(Path(args.out), flag="--out")
    except ValueError as exc:
        ap.error(str(exc))
    torch.set_num_threads(1)
    report = []
    t_all = time.perf_counter()
    for alpha, rho, delta in PROBLEMS:
        problem = Problem(GaussianMixture(alpha, rho, delta), LogisticTeacher(LAM_T), Student(LAM))
        t0 = time.perf_counter()
        j = judge(problem, args.n, args.seeds, steps=args.steps)
        wall = time.perf_counter() - t0
        summary = summarise(j)
        print(
            f"\n(α, ρ, Δ) = ({alpha:g}, {rho:g}, {delta:g}), λ̃ = {LAM_T:g}, λ = {LAM:g}, "
            f"N = {args.n}, {args.seeds} seeds, {args.steps} steps  [{wall:.0f} s]"
        )
        for obj, o in j.optimum.items():
            bound = f"  at bound {', '.join(o.at_bound)}" if o.at_bound else ""
            print(
                f"  theory optimum of {obj:>2}: χ* = {o.chi:.3f}, T* = {o.temperature:.3f}, "
                f"CE* = {o.ce:.4f}, ε_g* = {o.eg:.4f}  ({o.solves} solves){bound}"
            )
        print(
            f"  {'method':<12} {'χ':>12} {'T':>12} {'ε_g (N)':>13} {'CE (N)':>13} "
            f"{'Δε_g paired':>14} {'ΔCE paired':>14} {'ε_g (∞ at χ,T)':>15} "
            f"{'CE (∞ at χ,T)':>15} {'wall s':>9}"
        )
        for method in METHODS:
            s = summary[method]
            print(
                f"  {method:<12} {_fmt(s['chi']):>12} {_fmt(s['temperature']):>12} "
                f"{_fmt(s['eg'], 4):>13} {_fmt(s['ce'], 4):>13} {_fmt(s['d_eg'], 4):>14} "
                f"{_fmt(s['d_ce'], 4):>14} {_fmt(s['theory_eg'], 4):>15} "
                f"{_fmt(s['theory_ce'], 4):>15} {_fmt(s['wall_time_s'], 1):>9}"
            )
        report.append(
            dict(
                alpha=alpha, rho=rho, delta=delta, lam_t=LAM_T, lam=LAM, n=args.n,
                seeds=args.seeds, steps=args.steps, wall_s=wall,
                optimum={k: dataclasses.asdict(v) for k, v in j.optimum.items()},
                rows=j.rows, summary=summary,
            )
        )  # fmt: skip
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s; load average {os.getloadavg()}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "lambda_path_vs_theory.json"
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(report, indent=1)))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

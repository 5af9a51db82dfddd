r"""Cost of the chain solver (``replica.solve_chain``) per stage, against the one-student solver.

Baseline: ``replica.solve`` of the same teacher–student problem (θ = 0, tempered="both", where both
apply), in the same process, interleaved rounds, medians.  Then the cost of stages 1, 2, 3 with the
exact (nested composite) rule, at a soft (T = 0.5) and a nearly hard (T = 0.05) soft label, and of a
fourth stage by randomised QMC.

    python benchmarks/chain_speed.py            # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import replica
from kdtheory.journal import check_output_dir, write_atomic
from kdtheory.problem import GaussianMixture, LogisticTeacher, Problem, Student


def timed(fn, rounds: int) -> float:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/chain_speed.json")
    args = ap.parse_args(argv)
    try:
        check_output_dir(Path(args.out).parent, flag="--out")
    except ValueError as exc:
        ap.error(str(exc))
    data = GaussianMixture(2.0, 0.3, 1.0)
    teacher, student = LogisticTeacher(0.1), Student(0.05, 1.0, 1.0)
    replica.solve(Problem(data, teacher, student))  # compile
    replica.solve_chain(data, teacher, [student])
    base = timed(lambda: replica.solve(Problem(data, teacher, student)), args.rounds)
    two = timed(lambda: replica.solve_chain(data, teacher, [student]), args.rounds)
    rows = {"solve (baseline)": base, "solve_chain, 2 stages": two}
    noisy = GaussianMixture(2.0, 0.5, 1.0, flip=0.2)
    for t in (0.5, 0.05):
        s = Student(0.1, 1.0, t, tempered="teacher")
        for k in (1, 2, 3):
            rows[f"T={t}: {k} stages"] = timed(
                lambda k=k, s=s: replica.solve_chain(noisy, teacher, [s] * (k - 1)), args.rounds
            )
    s = Student(0.1, 1.0, 0.5, tempered="teacher")
    rows["T=0.5: 4 stages (QMC 2^13 x 8)"] = timed(
        lambda: replica.solve_chain(noisy, teacher, [s] * 3), 1
    )
    print(f"load average {os.getloadavg()[0]:.1f}")
    for name, sec in rows.items():
        print(f"  {name:34s} {sec:8.3f} s   {sec / base:7.1f} × solve")
    payload = {"load": os.getloadavg()[0], "seconds": rows, "ratio_to_solve": {
        k: v / base for k, v in rows.items()}}  # fmt: skip
    write_atomic(Path(args.out), lambda tmp: tmp.write_text(json.dumps(payload, indent=1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

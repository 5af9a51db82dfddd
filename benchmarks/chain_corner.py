"""Issue 24's corner: the chain fuzz's chains whose first student has T < 0.1 and tempered "both".

Each is run as a 2-stage chain (teacher, first student); its student stage, and ``replica.solve``'s
student at the default rule, are compared with ``replica.solve`` on a refined rule
(``Quadrature(order=20, base_width=1)``) by ``robustness._gap`` (ε_g, and m, q, b relative to
max(1, |x|)).  Usage:

    python benchmarks/chain_corner.py [--ids 23,241,248] [--workers 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import robustness

#: the reference rule: order 20 (the default 7), base panels of width 1 (the default 2)
REFERENCE = {"order": 20, "base_width": 1.0}


def corner_ids(n: int = 300) -> list[int]:
    """Indices in ``random_chains(n)`` of the chains whose first student has T < 0.1, "both"."""
    chains = robustness.random_chains(n)
    return [
        i
        for i, p in enumerate(chains)
        if p["students"][0][2] < 0.1 and p["students"][0][3] == "both"
    ]


def one(i: int) -> dict:
    """The gaps of chain ``i``'s student stage (chain and default solve) to the refined solve."""
    import replica
    from kdtheory import Problem
    from replica.quadrature import Quadrature

    p = robustness.random_chains(300)[i]
    data, teacher, students = robustness.make_chain(p)
    problem = Problem(data, teacher, students[0])
    t0 = time.perf_counter()
    solve = replica.solve(problem)
    seconds = time.perf_counter() - t0
    ref = replica.solve(problem, quad=Quadrature(**REFERENCE))
    chain = replica.solve_chain(data, teacher, students[:1])
    stage = chain.stages[1]
    gap = robustness._gap
    ok = solve.converged and ref.converged
    return {
        "chain": i,
        "T": p["students"][0][2],
        "lam": p["students"][0][0],
        "converged": [solve.converged, ref.converged, stage.converged],
        "solve_gap": gap(solve.student, ref.student) if ok else math.nan,
        "chain_gap": gap(stage, ref.student) if ref.converged and stage.converged else math.nan,
        "chain_to_solve": gap(stage, solve.student)
        if solve.converged and stage.converged
        else math.nan,
        "solve_seconds": seconds,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ids", help="comma-separated chain ids (default: all corner chains)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", help="write the per-case gaps and the counts to this file")
    args = ap.parse_args(argv)
    ids = [int(s) for s in args.ids.split(",")] if args.ids else corner_ids()
    print(f"{len(ids)} chains; load average {os.getloadavg()}", flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one, ids))
    for r in rows:
        print(f"{r['chain']:4d} T={r['T']:.4f} λ={r['lam']:.2e} converged={r['converged']} "
              f"solve {r['solve_gap']:.2e} chain {r['chain_gap']:.2e} chain-solve "
              f"{r['chain_to_solve']:.2e}")  # fmt: skip
    worst = lambda k: max((r[k] for r in rows if r[k] == r[k]), default=math.nan)  # noqa: E731
    out = {
        "chains": len(rows),
        "converged_chain_stages": sum(r["converged"][2] for r in rows),
        "solve_default_off_by_more_than_1e-6": sum(r["solve_gap"] > robustness.AGREE for r in rows),
        "chain_off_by_more_than_1e-6": sum(r["chain_gap"] > robustness.AGREE for r in rows),
        "chain_to_solve_off_by_more_than_1e-6": sum(
            r["chain_to_solve"] > robustness.AGREE for r in rows
        ),
        "largest_solve_gap": worst("solve_gap"),
        "largest_chain_gap": worst("chain_gap"),
        "largest_chain_to_solve": worst("chain_to_solve"),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": out, "per_case": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()

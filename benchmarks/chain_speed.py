r"""Speed of the chain solver (``replica.solve_chain``) against a base commit, in one run (issue 23).

Chains: the noisy mixture α = 2, ρ = 0.5, Δ = 1, θ = 0.2, teacher λ̃ = 0.1, students λ = 0.1,
χ = 1, tempered="teacher" at T = 0.05 (nearly hard labels) and T = 0.5; 3 stages at both, and
2 stages at T = 0.5.  The base commit (``--base``, default ``e8a2dd3``, the commit before this
round of work) and this checkout each run in their own subprocess (``--worker``), taking turns
``--rounds`` times (the load of the shared machine drifts); medians.  The reference commit
(``--ref``, default ``39b8c30``: main before the chain's speed-up, which fixed the base's silent
failures) runs once, for the values (its times are printed too, from that one run): every stage's (ε, m, q, b, r) must agree with it to 1e-7.
Goals: the 3-stage chain ≥ 8× faster than the base at T = 0.05 and ≥ 5× at T = 0.5 (wall time;
the ratio of process CPU times is printed beside it, less sensitive to the shared machine's load).  For a goal
not met, a profile of this checkout's chain (cumulative time of ``replica.chain``'s functions).

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/chain_speed.py   # ~3 minutes, 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from base_checkout import HERE, checkout

#: the commit before this round of work, and main before the chain's speed-up
BASE_COMMIT, REF_COMMIT = "e8a2dd3", "39b8c30"
#: issue 23: the 3-stage chain this many times faster than the base, at T = 0.05 and T = 0.5
GOALS = {"3 stages, T=0.05": 8.0, "3 stages, T=0.5": 5.0}
#: values agree with the reference to this (relative, max(1, |x|))
VALUE_TOL = 1e-7


def cases():
    from kdtheory.problem import GaussianMixture, LogisticTeacher, Student

    data, teacher = GaussianMixture(2.0, 0.5, 1.0, flip=0.2), LogisticTeacher(0.1)
    out = {}
    for name, t, k in (("3 stages, T=0.05", 0.05, 3), ("3 stages, T=0.5", 0.5, 3),
                       ("2 stages, T=0.5", 0.5, 2)):  # fmt: skip
        out[name] = (data, teacher, [Student(0.1, 1.0, t, tempered="teacher")] * (k - 1))
    return out


def worker(path: Path, profile: bool) -> None:
    """Time each chain once (after a compiling solve) with the checkout on ``sys.path``; its
    values; with ``profile``, the cumulative time of ``replica.chain``'s functions."""
    import replica

    res = {"load": os.getloadavg()[0], "seconds": {}, "cpu": {}, "values": {}, "status": {}}
    res["profile"] = {}
    for name, (data, teacher, students) in cases().items():
        replica.solve_chain(data, teacher, students[:1])  # compile or load the numba cache
        t0, c0 = time.perf_counter(), time.process_time()
        sol = replica.solve_chain(data, teacher, students)
        res["seconds"][name] = time.perf_counter() - t0
        res["cpu"][name] = time.process_time() - c0
        res["status"][name] = sol.status
        res["values"][name] = [[s.eg, s.m, s.q, s.b, s.r] for s in sol.stages]
        if profile:
            import cProfile
            import pstats

            pr = cProfile.Profile()
            pr.runcall(replica.solve_chain, data, teacher, students)
            st = pstats.Stats(pr).stats
            rows = [(f"{Path(k[0]).name}:{k[2]}", v[3], v[1]) for k, v in st.items()
                    if "replica" in k[0] or "minpack" in k[0]]  # fmt: skip
            rows.sort(key=lambda r: -r[1])
            res["profile"][name] = [
                {"function": f, "cum_s": c, "calls": n} for f, c, n in rows[:10]
            ]
    path.write_text(json.dumps(res))


def run(root: Path, tmp: Path, label: str, profile: bool = False) -> dict:
    path = tmp / f"{label}.json"
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(path)]
    subprocess.run(cmd + (["--profile"] if profile else []), env=env, check=True, cwd=root)
    return json.loads(path.read_text())


def largest_difference(a: dict, b: dict) -> float:
    """max over chains, stages and (ε, m, q, b, r) of |a − b|/max(1, |a|) (r of stage 1: NaN)."""
    dev = 0.0
    for name in a:
        for sa, sb in zip(a[name], b[name], strict=True):
            for x, y in zip(sa, sb, strict=True):
                if x == x or y == y:
                    dev = max(dev, abs(x - y) / max(1.0, abs(x)) if x == x and y == y else 1.0)
    return dev


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default=BASE_COMMIT, help="the commit to time against")
    ap.add_argument("--ref", default=REF_COMMIT, help="the commit whose values must agree")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "benchmarks/results/chain_speed.json")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.profile)
        return 0
    sys.path.insert(0, str(HERE))  # this checkout's kdtheory (a worker's: its PYTHONPATH's)
    from kdtheory.journal import check_output_dir, write_atomic

    try:
        check_output_dir(args.out.parent, flag="--out")
    except ValueError as exc:
        ap.error(str(exc))
    runs = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp, checkout(args.base) as base:
        for _ in range(args.rounds):  # old and new in turn
            runs["old"].append(run(base, Path(tmp), "old"))
            runs["new"].append(run(HERE, Path(tmp), "new"))
        with checkout(args.ref) as ref:
            ref_run = run(ref, Path(tmp), "ref")
    ref_values = ref_run["values"]
    sec, cpu = (
        {
            k: {n: statistics.median(r[key][n] for r in v) for n in v[0][key]}
            for k, v in runs.items()
        }
        for key in ("seconds", "cpu")
    )
    load = [r["load"] for v in runs.values() for r in v]
    print(f"=== solve_chain: base {args.base} vs this checkout, medians of {args.rounds} "
          f"interleaved rounds; load {min(load):.1f}–{max(load):.1f} ===")  # fmt: skip
    print(f"  {'chain':20s}{'base s':>9s}{'new s':>9s}{'ratio':>8s}{'CPU ratio':>10s}{'goal':>7s}")
    ratio, unmet = {}, []
    for name in sec["old"]:
        ratio[name] = sec["old"][name] / sec["new"][name]
        goal = GOALS.get(name)
        mark = "" if goal is None else f"≥{goal:g} " + ("met" if ratio[name] >= goal else "NOT met")
        cr = cpu["old"][name] / cpu["new"][name]
        print(
            f"  {name:20s}{sec['old'][name]:9.2f}{sec['new'][name]:9.2f}{ratio[name]:8.1f}{cr:10.1f}"
            f"  {mark}"
        )
        if goal is not None and ratio[name] < goal:
            unmet.append(name)
    print(
        f"  {args.ref} (one run, after the rounds, load {ref_run['load']:.1f}): "
        + ", ".join(f"{n} {v:.2f} s" for n, v in ref_run["seconds"].items())
    )
    new_values, old_values = runs["new"][-1]["values"], runs["old"][-1]["values"]
    to_ref = largest_difference(ref_values, new_values)
    to_base = largest_difference(old_values, new_values)
    status = {n: runs["new"][-1]["status"][n] for n in new_values}
    print(f"  values (ε, m, q, b, r of every stage), largest relative difference: to {args.ref} "
          f"{to_ref:.1e} ({'≤' if to_ref <= VALUE_TOL else '>'} {VALUE_TOL:g}), to the base "
          f"{args.base} {to_base:.1e}; status {status}")  # fmt: skip
    profile = {}
    if unmet:
        with tempfile.TemporaryDirectory() as tmp:
            prof = run(HERE, Path(tmp), "profile", profile=True)
        for name in unmet:
            profile[name] = prof["profile"][name]
            print(f"\n  goal not met: {name} — where this checkout's time goes (cumulative):")
            for row in profile[name]:
                print(f"    {row['function']:40s}{row['cum_s']:8.2f} s{row['calls']:6d} calls")
    payload = {"cpu_seconds": cpu, "ref_seconds": ref_run["seconds"], "base": args.base, "ref": args.ref, "load": load, "seconds": sec, "ratio": ratio,
               "goals": GOALS, "unmet": unmet, "max_rel_diff_to_ref": to_ref,
               "max_rel_diff_to_base": to_base, "status": status, "profile": profile}  # fmt: skip
    write_atomic(args.out, lambda tmp: tmp.write_text(json.dumps(payload, indent=1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

r"""``replica.solve`` of this checkout against an older commit's over a spread of 60 points.

    python benchmarks/replica_agreement.py [--base e8a2dd3]     # about 2 minutes

The points: four data sets (θ = 0, 0.2, 0, 0.05), logistic teachers at λ̃ = 0.1 and 0.003 and the
Bayes teacher (θ = 0 only), six students (T from 0.05 to 5, η = 0.3 to 1, λ = 1e-3 to 0.1, χ = 0 to
1, both temperature conventions).  Each is solved by the base at tol 1e-10 and at tol 1e-13 (the
"converged" answer) and by this checkout at tol 1e-10, each in a subprocess on its own checkout
(the base in a temporary ``git worktree``).  Printed: the largest difference of any field of
teacher and student, relative to max(1, |value|), between new and base, base and the converged
answer, new and the converged answer; the points where new and base differ by more than 1e-9.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def points():
    from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student

    g = GaussianMixture
    data_sets = (
        g(2.0, 0.3, 1.0),
        g(3.0, 0.5, 0.5, flip=0.2),
        g(0.7, 0.1, 2.0),
        g(10.0, 0.5, 0.3, flip=0.05),
    )
    students = (
        Student(lam=0.05, chi=0.8, temperature=1.0, eta=0.5),
        Student(lam=0.003, chi=0.5, temperature=2.0),
        Student(lam=0.05, chi=1.0, temperature=0.05, eta=0.3),
        Student(lam=0.1, chi=0.6, temperature=0.5, tempered="teacher"),
        Student(lam=1e-3, chi=0.0, temperature=1.0),
        Student(lam=0.02, chi=1.0, temperature=5.0, eta=0.8, tempered="teacher"),
    )
    for data in data_sets:
        for teacher in (LogisticTeacher(0.1), LogisticTeacher(0.003), BayesTeacher()):
            if isinstance(teacher, BayesTeacher) and data.flip > 0:
                continue
            for st in students:
                yield Problem(data, teacher, st)


def worker(out: Path, tol: float) -> None:
    import replica

    res = []
    for p in points():
        s = replica.solve(p, tol=tol)
        res.append(
            {
                "converged": s.converged,
                "teacher": [float(v) for v in dataclasses.astuple(s.teacher)],
                "student": [float(v) for v in dataclasses.astuple(s.student)],
            }
        )
    out.write_text(json.dumps(res))


def largest(a, b) -> float:
    return max(
        abs(u - v) / max(1.0, abs(u))
        for k in ("teacher", "student")
        for u, v in zip(a[k], b[k], strict=True)
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="e8a2dd3", help="the older commit (default e8a2dd3)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(Path(args.worker[0]), float(args.worker[1]))
        return 0
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(here), "worktree", "add", "--detach", "-q", str(tree), args.base],
            check=True,
        )
        try:
            runs = {}
            for label, root, tol in (
                ("base", tree, 1e-10),
                ("truth", tree, 1e-13),
                ("new", here, 1e-10),
            ):
                path = Path(tmp) / f"{label}.json"
                env = {**os.environ, "PYTHONPATH": str(root)}
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--worker",
                    str(path),
                    str(tol),
                ]
                subprocess.run(cmd, env=env, check=True, cwd=root)
                runs[label] = json.loads(path.read_text())
        finally:
            subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(tree)])
    base, new, truth = runs["base"], runs["new"], runs["truth"]
    rows = []
    for i, (b, n, t) in enumerate(zip(base, new, truth, strict=True)):
        if b["converged"] != n["converged"]:
            print(f"point {i}: converged {b['converged']} (base) vs {n['converged']} (new)")
        if b["converged"] and n["converged"] and t["converged"]:
            rows.append((i, largest(b, n), largest(b, t), largest(n, t)))
    print(
        f"{len(base)} points, {sum(p['converged'] for p in new)} converged (new), "
        f"{sum(p['converged'] for p in base)} (base {args.base}); compared {len(rows)}"
    )
    print("largest relative difference (max(1, |value|)) over every field of teacher and student:")
    print(
        f"  new vs base {max(r[1] for r in rows):.1e}; base vs its tol-1e-13 answer "
        f"{max(r[2] for r in rows):.1e}; new vs that answer {max(r[3] for r in rows):.1e}"
    )
    for i, d_nb, d_bt, d_nt in rows:
        if d_nb > 1e-9:
            print(
                f"  point {i}: new vs base {d_nb:.1e}, base vs answer {d_bt:.1e}, new vs answer {d_nt:.1e}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

r"""Speed of the K-class replica solver against the peer's Monte-Carlo solver, in the same run.

Ours: ``replica.solve`` of a K = 3 point (simplex G, α = 2, Δ = 0.5, SoftmaxTeacher(0.5), a KD student
χ = 0.5, T = 2) — cold (the first solve of the process: numba's cached kernels loaded, nothing
warm-started) and again — and of a K = 10 point (orthogonal G, α = 2, Δ = 1, SoftmaxTeacher(0.1), the
same student), both to tol = 1e-10.

The baseline: GaussMixtureProject's ``multiK/replicasK.py`` (Loureiro et al. 2021), the cross-entropy
teacher alone (no student) at the same K = 3 point in its conventions (their λ_p = our λ, see
docs/peer_multiclass.md): their damped iteration (damping 0.7, 5·10⁴ Monte-Carlo samples per class
per step, which never meets their own stopping rule 1e-5 under that noise) for ``--peer-iters``
steps; at K = 10 one of their map evaluations, times ``--peer-iters`` (an estimate, labelled so).
Their code is fetched by you and given with ``--peer`` (not part of this package).

CPU seconds (``time.process_time``), one thread; report the machine's load (``uptime``) with them.

    python benchmarks/multiclass_speed.py --peer /path/to/GaussMixtureProject/multiK
    python benchmarks/multiclass_speed.py            # ours only
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

import numpy as np

import replica
from kdtheory import MulticlassMixture, Problem, SoftmaxTeacher, Student

STUDENT = Student(0.5, chi=0.5, temperature=2.0)


def timed(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer", default=None, help="folder holding their replicasK.py (optional)")
    ap.add_argument("--peer-iters", type=int, default=150, help="steps of their iteration")
    ap.add_argument("--no-k10", action="store_true", help="skip the K = 10 point")
    args = ap.parse_args(argv)
    print(f"load: {os.getloadavg()[0]:.1f} (1-min average) on {os.cpu_count()} CPUs")
    p3 = Problem(MulticlassMixture.simplex(2.0, 3, delta=0.5), SoftmaxTeacher(0.5), STUDENT)
    s3, cold = timed(lambda: replica.solve(p3))
    _, warm = timed(lambda: replica.solve(p3))
    print(f"ours K = 3: cold {cold:.2f} s, again {warm:.2f} s CPU; converged={s3.converged}, "
          f"teacher ε_g = {s3.teacher.eg:.6f}, student ε_g = {s3.student.eg:.6f}")  # fmt: skip
    t10 = None
    if not args.no_k10:
        p10 = Problem(MulticlassMixture.orthogonal(2.0, 10), SoftmaxTeacher(0.1),
                      Student(0.1, chi=0.5, temperature=2.0))  # fmt: skip
        s10, t10 = timed(lambda: replica.solve(p10))
        print(f"ours K = 10: {t10:.1f} s CPU; converged={s10.converged}, teacher ε_g = "
              f"{s10.teacher.eg:.5f} ± {s10.teacher.eg_se:.1e}, student ε_g = "
              f"{s10.student.eg:.5f} ± {s10.student.eg_se:.1e}")  # fmt: skip
    if args.peer is None:
        return 0
    if not (Path(args.peer) / "replicasK.py").is_file():
        print(f"--peer: no replicasK.py in {args.peer}", file=sys.stderr)
        return 2
    sys.path.insert(0, args.peer)
    peer = importlib.import_module("replicasK")
    K = 3
    G = peer.get_means(K, model="simplex")
    prob = np.full(K, 1.0 / K)
    np.random.seed(0)  # noqa: NPY002 (their code draws from the global state)
    out, t_peer = timed(lambda: peer.iterate(2.0, 0.5, 0.5, G, prob, "log",
                                             max_iter=args.peer_iters, qi=np.eye(K), Vi=np.eye(K),
                                             mi=np.ones(K), bi=np.zeros(K)))  # fmt: skip
    print(f"theirs K = 3 (teacher only, {out[4]} steps + their final 10⁶-sample test error): "
          f"{t_peer:.1f} s CPU, ε_g = {out[5]:.5f} (ours {s3.teacher.eg:.5f})")  # fmt: skip
    print(f"ratio K = 3: theirs (teacher) / ours (teacher + student, cold) = {t_peer / cold:.1f}")
    if t10 is not None:
        K = 10
        peer.IDE = np.tensordot(np.identity(K), np.ones(peer.itera), axes=0)
        peer.IDEK = np.tensordot(np.identity(K), np.ones((K, peer.itera)), axes=0)
        G = peer.get_means(K, model="random")  # their "random" is the identity: orthogonal
        prob = np.full(K, 1.0 / K)
        _, t_map = timed(lambda: peer.update_sp(np.eye(K), np.eye(K), np.eye(K), np.zeros(K),
                                                2.0, 0.1, 1.0, G, prob, "log"))  # fmt: skip
        est = t_map * args.peer_iters
        print(f"theirs K = 10: one map evaluation {t_map:.1f} s CPU; × {args.peer_iters} steps ≈ "
              f"{est:.0f} s (estimate); ratio to ours ≈ {est / t10:.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

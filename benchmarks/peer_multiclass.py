r"""The K = 3 cross-entropy teacher against GaussMixtureProject's ``multiK/replicasK.py``.

The peer: Loureiro, Sicuro, Gerbelot, Pacco, Krzakala & Zdeborová, *Learning Gaussian mixtures with
generalised linear models: precise asymptotics in high dimensions* (2021), public code in the GitHub
repository IdePHICS/GaussMixtureProject.  Their code is not part of this package: fetch it yourself
and give the folder holding ``replicasK.py`` with ``--peer`` (it is imported from there at run time).

Their conventions, mapped to ours (docs/peer_multiclass.md):
* their cross-entropy puts their λ inside the softmax with a unit ridge, and their channel
  ``f = e_y − softmax(η/λ_p)`` (no 1/λ_p) is −∇ of λ_p CE(y, softmax(η/λ_p)): they minimise
  Σ λ_p CE(y, softmax(h/λ_p)) + ½‖W‖².  With W = λ_p W_o, b = λ_p b_o and the objective divided by
  λ_p this is Σ CE(y, softmax(h_o)) + (λ_p/2)‖W_o‖²: our SoftmaxTeacher(λ = λ_p), with
  M_p = λ_p M, b_p = λ_p b;
* their Q and V carry the noise: Q_p = Δ λ_p² Q (the fields' covariance), V_p = λ_p Δ V on the
  space ⟂ 1 (and Δ along 1, where it does not matter);
* their Gram matrix ``get_means(K, 'simplex')`` is our ``MulticlassMixture.simplex(α, K)``.

Two checks per point:
1. their map at our fixed point: ``update_sp`` (their one undamped step, Monte Carlo with 5·10⁴
   samples per class) evaluated ``--repeats`` times at our solution converted to their units; the
   mean change of each order parameter and its standard error over the repeats say whether our
   fixed point is theirs (a change within a few s.e.: the equations agree);
2. their own iteration (damping 0.7, from their notebook's start) for ``--iters`` steps, its test
   error (their Monte Carlo, 10⁶ samples) against ours (exact for K = 3).

    python benchmarks/peer_multiclass.py --peer /path/to/GaussMixtureProject/multiK
    python benchmarks/peer_multiclass.py --peer DIR --iters 0    # the map check only (~1 min/point)
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

import replica
from kdtheory import MulticlassMixture, Problem, SoftmaxTeacher, Student

#: (α, λ_p, Δ, ρ): their λ_p inside the softmax; ρ None = uniform
POINTS = [
    (2.0, 0.5, 0.5, None),
    (1.0, 1.0, 1.0, None),
    (3.0, 0.3, 0.5, None),
    (2.0, 0.5, 0.5, (0.2, 0.3, 0.5)),
]


def to_peer(sol, lam_p: float, delta: float):
    """Our teacher (M, Q, V, b) in their units."""
    t = sol.teacher
    K = t.M.shape[0]
    V = lam_p * delta * t.V + delta * np.ones((K, K)) / K
    return delta * lam_p**2 * t.Q, lam_p * t.M, V, lam_p * t.b


def fixed_map(peer, V, Q, M, b, alpha, lam_p, delta, G, prob, rng):
    """Their one-step map with two index conventions changed (``--fixed``), in their units:
    the bias added along the component axis (ω_i | c = M_ic + b_i, as their own test error reads
    it; their training fields add b along the class axis) and M̂_ic = αρ_c E[f_i | c] (their M̂ is
    its transpose).  The proximal step is their ``get_eta`` (Monte Carlo, ``peer.itera`` samples per
    class); everything else follows docs/theory.md in their units."""
    K = prob.size
    n = peer.itera
    root = np.real(peer.sqrtm(Q))
    omega = np.einsum("ij,jcs->ics", root, rng.standard_normal((K, K, n)))
    omega += (M + b[:, None])[:, :, None]
    f = peer.get_eta(omega, V, lam_p)  # f[i, c, s] = e_c − softmax(η/λ_p) at their prox point
    eta = np.einsum("ij,jcs->ics", V, f) + omega
    hess = peer.lxx(eta / lam_p) / lam_p  # [i, j, c, s]
    resp = np.linalg.inv(np.eye(K) + np.einsum("ijcs,jk->csik", hess, V))  # (I + H V)⁻¹
    M_hat = alpha * f.mean(axis=2) * prob[None, :]
    Q_hat = alpha * delta * np.einsum("c,ics,jcs->ij", prob, f, f) / n
    V_hat = alpha * delta * np.einsum("c,csik,kjcs->ij", prob, resp, hess) / n
    inv = np.linalg.inv(np.eye(K) + V_hat)
    b_new = np.einsum("c,ics->i", prob, eta - M[:, :, None]) / n
    return delta * inv @ (Q_hat + M_hat @ G @ M_hat.T) @ inv, inv @ M_hat @ G, delta * inv, b_new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer", required=True, help="folder holding their replicasK.py")
    ap.add_argument("--repeats", type=int, default=4, help="evaluations of their map per point")
    ap.add_argument("--iters", type=int, default=40, help="steps of their own iteration (0: skip)")
    ap.add_argument("--points", default="all", help="comma-separated indices of POINTS, or all")
    ap.add_argument(
        "--fixed",
        action="store_true",
        help="also evaluate their map with the two index conventions changed",
    )
    ap.add_argument("--out", default=None, help="write the results as JSON to this file")
    args = ap.parse_args(argv)
    peer_dir = Path(args.peer)
    if not (peer_dir / "replicasK.py").is_file():
        print(f"--peer: no replicasK.py in {peer_dir}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(peer_dir))
    peer = importlib.import_module("replicasK")
    idx = range(len(POINTS)) if args.points == "all" else [int(i) for i in args.points.split(",")]
    K = 3
    rows = []
    for i in idx:
        alpha, lam_p, delta, rho = POINTS[i]
        prob = np.full(K, 1.0 / K) if rho is None else np.array(rho)
        G = peer.get_means(K, model="simplex")
        data = MulticlassMixture(alpha, G, rho=prob, delta=delta)
        assert np.allclose(data.gram, MulticlassMixture.simplex(alpha, K).gram)
        t0 = time.process_time()
        sol = replica.solve(Problem(data, SoftmaxTeacher(lam_p), Student(1.0, chi=0.0)))
        t_ours = time.process_time() - t0
        Q, M, V, b = to_peer(sol, lam_p, delta)
        row = {"alpha": alpha, "lam_p": lam_p, "delta": delta, "rho": prob.tolist(),
               "ours": {"eg": sol.teacher.eg, "M": M.tolist(), "Q": Q.tolist(), "b": b.tolist(),
                        "converged": sol.converged, "cpu_s": t_ours}}  # fmt: skip
        print(f"point {i}: α={alpha:g} λ_p = λ = {lam_p:g} Δ={delta:g} ρ={prob.round(3)}")
        print(f"  ours: ε_g = {sol.teacher.eg:.6f} ({t_ours:.1f} s CPU), converged={sol.converged}")
        # 1. their map at our fixed point
        peer.IDE = np.tensordot(np.identity(K), np.ones(peer.itera), axes=0)
        peer.IDEK = np.tensordot(np.identity(K), np.ones((K, peer.itera)), axes=0)
        names = [f"M{a}{c}" for a in range(K) for c in range(K)]
        names += [f"Q{a}{c}" for a in range(K) for c in range(K)] + [f"b{a}" for a in range(K)]
        maps = {"their map": None}
        if args.fixed:
            maps["their map, indices fixed"] = fixed_map
        for label, fixed in maps.items():
            steps = []
            t0 = time.process_time()
            for r in range(args.repeats):
                np.random.seed(1000 + r)  # noqa: NPY002 (their code draws from the global state)
                if fixed is None:
                    q1, m1, _, b1 = peer.update_sp(V, Q, M, b, alpha, lam_p, delta, G, prob, "log")
                else:
                    rng = np.random.default_rng(1000 + r)
                    q1, m1, _, b1 = fixed(peer, V, Q, M, b, alpha, lam_p, delta, G, prob, rng)
                steps.append(np.concatenate([(m1 - M).ravel(), (q1 - Q).ravel(), (b1 - b).ravel()]))
            t_map = (time.process_time() - t0) / args.repeats
            steps = np.array(steps)
            mean = steps.mean(0)
            se = steps.std(0, ddof=1) / np.sqrt(len(steps))
            z = np.abs(mean) / np.where(se > 0, se, np.nan)
            worst = int(np.nanargmax(np.abs(mean)))
            print(f"  {label} at our fixed point ({args.repeats} MC repeats, {t_map:.1f} s CPU each):"
                  f" largest mean change {mean[worst]:+.2e} in {names[worst]} (s.e. {se[worst]:.1e}),"
                  f" largest |change|/s.e. {np.nanmax(z):.1f} in {names[int(np.nanargmax(z))]}")  # fmt: skip
            row[label] = {"names": names, "mean": mean.tolist(), "se": se.tolist(),
                          "cpu_s_per_map": t_map}  # fmt: skip
        # 2. their own iteration
        if args.iters > 0:
            np.random.seed(0)  # noqa: NPY002 (their code draws from the global state)
            t0 = time.process_time()
            out = peer.iterate(alpha, lam_p, delta, G, prob, "log", max_iter=args.iters,
                               qi=np.eye(K), Vi=np.eye(K), mi=np.ones(K), bi=np.zeros(K))  # fmt: skip
            t_it = time.process_time() - t0
            Qp, Mp, _, bp, steps_done, eg_p, _ = out
            print(f"  their iteration: {steps_done} steps ({t_it:.0f} s CPU): ε_g = {eg_p:.6f}"
                  f" (MC s.e. ≈ {np.sqrt(eg_p * (1 - eg_p) / 3e6):.1e}); ours − theirs = "
                  f"{sol.teacher.eg - eg_p:+.2e}; max|ΔM| = {np.max(np.abs(Mp - M)):.2e},"
                  f" max|ΔQ| = {np.max(np.abs(Qp - Q)):.2e}, max|Δb| = {np.max(np.abs(bp - b)):.2e}")  # fmt: skip
            row["theirs"] = {"eg": float(eg_p), "M": Mp.tolist(), "Q": Qp.tolist(),
                             "b": bp.tolist(), "steps": int(steps_done), "cpu_s": t_it}  # fmt: skip
        rows.append(row)
    if args.out:
        from kdtheory.journal import write_atomic

        text = json.dumps(rows, indent=1)
        write_atomic(Path(args.out), lambda tmp: tmp.write_text(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

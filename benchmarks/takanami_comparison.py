r"""Takanami, Takahashi & Sakata's self-distillation figure (BCE panel) redone with this package.

The peer: Takanami, Takahashi & Sakata, *The effect of optimal self-distillation in noisy Gaussian
mixture model* (2025), notebook ``Theory/Self_Distillaton.ipynb`` of their public code, cells 6–7:
noisy labels (θ = 0.2), ρ = 0.4, Δ = 0.5; stage 1 an L2 logistic regression (λ₁ = 1.5) on the noisy
labels; stage t = 2, 3 trained only on the soft labels sig(β_{t−1} h_{t−1}) of stage t − 1 on the
same inputs, student output sig(h), ridge λ_t (λ = 1.5, 0.5, 2.0; β = 0.8, 1.2). Their theory
(Monte Carlo over 10⁴ field samples) on α ∈ [1, 6] (20 points), their experiments (N = 1000, 20
trials) at α ∈ {1.5, 3, 5}; both read off their stored figure into
``benchmarks/data/takanami2025_bce.json`` (see ``benchmarks/data/takanami2025_extract.py``).

Here, at their parameters: ``replica.solve_chain`` with a ``LogisticTeacher(λ₁)`` and two
``Student(λ_t, chi=1, temperature=1/β_{t−1}, tempered="teacher")`` (exact quadrature) on their α
grid and at their experimental α's, and (unless ``--no-sims``) ``simulations.run_chain`` at
N = ``--n`` with ``--seeds`` seeds there. Printed: per stage the largest |ours − theirs| of the
theories (and where), our simulations against our theory (z = difference / s.e.) and against their
experimental points. Written to ``--out``: ``takanami_comparison.json`` and
``takanami_comparison.png`` (theirs vs ours, per stage, and the difference of the theories).

``--peer-mc SEEDS`` also runs :func:`peer_monte_carlo`, their Monte-Carlo equations re-implemented,
with SEEDS independent field samples at their experimental α's: the spread over seeds is the
Monte-Carlo error of their curves, and a paired run with the full linear response between stages
(their code keeps only the previous stage's term, see :func:`peer_monte_carlo`) measures what that
choice changes at stage 3.

    python benchmarks/takanami_comparison.py --no-sims         # theory only, ~40 s
    python benchmarks/takanami_comparison.py                   # + N = 1000, 20 seeds: ~1 min more
    python benchmarks/takanami_comparison.py --no-sims --peer-mc 4   # + ~30 s per α and seed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import expit, ndtr

import replica
import simulations
from kdtheory import GaussianMixture, LogisticTeacher, Student
from kdtheory.journal import check_output_dir, write_atomic

DATA = Path(__file__).resolve().parent / "data" / "takanami2025_bce.json"
READ_ERROR = 5e-4  # accuracy of their curves as read off the PNG (0.7 px; see the data file)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def chain(alpha: float, par: dict) -> tuple[GaussianMixture, LogisticTeacher, list[Student]]:
    """Their three-stage chain at α in this package's vocabulary (T_t = 1/β_{t−1}, χ = 1)."""
    data = GaussianMixture(alpha, par["rho"], par["delta"], flip=par["theta"])
    students = [
        Student(lam, chi=1.0, temperature=1.0 / beta, tempered="teacher")
        for lam, beta in zip(par["lam"][1:], par["beta"], strict=True)
    ]
    return data, LogisticTeacher(par["lam"][0]), students


def theory(alphas, par: dict) -> list[dict]:
    """``replica.solve_chain`` at each α: per stage (m, q, b, r, ε_g, its s.e., converged)."""
    rows = []
    for alpha in alphas:
        t0 = time.perf_counter()
        sol = replica.solve_chain(*chain(alpha, par))
        rows.append(
            dict(
                alpha=float(alpha),
                converged=bool(sol.converged),
                status=sol.status,
                message=sol.message,
                wall_s=time.perf_counter() - t0,
                stages=[
                    dict(m=s.m, q=s.q, b=s.b, r=s.r, eg=s.eg, eg_se=s.eg_se, converged=s.converged)
                    for s in sol.stages
                ],
            )
        )
    return rows


def simulate(alphas, par: dict, n: int, seeds: int, seed: int, jobs: int) -> list[dict]:
    """``simulations.run_chain`` at each α: per stage ε_g mean, s.e. and the converged seeds."""
    rows = []
    for alpha in alphas:
        t0 = time.perf_counter()
        res = simulations.run_chain(*chain(alpha, par), n, seeds, seed=seed, n_jobs=jobs)
        rows.append(
            dict(
                alpha=float(alpha),
                n=n,
                seeds=seeds,
                n_failed=res.n_failed,
                wall_s=time.perf_counter() - t0,
                stages=[dict(eg=s.eg.mean, se=s.eg.sem, count=s.eg.count) for s in res.stages],
            )
        )
    return rows


def _prox_bce(omega: np.ndarray, target, dchi: float, max_iter: int = 200) -> np.ndarray:
    """z solving g(z) = z/(Δχ) + sig(ω + z) − p = 0 (g increasing): Newton kept inside the bracket
    Δχ (p − 1) < z < Δχ p, bisecting when a step leaves it, until |g| ≤ 1e-14."""
    lo, hi = dchi * (target - 1.0), dchi * target
    z = np.clip(-omega, lo, hi)
    for _ in range(max_iter):
        s = expit(omega + z)
        g = z / dchi + s - target
        if np.abs(g).max() <= 1e-14:
            break
        lo, hi = np.where(g < 0, z, lo), np.where(g > 0, z, hi)
        zn = z - g / (1.0 / dchi + s * (1.0 - s))
        z = np.where((zn <= lo) | (zn >= hi), 0.5 * (lo + hi), zn)
    return z


def peer_monte_carlo(
    alpha: float,
    par: dict,
    *,
    nsamp: int = 10**4,
    seed: int = 0,
    damping: float = 0.9,
    tol: float = 1e-7,
    max_iter: int = 700,
    full_response: bool = False,
) -> dict:
    r"""Takanami et al.'s Monte-Carlo chain equations (their ``t_replica``, BCE), re-implemented.

    Stage t is iterated to its fixed point with stages < t frozen. Fields: one array ξ of
    ``nsamp`` × K normals; stage t's cavity field is ω_t = y m_t + b_t + (Uᵀξ)_t + Σ_{s<t}
    (χ_st/χ_ss) z_s (ΔQ = UᵀU, z_s the earlier stages' prox displacements); z_t solves
    z/(Δχ_tt) + sig(ω_t + z) = p, p the 0/1 noisy label (t = 1) or sig(β_{t−1}(ω_{t−1} + z_{t−1})).
    Class y = ±1 and flip are summed exactly (weights ρ(1−θ), ρθ, (1−ρ)(1−θ), (1−ρ)θ). Hats:
    Q̂_{·t} = U⁻¹(−α E[ξ z_t]/χ_tt), χ̂_st = α E[z_s z_t]/(Δχ_ssχ_tt), m̂_t = α E[y z_t]/(Δχ_tt),
    b_t ← b_t + E[z_t]; z_t damped by ``damping`` against the previous iteration. Order parameters:
    A_t = Q̂_tt + λ_t, m_t = (m̂_t − Σ_{r<t} Q̂_rt m_r)/A_t, Q from the noise covariances R, χ_tt =
    1/A_t and, as in their code, χ_rt = −Q̂_{t−1,t} χ_{r,t−1}/A_t; with ``full_response`` the
    response of the linear stage map instead, χ_rt = −Σ_{s=r}^{t−1} Q̂_st χ_rs/A_t (they differ
    from stage 3 on). Returns ε_g, m, q, b per stage and the iterations per stage.
    """
    lam, beta = par["lam"], par["beta"]
    rho, delta, theta = par["rho"], par["delta"], par["theta"]
    k = len(lam)
    xi = np.random.default_rng(seed).standard_normal((nsamp, k))
    y = np.array([1.0, 1.0, -1.0, -1.0])  # cluster label of the four cases
    label = np.array([1.0, 0.0, 0.0, 1.0])  # their 0/1 training label (cases 2, 4 flipped)
    weight = np.array([rho * (1 - theta), rho * theta, (1 - rho) * (1 - theta), (1 - rho) * theta])

    def mean(a: np.ndarray) -> float:
        return float(weight @ a.mean(axis=1))

    big = 1e4  # their cold start
    chi, chi_h = np.triu(np.ones((k, k))), np.triu(np.ones((k, k)))
    q, q_h = np.diag(np.full(k, big)), np.diag(np.full(k, big))
    for a in (chi, chi_h):
        np.fill_diagonal(a, big)
    m, m_h, b, r = np.ones(k), np.ones(k), np.zeros(k), np.ones((k, k))
    z = np.zeros((4, nsamp, k))
    z_prev, omega_prev, omega = np.zeros((4, nsamp)), np.zeros((4, nsamp)), np.zeros((4, nsamp))
    iterations = []
    for t in range(k):
        it = 0
        while it < max_iter:
            it += 1
            a_ = np.diag(q_h) + np.asarray(lam, dtype=float)
            r[t, 0] = chi_h[0, t] / a_[0]
            for s in range(1, t + 1):
                r[t, s] = (chi_h[s, t] - q_h[:s, s] @ r[t, :s]) / a_[s]
            for s in range(t):
                r[s, t] = (chi_h[s, t] - q_h[:t, t] @ r[s, :t]) / a_[t]
            m[1 : t + 1] = [(m_h[s] - q_h[:s, s] @ m[:s]) / a_[s] for s in range(1, t + 1)]
            m[0] = m_h[0] / a_[0]
            for s in range(t + 1):
                q[s, t] = (m[t] * m_h[s] + r[s, t] - q_h[:s, s] @ q[:s, t]) / a_[s]
            if full_response:
                chi[:t, t] = [-(q_h[j:t, t] @ chi[j, j:t]) / a_[t] for j in range(t)]
            elif t:
                chi[:t, t] = -q_h[t - 1, t] / a_[t] * chi[:t, t - 1]
            chi[t, t] = 1.0 / a_[t]
            cov = np.triu(q[: t + 1, : t + 1])
            cov = cov + np.triu(cov, 1).T
            low = np.linalg.eigvalsh(cov).min()
            if low < 0:  # their repair of a non-PSD Q (in place, earlier stages included)
                q[: t + 1, : t + 1] += (abs(low) + 1e-6) * np.eye(t + 1)
                cov += (abs(low) + 1e-6) * np.eye(t + 1)
            u_ = np.linalg.cholesky(delta * cov).T  # upper: ΔQ = UᵀU
            shift = chi[:t, t] / np.diag(chi)[:t]
            omega[:] = (xi[:, : t + 1] @ u_[:, t])[None] + y[:, None] * m[t] + b[t]
            omega += z[:, :, :t] @ shift
            p = label[:, None] if t == 0 else expit(beta[t - 1] * (omega_prev + z[:, :, t - 1]))
            z[:, :, t] = _prox_bce(omega, p, delta * chi[t, t])
            zt = damping * z[:, :, t] + (1 - damping) * z_prev
            old = np.concatenate([q_h.ravel(), m_h, chi_h.ravel()])
            g = [-alpha / chi[t, t] * mean(zt * xi[None, :, s]) for s in range(t + 1)]
            q_h[: t + 1, t] = np.linalg.solve(u_, g)
            for s in range(t):
                chi_h[s, t] = alpha * mean(zt * z[:, :, s]) / (delta * chi[t, t] * chi[s, s])
            chi_h[t, t] = alpha * mean(zt * zt) / (delta * chi[t, t] ** 2)
            if t == 0:  # their form: 2ρE[z | y = +1], equal to E[y z] once E[z] = 0
                m_h[0] = 2 * alpha * float(weight[:2] @ zt[:2].mean(axis=1)) / (delta * chi[0, 0])
            else:
                m_h[t] = alpha * mean(y[:, None] * zt) / (delta * chi[t, t])
            b[t] = 0.0 if rho == 0.5 else b[t] + mean(zt)
            z_prev = zt
            new = np.concatenate([q_h.ravel(), m_h, chi_h.ravel()])
            blown = max(abs(q[:, t]).max(), abs(q_h[:, t]).max(), abs(chi_h[:, t]).max()) > 1e60
            if np.abs(new - old).max() < tol or blown:
                break
        iterations.append(it)
        omega_prev = omega.copy()
    sd = np.sqrt(delta * np.abs(np.diag(q)))
    eg = rho * ndtr(-(m + b) / sd) + (1 - rho) * ndtr(-(m - b) / sd)
    return dict(
        eg=eg.tolist(), m=m.tolist(), q=np.diag(q).tolist(), b=b.tolist(), iterations=iterations
    )


def peer_spread(alphas, par: dict, ours_at: list[dict], seeds: int, nsamp: int) -> list[dict]:
    """Their estimator over ``seeds`` field samples at each α, with their χ recursion and with the
    full response (paired: same ξ): per stage the mean ± std of ε_g, the mean effect of the full
    response, and our exact ε_g."""
    rows = []
    for alpha in alphas:
        runs = {
            full: [
                peer_monte_carlo(alpha, par, nsamp=nsamp, seed=i, full_response=full)["eg"]
                for i in range(seeds)
            ]
            for full in (False, True)
        }
        theirs, fixed = np.array(runs[False]), np.array(runs[True])
        exact = next(r for r in ours_at if r["alpha"] == alpha)["stages"]
        rows.append(
            dict(
                alpha=float(alpha),
                nsamp=nsamp,
                seeds=seeds,
                mean=theirs.mean(0).tolist(),
                std=theirs.std(0, ddof=1).tolist(),
                full_response_effect=(fixed - theirs).mean(0).tolist(),
                full_response_effect_std=(fixed - theirs).std(0, ddof=1).tolist(),
                full_response_mean=fixed.mean(0).tolist(),
                exact=[s["eg"] for s in exact],
            )
        )
    return rows


def compare_theories(peer: dict, ours: list[dict]) -> list[dict]:
    """Per stage: ours − theirs on their grid, the largest |difference| and its α (converged only)."""
    out = []
    for k in range(peer["parameters"]["stages"]):
        theirs = np.array(peer["theory"][str(k + 1)]["eg"])
        mine = np.array(
            [r["stages"][k]["eg"] if r["stages"][k]["converged"] else math.nan for r in ours]
        )
        diff = mine - theirs
        i = int(np.nanargmax(np.abs(diff))) if np.isfinite(diff).any() else 0
        out.append(
            dict(
                stage=k + 1,
                diff=[None if math.isnan(d) else float(d) for d in diff],
                max_abs=float(abs(diff[i])),
                at_alpha=peer["alpha"][i],
            )
        )
    return out


def _z(diff: float, se: float) -> float | None:
    """diff / se; None where the spread vanishes (stage 3 at small α: every seed predicts the
    majority class, ε_g = ρ up to ~1e-9)."""
    return diff / se if se > 1e-6 else None


def compare_points(peer: dict, ours_at: list[dict], sims: list[dict] | None) -> list[dict]:
    """Their experiments, our theory and our simulations at their experimental α's."""
    rows = []
    for p in peer["experiment"]:
        k, alpha = p["stage"] - 1, p["alpha"]
        th = next(r for r in ours_at if r["alpha"] == alpha)["stages"][k]["eg"]
        row = dict(stage=p["stage"], alpha=alpha, theirs=p["eg"], theirs_se=p["se"], ours=th)
        if sims is not None:
            s = next(r for r in sims if r["alpha"] == alpha)["stages"][k]
            row.update(sim=s["eg"], sim_se=s["se"], z_sim_theory=_z(s["eg"] - th, s["se"]))
            if p["se"] is not None:
                row["z_sim_theirs"] = _z(s["eg"] - p["eg"], math.hypot(s["se"], p["se"]))
        rows.append(row)
    return rows


def figure(peer: dict, ours: list[dict], points: list[dict], path: Path) -> None:
    """Left: ε_g(α) per stage, theirs (dashed, open) vs ours (solid, filled); right: ours − theirs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = ("tab:blue", "tab:red", "tab:green")
    alpha = np.array(peer["alpha"])
    fig, (ax, axd) = plt.subplots(1, 2, figsize=(10, 4.8), layout="constrained")
    for k, c in enumerate(colours):
        theirs = np.array(peer["theory"][str(k + 1)]["eg"])
        mine = np.array([r["stages"][k]["eg"] for r in ours])
        ax.plot(alpha, theirs, "--", color=c, label=f"stage {k + 1}, Takanami et al.")
        ax.plot(alpha, mine, "-", color=c, lw=1, label=f"stage {k + 1}, this package")
        axd.plot(alpha, mine - theirs, "-o", ms=3, color=c, label=f"stage {k + 1}")
        for p in (p for p in points if p["stage"] == k + 1):
            ax.errorbar(p["alpha"] - 0.04, p["theirs"], p["theirs_se"] or 0, fmt="o", mfc="none",
                        color=c, ms=5, capsize=2)  # fmt: skip
            if "sim" in p:
                ax.errorbar(p["alpha"] + 0.04, p["sim"], p["sim_se"], fmt="o", color=c, ms=4,
                            capsize=2)  # fmt: skip
    ax.plot([], [], "o", mfc="none", color="k", label="their experiments (N = 1000, 20 trials)")
    ax.plot([], [], "o", color="k", label="our simulations")
    axd.axhspan(-READ_ERROR, READ_ERROR, color="0.9", label="reading accuracy of their curves")
    ax.set(xlabel="α", ylabel="test error ε_g", title="BCE, ρ = 0.4, Δ = 0.5, θ = 0.2")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=7)
    axd.set(xlabel="α", ylabel="ε_g (this package) − ε_g (Takanami et al.)", title="theories")
    axd.axhline(0.0, color="k", lw=0.5)
    axd.legend(fontsize=7)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="takanami_comparison", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="dimension N of the simulations (1000)")
    ap.add_argument("--seeds", type=int, default=20, help="simulation seeds per α (20)")
    ap.add_argument("--seed", type=int, default=0, help="root seed of the simulations (0)")
    ap.add_argument("--jobs", type=int, default=1, help="joblib workers of the simulations (1)")
    ap.add_argument("--no-sims", action="store_true", help="theory only")
    ap.add_argument(
        "--peer-mc",
        type=int,
        default=0,
        metavar="SEEDS",
        help="also run their Monte-Carlo equations (re-implemented) with SEEDS field "
        "samples at their experimental α's, both χ recursions (default 0: off)",
    )
    ap.add_argument("--nsamp", type=int, default=10**4, help="field samples of --peer-mc (10⁴)")
    ap.add_argument("--out", default="benchmarks/results", help="folder of the JSON and PNG files")
    args = ap.parse_args(argv)
    if args.n < 10 or args.seeds < 2 or args.seed < 0 or not (args.jobs >= 1 or args.jobs == -1):
        ap.error("--n must be ≥ 10, --seeds ≥ 2, --seed ≥ 0 and --jobs ≥ 1 (or −1)")
    if args.peer_mc < 0 or args.peer_mc == 1 or args.nsamp < 100:
        ap.error("--peer-mc must be 0 (off) or ≥ 2 and --nsamp ≥ 100")
    if not hasattr(replica, "solve_chain"):
        ap.error("replica.solve_chain is missing in this checkout (the chain solver of issue 16)")
    if not args.no_sims and not hasattr(simulations, "run_chain"):
        ap.error("simulations.run_chain is missing in this checkout; run with --no-sims")
    try:
        out = check_output_dir(Path(args.out), flag="--out")
    except ValueError as exc:
        ap.error(str(exc))
    peer = json.loads(DATA.read_text())
    par = peer["parameters"]
    alphas_exp = sorted({p["alpha"] for p in peer["experiment"]})
    t0 = time.perf_counter()
    ours = theory(peer["alpha"], par)
    ours_at = theory(alphas_exp, par)
    t_theory = time.perf_counter() - t0
    sims = None
    if not args.no_sims:
        sims = simulate(alphas_exp, par, args.n, args.seeds, args.seed, args.jobs)
    spread = None
    if args.peer_mc:
        spread = peer_spread(alphas_exp, par, ours_at, args.peer_mc, args.nsamp)
    diffs = compare_theories(peer, ours)
    points = compare_points(peer, ours_at, sims)

    bad = [r["alpha"] for r in ours + ours_at if not r["converged"]]
    print(f"theory: {len(ours) + len(ours_at)} chains in {t_theory:.0f} s"
          + (f"; not converged at α = {bad}" if bad else ""))  # fmt: skip
    print("\n| α | " + " | ".join(f"stage {k} ours / theirs" for k in (1, 2, 3)) + " |")
    print("|---|---|---|---|")
    for i, a in enumerate(peer["alpha"]):
        cells = [
            f"{ours[i]['stages'][k]['eg']:.4f} / {peer['theory'][str(k + 1)]['eg'][i]:.4f}"
            for k in range(3)
        ]
        print(f"| {a:.3f} | " + " | ".join(cells) + " |")
    print("\nlargest |ours − theirs| of the theories (their curves read to ±0.0005):")
    for d in diffs:
        print(f"  stage {d['stage']}: {d['max_abs']:.4f} at α = {d['at_alpha']:.3f}")
    print("\n| stage | α | theirs exp. | ours theory | " + ("ours sim. (N) | z sim−theory | "
          "z sim−theirs |" if sims else ""))  # fmt: skip
    for p in points:
        se = "—" if p["theirs_se"] is None else f"{p['theirs_se']:.4f}"
        line = f"| {p['stage']} | {p['alpha']:g} | {p['theirs']:.4f} ± {se} | {p['ours']:.4f} |"
        if sims:
            z1, z2 = (p.get(k) for k in ("z_sim_theory", "z_sim_theirs"))
            z1, z2 = ("—" if z is None else f"{z:+.1f}" for z in (z1, z2))
            line += f" {p['sim']:.4f} ± {p['sim_se']:.4f} | {z1} | {z2} |"
        print(line)
    if sims:
        worst = max(abs(p["z_sim_theory"]) for p in points if p["z_sim_theory"] is not None)
        print(f"\nsimulations (N = {args.n}, {args.seeds} seeds) vs our theory: max |z| = "
              f"{worst:.1f}; failed seeds: {[r['n_failed'] for r in sims]}")  # fmt: skip
    if spread:
        print(f"\ntheir Monte-Carlo equations ({args.nsamp} samples, {args.peer_mc} seeds): "
              "mean ± std over seeds | exact (ours) | effect of the full response (paired), ± std")  # fmt: skip
        for row in spread:
            cells = [
                f"{row['mean'][k]:.4f} ± {row['std'][k]:.4f} | {row['exact'][k]:.4f} | "
                f"{row['full_response_effect'][k]:+.5f} ± {row['full_response_effect_std'][k]:.5f}"
                for k in range(3)
            ]
            print(f"  α = {row['alpha']:g}: " + "  ||  ".join(cells))
    print(f"total {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()}")

    report = dict(
        source=peer["source"],
        parameters=par,
        n=None if sims is None else args.n,
        seeds=None if sims is None else args.seeds,
        theory=ours,
        theory_at_experiments=ours_at,
        simulations=sims,
        peer_monte_carlo=spread,
        theory_differences=diffs,
        points=points,
    )
    path = out / "takanami_comparison.json"
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(report, indent=1) + "\n"))
    figure(peer, ours, points, out / "takanami_comparison.png")
    print(f"wrote {path} and {out / 'takanami_comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

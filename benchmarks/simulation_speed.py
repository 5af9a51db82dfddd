r"""Speed of the simulation fits against named baselines, at equal final gradient norm.

    python benchmarks/simulation_speed.py                 # N = 2000, α = 2 (about 2–4 minutes)
    python benchmarks/simulation_speed.py --n 400 --repeats 1    # quick look

Problem: one draw of the mixture (α, ρ = 0.3, Δ = 1) at dimension N, then

* teacher: L2 logistic regression at λ̃ — ours (:func:`simulations.fit_teacher`, truncated Newton on
  numba kernels) against scikit-learn's ``LogisticRegression(solver="lbfgs", C=1/λ̃)`` on x/√N;
* student: the KD objective Σ ℓ_KD + (λ/2)‖w‖² (χ = 0.8, T = 2, η = 1, soft labels of that teacher)
  — ours (:func:`simulations.fit_student`) against ``scipy.optimize.minimize(method="L-BFGS-B")`` on
  the numpy loss+gradient (:func:`simulations.kernels.loss_grad_numpy`).

Both sides are judged by the same number, the Euclidean norm ‖∇F‖ of the gradient of the sum-form
objective F (numpy twin) at the returned point. For each of our tolerances the baseline's tolerance
is tightened over a grid until its final ‖∇F‖ is ≤ ours; the baseline is then timed at that
tolerance. If no tolerance gets there (L-BFGS stalls on its line search), the baseline is timed at
its most accurate setting and the ratio is marked "≥" (the baseline was given a less accurate
target, so the true ratio is larger). Times are medians of ``--repeats`` runs in this process after
a warm-up (numba compiled); ours run single-threaded, the baselines with the BLAS threads they get
by default (``--blas-threads`` limits them).

Memory: each method is also run once in a fresh subprocess (after a warm-up on a small problem),
which reports (a) its peak resident set size (``VmHWM`` from /proc/self/status: the whole process,
interpreter, libraries and the M×N data) and (b) the peak of the numpy/Python allocations made by
the fit itself (``tracemalloc``, started after the data exist).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from kdtheory import GaussianMixture, LogisticTeacher, Student
from simulations import fit_student, fit_teacher, sample
from simulations.kernels import loss_grad_numpy

RHO, DELTA = 0.3, 1.0
LAM_T, LAM, CHI, TEMP = 0.1, 0.05, 0.8, 2.0
OUR_GTOLS = (
    1e-10,
    1e-8,
    1e-6,
)  # ours: ‖∇F‖ ≤ gtol·M (1e-10 is the default used by simulations.run)
SKLEARN_TOLS = tuple(10.0**-e for e in range(4, 15))
SCIPY_GTOLS = tuple(10.0**-e for e in range(2, 13))


def make_data(n: int, alpha: float):
    train = sample(GaussianMixture(alpha=alpha, rho=RHO, delta=DELTA), n, np.random.default_rng(0))
    a = train.x / math.sqrt(n)  # the baselines' design matrix (made once, not timed)
    return train, a


def grad_norm(train, ht, lam, chi, temperature, w, b) -> float:
    """‖∇F‖ of F = Σ ℓ_KD(y, h̃, w·x/√N + b) + (λ/2)‖w‖², by the numpy twin (common judge)."""
    theta = np.append(w, b)
    _, g, _, _ = loss_grad_numpy(
        train.x, train.y, ht, theta, b, 1 / math.sqrt(train.n), chi, temperature
    )
    g[:-1] += lam * w
    return float(np.linalg.norm(g))


# ---- the four methods: each returns (w, b, iterations) ---------------------------------------


def ours_teacher(train, a, gtol):
    fit = fit_teacher(LogisticTeacher(lam=LAM_T), train, gtol=gtol)
    assert fit.converged, fit.status
    return fit.w, fit.b, f"{fit.iterations} Newton / {fit.cg_iterations} CG"


def sklearn_teacher(train, a, tol):
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at the tightest tolerances
        clf = LogisticRegression(C=1 / LAM_T, solver="lbfgs", tol=tol, max_iter=100_000)
        clf.fit(a, train.y)
    return clf.coef_[0], float(clf.intercept_[0]), f"{clf.n_iter_[0]} L-BFGS"


def ours_student(train, a, ht, gtol):
    fit = fit_student(Student(lam=LAM, chi=CHI, temperature=TEMP), train, ht, gtol=gtol)
    assert fit.converged, fit.status
    return fit.w, fit.b, f"{fit.iterations} Newton / {fit.cg_iterations} CG"


def scipy_student(train, a, ht, gtol):
    from scipy.optimize import minimize

    n = train.n

    def objective(theta):
        value, g, _, _ = loss_grad_numpy(a, train.y, ht, theta, theta[-1], 1.0, CHI, TEMP)
        g[:-1] += LAM * theta[:-1]
        return value + 0.5 * LAM * (theta[:-1] @ theta[:-1]), g

    res = minimize(
        objective,
        np.zeros(n + 1),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": gtol, "ftol": 0.0, "maxiter": 100_000, "maxfun": 200_000},
    )
    return res.x[:-1], float(res.x[-1]), f"{res.nit} L-BFGS"


# ---- timing -----------------------------------------------------------------------------------


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def median_time(fn, args, repeats):
    times, out = [], None
    for _ in range(repeats):
        dt, out = timed(fn, *args)
        times.append(dt)
    return float(np.median(times)), out


def scan_baseline(fn, args, tols, target, judge, name):
    """Run the baseline once per tolerance, loosest first, until its ‖∇F‖ ≤ target or it stalls
    (three tighter tolerances in a row gain < 10%); returns [(tol, seconds, ‖∇F‖, info)]."""
    runs = []
    for tol in tols:
        dt, (w, b, info) = timed(fn, *args, tol)
        runs.append((tol, dt, judge(w, b), info))
        print(f"    scan {name} tol={tol:.0e}: {dt:6.2f} s  ‖∇F‖={runs[-1][2]:.2e}  ({info})")
        if runs[-1][2] <= target:
            break
        if len(runs) >= 4 and min(r[2] for r in runs[-3:]) >= 0.9 * min(r[2] for r in runs[:-3]):
            break
    return runs


def compare(label, ours, ours_args, base, base_args, base_tols, judge, repeats, base_name):
    mine = []
    for gtol in OUR_GTOLS:
        t, (w, b, info) = median_time(ours, (*ours_args, gtol), repeats)
        mine.append((gtol, t, judge(w, b), info))
    runs = scan_baseline(
        base, base_args, base_tols, min(g for _, _, g, _ in mine), judge, base_name
    )
    rows = []
    for gtol, t_ours, g_ours, info_ours in mine:
        ok = [r for r in runs if r[2] <= g_ours]
        reached = bool(ok)
        tol, t_first, g_base, info_base = ok[0] if ok else min(runs, key=lambda r: r[2])
        more = [timed(base, *base_args, tol)[0] for _ in range(repeats - 1)]
        t_base = float(np.median([t_first, *more]))
        ratio = t_base / t_ours
        rows.append((gtol, t_ours, g_ours, tol, t_base, g_base, ratio, reached))
        print(
            f"{label}  ours gtol={gtol:.0e}: {t_ours:7.3f} s  ‖∇F‖={g_ours:.2e}  ({info_ours})\n"
            f"{'':{len(label)}}  {base_name} tol={tol:.0e}: {t_base:7.3f} s  ‖∇F‖={g_base:.2e}"
            f"  ({info_base})  {'reached' if reached else 'did NOT reach'} ours\n"
            f"{'':{len(label)}}  ratio {base_name}/ours = {'' if reached else '≥ '}{ratio:.1f}×",
            flush=True,
        )
    return rows


# ---- memory (fresh subprocess per method) ----------------------------------------------------


def child(method: str, n: int, alpha: float, tol: float) -> None:
    """Run one method once in this fresh process; print peak RSS and tracemalloc peak as JSON."""
    # warm-up on a small problem: numba compilation, lazy imports and caches happen before tracing
    small, small_a = make_data(50, alpha)
    small_ht = fit_teacher(LogisticTeacher(lam=LAM_T), small).h
    fn = globals()[method]
    fn(small, small_a, *((small_ht,) if method.endswith("student") else ()), tol)
    train, a = make_data(n, alpha)
    if method.endswith("student"):
        args = (train, a, fit_teacher(LogisticTeacher(lam=LAM_T), train).h, tol)
    else:
        args = (train, a, tol)
    rss_before = _vm_hwm_mib()
    tracemalloc.start()
    globals()[method](*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        json.dumps(
            {"rss_mib": _vm_hwm_mib(), "rss_before_mib": rss_before, "traced_mib": peak / 2**20}
        )
    )


def _vm_hwm_mib() -> float:
    """Peak resident set size of this process (Linux VmHWM; unlike ru_maxrss it does not inherit
    the parent's peak across fork/exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def memory(method, n, alpha, tol) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--n", str(n), "--alpha", str(alpha)]
    cmd += ["--tol", repr(tol)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=2000, help="dimension N (default 2000)")
    ap.add_argument("--alpha", type=float, default=2.0, help="sample ratio α = M/N (default 2)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed repeats, median reported (default 3)"
    )
    ap.add_argument(
        "--blas-threads", type=int, default=None, help="limit BLAS threads of the baselines"
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the subprocess memory runs")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--tol", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.n, args.alpha, args.tol)
        return
    from threadpoolctl import threadpool_info, threadpool_limits

    train, a = make_data(args.n, args.alpha)
    print(
        f"N = {train.n}, M = {train.m}, ρ = {RHO}, Δ = {DELTA}; teacher λ̃ = {LAM_T}; "
        f"student λ = {LAM}, χ = {CHI}, T = {TEMP}, η = 1; median of {args.repeats}"
    )
    teacher = fit_teacher(LogisticTeacher(lam=LAM_T), train)  # warm-up (compiles) and soft labels
    ht = teacher.h
    fit_student(Student(lam=LAM, chi=CHI, temperature=TEMP), train, ht)

    def judge_teacher(w, b):
        return grad_norm(train, ht, LAM_T, 0.0, 1.0, w, b)

    def judge_student(w, b):
        return grad_norm(train, ht, LAM, CHI, TEMP, w, b)

    with threadpool_limits(limits=args.blas_threads):
        threads = sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        print(f"BLAS threads of the baselines: {threads}; ours: 1 (numba kernels, no BLAS)")
        t_rows = compare(
            "teacher",
            ours_teacher,
            (train, a),
            sklearn_teacher,
            (train, a),
            SKLEARN_TOLS,
            judge_teacher,
            args.repeats,
            "sklearn lbfgs",
        )
        s_rows = compare(
            "student",
            ours_student,
            (train, a, ht),
            scipy_student,
            (train, a, ht),
            SCIPY_GTOLS,
            judge_student,
            args.repeats,
            "scipy L-BFGS-B",
        )
    if args.no_memory:
        return
    print(
        "peak memory, one fit in a fresh process (VmHWM of the process | tracemalloc peak of "
        "the fit's numpy allocations); the M×N data alone are "
        f"{train.x.nbytes / 2**20:.0f} MiB (+ the same again for the baselines' x/√N):"
    )
    for name, tol in (
        ("ours_teacher", OUR_GTOLS[0]),
        ("sklearn_teacher", t_rows[0][3]),
        ("ours_student", OUR_GTOLS[0]),
        ("scipy_student", s_rows[0][3]),
    ):
        mem = memory(name, args.n, args.alpha, tol)
        print(
            f"  {name:16s} tol={tol:.0e}: VmHWM {mem['rss_mib']:7.1f} MiB "
            f"(before the fit {mem['rss_before_mib']:7.1f}) | traced {mem['traced_mib']:7.1f} MiB"
        )


if __name__ == "__main__":
    main()

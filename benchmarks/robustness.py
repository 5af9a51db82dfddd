r"""Robustness fuzz of ``replica.solve`` over the whole legal parameter box.

    python benchmarks/robustness.py                     # both fuzzes, 300 problems each
    python benchmarks/robustness.py --set corner --n 50 # a quick look
    python benchmarks/robustness.py --repo /tmp/base    # the same problems against another checkout
    python benchmarks/robustness.py --before a9783ac    # before/after: that commit, then this one

Two fixed-seed sets of random problems:

* **uniform** — α, Δ, T log-uniform in [1e-3, 1e4], [1e-3, 1e3], [1e-3, 1e3]; ρ uniform in
  (1e-4, 1 − 1e-4); λ and λ̃ zero 10 % of the time, else log-uniform in [1e-6, 1e3]; χ uniform
  with 15 % at 0 or 1; η log-uniform in [1e-3, 1]; 30 % Bayes teachers.
* **corner** — the same, but each parameter is pinned to an end of its range with probability
  0.4 (λ, λ̃: 0, 1e-6 or 1e3; the kind of teacher stays 30 % Bayes).

Each problem is solved cold in one of a few long-lived worker processes with a time limit
(``--timeout``); a worker that overruns is killed, the problem counted as a hang, and a fresh
worker takes its place.  The script prints the counts by status, every exception, every hang,
the RuntimeWarnings seen (with where they were raised), the time percentiles of the solves and one
example message per status.  Timings are wall-clock on a possibly loaded machine: compare runs
made together.
"""

from __future__ import annotations

import argparse
import collections
import math
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETS = {"uniform": 20261130, "corner": 20261131}
STATUSES = ("converged", "max_iter", "diverged", "unbounded", "singular")


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def random_params(n: int, kind: str, seed: int | None = None) -> list[dict]:
    """``n`` flat parameter dictionaries (``lam_t`` NaN for a Bayes teacher) of fuzz ``kind``."""
    rng = np.random.default_rng(SETS[kind] if seed is None else seed)
    pin = 0.4 if kind == "corner" else 0.0
    out = []
    for _ in range(n):

        def draw(ends, sample):
            if rng.random() < pin:
                return float(ends[rng.integers(len(ends))])
            return float(sample())

        def ridge():
            return 0.0 if rng.random() < 0.1 else _logu(rng, 1e-6, 1e3)

        def chi():
            u = rng.random()
            return 0.0 if u < 0.075 else 1.0 if u < 0.15 else rng.uniform()

        bayes = rng.random() < 0.3
        p = {
            "alpha": draw((1e-3, 1e4), lambda: _logu(rng, 1e-3, 1e4)),
            "rho": draw((1e-4, 1 - 1e-4), lambda: rng.uniform(1e-4, 1 - 1e-4)),
            "delta": draw((1e-3, 1e3), lambda: _logu(rng, 1e-3, 1e3)),
            "lam_t": draw((0.0, 1e-6, 1e3), ridge),
            "lam": draw((0.0, 1e-6, 1e3), ridge),
            "chi": draw((0.0, 1.0), chi),
            "temperature": draw((1e-3, 1e3), lambda: _logu(rng, 1e-3, 1e3)),
            "eta": draw((1e-3, 1.0), lambda: _logu(rng, 1e-3, 1.0)),
        }
        if bayes:
            p["lam_t"] = math.nan
        out.append(p)
    return out


def make_problem(p: dict):
    from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student

    teacher = BayesTeacher() if math.isnan(p["lam_t"]) else LogisticTeacher(p["lam_t"])
    return Problem(
        GaussianMixture(p["alpha"], p["rho"], p["delta"]),
        teacher,
        Student(p["lam"], p["chi"], p["temperature"], p["eta"]),
    )


def solve_one(p: dict) -> dict:
    """Solve one problem in this process: status, message, seconds, exception, warnings."""
    import replica

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        try:
            sol = replica.solve(make_problem(p))
            out = {"status": sol.status, "message": sol.message, "eg": sol.student.eg}
        except Exception as exc:  # the point of the fuzz: count them
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{Path(tb.filename).name}:{tb.lineno}"
            out = {"status": "exception", "message": f"{type(exc).__name__}: {exc} ({where})"}
        out["seconds"] = time.perf_counter() - t0
    out["warnings"] = sorted(
        {
            f"{w.category.__name__} {Path(w.filename).name}:{w.lineno}: {w.message}"
            for w in caught
            if issubclass(w.category, RuntimeWarning)
        }
    )
    return out


#: the box of the chain and gradient fuzzes (issue 24's): α, Δ, λ̃, λ, T log-uniform, the rest uniform
CHAIN_BOX = {
    "alpha": (0.2, 10.0), "rho": (0.05, 0.95), "delta": (0.1, 5.0), "flip": (0.0, 0.45),
    "lam_t": (1e-3, 10.0), "lam": (1e-3, 10.0), "chi": (0.0, 1.0), "temperature": (0.02, 10.0),
}  # fmt: skip
#: a stage "disagrees" when its ε_g, or m, q, b relative to max(1, |x|), differ by more than this
AGREE = 1e-6
CHAIN_SEED, GRADIENT_SEED = 20261207, 20261208


def random_chains(n: int, seed: int = CHAIN_SEED) -> list[dict]:
    """``n`` random legal 2–3-stage chains in ``CHAIN_BOX``: 15 % Bayes teachers (at θ = 0), each
    student's convention ``tempered`` "both" or "teacher" at random, η = 1."""
    rng = np.random.default_rng(seed)
    box = CHAIN_BOX
    out = []
    for _ in range(n):
        bayes = rng.random() < 0.15
        p = {
            "alpha": _logu(rng, *box["alpha"]),
            "rho": rng.uniform(*box["rho"]),
            "delta": _logu(rng, *box["delta"]),
            "flip": 0.0 if bayes else rng.uniform(*box["flip"]),
            "lam_t": math.nan if bayes else _logu(rng, *box["lam_t"]),
            "students": [
                (
                    _logu(rng, *box["lam"]),
                    rng.uniform(*box["chi"]),
                    _logu(rng, *box["temperature"]),
                    str(rng.choice(["both", "teacher"])),
                )
                for _ in range(int(rng.integers(1, 3)))
            ],
        }
        out.append(p)
    return out


def make_chain(p: dict):
    """(data, teacher, students) of a ``random_chains`` entry."""
    from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Student

    data = GaussianMixture(p["alpha"], p["rho"], p["delta"], flip=p["flip"])
    teacher = BayesTeacher() if math.isnan(p["lam_t"]) else LogisticTeacher(p["lam_t"])
    students = [Student(lam, chi, t, tempered=conv) for lam, chi, t, conv in p["students"]]
    return data, teacher, students


def _gap(a, b) -> float:
    """Largest of |Δε_g| and |Δx|/max(1, |x|) for x = m, q, b between two states."""
    gaps = [abs(a.eg - b.eg)]
    gaps += [abs(getattr(a, k) - getattr(b, k)) / max(1.0, abs(getattr(b, k))) for k in "mqb"]
    return float(max(gaps))


def chain_one(p: dict, refined: bool = True) -> dict:
    """``replica.solve_chain`` on one chain, its stages 1–2 against ``replica.solve`` (the teacher,
    and the student of the two-stage problem): per stage converged, ``gap`` (``_gap``; NaN where
    ``replica.solve`` did not converge), and with ``refined`` the gaps of both to ``replica.solve``
    on the refined rule (twice the order), ``gap_refined`` and ``solve_gap``; ``silent`` counts
    the stages marked converged with a gap > ``AGREE``."""
    import replica
    from kdtheory import Problem

    data, teacher, students = make_chain(p)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        try:
            chain = replica.solve_chain(data, teacher, students)
            seconds = time.perf_counter() - t0
            problem = Problem(data, teacher, students[0])
            ref = replica.solve(problem)
            fine = ref
            if refined:
                fine = replica.solve(problem, quad=replica.quadrature.DEFAULT_QUADRATURE.refined())
            stages = []
            for k, st in enumerate(chain.stages[:2]):
                pick = (lambda s: s.teacher) if k == 0 else (lambda s: s.student)
                ok = ref.converged or (k == 0 and ref.teacher.q == ref.teacher.q)
                ok_fine = fine.converged or (k == 0 and fine.teacher.q == fine.teacher.q)
                stages.append(
                    {
                        "converged": st.converged,
                        "gap": _gap(st, pick(ref)) if ok else math.nan,
                        "gap_refined": _gap(st, pick(fine)) if ok_fine else math.nan,
                        "solve_gap": _gap(pick(ref), pick(fine)) if ok and ok_fine else math.nan,
                    }
                )
            out = {
                "status": chain.status,
                "message": chain.message,
                "stages": stages,
                "seconds": seconds,
                "reference": ref.message if not ref.converged else "",
                "silent": sum(s["converged"] and s["gap"] > AGREE for s in stages),
            }
        except Exception as exc:
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{Path(tb.filename).name}:{tb.lineno}"
            out = {"status": "exception", "message": f"{type(exc).__name__}: {exc} ({where})"}
            out.update(stages=[], seconds=time.perf_counter() - t0, silent=0)
    out["warnings"] = sorted(
        {f"{w.category.__name__} {Path(w.filename).name}:{w.lineno}: {w.message}" for w in caught}
    )
    return out


def random_gradient_problems(n: int, seed: int = GRADIENT_SEED) -> list[dict]:
    """``n`` flat problems in ``CHAIN_BOX`` with η log-uniform in [0.05, 1], 20 % Bayes teachers."""
    rng = np.random.default_rng(seed)
    out = []
    for c in random_chains(n, seed):
        lam, chi, t, _ = c["students"][0]
        bayes = rng.random() < 0.2
        out.append(
            {
                "alpha": c["alpha"], "rho": c["rho"], "delta": c["delta"],
                "flip": 0.0 if bayes else c["flip"],
                "lam_t": math.nan if bayes else (c["lam_t"] if c["lam_t"] == c["lam_t"] else 0.1),
                "lam": lam, "chi": chi, "temperature": t, "eta": _logu(rng, 0.05, 1.0),
            }
        )  # fmt: skip
    return out


def gradient_one(p: dict) -> dict:
    """``replica.gradient`` (default ``wrt``) of one problem against central finite differences
    of ``replica.solve`` (step 1e-5 relative, one-sided at θ = 0 for flip and χ): the largest
    |analytic − finite difference| / max(1, |finite difference|) of ∂ε_g and ∂ε̃_g over ``wrt``."""
    import replica
    from kdtheory import BayesTeacher, GaussianMixture, LogisticTeacher, Problem, Student

    bayes = math.isnan(p["lam_t"])
    problem = Problem(
        GaussianMixture(p["alpha"], p["rho"], p["delta"], flip=p["flip"]),
        BayesTeacher() if bayes else LogisticTeacher(p["lam_t"]),
        Student(p["lam"], p["chi"], p["temperature"], p["eta"]),
    )
    t0 = time.perf_counter()
    out = {"silent": 0, "worst": "", "error": 0.0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            sol = replica.solve(problem, tol=1e-12)
            if not sol.converged:
                out.update(status="unsolved", message=sol.message)
            else:
                grad = replica.gradient(sol)
                errors = {}
                for k in grad.wrt:
                    theta = problem.params[k]
                    h = 1e-5 * max(abs(theta), 1e-3)
                    if k in ("rho", "chi", "eta"):  # stay inside (0, 1)
                        h = min(h, 0.5 * (1.0 - theta))
                    # one-sided at a closed end of the range (θ = 0 for flip or chi)
                    a, z = max(theta - h, 0.0) if k in ("flip", "chi") else theta - h, theta + h
                    up = replica.solve(problem.replace(**{k: z}), init=sol, tol=1e-12)
                    lo = replica.solve(problem.replace(**{k: a}), init=sol, tol=1e-12)
                    if not (up.converged and lo.converged):
                        continue
                    for q, get in (
                        ("eg", lambda s: s.student.eg),
                        ("eg_t", lambda s: s.teacher.eg),
                    ):
                        fd = (get(up) - get(lo)) / (z - a)
                        errors[f"{q}/{k}"] = abs(grad[q][k] - fd) / max(1.0, abs(fd))
                worst = max(errors, key=errors.get, default="")
                out.update(
                    status="converged", message="", worst=worst, error=errors.get(worst, 0.0)
                )
        except Exception as exc:
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{Path(tb.filename).name}:{tb.lineno}"
            out.update(status="exception", message=f"{type(exc).__name__}: {exc} ({where})")
    out["seconds"] = time.perf_counter() - t0
    out["warnings"] = sorted(
        {f"{w.category.__name__} {Path(w.filename).name}:{w.lineno}: {w.message}" for w in caught}
    )
    return out


TASKS = {"solve": solve_one, "chain": chain_one, "gradient": gradient_one}


def _worker(conn, repo: str) -> None:  # messages: (task, parameters), task a key of TASKS
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, repo)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    # compile the numba kernels before the first timed problem
    solve_one({**_WARMUP, "lam_t": 0.1})
    solve_one(_WARMUP)
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            return
        task, p = msg
        conn.send(TASKS[task](p))


_WARMUP = {
    "alpha": 2.0, "rho": 0.3, "delta": 1.0, "lam_t": math.nan, "lam": 0.1, "chi": 0.5,
    "temperature": 2.0, "eta": 0.5,
}  # fmt: skip


class Pool:
    """A few long-lived solver processes; one that overruns its time limit is killed and replaced."""

    def __init__(self, workers: int, repo: str):
        self.ctx = mp.get_context("spawn")
        self.repo = repo
        self.procs = [self._start() for _ in range(workers)]

    def _start(self):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, self.repo), daemon=True)
        proc.start()
        child.close()
        if parent.recv() != "ready":
            raise RuntimeError("worker failed to start")
        return proc, parent

    def map(
        self, params: list[dict], timeout: float, progress=None, task: str = "solve"
    ) -> list[dict]:
        results: list[dict | None] = [None] * len(params)
        todo = collections.deque(range(len(params)))
        busy: dict[int, tuple[int, float]] = {}  # worker slot -> (problem, start time)
        while todo or busy:
            for slot in range(len(self.procs)):
                if slot not in busy and todo:
                    i = todo.popleft()
                    self.procs[slot][1].send((task, params[i]))
                    busy[slot] = (i, time.monotonic())
            conns = {self.procs[s][1]: s for s in busy}
            soonest = min(t for _, t in busy.values()) + timeout
            for conn in wait(list(conns), timeout=max(0.0, soonest - time.monotonic())):
                slot = conns[conn]
                i, _ = busy.pop(slot)
                try:
                    results[i] = conn.recv()
                except EOFError:  # the worker died (segfault, out of memory)
                    results[i] = {"status": "crash", "message": "worker died", "seconds": math.nan}
                    self._replace(slot)
                if progress:
                    progress(i, results[i])
            now = time.monotonic()
            for slot, (i, t0) in list(busy.items()):
                if now - t0 > timeout:
                    results[i] = {
                        "status": "hang",
                        "message": f"> {timeout:g} s",
                        "seconds": math.inf,
                    }
                    del busy[slot]
                    self._replace(slot)
                    if progress:
                        progress(i, results[i])
        return results

    def _replace(self, slot: int) -> None:
        proc, conn = self.procs[slot]
        proc.kill()
        proc.join()
        conn.close()
        self.procs[slot] = self._start()

    def close(self) -> None:
        for proc, conn in self.procs:
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()


def report(kind: str, params: list[dict], results: list[dict]) -> None:
    n = len(results)
    counts = collections.Counter(r["status"] for r in results)
    print(f"\n== {kind}: {n} problems ==")
    for status in (*STATUSES, "exception", "hang", "crash"):
        if counts[status] or status in ("max_iter", "exception", "hang"):
            print(f"  {status:10s} {counts[status]:4d}  ({100 * counts[status] / n:.1f} %)")
    secs = np.array([r["seconds"] for r in results if math.isfinite(r["seconds"])])
    if secs.size:
        pct = np.percentile(secs, [50, 90, 99, 100])
        print(
            "  time per solve: median {:.3f} s, p90 {:.3f} s, p99 {:.3f} s, max {:.3f} s".format(
                *pct
            )
        )
    for status in sorted(set(counts) - {"converged"}):
        examples = [(p, r) for p, r in zip(params, results, strict=True) if r["status"] == status]
        shown = examples if status in ("exception", "hang", "crash") else examples[:2]
        print(f"  -- {status}: {len(examples)}")
        for p, r in shown:
            print(f"     {_fmt(p)}\n       {r['message'][:300]}")
    warned = collections.Counter(w for r in results for w in r.get("warnings", ()))
    print(f"  -- RuntimeWarnings in {sum(bool(r.get('warnings')) for r in results)} solves")
    if warned:
        for w, c in warned.most_common(10):
            print(f"     {c:4d}× {w[:200]}")


def report_chains(params: list[dict], results: list[dict]) -> dict:
    """Counts of the chain fuzz: stages converged / not (by reason), silent disagreements with
    ``replica.solve`` (> ``AGREE`` while converged), the largest gaps, exceptions, warnings."""
    n = len(results)
    rows = [(p, r, k, s) for p, r in zip(params, results, strict=True)
            for k, s in enumerate(r.get("stages", []))]  # fmt: skip
    conv = [s for _, _, _, s in rows if s["converged"]]
    checked = [s for s in conv if s["gap"] == s["gap"]]
    silent = [(p, r, k, s) for p, r, k, s in rows if s["converged"] and s["gap"] > AGREE]
    # of those, the ones that also disagree with replica.solve on its refined rule (twice the
    # order): the others are replica.solve's own quadrature error at its default rule
    both = [x for x in silent if not x[3].get("gap_refined", math.inf) <= AGREE]
    worst = max((s["gap"] for s in checked), default=math.nan)
    fine = [
        s["gap_refined"] for s in checked if s.get("gap_refined", math.nan) == s.get("gap_refined")
    ]
    solve_fine = [
        s["solve_gap"] for s in checked if s.get("solve_gap", math.nan) == s.get("solve_gap")
    ]
    status = collections.Counter(r["status"] for r in results)
    out = {
        "chains": n,
        "stages_compared": len(rows),
        "stages_converged": len(conv),
        "stages_checked": len(checked),
        "silent_disagreements": len(silent),
        "silent_also_with_refined_solve": len(both),
        "largest_gap": worst,
        "largest_gap_to_refined_solve": max(fine, default=math.nan),
        "largest_gap_solve_to_refined_solve": max(solve_fine, default=math.nan),
        "chains_by_status": dict(status),
        "exceptions": status["exception"],
        "hangs": status["hang"],
        "warned": sum(bool(r.get("warnings")) for r in results),
    }
    secs = np.array([r["seconds"] for r in results if math.isfinite(r.get("seconds", math.nan))])
    print(f"\n== chains: {n} random 2–3-stage chains, stages 1–2 against replica.solve ==")
    for k, v in out.items():
        print(f"  {k:36s} {v:.3g}" if isinstance(v, float) else f"  {k:36s} {v}")
    if secs.size:
        pct = np.percentile(secs, [50, 90, 99, 100])
        print(
            "  time per chain: median {:.2f} s, p90 {:.2f} s, p99 {:.2f} s, max {:.2f} s".format(
                *pct
            )
        )
        out["seconds_p50_p90_p99_max"] = [float(x) for x in pct]
    reasons = collections.Counter(
        r["message"].split(":")[1].split("(")[0].strip() if ":" in r["message"] else r["message"]
        for r in results if r["status"] not in ("converged",)
    )  # fmt: skip
    out["not_converged_reasons"] = dict(reasons)
    for p, r in [
        (p, r) for p, r in zip(params, results, strict=True) if r["status"] != "converged"
    ]:
        print(f"  -- {r['status']}: {_fmt_chain(p)}\n       {r['message'][:300]}")
    for p, _r, k, s in silent:
        print(
            f"  !! stage {k + 1}: gap {s['gap']:.2e} to replica.solve, "
            f"{s.get('gap_refined', math.nan):.2e} to its refined rule (which is "
            f"{s.get('solve_gap', math.nan):.2e} from its default): {_fmt_chain(p)}"
        )
    return out


def report_gradients(params: list[dict], results: list[dict]) -> dict:
    """Counts of the gradient fuzz: exceptions, unsolved problems, the largest disagreement with
    finite differences and how many exceed 1e-4."""
    errs = [r["error"] for r in results if r["status"] == "converged"]
    status = collections.Counter(r["status"] for r in results)
    out = {
        "problems": len(results),
        "by_status": dict(status),
        "largest_fd_error": max(errs, default=math.nan),
        "fd_errors_above_1e-4": sum(e > 1e-4 for e in errs),
        "warned": sum(bool(r.get("warnings")) for r in results),
    }
    print(
        f"\n== gradients: {len(results)} problems, replica.gradient against finite differences =="
    )
    for k, v in out.items():
        print(f"  {k:24s} {v:.3g}" if isinstance(v, float) else f"  {k:24s} {v}")
    for p, r in zip(params, results, strict=True):
        if r["status"] == "exception" or r.get("error", 0.0) > 1e-4:
            print(f"  -- {r['status']} {r.get('worst', '')} {r.get('error', 0.0):.2e}: {_fmt(p)}")
            if r["message"]:
                print(f"       {r['message'][:300]}")
    return out


def _fmt_chain(p: dict) -> str:
    head = ", ".join(f"{k}={p[k]:.4g}" for k in ("alpha", "rho", "delta", "flip", "lam_t"))
    return (
        head
        + ", students="
        + "; ".join(f"(lam={a:.4g}, chi={b:.3g}, T={c:.4g}, {d})" for a, b, c, d in p["students"])
    )


def _fmt(p: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in p.items())


def fuzz(repo: str, kinds: tuple[str, ...], args) -> dict[str, list[dict]]:
    """Run the fuzzes ``kinds`` against the checkout ``repo``; print each report."""
    pool = Pool(args.workers, str(Path(repo).resolve()))
    out = {}
    try:
        for kind in kinds:
            params = random_params(args.n, kind)

            def progress(i, r, params=params):
                if args.verbose:
                    print(f"{i:4d} {r['status']:10s} {r['seconds']:8.3f} s  {_fmt(params[i])}",
                          flush=True)  # fmt: skip

            t0 = time.perf_counter()
            out[kind] = pool.map(params, args.timeout, progress)
            report(f"{kind} ({repo})", params, out[kind])
            print(f"  wall time {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        pool.close()
    return out


def _summary(results: list[dict]) -> dict[str, str]:
    counts = collections.Counter(r["status"] for r in results)
    secs = np.array([r["seconds"] for r in results if math.isfinite(r["seconds"])])
    row = {s: str(counts[s]) for s in (*STATUSES, "exception", "hang", "crash")}
    row["max_iter %"] = f"{100 * counts['max_iter'] / len(results):.1f}"
    row["warned"] = str(sum(bool(r.get("warnings")) for r in results))
    for q in (50, 90, 99, 100):
        value = np.percentile(secs, q) if secs.size else math.nan
        row[f"p{q} s" if q < 100 else "max s"] = f"{value:.3f}"
    return row


def _extra_fuzz(args) -> None:
    """The chain or gradient fuzz on ``args.workers`` processes; prints its counts."""
    load = os.getloadavg()
    print(f"{args.set} fuzz; {args.workers} workers, limit {args.timeout:g} s, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)  # fmt: skip
    params = random_chains(args.n) if args.set == "chain" else random_gradient_problems(args.n)
    pool = Pool(args.workers, str(Path(args.repo).resolve()))
    t0 = time.perf_counter()
    try:

        def progress(i, r):
            if args.verbose:
                print(f"{i:4d} {r['status']:10s} {r['seconds']:8.2f} s", flush=True)

        results = pool.map(params, args.timeout, progress, task=args.set)
    finally:
        pool.close()
    report = report_chains if args.set == "chain" else report_gradients
    out = report(params, results)
    out["wall_seconds"] = time.perf_counter() - t0
    load = os.getloadavg()
    out["load_average_end"] = [round(x, 2) for x in load]
    print(f"  wall time {out['wall_seconds']:.0f} s; load average at the end {load[0]:.2f}")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="robustness", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--set",
        choices=[*SETS, "both", "chain", "gradient"],
        default="both",
        help="which fuzz: uniform, corner, both (replica.solve), chain (solve_chain against "
        "replica.solve), gradient (replica.gradient against finite differences)",
    )
    ap.add_argument("--json", help="chain/gradient: also write the counts to this JSON file")
    ap.add_argument("--n", type=int, default=300, help="problems per fuzz (default 300)")
    ap.add_argument("--workers", type=int, default=2, help="solver processes (default 2)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per solve (default 60)")
    ap.add_argument("--repo", default=str(ROOT), help="checkout whose replica is fuzzed")
    ap.add_argument(
        "--before",
        metavar="COMMIT",
        help="also fuzz COMMIT (in a temporary git worktree of --repo) and print before/after",
    )
    ap.add_argument("--verbose", action="store_true", help="a line per problem")
    args = ap.parse_args(argv)
    if args.set in ("chain", "gradient"):
        _extra_fuzz(args)
        return
    kinds = tuple(SETS) if args.set == "both" else (args.set,)
    load = os.getloadavg()
    print(f"robustness fuzz; {args.workers} workers, limit {args.timeout:g} s, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    before = None
    if args.before:
        tmp = tempfile.mkdtemp(prefix="robustness-")
        git = ["git", "-C", args.repo, "worktree"]
        subprocess.run([*git, "add", "--detach", tmp, args.before], check=True, capture_output=True)
        try:
            before = fuzz(tmp, kinds, args)
        finally:
            subprocess.run([*git, "remove", "--force", tmp], check=False, capture_output=True)
    after = fuzz(args.repo, kinds, args)
    if before is not None:
        for kind in kinds:
            rows = {"before": _summary(before[kind]), "after": _summary(after[kind])}
            print(f"\n== {kind}: {args.before} → {args.repo} ==")
            for key in rows["after"]:
                print(f"  {key:11s} {rows['before'][key]:>8s} → {rows['after'][key]:>8s}")
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()

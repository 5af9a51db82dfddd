r"""Many seeds of the finite-N experiment, summarised like ``replica.solve``.

One seed s of ``run(problem, n, seeds, seed=seed)`` draws everything from
``np.random.default_rng(np.random.SeedSequence(seed).spawn(seeds)[s])``, in this order: the training
set (v, y, z, and the label flips if θ > 0; :func:`simulations.data.sample`) and the student's subset
S. It then fits the teacher and the student on the training labels ŷ and records, for each,
m = w·v/N, q = ‖w‖²/N (wᵀΣw/(NΔ) with a covariance Σ), b, the exact clean-label test error ε_g = ``problem.data.error(m, q, b)`` of
that (w, b) on this draw of v, the training loss (per-sample mean of the data term) and the training
error (fraction with ŷ h ≤ 0, against the labels fitted); for the student also
r = w·w̃/N (wᵀΣw̃/(NΔ)) and the test-time agreement with the teacher. A seed's result depends on (seed, s) only,
not on ``n_jobs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from numbers import Integral
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from kdtheory.problem import BayesTeacher, GaussianMixture, Problem
from simulations.data import draw_subset, n_samples, overlap, sample, subset_size
from simulations.fit import Fit, fit_student, fit_teacher

if TYPE_CHECKING:
    from simulations.multiclass import MulticlassSimulationResult

__all__ = [
    "MAX_DATA_BYTES",
    "MAX_SEEDS",
    "Estimate",
    "SimulationResult",
    "StudentEstimates",
    "TeacherEstimates",
    "check_run_arguments",
    "run",
    "simulate_seed",
]

#: largest float64 training matrix (M×N, M = round(αN): 8·αN² bytes) one seed may draw.  Every
#: worker holds one and the fits work on arrays of the same size, so 2 GiB keeps two workers
#: within a few GB of memory (N = 10 000 at α = 2 needs 1.5 GiB)
MAX_DATA_BYTES = 2**31
#: most seeds per point: the standard error falls as 1/√seeds (1000 seeds: 3 % of one seed's
#: spread), and the time grows linearly; a larger N is the better use of more time
MAX_SEEDS = 1000

_METRICS = ("eg", "m", "q", "b", "train_loss", "train_error")
_DIAGNOSTICS = ("status", "converged", "iterations", "cg_iterations", "grad_norm")


@dataclass(frozen=True)
class Estimate:
    """Mean over the converged seeds, its standard error std/√count (NaN when count < 2), count."""

    mean: float
    sem: float
    count: int

    @classmethod
    def of(cls, values) -> Estimate:
        """Estimate from per-seed values; NaN entries (failed fits) are left out."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        c = v.size
        mean = float(v.mean()) if c else math.nan
        sem = float(v.std(ddof=1) / math.sqrt(c)) if c > 1 else math.nan
        return cls(mean, sem, c)

    def __str__(self) -> str:
        return f"{self.mean:.6g} ± {self.sem:.2g} (n={self.count})"


@dataclass(frozen=True)
class TeacherEstimates:
    """The teacher's ε̃_g, m̃, q̃, b̃ and training loss/error over seeds."""

    eg: Estimate
    m: Estimate
    q: Estimate
    b: Estimate
    train_loss: Estimate
    train_error: Estimate


@dataclass(frozen=True)
class StudentEstimates:
    """The student's ε_g, m, q, b, r, agreement with the teacher and training loss/error over seeds."""

    eg: Estimate
    m: Estimate
    q: Estimate
    b: Estimate
    r: Estimate
    agreement: Estimate
    train_loss: Estimate
    train_error: Estimate


@dataclass(frozen=True, eq=False)
class SimulationResult:
    r"""Result of :func:`run`.

    Attributes
    ----------
    teacher, student : TeacherEstimates, StudentEstimates
        Field-by-field counterparts of ``replica.solve``'s solution, each an :class:`Estimate`
        (teacher fields over the seeds whose teacher converged, student fields over the seeds where
        both converged).
    table : xarray.Dataset
        Every per-seed value (dimension ``seed``): ``teacher_*`` and ``student_*`` metrics (NaN for a
        fit that did not converge), fit diagnostics (``*_status``, ``*_iterations``,
        ``*_cg_iterations``, ``*_grad_norm``), and ``converged`` (both fits valid).
    n_failed : int
        Seeds where the teacher or the student did not converge.
    """

    problem: Problem
    n: int
    seeds: int
    seed: int
    teacher: TeacherEstimates
    student: StudentEstimates
    table: xr.Dataset
    n_failed: int


def run(
    problem: Problem,
    n: int,
    seeds: int,
    *,
    seed: int = 0,
    n_jobs: int = 1,
    gtol: float = 1e-10,
    max_iter: int = 100,
    progress: bool = False,
) -> SimulationResult | MulticlassSimulationResult:
    r"""Train the teacher and the KD student of ``problem`` at dimension N = ``n`` for ``seeds`` seeds.

    Parameters
    ----------
    problem : Problem
        Data model (α, ρ, Δ, label noise θ), teacher (λ̃ or Bayes) and student (λ, χ, T, η,
        ``tempered``).
    n : int
        Dimension N ≥ 10; M = round(αN) samples, round(ηN) trained student weights.
    seeds : int
        Number of independent draws ≥ 1.
    seed : int
        Root of the ``np.random.SeedSequence`` whose ``spawn(seeds)`` children seed the draws (≥ 0).
    n_jobs : int
        joblib workers (≥ 1, or −1 for all cores); results do not depend on it.
    gtol, max_iter
        Solver settings: a fit converges when ‖∇F‖ ≤ gtol·M within ``max_iter`` Newton steps.
    progress : bool
        Show a tqdm progress bar over seeds.

    Returns
    -------
    SimulationResult
        (:class:`simulations.multiclass.MulticlassSimulationResult` for a K-class problem, a
        ``Problem`` with a ``MulticlassMixture``: see :func:`simulations.multiclass.run_multiclass`.)
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a Problem, got {type(problem).__name__}")
    if getattr(problem, "multiclass", False):  # K classes: simulations.multiclass
        from simulations.multiclass import run_multiclass

        return run_multiclass(
            problem, n, seeds, seed=seed, n_jobs=n_jobs, gtol=gtol, max_iter=max_iter,
            progress=progress,
        )  # fmt: skip
    check_run_arguments(n, seeds, seed=seed, n_jobs=n_jobs, alpha=problem.data.alpha)
    n = int(n)
    cov = problem.data.covariance
    if cov is not None and n != cov.n:
        raise ValueError(f"n must be the covariance's dimension N = {cov.n}, got {n}")
    n_samples(problem.data, n)  # validates α·n
    subset_size(n, problem.student.eta)  # validates η·n

    children = np.random.SeedSequence(int(seed)).spawn(int(seeds))
    jobs = (delayed(simulate_seed)(problem, n, c, gtol=gtol, max_iter=max_iter) for c in children)
    rows = Parallel(n_jobs=int(n_jobs), return_as="generator")(jobs)
    if progress:
        from tqdm import tqdm  # not tqdm.auto: no IProgress warning in notebooks

        rows = tqdm(rows, total=int(seeds), desc="seeds", unit="seed")
    table = _table(list(rows), problem, n, int(seed), gtol)

    both = table["converged"].values
    teacher = TeacherEstimates(**{k: Estimate.of(table[f"teacher_{k}"]) for k in _METRICS})
    student = StudentEstimates(
        **{
            f.name: Estimate.of(np.where(both, table[f"student_{f.name}"], np.nan))
            for f in fields(StudentEstimates)
        }
    )
    return SimulationResult(
        problem=problem,
        n=n,
        seeds=int(seeds),
        seed=int(seed),
        teacher=teacher,
        student=student,
        table=table,
        n_failed=int((~both).sum()),
    )


def check_run_arguments(
    n, seeds, *, seed=0, n_jobs=1, alpha: float = 1.0, names: dict[str, str] | None = None
) -> None:
    """Validate the arguments of :func:`run` (cheap: call it before any work), with caps.

    N is an int ≥ 10 whose data matrix fits ``MAX_DATA_BYTES`` (8·round(αN)·N bytes at the largest
    α of the run), 1 ≤ seeds ≤ ``MAX_SEEDS``, seed ≥ 0, n_jobs ≥ 1 or −1.  ``names`` maps the
    argument names to the caller's flags for the messages, e.g. ``{"n": "--n"}``.  Raises
    ``ValueError`` naming the argument and its allowed range.
    """
    name = {"n": "n", "seeds": "seeds", "seed": "seed", "n_jobs": "n_jobs", **(names or {})}

    def is_int(x) -> bool:
        return isinstance(x, Integral) and not isinstance(x, bool)

    if not is_int(n) or n < 10:
        raise ValueError(f"{name['n']} must be an int ≥ 10, got {n!r}")
    m = max(round(alpha * n), 1)
    size = 8 * m * int(n)
    if size > MAX_DATA_BYTES:
        raise ValueError(
            f"{name['n']} = {n} needs an M×N = {m}×{n} float64 data matrix of "
            f"{size / 2**30:.5g} GiB at alpha = {alpha:g}; at most {MAX_DATA_BYTES / 2**30:g} GiB "
            "(8·αN² bytes, held by every worker): choose a smaller N"
        )
    if not is_int(seeds) or not 1 <= seeds <= MAX_SEEDS:
        raise ValueError(f"{name['seeds']} must be an int ≥ 1 and ≤ {MAX_SEEDS}, got {seeds!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"{name['seed']} must be an int ≥ 0, got {seed!r}")
    if not is_int(n_jobs) or not (n_jobs >= 1 or n_jobs == -1):
        raise ValueError(
            f"{name['n_jobs']} must be an int ≥ 1, or -1 for all cores, got {n_jobs!r}"
        )


def simulate_seed(
    problem: Problem,
    n: int,
    seed_sequence: np.random.SeedSequence,
    *,
    gtol: float = 1e-10,
    max_iter: int = 100,
) -> dict[str, float | int | str | bool]:
    """One draw: sample, fit teacher and student, return the flat per-seed record of :func:`run`."""
    # single-threaded BLAS: parallelism is over seeds, and results must not depend on thread count
    with threadpool_limits(limits=1, user_api="blas"):
        rng = np.random.default_rng(seed_sequence)
        train = sample(problem.data, n, rng)
        subset = draw_subset(n, problem.student.eta, rng)
        teacher = fit_teacher(problem.teacher, train, problem.data, gtol=gtol, max_iter=max_iter)
        row = _record("teacher", teacher, train.v, problem.data)
        if teacher.converged:
            student = fit_student(
                problem.student, train, teacher.h, subset, gtol=gtol, max_iter=max_iter
            )
            row |= _record("student", student, train.v, problem.data)
            if student.converged:
                r = overlap(problem.data, student.w, teacher.w)
                row["student_r"] = r
                row["student_agreement"] = problem.data.agreement(
                    row["student_m"],
                    row["student_q"],
                    row["student_b"],
                    row["teacher_m"],
                    row["teacher_q"],
                    row["teacher_b"],
                    r,
                )
        else:  # no soft labels to learn from
            row |= _record("student", None, train.v, problem.data)
        row.setdefault("student_r", math.nan)
        row.setdefault("student_agreement", math.nan)
    row["converged"] = bool(row["teacher_converged"] and row["student_converged"])
    return row


def _record(role: str | None, fit: Fit | None, v: np.ndarray, data: GaussianMixture) -> dict:
    """m, q, b, clean-label ε_g, training loss/error (NaN unless converged) and diagnostics of one
    fit (``None``: not fitted, for want of a converged teacher); keys prefixed ``{role}_`` if a
    role is given."""
    if fit is None:
        out = {k: math.nan for k in _METRICS} | {
            "status": "no_teacher",
            "converged": False,
            "iterations": 0,
            "cg_iterations": 0,
            "grad_norm": math.nan,
        }
    else:
        out = {
            "status": fit.status,
            "converged": fit.converged,
            "iterations": fit.iterations,
            "cg_iterations": fit.cg_iterations,
            "grad_norm": fit.grad_norm,
        }
        if fit.converged:
            m, q = float(fit.w @ v) / v.size, overlap(data, fit.w, fit.w)
            out |= {
                "eg": float(data.error(m, q, fit.b)),
                "m": m,
                "q": q,
                "b": fit.b,
                "train_loss": fit.train_loss,
                "train_error": fit.train_error,
            }
        else:
            out |= {k: math.nan for k in _METRICS}
    return {f"{role}_{k}" if role else k: value for k, value in out.items()}


def _table(rows: list[dict], problem: Problem, n: int, seed: int, gtol: float) -> xr.Dataset:
    names = list(rows[0])
    ds = xr.Dataset(
        {k: ("seed", np.array([row[k] for row in rows])) for k in names},
        coords={"seed": np.arange(len(rows))},
    )
    ds.attrs = {
        **problem.params,
        "teacher": "bayes" if isinstance(problem.teacher, BayesTeacher) else "logistic",
        "tempered": problem.student.tempered,
        "n": n,
        "m": n_samples(problem.data, n),
        "k": subset_size(n, problem.student.eta),
        "root_seed": seed,
        "gtol": gtol,
    }
    if problem.data.covariance is not None:
        ds.attrs["covariance"] = problem.data.covariance.digest
    return ds

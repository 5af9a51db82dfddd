r"""Multi-stage self-distillation at finite N: a chain of students on one training set.

Stage 1 is the teacher, fitted on the training labels ŷ (the cluster labels with a fraction θ
flipped). Stage t ≥ 2 is ``students[t-2]``, trained with

    Σ_μ [(1−χ_t) log(1 + e^{−ŷ_μ h_μ}) + χ_t H(sig(h^{(t−1)}_μ/T_t), sig(h_μ/T_{s,t}))] + (λ_t/2)‖w‖²,

where h^{(t−1)}_μ is stage t−1's preactivation on the same training inputs (χ_t = 0: on the labels
only, the chain restarts). Every stage trains all N weights (η = 1). The order parameters are those
of ``replica.solve_chain``: m, q, b, the clean-label ε_g, and r = w_t·w_{t−1}/N (NaN at stage 1).

Seed s draws from ``np.random.default_rng(np.random.SeedSequence(seed).spawn(seeds)[s])`` exactly as
:func:`simulations.run` does (η = 1 draws no subset), so stage 1 of a chain is ``run``'s teacher for
the same (seed, s), and stage 2 is ``run``'s student for ``Problem(data, teacher, students[0])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import xarray as xr
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

from kdtheory.problem import (
    BayesTeacher,
    GaussianMixture,
    LogisticTeacher,
    Problem,
    Student,
    refuse_covariance,
)
from simulations.data import n_samples, sample
from simulations.fit import fit_student, fit_teacher
from simulations.runner import Estimate, _record, check_run_arguments

__all__ = ["ChainSimulationResult", "StageEstimates", "run_chain", "simulate_chain_seed"]


@dataclass(frozen=True)
class StageEstimates:
    """One stage's ε_g, m, q, b, r (with the previous stage) and training loss/error over seeds."""

    eg: Estimate
    m: Estimate
    q: Estimate
    b: Estimate
    r: Estimate
    train_loss: Estimate
    train_error: Estimate


@dataclass(frozen=True, eq=False)
class ChainSimulationResult:
    r"""Result of :func:`run_chain`.

    Attributes
    ----------
    stages : tuple of StageEstimates
        ``stages[0]`` is the teacher (stage 1), ``stages[t-1]`` is stage t = ``students[t-2]``; each
        field an :class:`Estimate` over the seeds where that stage converged (which needs every
        earlier stage converged).
    table : xarray.Dataset
        Every per-seed value, dims (``seed``, ``stage``), stage = 1..K: ``eg`` (clean-label test
        error), ``m``, ``q``, ``b``, ``r`` (NaN at stage 1), ``train_loss``, ``train_error`` (against
        the noisy labels ŷ), diagnostics (``status``, ``converged``, ``iterations``,
        ``cg_iterations``, ``grad_norm``); per-stage coordinates ``lam``, ``chi``, ``temperature``,
        ``tempered`` (stage 1: λ̃, χ = 0, NaN, ``"none"``).
    n_failed : int
        Seeds where some stage did not converge.
    """

    data: GaussianMixture
    teacher: LogisticTeacher | BayesTeacher
    students: tuple[Student, ...]
    n: int
    seeds: int
    seed: int
    stages: tuple[StageEstimates, ...]
    table: xr.Dataset
    n_failed: int


def run_chain(
    data: GaussianMixture,
    teacher: LogisticTeacher | BayesTeacher,
    students: Sequence[Student],
    n: int,
    seeds: int,
    *,
    seed: int = 0,
    n_jobs: int = 1,
    gtol: float = 1e-10,
    max_iter: int = 100,
    progress: bool = False,
) -> ChainSimulationResult:
    r"""Train the chain teacher → students[0] → students[1] → … at N = ``n`` for ``seeds`` seeds.

    Parameters
    ----------
    data : GaussianMixture
        α, ρ, Δ and the label noise θ of the training labels.
    teacher : LogisticTeacher or BayesTeacher
        Stage 1 (a Bayes teacher needs θ = 0).
    students : sequence of Student
        Stages 2..K, each with η = 1; stage t distils stage t−1's training preactivations
        (χ, T, ``tempered`` and λ per stage). May be empty (a one-stage chain).
    n, seeds, seed, n_jobs, gtol, max_iter, progress
        As in :func:`simulations.run` (same checks, same seeding).

    Returns
    -------
    ChainSimulationResult
    """
    if not isinstance(data, GaussianMixture):
        raise ValueError(f"data must be a GaussianMixture, got {type(data).__name__}")
    if not isinstance(teacher, LogisticTeacher | BayesTeacher):
        raise ValueError(
            f"teacher must be a LogisticTeacher or BayesTeacher, got {type(teacher).__name__}"
        )
    refuse_covariance(data, "a self-distillation chain")
    Problem(data, teacher)  # refuses a Bayes teacher under label noise, with the reason
    if isinstance(students, str | bytes) or not isinstance(students, Sequence):
        raise ValueError(f"students must be a sequence of Student, got {type(students).__name__}")
    students = tuple(students)
    for i, s in enumerate(students):
        if not isinstance(s, Student):
            raise ValueError(f"students[{i}] must be a Student, got {type(s).__name__}")
        if s.eta != 1.0:
            raise ValueError(
                f"students[{i}].eta must be 1 in a chain (every stage trains all N weights), "
                f"got {s.eta!r}"
            )
    check_run_arguments(n, seeds, seed=seed, n_jobs=n_jobs, alpha=data.alpha)
    n = int(n)
    n_samples(data, n)  # validates α·n

    children = np.random.SeedSequence(int(seed)).spawn(int(seeds))
    jobs = (
        delayed(simulate_chain_seed)(data, teacher, students, n, c, gtol=gtol, max_iter=max_iter)
        for c in children
    )
    rows = Parallel(n_jobs=int(n_jobs), return_as="generator")(jobs)
    if progress:
        from tqdm import tqdm  # not tqdm.auto: no IProgress warning in notebooks

        rows = tqdm(rows, total=int(seeds), desc="seeds", unit="seed")
    table = _table(list(rows), data, teacher, students, n, int(seed), gtol)
    stages = tuple(
        StageEstimates(
            **{f.name: Estimate.of(table[f.name].sel(stage=t)) for f in fields(StageEstimates)}
        )
        for t in table["stage"].values
    )
    return ChainSimulationResult(
        data=data,
        teacher=teacher,
        students=students,
        n=n,
        seeds=int(seeds),
        seed=int(seed),
        stages=stages,
        table=table,
        n_failed=int((~table["converged"].all("stage")).sum()),
    )


def simulate_chain_seed(
    data: GaussianMixture,
    teacher: LogisticTeacher | BayesTeacher,
    students: Sequence[Student],
    n: int,
    seed_sequence: np.random.SeedSequence,
    *,
    gtol: float = 1e-10,
    max_iter: int = 100,
) -> list[dict[str, float | int | str | bool]]:
    """One draw: sample, fit every stage in turn; one flat record per stage (see :func:`run_chain`).

    A stage whose predecessor did not converge is not fitted (status ``"no_teacher"``)."""
    with threadpool_limits(limits=1, user_api="blas"):
        rng = np.random.default_rng(seed_sequence)
        train = sample(data, n, rng)
        fit = fit_teacher(teacher, train, data, gtol=gtol, max_iter=max_iter)
        rows = [_record(None, fit, train.v, data) | {"r": math.nan}]
        for student in students:
            prev = fit
            fit = None
            if prev is not None and prev.converged:
                fit = fit_student(student, train, prev.h, gtol=gtol, max_iter=max_iter)
            r = float(fit.w @ prev.w) / n if fit is not None and fit.converged else math.nan
            rows.append(_record(None, fit, train.v, data) | {"r": r})
    return rows


def _table(
    rows: list[list[dict]],
    data: GaussianMixture,
    teacher: LogisticTeacher | BayesTeacher,
    students: tuple[Student, ...],
    n: int,
    seed: int,
    gtol: float,
) -> xr.Dataset:
    names = list(rows[0][0])
    bayes = isinstance(teacher, BayesTeacher)
    stage_coords = {
        "lam": [math.nan if bayes else teacher.lam] + [s.lam for s in students],
        "chi": [0.0] + [s.chi for s in students],
        "temperature": [math.nan] + [s.temperature for s in students],
        "tempered": ["none"] + [s.tempered for s in students],
    }
    ds = xr.Dataset(
        {k: (("seed", "stage"), np.array([[r[k] for r in row] for row in rows])) for k in names},
        coords={
            "seed": np.arange(len(rows)),
            "stage": np.arange(1, len(students) + 2),
            **{k: ("stage", np.array(v)) for k, v in stage_coords.items()},
        },
    )
    ds.attrs = {
        "alpha": data.alpha,
        "rho": data.rho,
        "delta": data.delta,
        "flip": data.flip,
        "teacher": "bayes" if bayes else "logistic",
        "n": n,
        "m": n_samples(data, n),
        "root_seed": seed,
        "gtol": gtol,
    }
    return ds

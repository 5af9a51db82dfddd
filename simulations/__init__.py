r"""Finite-N simulations of the KD model of docs/theory.md: real fits, many seeds, error bars.

>>> from kdtheory import GaussianMixture, LogisticTeacher, Problem, Student
>>> import simulations
>>> p = Problem(GaussianMixture(alpha=2.0, rho=0.3, delta=1.0), LogisticTeacher(lam=0.1),
...             Student(lam=0.05, chi=0.8, temperature=2.0, eta=0.5))
>>> res = simulations.run(p, n=400, seeds=4)        # doctest: +SKIP
>>> res.student.eg.mean, res.student.eg.sem          # doctest: +SKIP

Chains of self-distillation stages on one training set: :func:`run_chain`.

K classes (a ``Problem`` with a ``MulticlassMixture``): ``run`` dispatches to
:func:`run_multiclass` (softmax teacher or oracle teacher, softmax KD student; the fields of
``kdtheory.problem.MULTICLASS_FIELDS``), built on :func:`sample_multiclass` and :func:`fit_softmax`.

Building blocks: :func:`sample` (the data), :func:`fit_teacher`, :func:`fit_student` (exact
truncated-Newton fits, :func:`newton_cg`), :func:`draw_subset` (the sparse student's coordinates).
Importing this package compiles nothing; the numba kernels compile (or load from cache) on first use.
"""

from simulations.chain import ChainSimulationResult, StageEstimates, run_chain, simulate_chain_seed
from simulations.data import TrainingSet, draw_subset, sample
from simulations.fit import Fit, bayes_teacher, fit_gd, fit_student, fit_teacher, newton_cg
from simulations.multiclass import (
    MulticlassSimulationResult,
    fit_softmax,
    run_multiclass,
    sample_multiclass,
)
from simulations.runner import (
    Estimate,
    SimulationResult,
    StudentEstimates,
    TeacherEstimates,
    run,
    simulate_seed,
)

__all__ = [
    "ChainSimulationResult",
    "Estimate",
    "Fit",
    "MulticlassSimulationResult",
    "SimulationResult",
    "StageEstimates",
    "StudentEstimates",
    "TeacherEstimates",
    "TrainingSet",
    "bayes_teacher",
    "draw_subset",
    "fit_gd",
    "fit_softmax",
    "fit_student",
    "fit_teacher",
    "newton_cg",
    "run",
    "run_chain",
    "run_multiclass",
    "sample",
    "sample_multiclass",
    "simulate_chain_seed",
    "simulate_seed",
]

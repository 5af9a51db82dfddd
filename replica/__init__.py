"""replica: the N → ∞ theory of knowledge distillation (Franz–Parisi, replica-symmetric, ERM).

>>> from kdtheory import GaussianMixture, LogisticTeacher, Problem, Student
>>> import replica
>>> sol = replica.solve(Problem(GaussianMixture(2.0, 0.3, 1.0), LogisticTeacher(0.1), Student(0.05)))
>>> sol.converged, round(sol.student.eg, 4)  # doctest: +SKIP
"""

from replica.chain import ChainOptimum, ChainSolution, StageState, optimise_chain, solve_chain
from replica.chain_gradient import ChainGradient, chain_gradient
from replica.gradient import Gradient, gradient
from replica.optimise import OptimiseResult, optimise
from replica.population import PopulationLoss, population_loss
from replica.separability import separability_threshold
from replica.solver import (
    ConvergenceError,
    Solution,
    agreement,
    bayes_error,
    solve,
    solve_teacher,
)
from replica.student import StudentState
from replica.teacher import TeacherSolution, TeacherState

__all__ = [
    "ChainGradient",
    "ChainOptimum",
    "ChainSolution",
    "ConvergenceError",
    "Gradient",
    "OptimiseResult",
    "PopulationLoss",
    "Solution",
    "StageState",
    "StudentState",
    "TeacherSolution",
    "TeacherState",
    "agreement",
    "bayes_error",
    "chain_gradient",
    "gradient",
    "optimise",
    "optimise_chain",
    "population_loss",
    "separability_threshold",
    "solve",
    "solve_chain",
    "solve_teacher",
]
